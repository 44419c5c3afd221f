"""Human labels on text responses: queued pairs of responses and "preference with correction".

- :func:`queue_response_pairs` puts pairs of responses to the SAME prompt in the project's pair
  queue (all K-choose-2 pairs of each prompt, or a random subset), skipping pairs that are already
  labelled or waiting. Which response is shown on the left is random (seeded), so a position bias
  of the labeller does not line up with generation order.
- :func:`add_correction` stores a person's rewrite of a response as a new ``response`` item
  (``source = "correction"``, ``meta.corrected_from`` = the edited response) and one comparison per
  sampled response to that prompt, the correction preferred: 3 samples + 1 correction -> 3 pairs
  (InstructGPT's "preference with correction"). Everything is written in one transaction. A model's
  revision (Constitutional AI, :mod:`rlhf_core.labelers.critique_revise`) is stored the same way with
  ``source = 'ai'`` comparisons, preferred over the texts it revised.
- :func:`undo_correction` soft-deletes a correction and its comparisons (nothing is erased).
- :func:`word_diff` finds the words that differ between two responses (for highlighting).

Orientation of a correction's comparisons: ``left`` = the sampled response, ``right`` = the
correction, outcome ``"right"`` (the convention of :func:`rlhf_core.store.expand_ranking`: the
worse item on the left).
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Iterable, Mapping
from itertools import combinations

from rlhf_core.store import utc_now

CORRECTION_SOURCE = "correction"


def responses_by_prompt(project, prompt_ids: Iterable[int] | None = None) -> dict[int, list[int]]:
    """Live (not deleted) response ids of each live prompt, in id order; ``{prompt_id: [item ids]}``."""
    sql = ("SELECT i.id, i.prompt_id FROM items i JOIN prompts p ON p.id = i.prompt_id "
           "WHERE i.kind = 'response' AND i.deleted_at IS NULL AND p.deleted_at IS NULL")
    args: list = []
    if prompt_ids is not None:
        wanted = [int(p) for p in prompt_ids]
        if not wanted:
            return {}
        sql += f" AND i.prompt_id IN ({', '.join('?' for _ in wanted)})"
        args = wanted
    out: dict[int, list[int]] = {}
    for item_id, prompt_id in project.conn.execute(sql + " ORDER BY i.prompt_id, i.id", args):
        out.setdefault(prompt_id, []).append(item_id)
    return out


def _labelled_pairs(project, labeller_id: int | None) -> set[tuple[int, int]]:
    sql = "SELECT left_id, right_id FROM comparisons WHERE deleted_at IS NULL"
    args: list = []
    if labeller_id is not None:
        sql += " AND labeller_id = ?"
        args = [labeller_id]
    return {(min(a, b), max(a, b)) for a, b in project.conn.execute(sql, args)}


def _queued_pairs(project) -> set[tuple[int, int]]:
    rows = [(r["left_id"], r["right_id"]) for r in project.pending_pairs(limit=-1)]  # all still wanting answers
    return {(min(a, b), max(a, b)) for a, b in rows}


def queue_response_pairs(
    project,
    prompt_ids: Iterable[int] | None = None,
    per_prompt: int | None = None,
    seed: int = 0,
    *,
    labeller_id: int | None = None,
    run_id: int | None = None,
) -> list[int]:
    """Queue pairs of responses to the same prompt for labelling; returns the new queue ids.

    ``prompt_ids``: only these prompts (default: every prompt with at least two responses).
    ``per_prompt``: at most this many new pairs per prompt, drawn at random (``None`` or 0: all
    pairs). A pair already waiting in the queue, or already labelled (a live comparison of the two
    responses in either order, from any source), is skipped. With ``labeller_id``, only this
    labeller's labels count as "already labelled", so pairs someone else labelled are queued again
    (a second opinion, for labeller agreement). Deterministic for a given ``seed``.
    """
    if per_prompt is not None and per_prompt < 0:
        raise ValueError("per_prompt must be 0 (all pairs) or a positive number")
    rng = random.Random(seed)
    done = _labelled_pairs(project, labeller_id) | _queued_pairs(project)
    queued: list[int] = []
    with project.db.atomic():
        for prompt_id, ids in responses_by_prompt(project, prompt_ids).items():
            candidates = [p for p in combinations(ids, 2) if p not in done]
            if per_prompt:
                candidates = sorted(rng.sample(candidates, min(per_prompt, len(candidates))))
            for a, b in candidates:
                left, right = (a, b) if rng.random() < 0.5 else (b, a)
                reason = {"selection": "random" if per_prompt else "all", "prompt_id": prompt_id}
                if labeller_id is not None:
                    reason["for_labeller_id"] = labeller_id
                queued.append(project.enqueue_pair(left, right, reason=reason, run_id=run_id))
                done.add((a, b))
    return queued


def add_correction(
    project,
    response_id: int,
    corrected_text: str,
    labeller_id: int,
    response_ms: int | None = None,
    *,
    source: str = "human",
    meta: Mapping | None = None,
    run_id: int | None = None,
    over: Iterable[int] | None = None,
    guideline_version: int | None = None,
) -> tuple[int, list[int]]:
    """Store a person's rewrite of response ``response_id``; returns ``(new item id, comparison ids)``.

    The rewrite becomes a new response to the same prompt (``source = "correction"``, ``meta`` has
    ``corrected_from`` and ``labeller_id``) and is preferred over every SAMPLED response to that
    prompt (live responses whose source is not ``"correction"``, the edited one included): one
    comparison each, labelled by ``labeller_id`` with ``source = "human"``. ``response_ms`` (time
    spent correcting) is kept on the item and on each comparison. One transaction: either all of
    it is stored or nothing. An empty or unchanged text raises ``ValueError`` and stores nothing.

    A model's revision (:mod:`rlhf_core.labelers.critique_revise`) passes ``source = "ai"`` (the
    comparisons' source), ``meta`` (added to the item's: its provenance), ``run_id`` (the run that
    wrote it) and ``over``: the responses it is preferred over, instead of every sampled one (the
    edited response is always among them). ``guideline_version``: the labelling guidelines shown (kept on
    each comparison).
    """
    original = project.get_item(int(response_id))
    if original is None or original["kind"] != "response":
        raise ValueError(f"there is no response {response_id} to correct")
    if original["deleted_at"] is not None:
        raise ValueError(f"response {response_id} was deleted; it cannot be corrected")
    text = corrected_text if isinstance(corrected_text, str) else ""
    if not text.strip():
        raise ValueError("The correction is empty: write the improved response (or cancel the correction).")
    if text.strip() == (original["text"] or "").strip():
        raise ValueError("The correction is the same as the original response: change the text "
                         "(or cancel the correction).")
    if labeller_id is None:
        raise ValueError("a correction needs a labeller")
    if response_ms is not None:
        response_ms = max(0, int(response_ms))
    with project.db.atomic():
        if over is None:
            sampled = [r[0] for r in project.conn.execute(
                "SELECT id FROM items WHERE kind = 'response' AND prompt_id = ? AND deleted_at IS NULL "
                "AND source != ? ORDER BY id", [original["prompt_id"], CORRECTION_SOURCE])]
        else:
            sampled = _same_prompt_responses(project, over, original["prompt_id"])
        if original["id"] not in sampled:  # correcting a correction: it is still beaten by the rewrite
            sampled.append(original["id"])
        new_id = project.add_item(
            "response", prompt_id=original["prompt_id"], source=CORRECTION_SOURCE, text=text,
            model_id=None, length=None, run_id=run_id,
            meta={**(meta or {}), "corrected_from": original["id"], "labeller_id": labeller_id,
                  "edit_ms": response_ms},
        )
        comparison_ids = [
            project.add_comparison(other, new_id, "right", labeller_id=labeller_id, source=source,
                                   response_ms=response_ms, guideline_version=guideline_version,
                                   meta={"correction": new_id, "corrected_from": original["id"]})
            for other in sampled
        ]
    return new_id, comparison_ids


def _same_prompt_responses(project, ids: Iterable[int], prompt_id: int) -> list[int]:
    """``ids`` (in order, once each) after checking each is a live response to ``prompt_id``."""
    out: list[int] = []
    for i in ids:
        item = project.get_item(int(i))
        if item is None or item["kind"] != "response" or item["deleted_at"] is not None:
            raise ValueError(f"there is no live response {i} to prefer the correction over")
        if item["prompt_id"] != prompt_id:
            raise ValueError(f"response {i} answers another prompt; a correction is compared with responses "
                             "to its own prompt")
        if item["id"] not in out:
            out.append(item["id"])
    return out


def undo_correction(project, item_id: int) -> int:
    """Soft-delete a correction and its live comparisons; returns how many comparisons were undone."""
    item = project.get_item(int(item_id))
    if item is None or item["kind"] != "response" or item["source"] != CORRECTION_SOURCE:
        raise ValueError(f"item {item_id} is not a correction")
    now = utc_now()
    with project.db.atomic():
        project.conn.execute("UPDATE items SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL", [now, item_id])
        cur = project.conn.execute(
            "UPDATE comparisons SET deleted_at = ? WHERE (left_id = ? OR right_id = ?) AND deleted_at IS NULL",
            [now, item_id, item_id])
    return cur.rowcount


def correction_of(project, comparison_id: int) -> int | None:
    """The correction item a comparison was made for (``None`` for an ordinary label)."""
    row = project.conn.execute(
        "SELECT json_extract(meta_json, '$.correction') FROM comparisons WHERE id = ?", [comparison_id]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


_WORD = re.compile(r"\S+")


def word_diff(a: str, b: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Word-level difference of two texts (difflib on whitespace-separated words).

    Returns ``(spans_a, spans_b)``: character ranges ``(start, end)`` (Python string indices) of the
    runs of words of ``a`` that are not in ``b`` (deleted or replaced) and of ``b`` that are not in
    ``a`` (inserted or replacing). Adjacent changed words form one span.
    """
    wa = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(a)]
    wb = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(b)]
    matcher = difflib.SequenceMatcher(None, [w[2] for w in wa], [w[2] for w in wb], autojunk=False)
    spans_a, spans_b = [], []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete") and i2 > i1:
            spans_a.append((wa[i1][0], wa[i2 - 1][1]))
        if tag in ("replace", "insert") and j2 > j1:
            spans_b.append((wb[j1][0], wb[j2 - 1][1]))
    return spans_a, spans_b
