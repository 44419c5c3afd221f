"""DPO: direct preference optimisation on the project's text comparisons (Rafailov et al. 2023).

No reward model and no sampling: the policy pi is trained directly on pairs (x, y_w, y_l) of a
chosen and a rejected response to the same prompt, against a frozen reference pi_ref (the
starting model; with LoRA, the same model with its adapters switched off)::

    h      = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))
    loss   = -log sigmoid(beta * h)                                (per pair, then the batch mean)

``log pi(y|x)`` is the SUM of the response's token log-probs, the end-of-turn token included
(the response is scored as the assistant turn of the model's chat template). With
``label_smoothing`` e > 0 the labels are assumed flipped with probability e (conservative DPO,
"cDPO"): ``loss = -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)``.

Logged per step (step s is measured on its batch BEFORE that step's update, so step 0 is the
starting model: loss log 2, margins 0): train/loss, dpo/reward_chosen and dpo/reward_rejected
(the implicit rewards ``beta * (log pi - log pi_ref)``, batch means), dpo/margin (their
difference), dpo/accuracy (fraction of pairs whose chosen response has the higher implicit
reward), train/grad_norm, memory/peak_rss_mb, time/steps_per_second; dpo/heldout_accuracy and
dpo/heldout_loss on the held-out pairs at step 0, every ``eval_every`` steps and at the end.

Pairs: :func:`rlhf_core.text.pairs.text_pairs` (live comparisons of two live responses to
the same prompt, from the chosen label sources); ties and skips are left out (DPO needs a winner).
Long inputs: responses are cut on the right so that prompt + response fits ``max_length`` tokens
(a prompt longer than that keeps its last ``max_length - 1`` tokens). By default each prompt runs
once for both of its responses (``shared_prompt_forward``; see :func:`pair_logprobs`).

``device`` and ``precision`` (:mod:`rlhf_core.devices`): the policy trains in float32 on the device,
the frozen reference is cast to half on a GPU; with bf16/fp16 the forward passes run under autocast
(fp16 with a gradient scaler) and log-probs come from float32 logits. The result records where it ran.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from rlhf_core import devices, kinds
from rlhf_core.config import param
from rlhf_core.store import SOURCES
from rlhf_core.jobs import JobCancelled, JobContext
from rlhf_core.resume import random_state, resume_training, trainable_state
from rlhf_core.text.lora import AUTO as AUTO_LORA, LORA_RANK_HELP
from rlhf_core.text.model import eos_token_ids as find_eos, fit_max_length
from rlhf_core.text.pairs import split_pairs, text_pairs
from rlhf_core.text.rl_common import (
    backward,
    build_batch,
    completion_logprobs,
    job_device,
    load_policy,
    make_optimizer,
    optimizer_step,
    peak_rss_mb,
    policy_logprobs,
    render_chat_prompt,
    response_ids,
    policy_card,
    save_policy,
    sequence_logprob,
    set_threads,
)

CHECKPOINT_KIND = kinds.TEXT_POLICY


@dataclass
class DPOConfig:
    model: str = param("", "Causal language model folder to train ('' = the bundled SmolLM2-135M-Instruct).")
    label_sources: str = param("human,synthetic,ai", "Which label sources to use (comma-separated).",
                            subset_of=SOURCES)
    beta: float = param(0.1, "DPO temperature beta: how far the policy may move from the reference "
                             "(the implicit reward is beta * log(pi/pi_ref)).", min=0.0, min_inclusive=False)
    label_smoothing: float = param(0.0, "cDPO: assumed probability that a label is flipped (0: plain DPO).",
                                   min=0.0, max=0.49)
    learning_rate: float = param(1e-6, "AdamW learning rate (LoRA needs about 10x more).", min=0.0,
                                 min_inclusive=False)
    epochs: int = param(1, "Passes over the training pairs.", min=1)
    steps: int = param(0, "Optimisation steps (0: as many as the epochs give).", min=0)
    batch_size: int = param(4, "Pairs per step (each pair is two sequences).", min=1)
    max_length: int = param(512, "Longest prompt + response in tokens; responses are cut on the right.", min=8)
    heldout_fraction: float = param(0.1, "Pairs held out to measure accuracy.", min=0.0, max=0.5)
    eval_every: int = param(0, "Held-out evaluation every N steps (0: before and after training only).", min=0)
    max_grad_norm: float = param(1.0, "Clip the gradient norm to this (0: no clipping).", min=0.0)
    lora_rank: int = param(AUTO_LORA, LORA_RANK_HELP, min=-1, max=1024, default_text="auto")
    lora_alpha: int = param(0, "LoRA alpha (0: twice the rank).", min=0)
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass: less memory, but the "
                                         "backward took 1.5x as long here (SmolLM2-135M, one thread).")
    shared_prompt_forward: bool = param(True, "Run each prompt once for its chosen and rejected response (they "
                                        "attend to its cached keys and values); not with gradient checkpointing.",
                                        advanced=True)
    seed: int = param(0, "Random seed (held-out split, shuffling).", min=0)
    threads: int = param(1, "torch threads for this job.", min=1)
    save: bool = param(True, "Save the trained policy as a checkpoint of the run.")
    save_steps: int = param(0, "Save a resumable state every N steps (0: only when cancelled); a cancelled, "
                            "failed or killed run resumes from the last one.", min=0)
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def check(self) -> list[str]:
        return [p for p in [devices.spec_problem(self.device)] if p]


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    comparison_id: int | None = None


def preference_pairs(project, label_sources: str) -> list[PreferencePair]:
    """The project's decided text comparisons as (prompt, chosen, rejected); ties/skips left out."""
    out = []
    for p in text_pairs(project, label_sources):
        if p.target == 1.0:
            out.append(PreferencePair(p.prompt, p.left, p.right, p.comparison_id))
        elif p.target == 0.0:
            out.append(PreferencePair(p.prompt, p.right, p.left, p.comparison_id))
    return out


# ------------------------------------------------------------------------------- the math
def dpo_loss(chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
             ref_rejected_logp: torch.Tensor, beta: float, label_smoothing: float = 0.0):
    """(loss, per-pair losses, implicit chosen rewards, implicit rejected rewards); inputs ``[B]`` sums."""
    chosen_ratio = chosen_logp - ref_chosen_logp
    rejected_ratio = rejected_logp - ref_rejected_logp
    logits = beta * (chosen_ratio - rejected_ratio)
    per_pair = -(1.0 - label_smoothing) * F.logsigmoid(logits)
    if label_smoothing:
        per_pair = per_pair - label_smoothing * F.logsigmoid(-logits)
    return per_pair.mean(), per_pair, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def encode_pairs(tokenizer: Any, pairs: Sequence[PreferencePair], eos_token_id: int | None,
                 max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, completion ids) for the rows ``[chosen_1..chosen_B, rejected_1..rejected_B]``."""
    prompts, completions = [], []
    cache: dict[str, list[int]] = {}
    for side in ("chosen", "rejected"):
        for p in pairs:
            if p.prompt not in cache:
                ids = list(tokenizer(render_chat_prompt(tokenizer, p.prompt), add_special_tokens=False)["input_ids"])
                cache[p.prompt] = ids[-(max_length - 1):]
            prompt_ids = cache[p.prompt]
            comp = response_ids(tokenizer, getattr(p, side), eos_token_id)
            comp = comp[:max(1, max_length - len(prompt_ids))]
            prompts.append(prompt_ids)
            completions.append(comp)
    return prompts, completions


def pair_logprobs(setup, tokenizer, pairs: Sequence[PreferencePair], eos_token_id: int | None, pad_id: int,
                  max_length: int, *, with_grad: bool = True, shared_prompt: bool = False):
    """Sequence log-probs of chosen and rejected under the policy and the reference: 4 tensors ``[B]``.

    ``shared_prompt``: lay the rows out pair by pair and run each prompt once for its two responses
    (:func:`rlhf_core.text.rl_common.grouped_logprobs` with groups of 2; equal to the plain forward up to
    float rounding, about 20 % less work for prompts as long as the responses).
    """
    prompts, completions = encode_pairs(tokenizer, pairs, eos_token_id, max_length)
    n = len(pairs)
    device = setup.device
    if shared_prompt:
        order = [row for k in range(n) for row in (k, n + k)]  # chosen_1, rejected_1, chosen_2, ...
        batch = build_batch([prompts[i] for i in order], [completions[i] for i in order], pad_id, device=device)
        ref = sequence_logprob(policy_logprobs(setup, batch, 2, True, reference=True)[0], batch.completion_mask)
        with torch.set_grad_enabled(with_grad and torch.is_grad_enabled()):
            logp, _ = policy_logprobs(setup, batch, 2, True)
        seq = sequence_logprob(logp, batch.completion_mask)
        return seq[0::2], seq[1::2], ref[0::2], ref[1::2]
    batch = build_batch(prompts, completions, pad_id, device=device)
    ref = sequence_logprob(setup.reference_logprobs(batch), batch.completion_mask)
    with torch.set_grad_enabled(with_grad and torch.is_grad_enabled()), setup.autocast():
        logp, _ = completion_logprobs(setup.model, batch)
    seq = sequence_logprob(logp, batch.completion_mask)
    return seq[:n], seq[n:], ref[:n], ref[n:]


@torch.no_grad()
def evaluate_dpo_pairs(setup, tokenizer, pairs: Sequence[PreferencePair], *, beta: float, label_smoothing: float,
                       eos_token_id, pad_id: int, max_length: int, batch_size: int = 8,
                       shared_prompt: bool = False) -> tuple[float, float]:
    """(mean loss, accuracy) of the implicit reward on pairs (eval mode)."""
    if not pairs:
        return float("nan"), float("nan")
    model = setup.model
    was_training = model.training
    model.eval()
    losses, correct = [], 0
    try:
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            c, r, rc, rr = pair_logprobs(setup, tokenizer, chunk, eos_token_id, pad_id, max_length, with_grad=False,
                                         shared_prompt=shared_prompt)
            _, per_pair, rew_c, rew_r = dpo_loss(c, r, rc, rr, beta, label_smoothing)
            losses += per_pair.tolist()
            correct += int((rew_c > rew_r).sum())
    finally:
        model.train(was_training)
    return sum(losses) / len(losses), correct / len(pairs)


def dpo_step(setup, optimizer: torch.optim.Optimizer, tokenizer: Any, batch: Sequence[PreferencePair], *,
             beta: float, label_smoothing: float, eos_token_id: int | None, pad_id: int, max_length: int,
             max_grad_norm: float, shared_prompt: bool = False, scaler=None) -> dict[str, float]:
    """One optimisation step on a batch of pairs; the batch's metrics measured before the update
    (``scaler``: fp16's gradient scaler, :meth:`PolicySetup.grad_scaler`)."""
    c, r, rc, rr = pair_logprobs(setup, tokenizer, batch, eos_token_id, pad_id, max_length,
                                 shared_prompt=shared_prompt)
    loss, _, rew_c, rew_r = dpo_loss(c, r, rc, rr, beta, label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    backward(loss, optimizer, scaler)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    optimizer_step(optimizer, scaler)
    return {"train/loss": float(loss.detach()), "dpo/reward_chosen": float(rew_c.mean()),
            "dpo/reward_rejected": float(rew_r.mean()), "dpo/margin": float((rew_c - rew_r).mean()),
            "dpo/accuracy": float((rew_c > rew_r).float().mean()), "train/grad_norm": float(norm)}


# ------------------------------------------------------------------------------- the job
def train_dpo(config: DPOConfig, ctx: JobContext) -> dict:
    started = time.monotonic()
    set_threads(config.threads)
    device, precision = job_device(config)
    torch.manual_seed(config.seed)
    project = ctx.project()
    pairs = preference_pairs(project, config.label_sources)
    if not pairs:
        raise ValueError(
            "No usable text comparisons for DPO: it needs labelled pairs of two responses to the same prompt "
            f"with a winner (outcome left or right; label sources {config.label_sources!r}; ties and skips "
            "are left out). Generate responses and compare some first.")
    train, held = split_pairs(pairs, config.heldout_fraction, config.seed)
    per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.steps or per_epoch * config.epochs
    ctx.progress(0.0, message=f"Loading the policy ({len(train)} training pairs, {len(held)} held out)")
    setup = load_policy(config.model, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                        gradient_checkpointing=config.gradient_checkpointing, need_reference=True, ctx=ctx,
                        device=device, precision=precision, batch_shape=(2 * config.batch_size, config.max_length))
    model, tok = setup.model, setup.tokenizer
    eos_ids = find_eos(model, tok)
    eos_id = eos_ids[0] if eos_ids else tok.eos_token_id
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos_id
    params = setup.trainable_parameters()
    optimizer = make_optimizer(params, config.learning_rate)
    scaler = setup.grad_scaler()
    shared = config.shared_prompt_forward and not config.gradient_checkpointing
    max_length, cut = fit_max_length(model, config.max_length)  # GPT-2's n_positions is a hard limit
    if cut:
        ctx.log(cut)
    common = dict(beta=config.beta, label_smoothing=config.label_smoothing, eos_token_id=eos_id, pad_id=pad_id,
                  max_length=max_length, shared_prompt=shared)
    evals: list[dict] = []

    def evaluate(step: int) -> None:
        if not held:
            return
        loss, acc = evaluate_dpo_pairs(setup, tok, held, batch_size=max(config.batch_size, 4), **common)
        ctx.metrics(step, {"dpo/heldout_loss": loss, "dpo/heldout_accuracy": acc})
        evals.append({"step": step, "loss": loss, "accuracy": acc})

    rng = random.Random(config.seed)
    order: list[int] = []
    history: list[dict[str, float]] = []
    start = 0
    state = ctx.resume_from
    if state is not None:
        extra = resume_training(state, model, optimizer)
        order, history, evals = extra["order"], extra["history"], extra["evals"]
        rng.setstate(random_state(extra["rng"]))
        start = state.step + 1

    def save_state(done: int) -> None:
        if done >= 0:
            ctx.save_state(done, {"model": trainable_state(model), "optimizer": optimizer.state_dict()},
                           {"order": order, "history": history[:1] + history[-1:], "evals": evals[:1] + evals[-1:],
                            "rng": rng.getstate()})

    model.train()
    for step in range(start, total):
        if ctx.cancelled:
            save_state(step - 1)
            raise JobCancelled("cancelled")
        if step == 0 or (config.eval_every and step % config.eval_every == 0):
            evaluate(step)
        t0 = time.monotonic()
        if len(order) < config.batch_size:  # a new epoch (the remainder of the last one goes first)
            fresh = list(range(len(train)))
            rng.shuffle(fresh)
            order = fresh + order
        batch = [train[order.pop()] for _ in range(min(config.batch_size, len(train)))]
        metrics = dpo_step(setup, optimizer, tok, batch, max_grad_norm=config.max_grad_norm, scaler=scaler, **common)
        metrics.update({"memory/peak_rss_mb": peak_rss_mb(),
                        "time/steps_per_second": 1.0 / max(time.monotonic() - t0, 1e-9)})
        ctx.metrics(step, metrics)
        history.append(metrics)
        ctx.progress(step + 1, total, f"step {step + 1}/{total}: loss {metrics['train/loss']:.4f}, "
                                      f"margin {metrics['dpo/margin']:.4f}")
        if config.save_steps and (step + 1) % config.save_steps == 0 and step + 1 < total:
            save_state(step)
    if ctx.cancelled:
        save_state(total - 1)
        raise JobCancelled("cancelled")
    evaluate(total)
    ctx.raise_if_cancelled()
    result: dict[str, Any] = {
        "pairs": len(pairs), "train_pairs": len(train), "heldout_pairs": len(held), "steps": total,
        "loss_first": history[0]["train/loss"], "loss_last": history[-1]["train/loss"],
        "margin_first": history[0]["dpo/margin"], "margin_last": history[-1]["dpo/margin"],
        "accuracy_last": history[-1]["dpo/accuracy"],
        "heldout_accuracy_first": evals[0]["accuracy"] if evals else None,
        "heldout_accuracy_last": evals[-1]["accuracy"] if evals else None,
        "heldout_loss_last": evals[-1]["loss"] if evals else None,
        "model": setup.model_id, "lora": setup.lora, "lora_rank": setup.lora_rank,
        "wall_seconds": round(time.monotonic() - started, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
        **devices.device_record(device, precision),
    }
    if config.save and ctx.run_id is not None:
        folder = project.run_folder(ctx.run_id) / "policy"
        meta = {"algorithm": "dpo", "steps": total, "beta": config.beta, "pairs": len(pairs),
                "heldout_accuracy": result["heldout_accuracy_last"]}
        counts = {k: result[k] for k in ("pairs", "train_pairs", "heldout_pairs", "steps")}
        save_policy(setup, folder, meta, card=policy_card("dpo", config, setup, ctx, training_data=counts, result=result))
        result["checkpoint_id"] = project.add_checkpoint(ctx.run_id, CHECKPOINT_KIND, project.relpath(folder),
                                                         step=total, meta={**meta, "base_model": setup.model_id})
        result["path"] = str(folder)
    return result
