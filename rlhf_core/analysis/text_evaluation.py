"""Evaluating a text policy: pass@1, cons@k, pass@k on the rule-based task, and a win rate judged by a
reward model against the reference (issue #5).

On the arithmetic tasks (:mod:`rlhf_core.text.tasks`, gold answers known) three numbers per policy:

- **pass@1**: greedy decoding, one answer per prompt, the fraction that is right
  (:func:`rlhf_core.text.gold_eval.evaluate_gold`, the same number GRPO logs as ``gold/accuracy``);
- **cons@k** (self-consistency, Wang et al. 2022; "cons@64" in the DeepSeek-R1 report): k sampled
  completions per prompt, the final answer of each (the last ``<answer>`` block,
  :func:`~rlhf_core.text.rewards.extract_answer`), a majority vote over them, and the fraction of
  prompts whose voted answer is right. Vote rules (:func:`majority_vote`): answers are compared by
  value when they hold a number (``7``, ``7.0`` and ``7 apples`` are one vote for 7), else as text
  ignoring case and spacing; a completion without an answer abstains; a tie goes to the answer that
  was seen first; a prompt where every completion abstains counts as wrong;
- **pass@k**: the fraction of prompts where ANY of the same k completions is right (an upper bound
  of cons@k: a voted answer that is right is one of the k answers), and the **mean sample
  accuracy** (the fraction of all k x n completions that are right, the expected sampled pass@1).

With k = 1 and temperature 0 (greedy) cons@1 = pass@1 = pass@k = the sample accuracy. pass@k from
exactly k samples is the unbiased estimator of Chen et al. (2021), ``1 - C(n - c, k) / C(n, k)``, with
n = k: 1 when any of the k is right, else 0.

**Your own prompts** (``prompt_source = project``): the same three numbers on the project's prompts that
carry a gold answer (``gold_answer``, imported with the prompts: ``prompts import`` or File ▸ Import
Prompts), chosen by ``prompt_ids``, a built-in ``prompt_set`` and/or ``category``
(:func:`~rlhf_core.text.gold_eval.gold_answer_prompts`; chosen prompts without a gold answer are left
out and counted). They are rendered as the tasks are (format instruction, optional worked example)
and checked the same way: the last ``<answer>`` block, numbers by value, text ignoring case, spacing
and end punctuation (:func:`~rlhf_core.text.rewards.answers_match`). No chosen prompt with a gold
answer is refused before a run is stored (``eval-text``).

**Win rate against the reference** (as in InstructGPT / the DPO paper, here judged by a learned
reward model instead of people or GPT-4): for each prompt one response of the policy and one of the
reference (greedy by default, or sampled, both with the same seed per prompt), both scored by a text
reward model (:func:`~rlhf_core.text.reward_model.score_responses` on the user prompt and the
response); win = 1, tie (|score difference| < 1e-6) = 0.5, loss = 0; the win rate is the mean.
A policy compared with itself therefore scores exactly 0.5.

The ``text_eval`` job (:func:`evaluate_text_policy`) loads the policy (a run's saved
``text_policy`` checkpoint, a model folder, or the bundled model), the reference (the policy's base
model as recorded when it was saved, unless given), and optionally a text reward model, and logs
``eval/pass_at_1``, ``eval/cons_at_k``, ``eval/pass_at_k``, ``eval/sample_accuracy`` and
``eval/win_rate`` (plus the mean reward-model scores) at step 0, publishes one sample of kind
``text_eval`` per prompt, and returns the numbers. The models run on ``device`` (only forward: half
weights on a GPU for a half ``precision``, under autocast; :mod:`rlhf_core.devices`) and the result
records where (``device``, ``device_name``, ``dtype``, ``peak_memory_mb``, ``peak_memory_kind``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_core import devices, kinds
from rlhf_core.config import RENAMED_FIELDS, param
from rlhf_core.jobs import JobContext
from rlhf_core.text.gold_eval import (
    consensus_at_k, evaluate_gold, gold_answer_prompts, project_prompts, sample_completions, task_prompts)
from rlhf_core.store import artefacts
from rlhf_core.text.model import (
    DEFAULT_MODEL_NAME, ModelError, check_model_config, eos_token_ids, load_model, resolve_model_spec)
from rlhf_core.text.prompts import builtin_set_path
from rlhf_core.text.tasks import render_task_prompt

SAMPLE_KIND = kinds.SAMPLE_TEXT_EVAL
TIE_TOLERANCE = 1e-6
POLICY_KIND = kinds.TEXT_POLICY
REWARD_MODEL_KIND = kinds.TEXT_REWARD_MODEL


# ------------------------------------------------------------------------------- win rate
def win_rate_from_scores(policy_scores: Sequence[float], reference_scores: Sequence[float],
                         tie_tolerance: float = TIE_TOLERANCE) -> dict:
    """Win rate of the policy: 1 per win, 0.5 per tie (|difference| < ``tie_tolerance``), 0 per loss."""
    if len(policy_scores) != len(reference_scores):
        raise ValueError(f"{len(policy_scores)} policy scores but {len(reference_scores)} reference scores")
    outcomes = []
    for a, b in zip(policy_scores, reference_scores):
        d = float(a) - float(b)
        outcomes.append(0.5 if abs(d) < tie_tolerance else (1.0 if d > 0 else 0.0))
    n = len(outcomes)
    return {"win_rate": sum(outcomes) / n if n else float("nan"),
            "wins": sum(o == 1.0 for o in outcomes), "ties": sum(o == 0.5 for o in outcomes),
            "losses": sum(o == 0.0 for o in outcomes), "outcomes": outcomes, "n": n}


def win_rate_vs_reference(policy: Any, reference: Any, tokenizer: Any, prompts: Sequence[str],
                          rendered: Sequence[str], reward_model: Any, reward_tokenizer: Any, *,
                          reference_tokenizer: Any = None, temperature: float = 0.0, top_p: float = 1.0,
                          seed: int = 0, max_new_tokens: int = 64, eos_token_ids: Sequence[int] | None = None,
                          reference_eos_token_ids: Sequence[int] | None = None,
                          on_step: Callable[[], None] | None = None, batch_size: int = 16,
                          tie_tolerance: float = TIE_TOLERANCE) -> dict:
    """One response of ``policy`` and one of ``reference`` per prompt, scored by a text reward model.

    ``prompts`` are the user texts the reward model reads, ``rendered`` what the models are asked
    (the chat-templated prompt). Greedy by default; with ``temperature`` > 0 both models sample with
    the same seed per prompt. Returns the win rate, wins/ties/losses, the mean score of each side and
    one row per prompt (prompt, both responses, both scores, outcome).
    """
    from rlhf_core.text.reward_model import score_responses  # start-up: imports torch

    if len(prompts) != len(rendered):
        raise ValueError(f"{len(prompts)} prompts but {len(rendered)} rendered prompts")
    if not prompts:
        raise ValueError("no prompts to compare on")
    common = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, on_step=on_step,
                  batch_size=batch_size)
    ours = [g[0].text for g in sample_completions(policy, tokenizer, rendered, 1, eos_token_ids=eos_token_ids,
                                                  **common)]
    if reference is policy and (reference_tokenizer is None or reference_tokenizer is tokenizer):
        theirs = list(ours)  # the same model, the same seeds: the same responses
    else:
        theirs = [g[0].text for g in sample_completions(reference, reference_tokenizer or tokenizer, rendered, 1,
                                                        eos_token_ids=reference_eos_token_ids or eos_token_ids,
                                                        **common)]
    if on_step is not None:
        on_step()
    scores = score_responses(reward_model, reward_tokenizer, list(prompts) * 2, ours + theirs,
                             batch_size=batch_size).tolist()
    n = len(prompts)
    policy_scores, reference_scores = [float(s) for s in scores[:n]], [float(s) for s in scores[n:]]
    res = win_rate_from_scores(policy_scores, reference_scores, tie_tolerance)
    rows = [{"prompt": p, "policy_response": a, "reference_response": b, "policy_score": sa,
             "reference_score": sb, "outcome": o}
            for p, a, b, sa, sb, o in zip(prompts, ours, theirs, policy_scores, reference_scores, res["outcomes"])]
    return {"win_rate": res["win_rate"], "wins": res["wins"], "ties": res["ties"], "losses": res["losses"], "n": n,
            "policy_score_mean": sum(policy_scores) / n, "reference_score_mean": sum(reference_scores) / n,
            "temperature": float(temperature), "rows": rows}


# ------------------------------------------------------------------------------- the job
@dataclass
class TextEvalConfig:
    RENAMED_FROM = RENAMED_FIELDS["text_eval"]  # old field names still read (not a field: no annotation)
    policy_run: int = param(0, "Run whose saved text policy (SFT, DPO, GRPO, PPO) to evaluate; 0: use "
                            "policy_folder.", min=0)
    policy_folder: str = param("", "Causal LM folder to evaluate when policy_run is 0 ('' = the bundled "
                               "SmolLM2-135M-Instruct).")
    reference_model: str = param("", "Reference model folder for the win rate ('' = the policy's base model as "
                                 "recorded with its checkpoint; a folder without a record is its own base).")
    reward_run: int = param(0, "Run whose text reward model judges the win rate (0: use reward_model).", min=0)
    reward_model: str = param("", "Text reward model folder for the win rate ('' with reward_run 0: the win rate "
                              "is skipped).")
    prompt_source: str = param("tasks", "What pass@1, cons@k and pass@k are measured on: tasks = generated "
                               "arithmetic tasks (task_level, heldout_tasks, task_seed); project = the project's "
                               "prompts that carry a gold answer (chosen by prompt_ids, prompt_set and category; "
                               "all of them when none is given).", choices=("tasks", "project"))
    prompt_set: str = param("", "prompt_source = project: a built-in prompt set to evaluate on (its prompts with "
                            "gold answers; empty: none).")
    category: str = param("", "prompt_source = project: only prompts of this category, from the prompt set or, "
                          "without a set or ids, from the whole project (comma-separated; empty: all).")
    prompt_ids: list = param([], "prompt_source = project: ids of the project's prompts to evaluate on.", each="id")
    max_prompts: int = param(0, "prompt_source = project: evaluate on at most this many of the chosen prompts "
                             "with a gold answer, the first ones (0: all).", min=0)
    task_level: int = param(1, "Difficulty of the held-out arithmetic tasks (1-4).", min=1, max=4)
    heldout_tasks: int = param(16, "Held-out tasks (the GRPO job's held-out stream of the same level and seed).",
                               min=1)
    task_seed: int = param(0, "Seed of the task set (GRPO's seed gives the same held-out tasks).", min=0)
    k: int = param(8, "Samples per prompt for cons@k and pass@k.", min=1)
    temperature: float = param(0.7, "Sampling temperature for cons@k (0: greedy).", min=0.0)
    top_p: float = param(1.0, "Nucleus sampling for cons@k (1: off).", min=0.0, max=1.0, min_inclusive=False)
    few_shot: bool = param(True, "Show the worked example before each task (as GRPO does).")
    format_instruction: bool = param(True, "Give the <think>/<answer> instruction as the system message.")
    win_prompt_source: str = param("tasks", "Prompts for the win rate: tasks (the prompts pass@k is measured on: "
                                   "the held-out tasks, or the chosen project prompts) or project (this project's "
                                   "prompts, up to 'heldout_tasks' of them).", choices=("tasks", "project"))
    win_temperature: float = param(0.0, "Decoding for the win rate: 0 = greedy, else sampled (same seed for both "
                                   "models).", min=0.0)
    max_new_tokens: int = param(64, "Longest completion in tokens.", min=1)
    batch_size: int = param(16, "Rows per generation batch (k samples of a prompt go together).", min=1)
    seed: int = param(0, "Sampling seed.", min=0)
    threads: int = param(1, "torch threads for this job.", min=1)
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def check(self) -> list[str]:
        problems = []
        problem = devices.spec_problem(self.device)
        if problem:
            problems.append(problem)
        if self.prompt_source != "project":
            given = [n for n in ("prompt_set", "category", "prompt_ids", "max_prompts") if getattr(self, n)]
            if given:
                problems.append(f"{', '.join(given)}: these choose the project's prompts; set prompt_source to "
                                "project to use them")
        elif self.prompt_set.strip():
            if not builtin_set_path(self.prompt_set.strip()).is_file():
                problems.append(f"prompt_set: there is no built-in prompt set {self.prompt_set.strip()!r}")
        if self.policy_run == 0 and self.policy_folder.strip() and not _names_an_artefact(self.policy_folder):
            folder = Path(self.policy_folder.strip()).expanduser()
            if not folder.is_dir():
                problems.append(f"policy_folder: no model folder at {folder}")
            elif not (folder / "config.json").is_file():
                problems.append(f"policy_folder: {folder} is not a model folder (it has no config.json)")
            else:
                problems.extend(_config_problems("policy_folder", folder))
        if self.reference_model.strip() and not _names_an_artefact(self.reference_model):
            folder = Path(self.reference_model.strip()).expanduser()
            if not (folder / "config.json").is_file():
                problems.append(f"reference_model: no model folder (with a config.json) at {folder}")
            else:
                problems.extend(_config_problems("reference_model", folder))
        if self.reward_run == 0 and self.reward_model.strip() and not _names_an_artefact(self.reward_model):
            problems.extend(f"reward_model: {p}" for p in _reward_folder_problems(Path(self.reward_model.strip())))
        return problems


def _names_an_artefact(text: str) -> bool:
    """Whether a model setting names a project's artefact (``checkpoint:12``, ``run:7``, an id, or a name
    that is no path): checked against the project when the job starts (:func:`resolve_inputs`)."""
    text = text.strip()
    if artefacts.is_reference(text):
        return True
    return "/" not in text and "\\" not in text and not Path(text).expanduser().exists()


def _reward_folder_problems(folder: Path) -> list[str]:
    from rlhf_core.text.reward_model import FORMAT_NAME, META_FILE  # start-up: imports torch

    folder = folder.expanduser()
    if not folder.is_dir():
        return [f"no reward model folder at {folder}"]
    meta = folder / META_FILE
    if not meta.is_file():
        return [f"{folder} is not a text reward model (it has no {META_FILE}; train one with the "
                "text_reward_model job)"]
    try:
        if json.loads(meta.read_text(encoding="utf-8")).get("format") != FORMAT_NAME:
            return [f"{meta} does not describe a text reward model"]
    except (OSError, ValueError, AttributeError) as exc:
        return [f"{meta} is damaged ({exc})"]
    return []


def _run_checkpoint(project, run_id: int, kind: str, what: str) -> Path:
    run = project.get_run(int(run_id))
    if run is None:
        raise ValueError(f"{what}: the project has no run {run_id}")
    rows = [r for r in project.checkpoints(int(run_id)) if r["kind"] == kind]
    if not rows:
        raise ValueError(f"{what}: run {run_id} ({run['kind']}, {run['status']}) saved no {kind} checkpoint")
    folder = project.abspath(rows[-1]["path"])
    if not folder.is_dir():
        raise ValueError(f"{what}: the checkpoint folder of run {run_id} is missing ({folder})")
    return folder


@dataclass
class EvalInputs:
    """What the job evaluates, resolved from the config and the project (no model loaded yet)."""

    policy: str  # '' = the bundled default model, else a folder
    reference: str  # '' = the bundled default model, else a folder
    reward_model: Path | None
    policy_label: str
    prompts: list | None = None  # prompt_source = project: the chosen prompts with a gold answer (RLPrompt)
    without_gold: int = 0  # chosen prompts left out for having no gold answer


def _config_problems(name: str, folder: Path) -> list[str]:
    """A damaged ``config.json`` (unreadable, or sizes that are not positive), without loading the model."""
    try:
        check_model_config(folder)
    except ModelError as exc:
        return [f"{name}: {exc}"]
    return []


def resolve_inputs(config: TextEvalConfig, project=None) -> EvalInputs:
    """The folders to load; ``ValueError`` with a clear message for anything missing or of the wrong kind.

    The CLI calls this before it creates the run, so a bad input stores nothing.
    """
    if config.policy_run:
        if project is None:
            raise ValueError("policy_run needs a project (or give policy_folder)")
        folder = _run_checkpoint(project, config.policy_run, POLICY_KIND, "policy_run")
        policy, label = str(folder), f"run {config.policy_run}"
    elif config.policy_folder.strip():
        folder = Path(resolve_model_spec(config.policy_folder, project)).expanduser().absolute()
        if not folder.is_dir():
            raise ValueError(f"policy_folder: no model folder at {folder}")
        policy, label = str(folder), str(folder)
    else:
        policy, label = "", DEFAULT_MODEL_NAME
    reference_problem = None
    if config.reference_model.strip():
        reference = str(Path(resolve_model_spec(config.reference_model, project)).expanduser().absolute())
    elif policy == "":
        reference = ""
    else:
        reference = policy
        record = Path(policy) / "workbench_policy.json"  # written by save_policy
        if record.is_file():
            try:
                base = str(json.loads(record.read_text(encoding="utf-8")).get("base_model") or "")
            except (OSError, ValueError, AttributeError):
                base = ""
            if base in ("", "default", DEFAULT_MODEL_NAME):
                reference = ""
            elif Path(base).is_dir():
                reference = base
            else:  # only a problem when there is a win rate to measure
                reference_problem = (f"the policy's base model {base!r} is not a local folder; set "
                                     "reference_model to compare against it")
    reward: Path | None = None
    if config.reward_run:
        if project is None:
            raise ValueError("reward_run needs a project (or give reward_model)")
        reward = _run_checkpoint(project, config.reward_run, REWARD_MODEL_KIND, "reward_run")
    elif config.reward_model.strip():
        found = artefacts.resolve(project, config.reward_model, (REWARD_MODEL_KIND,))
        reward = (found.path if isinstance(found, artefacts.Artefact) else found).expanduser().absolute()
    if reward is not None:
        problems = _reward_folder_problems(reward)
        if problems:
            raise ValueError("reward model: " + problems[0])
        if reference_problem:
            raise ValueError(reference_problem)
    inputs = EvalInputs(policy, reference, reward, label)
    if config.prompt_source == "project":
        inputs.prompts, inputs.without_gold = gold_answer_prompts(
            project, prompt_set=config.prompt_set, category=config.category, prompt_ids=config.prompt_ids,
            max_prompts=config.max_prompts)
    return inputs


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    if not a or not b:
        return False
    return Path(a).resolve() == Path(b).resolve()


def _load_for_eval(spec: str, what: str, ctx: JobContext, device=None,
                   precision: str = "float32") -> tuple[Any, list[int]]:
    """(the loaded causal LM, its end-of-turn ids); '' = the bundled default; errors name ``what``. On
    ``device`` in :func:`rlhf_core.devices.frozen_dtype` (it only runs forward)."""
    dtype = "float32" if device is None else str(devices.frozen_dtype(device, precision)).removeprefix("torch.")
    try:
        loaded = load_model(spec or None, ctx=ctx, device=device, dtype=dtype)
    except ModelError as exc:
        raise ValueError(f"{what}: {exc}") from exc
    return loaded, eos_token_ids(loaded.model, loaded.tokenizer)


def evaluate_text_policy(config: TextEvalConfig, ctx: JobContext) -> dict:
    """The ``text_eval`` job (module doc)."""
    import torch

    from rlhf_core.text.rl_common import peak_rss_mb, render_chat_prompt, set_threads  # start-up: imports torch

    started = time.monotonic()
    set_threads(config.threads)
    device = devices.resolve_device(config.device)  # DeviceError (a sentence) before anything is loaded
    precision = devices.resolve_precision(config.precision, device)
    devices.reset_peak_memory(device)
    torch.manual_seed(config.seed)
    project = ctx.project() if ctx.project_path is not None else None
    inputs = resolve_inputs(config, project)
    if inputs.prompts is not None:
        held = inputs.prompts
        if inputs.without_gold:
            ctx.log(f"{inputs.without_gold} of the chosen prompts have no gold answer and are left out.")
    else:
        _, held = task_prompts(config.task_level, 0, config.heldout_tasks, config.task_seed)
    what = "tasks" if inputs.prompts is None else "prompts"
    win_prompts: list | None = None
    if inputs.reward_model is not None and config.win_prompt_source == "project":
        if project is None:
            raise ValueError("win_prompt_source=project needs a project")
        train, heldout = project_prompts(project, need_gold=False, heldout_fraction=0.0, seed=config.seed)
        win_prompts = (train + heldout)[:config.heldout_tasks]

    ctx.progress(0.0, message=f"Loading the policy ({inputs.policy_label})")
    loaded, eos = _load_for_eval(inputs.policy, "policy", ctx, device, precision)
    model, tok = loaded.model, loaded.tokenizer
    ctx.raise_if_cancelled()
    n_phases = 3 if inputs.reward_model is not None else 2

    def phase(i: int, message: str) -> None:
        ctx.progress(i / n_phases, message=message)

    phase(0, f"pass@1: greedy answers to {len(held)} {what}")
    with devices.autocast(device, precision):
        greedy = evaluate_gold(model, tok, held, few_shot=config.few_shot, max_new_tokens=config.max_new_tokens,
                               eos_token_ids=eos, instruction=config.format_instruction,
                               on_step=ctx.raise_if_cancelled, batch_size=config.batch_size)
    ctx.raise_if_cancelled()
    phase(1, f"cons@{config.k}: {config.k} samples of each of {len(held)} {what}")
    with devices.autocast(device, precision):
        cons = consensus_at_k(model, tok, held, k=config.k, temperature=config.temperature, top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens, seed=config.seed, few_shot=config.few_shot,
                              instruction=config.format_instruction, eos_token_ids=eos,
                              on_step=ctx.raise_if_cancelled, batch_size=config.batch_size)
    ctx.raise_if_cancelled()
    metrics = {"eval/pass_at_1": greedy["accuracy"], "eval/cons_at_k": cons["cons_at_k"],
               "eval/pass_at_k": cons["pass_at_k"], "eval/sample_accuracy": cons["sample_accuracy"],
               "eval/format": greedy["format"]}

    win: dict | None = None
    skipped = None
    if inputs.reward_model is None:
        skipped = ("No reward model given (reward_run or reward_model): the win rate against the reference "
                   "was not measured.")
        ctx.log(skipped)
    else:
        phase(2, "win rate: policy and reference responses, scored by the reward model")
        from rlhf_core.text.reward_model import load_text_reward_model  # start-up: imports torch

        if _same_model(inputs.reference, inputs.policy):
            reference, ref_tok, ref_eos = model, tok, eos
        else:
            ref_loaded, ref_eos = _load_for_eval(inputs.reference, "reference", ctx, device, precision)
            reference, ref_tok = ref_loaded.model, ref_loaded.tokenizer
        try:
            rm, rm_tok = load_text_reward_model(inputs.reward_model, device=device, precision=precision)
        except ModelError as exc:
            raise ValueError(f"reward model: {exc}") from exc
        ctx.raise_if_cancelled()
        if win_prompts is None:
            texts = [p.text for p in held]
            rendered = [render_task_prompt(tok, t, config.few_shot, config.format_instruction) for t in texts]
        else:
            texts = [p.text for p in win_prompts]
            rendered = [render_chat_prompt(tok, t) for t in texts]
        with devices.autocast(device, precision):
            win = win_rate_vs_reference(model, reference, tok, texts, rendered, rm, rm_tok,
                                        reference_tokenizer=ref_tok, temperature=config.win_temperature,
                                        top_p=config.top_p, seed=config.seed, max_new_tokens=config.max_new_tokens,
                                        eos_token_ids=eos, reference_eos_token_ids=ref_eos,
                                        on_step=ctx.raise_if_cancelled, batch_size=config.batch_size)
        metrics.update({"eval/win_rate": win["win_rate"], "eval/policy_score": win["policy_score_mean"],
                        "eval/reference_score": win["reference_score_mean"]})
    ctx.metrics(0, metrics)

    for i, (p, row) in enumerate(zip(held, cons["rows"])):
        payload = {"part": "consensus", "index": i, "prompt": p.text, "gold": row["gold"],
                   "answers": row["answers"], "voted": row["voted"], "votes": row["votes"],
                   "cons_correct": row["cons_correct"], "n_correct": row["n_correct"], "k": row["k"],
                   "response": row["completions"][0], "completions": row["completions"],
                   "greedy_response": greedy["responses"][i], "greedy_correct": greedy["correct"][i]}
        if "prompt_id" in p.meta:
            payload["prompt_id"] = p.meta["prompt_id"]
        ctx.sample(SAMPLE_KIND, payload, step=0)
    if win is not None:
        for i, row in enumerate(win["rows"]):
            ctx.sample(SAMPLE_KIND, {"part": "win_rate", "index": i, **row}, step=0)

    result: dict[str, Any] = {
        "policy": inputs.policy_label, "policy_run": config.policy_run or None,
        "policy_model": loaded.model_id, "reference_model": inputs.reference or "SmolLM2-135M-Instruct (bundled)",
        "reward_model": str(inputs.reward_model) if inputs.reward_model is not None else None,
        "prompt_source": config.prompt_source, "task_level": config.task_level if inputs.prompts is None else None,
        "prompts": len(held), "k": config.k, "temperature": config.temperature,
        "pass_at_1": greedy["accuracy"], "cons_at_k": cons["cons_at_k"], "pass_at_k": cons["pass_at_k"],
        "sample_accuracy": cons["sample_accuracy"], "format_at_1": greedy["format"],
        "win_rate": None, "win_rate_skipped": skipped,
    }
    if inputs.prompts is not None:
        result.update({"prompt_ids": [p.meta["prompt_id"] for p in held if "prompt_id" in p.meta],
                       "prompt_set": config.prompt_set.strip() or None, "category": config.category.strip() or None,
                       "prompts_without_gold": inputs.without_gold})
    if win is not None:
        result.update({"win_rate": win["win_rate"], "wins": win["wins"], "ties": win["ties"], "losses": win["losses"],
                       "win_prompts": win["n"], "policy_score_mean": win["policy_score_mean"],
                       "reference_score_mean": win["reference_score_mean"],
                       "win_temperature": config.win_temperature})
    result.update({"wall_seconds": round(time.monotonic() - started, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                   **devices.device_record(device, precision)})
    ctx.progress(1.0, message=(f"pass@1 {greedy['accuracy']:.3f}, cons@{config.k} {cons['cons_at_k']:.3f}, "
                               f"pass@{config.k} {cons['pass_at_k']:.3f}"
                               + (f", win rate {win['win_rate']:.3f}" if win is not None else "")))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}
