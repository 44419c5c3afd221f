"""D-REX noise levels, their automatic ranking, and a person's corrections of it.

D-REX (Brown et al., CoRL 2019) ranks rollouts of a behavioural-cloning policy by the noise ε they
were collected with: less noise is assumed better, and only levels at least ``min_gap`` apart
are paired. That assumption holds only while the noise-degradation curve (mean true return per
ε) falls; where it does not, a person can correct the automatic order.

A correction is stored as the person's own labels, never by changing or deleting anything: one
HUMAN comparison (note ``drex-override``) per trajectory pair across the two levels, the
lower-ε trajectory on the left, written in one transaction. Undo soft-deletes those rows
(:meth:`Project.undo_comparison`). When the ``reward_model`` job trains from D-REX data, every
live human comparison between two of its trajectories (an override, or a ranking made on the
Rank page) replaces the automatic label of that trajectory pair (see :func:`drex_overrides`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from rlhf_core.rewards.outcomes import outcome_target

OVERRIDE_NOTE = "drex-override"
VERDICTS = ("agree", "reverse", "equal")  # the person's answer to "ε_a (less noise) is better"
_OUTCOME_OF_VERDICT = {"agree": "left", "reverse": "right", "equal": "tie"}  # left = the lower-ε trajectory
_EPS_DIGITS = 6  # noise levels are grouped after rounding (0.1 + 0.2 and 0.3 are one level)


@dataclass
class NoiseLevel:
    epsilon: float
    trajectory_ids: list[int]
    returns: list[float]  # true return of each trajectory, same order
    sources: list[str] = field(default_factory=list)  # the policy kinds that produced them

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))


@dataclass
class LevelPair:
    """Two noise levels that D-REX pairs; automatically, ``better`` (less noise) beats ``worse``."""

    better: NoiseLevel
    worse: NoiseLevel

    @property
    def gap(self) -> float:
        return self.worse.epsilon - self.better.epsilon

    @property
    def true_returns_agree(self) -> bool:
        """Whether the mean true returns order the two levels as the automatic ranking does."""
        return self.better.mean_return > self.worse.mean_return

    @property
    def trajectory_pairs(self) -> list[tuple[int, int]]:
        return [(a, b) for a in self.better.trajectory_ids for b in self.worse.trajectory_ids]


def drex_trajectories(project, env_id: str) -> list[tuple[dict, dict]]:
    """The project's trajectories of ``env_id`` with a noise level in their source, in id order.

    Exactly the set (and order) the ``reward_model`` job's ``drex`` source trains on, as
    ``(item row, source dict)``.
    """
    out = []
    for t in project.items("trajectory"):
        src = json.loads(t["params_json"] or "{}")
        if t["env_id"] == env_id and src.get("epsilon") is not None:
            out.append((t, src))
    return out


def drex_envs(project) -> list[str]:
    """Environments with noise-injected trajectories at two or more levels (what D-REX needs)."""
    levels: dict[str, set[float]] = {}
    for t in project.items("trajectory"):
        eps = json.loads(t["params_json"] or "{}").get("epsilon")
        if eps is not None:
            levels.setdefault(t["env_id"], set()).add(round(float(eps), _EPS_DIGITS))
    return sorted(env for env, eps in levels.items() if len(eps) >= 2)


def drex_levels(project, env_id: str) -> list[NoiseLevel]:
    """The noise levels of ``env_id`` (ascending ε) with their trajectories and true returns.

    Mean ± std of the true return per level is the noise-degradation curve.
    """
    by_eps: dict[float, NoiseLevel] = {}
    for t, src in drex_trajectories(project, env_id):
        eps = round(float(src["epsilon"]), _EPS_DIGITS)
        level = by_eps.setdefault(eps, NoiseLevel(eps, [], []))
        level.trajectory_ids.append(int(t["id"]))
        level.returns.append(float(t["true_return"]) if t["true_return"] is not None else float("nan"))
        kind = str(src.get("kind", t["source"] or "unknown"))
        if kind not in level.sources:
            level.sources.append(kind)
    return [by_eps[e] for e in sorted(by_eps)]


def drex_auto_pairs(levels: list[NoiseLevel], min_gap: float = 0.3) -> list[LevelPair]:
    """Level pairs at least ``min_gap`` apart, in the automatic order (less noise better).

    Sorted by the better level's ε, then the worse one's (the same tolerance as ``drex_pairs``).
    """
    ordered = sorted(levels, key=lambda lv: lv.epsilon)
    return [LevelPair(a, b) for k, a in enumerate(ordered) for b in ordered[k + 1:]
            if b.epsilon - a.epsilon >= min_gap - 1e-9]


def _live_human(project, ids: set[int]) -> list[dict]:
    """Live human comparisons whose two items are both in ``ids``, oldest first."""
    if len(ids) < 2:
        return []
    marks = ",".join("?" for _ in ids)
    rows = project.conn.execute(
        f"SELECT * FROM comparisons WHERE deleted_at IS NULL AND source='human' "
        f"AND left_id IN ({marks}) AND right_id IN ({marks}) ORDER BY id", [*ids, *ids])
    return [dict(r) for r in rows]


def drex_overrides(project, trajectory_ids: list[int]) -> dict[tuple[int, int], float]:
    """A person's labels between these trajectories as ``{(i, j): P(trajectory i is better)}``.

    ``i`` and ``j`` are positions in ``trajectory_ids`` (the index space of ``drex_pairs``), with
    ``i < j``; a label stored the other way round is flipped (P → 1 − P). Every live human
    comparison with a preference counts (``left``/``right``/``tie``; ``both_bad`` and ``skip`` say
    nothing about the order); when one pair was labelled more than once, the latest label wins.
    """
    index = {int(t): k for k, t in enumerate(trajectory_ids)}
    out: dict[tuple[int, int], float] = {}
    for c in _live_human(project, set(index)):
        p = outcome_target(c["outcome"])
        if p is None:
            continue
        i, j = index[c["left_id"]], index[c["right_id"]]
        if i > j:
            i, j, p = j, i, 1.0 - p
        out[(i, j)] = float(p)  # oldest first: a later label overwrites
    return out


def overridden_pair_count(pairs, overrides: dict[tuple[int, int], float]) -> int:
    """How many snippet pairs of a ``PairSet`` took their target from ``overrides``."""
    keys = set(overrides) | {(j, i) for i, j in overrides}
    return sum((a.traj, b.traj) in keys for a, b in zip(pairs.first, pairs.second))


@dataclass
class LevelOverride:
    """What the person said about one level pair (``verdict`` None: nothing, the automatic order)."""

    verdict: str | None  # agree / reverse / equal / mixed / None
    labelled: int  # trajectory pairs across the two levels with a live human label
    total: int  # all trajectory pairs across the two levels
    comparison_ids: list[int]  # every live override row across the two levels (what Clear undoes)

    def text(self) -> str:
        if self.verdict is None:
            return "auto"
        scope = "" if self.labelled == self.total else f" ({self.labelled} of {self.total} pairs)"
        return f"{self.verdict}{scope}"


def level_override(project, pair: LevelPair) -> LevelOverride:
    """The live human labels across a level pair, summarised as one verdict."""
    better, worse = set(pair.better.trajectory_ids), set(pair.worse.trajectory_ids)
    latest: dict[tuple[int, int], dict] = {}
    override_ids = []
    for c in _live_human(project, better | worse):
        if c["left_id"] in better and c["right_id"] in worse:
            key, flip = (c["left_id"], c["right_id"]), False
        elif c["left_id"] in worse and c["right_id"] in better:
            key, flip = (c["right_id"], c["left_id"]), True
        else:
            continue  # both on the same level
        if c["note"] == OVERRIDE_NOTE:
            override_ids.append(c["id"])
        if outcome_target(c["outcome"]) is not None:
            latest[key] = {**c, "flip": flip}
    verdicts = set()
    for c in latest.values():
        p = outcome_target(c["outcome"])
        p = 1.0 - p if c["flip"] else p
        verdicts.add("agree" if p == 1.0 else "reverse" if p == 0.0 else "equal")
    verdict = None if not verdicts else verdicts.pop() if len(verdicts) == 1 else "mixed"
    return LevelOverride(verdict, len(latest), len(pair.trajectory_pairs), override_ids)


def set_level_override(project, pair: LevelPair, verdict: str, *, labeller_id: int | None = None,
                       env_id: str | None = None) -> list[int]:
    """Store the person's verdict on "ε_better is better than ε_worse" for every trajectory pair.

    ``agree`` confirms the automatic order, ``reverse`` says the noisier level is better, ``equal``
    says neither is. One human comparison per trajectory pair (lower-ε trajectory on the left),
    all in ONE transaction; earlier override rows of this level pair are soft-deleted and
    superseded by the new ones. Returns the new comparison ids.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}; got {verdict!r}")
    outcome = _OUTCOME_OF_VERDICT[verdict]
    meta = {"drex": {"env_id": env_id, "epsilon_better": pair.better.epsilon, "epsilon_worse": pair.worse.epsilon,
                     "verdict": verdict}}
    old = {}
    for cid in level_override(project, pair).comparison_ids:
        row = project.conn.execute("SELECT left_id, right_id FROM comparisons WHERE id=?", [cid]).fetchone()
        old[frozenset((row[0], row[1]))] = cid
    new_ids = []
    with project.db.atomic():
        for cid in old.values():
            project.undo_comparison(cid)
        for a, b in pair.trajectory_pairs:
            new_ids.append(project.add_comparison(
                a, b, outcome, labeller_id=labeller_id, source="human", note=OVERRIDE_NOTE, meta=meta,
                supersedes_id=old.get(frozenset((a, b)))))
    return new_ids


def clear_level_override(project, pair: LevelPair) -> int:
    """Undo the live override rows of a level pair (kept, soft-deleted) in one transaction."""
    ids = level_override(project, pair).comparison_ids
    with project.db.atomic():
        for cid in ids:
            project.undo_comparison(cid)
    return len(ids)
