"""Rankings of K items (worst -> best, ties allowed) and their expansion into pairwise comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations


def normalise_groups(groups: Sequence[Sequence[int]]) -> list[list[int]]:
    """Check a ranking given as groups worst -> best (items in one group are tied).

    Raises ``ValueError`` for an empty ranking, an empty group, or an item that appears twice.
    """
    out = [list(g) for g in groups]
    if sum(len(g) for g in out) < 2:
        raise ValueError("a ranking needs at least two items")
    if any(len(g) == 0 for g in out):
        raise ValueError("a ranking group is empty")
    flat = [i for g in out for i in g]
    if len(set(flat)) != len(flat):
        raise ValueError("an item appears more than once in the ranking")
    return out


def expand_ranking(groups: Sequence[Sequence[int]]) -> list[tuple[int, int, str]]:
    """All K-choose-2 pairs implied by a ranking, as ``(left, right, outcome)``.

    For two items in different groups the worse one is put on the left and the outcome is
    ``"right"``; two items in the same group give a ``"tie"``.
    """
    groups = normalise_groups(groups)
    position = {item: pos for pos, group in enumerate(groups) for item in group}
    ordered = [item for group in groups for item in group]
    pairs = []
    for a, b in combinations(ordered, 2):
        if position[a] == position[b]:
            pairs.append((a, b, "tie"))
        elif position[a] < position[b]:
            pairs.append((a, b, "right"))
        else:  # pragma: no cover - `ordered` is sorted by position, kept for safety
            pairs.append((b, a, "right"))
    return pairs
