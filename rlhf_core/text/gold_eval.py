"""Scoring a text policy on prompts with gold answers: greedy pass@1 (:func:`evaluate_gold`) and
cons@k / pass@k by majority vote (:func:`consensus_at_k`), and the gold-answer prompts they read
(:class:`RLPrompt`: generated tasks, the project's prompts, or those chosen by set, category and id,
:func:`gold_answer_prompts`). The GRPO job logs these during training, the ``text_eval`` job reports
them for a finished policy. An answer is the last ``<answer>`` block of a completion; how it is
compared with the gold answer (numbers by value, text ignoring case, spacing and end punctuation) is
:func:`rlhf_core.text.rewards.answers_match`.

torch is imported inside the functions that sample: the CLI builds its parser from
:mod:`rlhf_core.analysis.text_evaluation`, which imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf_core.text.pairs import split_pairs
from rlhf_core.text.prompts import load_builtin_set
from rlhf_core.text.rewards import answers_match, extract_answer, format_score, normalise_text_answer, parse_number
from rlhf_core.text.tasks import render_task_prompt, task_split


# ------------------------------------------------------------------------------- prompts
@dataclass
class RLPrompt:
    """A prompt to train or evaluate on: the user text and what the rewards read (``gold_answer``)."""

    text: str
    meta: dict
    key: str = ""


def task_prompts(level: int, n_train: int, n_heldout: int, seed: int) -> tuple[list[RLPrompt], list[RLPrompt]]:
    train, held = task_split(level, n_train, n_heldout, seed)
    return ([RLPrompt(t.prompt, t.meta(), t.key) for t in train],
            [RLPrompt(t.prompt, t.meta(), t.key) for t in held])


def project_prompts(project, *, need_gold: bool, heldout_fraction: float,
                    seed: int) -> tuple[list[RLPrompt], list[RLPrompt]]:
    """The project's live prompts (only those with a gold answer when ``need_gold``), split with ``seed``."""
    rows = project.conn.execute(
        "SELECT id, text, gold_answer FROM prompts WHERE deleted_at IS NULL ORDER BY id").fetchall()
    items = []
    for pid, text, gold in rows:
        gold = None if gold is None or not str(gold).strip() else str(gold).strip()
        if need_gold and gold is None:
            continue
        items.append(RLPrompt(text, {"gold_answer": gold, "prompt_id": int(pid)}, f"prompt-{pid}"))
    if not items:
        what = "prompts with a gold answer" if need_gold else "prompts"
        raise ValueError(f"The project has no {what}; import a prompt set with gold answers (e.g. the starter "
                         "set's reasoning prompts) or use the generated tasks (prompt_source=tasks).")
    return split_pairs(items, heldout_fraction, seed)


def _clean_gold(gold) -> str | None:
    return None if gold is None or not str(gold).strip() else str(gold).strip()


def gold_answer_prompts(project, *, prompt_set: str = "", category: str = "", prompt_ids=(),
                        max_prompts: int = 0) -> tuple[list[RLPrompt], int]:
    """The chosen prompts that carry a gold answer, and how many of the chosen ones have none.

    Chosen: the project's prompts ``prompt_ids`` (in that order) and the built-in ``prompt_set`` (its
    ``category`` prompts only, when given; read from the set as the trainers read it, not added to the
    project); with neither, every live prompt of the project (of ``category`` when given), by id. A text
    chosen twice counts once; ``max_prompts`` > 0 keeps the first that many with a gold answer.
    ``ValueError`` (one sentence) for an unknown id or set, and when no chosen prompt has a gold answer.
    """
    wanted = {c.strip().lower() for c in str(category or "").split(",") if c.strip()}
    chosen: list[RLPrompt] = []
    if prompt_ids or not prompt_set.strip():
        if project is None:
            raise ValueError("Project prompts need a project: open one, or choose a built-in prompt_set.")
        if prompt_ids:
            rows = []
            for pid in prompt_ids:
                row = project.conn.execute("SELECT id, text, gold_answer FROM prompts WHERE id=? AND deleted_at IS NULL",
                                           [int(pid)]).fetchone()
                if row is None:
                    raise ValueError(f"The project has no prompt {pid}.")
                rows.append(row)
        else:
            rows = [r for r in project.conn.execute(
                "SELECT id, text, gold_answer, category FROM prompts WHERE deleted_at IS NULL ORDER BY id")
                if not wanted or r[3] in wanted]
        chosen += [RLPrompt(text, {"gold_answer": _clean_gold(gold), "prompt_id": int(pid)}, f"prompt-{pid}")
                   for pid, text, gold, *_ in rows]
    if prompt_set.strip():
        try:
            records = load_builtin_set(prompt_set.strip(), sorted(wanted) or None)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])[:1].upper() + str(exc.args[0])[1:] + ".") from None
        chosen += [RLPrompt(r.text, {"gold_answer": _clean_gold(r.gold_answer), "prompt_set": prompt_set.strip()},
                            r.key or f"{prompt_set.strip()}-{r.line}") for r in records]
    seen: set[str] = set()
    chosen = [p for p in chosen if not (p.text in seen or seen.add(p.text))]
    with_gold = [p for p in chosen if p.meta["gold_answer"] is not None]
    if not with_gold:
        where = f" of category {', '.join(sorted(wanted))}" if wanted and not prompt_ids else ""
        raise ValueError(
            f"None of the {len(chosen)} chosen prompts{where} has a gold answer: import prompts with a \"gold_answer\" "
            "field (File ▸ Import Prompts, or `python -m rlhf_core prompts import`) or choose prompts that have one."
            if chosen else f"No prompts were chosen: the project has no prompts{where}.")
    without = len(chosen) - len(with_gold)
    return (with_gold[:int(max_prompts)] if max_prompts else with_gold), without


# ------------------------------------------------------------------------------- pass@1
def evaluate_gold(model: Any, tokenizer: Any, prompts: list[RLPrompt], *, few_shot: bool, max_new_tokens: int,
                  eos_token_ids: list[int], instruction: bool = True, on_step=None, batch_size: int = 16) -> dict:
    """Greedy pass@1 on prompts with gold answers: accuracy, format rate (strict) and mean length."""
    import torch  # start-up: see the module doc

    from rlhf_core.text.generation import SamplingSettings  # start-up: imports torch
    from rlhf_core.text.rl_common import sample_for_training  # start-up: imports torch

    if not prompts:
        return {"accuracy": float("nan"), "format": float("nan"), "mean_length": float("nan"), "n": 0}
    rendered = [render_task_prompt(tokenizer, p.text, few_shot, instruction) for p in prompts]
    with torch.no_grad():
        samples = sample_for_training(model, tokenizer, rendered,
                                      SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0),
                                      seeds=[0] * len(rendered), eos_token_ids=eos_token_ids, on_step=on_step,
                                      batch_size=batch_size)
    correct = [answers_match(extract_answer(s.text), p.meta.get("gold_answer")) for s, p in zip(samples, prompts)]
    formats = [format_score(s.text, partial=False) for s in samples]
    return {"accuracy": sum(correct) / len(correct), "format": sum(formats) / len(formats),
            "mean_length": sum(len(s.completion_ids) for s in samples) / len(samples), "n": len(samples),
            "example": samples[0].text, "responses": [s.text for s in samples], "correct": correct}


# ------------------------------------------------------------------------------- voting
def vote_key(answer: str | None) -> str | None:
    """What a vote counts as: ``num:<value>`` when the answer holds a number, else ``text:<normalised>``;
    None (an abstention) for a missing or blank answer."""
    if answer is None or not answer.strip():
        return None
    value = parse_number(answer)
    if value is not None:
        return f"num:{value!r}"
    return "text:" + normalise_text_answer(answer)


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """(the winning answer as first written, its number of votes); (None, 0) when all abstain.

    Answers with the same :func:`vote_key` are one candidate; the most votes wins and a tie goes to
    the candidate seen first.
    """
    counts: dict[str, int] = {}
    first: dict[str, tuple[int, str]] = {}
    for i, answer in enumerate(answers):
        key = vote_key(answer)
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, (i, answer))  # type: ignore[arg-type]
    if not counts:
        return None, 0
    best = max(counts, key=lambda k: (counts[k], -first[k][0]))
    return first[best][1], counts[best]


def consensus_from_completions(completions: Sequence[Sequence[str]], golds: Sequence[Any]) -> dict:
    """cons@k, pass@k and the mean sample accuracy of already-sampled completions.

    ``completions[i]`` are the k texts for prompt i (k may differ between prompts) and ``golds[i]``
    its gold answer. Returns the three fractions, ``n`` and one row per prompt (its answers, the
    voted answer and its votes, whether the vote is right, how many samples are right).
    """
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completion lists but {len(golds)} gold answers")
    rows = []
    for texts, gold in zip(completions, golds):
        answers = [extract_answer(t) for t in texts]
        voted, votes = majority_vote(answers)
        right = [answers_match(a, gold) for a in answers]
        rows.append({"gold": None if gold is None else str(gold), "answers": answers, "voted": voted, "votes": votes,
                     "abstained": sum(vote_key(a) is None for a in answers),
                     "cons_correct": bool(voted is not None and answers_match(voted, gold)),
                     "n_correct": sum(right), "k": len(texts)})
    n = len(rows)
    if n == 0:
        nan = float("nan")
        return {"cons_at_k": nan, "pass_at_k": nan, "sample_accuracy": nan, "n": 0, "rows": rows}
    samples = sum(r["k"] for r in rows)
    return {"cons_at_k": sum(r["cons_correct"] for r in rows) / n,
            "pass_at_k": sum(r["n_correct"] > 0 for r in rows) / n,
            "sample_accuracy": sum(r["n_correct"] for r in rows) / samples if samples else float("nan"),
            "n": n, "rows": rows}


# ------------------------------------------------------------------------------- sampling
def eval_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A distinct sampling seed per (seed, prompt, sample); the same for every model (common random numbers)."""
    return (int(seed) * 1_000_003 + int(prompt_index)) * 4_096 + int(sample_index) + 7_919


def sample_completions(model: Any, tokenizer: Any, rendered: Sequence[str], k: int, *, temperature: float,
                       top_p: float, max_new_tokens: int, seed: int, eos_token_ids: Sequence[int] | None,
                       on_step: Callable[[], None] | None, batch_size: int) -> list[list[Any]]:
    """k completions of each rendered prompt, prompt-major in batches of ``batch_size`` rows (all k of a
    prompt usually share a batch); one list of :class:`~rlhf_core.text.rl_common.TrainingSample` per prompt."""
    import torch  # start-up: see the module doc

    from rlhf_core.text.generation import SamplingSettings  # start-up: imports torch
    from rlhf_core.text.rl_common import sample_for_training  # start-up: imports torch

    settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=float(temperature),
                                top_p=float(top_p) if temperature > 0 else 1.0)
    rows = [i for i in range(len(rendered)) for _ in range(k)]
    seeds = [eval_seed(seed, i, j) for i in range(len(rendered)) for j in range(k)]
    with torch.no_grad():
        samples = sample_for_training(model, tokenizer, [rendered[i] for i in rows], settings, seeds,
                                      eos_token_ids=eos_token_ids, on_step=on_step, batch_size=max(1, batch_size))
    return [samples[i * k:(i + 1) * k] for i in range(len(rendered))]


def consensus_at_k(model: Any, tokenizer: Any, prompts: Sequence[Any], *, k: int = 8, temperature: float = 0.7,
                   top_p: float = 1.0, max_new_tokens: int = 64, seed: int = 0, few_shot: bool = True,
                   instruction: bool = True, eos_token_ids: Sequence[int] | None = None,
                   on_step: Callable[[], None] | None = None, batch_size: int = 16) -> dict:
    """cons@k, pass@k and the mean sample accuracy of ``model`` on gold-answer prompts (module doc).

    ``prompts``: :class:`RLPrompt` (``meta["gold_answer"]``), rendered as the GRPO
    job renders them (:func:`~rlhf_core.text.tasks.render_task_prompt`). ``temperature`` 0 is greedy
    (then all k samples are the same). Each row of the result also has the prompt and its completions.
    """
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    rendered = [render_task_prompt(tokenizer, p.text, few_shot, instruction) for p in prompts]
    groups = sample_completions(model, tokenizer, rendered, int(k), temperature=temperature, top_p=top_p,
                                max_new_tokens=max_new_tokens, seed=seed, eos_token_ids=eos_token_ids,
                                on_step=on_step, batch_size=batch_size)
    texts = [[s.text for s in group] for group in groups]
    result = consensus_from_completions(texts, [p.meta.get("gold_answer") for p in prompts])
    for row, p, t in zip(result["rows"], prompts, texts):
        row["prompt"] = p.text
        row["completions"] = t
    result.update({"k": int(k), "temperature": float(temperature), "top_p": float(top_p)})
    return result
