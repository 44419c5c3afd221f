"""What a comparison label says about the LEFT item, as a probability, and which labels of a pair training
uses (an adjudication over the disputed labels). No torch: the app's pages import this while the window
is being built, before torch is loaded."""

from __future__ import annotations

#: Soft target for the LEFT item, by comparison outcome. both_bad / skip carry no preference.
OUTCOME_TARGET = {"left": 1.0, "right": 0.0, "tie": 0.5}


def outcome_target(outcome: str) -> float | None:
    """Probability that LEFT is better under a label, or ``None`` if the label says nothing."""
    return OUTCOME_TARGET.get(outcome)


def prefer_adjudications(rows):
    """Live comparison rows as training uses them: where a pair of items (in either order) has an
    adjudication (``role`` = ``"adjudication"``), the newest one stands for the pair and the pair's other
    rows (the disputed labels) are dropped; other rows pass unchanged, in their order. Rows need ``id``,
    ``left_id``, ``right_id`` and ``role`` (a row without ``role`` is a label)."""
    rows = list(rows)
    newest: dict[frozenset, int] = {}
    for r in rows:
        if r.get("role") == "adjudication":
            key = frozenset((r["left_id"], r["right_id"]))
            newest[key] = max(newest.get(key, r["id"]), r["id"])
    if not newest:
        return rows
    return [r for r in rows if newest.get(frozenset((r["left_id"], r["right_id"])), r["id"]) == r["id"]]
