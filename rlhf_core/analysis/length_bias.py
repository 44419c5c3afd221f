"""What a trained text reward model thinks of the project's responses, and its length bias.

Reward models trained on human preferences often reward LENGTH rather than quality (longer
answers look more helpful to labellers; Singhal et al. 2023, "A Long Way to Go"). The reward model
page plots every response's reward against its length; this module computes those points and the
Pearson correlation between them. A correlation near +1 means the model has mostly learned "longer
is better" and a policy trained on it will grow its answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from rlhf_core import kinds

SAMPLE_KIND = kinds.SAMPLE_RESPONSE_SCORES


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation; NaN when fewer than 2 points or a constant series."""
    n = len(xs)
    if n != len(ys):
        raise ValueError("series of different lengths")
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return float("nan")
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return sxy / math.sqrt(sxx * syy)


def project_responses(project, limit: int = 400) -> list[dict]:
    """Live responses with their prompt text, newest first, at most ``limit``."""
    rows = project.conn.execute(
        "SELECT i.id, i.prompt_id, i.text, i.length, i.source, p.text AS prompt FROM items i "
        "JOIN prompts p ON p.id = i.prompt_id WHERE i.kind = 'response' AND i.deleted_at IS NULL "
        "ORDER BY i.id DESC LIMIT ?", [int(limit)]).fetchall()
    return [dict(r) for r in rows]


def score_project_responses(model: Any, tokenizer: Any, project, *, limit: int = 400, batch_size: int = 8,
                            heldout_texts: set[tuple[str, str]] | None = None,
                            on_batch: Callable[[int, int], None] | None = None) -> list[dict]:
    """Score up to ``limit`` responses: ``[{item_id, prompt_id, reward, tokens, chars, heldout}]``.

    ``tokens`` is the response's own token count (stored ``length`` when generated, else counted);
    ``heldout`` marks responses that appear only in held-out pairs (``heldout_texts`` holds
    ``(prompt, response)`` tuples). ``on_batch(done, total)`` is called after each batch (and may
    raise to cancel).
    """
    from rlhf_core.text.reward_model import score_responses  # start-up: imports torch

    rows = project_responses(project, limit)
    out: list[dict] = []
    held = heldout_texts or set()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        rewards = score_responses(model, tokenizer, [r["prompt"] for r in chunk], [r["text"] for r in chunk],
                                  batch_size=batch_size).tolist()
        for r, reward in zip(chunk, rewards):
            tokens = r["length"]
            if tokens is None:
                tokens = len(tokenizer(r["text"], add_special_tokens=False)["input_ids"])
            out.append({"item_id": int(r["id"]), "prompt_id": int(r["prompt_id"]), "reward": float(reward),
                        "tokens": int(tokens), "chars": len(r["text"]), "source": r["source"],
                        "heldout": (r["prompt"], r["text"]) in held})
        if on_batch is not None:
            on_batch(min(start + batch_size, len(rows)), len(rows))
    return out


def length_bias(scores: Sequence[dict]) -> dict:
    """Pearson r of reward vs length in tokens, and the numbers behind it."""
    xs = [float(s["tokens"]) for s in scores]
    ys = [float(s["reward"]) for s in scores]
    r = pearson(xs, ys)
    return {"n": len(scores), "pearson_r": None if math.isnan(r) else round(r, 4),
            "mean_reward": round(sum(ys) / len(ys), 4) if ys else None,
            "mean_tokens": round(sum(xs) / len(xs), 2) if xs else None}


def percentile(value: float, population: Sequence[float]) -> float | None:
    """Share (0-100) of ``population`` strictly below ``value``, ties counted half."""
    if not population:
        return None
    below = sum(1 for p in population if p < value)
    equal = sum(1 for p in population if p == value)
    return 100.0 * (below + 0.5 * equal) / len(population)
