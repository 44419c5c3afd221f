"""The Sweeps page on a real local sweep (worker processes into a real project): its results table holds
aggregate()'s numbers, its plot draws curve_band()'s mean and band for each setting, and a metric can be chosen."""

from __future__ import annotations

import numpy as np
import pytest

from app.pages.sweeps_page import NO_SWEEP_TEXT, SweepsPage
from rlhf_core.analysis.aggregate import curve_band
from rlhf_core.jobs import RecordingContext, execute_job
from rlhf_core.sweeps import SWEEP_KIND, SweepConfig, aggregate, run_sweep

LOSS, ACCURACY = "reward_model/loss", "reward_model/heldout_accuracy"


def _check(page: SweepsPage, project, sweep_id: int, key: str) -> None:
    expected = aggregate(project, sweep_id, [key])["groups"]
    assert page.results.rowCount() == len(expected) == len(page.curves)
    for row, group in enumerate(expected):
        cells = [page.results.item(row, col) for col in range(page.results.columnCount())]
        summary = group["final"][key]
        assert cells[0].text() == ", ".join(f"{k}={v}" for k, v in group["settings"].items())
        assert [c.data(256) for c in cells[2:]] == [summary["iqm"], summary["iqm_ci"], summary["mean"],
                                                    summary["mean_ci"], summary["n"]]
        assert cells[4].text() == f"{summary['mean']:.4g}" and cells[6].text() == "2"
        band = curve_band([project.metrics(r)[key] for r in group["runs"]])
        mean, low, high = page.curves[row]
        for item, values in ((mean, band.mean), (low, band.low), (high, band.high)):
            x, y = item.getData()
            assert list(x) == band.steps and np.array_equal(y, np.asarray(values))


@pytest.mark.timeout(180)
def test_the_sweep_view_shows_aggregate_and_curve_band_per_setting(qtbot, project):
    page = SweepsPage()
    qtbot.addWidget(page)
    page.set_project(project)
    page.show()
    assert page.summary.text() == NO_SWEEP_TEXT and page.sweep_box.count() == 0

    config = SweepConfig(job="synthetic_preferences", seeds=[0, 1], grid={"steps": [4, 8]},
                         settings={"n_pairs": 60, "eval_every": 2}, workers=2, metrics=[LOSS])
    outcome = execute_job(run_sweep, config, RecordingContext(), project_path=project.folder, kind=SWEEP_KIND)
    assert outcome.status == "completed", outcome.error
    page.refresh()
    assert page.sweep_id() == outcome.run_id
    qtbot.waitUntil(lambda: page.view is not None and page.view.key == LOSS, timeout=30_000)
    _check(page, project, outcome.run_id, LOSS)  # the sweep's own aggregated metric comes first
    assert page.members.rowCount() == 4
    assert {page.members.item(r, 3).text() for r in range(4)} == {"completed"}
    assert [len(c[0].getData()[0]) for c in page.curves] == [4, 8]  # steps=4 and steps=8 log every step
    assert "2 settings" in page.summary.text() and "4 of 4 member runs completed" in page.summary.text()

    page.select_metric(ACCURACY)
    qtbot.waitUntil(lambda: page.view.key == ACCURACY and not page.worker.busy, timeout=30_000)
    _check(page, project, outcome.run_id, ACCURACY)
