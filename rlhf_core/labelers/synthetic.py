"""Simulated teachers from B-Pref (Lee et al., 2021) that label pairs from TRUE rewards.

One scripted teacher with five knobs; each named B-Pref teacher is a preset of them:

- oracle:  prefers the higher return, always.
- noisy:   "stoc" in B-Pref: P(left) = sigmoid(beta * (R_left - R_right)).
- mistake: like the oracle, then flips the answer with probability epsilon (0.1).
- skip:    skips the pair if both returns are below ``skip_threshold``.
- equal:   answers "tie" if |R_left - R_right| < ``equal_threshold``.
- myopic:  weights step t of an H-step clip by gamma^(H-1-t) (0.9): the end of the clip matters most.

Order of the rules, as in B-Pref: skip, then equal, then the (noisy) choice, then the mistake flip.
Labels from these teachers are stored with ``source = "synthetic"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TEACHERS = ("oracle", "noisy", "mistake", "skip", "equal", "myopic")


@dataclass(frozen=True)
class Teacher:
    beta: float = math.inf  # rationality; inf = deterministic
    gamma: float = 1.0  # myopia discount; 1 = none
    epsilon: float = 0.0  # mistake probability
    skip_threshold: float | None = None
    equal_threshold: float | None = None

    @classmethod
    def preset(cls, name: str, *, beta: float = 1.0, gamma: float = 0.9, epsilon: float = 0.1,
               skip_threshold: float = 0.0, equal_threshold: float = 1.0) -> Teacher:
        if name == "oracle":
            return cls()
        if name == "noisy":
            return cls(beta=beta)
        if name == "mistake":
            return cls(epsilon=epsilon)
        if name == "skip":
            return cls(skip_threshold=skip_threshold)
        if name == "equal":
            return cls(equal_threshold=equal_threshold)
        if name == "myopic":
            return cls(gamma=gamma)
        raise ValueError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}")

    def returns(self, rewards: np.ndarray) -> float:
        rewards = np.asarray(rewards, dtype=np.float64)
        if self.gamma == 1.0:
            return float(rewards.sum())
        H = len(rewards)
        weights = self.gamma ** (H - 1 - np.arange(H))
        return float((weights * rewards).sum())

    def label(self, rewards_left: np.ndarray, rewards_right: np.ndarray, rng: np.random.Generator) -> str:
        """One outcome: left | right | tie | skip."""
        r_l, r_r = self.returns(rewards_left), self.returns(rewards_right)
        if self.skip_threshold is not None and max(r_l, r_r) < self.skip_threshold:
            return "skip"
        if self.equal_threshold is not None and abs(r_l - r_r) < self.equal_threshold:
            return "tie"
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
        if self.equal_threshold is not None:
            parts.append(f"equal<{self.equal_threshold:g}")
        return "B-Pref teacher" + (f" ({', '.join(parts)})" if parts else " (oracle)")
