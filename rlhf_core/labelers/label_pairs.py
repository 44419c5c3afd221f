"""Label queued pairs with a simulated B-Pref teacher (source = synthetic).

The teacher sees the TRUE per-step rewards of both items (clips or whole trajectories), as in
B-Pref; see :mod:`rlhf_core.labelers.synthetic` for the teachers. The skip and equal thresholds are relative
to the returns of the pairs this job labels, per kind of item and environment (clips of Pendulum are one
batch, its whole trajectories another, text responses a third). Text responses have no true reward:
with ``text_reward`` (a rule reward spec, :mod:`rlhf_core.text.rewards`) the teacher judges each response
by that rule's score instead, a one-step "return" (the synthetic teacher of iterated text rounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf_core.config import param
from rlhf_core.envs.storage import load_arrays
from rlhf_core.jobs import JobContext
from rlhf_core.labelers.synthetic import EQUAL_FRACTION, SKIP_FRACTION, TEACHERS, Teacher
from rlhf_core.text.rewards import parse_reward_spec, parse_spec_items


@dataclass
class LabelPairsConfig:
    teacher: str = param("oracle", "B-Pref teacher.", choices=TEACHERS)
    beta: float = param(1.0, "noisy: rationality beta in sigmoid(beta * dR).", min=0.0, min_inclusive=False)
    epsilon: float = param(0.1, "mistake: probability of flipping the answer.", min=0.0, max=1.0)
    gamma: float = param(0.9, "myopic: weight gamma^(H-1-t) on step t.", min=0.0, max=1.0)
    skip_fraction: float = param(SKIP_FRACTION, "skip: skip a pair when both returns are below lowest + this "
                                 "fraction of the range of the returns being labelled (B-Pref's relative threshold).",
                                 min=0.0, max=1.0)
    equal_fraction: float = param(EQUAL_FRACTION, "equal: tie when the two returns differ by less than this fraction "
                                  "of the range of the returns being labelled.", min=0.0, max=1.0)
    thresholds: str = param("relative", "skip/equal: relative (the fractions above) or absolute (skip_threshold and "
                            "equal_threshold, in return units, as before the relative thresholds).",
                            choices=("relative", "absolute"), advanced=True)
    skip_threshold: float = param(0.0, "skip, thresholds = absolute: skip when both returns are below this.",
                                  advanced=True)
    equal_threshold: float = param(1.0, "equal, thresholds = absolute: tie when returns differ by less than this.",
                                   min=0.0, advanced=True)
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
    teacher = make_teacher(config)
    labeller = project.ensure_labeller(f"{config.teacher} teacher", "synthetic",
                                       {"teacher": config.teacher, "description": teacher.describe()})
    rng = np.random.default_rng(config.seed)
    text_reward = parse_reward_spec(config.text_reward) if config.text_reward.strip() else None
    # B-Pref teachers judge from true rewards: clips and trajectories have them; text only a rule's score
    pending = [p for p in project.pending_pairs(limit=1_000_000, labeller_id=labeller)  # not those it answered
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

    def batch(item_id: int) -> tuple:
        item = project.get_item(item_id)
        return item["kind"], item["env_id"]

    # the relative thresholds of each batch: one kind of item of one environment
    returns: dict[tuple, list[float]] = {}
    for pair in pending:
        for item_id in (pair["left_id"], pair["right_id"]):
            returns.setdefault(batch(item_id), []).append(float(np.sum(rewards(item_id), dtype=np.float64)))
    limits = {key: teacher.thresholds(values) for key, values in returns.items()}
    for i, pair in enumerate(pending):
        ctx.raise_if_cancelled()
        outcome = teacher.label(rewards(pair["left_id"]), rewards(pair["right_id"]), rng,
                                limits[batch(pair["left_id"])])
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
    used = {" ".join(str(k) for k in key if k): {"skip_below": t.skip_below, "tie_within": t.tie_within}
            for key, t in limits.items() if t.skip_below is not None or t.tie_within is not None}
    return {"labelled": len(pending) - taken, "labelled_by_others_meanwhile": taken, "outcomes": counts,
            "teacher": teacher.describe(), **({"thresholds": used} if used else {})}


def make_teacher(config: LabelPairsConfig) -> Teacher:
    """The teacher that ``config``'s settings describe."""
    absolute = config.thresholds == "absolute"
    return Teacher.preset(config.teacher, beta=config.beta, gamma=config.gamma, epsilon=config.epsilon,
                          skip_fraction=config.skip_fraction, equal_fraction=config.equal_fraction,
                          skip_threshold=config.skip_threshold if absolute else None,
                          equal_threshold=config.equal_threshold if absolute else None)
