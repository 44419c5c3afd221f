"""GRPO: group-relative policy optimisation on verifiable rewards (DeepSeekMath; DeepSeek-R1-Zero).

Each step:

1. take B prompts (``prompts_per_step``) and sample G completions of each (``group_size``;
   :func:`~rlhf_core.text.rl_common.sample_for_training` with every prompt repeated G times, one
   seed per completion, at ``temperature``);
2. score every completion with the reward (:mod:`rlhf_core.text.rewards`; default
   ``format:0.5,correctness:1.0``);
3. advantages, the same for every token of completion i of a group (:func:`group_advantages`)::

       A_i = r_i - mean(r_group)                        (scale_rewards off: Dr. GRPO)
       A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4)  (scale_rewards on: the original)

   ``std`` is the sample standard deviation (n - 1), as TRL computes it. A group whose rewards are
   all equal has zero advantages and contributes only the KL term;
4. ``mu`` optimisation passes over the batch (default 1) with the clipped surrogate plus the KL
   penalty, per completion token t (:func:`grpo_loss`)::

       ratio_t = pi(y_t) / pi_old(y_t)
       l_t     = -min(ratio_t * A, clip(ratio_t, 1 - eps, 1 + eps) * A) + beta * k3_t
       k3_t    = pi_ref(y_t)/pi(y_t) - log(pi_ref(y_t)/pi(y_t)) - 1

   (``kl_ratio_weight`` uses ``ratio_t * k3_t`` instead, as TRL 1.16 does by default.)
   The KL to the reference is ADDED TO THE LOSS (not subtracted from the reward as in PPO-RLHF).
   pi_old is the policy that sampled the batch: with ``mu = 1`` the ratio is exactly 1 (pi_old is
   the current policy, detached) but its gradient is the policy gradient ``A * grad log pi``.
   Log-probs are taken at the sampling temperature (logits / T), as TRL does.

Loss aggregation over tokens (``loss_aggregation``):

- ``token`` (default; TRL 1.16's default ``loss_type="dapo"``): the sum of l_t over every completion
  token of the batch divided by the number of those tokens. Every token weighs the same, so a
  long completion is not worth less per token than a short one (DAPO; the length bias of the
  original is discussed in Dr. GRPO).
- ``sequence`` (the original GRPO, TRL's ``loss_type="grpo"``): the mean of l_t within each
  completion, then the mean over completions.

Logged every step (step s is measured on the step's samples BEFORE that step's update, so step 0
is the untrained policy and its KL is exactly 0): reward/mean, reward/std, reward/<component>
(weighted), kl/token_mean, kl/seq_mean (k3), kl/beta, completions/mean_length|min_length|max_length
(tokens, end token included), completions/stopped_fraction, train/loss, train/entropy, train/clip_fraction (of the
last of the ``mu`` passes; 0 when ``mu`` = 1), train/grad_norm, gold/reward (the fraction of the
step's completions with the right answer, when the prompts have gold answers; with a
``gold_reward_model`` instead the mean score that held-out reward model gives the step's completions,
raw, never optimised), memory/peak_rss_mb,
time/steps_per_second (sampling, rewards and update; not the evaluation); gold/accuracy (greedy
decoding on the held-out prompts) at step 0, every ``eval_every`` steps and after the last update.
Samples (kind ``text_rl``): ``samples_per_step`` completions per step with their reward, weighted
components, length, gold answer and advantage (with a ``gold_reward_model``: ``gold`` is its score of
the completion and ``gold_answer`` the answer).

Prompts: the arithmetic task set (:mod:`rlhf_core.text.tasks`, default) or the project's prompts
that have a gold answer, split into train / held-out with the seed; each is shown as a chat with
the format instruction as the system message (``format_instruction``) and one worked example
(``few_shot``), see :func:`rlhf_core.text.tasks.task_messages`.

``device`` and ``precision`` (:mod:`rlhf_core.devices`): the policy trains in float32 on the device
and the frozen reference is cast to half on a GPU; sampling, the evaluation and the forward passes
run under autocast with bf16/fp16 (fp16 with a gradient scaler), log-probs from float32 logits. On
a GPU the reference runs in half weights and the policy in float32 weights under autocast, which can
round differently, so the step-0 KL there may be slightly above 0 (on the CPU it is exactly 0).
The result records where it ran.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from rlhf_core import devices, kinds
from rlhf_core.config import param
from rlhf_core.jobs import JobCancelled, JobContext
from rlhf_core.resume import random_state, resume_training, trainable_state
from rlhf_core.text.generation import SamplingSettings
from rlhf_core.text.gold_eval import consensus_at_k, evaluate_gold, project_prompts, task_prompts
from rlhf_core.text.lora import AUTO as AUTO_LORA, LORA_RANK_HELP
from rlhf_core.text.model import eos_token_ids as find_eos
from rlhf_core.text.reward_model import resolve_reward_model
from rlhf_core.text.rewards import RewardModelReward, parse_reward_spec, parse_spec_items
from rlhf_core.text.rl_common import (
    backward,
    batch_from_samples,
    job_device,
    load_policy,
    make_optimizer,
    optimizer_step,
    peak_rss_mb,
    policy_logprobs,
    sample_for_training,
    policy_card,
    save_policy,
    set_threads,
)
from rlhf_core.text.tasks import render_task_prompt

CHECKPOINT_KIND = kinds.TEXT_POLICY
SAMPLE_KIND = kinds.SAMPLE_TEXT_RL


# ------------------------------------------------------------------------------- config
@dataclass
class GRPOConfig:
    model: str = param("", "Causal language model folder to train ('' = the bundled SmolLM2-135M-Instruct).")
    prompt_source: str = param("tasks", "tasks: generated arithmetic word problems; project: this project's "
                               "prompts that have a gold answer.", choices=("tasks", "project"))
    task_level: int = param(1, "Difficulty of the generated tasks (1: one small addition ... 4: multi-step).",
                            min=1, max=4)
    train_tasks: int = param(256, "Generated training tasks.", min=1)
    heldout_tasks: int = param(32, "Generated held-out tasks for gold/accuracy (0: no evaluation).", min=0)
    heldout_fraction: float = param(0.2, "Project prompts: fraction held out for gold/accuracy.", min=0.0, max=0.9)
    few_shot: bool = param(True, "Show one worked example (<think>/<answer>) as an earlier chat turn.")
    format_instruction: bool = param(True, "Give the <think>/<answer> instruction as the system message.")
    reward: str = param("format:0.5,correctness:1.0", "Weighted reward components, e.g. "
                        "'format:0.5,correctness:1.0,length:0.001' (format, format_strict, correctness, "
                        "correctness_any, length, model).")
    reward_model: str = param("", "Text reward model folder for the 'model' reward component.")
    gold_reward_model: str = param("", "Held-out GOLD reward model ('' = none): a folder or checkpoint id, e.g. "
                                   "the one a text_reward_model run with gold_fraction > 0 made; scores every step's "
                                   "completions, logged as gold/reward, never optimised.")
    steps: int = param(50, "Optimisation steps (each samples a new batch).", min=1)
    prompts_per_step: int = param(2, "Prompts per step (B).", min=1)
    group_size: int = param(4, "Completions sampled per prompt (G).", min=2)
    max_new_tokens: int = param(64, "Longest completion in tokens.", min=1)
    temperature: float = param(0.7, "Sampling temperature (log-probs are taken at the same temperature).",
                               min=0.0, min_inclusive=False)
    learning_rate: float = param(1e-5, "AdamW learning rate (LoRA needs about 10x more).", min=0.0,
                                 min_inclusive=False)
    beta: float = param(0.04, "KL coefficient: beta * k3(pi, pi_ref) is added to the loss (0: off).", min=0.0)
    epsilon: float = param(0.2, "Clipping range of the probability ratio.", min=0.0, min_inclusive=False)
    scale_rewards: bool = param(True, "Divide advantages by the group's reward std (off: Dr. GRPO).")
    loss_aggregation: str = param("token", "token: sum over all completion tokens / their number (TRL 1.16's "
                                  "default, DAPO); sequence: mean per completion, then over completions "
                                  "(the original GRPO).", choices=("token", "sequence"))
    mu: int = param(1, "Optimisation passes over each sampled batch (the ratio is 1 in the first).", min=1)
    kl_ratio_weight: bool = param(False, "Weight each token's KL term by its ratio pi/pi_old (TRL 1.16's default "
                                  "use_bias_correction_kl): the KL gradient becomes log(pi/pi_ref).", advanced=True)
    max_grad_norm: float = param(1.0, "Clip the gradient norm to this (0: no clipping).", min=0.0)
    lora_rank: int = param(AUTO_LORA, LORA_RANK_HELP, min=-1, max=1024, default_text="auto")
    lora_alpha: int = param(0, "LoRA alpha (0: twice the rank).", min=0)
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass: less memory, "
                                         "slower here (and no shared-prompt forward).")
    shared_prompt_forward: bool = param(True, "Run each prompt once per group in the training forward passes "
                                        "(the G completions attend to its cached keys and values; about 1.6x "
                                        "faster steps for the demo's 120-token prompts).", advanced=True)
    eval_every: int = param(25, "Held-out evaluation every N steps (0: only before and after training).", min=0)
    eval_consensus_k: int = param(0, "At the final evaluation also sample k completions per held-out prompt and "
                                  "log the majority-vote accuracy gold/cons_at_k (0: off).", min=0, advanced=True)
    samples_per_step: int = param(2, "Completions published per step for the samples table.", min=0)
    seed: int = param(0, "Random seed (tasks, prompt order, sampling).", min=0)
    threads: int = param(1, "torch threads for this job.", min=1)
    save: bool = param(True, "Save the trained policy as a checkpoint of the run.")
    save_steps: int = param(0, "Save a resumable state every N steps (0: only when cancelled); a cancelled, "
                            "failed or killed run resumes from the last one.", min=0)
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def check(self) -> list[str]:
        problems = [p for p in [devices.spec_problem(self.device)] if p]
        try:
            names = [n for n, _ in parse_spec_items(self.reward)]
        except ValueError as exc:
            return problems + [f"reward: {exc}"]
        if "model" in names and not self.reward_model.strip():
            problems.append("reward_model: the 'model' reward component needs a text reward model folder")
        return problems


# ------------------------------------------------------------------------------- the math
def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantages for rewards laid out group by group ``[B * G]``."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)
    adv = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (grouped.std(dim=1, keepdim=True) + eps)
    return adv.reshape(-1)


@dataclass
class LossParts:
    loss: torch.Tensor
    kl_token_mean: float
    kl_seq_mean: float
    clip_fraction: float


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, *, epsilon: float = 0.2, beta: float = 0.04,
              aggregation: str = "token", kl_ratio_weight: bool = False) -> LossParts:
    """The GRPO loss of one batch (module doc); all per-token tensors ``[N, C]``, advantages ``[N]``.

    ``ref_logp`` may be None only when ``beta == 0`` (the KL numbers are then reported as 0); with
    a reference and ``beta == 0`` the KL is measured but not added to the loss. ``kl_ratio_weight``
    multiplies each token's k3 by its ratio pi/pi_old (TRL 1.16's default ``use_bias_correction_kl``,
    from DeepSeek-V3.2): the value is unchanged at ratio 1, but the KL gradient becomes
    ``log(pi/pi_ref)`` (the unbiased reverse-KL gradient) instead of ``1 - pi_ref/pi``.
    """
    mask = mask.float()
    adv = advantages.float().unsqueeze(1)
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if ref_logp is not None:
        log_ratio = ref_logp - logp
        k3 = torch.exp(log_ratio) - log_ratio - 1.0
        if beta != 0.0:
            per_token = per_token + beta * (k3 * ratio if kl_ratio_weight else k3)
        with torch.no_grad():
            kl_tok = float((k3 * mask).sum() / mask.sum().clamp(min=1.0))
            kl_seq = float((k3 * mask).sum(-1).mean())
    else:
        if beta != 0.0:
            raise ValueError("beta > 0 needs the reference log-probs")
        kl_tok = kl_seq = 0.0
    if aggregation == "token":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif aggregation == "sequence":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    else:
        raise ValueError(f"loss aggregation must be 'token' or 'sequence', not {aggregation!r}")
    with torch.no_grad():  # the tokens whose gradient the clip removed (TRL's clip_ratio/region_mean)
        region = ((ratio < 1.0 - epsilon) & (adv < 0)) | ((ratio > 1.0 + epsilon) & (adv > 0))
        clip_fraction = float((region.float() * mask).sum() / mask.sum().clamp(min=1.0))
    return LossParts(loss, kl_tok, kl_seq, clip_fraction)


# ------------------------------------------------------------------------------- training
def sample_seed(seed: int, step: int, index: int) -> int:
    """A distinct sampling seed per (run seed, step, completion)."""
    return (int(seed) * 1_000_003 + int(step)) * 65_536 + int(index)


def _length_stats(samples) -> dict[str, float]:
    lengths = [len(s.completion_ids) for s in samples]
    return {"completions/mean_length": sum(lengths) / len(lengths),
            "completions/min_length": float(min(lengths)), "completions/max_length": float(max(lengths)),
            "completions/stopped_fraction": sum(s.completion.finish_reason == "stop" for s in samples) / len(samples)}


def train_grpo(config: GRPOConfig, ctx: JobContext, *, reward=None) -> dict:
    """Run GRPO (module doc). ``reward``: a ready reward object (library use, e.g. a custom
    :class:`~rlhf_core.text.rewards.CombinedReward`) instead of the one ``config.reward`` describes."""
    started = time.monotonic()
    set_threads(config.threads)
    device, precision = job_device(config)
    torch.manual_seed(config.seed)
    if reward is None:
        folder = resolve_reward_model(config.reward_model, ctx.project() if ctx.project_path else None)[0] \
            if config.reward_model.strip() else ""
        reward = parse_reward_spec(config.reward, reward_model_path=str(folder), device=device, precision=precision)
    gold_scorer = None
    if config.gold_reward_model.strip():
        gold_folder = resolve_reward_model(config.gold_reward_model, ctx.project() if ctx.project_path else None)[0]
        gold_scorer = RewardModelReward(str(gold_folder), device=device, precision=precision)
        gold_scorer.load()
    if config.prompt_source == "tasks":
        train_prompts, held_prompts = task_prompts(config.task_level, config.train_tasks, config.heldout_tasks,
                                                   config.seed)
    else:
        train_prompts, held_prompts = project_prompts(
            ctx.project(), need_gold=reward.needs_gold(), heldout_fraction=config.heldout_fraction, seed=config.seed)
    held_prompts = [p for p in held_prompts if p.meta.get("gold_answer") is not None]
    ctx.progress(0.0, message=f"Loading the policy ({len(train_prompts)} training prompts, "
                              f"{len(held_prompts)} held out)")
    setup = load_policy(config.model, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                        gradient_checkpointing=config.gradient_checkpointing, need_reference=True, ctx=ctx,
                        device=device, precision=precision,
                        # task prompts (system message, worked example) are about 120 tokens; 256 leaves room
                        batch_shape=(config.prompts_per_step * config.group_size, 256 + config.max_new_tokens))
    model, tok = setup.model, setup.tokenizer
    eos_ids = find_eos(model, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]
    params = setup.trainable_parameters()
    optimizer = make_optimizer(params, config.learning_rate)
    scaler = setup.grad_scaler()
    settings = SamplingSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature)
    # each prompt once per group (grouped_logprobs); the policy and the reference take the same path,
    # so the KL is exactly 0 at step 0
    grouped = config.shared_prompt_forward and not config.gradient_checkpointing
    rendered_cache: dict[int, str] = {}

    def rendered(i: int) -> str:
        if i not in rendered_cache:
            rendered_cache[i] = render_task_prompt(tok, train_prompts[i].text, config.few_shot,
                                                   config.format_instruction)
        return rendered_cache[i]

    def evaluate(step: int) -> float | None:
        if not held_prompts:
            return None
        ctx.progress(step, config.steps, f"step {step}: held-out evaluation ({len(held_prompts)} prompts)")
        with setup.autocast():
            res = evaluate_gold(model, tok, held_prompts, few_shot=config.few_shot,
                                max_new_tokens=config.max_new_tokens, eos_token_ids=eos_ids,
                                instruction=config.format_instruction, on_step=ctx.raise_if_cancelled)
        ctx.metrics(step, {"gold/accuracy": res["accuracy"]})
        evals.append({"step": step, "accuracy": res["accuracy"], "format": res["format"],
                      "mean_length": res["mean_length"]})
        return res["accuracy"]

    rng = random.Random(config.seed)
    order: list[int] = []
    history: list[dict[str, float]] = []
    evals: list[dict] = []
    B, G = config.prompts_per_step, config.group_size
    start = 0
    state = ctx.resume_from
    if state is not None:
        extra = resume_training(state, model, optimizer)
        order, history, evals = extra["order"], extra["history"], extra["evals"]
        rng.setstate(random_state(extra["rng"]))
        start = state.step + 1

    def save_state(done: int, order_then: list[int], rng_then: tuple, evals_then: int) -> None:
        if done >= 0:
            ctx.save_state(done, {"model": trainable_state(model), "optimizer": optimizer.state_dict()},
                           {"order": order_then, "history": history, "evals": evals[:evals_then], "rng": rng_then})

    for step in range(start, config.steps):
        order_then, rng_then, evals_then = list(order), rng.getstate(), len(evals)  # what this step starts from
        try:
            if step == 0 or (config.eval_every and step % config.eval_every == 0):
                evaluate(step)
            t0 = time.monotonic()  # time/steps_per_second: sampling, rewards and the update (not the evaluation)
            chosen = []
            for _ in range(B):
                if not order:
                    order = list(range(len(train_prompts)))
                    rng.shuffle(order)
                chosen.append(order.pop())
            prompt_rows = [i for i in chosen for _ in range(G)]
            ctx.progress(step, config.steps, f"step {step}: sampling {B} x {G} completions")
            with setup.autocast():
                samples = sample_for_training(model, tok, [rendered(i) for i in prompt_rows], settings,
                                              [sample_seed(config.seed, step, j) for j in range(len(prompt_rows))],
                                              eos_token_ids=eos_ids, on_step=ctx.raise_if_cancelled, batch_size=B * G)
            ctx.raise_if_cancelled()
            texts = [s.text for s in samples]
            metas = [{**train_prompts[i].meta, "completion_tokens": len(s.completion_ids)}
                     for i, s in zip(prompt_rows, samples)]
            scored = reward.evaluate([train_prompts[i].text for i in prompt_rows], texts, metas)
            rewards = torch.tensor(scored.total, dtype=torch.float32)
            advantages = group_advantages(rewards, G, config.scale_rewards).to(device)
            batch = batch_from_samples(samples, pad_id, device=device)
            mask = batch.completion_mask
            ref_logp, _ = policy_logprobs(setup, batch, G, grouped, temperature=config.temperature, reference=True)
            old_logp = None
            if config.mu > 1:
                with torch.no_grad():
                    old_logp = policy_logprobs(setup, batch, G, grouped, temperature=config.temperature)[0]
            model.train()
            losses, grad_norms = [], []
            first: Any = None
            entropy = float("nan")
            for it in range(config.mu):
                logp, ent = policy_logprobs(setup, batch, G, grouped, with_entropy=(it == 0),
                                             temperature=config.temperature)
                if it == 0:
                    entropy = float((ent.detach() * mask).sum() / mask.sum().clamp(min=1.0))
                    del ent
                parts = grpo_loss(logp, logp.detach() if old_logp is None else old_logp, ref_logp, advantages, mask,
                                  epsilon=config.epsilon, beta=config.beta, aggregation=config.loss_aggregation,
                                  kl_ratio_weight=config.kl_ratio_weight)
                if first is None:
                    first = parts
                optimizer.zero_grad(set_to_none=True)
                backward(parts.loss, optimizer, scaler)
                norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm if config.max_grad_norm > 0
                                                      else float("inf"))
                optimizer_step(optimizer, scaler)
                losses.append(float(parts.loss.detach()))
                grad_norms.append(float(norm))
                clip_last = parts.clip_fraction
            elapsed = time.monotonic() - t0
            metrics = {
                "reward/mean": float(rewards.mean()),
                "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
                **scored.means(),
                "kl/token_mean": first.kl_token_mean,
                "kl/seq_mean": first.kl_seq_mean,
                "kl/beta": config.beta,
                **_length_stats(samples),
                "train/loss": sum(losses) / len(losses),
                "train/entropy": entropy,
                "train/clip_fraction": clip_last if config.mu > 1 else first.clip_fraction,
                "train/grad_norm": grad_norms[0],
                "memory/peak_rss_mb": peak_rss_mb(),
                "time/steps_per_second": 1.0 / max(elapsed, 1e-9),
            }
            gold_scores = None
            if gold_scorer is not None:
                gold_scores = gold_scorer([train_prompts[i].text for i in prompt_rows], texts, metas)
                metrics["gold/reward"] = sum(gold_scores) / len(gold_scores)
            elif "correctness" in scored.raw:
                values = scored.raw["correctness"]
                metrics["gold/reward"] = sum(values) / len(values)
            ctx.metrics(step, metrics)
            history.append(metrics)
            shown = list(range(0, len(samples), G))[:config.samples_per_step]
            shown += [i for i in range(len(samples)) if i not in shown][:max(0, config.samples_per_step - len(shown))]
            for i in shown:
                p = train_prompts[prompt_rows[i]]
                payload = {"step": step, "prompt": p.text, "response": texts[i], "reward": scored.total[i],
                           "components": scored.sample_components(i), "length": len(samples[i].completion_ids),
                           "gold": p.meta.get("gold_answer"), "advantage": float(advantages[i])}
                if gold_scores is not None:
                    payload.update(gold=gold_scores[i], gold_answer=p.meta.get("gold_answer"))
                ctx.sample(SAMPLE_KIND, payload, step=step)
            ctx.progress(step + 1, config.steps, f"step {step + 1}/{config.steps}: reward "
                                                 f"{metrics['reward/mean']:.3f}, KL {metrics['kl/token_mean']:.4f}")
        except JobCancelled:  # raised before this step's update: the state after the previous step
            save_state(step - 1, order_then, rng_then, evals_then)
            raise
        if config.save_steps and (step + 1) % config.save_steps == 0 and step + 1 < config.steps:
            save_state(step, list(order), rng.getstate(), len(evals))
    if ctx.cancelled:
        save_state(config.steps - 1, list(order), rng.getstate(), len(evals))
    ctx.raise_if_cancelled()
    final_accuracy = evaluate(config.steps)
    ctx.raise_if_cancelled()
    consensus = None
    if config.eval_consensus_k > 0 and held_prompts:
        ctx.progress(config.steps, config.steps,
                     f"cons@{config.eval_consensus_k} on {len(held_prompts)} held-out prompts")
        with setup.autocast():
            consensus = consensus_at_k(model, tok, held_prompts, k=config.eval_consensus_k,
                                       temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                                       seed=config.seed, few_shot=config.few_shot,
                                       instruction=config.format_instruction, eos_token_ids=eos_ids,
                                       on_step=ctx.raise_if_cancelled)
        ctx.metrics(config.steps, {"gold/cons_at_k": consensus["cons_at_k"]})
        ctx.raise_if_cancelled()
    result = summarise(history, evals)
    result.update({"steps": config.steps, "train_prompts": len(train_prompts), "heldout_prompts": len(held_prompts),
                   "model": setup.model_id, "lora": setup.lora, "lora_rank": setup.lora_rank,
                   "wall_seconds": round(time.monotonic() - started, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                   **devices.device_record(device, precision)})
    if consensus is not None:
        result.update({"gold_cons_at_k": consensus["cons_at_k"], "gold_pass_at_k": consensus["pass_at_k"],
                       "gold_sample_accuracy": consensus["sample_accuracy"], "consensus_k": config.eval_consensus_k})
    if config.save and ctx.project_path is not None and ctx.run_id is not None:
        project = ctx.project()
        folder = project.run_folder(ctx.run_id) / "policy"
        meta = {"algorithm": "grpo", "steps": config.steps, "reward": reward.spec(),
                "reward_last": result["reward_last"], "gold_accuracy_last": final_accuracy}
        counts = {k: result[k] for k in ("train_prompts", "heldout_prompts", "steps")}
        save_policy(setup, folder, meta, card=policy_card("grpo", config, setup, ctx, training_data=counts,
                                                          result=result))
        result["checkpoint_id"] = project.add_checkpoint(ctx.run_id, CHECKPOINT_KIND, project.relpath(folder),
                                                         step=config.steps, meta={**meta, "base_model": setup.model_id})
        result["path"] = str(folder)
    return result


def summarise(history: list[dict[str, float]], evals: list[dict], window: int = 5) -> dict:
    """First/last values (and first/last-``window`` means) of the headline metrics."""
    out: dict[str, Any] = {}
    if history:
        w = max(1, min(window, len(history) // 2 or 1))
        for key, name in (("reward/mean", "reward"), ("kl/token_mean", "kl"), ("completions/mean_length", "mean_length")):
            series = [h[key] for h in history]
            out[f"{name}_first"] = series[0]
            out[f"{name}_last"] = series[-1]
            out[f"{name}_first_window"] = sum(series[:w]) / w
            out[f"{name}_last_window"] = sum(series[-w:]) / w
        out["window"] = w
        gold = [h["gold/reward"] for h in history if "gold/reward" in h]
        if gold:
            out["gold_first"], out["gold_last"] = gold[0], gold[-1]
            out["gold_first_window"] = sum(gold[:w]) / len(gold[:w])
            out["gold_last_window"] = sum(gold[-w:]) / len(gold[-w:])
        out["seconds_per_step"] = sum(1.0 / h["time/steps_per_second"] for h in history) / len(history)
    if evals:
        out["gold_accuracy_first"] = evals[0]["accuracy"]
        out["gold_accuracy_last"] = evals[-1]["accuracy"]
        out["gold_format_first"] = evals[0]["format"]
        out["gold_format_last"] = evals[-1]["format"]
        out["evaluations"] = evals
    return out

