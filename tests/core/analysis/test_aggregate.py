"""Aggregation over seeds: the IQM and bootstrap intervals against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhf_core.analysis.aggregate import bootstrap_ci, curve_band, final_value, iqm, summarise


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # 1,2 and 7,8 cut: mean of 3..6
    assert iqm([1.0, 2.0, 100.0]) == pytest.approx(103 / 3)  # n=3: int(0.75) = 0 cut, the plain mean
    assert iqm([0, 0, 0, 0, 100]) == 0.0  # n=5: one cut from each end, the outlier goes
    assert math.isnan(iqm([]))


def test_bootstrap_interval_of_two_runs_spans_what_resampling_can_give():
    # resampling [0, 1] gives means 0, 0.5, 1 with chances 1/4, 1/2, 1/4: the 2.5 % and 97.5 % points are 0 and 1
    low, high = bootstrap_ci([0.0, 1.0], seed=3)
    assert (low, high) == (0.0, 1.0)
    assert bootstrap_ci([2.5] * 4) == (2.5, 2.5)
    # an 80 % interval of four distinct values lies strictly inside the range, and the seed fixes it
    narrow = bootstrap_ci([0.0, 1.0, 2.0, 3.0], confidence=0.8, seed=1)
    assert 0.0 < narrow[0] < 1.5 < narrow[1] < 3.0
    assert narrow == bootstrap_ci([0.0, 1.0, 2.0, 3.0], confidence=0.8, seed=1)


def test_summary_drops_missing_results_and_reports_both_statistics():
    s = summarise([1.0, None, 2.0, float("nan"), 3.0, 10.0])
    assert s.n == 4 and s.mean == 4.0 and s.iqm == 2.5  # 1 and 10 cut
    assert s.iqm_low <= s.iqm <= s.iqm_high and s.mean_low <= s.mean <= s.mean_high
    assert s.as_dict()["iqm_ci"] == [s.iqm_low, s.iqm_high]


def test_curve_band_averages_the_runs_that_logged_each_step():
    band = curve_band([([0, 10, 20], [1.0, 2.0, 3.0]), ([0, 10], [3.0, 4.0]), ([0, 20], [2.0, float("nan")])])
    assert band.steps == [0, 10, 20]
    assert band.mean == [2.0, 3.0, 3.0]
    assert band.n == [3, 2, 1]
    assert band.low[2] == band.high[2] == 3.0  # one run: no spread
    assert all(lo <= m <= hi for lo, m, hi in zip(band.low, band.mean, band.high))
    assert final_value({"a": ([0, 5], [1.0, 7.0])}, "a") == 7.0 and final_value({}, "a") is None
