"""AI feedback (RLAIF, Bai et al. 2022): an AI labeller fills the text pairs waiting in the queue.

Two ways to judge a pair of responses to the same prompt:

- ``reward_model``: a model saved by the ``text_reward_model`` job scores both responses;
  P(left better) = sigmoid(r_left - r_right) (the Bradley-Terry probability the model was fit for).
- ``judge``: a language model is asked ONE principle of a constitution (a list of comparison
  questions, e.g. "Which response is less likely to cause harm...?"), sampled per pair with a seeded
  generator, as in Constitutional AI's RL phase. The prompt shows the request and both responses as
  (A) and (B) and the assistant's turn is pre-filled with ``"Answer:"``; the decision is read from
  the model's NEXT-TOKEN distribution, not from sampled text:

      p_ab = P(" A") / (P(" A") + P(" B"))      left shown as (A), right as (B)
      p_ba = P(" B") / (P(" A") + P(" B"))      the same prompt with the two responses swapped
      P(left better) = (p_ab + p_ba) / 2

  Asking in both orders and averaging cancels a constant preference for the first (or second)
  position, which small models have strongly. ``P(" A") + P(" B")`` (how much of the distribution
  falls on the two valid answers) is kept as ``answer_mass``.

The outcome is ``left`` / ``right`` when P(left better) is more than ``tie_margin`` away from 0.5,
otherwise ``tie``; the confidence is max(P, 1 - P). Each label is a comparison with
``source = 'ai'``, an ``ai`` labeller (``ai:judge:<model>`` or ``ai:rm:run<N>``), the principle
(judge only) and ``meta`` with the scores/probabilities. The queue entry is marked answered, only
if it is still open (a person may label the same pair while the job runs; their answer wins).
Human labels are never changed; queue entries asked for a particular person (a "second opinion",
``reason.for_labeller_id``) are left to that person.

Review (the Label text page): AI labels of pairs that no person has labelled yet are shown for
review; the person's answer is stored as an ordinary human label with ``meta.reviewed_ai`` (the AI
comparison id), ``meta.ai_outcome`` and ``meta.blind`` (whether the AI's answer was hidden until
they answered). Agreement between the AI and people (:func:`ai_human_agreement`) reuses
:mod:`rlhf_core.analysis.agreement`; since an answer given while SEEING the AI's label is
anchored on it, ``independent_only`` counts only human labels given without seeing it.

Device and precision (:mod:`rlhf_core.devices`): the judge or the reward model runs on ``device``, only
forward (inference mode, autocast); on a GPU its weights are cast to the half type of ``precision``.

The constitution is a text file, one principle per line (``#`` starts a comment): the bundled
``resources/constitutions/default.txt``, or a project's own copy ``<project>/constitution.txt``
(edited in the app), which the job uses when it exists.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_core import devices, kinds
from rlhf_core.analysis.agreement import agreement_from_labels
from rlhf_core.config import param
from rlhf_core.jobs import JobContext
from rlhf_core.paths import resource_path
from rlhf_core.text.model import DEFAULT_MODEL_NAME, load_model

METHODS = ("judge", "reward_model")
CONSTITUTION_FILE = "constitution.txt"
ANSWER_PREFIX = "Answer:"
ANSWER_TOKENS = (" A", " B")
REVIEW_KEY = "reviewed_ai"


# ------------------------------------------------------------------------------- the constitution
def default_constitution_path() -> Path:
    return resource_path("constitutions", "default.txt")


def parse_constitution(text: str) -> list[str]:
    """Principles from a constitution text: one per non-empty line, ``#`` lines are comments."""
    out = []
    for line in text.splitlines():
        line = " ".join(line.split())  # one line, single spaces
        if line and not line.startswith("#") and line not in out:
            out.append(line)
    return out


def load_constitution(path: str | os.PathLike) -> list[str]:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"Cannot read the constitution {path}: {exc.strerror or exc}.") from exc
    principles = parse_constitution(text)
    if not principles:
        raise ValueError(f"The constitution {path} has no principles (write one question per line).")
    return principles


def default_constitution() -> list[str]:
    return load_constitution(default_constitution_path())


def project_constitution_path(project_folder: str | os.PathLike) -> Path:
    return Path(project_folder) / CONSTITUTION_FILE


def project_constitution(project_folder: str | os.PathLike) -> tuple[list[str], Path]:
    """The project's own constitution if it has one, else the bundled default: (principles, file)."""
    own = project_constitution_path(project_folder)
    path = own if own.is_file() else default_constitution_path()
    return load_constitution(path), path


def save_project_constitution(project_folder: str | os.PathLike, principles: Iterable[str]) -> Path:
    """Write the project's constitution (one principle per line), atomically; returns the file."""
    lines = parse_constitution("\n".join(principles))
    if not lines:
        raise ValueError("A constitution needs at least one principle (one question per line).")
    target = project_constitution_path(project_folder)
    header = ("# This project's constitution for the AI labeller: one comparison question per line.\n"
              "# The ai_labels job picks one per pair at random (seeded). Lines starting with # are comments.\n")
    fd, tmp = tempfile.mkstemp(prefix=".constitution-", suffix=".txt", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(header + "\n".join(lines) + "\n")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def resolve_constitution(spec: str, project_folder: str | os.PathLike | None) -> tuple[list[str], Path]:
    """``spec`` '' = the project's copy (or the default); otherwise a file path."""
    spec = (spec or "").strip()
    if spec:
        path = Path(spec).expanduser()
        if not path.is_absolute() and project_folder is not None and (Path(project_folder) / path).is_file():
            path = Path(project_folder) / path
        return load_constitution(path), path
    if project_folder is not None:
        return project_constitution(project_folder)
    return default_constitution(), default_constitution_path()


def pick_principle(principles: Sequence[str], seed: int, left_id: int, right_id: int) -> str:
    """The principle asked for one pair: seeded by (seed, the unordered pair), so it does not depend
    on which other pairs are labelled in the same run."""
    a, b = sorted((int(left_id), int(right_id)))
    return principles[random.Random(f"{int(seed)}:{a}:{b}").randrange(len(principles))]


# ------------------------------------------------------------------------------- the judge
def judge_messages(prompt: str, response_a: str, response_b: str, principle: str) -> list[dict]:
    """The judge's user turn: the request, the two responses as (A)/(B), the principle."""
    question = principle.strip()
    content = (
        "Here is a request and two possible responses to it.\n\n"
        f"Request:\n{prompt.strip()}\n\n"
        f"Response (A):\n{response_a.strip()}\n\n"
        f"Response (B):\n{response_b.strip()}\n\n"
        f"{question}\nAnswer with the letter A or B."
    )
    return [{"role": "user", "content": content}]


def judge_prompt(tokenizer: Any, prompt: str, response_a: str, response_b: str, principle: str) -> str:
    """The full judge text (chat template), ending with the pre-filled ``"Answer:"``: the next token
    is read (" A" or " B")."""
    from rlhf_core.text.rl_common import render_chat_prompt  # start-up: imports torch

    user = judge_messages(prompt, response_a, response_b, principle)[0]["content"]
    return render_chat_prompt(tokenizer, user) + ANSWER_PREFIX


def answer_token_ids(tokenizer: Any) -> tuple[int, int]:
    """Token ids of " A" and " B" (each must be a single token of the tokenizer)."""
    ids = []
    for text in ANSWER_TOKENS:
        enc = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise ValueError(f"the judge's tokenizer splits {text!r} into {len(enc)} tokens; "
                             "it needs a model whose tokenizer has ' A' and ' B' as single tokens")
        ids.append(int(enc[0]))
    return ids[0], ids[1]


def truncate_tokens(tokenizer: Any, text: str, max_tokens: int) -> str:
    """``text`` cut to ``max_tokens`` tokens (with an ellipsis), or unchanged if shorter."""
    if max_tokens <= 0:
        return text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True).rstrip() + " …"


def next_token_ab(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 8):
    """P(" A") and P(" B") as the next token after each text: a float tensor ``[n, 2]``
    (:func:`rlhf_core.text.generation.next_token_probs`: full-vocabulary softmax, padding-safe batches)."""
    from rlhf_core.text.generation import next_token_probs  # start-up: imports torch

    return next_token_probs(model, tokenizer, texts, answer_token_ids(tokenizer), batch_size=batch_size)


@dataclass
class PairToJudge:
    left_id: int
    right_id: int
    prompt: str
    left: str
    right: str
    principle: str | None = None
    queue_id: int | None = None


@dataclass
class Judgement:
    p_left: float  # P(left better), the average of both orders for the judge
    meta: dict = field(default_factory=dict)


def judge_pairs(model: Any, tokenizer: Any, pairs: Sequence[PairToJudge], *, batch_size: int = 4,
                max_response_tokens: int = 256) -> list[Judgement]:
    """The judge's verdict on each pair, asked in both orders (left as A, then right as A)."""
    texts = []
    for p in pairs:
        left = truncate_tokens(tokenizer, p.left, max_response_tokens)
        right = truncate_tokens(tokenizer, p.right, max_response_tokens)
        texts.append(judge_prompt(tokenizer, p.prompt, left, right, p.principle or ""))  # left = (A)
        texts.append(judge_prompt(tokenizer, p.prompt, right, left, p.principle or ""))  # left = (B)
    probs = next_token_ab(model, tokenizer, texts, batch_size=max(1, 2 * batch_size)).tolist()
    out = []
    for k in range(len(pairs)):
        (a1, b1), (a2, b2) = probs[2 * k], probs[2 * k + 1]
        p_ab = a1 / (a1 + b1) if a1 + b1 > 0 else 0.5  # left shown as (A)
        p_ba = b2 / (a2 + b2) if a2 + b2 > 0 else 0.5  # left shown as (B)
        p_left = 0.5 * (p_ab + p_ba)
        out.append(Judgement(p_left, {
            "p_left": p_left, "p_left_ab": p_ab, "p_left_ba": p_ba,
            "p_a_ab": a1, "p_b_ab": b1, "p_a_ba": a2, "p_b_ba": b2,
            "answer_mass": 0.5 * (a1 + b1 + a2 + b2),
            "orders_agree": (p_ab - 0.5) * (p_ba - 0.5) > 0,
        }))
    return out


def reward_model_pairs(model: Any, tokenizer: Any, pairs: Sequence[PairToJudge], *,
                       batch_size: int = 8) -> list[Judgement]:
    """P(left better) = sigmoid(r_left - r_right) from a text reward model."""
    from rlhf_core.text.reward_model import score_responses  # start-up: imports torch

    if not pairs:
        return []
    prompts = [p.prompt for p in pairs]
    scores = score_responses(model, tokenizer, prompts + prompts, [p.left for p in pairs] + [p.right for p in pairs],
                             batch_size=batch_size).float().tolist()
    n = len(pairs)
    out = []
    for k in range(n):
        r_left, r_right = scores[k], scores[n + k]
        p_left = _sigmoid(r_left - r_right)
        out.append(Judgement(p_left, {"p_left": p_left, "score_left": r_left, "score_right": r_right}))
    return out


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def decide(p_left: float, tie_margin: float) -> str:
    """``left`` / ``right`` when P(left better) is more than ``tie_margin`` from 0.5, else ``tie``."""
    if p_left > 0.5 + tie_margin:
        return "left"
    if p_left < 0.5 - tie_margin:
        return "right"
    return "tie"


def confidence(p_left: float) -> float:
    """How sure the labeller is of its answer: max(P, 1 - P), from 0.5 (a coin) to 1."""
    return max(p_left, 1.0 - p_left)


# ------------------------------------------------------------------------------- which pairs
def _live_pairs_of(project, labeller_id: int) -> set[tuple[int, int]]:
    rows = project.conn.execute("SELECT left_id, right_id FROM comparisons WHERE deleted_at IS NULL "
                                "AND labeller_id = ?", [labeller_id])
    return {(min(a, b), max(a, b)) for a, b in rows}


def _unlabelled_once(project, labeller_id: int | None, rows: list[dict]) -> list[dict]:
    """``rows`` without the pairs ``labeller_id`` already labelled, each pair (either order) once."""
    done = _live_pairs_of(project, labeller_id) if labeller_id is not None else set()
    out, seen = [], set()
    for r in rows:
        key = (min(r["left_id"], r["right_id"]), max(r["left_id"], r["right_id"]))
        if key not in done and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def queued_text_pairs(project, labeller_id: int | None = None, limit: int = 1_000_000, *,
                      queued_by_run: int | None = None) -> list[dict]:
    """Open queue entries of two live responses that an AI may answer: not asked of a particular
    person (``reason.for_labeller_id``) and not already labelled by ``labeller_id`` (with
    ``queued_by_run``: only entries that run queued); queue order."""
    rows = project.conn.execute(
        "SELECT q.* FROM pair_queue q JOIN items a ON a.id = q.left_id JOIN items b ON b.id = q.right_id "
        "WHERE q.comparison_id IS NULL AND a.kind = 'response' AND b.kind = 'response' "
        "AND a.deleted_at IS NULL AND b.deleted_at IS NULL "
        "AND json_extract(q.reason_json, '$.for_labeller_id') IS NULL "
        + ("AND q.run_id = ? " if queued_by_run else "")
        + "ORDER BY q.priority DESC, q.id", [queued_by_run] if queued_by_run else []).fetchall()
    rows = [dict(r) for r in rows]
    return _unlabelled_once(project, labeller_id, rows)[:limit]


def human_labelled_text_pairs(project, labeller_id: int | None = None, limit: int = 1_000_000) -> list[dict]:
    """Pairs of live responses that people labelled (left/right/tie) and ``labeller_id`` did not: for
    measuring AI-human agreement. Orientation of the latest human label; ``queue_id`` None."""
    rows = project.conn.execute(
        "SELECT c.left_id, c.right_id FROM comparisons c JOIN items a ON a.id = c.left_id "
        "JOIN items b ON b.id = c.right_id WHERE c.deleted_at IS NULL AND c.source = 'human' "
        "AND c.outcome IN ('left', 'right', 'tie') AND a.kind = 'response' AND b.kind = 'response' "
        "AND a.deleted_at IS NULL AND b.deleted_at IS NULL AND a.prompt_id = b.prompt_id "
        "ORDER BY c.id DESC").fetchall()
    out = _unlabelled_once(project, labeller_id, [{"id": None, "left_id": a, "right_id": b} for a, b in rows])
    out.reverse()  # oldest first
    return out[:limit]


def _pair_texts(project, rows: Sequence[dict]) -> list[PairToJudge]:
    prompts: dict[int, str] = {}
    out = []
    for r in rows:
        left, right = project.get_item(r["left_id"]), project.get_item(r["right_id"])
        pid = left["prompt_id"]
        if pid not in prompts:
            row = project.conn.execute("SELECT text FROM prompts WHERE id=?", [pid]).fetchone()
            prompts[pid] = row[0] if row else ""
        out.append(PairToJudge(int(r["left_id"]), int(r["right_id"]), prompts[pid], left["text"] or "",
                               right["text"] or "", queue_id=r.get("id")))
    return out


def store_ai_label(project, pair: PairToJudge, outcome: str, labeller_id: int, meta: dict) -> int | None:
    """Write one AI label; mark its queue entry answered. Returns ``None`` (and writes nothing) when
    the queue entry was answered meanwhile (a person labelled it while the job ran)."""
    conn = project.conn
    conn.execute("BEGIN IMMEDIATE")  # take the write lock before looking, so nobody answers in between
    try:
        if pair.queue_id is not None:
            row = conn.execute("SELECT comparison_id FROM pair_queue WHERE id=?", [pair.queue_id]).fetchone()
            if row is None or row[0] is not None:
                conn.execute("ROLLBACK")
                return None
        cid = project.add_comparison(pair.left_id, pair.right_id, outcome, labeller_id=labeller_id, source="ai",
                                     principle=pair.principle, meta=meta, queue_id=pair.queue_id)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return cid


# ------------------------------------------------------------------------------- review and agreement
def review_pairs(project, limit: int = 2, *, labeller_id: int | None = None) -> list[dict]:
    """Live AI labels of two live responses that no person has labelled (any order), oldest first.

    Each row is the AI comparison (``id`` is its comparison id) plus ``labeller`` (the AI's name).
    With ``labeller_id``, only that AI labeller's labels.
    """
    sql = ("SELECT c.*, l.name AS labeller FROM comparisons c LEFT JOIN labellers l ON l.id = c.labeller_id "
           "JOIN items a ON a.id = c.left_id JOIN items b ON b.id = c.right_id "
           "WHERE c.deleted_at IS NULL AND c.source = 'ai' AND a.kind = 'response' AND b.kind = 'response' "
           "AND a.deleted_at IS NULL AND b.deleted_at IS NULL AND NOT EXISTS ("
           "  SELECT 1 FROM comparisons h WHERE h.deleted_at IS NULL AND h.source = 'human' AND ("
           "  (h.left_id = c.left_id AND h.right_id = c.right_id) OR "
           "  (h.left_id = c.right_id AND h.right_id = c.left_id)))")
    args: list = []
    if labeller_id is not None:
        sql += " AND c.labeller_id = ?"
        args.append(labeller_id)
    rows = project.conn.execute(sql + " ORDER BY c.id LIMIT ?", [*args, limit]).fetchall()
    out = []
    for r in rows:
        d = dict(r)
        d["meta"] = json.loads(d.pop("meta_json") or "{}")
        out.append(d)
    return out


def review_count(project) -> int:
    return len(review_pairs(project, limit=1_000_000))


def record_review(project, ai_comparison_id: int, outcome: str, labeller_id: int, *,
                  response_ms: int | None = None, blind: bool = False, guideline_version: int | None = None) -> int:
    """A person's answer on a pair the AI labelled: a new HUMAN label (same orientation as the AI's),
    with ``meta`` = reviewed_ai, ai_outcome, agreed, blind, given under ``guideline_version``. The AI
    label is left as it is."""
    ai = project.conn.execute("SELECT * FROM comparisons WHERE id=?", [ai_comparison_id]).fetchone()
    if ai is None or ai["source"] != "ai":
        raise ValueError(f"comparison {ai_comparison_id} is not an AI label")
    meta = {REVIEW_KEY: int(ai_comparison_id), "ai_outcome": ai["outcome"], "agreed": outcome == ai["outcome"],
            "blind": bool(blind)}
    return project.add_comparison(ai["left_id"], ai["right_id"], outcome, labeller_id=labeller_id, source="human",
                                  response_ms=response_ms, meta=meta, guideline_version=guideline_version)


@dataclass
class AIAgreement:
    pairs: int  # pairs with both a (left/right/tie) AI label and a human label
    agree: int
    kappa: float | None
    ai_labels: int  # live AI labels of responses
    human_labels: int  # human labels counted (after leaving out anchored reviews when independent_only)

    @property
    def agreement(self) -> float:
        return self.agree / self.pairs if self.pairs else float("nan")

    def as_dict(self) -> dict:
        return {"pairs": self.pairs, "agree": self.agree,
                "agreement": None if not self.pairs else self.agreement, "kappa": self.kappa,
                "ai_labels": self.ai_labels, "human_labels": self.human_labels}


def ai_human_agreement(project, *, ai_labeller_id: int | None = None, independent_only: bool = False) -> AIAgreement:
    """Percent agreement and Cohen's kappa between AI labels and people's labels on the same pairs.

    All AI labellers (or one) count as one rater, all people as the other; on a pair labelled
    several times by one side, that side's latest label counts. ``skip``/``both_bad`` are left out
    and ties are an answer of their own (the rules of :mod:`rlhf_core.analysis.agreement`).
    ``independent_only``: leave out human labels given while the AI's answer was visible (reviews
    that were not blind).
    """
    sql = ("SELECT c.id, c.left_id, c.right_id, c.outcome, c.source, c.labeller_id, c.meta_json "
           "FROM comparisons c JOIN items a ON a.id = c.left_id JOIN items b ON b.id = c.right_id "
           "WHERE c.deleted_at IS NULL AND c.source IN ('ai', 'human') AND a.kind = 'response' "
           "AND b.kind = 'response' ORDER BY c.id")
    rows, n_ai, n_human = [], 0, 0
    for r in project.conn.execute(sql):
        if r["source"] == "ai":
            if ai_labeller_id is not None and r["labeller_id"] != ai_labeller_id:
                continue
            n_ai += 1
            rater = 1
        else:
            meta = json.loads(r["meta_json"] or "{}")
            if independent_only and meta.get(REVIEW_KEY) is not None and not meta.get("blind"):
                continue
            n_human += 1
            rater = 2
        rows.append({"id": r["id"], "left_id": r["left_id"], "right_id": r["right_id"], "outcome": r["outcome"],
                     "labeller_id": rater})
    report = agreement_from_labels(rows, {1: "AI", 2: "people"})
    if not report.pairwise:
        return AIAgreement(0, 0, None, n_ai, n_human)
    pw = report.pairwise[0]
    return AIAgreement(pw.n, pw.agree, pw.kappa, n_ai, n_human)


# ------------------------------------------------------------------------------- the job
@dataclass
class AILabelConfig:
    method: str = param("judge", "judge: a language model asked one principle of the constitution per pair; "
                        "reward_model: a trained text reward model's scores.", choices=METHODS)
    reward_model: str = param("", "reward_model method: a folder saved by text_reward_model, or a checkpoint id "
                              "('' = the project's latest text reward model).")
    judge_model: str = param("", "judge method: a local causal language model folder ('' = the bundled "
                             "SmolLM2-135M-Instruct).")
    constitution: str = param("", "judge method: a constitution file, one principle per line ('' = the project's "
                              "own copy, edited in Label text → Constitution…, else the default).")
    max_pairs: int = param(100, "Label at most this many pairs.", min=1)
    tie_margin: float = param(0.02, "Answer 'tie' when P(left better) is within this distance of 0.5.",
                              min=0.0, max=0.5)
    relabel_human: bool = param(False, "Also label pairs people already labelled (their labels are not touched), "
                                "to measure how often the AI agrees with them.")
    batch_size: int = param(4, "Pairs per forward pass (each judge pair is two sequences).", min=1, advanced=True)
    max_response_tokens: int = param(256, "judge method: longer responses are cut to this many tokens in the "
                                     "judge's prompt.", min=8, advanced=True)
    seed: int = param(0, "Seed of the principle drawn for each pair.", min=0)
    queued_by_run: int = param(0, "Only pairs that this run queued (0: any run's).", min=0, advanced=True)
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def check(self) -> list[str]:
        problem = devices.spec_problem(self.device)
        return [problem] if problem else []
    # torch threads: set for every job by the runner (the app's Preferences, the CLI's --threads)


def _sample_payload(pair: PairToJudge, outcome: str, p_left: float, meta: dict) -> dict:
    def cut(s: str, n: int = 160) -> str:
        return s if len(s) <= n else s[:n - 1] + "…"

    return {"left_id": pair.left_id, "right_id": pair.right_id, "prompt": cut(pair.prompt),
            "left": cut(pair.left), "right": cut(pair.right), "principle": pair.principle, "outcome": outcome,
            "p_left": round(p_left, 4), "confidence": round(confidence(p_left), 4),
            **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in meta.items() if k != "p_left"}}


def _inference(device, precision: str):
    """Inference mode under ``precision``'s autocast: how the judge reads its answers."""
    import contextlib

    import torch  # start-up: torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(devices.autocast(device, precision))
    return stack


def label_with_ai(config: AILabelConfig, ctx: JobContext) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = devices.resolve_device(config.device)  # DeviceError (a sentence) before anything is written
    precision = devices.resolve_precision(config.precision, device)
    devices.reset_peak_memory(device)
    project = ctx.project()
    started = time.monotonic()
    principles: list[str] = []
    constitution_file = None
    if config.method == "judge":
        principles, constitution_file = resolve_constitution(config.constitution, project.folder)
        ctx.progress(0.0, message="Loading the judge model")

        dtype = str(devices.frozen_dtype(device, precision)).removeprefix("torch.")  # half weights on a GPU
        loaded = load_model(config.judge_model or None, ctx=ctx, device=device, dtype=dtype)
        model, tokenizer = loaded.model, loaded.tokenizer
        answer_token_ids(tokenizer)  # fails early if " A"/" B" are not single tokens
        short = DEFAULT_MODEL_NAME if loaded.model_id == DEFAULT_MODEL_NAME else Path(loaded.model_id).name
        name = f"ai:judge:{short}"
        params = {"method": "judge", "model": loaded.model_id}
    else:
        from rlhf_core.text.reward_model import load_text_reward_model, resolve_reward_model  # start-up: torch

        folder, short = resolve_reward_model(config.reward_model, project)
        ctx.progress(0.0, message=f"Loading the reward model {short}")
        model, tokenizer = load_text_reward_model(folder, device=device, precision=precision)
        name = f"ai:rm:{short}"
        params = {"method": "reward_model", "model": str(folder)}
    ctx.raise_if_cancelled()
    labeller = project.ensure_labeller(name, "ai", params)
    rows = queued_text_pairs(project, labeller, limit=config.max_pairs, queued_by_run=config.queued_by_run)
    from_queue = len(rows)
    if config.relabel_human and len(rows) < config.max_pairs:
        taken = {(min(r["left_id"], r["right_id"]), max(r["left_id"], r["right_id"])) for r in rows}
        extra = [r for r in human_labelled_text_pairs(project, labeller)
                 if (min(r["left_id"], r["right_id"]), max(r["left_id"], r["right_id"])) not in taken]
        rows += extra[: config.max_pairs - len(rows)]
    pairs = _pair_texts(project, rows)
    for p in pairs:
        if principles:
            p.principle = pick_principle(principles, config.seed, p.left_id, p.right_id)

    counts = {"left": 0, "right": 0, "tie": 0}
    labelled = answered_meanwhile = 0
    conf_sum = mass_sum = 0.0
    orders_agree = 0
    total = len(pairs)
    ctx.progress(0.0, total or 1, f"{total} pairs to label")
    for start in range(0, total, config.batch_size):
        ctx.raise_if_cancelled()
        batch = pairs[start:start + config.batch_size]
        if config.method == "judge":
            with _inference(device, precision):
                verdicts = judge_pairs(model, tokenizer, batch, batch_size=config.batch_size,
                                       max_response_tokens=config.max_response_tokens)
        else:
            verdicts = reward_model_pairs(model, tokenizer, batch, batch_size=2 * config.batch_size)
        for pair, verdict in zip(batch, verdicts):
            outcome = decide(verdict.p_left, config.tie_margin)
            meta = {"method": config.method, "confidence": confidence(verdict.p_left), "run_id": ctx.run_id,
                    "from_queue": pair.queue_id is not None, **verdict.meta}
            cid = store_ai_label(project, pair, outcome, labeller, meta)
            if cid is None:
                answered_meanwhile += 1
                continue
            labelled += 1
            counts[outcome] += 1
            conf_sum += confidence(verdict.p_left)
            if config.method == "judge":
                mass_sum += verdict.meta["answer_mass"]
                orders_agree += bool(verdict.meta["orders_agree"])
            ctx.sample(kinds.SAMPLE_AI_LABEL, _sample_payload(pair, outcome, verdict.p_left, {**verdict.meta,
                                                                                   "comparison_id": cid}),
                       step=labelled)
        step = min(start + len(batch), total)
        values = {"ai/labelled": labelled, "ai/mean_confidence": conf_sum / labelled if labelled else float("nan")}
        if config.method == "judge":
            values["ai/answer_mass"] = mass_sum / labelled if labelled else float("nan")
            values["ai/order_consistency"] = orders_agree / labelled if labelled else float("nan")
        ctx.metrics(step, values)
        ctx.progress(step, total, f"labelled {labelled}/{total}")
    agreement = ai_human_agreement(project, ai_labeller_id=labeller)
    independent = ai_human_agreement(project, ai_labeller_id=labeller, independent_only=True)
    seconds = time.monotonic() - started
    result: dict[str, Any] = {
        "method": config.method, "labeller": name, "labeller_id": labeller, "labelled": labelled,
        "from_queue": min(from_queue, total), "relabelled_human_pairs": max(0, total - from_queue),
        "answered_meanwhile": answered_meanwhile, "outcomes": counts,
        "mean_confidence": conf_sum / labelled if labelled else None,
        "agreement_with_people": agreement.as_dict(), "agreement_independent": independent.as_dict(),
        "seconds": round(seconds, 2), **devices.device_record(device, precision),
    }
    if config.method == "judge":
        result.update({"constitution": {"file": str(constitution_file), "principles": principles},
                       "mean_answer_mass": mass_sum / labelled if labelled else None,
                       "order_consistency": orders_agree / labelled if labelled else None})
    if total == 0:
        result["note"] = ("No text pairs were waiting in the queue for an AI label. Queue pairs in Label text "
                          "(“Queue pairs”), or turn on relabel_human to label pairs people already labelled.")
        ctx.log(result["note"])
    return result
