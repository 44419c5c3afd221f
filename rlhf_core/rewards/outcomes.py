"""What a comparison label says about the LEFT item, as a probability (no torch: the app's pages
import this while the window is being built, before torch is loaded)."""

from __future__ import annotations

#: Soft target for the LEFT item, by comparison outcome. both_bad / skip carry no preference.
OUTCOME_TARGET = {"left": 1.0, "right": 0.0, "tie": 0.5}


def outcome_target(outcome: str) -> float | None:
    """Probability that LEFT is better under a label, or ``None`` if the label says nothing."""
    return OUTCOME_TARGET.get(outcome)
