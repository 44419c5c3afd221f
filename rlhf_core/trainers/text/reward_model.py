"""The ``text_reward_model`` job: trains :class:`~rlhf_core.text.reward_model.TextRewardModel` on the
project's comparisons of two responses to the same prompt.

Training pairs (:func:`~rlhf_core.text.pairs.text_pairs`): every live comparison whose two items are
responses to the SAME prompt, from the chosen label sources; the outcome becomes P(left better)
(``tie`` -> 0.5, ``both_bad``/``skip`` left out). The loss is :func:`bradley_terry_loss` on
(r(x, y_left), r(x, y_right)), i.e. ``-log sigmoid(r_w - r_l)`` for a decided pair. After training
the project's responses are scored for the reward-vs-length plot (:mod:`rlhf_core.analysis.length_bias`).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from rlhf_core.config import RENAMED_FIELDS, param
from rlhf_core.jobs import JobCancelled, JobContext
from rlhf_core.resume import resume_training, trainable_state
from rlhf_core.rewards.bradley_terry import bradley_terry_loss, pair_accuracy
from rlhf_core.store import SOURCES
from rlhf_core.analysis import length_bias
from rlhf_core.text.pairs import TextPair, split_pairs, text_pairs
from rlhf_core.text.reward_model import (
    CHECKPOINT_KIND,
    TextRewardModel,
    format_pair_text,
    load_base_reward_model,
    save_text_reward_model,
)
from rlhf_core.text.rl_common import make_optimizer


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
    scores = model.score_ids(rows, tokenizer.pad_token_id)
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
               tokenizer: Any, *, center_rewards_coefficient: float = 0.0) -> dict[str, float]:
    """One optimisation step on a batch of pairs (what the job does per step): the step's metrics."""
    loss, left, right, mean_len = pair_loss(model, batch, tokenizer,
                                            center_rewards_coefficient=center_rewards_coefficient)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    target = torch.tensor([p.target for p in batch])
    return {"reward_model/loss": float(loss.detach()),
            "reward_model/train_accuracy": pair_accuracy(left.detach(), right.detach(), target),
            "reward_model/mean_length": mean_len}


@torch.no_grad()
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
            lefts.append(left)
            rights.append(right)
    finally:
        model.train(was_training)
    target = torch.tensor([p.target for p in pairs])
    return sum(losses) / len(pairs), pair_accuracy(torch.cat(lefts), torch.cat(rights), target)


# ------------------------------------------------------------------------------- the job
@dataclass
class TextRewardModelConfig:
    RENAMED_FROM = RENAMED_FIELDS["text_reward_model"]  # old field names still read (not a field: no annotation)
    model: str = param("", "Causal language model folder to start from ('' = the bundled SmolLM2-135M-Instruct).")
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


def train_text_reward_model(config: TextRewardModelConfig, ctx: JobContext) -> dict:
    project = ctx.project()
    pairs = text_pairs(project, config.label_sources)
    if not pairs:
        raise ValueError(
            "No usable text comparisons: the reward model needs labelled pairs of two responses to the "
            f"same prompt (outcome left, right or tie; label sources {config.label_sources!r}). "
            "Generate responses and compare some first.")
    train, held = split_pairs(pairs, config.heldout_fraction, config.seed)
    ctx.progress(0.0, message=f"Loading the model ({len(train)} training pairs, {len(held)} held out)")
    model, tokenizer, model_id = load_base_reward_model(config.model, max_length=config.max_length,
                                                        seed=config.seed, ctx=ctx)
    ctx.raise_if_cancelled()
    set_gradient_checkpointing(model, config.gradient_checkpointing)
    model.train()
    optimiser = make_optimizer(model.parameters(), config.learning_rate)
    rng = random.Random(config.seed)
    per_epoch = math.ceil(len(train) / config.batch_size)
    total = per_epoch * config.epochs
    step = 0
    started = time.monotonic()
    last_loss = float("nan")
    heldout_acc = float("nan")
    done = 0  # steps a resumed run has behind it: replayed through the shuffles, not trained again
    state = ctx.resume_from
    if state is not None:
        extra = resume_training(state, model, optimiser)
        done, last_loss, heldout_acc = state.step, extra["last_loss"], extra["heldout_acc"]

    def save_state() -> None:
        ctx.save_state(step, {"model": trainable_state(model), "optimizer": optimiser.state_dict()},
                       {"last_loss": last_loss, "heldout_acc": heldout_acc})

    for epoch in range(config.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for b in range(per_epoch):
            if step < done:
                step += 1
                continue
            if ctx.cancelled:
                save_state()
                raise JobCancelled("cancelled")
            batch = [train[i] for i in order[b * config.batch_size:(b + 1) * config.batch_size]]
            metrics = train_step(model, optimiser, batch, tokenizer, center_rewards_coefficient=config.center_rewards_coefficient)
            step += 1
            last_loss = metrics["reward_model/loss"]
            ctx.metrics(step, metrics)
            ctx.progress(0.95 * step / total, message=f"epoch {epoch + 1}/{config.epochs}, loss {last_loss:.3f}")
            if config.save_steps and step % config.save_steps == 0 and b < per_epoch - 1:
                save_state()  # not at an epoch's end: its held-out evaluation comes first
        if step <= done:  # this epoch ended before the saved state, its evaluation with it
            continue
        if held:
            _, heldout_acc = evaluate_reward_pairs(model, held, tokenizer, config.batch_size)
            ctx.metrics(step, {"reward_model/heldout_accuracy": heldout_acc})
        if config.save_steps and step < total:
            save_state()
    if ctx.cancelled:
        save_state()
        raise JobCancelled("cancelled")
    train_loss, train_acc = evaluate_reward_pairs(model, train, tokenizer, config.batch_size)
    ctx.metrics(step, {"reward_model/final_train_loss": train_loss, "reward_model/final_train_accuracy": train_acc})
    result = {"pairs": len(pairs), "train_pairs": len(train), "heldout_pairs": len(held),
              "heldout_accuracy": None if math.isnan(heldout_acc) else heldout_acc,
              "train_accuracy": None if math.isnan(train_acc) else train_acc,
              "train_loss": train_loss, "steps": step, "train_seconds": round(time.monotonic() - started, 2)}
    ctx.progress(0.96, message="Scoring the project's responses (reward vs length)")
    held_texts = {(p.prompt, t) for p in held for t in (p.left, p.right)}
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
    save_text_reward_model(model, folder, meta={"base_model": model_id, **result})
    cid = project.add_checkpoint(ctx.run_id, CHECKPOINT_KIND, folder, step=step,
                                 meta={"base_model": model_id, "pairs": len(pairs),
                                       "heldout_accuracy": result["heldout_accuracy"]})
    ctx.progress(1.0, message="done")
    return {**result, "checkpoint_id": cid, "path": str(folder)}
