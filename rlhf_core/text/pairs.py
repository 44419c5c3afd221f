"""The project's text comparisons as training pairs (what the reward model, DPO and SFT train on), and
the seeded held-out split every text job uses."""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlhf_core.rewards.outcomes import outcome_target


@dataclass
class TextPair:
    prompt: str
    left: str
    right: str
    target: float  # P(left is better): 1, 0 or 0.5
    comparison_id: int | None = None


def text_pairs(project, label_sources: str = "human,synthetic,ai") -> list[TextPair]:
    """Every live comparison of two live responses to the same prompt, with a preference.

    A pair that a person labelled is trained on the person's label(s) only: AI labels of the same
    two responses are dropped (a reviewed or overridden AI label must not count against the
    person's answer).
    """
    wanted = {s.strip() for s in label_sources.split(",") if s.strip()}
    prompts: dict[int, str] = {}
    out = []
    comparisons = project.comparisons()
    human_pairs = {frozenset((c["left_id"], c["right_id"])) for c in comparisons if c["source"] == "human"}
    for c in comparisons:
        target = outcome_target(c["outcome"])
        if target is None or c["source"] not in wanted:
            continue
        if c["source"] == "ai" and frozenset((c["left_id"], c["right_id"])) in human_pairs:
            continue
        left, right = project.get_item(c["left_id"]), project.get_item(c["right_id"])
        if left is None or right is None or any(
                i["kind"] != "response" or i["deleted_at"] is not None or i["text"] is None for i in (left, right)):
            continue
        if left["prompt_id"] is None or left["prompt_id"] != right["prompt_id"]:
            continue
        pid = int(left["prompt_id"])
        if pid not in prompts:
            row = project.conn.execute("SELECT text FROM prompts WHERE id=?", [pid]).fetchone()
            if row is None:
                continue
            prompts[pid] = row[0]
        out.append(TextPair(prompts[pid], left["text"], right["text"], float(target), int(c["id"])))
    return out


def split_pairs(pairs: list, heldout_fraction: float, seed: int) -> tuple[list, list]:
    """(train, heldout) of any list (pairs, prompts): a seeded shuffle; at least one training item stays."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_held = min(int(round(len(pairs) * heldout_fraction)), len(pairs) - 1) if heldout_fraction > 0 else 0
    held = [pairs[i] for i in order[:n_held]]
    train = [pairs[i] for i in order[n_held:]]
    return train, held
