"""The project's text comparisons as training pairs (what the reward model, DPO and SFT train on), the
seeded held-out split every text job uses, and the proxy/gold split of a held-out gold reward model."""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlhf_core.rewards.outcomes import outcome_target, prefer_adjudications


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
    person's answer). A pair with an adjudication is trained on the adjudication only
    (:func:`rlhf_core.rewards.outcomes.prefer_adjudications`).
    """
    wanted = {s.strip() for s in label_sources.split(",") if s.strip()}
    prompts: dict[int, str] = {}
    out = []
    comparisons = project.comparisons()
    human_pairs = {frozenset((c["left_id"], c["right_id"])) for c in comparisons if c["source"] == "human"}
    for c in prefer_adjudications(c for c in comparisons if c["source"] in wanted):
        target = outcome_target(c["outcome"])
        if target is None:
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


def split_for_gold(pairs: list[TextPair], gold_fraction: float, seed: int) -> tuple[list[TextPair], list[TextPair]]:
    """(proxy, gold): two disjoint parts of ``pairs`` that together are all of them, for a reward model
    and a held-out GOLD reward model trained on labels the first never sees (Gao et al. 2022; Coste et
    al. 2023).

    Pairs are split in groups: every label of the same two responses to a prompt (in either order, by
    any labeller or source) lands on one side, so the gold model is never trained on a comparison the
    proxy was also trained on. The groups are shuffled with ``seed``; the gold side gets
    ``round(groups * gold_fraction)`` of them, at least one, and at least one stays with the proxy.
    Each side keeps the order of ``pairs``.
    """
    if not 0.0 < gold_fraction < 1.0:
        raise ValueError(f"gold_fraction must be between 0 and 1, got {gold_fraction}")
    groups: dict[tuple, int] = {}
    of_pair = [groups.setdefault((p.prompt, frozenset((p.left, p.right))), len(groups)) for p in pairs]
    if len(groups) < 2:
        raise ValueError(f"A held-out gold reward model needs at least two different labelled pairs of responses; "
                         f"the project has {len(groups)}. Label more pairs, or set gold_fraction to 0.")
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    n_gold = min(max(int(round(len(groups) * gold_fraction)), 1), len(groups) - 1)
    gold_groups = set(order[:n_gold])
    proxy = [p for p, g in zip(pairs, of_pair) if g not in gold_groups]
    gold = [p for p, g in zip(pairs, of_pair) if g in gold_groups]
    return proxy, gold
