"""Constitutional AI's supervised stage (Bai et al. 2022): sample, critique, revise; the revisions become
corrections that SFT, the text reward model and DPO learn from.

For each chosen prompt (a prompt set and/or prompt ids, selected as the ``generate`` job selects them):

1. the policy samples a response (stored as an ordinary ``response`` item of this run);
2. the critic model (the policy itself by default, or any local model) continues the conversation
   ``[user: prompt] [assistant: response] [user: critique request]`` and writes a critique;
3. it then gets ``[assistant: critique] [user: revision request]`` and writes the revision.

Steps 2-3 repeat ``rounds`` times, each time on the latest revision with a fresh conversation. The
critique and revision requests are editable templates next to the constitution
(``resources/constitutions/critique_request.txt`` and ``revision_request.txt``, in the paper's shape:
"Identify specific ways in which the assistant's last response is ..." / "Please rewrite the assistant
response to remove ..."; a project's own copies in its folder win, as for the constitution).
``{principle}`` in a template is replaced by ONE principle of the project's constitution, drawn per
response and round (seeded by the prompt text, so it does not depend on which other prompts run), or
a fixed one (``principle`` = its number).

Each revision is stored by :func:`rlhf_core.labelers.text_labels.add_correction` as a correction
(``source = 'correction'``, so SFT's ``corrections`` data picks it up) preferred over every earlier text
of its chain, in comparisons with ``source = 'ai'`` by an ``ai:critic:<model>`` labeller (so the reward
model and DPO use them when their ``label_sources`` include ``ai``). Its ``meta`` keeps the provenance:
``original_id``, ``principle``, ``critique``, ``round``, ``critic_model``, ``policy_model`` (and
``corrected_from``, the text it revised). A revision that is empty or the same as the text it revises
is not stored (the chain goes on from the text it had). A person reviews them
(:func:`revisions_to_review`, :func:`review_revision`, :func:`undo_review`; the Label text page's "Review
revisions" tab): accept, edit or reject. Model text is untrusted: it
is stored and shown as plain text. Sampling is greedy (``temperature`` 0) or seeded per prompt and step, so the same
settings give the same chains.

``device`` and ``precision`` (:mod:`rlhf_core.devices`): the policy and the critic only sample, so they are loaded
on the device in :func:`~rlhf_core.devices.frozen_dtype` (half on a GPU) and sampled under autocast; a device that
cannot be used stops the run before anything is written, and the result records where it ran.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_core import devices, kinds
from rlhf_core.config import param
from rlhf_core.jobs import JobContext
from rlhf_core.labelers.ai_feedback import resolve_constitution
from rlhf_core.labelers.text_labels import add_correction, undo_correction
from rlhf_core.paths import resource_path
from rlhf_core.sources.generate import GenerateConfig, sample_seed, select_prompts
from rlhf_core.text.model import DEFAULT_MODEL_NAME, load_model
from rlhf_core.text.prompts import plain_render

#: the two requests: {which: file name}, the same name in resources/constitutions/ and in a project folder
TEMPLATE_FILES = {"critique": "critique_request.txt", "revision": "revision_request.txt"}
PLACEHOLDER = "{principle}"
METHOD = "critique_revise"
REVIEW_DECISIONS = ("accept", "edit", "reject")
REVIEW_KEY = "reviewed_revision"  # in meta of a person's label or correction: the AI revision reviewed
#: a label the model sometimes writes before its rewrite ("Revised response:", "Here's a rewritten version of
#: the original response:"), removed from the revision
_LEADING_LABEL = re.compile(r"^(?:(?:revised|rewritten|new)\s+)?(?:response|revision|answer)\s*:\s*|"
                            r"^here(?:['\u2019]s| is) (?:a|the|my|your) (?:rewritten|revised|new|improved)"
                            r"[^\n:]{0,80}:\s*", re.IGNORECASE)


# ------------------------------------------------------------------------------- the templates
def default_template_path(which: str) -> Path:
    return resource_path("constitutions", TEMPLATE_FILES[which])


def project_template_path(project_folder: str | os.PathLike, which: str) -> Path:
    return Path(project_folder) / TEMPLATE_FILES[which]


def parse_template(text: str) -> str:
    """A request from a template file's text: the lines not starting with ``#``, stripped."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")).strip()


def load_template(path: str | os.PathLike, which: str) -> str:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise ValueError(f"Cannot read the {which} request {path}: {why}.") from exc
    request = parse_template(text)
    if not request:
        raise ValueError(f"The {which} request {path} is empty (write the request the critic model gets).")
    return request


def resolve_template(which: str, spec: str, project_folder: str | os.PathLike | None) -> tuple[str, Path]:
    """``spec`` '' = the project's own copy if it has one, else the bundled default; otherwise a file
    (relative to the project folder when it is there). Returns ``(request, file)``."""
    spec = (spec or "").strip()
    if spec:
        path = Path(spec).expanduser()
        if not path.is_absolute() and project_folder is not None and (Path(project_folder) / path).is_file():
            path = Path(project_folder) / path
    elif project_folder is not None and project_template_path(project_folder, which).is_file():
        path = project_template_path(project_folder, which)
    else:
        path = default_template_path(which)
    return load_template(path, which), path


def save_project_template(project_folder: str | os.PathLike, which: str, request: str) -> Path:
    """Write the project's own copy of a request (atomically); returns the file."""
    text = parse_template(request)
    if not text:
        raise ValueError(f"The {which} request is empty: write the request the critic model gets.")
    target = project_template_path(project_folder, which)
    header = (f"# This project's {which} request for the critique_revise job. {PLACEHOLDER} is replaced by the "
              "principle asked.\n# Lines starting with # are comments.\n")
    fd, tmp = tempfile.mkstemp(prefix=f".{which}-", suffix=".txt", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(header + text + "\n")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def fill(request: str, principle: str) -> str:
    """The request with ``{principle}`` replaced (plain replacement: other braces stay as written)."""
    return request.replace(PLACEHOLDER, principle.strip())


def choose_principle(principles: list[str], number: int, seed: int, prompt_text: str, round_: int) -> str:
    """Principle ``number`` (1-based), or with 0 one drawn per (seed, round, prompt text)."""
    if number:
        return principles[number - 1]
    return principles[random.Random(f"{int(seed)}\x1f{int(round_)}\x1f{prompt_text}").randrange(len(principles))]


# ------------------------------------------------------------------------------- the conversation
def critique_messages(prompt: str, response: str, critique_request: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response},
            {"role": "user", "content": critique_request}]


def revision_messages(prompt: str, response: str, critique_request: str, critique: str,
                      revision_request: str) -> list[dict[str, str]]:
    return critique_messages(prompt, response, critique_request) + [
        {"role": "assistant", "content": critique}, {"role": "user", "content": revision_request}]


def render_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The conversation in the model's chat template, ending where the assistant's next turn starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_render(messages)


def clean_revision(text: str) -> str:
    """The revision without surrounding space, a leading label such as ``Revised response:`` and the quotes
    around it when the whole rewrite is quoted."""
    text = _LEADING_LABEL.sub("", text.strip(), count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1]:
        text = text[1:-1].strip()
    return text


# ------------------------------------------------------------------------------- a person's review
#: live AI revisions no person has answered (accepted: a live human comparison names it; edited or rejected: it
#: is soft-deleted)
_TO_REVIEW = ("FROM items i JOIN prompts p ON p.id = i.prompt_id WHERE i.kind = 'response' AND i.source = 'correction' "
              "AND i.deleted_at IS NULL AND p.deleted_at IS NULL AND json_extract(i.meta_json, '$.method') = ? "
              "AND NOT EXISTS (SELECT 1 FROM comparisons c WHERE c.deleted_at IS NULL AND c.source = 'human' AND "
              "json_extract(c.meta_json, '$.reviewed_revision') = i.id)")


def revisions_to_review(project, limit: int = 1_000_000, *, run_id: int | None = None) -> list[dict]:
    """Live AI revisions no person has reviewed yet (of run ``run_id``, or any), oldest first: ``id``,
    ``prompt``, ``revised_id`` and ``revised`` (the text it revised), ``revision``, ``critique``, ``principle``,
    ``round``, ``critic_model``."""
    sql = "SELECT i.id, i.text, i.meta_json, p.text AS prompt " + _TO_REVIEW
    args: list = [METHOD]
    if run_id is not None:
        sql += " AND i.run_id = ?"
        args.append(int(run_id))
    out = []
    for row in project.conn.execute(sql + " ORDER BY i.id LIMIT ?", [*args, int(limit)]):
        meta = json.loads(row["meta_json"] or "{}")
        revised = project.get_item(int(meta["corrected_from"]))
        out.append({"id": row["id"], "prompt": row["prompt"], "revised_id": revised["id"], "revised": revised["text"],
                    "revision": row["text"], **{k: meta.get(k) for k in ("critique", "principle", "round",
                                                                         "critic_model")}})
    return out


def review_counts(project) -> dict[str, int]:
    """How many AI revisions wait for a person (``to_review``) and how many people ``accepted``, ``edited`` and
    ``rejected`` (reviews taken back with :func:`undo_review` do not count)."""
    to_review = project.conn.execute("SELECT count(*) " + _TO_REVIEW, [METHOD]).fetchone()[0]
    accepted = project.conn.execute(
        "SELECT count(*) FROM comparisons WHERE deleted_at IS NULL AND source = 'human' AND "
        "json_extract(meta_json, '$.reviewed_revision') IS NOT NULL AND json_extract(meta_json, '$.decision') = "
        "'accept'").fetchone()[0]
    by_decision = {row[0]: row[1] for row in project.conn.execute(
        "SELECT json_extract(meta_json, '$.review.decision'), count(*) FROM items WHERE kind = 'response' AND "
        "deleted_at IS NOT NULL AND json_extract(meta_json, '$.method') = ? GROUP BY 1", [METHOD])}
    return {"to_review": to_review, "accepted": accepted, "edited": by_decision.get("edit", 0),
            "rejected": by_decision.get("reject", 0)}


def _reviewed_by(project, revision_id: int) -> int | None:
    """The live human comparison that accepted this revision, if any."""
    row = project.conn.execute(
        "SELECT id FROM comparisons WHERE deleted_at IS NULL AND source = 'human' AND "
        "json_extract(meta_json, '$.reviewed_revision') = ?", [int(revision_id)]).fetchone()
    return None if row is None else int(row[0])


def _set_review_mark(project, revision_id: int, mark: dict | None) -> None:
    """Write (or, with None, remove) ``meta.review`` of an AI revision: who edited or rejected it."""
    if mark is None:
        project.conn.execute("UPDATE items SET meta_json = json_remove(meta_json, '$.review') WHERE id = ?",
                             [int(revision_id)])
    else:
        project.conn.execute("UPDATE items SET meta_json = json_set(meta_json, '$.review', json(?)) WHERE id = ?",
                             [json.dumps(mark), int(revision_id)])


def review_revision(project, revision_id: int, decision: str, labeller_id: int, *, edited_text: str | None = None,
                    response_ms: int | None = None) -> dict:
    """A person's verdict on an AI revision.

    ``accept``: the person's own label of the pair (revised text, revision), the revision preferred, with
    ``meta.reviewed_revision`` (a person's label of a pair outweighs the AI's). ``reject``: the revision and its
    comparisons are soft-deleted (:func:`undo_correction`). ``edit``: ``edited_text`` becomes the person's
    correction of the text the AI revised (``meta.reviewed_revision``) and the AI's revision is soft-deleted;
    an empty or unchanged text raises ``ValueError`` and changes nothing. An edited or rejected revision keeps
    ``meta.review`` (decision, labeller, time) so that :func:`review_counts` can count the rejections.
    """
    item = project.get_item(int(revision_id))
    meta = json.loads(item["meta_json"] or "{}") if item is not None else {}
    if item is None or item["deleted_at"] is not None or meta.get("method") != METHOD:
        raise ValueError(f"item {revision_id} is not a live AI revision (rejected, edited or deleted meanwhile, or "
                         "never an AI revision): nothing was stored")
    if decision not in REVIEW_DECISIONS:
        raise ValueError(f"a review is one of {', '.join(REVIEW_DECISIONS)}, not {decision!r}")
    if _reviewed_by(project, item["id"]) is not None:
        raise ValueError(f"revision {revision_id} was accepted already (by someone else meanwhile?): nothing was "
                         "stored")
    revised = int(meta["corrected_from"])
    mark = {"decision": decision, "labeller_id": labeller_id, "response_ms": response_ms}
    if decision == "accept":
        cid = project.add_comparison(revised, item["id"], "right", labeller_id=labeller_id, source="human",
                                     response_ms=response_ms, meta={REVIEW_KEY: item["id"], "decision": decision})
        return {"decision": decision, "comparison_id": cid}
    if decision == "reject":
        with project.db.atomic():
            undone = undo_correction(project, item["id"])
            _set_review_mark(project, item["id"], mark)
        return {"decision": decision, "undone": undone}
    with project.db.atomic():
        new_id, cids = add_correction(project, revised, edited_text or "", labeller_id, response_ms,
                                      meta={REVIEW_KEY: item["id"], "decision": decision})
        undo_correction(project, item["id"])
        _set_review_mark(project, item["id"], mark)
    return {"decision": decision, "correction_id": new_id, "comparison_ids": cids}


def undo_review(project, revision_id: int, review: dict) -> int:
    """Take back a review that :func:`review_revision` returned (``review``): the revision waits for a person
    again. An accept's label is soft-deleted; an edit's correction is soft-deleted; the revision and the
    comparisons that went with it are live again after an edit or a reject. Returns the revision id; raises
    ``ValueError`` (changing nothing) when the review no longer stands."""
    decision = review.get("decision")
    revision_id = int(revision_id)
    if decision == "accept":
        cid = int(review["comparison_id"])
        if not project.comparison_is_live(cid):
            raise ValueError(f"the acceptance of revision {revision_id} was undone already")
        project.undo_comparison(cid)
        return revision_id
    if decision not in ("edit", "reject"):
        raise ValueError(f"a review is one of {', '.join(REVIEW_DECISIONS)}, not {decision!r}")
    item = project.get_item(revision_id)
    if item is None or item["deleted_at"] is None:
        raise ValueError(f"revision {revision_id} is not rejected or edited: nothing to undo")
    with project.db.atomic():
        if decision == "edit":
            correction = int(review["correction_id"])
            if not project.item_is_live(correction):
                raise ValueError(f"the edit of revision {revision_id} was undone already")
            undo_correction(project, correction)
        # undo_correction deleted the revision and its comparisons with one time stamp
        project.conn.execute("UPDATE comparisons SET deleted_at = NULL WHERE deleted_at = ? AND (left_id = ? OR "
                             "right_id = ?)", [item["deleted_at"], revision_id, revision_id])
        project.conn.execute("UPDATE items SET deleted_at = NULL WHERE id = ?", [revision_id])
        _set_review_mark(project, revision_id, None)
    return revision_id


# ------------------------------------------------------------------------------- the job
@dataclass
class CritiqueReviseConfig:
    model: str = param("", "Policy that answers the prompts: a causal-LM folder, run:ID, checkpoint:ID or an "
                       "artefact name ('' = the bundled SmolLM2-135M-Instruct).", label="Model")
    critic_model: str = param("", "Model that writes the critiques and revisions ('' = the policy itself; or a "
                              "local folder / artefact, e.g. a larger model).")
    prompt_set: str = param("starter", "Built-in prompt set (added to the project if needed); empty: only the "
                            "prompt ids below.")
    category: str = param("harmlessness", "Only prompts of this category from the set (comma-separated for "
                          "several; empty: all).")
    prompt_ids: list = param([], "Ids of prompts already in the project (in addition to the set's).",
                             label="Prompt ids", each="id")
    max_prompts: int = param(8, "Use at most this many prompts (0: all selected).", min=0, max=1_000_000)
    constitution: str = param("", "Constitution file, one principle per line ('' = the project's own copy, "
                              "else the default).")
    principle: int = param(0, "Which principle the critique asks about: 0 = one drawn at random (seeded) for each "
                           "response and round; N = always the N-th principle of the constitution.", min=0)
    critique_template: str = param("", "Critique request file ('' = the project's critique_request.txt, else the "
                                   "default); {principle} is replaced by the principle.", advanced=True)
    revision_template: str = param("", "Revision request file ('' = the project's revision_request.txt, else the "
                                   "default).", advanced=True)
    rounds: int = param(1, "Critique-and-revise rounds per response, each on the latest revision.", min=1, max=4)
    max_new_tokens: int = param(128, "Longest response and revision, in tokens.", min=1, max=4096)
    critique_max_new_tokens: int = param(96, "Longest critique, in tokens.", min=1, max=4096)
    temperature: float = param(0.0, "Sampling temperature of all three steps; 0 = greedy (the most likely "
                               "token), otherwise seeded sampling.", min=0.0, max=5.0)
    top_p: float = param(0.95, "Nucleus sampling (1 = off; with temperature > 0).", min=0.0, min_inclusive=False,
                         max=1.0, advanced=True)
    repetition_penalty: float = param(1.1, "Divide the scores of tokens already used by this (1 = off); small "
                                      "models loop without it.", min=0.0, min_inclusive=False, max=10.0,
                                      advanced=True)
    seed: int = param(0, "Seed of the sampling and of the principle drawn per response and round.", min=0)
    batch_size: int = param(8, "Prompts processed together.", min=1, max=1024)
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def selection(self) -> GenerateConfig:
        """The prompt choice as the generate job's settings (its checks and selection are reused)."""
        return GenerateConfig(prompt_set=self.prompt_set, category=self.category, prompt_ids=list(self.prompt_ids),
                              max_prompts=self.max_prompts)

    def check(self) -> list[str]:
        return [p for p in [devices.spec_problem(self.device)] if p] + self.selection().check()


@dataclass
class _Chain:
    """One response and its revisions: item ids and texts, oldest first."""

    prompt: dict
    ids: list[int]
    texts: list[str]
    steps: list[dict] = field(default_factory=list)


def _short(model_id: str) -> str:
    return DEFAULT_MODEL_NAME if model_id == DEFAULT_MODEL_NAME else Path(model_id).name


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def critique_and_revise(config: CritiqueReviseConfig, ctx: JobContext) -> dict:
    """Sample a response per prompt, critique and revise it ``rounds`` times, store the revisions."""
    from rlhf_core.text.generation import SamplingSettings, generate_batch  # start-up: imports torch
    from rlhf_core.text.rl_common import render_chat_prompt  # start-up: imports torch

    if ctx.project_path is None:
        raise ValueError("critique_revise stores its revisions in a project: run it with a project")
    device = devices.resolve_device(config.device)  # DeviceError (a sentence) before anything is written
    precision = devices.resolve_precision(config.precision, device)
    devices.reset_peak_memory(device)
    started = time.monotonic()
    project = ctx.project()
    principles, constitution_file = resolve_constitution(config.constitution, project.folder)
    if config.principle > len(principles):
        raise ValueError(f"principle {config.principle}: the constitution {constitution_file} has only "
                         f"{len(principles)} principles")
    critique_request, critique_file = resolve_template("critique", config.critique_template, project.folder)
    revision_request, revision_file = resolve_template("revision", config.revision_template, project.folder)
    prompts = select_prompts(project, config.selection())
    ctx.raise_if_cancelled()

    ctx.progress(0.0, message="Loading the policy")
    dtype = str(devices.frozen_dtype(device, precision)).removeprefix("torch.")  # half weights on a GPU
    policy = load_model(config.model or None, ctx=ctx, device=device, dtype=dtype)
    critic = policy if not config.critic_model.strip() else load_model(config.critic_model, ctx=ctx, device=device,
                                                                      dtype=dtype)
    labeller_name = f"ai:critic:{_short(critic.model_id)}"
    labeller = project.ensure_labeller(labeller_name, "ai", {"method": METHOD, "model": critic.model_id})
    ctx.log(f"{len(prompts)} prompts x {config.rounds} round(s); policy {policy.model_id}, critic {critic.model_id}")

    def sampling(max_new_tokens: int) -> SamplingSettings:
        return SamplingSettings(max_new_tokens=max_new_tokens, temperature=config.temperature,
                                top_p=config.top_p if config.temperature > 0 else 1.0, top_k=0,
                                repetition_penalty=config.repetition_penalty)

    answer, critique_sampling = sampling(config.max_new_tokens), sampling(config.critique_max_new_tokens)

    def sample(lm, texts: list[str], settings: SamplingSettings, seeds: list[int]):
        with devices.autocast(device, precision):
            completions, _ = generate_batch(lm.model, lm.tokenizer, texts, settings, seeds,
                                            eos_token_ids=lm.eos_token_ids, on_step=ctx.raise_if_cancelled)
        return completions

    originals: list[int] = []
    revision_ids: list[int] = []
    comparisons = not_stored = 0
    total = len(prompts)
    ctx.progress(0, total or 1, f"{total} prompts")
    for b, start in enumerate(range(0, total, config.batch_size)):
        ctx.raise_if_cancelled()
        batch = prompts[start:start + config.batch_size]
        texts = [p["text"] for p in batch]
        # ---- 1. the policy's responses
        responses = sample(policy, [render_chat_prompt(policy.tokenizer, t) for t in texts], answer,
                           [sample_seed(config.seed, t, 0) for t in texts])
        chains: list[_Chain] = []
        with project.db.atomic():
            for p, c in zip(batch, responses):
                item_id = project.add_item(
                    "response", prompt_id=p["id"], run_id=ctx.run_id, source="generated", seed=c.seed,
                    length=c.n_tokens, text=c.text, model_id=policy.model_id,
                    params={**answer.as_params(), "run_seed": config.seed, "method": METHOD},
                    meta={"finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens, "method": METHOD})
                originals.append(item_id)
                chains.append(_Chain(p, [item_id], [c.text]))
        critique_lengths: list[int] = []
        revision_lengths: list[int] = []
        for round_ in range(1, config.rounds + 1):
            # ---- 2. critiques, 3. revisions (each round on the chain's latest text)
            ctx.raise_if_cancelled()
            asked = [choose_principle(principles, config.principle, config.seed, t, round_) for t in texts]
            c_requests = [fill(critique_request, pr) for pr in asked]
            critiques = sample(critic, [render_conversation(critic.tokenizer, critique_messages(
                t, ch.texts[-1], req)) for t, ch, req in zip(texts, chains, c_requests)], critique_sampling,
                [sample_seed(config.seed, t, 2 * round_ - 1) for t in texts])
            revisions = sample(critic, [render_conversation(critic.tokenizer, revision_messages(
                t, ch.texts[-1], req, cr.text.strip(), fill(revision_request, pr)))
                for t, ch, req, cr, pr in zip(texts, chains, c_requests, critiques, asked)], answer,
                [sample_seed(config.seed, t, 2 * round_) for t in texts])
            for ch, pr, cr, rv in zip(chains, asked, critiques, revisions):
                critique_lengths.append(cr.n_tokens)
                revision_lengths.append(rv.n_tokens)
                text = clean_revision(rv.text)
                step = {"round": round_, "principle": pr, "critique": cr.text.strip(), "revision": text,
                        "revised_id": ch.ids[-1], "revision_id": None}
                meta = {"method": METHOD, "original_id": ch.ids[0], "principle": pr, "critique": cr.text.strip(),
                        "round": round_, "critic_model": critic.model_id, "policy_model": policy.model_id,
                        "finish_reason": rv.finish_reason, "critique_finish_reason": cr.finish_reason,
                        "tokens": rv.n_tokens}
                try:
                    new_id, cids = add_correction(project, ch.ids[-1], text, labeller, source="ai", meta=meta,
                                                  run_id=ctx.run_id, over=ch.ids)
                except ValueError as exc:  # empty, unchanged, or the text was deleted meanwhile
                    step["not_stored"] = str(exc)
                    not_stored += 1
                else:
                    step["revision_id"] = new_id
                    ch.ids.append(new_id)
                    ch.texts.append(text)
                    revision_ids.append(new_id)
                    comparisons += len(cids)
                ch.steps.append(step)
        for ch in chains:
            ctx.sample(kinds.SAMPLE_CRITIQUE, {
                "prompt_id": ch.prompt["id"], "prompt": ch.prompt["text"], "original_id": ch.ids[0],
                "original": ch.texts[0], "critic_model": critic.model_id, "steps": ch.steps}, step=b)
        done = min(start + len(batch), total)
        ctx.metrics(b, {"cai/revisions": len(revision_ids),
                        "cai/response_length": _mean([c.n_tokens for c in responses]),
                        "cai/critique_length": _mean(critique_lengths),
                        "cai/revision_length": _mean(revision_lengths)})
        ctx.progress(done, total, f"{done}/{total} prompts, {len(revision_ids)} revisions")
    result: dict[str, Any] = {
        "prompts": total, "responses": len(originals), "revisions": len(revision_ids), "not_stored": not_stored,
        "comparisons": comparisons, "rounds": config.rounds, "policy_model": policy.model_id,
        "critic_model": critic.model_id, "labeller": labeller_name, "labeller_id": labeller,
        "constitution": {"file": str(constitution_file), "principles": principles},
        "templates": {"critique": str(critique_file), "revision": str(revision_file)},
        "item_ids": originals, "revision_ids": revision_ids, "wall_seconds": round(time.monotonic() - started, 2),
        **devices.device_record(device, precision),
    }
    if total == 0:
        result["note"] = "No prompts were selected: choose a prompt set (and category) or prompt ids."
        ctx.log(result["note"])
    return result
