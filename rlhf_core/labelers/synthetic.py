"""Simulated teachers from B-Pref (Lee et al., 2021) that label pairs from TRUE rewards.

One scripted teacher with five knobs; each named B-Pref teacher is a preset of them:

- oracle:  prefers the higher return, always.
- noisy:   "stoc" in B-Pref: P(left) = sigmoid(beta * (R_left - R_right)).
- mistake: like the oracle, then flips the answer with probability epsilon (0.1).
- skip:    skips the pair if both returns are below the skip threshold.
- equal:   answers "tie" if |R_left - R_right| is below the equal threshold.
- myopic:  weights step t of an H-step clip by gamma^(H-1-t) (0.9): the end of the clip matters most.

Thresholds are relative, as in B-Pref, where they scale with the returns the policy gets: here they come
from the returns of the segments in the batch being labelled (a query batch of the online job, the queue
that ``label_pairs`` answers). With lo and hi the lowest and highest segment return of the batch,

    skip  if max(R_left, R_right) < lo + skip_fraction * (hi - lo)
    tie   if |R_left - R_right|   <      equal_fraction * (hi - lo)

so a batch of all-negative returns (Pendulum) is labelled like any other; with lo = 0 the skip threshold
is B-Pref's "a fraction of the best". A pair labelled alone is its own batch. ``skip_threshold`` and
``equal_threshold`` are the older absolute thresholds (in return units); where given they are used as they are.
Skip and equal read the plain sums of the rewards, as in B-Pref; the myopic weighting applies to the choice.

Order of the rules, as in B-Pref: skip, then equal, then the (noisy) choice, then the mistake flip.
Labels from these teachers are stored with ``source = "synthetic"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

TEACHERS = ("oracle", "noisy", "mistake", "skip", "equal", "myopic")
#: the relative thresholds' defaults: a tenth of the batch's spread of returns
SKIP_FRACTION = 0.1
EQUAL_FRACTION = 0.1


@dataclass(frozen=True)
class Thresholds:
    """A batch's thresholds in return units: skip when both returns are below ``skip_below``, tie when they
    differ by less than ``tie_within`` (None: that rule is off)."""

    skip_below: float | None = None
    tie_within: float | None = None


@dataclass(frozen=True)
class Teacher:
    beta: float = math.inf  # rationality; inf = deterministic
    gamma: float = 1.0  # myopia discount; 1 = none
    epsilon: float = 0.0  # mistake probability
    skip_fraction: float | None = None  # relative skip threshold (fraction of the batch's spread)
    equal_fraction: float | None = None  # relative equal threshold (fraction of the batch's spread)
    skip_threshold: float | None = None  # absolute skip threshold (return units)
    equal_threshold: float | None = None  # absolute equal threshold (return units)

    @classmethod
    def preset(cls, name: str, *, beta: float = 1.0, gamma: float = 0.9, epsilon: float = 0.1,
               skip_fraction: float = SKIP_FRACTION, equal_fraction: float = EQUAL_FRACTION,
               skip_threshold: float | None = None, equal_threshold: float | None = None) -> Teacher:
        """The named B-Pref teacher; an absolute ``skip_threshold`` / ``equal_threshold`` replaces the
        relative one."""
        if name == "oracle":
            return cls()
        if name == "noisy":
            return cls(beta=beta)
        if name == "mistake":
            return cls(epsilon=epsilon)
        if name == "skip":
            return cls(skip_threshold=skip_threshold) if skip_threshold is not None else cls(skip_fraction=skip_fraction)
        if name == "equal":
            return (cls(equal_threshold=equal_threshold) if equal_threshold is not None
                    else cls(equal_fraction=equal_fraction))
        if name == "myopic":
            return cls(gamma=gamma)
        raise ValueError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}")

    def returns(self, rewards: np.ndarray) -> float:
        """The return the teacher chooses by (myopic: discounted towards the start of the clip)."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if self.gamma == 1.0:
            return float(rewards.sum())
        H = len(rewards)
        weights = self.gamma ** (H - 1 - np.arange(H))
        return float((weights * rewards).sum())

    def thresholds(self, segment_returns: Iterable[float]) -> Thresholds:
        """The thresholds for a batch whose segments' (plain) returns are ``segment_returns``."""
        values = np.asarray(list(segment_returns), dtype=np.float64)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        skip = self.skip_threshold
        if skip is None and self.skip_fraction is not None:
            skip = lo + self.skip_fraction * (hi - lo)
        tie = self.equal_threshold
        if tie is None and self.equal_fraction is not None:
            tie = self.equal_fraction * (hi - lo)
        return Thresholds(skip, tie)

    def label(self, rewards_left: np.ndarray, rewards_right: np.ndarray, rng: np.random.Generator,
              thresholds: Thresholds | None = None) -> str:
        """One outcome: left | right | tie | skip. ``thresholds``: the batch's (:meth:`thresholds`); without
        them the pair is its own batch."""
        sum_l = float(np.asarray(rewards_left, dtype=np.float64).sum())
        sum_r = float(np.asarray(rewards_right, dtype=np.float64).sum())
        if thresholds is None:
            thresholds = self.thresholds((sum_l, sum_r))
        if thresholds.skip_below is not None and max(sum_l, sum_r) < thresholds.skip_below:
            return "skip"
        if thresholds.tie_within is not None and abs(sum_l - sum_r) < thresholds.tie_within:
            return "tie"
        r_l, r_r = self.returns(rewards_left), self.returns(rewards_right)
        if math.isinf(self.beta):
            if r_l == r_r:
                return "tie"
            left = r_l > r_r
        else:
            p_left = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, self.beta * (r_l - r_r)))))
            left = rng.random() < p_left
        if self.epsilon > 0 and rng.random() < self.epsilon:
            left = not left
        return "left" if left else "right"

    def label_batch(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> list[str]:
        """Outcomes of a batch of (left rewards, right rewards), the thresholds set by the whole batch."""
        limits = self.thresholds(float(np.sum(r, dtype=np.float64)) for pair in pairs for r in pair)
        return [self.label(left, right, rng, limits) for left, right in pairs]

    def describe(self) -> str:
        parts = []
        if not math.isinf(self.beta):
            parts.append(f"beta={self.beta:g}")
        if self.gamma != 1.0:
            parts.append(f"gamma={self.gamma:g}")
        if self.epsilon:
            parts.append(f"eps={self.epsilon:g}")
        if self.skip_threshold is not None:
            parts.append(f"skip<{self.skip_threshold:g}")
        elif self.skip_fraction is not None:
            parts.append(f"skip below {self.skip_fraction:g} of the batch's return range")
        if self.equal_threshold is not None:
            parts.append(f"equal<{self.equal_threshold:g}")
        elif self.equal_fraction is not None:
            parts.append(f"equal within {self.equal_fraction:g} of the batch's return range")
        return "B-Pref teacher" + (f" ({', '.join(parts)})" if parts else " (oracle)")
