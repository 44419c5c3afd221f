"""Watching a language-model RL run: alerts and the over-optimisation curve (no Qt).

Input everywhere: a run's metrics as ``{key: (steps, values)}`` (``Project.metrics(run_id)``).

Alerts (each names the step where it fired and says why):
- ``kl_negative``: the per-token KL estimate is clearly below zero. k3 is never negative and k1's
  expectation is >= 0, so a mean below ``-0.01`` nats/token means the samples did not come from the
  policy being scored (wrong temperature, stale log-probs) — a bug, not a finding.
- ``kl_spike``: KL jumps to more than ``spike_factor`` times its recent median (and above
  ``spike_floor``): an update moved the policy far in one step (learning rate, a bad batch).
- ``length_collapse`` / ``length_explosion``: mean completion length falls below
  ``collapse_ratio`` of its first value (or under 2 tokens), or grows past ``explode_ratio`` times
  it — both are classic ways a policy games a reward.
- ``reward_hacking``: over the last ``window`` steps the proxy reward rose while the gold metric
  (``gold/centred``, ``gold/reward`` or ``gold/accuracy``) fell, each by more than ``min_change`` of
  its scale: the policy is optimising the reward model, not the task (Gao, Schulman & Hilton 2022).

Over-optimisation curve: proxy and gold reward against d = sqrt(KL(pi || pi_ref)) per sequence,
the x-axis Gao et al. use; the gold curve of an over-optimised run rises then bends down while the
proxy keeps rising.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence

Series = tuple[Sequence[int], Sequence[float]]

# keys declared in rlhf_core.metrics; stored runs with older names read under these (RENAMED_KEYS)
KL_KEY = "kl/token_mean"
KL_SEQ_KEY = "kl/seq_mean"
LENGTH_KEY = "completions/mean_length"
#: the proxy is the learned reward model's component when the run has one, else the total reward
PROXY_KEYS = ("reward/model", "reward/mean")
#: ``gold/centred`` (the PPO demo: the gold reward in the proxy's units) is preferred when a run logs it
GOLD_KEYS = ("gold/centred", "gold/reward", "gold/accuracy")
# the PPO demo's paired checks: the policy's gain over the reference, same random numbers on both sides
PAIRED_PROXY_KEY, PAIRED_GOLD_KEY = "eval/paired_proxy_gain", "eval/paired_gold_gain"
PAIRED_GOLD_SE_KEY = "eval/paired_gold_gain_se"
# its best-of-n curve, logged at step n: the proxy's pick among n reference responses
BON_PROXY_KEY, BON_GOLD_KEY, BON_KL_KEY = "bon/proxy", "bon/gold", "bon/kl"


@dataclasses.dataclass(frozen=True)
class Alert:
    kind: str
    step: int
    message: str


def _finite(series: Series | None) -> tuple[list[int], list[float]]:
    if not series:
        return [], []
    steps, values = series
    pairs = [(int(s), float(v)) for s, v in zip(steps, values) if v is not None and math.isfinite(float(v))]
    return [s for s, _ in pairs], [v for _, v in pairs]


def first_key(metrics: Mapping[str, Series], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` that the run logged with at least one finite value."""
    for key in keys:
        if _finite(metrics.get(key))[0]:
            return key
    return None


def check_alerts(metrics: Mapping[str, Series], *, spike_factor: float = 5.0, spike_floor: float = 0.05,
                 collapse_ratio: float = 0.3, explode_ratio: float = 3.0, window: int = 5,
                 min_change: float = 0.05) -> list[Alert]:
    alerts: list[Alert] = []
    steps, kl = _finite(metrics.get(KL_KEY))
    for s, v in zip(steps, kl):
        if v < -0.01:
            alerts.append(Alert("kl_negative", s, f"KL estimate {v:.3f} nats/token < 0 at step {s}: the "
                                "log-probs do not match the sampling distribution (check temperature)."))
            break
    for i in range(3, len(kl)):
        recent = statistics.median(kl[max(0, i - 5):i])
        if kl[i] > spike_floor and kl[i] > spike_factor * max(recent, 1e-6):
            alerts.append(Alert("kl_spike", steps[i], f"KL jumped to {kl[i]:.3f} at step {steps[i]} "
                                f"({kl[i] / max(recent, 1e-6):.0f}x its recent median {recent:.3f})."))
            break
    steps, length = _finite(metrics.get(LENGTH_KEY))
    if len(length) >= 2:
        first = length[0]
        for s, v in zip(steps[1:], length[1:]):
            if v < 2 or (first >= 5 and v < collapse_ratio * first):
                alerts.append(Alert("length_collapse", s, f"Mean length fell to {v:.1f} tokens at step {s} "
                                    f"(started at {first:.1f})."))
                break
        for s, v in zip(steps[1:], length[1:]):
            if first > 0 and v > explode_ratio * first:
                alerts.append(Alert("length_explosion", s, f"Mean length grew to {v:.1f} tokens at step {s} "
                                    f"(started at {first:.1f})."))
                break
    alerts.extend(reward_hacking(metrics, PROXY_KEYS, GOLD_KEYS, window=window, min_change=min_change))
    return alerts


def reward_hacking(metrics: Mapping[str, Series], proxy_keys: Sequence[str], gold_keys: Sequence[str], *,
                   window: int = 5, min_change: float = 0.05, names: tuple[str, str] | None = None) -> list[Alert]:
    """The ``reward_hacking`` alert for any pair of series: the first logged of ``proxy_keys`` (what the
    policy optimises) rose while the first of ``gold_keys`` (what is wanted) fell since the gold's peak,
    each by more than ``4 * min_change`` of its scale. ``names``: how the message calls the two (default:
    their keys). Control runs use it with the learned and the true return."""
    proxy_key, gold_key = first_key(metrics, proxy_keys), first_key(metrics, gold_keys)
    if proxy_key is None or gold_key is None:
        return []
    proxy_name, gold_name = names or (proxy_key, gold_key)
    p_steps, proxy = _finite(metrics[proxy_key])
    g_steps, gold = _finite(metrics[gold_key])
    if len(gold) < 3 or len(proxy) < 3:
        return []
    # compare the gold metric's peak with its latest value, and the proxy over the same span
    peak = max(range(len(gold)), key=lambda i: gold[i])
    if peak == len(gold) - 1:
        return []
    start_step, end_step = g_steps[peak], g_steps[-1]
    if len([s for s in g_steps if s >= start_step]) < 2 or end_step - start_step < 1:
        return []
    gold_scale = max(abs(max(gold) - min(gold)), 1e-9, abs(statistics.fmean(gold)) * 0.1)
    proxy_scale = max(max(proxy) - min(proxy), 1e-9)
    gold_drop = gold[peak] - gold[-1]

    def proxy_at(step: int) -> float:
        vals = [v for s, v in zip(p_steps, proxy) if s <= step][-window:]
        return statistics.fmean(vals) if vals else proxy[0]

    proxy_rise = proxy_at(end_step) - proxy_at(start_step)
    if gold_drop > min_change * gold_scale * 4 and proxy_rise > min_change * proxy_scale * 4 and gold_drop > 0:
        return [Alert("reward_hacking", end_step,
                      f"Reward hacking? {proxy_name} rose by {proxy_rise:.3f} since step {start_step} while "
                      f"{gold_name} fell from {gold[peak]:.3f} to {gold[-1]:.3f}.")]
    return []


def overoptimisation_curve(metrics: Mapping[str, Series]) -> dict:
    """``{"sqrt_kl": [...], "proxy": [...], "gold": [...], "proxy_key", "gold_key"}`` aligned by step.

    d = sqrt(max(KL_seq, 0)); the gold list is empty if the run logged no gold metric; steps where
    the gold metric was not evaluated are left out of the gold list only (``gold_sqrt_kl`` holds its x).
    ``paired_sqrt_kl`` / ``paired_proxy`` / ``paired_gold``: the PPO demo's paired checks
    (``eval/paired_proxy_gain``, ``eval/paired_gold_gain``: the policy's gain over the reference on
    responses drawn with the same random numbers), led by the reference itself at (0, 0, 0) — empty when
    the run has none; ``paired_gold_se`` the gold gain's standard error at each (0 at the reference, and
    NaN for runs that did not log it). ``bon_sqrt_kl`` / ``bon_proxy`` / ``bon_gold``: its best-of-n curve (n = 1, 2, 4, ...;
    KL = log n - (n - 1) / n), empty when it has none.
    """
    kl_steps, kl = _finite(metrics.get(KL_SEQ_KEY))
    kl_at = dict(zip(kl_steps, kl))
    proxy_key, gold_key = first_key(metrics, PROXY_KEYS), first_key(metrics, GOLD_KEYS)
    out: dict = {"proxy_key": proxy_key, "gold_key": gold_key, "sqrt_kl": [], "proxy": [], "gold_sqrt_kl": [],
                 "gold": [], "paired_sqrt_kl": [], "paired_proxy": [], "paired_gold": [], "paired_gold_se": [],
                 "bon_sqrt_kl": [], "bon_proxy": [], "bon_gold": []}
    bon_kl = dict(zip(*_finite(metrics.get(BON_KL_KEY) or ([], []))))
    bon_gold = dict(zip(*_finite(metrics.get(BON_GOLD_KEY) or ([], []))))
    for n, v in zip(*_finite(metrics.get(BON_PROXY_KEY) or ([], []))):
        if n in bon_kl and n in bon_gold:
            out["bon_sqrt_kl"].append(math.sqrt(max(bon_kl[n], 0.0)))
            out["bon_proxy"].append(v)
            out["bon_gold"].append(bon_gold[n])
    gold_gain = dict(zip(*_finite(metrics.get(PAIRED_GOLD_KEY) or ([], []))))
    gold_se = dict(zip(*_finite(metrics.get(PAIRED_GOLD_SE_KEY) or ([], []))))
    for s, v in zip(*_finite(metrics.get(PAIRED_PROXY_KEY) or ([], []))):
        if s in kl_at and s in gold_gain:
            if not out["paired_sqrt_kl"]:
                for key in ("paired_sqrt_kl", "paired_proxy", "paired_gold", "paired_gold_se"):
                    out[key].append(0.0)
            out["paired_sqrt_kl"].append(math.sqrt(max(kl_at[s], 0.0)))
            out["paired_proxy"].append(v)
            out["paired_gold"].append(gold_gain[s])
            out["paired_gold_se"].append(gold_se.get(s, math.nan))
    if proxy_key is not None:
        for s, v in zip(*_finite(metrics[proxy_key])):
            if s in kl_at:
                out["sqrt_kl"].append(math.sqrt(max(kl_at[s], 0.0)))
                out["proxy"].append(v)
    if gold_key is not None:
        for s, v in zip(*_finite(metrics[gold_key])):
            if s in kl_at:
                out["gold_sqrt_kl"].append(math.sqrt(max(kl_at[s], 0.0)))
                out["gold"].append(v)
    return out
