"""Metric keys: a documented contract between trainers, the database and the plots.

Keys are ``namespace/name``. The plots group series by namespace (one plot per namespace), the
``metrics`` table stores them as they are, and later trainers add their own keys here so the list
below stays the single reference (compare TRL's "logged metrics" and SB3's ``rollout/``,
``train/`` keys).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

METRIC_KEYS: dict[str, str] = {
    # reward-model training (Bradley-Terry and relatives)
    "reward_model/loss": "Bradley-Terry cross-entropy on the training batch (nats).",
    "reward_model/train_accuracy": "Fraction of training-batch pairs the model orders like the label.",
    "reward_model/heldout_accuracy": "Same, on the held-out pairs (ties excluded).",
    "reward_model/heldout_loss": "Bradley-Terry loss on the held-out pairs (nats).",
    "reward_model/true_correlation": "Pearson r between predicted and true reward (synthetic tasks).",
    # control rollouts and RL (used by the control track)
    "rollout/true_return": "Mean true environment return of finished episodes.",
    "rollout/learned_return": "Mean return under the learned reward.",
    "rollout/episode_length": "Mean length of finished episodes.",
    "train/approx_kl": "PPO's approximate KL between old and new policy.",
    "train/entropy": "Policy entropy.",
    # language-model RL (used by the text track)
    "reward/mean": "Mean total reward of the step's completions.",
    "reward/std": "Standard deviation of that reward.",
    "objective/kl": "Mean KL(pi || pi_ref) per sequence.",
    "completions/mean_length": "Mean completion length in tokens.",
    "completions/stopped_fraction": "Fraction of completions that ended with the end-of-turn token.",
    "generation/tokens_per_second": "Completion tokens sampled per wall-clock second (per batch).",
    # bookkeeping every job may log
    "time/steps_per_second": "Optimisation steps per wall-clock second.",
}


def namespace(key: str) -> str:
    """The plot group of a key: ``"reward_model/loss"`` -> ``"reward_model"``."""
    return key.split("/", 1)[0] if "/" in key else "other"


def group_keys(keys: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        groups[namespace(key)].append(key)
    return dict(groups)


def describe(key: str) -> str:
    return METRIC_KEYS.get(key, "")


class MetricAverager:
    """Collects values between log points and returns their means (e.g. per-batch -> per-epoch)."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self._sums[k] += float(v)
            self._counts[k] += 1

    def pop_means(self) -> dict[str, float]:
        out = {k: self._sums[k] / self._counts[k] for k in self._sums if self._counts[k]}
        self._sums.clear()
        self._counts.clear()
        return out
