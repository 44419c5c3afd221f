"""Label queued pairs with a simulated B-Pref teacher (source = synthetic).

The teacher sees the TRUE per-step rewards of both items (clips or whole trajectories), as in
B-Pref; see :mod:`rlhf_core.labelers.synthetic` for the teachers. Text responses have no true reward:
with ``text_reward`` (a rule reward spec, :mod:`rlhf_core.text.rewards`) the teacher judges each response
by that rule's score instead, a one-step "return" (the synthetic teacher of iterated text rounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf_core.config import param
from rlhf_core.envs.storage import load_arrays
from rlhf_core.jobs import JobContext
from rlhf_core.labelers.synthetic import TEACHERS, Teacher
from rlhf_core.text.rewards import parse_reward_spec, parse_spec_items


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
    text_reward: str = param("", "Also label queued text pairs, judging each response by this rule reward "
                             "(e.g. 'length' or 'format:0.5,correctness:1'); empty: text pairs are left to people "
                             "and AI labellers.")
    queued_by_run: int = param(0, "Only pairs that this run queued (0: any run's).", min=0, advanced=True)

    def check(self) -> list[str]:
        if not self.text_reward.strip():
            return []
        try:
            names = [name for name, _ in parse_spec_items(self.text_reward)]
        except ValueError as exc:
            return [f"text_reward: {exc}"]
        if "model" in names:
            return ["text_reward: a rule reward only; a learned reward model labels through the ai_labels job"]
        return []


def label_pairs(config: LabelPairsConfig, ctx: JobContext) -> dict:
    project = ctx.project()
    teacher = Teacher.preset(config.teacher, beta=config.beta, gamma=config.gamma, epsilon=config.epsilon,
                             skip_threshold=config.skip_threshold, equal_threshold=config.equal_threshold)
    labeller = project.ensure_labeller(f"{config.teacher} teacher", "synthetic",
                                       {"teacher": config.teacher, "description": teacher.describe()})
    rng = np.random.default_rng(config.seed)
    text_reward = parse_reward_spec(config.text_reward) if config.text_reward.strip() else None
    # B-Pref teachers judge from true rewards: clips and trajectories have them; text only a rule's score
    pending = [p for p in project.pending_pairs(limit=1_000_000)
               if (not config.queued_by_run or p["run_id"] == config.queued_by_run)
               and (text_reward is not None or project.get_item(p["left_id"])["kind"] != "response")
               ][: config.max_pairs]
    counts: dict[str, int] = {}
    cache: dict[int, np.ndarray] = {}
    taken = 0

    def rewards(item_id: int) -> np.ndarray:
        if item_id not in cache:
            item = project.get_item(item_id)
            if item["kind"] == "response":
                row = project.conn.execute("SELECT text, gold_answer FROM prompts WHERE id = ?",
                                           [item["prompt_id"]]).fetchone()
                meta = {"gold_answer": row["gold_answer"] if row else None, "completion_tokens": item["length"]}
                score = text_reward.evaluate([row["text"] if row else ""], [item["text"] or ""], [meta]).total[0]
                cache[item_id] = np.array([score])
            else:
                cache[item_id] = load_arrays(project, item)["rewards"]
        return cache[item_id]

    for i, pair in enumerate(pending):
        ctx.raise_if_cancelled()
        outcome = teacher.label(rewards(pair["left_id"]), rewards(pair["right_id"]), rng)
        # claimed as it is labelled: a pair somebody labelled since the job started is left alone
        meta = {"teacher": teacher.describe()}
        if text_reward is not None and project.get_item(pair["left_id"])["kind"] == "response":
            meta["text_reward"] = text_reward.spec()
        cid = project.claim_pair(pair["id"], outcome, labeller_id=labeller, source="synthetic", meta=meta)
        if cid is None:
            taken += 1
        else:
            counts[outcome] = counts.get(outcome, 0) + 1
        ctx.progress(i + 1, len(pending), f"labelled {i + 1 - taken}/{len(pending)}")
    return {"labelled": len(pending) - taken, "labelled_by_others_meanwhile": taken, "outcomes": counts,
            "teacher": teacher.describe()}
