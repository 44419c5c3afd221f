"""Label queued pairs with a simulated B-Pref teacher (source = synthetic).

The teacher sees the TRUE per-step rewards of both items (clips or whole trajectories), as in
B-Pref; see :mod:`rlhf_core.labelers.synthetic` for the teachers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf_core.config import param
from rlhf_core.envs.storage import load_arrays
from rlhf_core.jobs import JobContext
from rlhf_core.labelers.synthetic import TEACHERS, Teacher


@dataclass
class LabelPairsConfig:
    teacher: str = param("oracle", "B-Pref teacher.", choices=TEACHERS)
    beta: float = param(1.0, "noisy: rationality beta in sigmoid(beta * dR).", min=0.0, min_inclusive=False)
    epsilon: float = param(0.1, "mistake: probability of flipping the answer.", min=0.0, max=1.0)
    gamma: float = param(0.9, "myopic: weight gamma^(H-1-t) on step t.", min=0.0, max=1.0)
    skip_threshold: float = param(0.0, "skip: skip when both returns are below this.")
    equal_threshold: float = param(1.0, "equal: tie when returns differ by less than this.", min=0.0)
    max_pairs: int = param(100, "Label at most this many queued pairs.", min=1)
    seed: int = param(0, "Random seed of the teacher.", min=0)


def label_pairs(config: LabelPairsConfig, ctx: JobContext) -> dict:
    project = ctx.project()
    teacher = Teacher.preset(config.teacher, beta=config.beta, gamma=config.gamma, epsilon=config.epsilon,
                             skip_threshold=config.skip_threshold, equal_threshold=config.equal_threshold)
    labeller = project.ensure_labeller(f"{config.teacher} teacher", "synthetic",
                                       {"teacher": config.teacher, "description": teacher.describe()})
    rng = np.random.default_rng(config.seed)
    # B-Pref teachers judge from true rewards: only clips and trajectories have them (not text)
    pending = [p for p in project.pending_pairs(limit=1_000_000)
               if project.get_item(p["left_id"])["kind"] != "response"][: config.max_pairs]
    counts: dict[str, int] = {}
    cache: dict[int, np.ndarray] = {}
    taken = 0

    def rewards(item_id: int) -> np.ndarray:
        if item_id not in cache:
            cache[item_id] = load_arrays(project, project.get_item(item_id))["rewards"]
        return cache[item_id]

    for i, pair in enumerate(pending):
        ctx.raise_if_cancelled()
        outcome = teacher.label(rewards(pair["left_id"]), rewards(pair["right_id"]), rng)
        # claimed as it is labelled: a pair somebody labelled since the job started is left alone
        cid = project.claim_pair(pair["id"], outcome, labeller_id=labeller, source="synthetic",
                                 meta={"teacher": teacher.describe()})
        if cid is None:
            taken += 1
        else:
            counts[outcome] = counts.get(outcome, 0) + 1
        ctx.progress(i + 1, len(pending), f"labelled {i + 1 - taken}/{len(pending)}")
    return {"labelled": len(pending) - taken, "labelled_by_others_meanwhile": taken, "outcomes": counts,
            "teacher": teacher.describe()}
