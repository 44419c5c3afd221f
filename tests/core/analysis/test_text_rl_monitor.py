"""Alerts and the over-optimisation curve of a text RL run, on constructed metric series."""

from __future__ import annotations

import math

from rlhf_core.analysis.text_rl_monitor import check_alerts, overoptimisation_curve


def _series(values):
    return (list(range(len(values))), list(values))


def test_a_healthy_run_raises_no_alert():
    metrics = {
        "kl/token_mean": _series([0.0, 0.01, 0.02, 0.025, 0.03, 0.032, 0.035]),
        "completions/mean_length": _series([40, 42, 41, 45, 47, 46, 48]),
        "reward/mean": _series([0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5]),
        "gold/accuracy": _series([0.1, 0.15, 0.2, 0.22, 0.25, 0.27, 0.3]),
    }
    assert check_alerts(metrics) == []


def test_each_alert_fires_at_the_right_step():
    kinds = {a.kind: a for a in check_alerts({"kl/token_mean": _series([0.0, 0.01, -0.05, 0.01])})}
    assert kinds["kl_negative"].step == 2
    kinds = {a.kind: a for a in check_alerts({"kl/token_mean": _series([0.0, 0.02, 0.02, 0.02, 0.02, 0.5])})}
    assert kinds["kl_spike"].step == 5 and "25x" in kinds["kl_spike"].message
    kinds = {a.kind: a for a in check_alerts({"completions/mean_length": _series([40, 38, 20, 10, 3])})}
    assert kinds["length_collapse"].step == 3
    kinds = {a.kind: a for a in check_alerts({"completions/mean_length": _series([20, 30, 50, 70])})}
    assert kinds["length_explosion"].step == 3
    hacked = {
        "reward/model": _series([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]),
        "gold/reward": _series([0.0, 0.3, 0.5, 0.6, 0.5, 0.3, 0.1, -0.1]),
    }
    kinds = {a.kind: a for a in check_alerts(hacked)}
    assert kinds["reward_hacking"].step == 7
    assert "gold/reward fell from 0.600 to -0.100" in kinds["reward_hacking"].message
    # gold still rising: no hacking alert
    hacked["gold/reward"] = _series([0.0, 0.3, 0.5, 0.6, 0.65, 0.7, 0.72, 0.75])
    assert "reward_hacking" not in {a.kind for a in check_alerts(hacked)}


def test_overoptimisation_curve_uses_sqrt_of_sequence_kl_and_aligns_steps():
    metrics = {
        "kl/seq_mean": ([0, 1, 2, 3], [0.0, 1.0, 4.0, 9.0]),
        "reward/mean": ([0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4]),
        "gold/accuracy": ([0, 2], [0.5, 0.4]),
    }
    curve = overoptimisation_curve(metrics)
    assert curve["sqrt_kl"] == [0.0, 1.0, 2.0, 3.0] and curve["proxy"] == [0.1, 0.2, 0.3, 0.4]
    assert curve["gold_sqrt_kl"] == [0.0, 2.0] and curve["gold"] == [0.5, 0.4]
    assert curve["proxy_key"] == "reward/mean" and curve["gold_key"] == "gold/accuracy"
    empty = overoptimisation_curve({})
    assert empty["sqrt_kl"] == [] and empty["gold_key"] is None
    assert math.isclose(overoptimisation_curve({"kl/seq_mean": ([0], [-0.5]),
                                                "reward/mean": ([0], [1.0])})["sqrt_kl"][0], 0.0)


def test_the_gold_in_the_proxys_units_is_preferred_when_logged():
    """The PPO demo logs the raw gold (gold/reward) and the same gold centred per prompt in the proxy's
    units (gold/centred): the curve and the alert read the centred one."""
    metrics = {"kl/seq_mean": _series([0.0, 1.0, 4.0]), "reward/model": _series([0.0, 0.5, 1.0]),
               "gold/reward": _series([0.2, 0.3, 0.25]), "gold/centred": _series([-0.3, 0.2, -0.05])}
    curve = overoptimisation_curve(metrics)
    assert curve["gold_key"] == "gold/centred" and curve["gold"] == [-0.3, 0.2, -0.05]
    assert curve["proxy_key"] == "reward/model"


def test_paired_checks_start_at_the_reference_and_carry_the_gold_se():
    metrics = {"kl/seq_mean": _series([0.0, 1.0, 4.0, 9.0]), "reward/model": _series([0.0, 0.5, 1.0, 1.5]),
               "eval/paired_proxy_gain": ([2, 3], [0.7, 1.2]), "eval/paired_gold_gain": ([2, 3], [0.4, -0.1]),
               "eval/paired_gold_gain_se": ([2, 3], [0.11, 0.13])}
    curve = overoptimisation_curve(metrics)
    assert curve["paired_sqrt_kl"] == [0.0, 2.0, 3.0] and curve["paired_proxy"] == [0.0, 0.7, 1.2]
    assert curve["paired_gold"] == [0.0, 0.4, -0.1] and curve["paired_gold_se"] == [0.0, 0.11, 0.13]
    del metrics["eval/paired_gold_gain_se"]  # runs from before the SE was logged
    old = overoptimisation_curve(metrics)["paired_gold_se"]
    assert old[0] == 0.0 and all(math.isnan(x) for x in old[1:])
    assert overoptimisation_curve({"kl/seq_mean": _series([0.0])})["paired_gold_se"] == []
