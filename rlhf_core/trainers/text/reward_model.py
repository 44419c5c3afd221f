"""The ``text_reward_model`` job: trains :class:`~rlhf_core.text.reward_model.TextRewardModel` on the
project's comparisons of two responses to the same prompt.

Training pairs (:func:`~rlhf_core.text.pairs.text_pairs`): every live comparison whose two items are
responses to the SAME prompt, from the chosen label sources; the outcome becomes P(left better)
(``tie`` -> 0.5, ``both_bad``/``skip`` left out). The loss is :func:`bradley_terry_loss` on
(r(x, y_left), r(x, y_right)), i.e. ``-log sigmoid(r_w - r_l)`` for a decided pair. After training
the project's responses are scored for the reward-vs-length plot (:mod:`rlhf_core.analysis.length_bias`).

Held-out gold (``gold_fraction`` > 0; Gao et al. 2022, Coste et al. 2023): the pairs are first split
into two disjoint parts (:func:`~rlhf_core.text.pairs.split_for_gold`, every label of the same two
responses on one side), and after the reward model (the proxy) a second one, the GOLD model, is
trained the same way on the other part only (its head seeded with ``seed + 1``; keys
``reward_model/gold_*``). Which comparisons went where (each side's training and held-out ids) is
written to ``pair_split.json`` in the run's folder. The gold model is saved as a second
``text_reward_model`` checkpoint of the run, named "held-out gold RM, run N" and registered before the
proxy's, so ``run:N`` and "the newest reward model" still mean the proxy. Give it to ``ppo_text`` or
``grpo`` as ``gold_reward_model``: the over-optimisation view, the reward-hacking alert and a win rate
judged by it then work on the project's own labels.

Device and precision (:mod:`rlhf_core.devices`): the model trains on ``device`` with float32 weights;
its forward passes run under autocast (``bf16``, or ``fp16`` with a gradient scaler) and the loss is
taken in float32. The saved folders are float32 whatever the precision. The result records where it
ran (``device``, ``device_name``, ``dtype``, ``peak_memory_mb``, ``peak_memory_kind``).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch

from rlhf_core import devices
from rlhf_core.config import RENAMED_FIELDS, param, to_dict
from rlhf_core.jobs import JobCancelled, JobContext
from rlhf_core.resume import resume_training, trainable_state
from rlhf_core.rewards.bradley_terry import bradley_terry_loss, pair_accuracy
from rlhf_core.store import SOURCES, artefacts
from rlhf_core.store.model_card import final_metrics
from rlhf_core.analysis import length_bias
from rlhf_core.text.model import fit_max_length
from rlhf_core.text.pairs import TextPair, split_for_gold, split_pairs, text_pairs
from rlhf_core.text.reward_model import (
    CHECKPOINT_KIND,
    TextRewardModel,
    format_pair_text,
    load_base_reward_model,
    reward_model_card,
    save_text_reward_model,
)
from rlhf_core.text.rl_common import activation_memory_mb, backward, job_device, make_optimizer, optimizer_step


def pair_loss(model: TextRewardModel, batch: Sequence[TextPair], tokenizer: Any, *,
              center_rewards_coefficient: float = 0.0):
    """(loss, score_left, score_right, mean_tokens) for a batch of pairs.

    The 2B texts (lefts, then rights) are scored together by :meth:`TextRewardModel.score_ids`, in
    groups of similar length rather than one batch padded to the longest text.

    ``center_rewards_coefficient`` c > 0 adds ``c * mean((r_left + r_right)^2)`` (Eisenstein et al.
    2023, eq. 2; TRL's ``RewardConfig.center_rewards_coefficient``), which pulls the rewards towards
    mean zero; the Bradley-Terry term alone only sees differences of rewards.
    """
    texts = [format_pair_text(tokenizer, p.prompt, p.left) for p in batch] + \
            [format_pair_text(tokenizer, p.prompt, p.right) for p in batch]
    rows = model.tokenize(texts, tokenizer)
    with model.autocast():
        scores = model.score_ids(rows, tokenizer.pad_token_id)
    scores = scores.float()  # the loss in float32 under any autocast
    n = len(batch)
    left, right = scores[:n], scores[n:]
    target = torch.tensor([p.target for p in batch], dtype=scores.dtype, device=scores.device)
    loss = bradley_terry_loss(left, right, target)
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((left + right) ** 2).mean()
    return loss, left, right, sum(len(r) for r in rows) / len(rows)


def set_gradient_checkpointing(model: TextRewardModel, enabled: bool) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them (training only)."""
    backbone = model.backbone
    if enabled:
        enable = getattr(backbone, "activation_checkpointing_enable", None) or backbone.gradient_checkpointing_enable
        enable()
    else:
        disable = getattr(backbone, "activation_checkpointing_disable", None) or backbone.gradient_checkpointing_disable
        disable()


def train_step(model: TextRewardModel, optimiser: torch.optim.Optimizer, batch: Sequence[TextPair],
               tokenizer: Any, *, center_rewards_coefficient: float = 0.0,
               scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """One optimisation step on a batch of pairs (what the job does per step): the step's metrics.
    ``scaler``: fp16's gradient scaler (:func:`rlhf_core.devices.grad_scaler`), else None."""
    loss, left, right, mean_len = pair_loss(model, batch, tokenizer,
                                            center_rewards_coefficient=center_rewards_coefficient)
    optimiser.zero_grad(set_to_none=True)
    backward(loss, optimiser, scaler)
    optimizer_step(optimiser, scaler)
    target = torch.tensor([p.target for p in batch])
    return {"reward_model/loss": float(loss.detach()),
            "reward_model/train_accuracy": pair_accuracy(left.detach().cpu(), right.detach().cpu(), target),
            "reward_model/mean_length": mean_len}


@torch.inference_mode()
def evaluate_reward_pairs(model: TextRewardModel, pairs: Sequence[TextPair], tokenizer: Any,
                   batch_size: int = 8) -> tuple[float, float]:
    """(mean BT loss, accuracy on decided pairs) in eval mode."""
    if not pairs:
        return float("nan"), float("nan")
    was_training = model.training
    model.eval()
    try:
        lefts, rights, losses = [], [], []
        for i in range(0, len(pairs), batch_size):
            batch = pairs[i:i + batch_size]
            loss, left, right, _ = pair_loss(model, batch, tokenizer)
            losses.append(float(loss) * len(batch))
            lefts.append(left.cpu())
            rights.append(right.cpu())
    finally:
        model.train(was_training)
    target = torch.tensor([p.target for p in pairs])
    return sum(losses) / len(pairs), pair_accuracy(torch.cat(lefts), torch.cat(rights), target)


# ------------------------------------------------------------------------------- the job
@dataclass
class TextRewardModelConfig:
    RENAMED_FROM = RENAMED_FIELDS["text_reward_model"]  # old field names still read (not a field: no annotation)
    model: str = param("", "Causal language model folder to start from ('' = the bundled SmolLM2-135M-Instruct), "
                           "or a saved text reward model folder to train further.")
    label_sources: str = param("human,synthetic,ai", "Which label sources to use (comma-separated).",
                            subset_of=SOURCES)
    epochs: int = param(2, "Passes over the training pairs.", min=1)
    batch_size: int = param(4, "Pairs per optimisation step (each pair is two sequences).", min=1)
    learning_rate: float = param(1e-5, "AdamW learning rate (whole backbone and head are trained).", min=0.0,
                                 min_inclusive=False)
    max_length: int = param(512, "Longest input in tokens (template + prompt + response); longer ones are "
                                 "cut on the right.", min=8)
    heldout_fraction: float = param(0.1, "Pairs held out to measure accuracy.", min=0.0, max=0.5)
    seed: int = param(0, "Random seed (head initialisation, held-out split, shuffling).", min=0)
    score_responses: int = param(400, "After training, score up to this many of the project's responses "
                                 "(newest first) for the reward-vs-length plot (0 = none).", min=0)
    center_rewards_coefficient: float = param(0.0, "Adds this times mean((r_left + r_right)^2) to the loss, "
                                                   "pulling rewards towards mean zero (as TRL's; 0.01 is usual, 0 = "
                                                   "off). The logged training loss includes it.", min=0.0,
                                              advanced=True)
    gradient_checkpointing: bool = param(False, "Recompute activations during the backward pass: less memory, "
                                                "slower steps on a CPU.", advanced=True)
    save_steps: int = param(0, "Save a resumable state every N steps (0: only when cancelled); a cancelled, "
                            "failed or killed run resumes from the last one.", min=0, advanced=True)
    gold_fraction: float = param(0.0, "Also train a held-out GOLD reward model on this fraction of the labelled "
                                      "pairs, which the reward model never sees (the split is stored with the run); "
                                      "give it to ppo_text or grpo as gold_reward_model to watch over-optimisation on "
                                      "your own labels (0 = off; 0.5 splits them evenly).", min=0.0, max=0.9)
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def check(self) -> list[str]:
        problem = devices.spec_problem(self.device)
        return [problem] if problem else []


SPLIT_FILE = "pair_split.json"  #: in the run's folder: which comparisons trained the proxy and the gold model
GOLD_FOLDER = "gold_reward_model"
#: the reward model's training keys -> the held-out gold model's
GOLD_KEYS = {"reward_model/loss": "reward_model/gold_loss",
             "reward_model/train_accuracy": "reward_model/gold_train_accuracy",
             "reward_model/heldout_accuracy": "reward_model/gold_heldout_accuracy"}


@dataclass
class _Phase:
    """One model the job trains: the reward model ("proxy") or the held-out gold one ("gold")."""

    name: str
    train: list
    held: list
    first_step: int  # the job's steps before this phase's first one (the gold phase follows the proxy's)
    steps: int
    seed: int

    def keys(self, metrics: dict[str, float]) -> dict[str, float]:
        if self.name != "gold":
            return metrics
        return {GOLD_KEYS[k]: v for k, v in metrics.items() if k in GOLD_KEYS}


def _fit(phase: _Phase, model: TextRewardModel, tokenizer: Any, optimiser: torch.optim.Optimizer,
         config: TextRewardModelConfig, ctx: JobContext, *, done: int, last_loss: float, heldout_acc: float,
         job_steps: int, extra: dict) -> tuple[int, float, float]:
    """Train ``model`` on ``phase.train`` for ``config.epochs`` epochs, its held-out accuracy after each.

    Steps ``first_step + 1 ..``; those up to ``done`` (behind a resumed run) are replayed through the
    shuffles, not trained again. A resumable state (with ``extra``) is saved when cancelled and every
    ``save_steps``. Returns (the job's step, the last batch loss, the held-out accuracy)."""
    rng = random.Random(phase.seed)
    scaler = devices.grad_scaler(next(model.parameters()).device, model.precision)
    per_epoch = math.ceil(len(phase.train) / config.batch_size)
    step = phase.first_step
    what = "gold model: " if phase.name == "gold" else ""

    def save_state() -> None:
        ctx.save_state(step, {"model": trainable_state(model), "optimizer": optimiser.state_dict()},
                       {"last_loss": last_loss, "heldout_acc": heldout_acc, "phase": phase.name, **extra})

    for epoch in range(config.epochs):
        order = list(range(len(phase.train)))
        rng.shuffle(order)
        for b in range(per_epoch):
            if step < done:
                step += 1
                continue
            if ctx.cancelled:
                save_state()
                raise JobCancelled("cancelled")
            batch = [phase.train[i] for i in order[b * config.batch_size:(b + 1) * config.batch_size]]
            metrics = train_step(model, optimiser, batch, tokenizer,
                                 center_rewards_coefficient=config.center_rewards_coefficient, scaler=scaler)
            step += 1
            last_loss = metrics["reward_model/loss"]
            ctx.metrics(step, phase.keys(metrics))
            ctx.progress(0.95 * (step - phase.first_step) / phase.steps,
                         message=f"{what}epoch {epoch + 1}/{config.epochs}, loss {last_loss:.3f}")
            if config.save_steps and step % config.save_steps == 0 and b < per_epoch - 1:
                save_state()  # not at an epoch's end: its held-out evaluation comes first
        if step <= done:  # this epoch ended before the saved state, its evaluation with it
            continue
        if phase.held:
            _, heldout_acc = evaluate_reward_pairs(model, phase.held, tokenizer, config.batch_size)
            ctx.metrics(step, phase.keys({"reward_model/heldout_accuracy": heldout_acc}))
        if config.save_steps and step < job_steps:
            save_state()
    if ctx.cancelled:
        save_state()
        raise JobCancelled("cancelled")
    return step, last_loss, heldout_acc


def _start_model(config: TextRewardModelConfig, phase: _Phase, ctx: JobContext, device, precision: str):
    """(model, tokenizer, model id, optimiser, done, last loss, held-out accuracy) for ``phase``: a fresh
    model (head seeded with the phase's seed), or the resumed state's when the run stopped in this phase;
    on ``device`` (refused in words when a GPU's free memory is too small for it)."""
    model, tokenizer, model_id = load_base_reward_model(config.model, max_length=config.max_length,
                                                        seed=phase.seed, ctx=ctx)
    if model.max_length < config.max_length:  # cut to the position limit (GPT-2's n_positions)
        ctx.log(fit_max_length(model.backbone, config.max_length)[1])
    ctx.raise_if_cancelled()
    devices.check_fits(device, reward_model_memory_mb(model, config, precision), "Training this reward model")
    model.place(device, precision)
    set_gradient_checkpointing(model, config.gradient_checkpointing)
    model.train()
    optimiser = make_optimizer(model.parameters(), config.learning_rate)
    state = ctx.resume_from
    if state is not None and state.extra.get("phase", "proxy") == phase.name:
        extra = resume_training(state, model, optimiser)
        return model, tokenizer, model_id, optimiser, state.step, extra["last_loss"], extra["heldout_acc"]
    return model, tokenizer, model_id, optimiser, 0, float("nan"), float("nan")


def reward_model_memory_mb(model: TextRewardModel, config: TextRewardModelConfig, precision: str) -> float:
    """A rough estimate of the memory training ``model`` needs (:func:`rlhf_core.devices.training_memory_mb`):
    every weight trained, plus the activations of one batch of ``2 * batch_size`` texts of up to
    ``max_length`` tokens (:func:`~rlhf_core.text.rl_common.activation_memory_mb`, without logits: the
    score head has one output)."""
    params = sum(p.numel() for p in model.parameters())
    cfg = model.backbone.config
    shape = SimpleNamespace(hidden_size=cfg.hidden_size, num_hidden_layers=getattr(cfg, "num_hidden_layers", 1),
                            intermediate_size=getattr(cfg, "intermediate_size", 0), vocab_size=0)
    activations = activation_memory_mb(shape, 2 * config.batch_size, config.max_length, precision,
                                       config.gradient_checkpointing)
    return devices.training_memory_mb(params, params, precision, frozen_copies=0, activations_mb=activations)


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def _write_split(path: Path, config: TextRewardModelConfig, proxy: _Phase, gold: _Phase) -> Path:
    """``pair_split.json``: the comparison ids each model trained and was tested on (atomic write)."""
    def ids(pairs: Sequence[TextPair]) -> list:
        return [p.comparison_id for p in pairs]

    data = {"what": "Comparison ids of the text_reward_model run's two models: the reward model (proxy) and the "
                    "held-out gold model never share a comparison, nor two labels of the same two responses.",
            "seed": config.seed, "gold_fraction": config.gold_fraction, "heldout_fraction": config.heldout_fraction,
            "label_sources": config.label_sources,
            "proxy": {"train": ids(proxy.train), "heldout": ids(proxy.held)},
            "gold": {"train": ids(gold.train), "heldout": ids(gold.held)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def train_text_reward_model(config: TextRewardModelConfig, ctx: JobContext) -> dict:
    device, precision = job_device(config)  # DeviceError (a sentence) before anything is written
    project = ctx.project()
    pairs = text_pairs(project, config.label_sources)
    if not pairs:
        raise ValueError(
            "No usable text comparisons: the reward model needs labelled pairs of two responses to the "
            f"same prompt (outcome left, right or tie; label sources {config.label_sources!r}). "
            "Generate responses and compare some first.")
    proxy_pairs, gold_pairs = (split_for_gold(pairs, config.gold_fraction, config.seed) if config.gold_fraction > 0
                               else (pairs, []))

    def steps(n: int) -> int:
        return math.ceil(n / config.batch_size) * config.epochs

    train, held = split_pairs(proxy_pairs, config.heldout_fraction, config.seed)
    proxy = _Phase("proxy", train, held, 0, steps(len(train)), config.seed)
    gold = None
    if gold_pairs:
        gold_train, gold_held = split_pairs(gold_pairs, config.heldout_fraction, config.seed)
        gold = _Phase("gold", gold_train, gold_held, proxy.steps, steps(len(gold_train)), config.seed + 1)
    job_steps = proxy.steps + (gold.steps if gold is not None else 0)
    run_folder = project.run_folder(ctx.run_id)
    state = ctx.resume_from
    if gold is not None:
        _write_split(run_folder / SPLIT_FILE, config, proxy, gold)
    if state is not None and state.extra.get("phase") == "gold":
        result = dict(state.extra["proxy"])  # trained, scored and saved before the gold model's state
    else:
        with ctx.stage(0.0, proxy.steps / job_steps):
            result = _train_proxy(config, ctx, proxy, gold, job_steps, device, precision)
    result["pairs"] = len(proxy_pairs)
    if gold is None:
        cid = project.add_checkpoint(ctx.run_id, CHECKPOINT_KIND, result["path"], step=proxy.steps,
                                     meta={"base_model": result["base_model"], "pairs": len(proxy_pairs),
                                           "heldout_accuracy": result["heldout_accuracy"]})
        ctx.progress(1.0, message="done")
        return {**result, "checkpoint_id": cid, **devices.device_record(device, precision)}
    with ctx.stage(proxy.steps / job_steps, 1.0):
        gold_result = _train_gold(config, ctx, gold, job_steps, result, device, precision)
    # the gold model first: the proxy stays the run's newest reward model (run:N, "the latest")
    gold_meta = {"base_model": gold_result["base_model"], "pairs": len(gold_pairs), "role": "gold",
                 "split": SPLIT_FILE, "heldout_accuracy": gold_result["gold_heldout_accuracy"]}
    gold_cid = project.add_checkpoint(ctx.run_id, CHECKPOINT_KIND, gold_result["gold_path"], step=job_steps,
                                      meta=gold_meta)
    try:
        artefacts.rename_artefact(project, gold_cid, f"held-out gold RM, run {ctx.run_id}")
    except artefacts.ArtefactError:  # the name is taken (a renamed artefact): the default name stays
        pass
    cid = project.add_checkpoint(ctx.run_id, CHECKPOINT_KIND, result["path"], step=proxy.steps,
                                 meta={"base_model": result["base_model"], "pairs": len(proxy_pairs), "role": "proxy",
                                       "split": SPLIT_FILE, "heldout_accuracy": result["heldout_accuracy"]})
    ctx.progress(1.0, message="done")
    return {**result, **{k: v for k, v in gold_result.items() if k != "base_model"}, "all_pairs": len(pairs),
            "gold_fraction": config.gold_fraction, "split_path": str(run_folder / SPLIT_FILE),
            "checkpoint_id": cid, "gold_checkpoint_id": gold_cid, **devices.device_record(device, precision)}


def _train_proxy(config: TextRewardModelConfig, ctx: JobContext, proxy: _Phase, gold: _Phase | None,
                 job_steps: int, device, precision: str) -> dict:
    """Train, evaluate, score and save the reward model; its result (with ``path`` and ``base_model``)."""
    project = ctx.project()
    train, held = proxy.train, proxy.held
    started = time.monotonic()
    ctx.progress(0.0, message=f"Loading the model ({len(train)} training pairs, {len(held)} held out)")
    model, tokenizer, model_id, optimiser, done, last_loss, heldout_acc = _start_model(config, proxy, ctx, device,
                                                                                       precision)
    step, last_loss, heldout_acc = _fit(proxy, model, tokenizer, optimiser, config, ctx, done=done,
                                        last_loss=last_loss, heldout_acc=heldout_acc, job_steps=job_steps, extra={})
    train_loss, train_acc = evaluate_reward_pairs(model, train, tokenizer, config.batch_size)
    ctx.metrics(step, {"reward_model/final_train_loss": train_loss, "reward_model/final_train_accuracy": train_acc})
    result = {"pairs": len(train) + len(held), "train_pairs": len(train), "heldout_pairs": len(held),
              "heldout_accuracy": _none_if_nan(heldout_acc), "train_accuracy": _none_if_nan(train_acc),
              "train_loss": train_loss, "steps": step, "train_seconds": round(time.monotonic() - started, 2)}
    ctx.progress(0.96, message="Scoring the project's responses (reward vs length)")
    # responses the reward model never trained on: its held-out pairs' and the gold model's
    unseen = list(held) + (list(gold.train) + list(gold.held) if gold is not None else [])
    held_texts = {(p.prompt, t) for p in unseen for t in (p.left, p.right)}
    train_texts = {(p.prompt, t) for p in train for t in (p.left, p.right)}
    scores = length_bias.score_project_responses(model, tokenizer, project, limit=config.score_responses,
                                                 heldout_texts=held_texts - train_texts,
                                                 batch_size=config.batch_size,
                                                 on_batch=lambda done, total: ctx.raise_if_cancelled())
    bias = length_bias.length_bias(scores)
    ctx.sample(length_bias.SAMPLE_KIND, {"scores": scores, **bias}, step=step)
    if bias["pearson_r"] is not None:
        ctx.metrics(step, {"reward_model/length_correlation": bias["pearson_r"]})
    result["length_correlation"] = bias["pearson_r"]
    result["scored_responses"] = bias["n"]
    folder = project.run_folder(ctx.run_id) / "text_reward_model"
    meta = {"base_model": model_id, **result}
    if gold is not None:
        meta.update(role="proxy", split=SPLIT_FILE)
    counts = ("pairs", "train_pairs", "heldout_pairs", "scored_responses", "steps")
    card = reward_model_card(meta, job="text_reward_model", config=to_dict(config), run_id=ctx.run_id,
                             project=project.name, training_data={k: result[k] for k in counts},
                             metrics=final_metrics(result, exclude=counts))
    save_text_reward_model(model, folder, meta=meta, card=card)
    return {**result, "base_model": model_id, "path": str(folder)}


def _train_gold(config: TextRewardModelConfig, ctx: JobContext, gold: _Phase, job_steps: int,
                proxy_result: dict, device, precision: str) -> dict:
    """Train, evaluate and save the held-out gold model (``gold_*`` result keys, ``gold_path``)."""
    project = ctx.project()
    ctx.progress(0.0, message=f"Loading the held-out gold model ({len(gold.train)} training pairs, "
                              f"{len(gold.held)} held out)")
    model, tokenizer, model_id, optimiser, done, last_loss, heldout_acc = _start_model(config, gold, ctx, device,
                                                                                       precision)
    _, last_loss, heldout_acc = _fit(gold, model, tokenizer, optimiser, config, ctx, done=done, last_loss=last_loss,
                                     heldout_acc=heldout_acc, job_steps=job_steps, extra={"proxy": proxy_result})
    train_loss, train_acc = evaluate_reward_pairs(model, gold.train, tokenizer, config.batch_size)
    result = {"gold_pairs": len(gold.train) + len(gold.held), "gold_train_pairs": len(gold.train),
              "gold_heldout_pairs": len(gold.held), "gold_heldout_accuracy": _none_if_nan(heldout_acc),
              "gold_train_accuracy": _none_if_nan(train_acc), "gold_train_loss": train_loss, "gold_steps": gold.steps}
    ctx.progress(0.97, message="Saving the held-out gold model")
    folder = project.run_folder(ctx.run_id) / GOLD_FOLDER
    own = {"pairs": result["gold_pairs"], "train_pairs": len(gold.train), "heldout_pairs": len(gold.held),
           "steps": gold.steps}
    meta = {"base_model": model_id, "role": "gold", "split": SPLIT_FILE, **own,
            "heldout_accuracy": result["gold_heldout_accuracy"], "train_accuracy": result["gold_train_accuracy"],
            "train_loss": train_loss}
    card = reward_model_card(
        meta, job="text_reward_model", config=to_dict(config), run_id=ctx.run_id, project=project.name,
        title=f"Held-out gold reward model (run {ctx.run_id})", training_data=own,
        metrics={k: meta[k] for k in ("heldout_accuracy", "train_accuracy", "train_loss")
                 if isinstance(meta[k], (int, float))},
        notes=[f"Trained on {own['pairs']} labelled pairs that the run's reward model never saw (their comparison "
               f"ids are in the run's {SPLIT_FILE}): a held-out gold model to measure over-optimisation of that "
               "reward model (Gao et al. 2022; Coste et al. 2023)."])
    save_text_reward_model(model, folder, meta=meta, card=card)
    return {**result, "base_model": model_id, "gold_path": str(folder)}
