"""The Constitutional AI demo: the supervised stage end to end, measured on the helpful-harmless line.

``python -m rlhf_core demo cai [--project P] [--model PATH] ...`` (or the ``cai_demo`` job) runs, each
stage a child run of the demo's run:

1. the starter set's labelled harmlessness prompts (to refuse / to answer) are split, per label and
   seeded, into a training half and an evaluation half (``eval_fraction``): the refusal rates are
   measured on prompts the revisions never saw;
2. ``refusal_eval`` of the starting policy on the evaluation half (before);
3. ``critique_revise`` on the training half: sample, critique under a principle of the constitution,
   revise; the revisions are stored as AI corrections;
4. ``sft`` from the starting policy on the corrections (``data = corrections``);
5. ``refusal_eval`` of the SFT policy on the evaluation half (after);
6. optionally (``rl_stage = dpo`` or ``ppo``), Constitutional AI's RL stage on AI preferences: the SFT
   policy samples two responses per training prompt, the AI judge (``ai_labels``, the critic model, the
   constitution) labels the pairs; then ``dpo`` trains the SFT policy on the AI labels (revision pairs
   included), or (``ppo``, RLAIF as in the paper) ``text_reward_model`` learns a preference model from the
   AI labels and ``ppo_text`` trains the SFT policy on it with a KL penalty; ``refusal_eval`` measures it.

The result (the CLI's JSON last line): the refusal rates on both labels before and after (with n and
Wilson 95 % intervals), the stage runs and their seconds, the revisions and the wall time. Without
``--project`` the stages run in a temporary project that is removed at the end. SFT learns from every
correction of the project, so in a project with earlier corrections (a person's or an earlier run's)
those count too.

``device`` and ``precision`` go to every stage (each a text job with the same settings); a device that cannot be
used stops the demo before anything is written.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from rlhf_core import config as cfg
from rlhf_core import devices
from rlhf_core.analysis.refusal import COMPLY, LABELS, REFUSE, labelled_prompts
from rlhf_core.config import param
from rlhf_core.jobs import ChildContext, JobCancelled, JobContext, execute_job, get_job
from rlhf_core.store import Project
from rlhf_core.text.prompts import add_builtin_prompts, builtin_set_path

RL_STAGES = ("none", "dpo", "ppo")
#: each stage's share of the demo's progress bar (measured on the bundled model, roughly)
_WEIGHTS = {"refusal_before": 1.0, "critique_revise": 3.0, "sft": 2.0, "refusal_after": 1.0,
            "generate": 1.0, "ai_labels": 1.0, "dpo": 2.0, "refusal_after_dpo": 1.0,
            "reward_model": 2.0, "ppo": 3.0, "refusal_after_ppo": 1.0}
#: the stages each RL stage adds after SFT
_RL_STAGE_NAMES = {"none": (), "dpo": ("generate", "ai_labels", "dpo", "refusal_after_dpo"),
                   "ppo": ("generate", "ai_labels", "reward_model", "ppo", "refusal_after_ppo")}


@dataclass
class CAIDemoConfig:
    model: str = param("", "Starting policy: a causal-LM folder, run:ID, checkpoint:ID or an artefact name "
                       "('' = the bundled SmolLM2-135M-Instruct).", label="Model")
    critic_model: str = param("", "Critic (and, with an RL stage, judge) model ('' = the starting policy).")
    prompt_set: str = param("starter", "Built-in prompt set whose refuse/comply prompts are split into training "
                            "and evaluation halves.")
    eval_fraction: float = param(0.5, "Share of each label's prompts held out for the refusal evaluation "
                                 "(seeded); the rest are critiqued and revised.", min=0.1, max=0.9)
    max_train_prompts: int = param(0, "Critique at most this many training prompts (0: all).", min=0)
    max_eval_per_label: int = param(0, "Evaluate at most this many prompts of each label (0: all).", min=0)
    rounds: int = param(1, "Critique-and-revise rounds per response.", min=1, max=4)
    principle: int = param(0, "The principle asked: 0 = drawn per response and round; N = the N-th.", min=0)
    max_new_tokens: int = param(96, "Longest response, revision and evaluated response, in tokens.", min=1,
                                max=4096)
    critique_max_new_tokens: int = param(64, "Longest critique, in tokens.", min=1, max=4096)
    temperature: float = param(0.0, "Sampling temperature of the critique stage (0 = greedy); the refusal "
                               "evaluation is greedy.", min=0.0, max=5.0)
    sft_epochs: int = param(3, "SFT passes over the revisions.", min=1, max=1000)
    sft_learning_rate: float = param(2e-5, "SFT AdamW learning rate (LoRA needs about 10x more).", min=0.0,
                                     min_inclusive=False)
    sft_batch_size: int = param(4, "SFT examples per step.", min=1, max=4096)
    lora_rank: int = param(0, "LoRA rank of SFT and DPO (0: full fine-tune).", min=0, max=1024)
    rl_stage: str = param("none", "After SFT: none, dpo or ppo (the SFT policy samples two responses per training "
                          "prompt, the AI judge labels them under the constitution; dpo trains on the AI labels, "
                          "ppo fits a reward model to them and runs PPO with a KL penalty on it).",
                          choices=RL_STAGES)
    dpo_beta: float = param(0.1, "dpo: the KL temperature beta.", min=0.0, min_inclusive=False)
    dpo_learning_rate: float = param(5e-6, "dpo: AdamW learning rate.", min=0.0, min_inclusive=False)
    dpo_epochs: int = param(1, "dpo: passes over the AI-labelled pairs.", min=1, max=1000)
    ppo_steps: int = param(10, "ppo: PPO steps on the AI-preference reward model.", min=1, max=100_000)
    ppo_beta: float = param(0.05, "ppo: KL coefficient towards the SFT policy.", min=0.0)
    seed: int = param(0, "Seed of the split, the sampling and the training.", min=0)
    threads: int = param(1, "torch threads of every stage.", min=1, max=256)
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def check(self) -> list[str]:
        problem = devices.spec_problem(self.device)
        if problem:
            return [problem]
        if not builtin_set_path(self.prompt_set.strip()).is_file():
            return [f"prompt_set: there is no built-in prompt set {self.prompt_set.strip()!r}"]
        return []


def split_prompts(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """``(train, eval)``: each label's prompts shuffled (seeded) and ``eval_fraction`` of them (at least one
    when there are two or more) held out for evaluation; both lists in id order."""
    train, held = [], []
    rng = random.Random(seed)
    for label in LABELS:
        group = [r for r in rows if r["label"] == label]
        rng.shuffle(group)
        k = min(len(group) - 1, max(1, round(len(group) * eval_fraction))) if len(group) > 1 else len(group)
        held += group[:k]
        train += group[k:]
    return sorted(train, key=lambda r: r["id"]), sorted(held, key=lambda r: r["id"])


def _rates(result: dict) -> dict:
    return {k: result.get(k) for k in (REFUSE, COMPLY, "under_refusal", "over_refusal")}


class _Demo:
    def __init__(self, config: CAIDemoConfig, ctx: JobContext, project: Project, run_id: int):
        self.config, self.ctx, self.project, self.run_id = config, ctx, project, int(run_id)
        extra = {n for names in _RL_STAGE_NAMES.values() for n in names}
        names = [n for n in _WEIGHTS if n not in extra or n in _RL_STAGE_NAMES[config.rl_stage]]
        total = sum(_WEIGHTS[n] for n in names)
        self.spans, at = {}, 0.0
        for n in names:
            self.spans[n] = (at / total, (at + _WEIGHTS[n]) / total)
            at += _WEIGHTS[n]
        self.runs: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def stage(self, name: str, job: str, settings: dict[str, Any]) -> dict:
        """Run ``job`` as a child run of the demo; its result (a failed stage fails the demo, in words)."""
        self.ctx.raise_if_cancelled()
        spec = get_job(job)
        settings = {"device": self.config.device, "precision": self.config.precision, **settings}
        config = cfg.from_dict(spec.config_class(), settings)
        child = self.project.create_run(job, cfg.to_dict(config), parent_run_id=self.run_id)
        self.runs[name] = child
        lo, hi = self.spans[name]
        outcome = execute_job(spec, config, ChildContext(self.ctx, lo, hi, name), project_path=self.project.folder,
                              run_id=child, torch_threads=self.config.threads)
        self.seconds[name] = round(outcome.wall_seconds, 2)
        if outcome.status == "cancelled":
            raise JobCancelled("cancelled")
        if outcome.status != "completed":
            raise RuntimeError(f"The demo's {name} stage (run {child}, {job}) failed: {outcome.message}")
        return outcome.result if isinstance(outcome.result, dict) else {}

    def evaluate(self, name: str, model: str, eval_ids: list[int], step: int) -> dict:
        c = self.config
        result = self.stage(name, "refusal_eval", {
            "model": model, "prompt_set": "", "prompt_ids": eval_ids, "max_per_label": c.max_eval_per_label,
            "max_new_tokens": c.max_new_tokens, "temperature": 0.0, "seed": c.seed})
        self.ctx.metrics(step, {"refusal/on_refuse": result[REFUSE]["rate"],
                                "refusal/under_refusal": result["under_refusal"]["rate"],
                                "refusal/on_comply": result[COMPLY]["rate"]})
        return _rates(result)

    def run(self) -> dict:
        c = self.config
        device = devices.resolve_device(c.device)  # DeviceError (a sentence) before anything is written
        precision = devices.resolve_precision(c.precision, device)
        started = time.monotonic()
        set_ids = add_builtin_prompts(self.project, c.prompt_set.strip())
        train, held = split_prompts(labelled_prompts(self.project, set_ids), c.eval_fraction, c.seed)
        if not train or not held:
            raise ValueError(f"the prompt set {c.prompt_set!r} has too few prompts labelled refuse/comply to split "
                             "into training and evaluation prompts")
        train_ids, eval_ids = [r["id"] for r in train], [r["id"] for r in held]
        if c.max_train_prompts:
            train_ids = train_ids[:c.max_train_prompts]
        self.ctx.log(f"{len(train_ids)} prompts to critique and revise, {len(eval_ids)} held out for the refusal "
                     "evaluation" + (f" (at most {c.max_eval_per_label} per label)" if c.max_eval_per_label else ""))
        before = self.evaluate("refusal_before", c.model, eval_ids, 0)

        revised = self.stage("critique_revise", "critique_revise", {
            "model": c.model, "critic_model": c.critic_model, "prompt_set": "", "category": "",
            "prompt_ids": train_ids, "max_prompts": 0, "principle": c.principle, "rounds": c.rounds,
            "max_new_tokens": c.max_new_tokens, "critique_max_new_tokens": c.critique_max_new_tokens,
            "temperature": c.temperature, "seed": c.seed})
        if not revised.get("revisions"):
            raise ValueError("the critic stored no revision (each was empty or the same as the response), so there "
                             "is nothing to fine-tune on; try more max_new_tokens or another critic model")
        sft = self.stage("sft", "sft", {
            "model": c.model, "data": "corrections", "epochs": c.sft_epochs, "learning_rate": c.sft_learning_rate,
            "batch_size": c.sft_batch_size, "heldout_fraction": 0.0, "lora_rank": c.lora_rank, "seed": c.seed,
            "threads": c.threads, "save": True})
        policy = f"checkpoint:{sft['checkpoint_id']}"
        after = self.evaluate("refusal_after", policy, eval_ids, 1)
        result: dict[str, Any] = {
            "refusal_before": before, "refusal_after": after,
            "refusal_on_refuse_before": before[REFUSE]["rate"], "refusal_on_refuse_after": after[REFUSE]["rate"],
            "refusal_on_comply_before": before[COMPLY]["rate"], "refusal_on_comply_after": after[COMPLY]["rate"],
            "n_refuse": before[REFUSE]["n"], "n_comply": before[COMPLY]["n"],
            "train_prompts": len(train_ids), "eval_prompts": len(eval_ids), "revisions": revised["revisions"],
            "not_stored": revised.get("not_stored", 0), "sft_examples": sft.get("examples"), "policy": policy,
            "critic_model": revised.get("critic_model"), "rl_stage": c.rl_stage,
            **devices.device_record(device, precision),
        }
        if c.rl_stage != "none":
            result.update(self.rl_stage(policy, train_ids, eval_ids))
        result.update({"runs": dict(self.runs), "stage_seconds": dict(self.seconds),
                       "wall_seconds": round(time.monotonic() - started, 2)})
        self.ctx.progress(1.0, message="done")
        return result

    def rl_stage(self, sft_policy: str, train_ids: list[int], eval_ids: list[int]) -> dict:
        """AI preferences under the constitution on the SFT policy's own samples, then DPO on them, or a
        preference model of them and PPO on that."""
        c = self.config
        gen = self.stage("generate", "generate", {
            "model": sft_policy, "prompt_set": "", "prompt_ids": train_ids, "samples_per_prompt": 2,
            "max_new_tokens": c.max_new_tokens, "temperature": 0.8, "seed": c.seed})
        by_prompt: dict[int, list[int]] = {}
        for item in self.project.run_items(self.runs["generate"], "response"):
            by_prompt.setdefault(item["prompt_id"], []).append(item["id"])
        rng = random.Random(c.seed)
        with self.project.db.atomic():
            for prompt_id, ids in by_prompt.items():
                for a, b in combinations(ids, 2):
                    left, right = (a, b) if rng.random() < 0.5 else (b, a)
                    self.project.enqueue_pair(left, right, run_id=self.run_id,
                                              reason={"selection": "cai demo: AI preferences", "prompt_id": prompt_id})
        labels = self.stage("ai_labels", "ai_labels", {
            "method": "judge", "judge_model": c.critic_model or c.model, "queued_by_run": self.run_id,
            "max_pairs": max(1, gen.get("responses", 0)), "seed": c.seed})
        if c.rl_stage == "ppo":
            return self.ppo_stage(sft_policy, train_ids, eval_ids, labels)
        dpo = self.stage("dpo", "dpo", {
            "model": sft_policy, "label_sources": "ai", "beta": c.dpo_beta, "learning_rate": c.dpo_learning_rate,
            "epochs": c.dpo_epochs, "heldout_fraction": 0.0, "lora_rank": c.lora_rank, "seed": c.seed,
            "threads": c.threads, "save": True})
        policy = f"checkpoint:{dpo['checkpoint_id']}"
        after = self.evaluate("refusal_after_dpo", policy, eval_ids, 2)
        return {"refusal_after_dpo": after, "refusal_on_refuse_after_dpo": after[REFUSE]["rate"],
                "refusal_on_comply_after_dpo": after[COMPLY]["rate"], "ai_labels": labels.get("labelled"),
                "dpo_pairs": dpo.get("pairs"), "dpo_policy": policy}


    def ppo_stage(self, sft_policy: str, train_ids: list[int], eval_ids: list[int], labels: dict) -> dict:
        """RLAIF: a preference model of the AI labels, then PPO from the SFT policy on it (KL to the SFT policy)."""
        c = self.config
        reward = self.stage("reward_model", "text_reward_model", {
            "model": c.model, "label_sources": "ai", "heldout_fraction": 0.0, "seed": c.seed})
        ppo = self.stage("ppo", "ppo_text", {
            "model": sft_policy, "reward_model": reward["path"], "prompt_set": "", "prompt_ids": train_ids,
            "steps": c.ppo_steps, "beta": c.ppo_beta, "max_new_tokens": c.max_new_tokens, "lora_rank": c.lora_rank,
            "eval_every": 0, "seed": c.seed, "threads": c.threads, "save": True})
        policy = f"checkpoint:{ppo['checkpoint_id']}"
        after = self.evaluate("refusal_after_ppo", policy, eval_ids, 2)
        return {"refusal_after_ppo": after, "refusal_on_refuse_after_ppo": after[REFUSE]["rate"],
                "refusal_on_comply_after_ppo": after[COMPLY]["rate"], "ai_labels": labels.get("labelled"),
                "reward_model_pairs": reward.get("pairs"), "ppo_policy": policy}


def run_cai_demo(config: CAIDemoConfig, ctx: JobContext) -> dict:
    """Run the demo in the run's project; without one, in a temporary project removed at the end."""
    if ctx.project_path is not None:
        return _Demo(config, ctx, ctx.project(), ctx.run_id).run()
    folder = Path(tempfile.mkdtemp(prefix="rlhf-cai-demo-"))
    try:
        with Project.create(folder / "cai.rlhf", name="Constitutional AI demo") as project:
            run_id = project.create_run("cai_demo", cfg.to_dict(config), status="running")
            try:
                result = _Demo(config, ctx, project, run_id).run()
            except BaseException:
                project.finish_run(run_id, "failed", error="see the command's output")
                raise
            project.finish_run(run_id, "completed", result=result)
        result["note"] = "run without a project: the stages ran in a temporary project, removed at the end"
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)
