"""Wilson intervals against published values, and held-out accuracy said with n, interval and warning."""

from __future__ import annotations

import pytest

from rlhf_core.analysis.intervals import (
    MIN_HELDOUT_PAIRS,
    TOO_FEW,
    heldout_accuracy,
    heldout_of_result,
    wilson_interval,
)


@pytest.mark.parametrize(("successes", "n", "low", "high"), [
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Stat. Med. 17:857, table I, method 3
    (15, 148, 0.0624, 0.1605),  # ibid.
    (0, 20, 0.0, 0.1611),  # ibid.
    (1, 29, 0.0061, 0.1718),  # ibid.
    (2, 3, 0.2077, 0.9385),
    (3, 3, 0.4385, 1.0),
])
def test_wilson_interval_matches_published_values(successes, n, low, high):
    lo, hi = wilson_interval(successes, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_interval_refuses_impossible_counts():
    for successes, n in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError):
            wilson_interval(successes, n)


def test_a_heldout_accuracy_on_few_pairs_says_so():
    few = heldout_accuracy(2 / 3, 3)
    assert (few.n, round(few.low, 2), round(few.high, 2), few.too_few) == (3, 0.21, 0.94, True)
    assert few.text() == "held-out accuracy 0.67 on 3 pairs (95 % CI 0.21–0.94): too few held-out pairs to tell"
    assert few.short_text() == "0.67 (n = 3, 95 % CI 0.21–0.94)"
    perfect = heldout_accuracy(1.0, 2)
    assert perfect.text().endswith(TOO_FEW) and round(perfect.low, 2) == 0.34 and perfect.high == 1.0
    enough = heldout_accuracy(0.9, 200)
    assert not enough.too_few and enough.text() == "held-out accuracy 0.90 on 200 pairs (95 % CI 0.85–0.93)"
    assert heldout_accuracy(0.75, MIN_HELDOUT_PAIRS).too_few is False
    assert heldout_accuracy(0.75, MIN_HELDOUT_PAIRS - 1).too_few is True


def test_nothing_to_show_without_an_accuracy_or_its_pairs():
    assert heldout_accuracy(None, 10) is None and heldout_accuracy(0.8, 0) is None
    assert heldout_accuracy(0.8, None) is None and heldout_accuracy(float("nan"), 10) is None


def test_the_heldout_accuracy_of_each_job_result():
    assert heldout_of_result({"heldout_accuracy": 0.5, "heldout_pairs": 4}).n == 4  # reward models
    assert heldout_of_result({"heldout_accuracy_last": 0.75, "heldout_pairs": 40}).accuracy == 0.75  # dpo
    assert heldout_of_result({"heldout_pair_accuracy": 0.87, "heldout_pairs": 300}).n == 300  # extrapolation
    demo = heldout_of_result({"proxy_heldout_accuracy": 0.6, "label_pairs": 40, "proxy_train_pairs": 30})
    assert demo.n == 10 and demo.too_few
    assert heldout_of_result({"heldout_accuracy": None, "heldout_pairs": 0}) is None
    assert heldout_of_result(None) is None and heldout_of_result({"final_loss": 0.1}) is None


def test_the_bounds_are_exactly_zero_and_one_at_the_ends():
    from rlhf_core.analysis.intervals import wilson_interval

    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
