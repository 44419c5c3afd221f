"""Supervised fine-tuning (SFT) on the project's demonstrations: the first stage of the RLHF recipe.

Loss: next-token cross-entropy on the COMPLETION tokens only. Each example is laid out as
``[chat-template prompt][response <end-of-turn>]`` (:func:`rlhf_core.text.rl_common.build_batch`);
the prompt tokens are context, not targets, so the loss is

    L = - sum_{i, t} m_{i,t} log pi(y_{i,t} | x_i, y_{i,<t}) / sum_{i, t} m_{i,t}

with ``m`` the completion mask (the end-of-turn token included: the model also learns to stop).
The average is over all completion tokens of the batch (a long response weighs more than a short
one, as in TRL's ``SFTTrainer`` with ``completion_only_loss``).

Where the demonstrations come from (``data``, comma-separated):
- ``corrections``: responses a person rewrote (``source = "correction"``, written by
  :func:`rlhf_core.labelers.text_labels.add_correction`);
- ``demonstrations``: responses stored with ``source = "demonstration"`` or with
  ``meta.demonstration = true`` (a response written or marked as a demonstration);
- ``chosen``: the preferred response of every decided comparison of two responses to the same
  prompt (``label_sources`` picks whose labels count; ties and skips give nothing).
Only live (not deleted) responses of live prompts count; the same (prompt, response) pair is used
once even when several sources name it (a correction is also the chosen side of its comparisons).

A seeded share (``heldout_fraction``) is held out; ``sft/heldout_loss`` is the same loss on it, in
eval mode, at step 0 (before any update), every ``eval_every`` steps (0: after every epoch) and at
the end. The trained policy is saved as a Hugging Face folder (LoRA merged in) and registered as a
``text_policy`` checkpoint, which the PPO, GRPO and DPO jobs can start from (their ``model``).

``device`` and ``precision`` (:mod:`rlhf_core.devices`): the weights train in float32 on the device;
with bf16/fp16 the forward passes run under autocast (fp16 with a gradient scaler). The result
records where it ran (``device``, ``device_name``, ``dtype``, ``peak_memory_mb``).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch

from rlhf_core import devices, kinds
from rlhf_core.config import param
from rlhf_core.store import SOURCES
from rlhf_core.jobs import JobCancelled, JobContext
from rlhf_core.resume import resume_training, trainable_state
from rlhf_core.labelers.text_labels import CORRECTION_SOURCE
from rlhf_core.text.lora import AUTO as AUTO_LORA, LORA_RANK_HELP
from rlhf_core.text.model import eos_token_ids, fit_max_length
from rlhf_core.text.pairs import split_pairs, text_pairs
from rlhf_core.text.rl_common import (
    backward,
    build_batch,
    completion_logprobs,
    job_device,
    load_policy,
    masked_mean,
    optimizer_step,
    peak_rss_mb,
    render_chat_prompt,
    response_ids,
    policy_card,
    save_policy,
    set_threads,
    tokenize_prompts,
)

DATA_SOURCES = ("corrections", "demonstrations", "chosen")
DEMONSTRATION_SOURCE = "demonstration"
CHECKPOINT_KIND = kinds.TEXT_POLICY


@dataclass
class SFTExample:
    prompt: str
    response: str
    source: str  # corrections | demonstrations | chosen
    item_id: int | None = None


def parse_data(data: str) -> list[str]:
    names = [d.strip() for d in data.split(",") if d.strip()]
    bad = [d for d in names if d not in DATA_SOURCES]
    if bad:
        raise ValueError(f"unknown data source(s) {', '.join(bad)}; choose from {', '.join(DATA_SOURCES)}")
    return names


def sft_examples(project, data: str = "corrections,demonstrations,chosen",
                 label_sources: str = "human,synthetic,ai") -> list[SFTExample]:
    """The project's demonstrations for SFT, deduplicated on (prompt, response), in a stable order."""
    wanted = parse_data(data)
    out: list[SFTExample] = []
    seen: set[tuple[str, str]] = set()

    def add(prompt: str, response: str, source: str, item_id: int | None) -> None:
        if not response or not response.strip() or (prompt, response) in seen:
            return
        seen.add((prompt, response))
        out.append(SFTExample(prompt, response, source, item_id))

    base = ("SELECT i.id, p.text, i.text FROM items i JOIN prompts p ON p.id = i.prompt_id "
            "WHERE i.kind = 'response' AND i.deleted_at IS NULL AND p.deleted_at IS NULL AND i.text IS NOT NULL ")
    if "corrections" in wanted:
        for item_id, prompt, text in project.conn.execute(base + "AND i.source = ? ORDER BY i.id",
                                                          [CORRECTION_SOURCE]):
            add(prompt, text, "corrections", item_id)
    if "demonstrations" in wanted:
        rows = project.conn.execute(
            base + "AND (i.source = ? OR json_extract(i.meta_json, '$.demonstration') = 1) ORDER BY i.id",
            [DEMONSTRATION_SOURCE])
        for item_id, prompt, text in rows:
            add(prompt, text, "demonstrations", item_id)
    if "chosen" in wanted:
        for pair in text_pairs(project, label_sources):
            if pair.target == 1.0:
                add(pair.prompt, pair.left, "chosen", None)
            elif pair.target == 0.0:
                add(pair.prompt, pair.right, "chosen", None)
    return out


@dataclass
class SFTConfig:
    model: str = param("", "Model to fine-tune: a causal-LM folder ('' = the bundled SmolLM2-135M-Instruct).")
    data: str = param("corrections,demonstrations,chosen", "Which demonstrations to learn from "
                      "(comma-separated): corrections, demonstrations, chosen (preferred side of comparisons).")
    label_sources: str = param("human,synthetic,ai", "For 'chosen': whose comparisons count (comma-separated).",
                            subset_of=SOURCES)
    epochs: int = param(3, "Passes over the training examples (ignored when steps > 0).", min=1, max=10_000)
    steps: int = param(0, "Optimisation steps (0: use epochs).", min=0, max=1_000_000)
    batch_size: int = param(4, "Examples per optimisation step.", min=1, max=4096)
    learning_rate: float = param(1e-5, "AdamW learning rate (LoRA needs about 10x more).", min=0.0,
                                 min_inclusive=False)
    max_length: int = param(512, "Longest example in tokens (prompt + response); longer responses are cut.",
                            min=8, max=32_768)
    heldout_fraction: float = param(0.1, "Share of examples held out for sft/heldout_loss.", min=0.0, max=0.5)
    eval_every: int = param(0, "Held-out loss every N steps (0: after every epoch).", min=0)
    max_grad_norm: float = param(1.0, "Clip the gradient norm to this (0: no clipping).", min=0.0)
    lora_rank: int = param(AUTO_LORA, LORA_RANK_HELP, min=-1, max=1024, default_text="auto")
    lora_alpha: int = param(0, "LoRA alpha (0 = 2 x rank).", min=0)
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass (less memory).")
    seed: int = param(0, "Random seed (held-out split, shuffling).", min=0)
    threads: int = param(1, "torch threads.", min=0, max=256)
    save: bool = param(True, "Store the fine-tuned policy as a checkpoint of the project.")
    save_steps: int = param(0, "Save a resumable state every N steps (0: only when cancelled); a cancelled, "
                            "failed or killed run resumes from the last one.", min=0)
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def check(self) -> list[str]:
        problems = [p for p in [devices.spec_problem(self.device)] if p]
        try:
            names = parse_data(self.data)
        except ValueError as exc:
            return problems + [f"data: {exc}"]
        return problems + ([] if names else ["data: choose at least one of " + ", ".join(DATA_SOURCES)])


class _Encoder:
    """Prompt/response -> token ids (prompt with the chat template, response + end token)."""

    def __init__(self, tokenizer, model, max_length: int, device=None):
        self.tokenizer = tokenizer
        self.device = device
        eos = eos_token_ids(model, tokenizer)
        self.eos = eos[0] if eos else tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.max_length = max_length
        self._cache: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def encode(self, ex: SFTExample) -> tuple[list[int], list[int]]:
        key = (ex.prompt, ex.response)
        if key not in self._cache:
            prompt = tokenize_prompts(self.tokenizer, [render_chat_prompt(self.tokenizer, ex.prompt)])[0]
            prompt = prompt[-max(1, self.max_length // 2):] if len(prompt) >= self.max_length else prompt
            completion = response_ids(self.tokenizer, ex.response, self.eos)
            completion = completion[:max(1, self.max_length - len(prompt))]
            self._cache[key] = (prompt, completion)
        return self._cache[key]

    def batch(self, examples):
        pairs = [self.encode(e) for e in examples]
        return build_batch([p for p, _ in pairs], [c for _, c in pairs], self.pad, device=self.device)


def sft_loss(model, batch) -> tuple[torch.Tensor, int]:
    """Mean negative log-likelihood over the batch's completion tokens, and how many tokens that is."""
    logp, _ = completion_logprobs(model, batch)
    return -masked_mean(logp, batch.completion_mask), int(batch.completion_mask.sum())


@torch.no_grad()
def heldout_loss(model, encoder: _Encoder, examples, batch_size: int, precision: str = "float32") -> float:
    """Token-weighted mean NLL over ``examples`` (eval mode; forward under ``precision``'s autocast)."""
    if not examples:
        return float("nan")
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for i in range(0, len(examples), batch_size):
            with devices.autocast(encoder.device or "cpu", precision):
                loss, n = sft_loss(model, encoder.batch(examples[i:i + batch_size]))
            total += float(loss) * n
            tokens += n
    finally:
        model.train(was_training)
    return total / max(tokens, 1)


def train_sft(config: SFTConfig, ctx: JobContext) -> dict:
    set_threads(config.threads)
    device, precision = job_device(config)
    if ctx.project_path is None:
        raise ValueError("SFT learns from a project's demonstrations: run it with a project (--project).")
    project = ctx.project()
    examples = sft_examples(project, config.data, config.label_sources)
    if not examples:
        raise ValueError(f"No demonstrations for SFT (data {config.data!r}): correct some responses, mark "
                         "responses as demonstrations, or compare responses first.")
    counts = {name: sum(1 for e in examples if e.source == name) for name in DATA_SOURCES}
    train, held = split_pairs(examples, config.heldout_fraction, config.seed)
    ctx.progress(0.0, message=f"Loading the model ({len(train)} training examples, {len(held)} held out)")
    setup = load_policy(config.model, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                        gradient_checkpointing=config.gradient_checkpointing, need_reference=False, ctx=ctx,
                        device=device, precision=precision, batch_shape=(config.batch_size, config.max_length))
    model = setup.model
    max_length, cut = fit_max_length(model, config.max_length)  # GPT-2's n_positions is a hard limit
    if cut:
        ctx.log(cut)
    encoder = _Encoder(setup.tokenizer, model, max_length, device)
    params = setup.trainable_parameters()
    scaler = setup.grad_scaler()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.steps if config.steps > 0 else per_epoch * config.epochs
    rng = random.Random(config.seed)

    def batches():
        while True:
            order = list(range(len(train)))
            rng.shuffle(order)
            for b in range(per_epoch):
                yield [train[i] for i in order[b * config.batch_size:(b + 1) * config.batch_size]]

    started = time.monotonic()
    stream = batches()
    first_batch = next(stream)
    state = ctx.resume_from
    if state is None:  # step 0: before any update
        with torch.no_grad():
            model.eval()
            with setup.autocast():
                loss0, _ = sft_loss(model, encoder.batch(first_batch))
            model.train()
        held_first = heldout_loss(model, encoder, held, config.batch_size, precision)
        ctx.metrics(0, {"train/loss": float(loss0), "sft/heldout_loss": held_first if held else None,
                        "memory/peak_rss_mb": peak_rss_mb()})
        loss_first, loss_last, held_last, done = float(loss0), float(loss0), held_first, 0
    else:
        extra = resume_training(state, model, optimizer)
        loss_first, loss_last, held_first, held_last = (extra[k] for k in (
            "loss_first", "loss_last", "held_first", "held_last"))
        done = state.step
        for _ in range(done - 1):  # the batches the finished steps used, in order
            next(stream)

    def save_state(step: int) -> None:
        ctx.save_state(step, {"model": trainable_state(model), "optimizer": optimizer.state_dict()},
                       {"loss_first": loss_first, "loss_last": loss_last, "held_first": held_first,
                        "held_last": held_last})

    batch_examples = first_batch
    for step in range(done + 1, total + 1):
        if ctx.cancelled:
            save_state(step - 1)
            raise JobCancelled("cancelled")
        if step > 1:
            batch_examples = next(stream)
        model.train()
        with setup.autocast():
            loss, _ = sft_loss(model, encoder.batch(batch_examples))
        optimizer.zero_grad(set_to_none=True)
        backward(loss, optimizer, scaler)
        if config.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
        else:
            grad_norm = float(torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in params if p.grad is not None)))
        optimizer_step(optimizer, scaler)
        loss_last = float(loss.detach())
        elapsed = time.monotonic() - started
        metrics = {"train/loss": loss_last, "train/grad_norm": grad_norm, "memory/peak_rss_mb": peak_rss_mb(),
                   "time/steps_per_second": (step - done) / elapsed if elapsed > 0 else 0.0}
        due = (step % config.eval_every == 0) if config.eval_every else (step % per_epoch == 0)
        if held and (due or step == total):
            if ctx.cancelled:  # keep this step: its metrics without the held-out loss, and its state
                ctx.metrics(step, metrics)
                save_state(step)
                raise JobCancelled("cancelled")
            held_last = heldout_loss(model, encoder, held, config.batch_size, precision)
            metrics["sft/heldout_loss"] = held_last
        ctx.metrics(step, metrics)
        ctx.progress(step, total, f"step {step}/{total}, loss {loss_last:.3f}")
        if config.save_steps and step % config.save_steps == 0 and step < total:
            save_state(step)
    ctx.raise_if_cancelled()
    result = {"examples": len(examples), "by_source": counts, "train_examples": len(train),
              "heldout_examples": len(held), "steps": total, "loss_first": loss_first, "loss_last": loss_last,
              "heldout_loss_first": held_first if held else None, "heldout_loss_last": held_last if held else None,
              "wall_seconds": round(time.monotonic() - started, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
              "lora": setup.lora, "lora_rank": setup.lora_rank, **devices.device_record(device, precision)}
    if config.save:
        folder = project.run_folder(ctx.run_id) / "sft_policy"
        meta = {"job": "sft", "base_model": setup.model_id, "data": config.data, "steps": total,
                "heldout_loss": result["heldout_loss_last"]}
        counts = {k: result[k] for k in ("examples", "by_source", "train_examples", "heldout_examples", "steps")}
        save_policy(setup, folder, meta=meta, card=policy_card("sft", config, setup, ctx, training_data=counts,
                                                               result=result))
        cid = project.add_checkpoint(ctx.run_id, CHECKPOINT_KIND, folder, step=total, meta=meta)
        result.update({"checkpoint_id": cid, "path": str(folder)})
    return result
