"""Training pairs for reward learning: T-REX snippets, D-REX noise rankings, clip comparisons.

Every source produces :class:`PairSet`: for each pair, the steps of two segments (index arrays into
one big observation table) and P(first segment is better). Rewards are of the state REACHED by a
step, so the segment of steps [a, b) of a trajectory uses observations a+1 .. b.

T-REX (Brown et al., 2019): pick two trajectories of different rank, a random snippet of each,
the better trajectory's snippet starting no earlier than the worse one's (the "progress prior").
D-REX (Brown et al., 2019): trajectories ranked automatically by their noise level ε (less noise =
better); only levels at least ``min_gap`` apart are paired.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Segment:
    traj: int  # index into the trajectory list
    start: int  # first step
    end: int  # one past the last step


@dataclass
class PairSet:
    obs: np.ndarray  # [N_states, obs_dim] all observations of all trajectories, concatenated
    offsets: np.ndarray  # start row of each trajectory's observations in `obs`
    first: list[Segment]
    second: list[Segment]
    target: np.ndarray  # P(first is better)

    def __len__(self) -> int:
        return len(self.target)

    def index_arrays(self, which: str, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices [n_pairs, length] into ``obs`` (padded) and a 0/1 mask of real steps."""
        segs = self.first if which == "first" else self.second
        idx = np.zeros((len(segs), length), dtype=np.int64)
        mask = np.zeros((len(segs), length), dtype=np.float32)
        for i, s in enumerate(segs):
            n = s.end - s.start
            rows = self.offsets[s.traj] + np.arange(s.start + 1, s.end + 1)
            idx[i, :n] = rows
            mask[i, :n] = 1.0
        return idx, mask


def stack_observations(observations: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One table of every trajectory's observations (a row each, flattened) and each one's first row.
    Images (uint8 ``[T+1, C, H, W]``, :mod:`rlhf_core.envs.pixels`) stay uint8: a quarter of float32."""
    lengths = [len(o) for o in observations]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    images = all(o.dtype == np.uint8 and o.ndim == 4 for o in observations)
    flat = np.concatenate([o.reshape(len(o), -1) for o in observations]).astype(np.uint8 if images else np.float32)
    return flat, offsets


def trex_pairs(observations: list[np.ndarray], ranks: list[float], n_pairs: int, *,
               min_len: int = 20, max_len: int = 50, seed: int = 0, min_gap: float = 0.0) -> PairSet:
    """Snippet pairs from trajectories with ``ranks`` (higher = better; equal ranks, or ranks less
    than ``min_gap`` apart, never pair).

    ``observations[i]`` has T_i + 1 rows. Snippet lengths are uniform in [min_len, max_len]
    (capped by the shorter trajectory); the better snippet starts no earlier than the worse one.
    """
    if len(observations) != len(ranks):
        raise ValueError("one rank per trajectory")
    if len(set(ranks)) < 2:
        raise ValueError("T-REX needs trajectories of at least two different ranks")
    if max(ranks) - min(ranks) < min_gap:
        raise ValueError(f"no two ranks are {min_gap:g} apart")
    rng = np.random.default_rng(seed)
    flat, offsets = stack_observations(observations)
    steps = [len(o) - 1 for o in observations]
    first, second, target = [], [], []
    ranks_arr = np.asarray(ranks, dtype=float)
    tries = 0
    while len(target) < n_pairs:
        tries += 1
        if tries > n_pairs * 100:
            raise ValueError("could not sample snippet pairs: trajectories too short for min_len")
        i, j = rng.choice(len(observations), size=2, replace=False)
        if ranks_arr[i] == ranks_arr[j] or abs(ranks_arr[i] - ranks_arr[j]) < min_gap:
            continue
        worse, better = (i, j) if ranks_arr[i] < ranks_arr[j] else (j, i)
        cap = min(steps[worse], steps[better], max_len)
        if cap < 1:
            continue
        length = int(rng.integers(min(min_len, cap), cap + 1))
        start_w = int(rng.integers(0, steps[worse] - length + 1))
        lo = min(start_w, steps[better] - length)  # progress prior: better starts no earlier
        start_b = int(rng.integers(lo, steps[better] - length + 1))
        seg_w, seg_b = Segment(int(worse), start_w, start_w + length), Segment(int(better), start_b, start_b + length)
        if rng.random() < 0.5:  # randomise sides
            first.append(seg_b), second.append(seg_w), target.append(1.0)
        else:
            first.append(seg_w), second.append(seg_b), target.append(0.0)
    return PairSet(flat, offsets, first, second, np.asarray(target, dtype=np.float32))


def drex_ranks(epsilons: list[float]) -> list[float]:
    """D-REX's automatic ranking: less noise is better (rank = -ε)."""
    return [-float(e) for e in epsilons]


def drex_pairs(observations: list[np.ndarray], epsilons: list[float], n_pairs: int, *, min_gap: float = 0.3,
               min_len: int = 20, max_len: int = 50, seed: int = 0,
               overrides: dict[tuple[int, int], float] | None = None) -> PairSet:
    """T-REX snippet pairs between trajectories whose ε differ by at least ``min_gap``.

    ``overrides`` maps (trajectory i, trajectory j) to P(i better), for pairs a person corrected.
    """
    rng = np.random.default_rng(seed)
    eps = np.asarray(epsilons, dtype=float)
    if not (np.abs(eps[:, None] - eps[None, :]) >= min_gap - 1e-9).any():
        raise ValueError(f"no two noise levels are {min_gap} apart")
    pairs = trex_pairs(observations, drex_ranks(epsilons), n_pairs * 4, min_len=min_len, max_len=max_len,
                       seed=int(rng.integers(1 << 31)))
    keep = [k for k in range(len(pairs)) if abs(eps[pairs.first[k].traj] - eps[pairs.second[k].traj]) >= min_gap - 1e-9]
    keep = keep[:n_pairs]
    target = pairs.target[keep].copy()
    first = [pairs.first[k] for k in keep]
    second = [pairs.second[k] for k in keep]
    for n, (a, b) in enumerate(zip(first, second)):
        if overrides and (a.traj, b.traj) in overrides:
            target[n] = overrides[(a.traj, b.traj)]
        elif overrides and (b.traj, a.traj) in overrides:
            target[n] = 1.0 - overrides[(b.traj, a.traj)]
    return PairSet(pairs.obs, pairs.offsets, first, second, target)


def whole_pairs(observations: list[np.ndarray], pairs: list[tuple[int, int, float]]) -> PairSet:
    """Pairs of whole items (clips or trajectories), e.g. from the project's comparisons."""
    flat, offsets = stack_observations(observations)
    first = [Segment(i, 0, len(observations[i]) - 1) for i, _, _ in pairs]
    second = [Segment(j, 0, len(observations[j]) - 1) for _, j, _ in pairs]
    return PairSet(flat, offsets, first, second, np.asarray([p for _, _, p in pairs], dtype=np.float32))
