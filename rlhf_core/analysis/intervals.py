"""How sure a measured accuracy is: the Wilson score interval, and held-out accuracy said with its n.

A held-out accuracy of 1.00 on 3 pairs says little (its 95 % interval is 0.44–1.00); every view that
shows a held-out accuracy shows it through :func:`heldout_accuracy` (n, the interval, and a warning
below :data:`MIN_HELDOUT_PAIRS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile: two-sided 95 %
#: below this many held-out pairs an accuracy is shown with a warning (the 95 % interval of 0.75 on
#: 20 pairs is still 0.53–0.89)
MIN_HELDOUT_PAIRS = 20
TOO_FEW = "too few held-out pairs to tell"


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927) of a proportion ``successes / n``; ``successes`` may be
    fractional (a tie counted as half). Unlike p ± z·SE it stays inside [0, 1] and is not of width 0
    at 0 or n successes. Raises ``ValueError`` for n < 1 or successes outside [0, n]."""
    if n < 1:
        raise ValueError("a proportion needs at least one trial")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({n}), not {successes}")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    # at 0 or n successes the bound is exactly 0 or 1; the subtraction above leaves ~1e-17 of rounding
    return (0.0 if successes == 0 else low), (1.0 if successes == n else high)


@dataclass(frozen=True)
class HeldoutAccuracy:
    """A held-out accuracy with the number of pairs it was measured on and its 95 % interval."""

    accuracy: float
    n: int
    low: float
    high: float

    @property
    def too_few(self) -> bool:
        return self.n < MIN_HELDOUT_PAIRS

    def short_text(self) -> str:
        """``0.67 (n = 3, 95 % CI 0.21–0.94)``."""
        return f"{self.accuracy:.2f} (n = {self.n}, 95 % CI {self.low:.2f}–{self.high:.2f})"

    def text(self) -> str:
        """``held-out accuracy 0.67 on 3 pairs (95 % CI 0.21–0.94): too few held-out pairs to tell``."""
        pairs = "pair" if self.n == 1 else "pairs"
        out = f"held-out accuracy {self.accuracy:.2f} on {self.n} {pairs} (95 % CI {self.low:.2f}–{self.high:.2f})"
        return out + (f": {TOO_FEW}" if self.too_few else "")


def heldout_accuracy(accuracy: float | None, n: int | None) -> HeldoutAccuracy | None:
    """``accuracy`` measured on ``n`` held-out pairs, with its interval; None when there is none to show."""
    if accuracy is None or n is None or isinstance(accuracy, bool):
        return None
    accuracy, n = float(accuracy), int(n)
    if n < 1 or not math.isfinite(accuracy) or not 0.0 <= accuracy <= 1.0:
        return None
    low, high = wilson_interval(accuracy * n, n)
    return HeldoutAccuracy(accuracy, n, low, high)


#: (accuracy key, how to get n) in the results of the jobs that measure a held-out accuracy
_RESULT_KEYS = (
    ("heldout_accuracy", lambda r: r.get("heldout_pairs")),  # reward models, synthetic preferences
    ("heldout_accuracy_last", lambda r: r.get("heldout_pairs")),  # dpo
    ("heldout_pair_accuracy", lambda r: r.get("heldout_pairs")),  # the extrapolation demo
    ("proxy_heldout_accuracy",  # the over-optimisation demo's proxy reward model
     lambda r: (r["label_pairs"] - r["proxy_train_pairs"])
     if isinstance(r.get("label_pairs"), int) and isinstance(r.get("proxy_train_pairs"), int) else None),
)


def heldout_of_result(result: Mapping | None) -> HeldoutAccuracy | None:
    """The held-out accuracy a run's stored result reports, with its n and interval (None: none)."""
    if not isinstance(result, Mapping):
        return None
    for key, n_of in _RESULT_KEYS:
        if key in result:
            found = heldout_accuracy(result.get(key), n_of(result))
            if found is not None:
                return found
    return None
