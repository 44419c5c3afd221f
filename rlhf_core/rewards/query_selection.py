"""Active query selection: which pairs to ask about, from a reward ensemble's member predictions.

Each member k of an ensemble gives P_k(left better) for a candidate pair (for a control ensemble the
sigmoid of the difference of the two clips' summed rewards, Bradley-Terry). Selections:

- ``disagreement``: the pairs with the largest variance over members of P_k (Christiano et al. 2017,
  who pick among about ten times as many random candidates as queries);
- ``uncertainty``: the pairs whose mean P is closest to 0.5 (|P - 0.5| smallest);
- ``random``: random pairs among the candidates (the member predictions are still computed and kept).

Every pick keeps its members' predictions: the "why this pair" a labeller is shown (:func:`reason`).
Used by the online job (:mod:`rlhf_core.trainers.control.preference_rl`) and the ``active_queries`` job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from rlhf_core.rewards.networks import RewardEnsemble

SELECTIONS = ("disagreement", "uncertainty", "random")


def query_score(probs: np.ndarray, selection: str) -> float:
    """How much a pair with member predictions ``probs`` is worth asking about (higher first)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size == 0:
        return 0.0
    if selection == "uncertainty":
        return -abs(float(probs.mean()) - 0.5)
    return float(np.var(probs))


def pick(scores: Sequence[float], n: int, selection: str, rng: np.random.Generator) -> list[int]:
    """Indices of the ``n`` candidates to ask: the highest ``scores`` (ties in candidate order), or ``n``
    random ones when ``selection`` is random."""
    if selection == "random":
        return [int(i) for i in rng.permutation(len(scores))[:n]]
    return sorted(range(len(scores)), key=lambda i: -scores[i])[:n]


def candidate_pairs(n_items: int, k: int, rng: np.random.Generator,
                    exclude: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Up to ``k`` distinct random pairs (i < j) of ``n_items`` items, none of them in ``exclude``
    (pairs given as (i, j) with i < j). Every allowed pair when there are no more than ``k``."""
    excluded = {(min(i, j), max(i, j)) for i, j in exclude if i != j}
    available = n_items * (n_items - 1) // 2 - len(excluded)
    if n_items < 2 or available <= 0 or k <= 0:
        return []
    if k >= available:
        return [(i, j) for i in range(n_items) for j in range(i + 1, n_items) if (i, j) not in excluded]
    chosen: dict[tuple[int, int], None] = {}  # insertion-ordered set
    while len(chosen) < k:
        i, j = rng.choice(n_items, size=2, replace=False)
        pair = (int(min(i, j)), int(max(i, j)))
        if pair not in excluded:
            chosen[pair] = None
    return list(chosen)


@torch.no_grad()
def member_returns(ensemble: RewardEnsemble, segments: Sequence[np.ndarray], *, rows_per_batch: int = 8192,
                   on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Each member's return of each segment, ``[len(segments), members]`` (float64): the sum of its rewards
    of the states the segment reaches. ``segments[i]``: the states, one row per step. The states of many
    segments go through the ensemble together (about ``rows_per_batch`` rows at a time);
    ``on_batch(done, total)`` is called after each batch (progress, cancel)."""
    out = np.zeros((len(segments), len(ensemble.members)), dtype=np.float64)
    start = 0
    while start < len(segments):
        end, rows = start, 0
        while end < len(segments) and (end == start or rows + len(segments[end]) <= rows_per_batch):
            rows += len(segments[end])
            end += 1
        states = torch.from_numpy(np.ascontiguousarray(np.concatenate(segments[start:end])))
        rewards = ensemble(states).double()  # [members, rows]
        bounds = np.cumsum([0] + [len(seg) for seg in segments[start:end]])
        for row, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            out[start + row] = rewards[:, a:b].sum(-1).numpy()
        start = end
        if on_batch is not None:
            on_batch(start, len(segments))
    return out


def pair_probs(returns_a: np.ndarray, returns_b: np.ndarray) -> np.ndarray:
    """P(a better than b) under each member (Bradley-Terry) from the members' returns of a and b."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(returns_a, dtype=np.float64) - np.asarray(returns_b, dtype=np.float64))))


def select_clip_pairs(ensemble: RewardEnsemble | None, observations: Sequence[np.ndarray], n: int, multiplier: int,
                      selection: str, rng: np.random.Generator, *, exclude: Iterable[tuple[int, int]] = (),
                      on_batch: Callable[[int, int], None] | None = None) -> list[tuple[int, int, list[float]]]:
    """``n`` pairs ``(i, j, member predictions)`` of clips among ``n * multiplier`` random candidates.

    ``observations[i]``: clip i's observations, T + 1 rows (the first is the state it starts from; the
    rewards are of the T states reached). Each candidate clip's member returns are computed once
    (:func:`member_returns`, ``on_batch`` its progress). Without an ensemble the picks are random and carry
    no predictions.
    """
    candidates = candidate_pairs(len(observations), n * multiplier, rng, exclude)
    if ensemble is None:
        picks = pick([0.0] * len(candidates), n, "random", rng)
        return [(*candidates[p], []) for p in picks]
    used = sorted({i for pair in candidates for i in pair})
    returns = dict(zip(used, member_returns(ensemble, [observations[i][1:] for i in used], on_batch=on_batch)))
    probs = [pair_probs(returns[i], returns[j]) for i, j in candidates]
    picks = pick([query_score(p, selection) for p in probs], n, selection, rng)
    return [(*candidates[p], [float(x) for x in probs[p]]) for p in picks]


def reason(selection: str, probs: Sequence[float], **extra) -> dict:
    """A queue entry's ``reason``: the selection, each member's P(left better), their variance and mean
    (what the labelling views show as "why this pair"), and ``extra``."""
    probs = [float(p) for p in probs]
    out: dict = {"selection": selection, "member_p_left": probs}
    if probs:
        out.update(disagreement=float(np.var(probs)), p_left=float(np.mean(probs)))
    out.update(extra)
    return out
