"""PPO for a language model with a per-token KL penalty (Ziegler et al. 2019; Stiennon et al. 2020;
Ouyang et al. 2022). Hand-written: TRL 1.16 no longer ships a PPO trainer.

The token-level MDP: the state is the prompt plus the tokens written so far, the action is the next
token, transitions are deterministic. One PPO step:

1. Rollout. ``batch_size`` prompts (a seeded cycle over the prompt list) are rendered with the chat
   template and one completion each is sampled from the current policy (temperature ``T``, no
   top-k/top-p, so the sampling distribution is exactly ``softmax(logits / T)``, the one the
   log-probs below are taken from).
2. Scoring, without gradients: ``log pi_old(y_t)`` and the values ``V(s_t)`` (one forward of the
   policy), ``log pi_ref(y_t)`` (the frozen reference; with LoRA the same network with its adapters
   switched off), and the task reward ``r(x, y)`` of every completion.
3. Shaped per-token reward: ``r_t = -beta * (log pi_old(y_t) - log pi_ref(y_t))`` (the k1 KL
   estimate) on every completion token, plus ``r(x, y)`` added at the LAST token (the end-of-turn
   token when the completion stopped, else the last token before the length limit).
4. Generalised advantage estimation (Schulman et al. 2016) over the completion tokens:
   ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)`` (``V = 0`` after the last token),
   ``A_t = delta_t + gamma * lambda * A_{t+1}``, returns ``R_t = A_t + V(s_t)``; defaults
   ``gamma = 1``, ``lambda = 0.95``. The advantages are whitened over the batch's tokens (mean 0,
   std 1).
5. ``ppo_epochs`` passes over shuffled minibatches: the clipped surrogate
   ``max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))`` with ``ratio = pi / pi_old`` and the
   clipped value loss ``0.5 * max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)``,
   both averaged over the minibatch's completion tokens; loss = policy + ``vf_coef`` * value
   (- ``entropy_coef`` * entropy, 0 by default: the entropy is logged, not rewarded). Gradients are
   clipped to ``max_grad_norm``.
6. beta: fixed, or the adaptive controller of Ziegler et al. (2019):
   ``e = clip(KL / KL_target - 1, -0.2, 0.2)``, ``beta <- beta * (1 + e * n / horizon)`` with KL the
   batch's mean per-sequence KL and ``n`` the number of completions in the batch.

The value head: ``Linear(hidden, 1)`` (zero-initialised, so every value starts at 0) on the
policy's LAST hidden layer, read from the same forward pass as the log-probs
(:func:`rlhf_core.text.rl_common.completion_logprobs_and_hidden`); no second network. With
``value_backbone = "shared"`` (TRL's old ``AutoModelForCausalLMWithValueHead`` design) the value
loss also trains the shared transformer (scaled by ``vf_coef``); with ``"detached"`` the head reads
detached hidden states, so only the head learns from the value loss and the policy's weights see
the policy loss alone. The head has its own learning rate (``value_learning_rate``): it starts from
zero and must catch up with the returns quickly.

Rewards: a learned text reward model (``reward_model``: a folder written by the
``text_reward_model`` job, or the id of such a checkpoint in the project) scored on
``chat_template([user: prompt, assistant: response])``; with ``normalize_reward`` its scores are
standardised with the mean and std of the FIRST batch it scores (the reference policy's samples),
then kept fixed, so beta is in units of the reference's reward spread (InstructGPT normalises its
reward model so that demonstrations score 0 on average). With ``reward_baseline = "prompt"`` (the
default) the centring is per prompt instead: before step 0 the untouched policy writes
``baseline_samples`` completions to every training prompt, and a completion's score becomes its
reward-model score minus the mean score of those reference completions to the same prompt, divided
by their pooled within-prompt spread (:meth:`RewardModelScorer.calibrate_per_prompt`). A batch of
different prompts, one completion each, otherwise carries mostly "which prompt the reward model
likes" in its reward spread, which the value head cannot learn quickly; on the PPO
over-optimisation demo the per-prompt baseline is what let the KL penalty keep the gold reward
(docs/experiments/ppo-overoptimisation.md). ``reward_baseline = "batch"`` is the first-batch
standardisation. ``reward`` adds rule-based components from a spec string (:func:`rlhf_core.text.rewards.parse_reward_spec`, e.g.
``"model:1,length:0.001"``; a ``model:w`` item sets the weight of the reward model's score). Each
completion's meta carries ``completion_tokens`` and the prompt's ``gold_answer`` when it has one. An optional held-out GOLD
reward model (``gold_reward_model``) scores the same completions without being optimised, centred
like the optimised one (per prompt on the same reference completions, or on the first batch):
``gold/reward`` next to ``reward/model``, in the same units, is the over-optimisation picture of Gao
et al. (2022).

Device and precision (:mod:`rlhf_core.devices`): the policy trains on ``device`` with float32 weights
and its forward passes (sampling, log-probs, values) run under autocast (``bf16``, or ``fp16`` with a
gradient scaler); log-probs, values and losses are float32. The value head stays float32 on the same
device, outside autocast. The reference and the reward models only run forward: on a GPU they are
cast to the half type (:func:`rlhf_core.devices.frozen_dtype`). On a GPU the reward models are
loaded first; then :func:`~rlhf_core.text.rl_common.load_policy` estimates what the policy needs (its
weights, gradients and AdamW moments, the reference, a minibatch's activations) and refuses in words
when that exceeds the memory the reward models left free. The result records where it ran
(``device``, ``device_name``, ``dtype``, ``peak_memory_mb``, ``peak_memory_kind``).

Logged per step ``s`` (step 0 = the rollout of the untouched policy, KL exactly 0): the rollout
keys (reward, KL, length, gold) describe the completions sampled at the start of step ``s``; the
``train/*`` keys describe the update made on them. After the last update one more rollout is
scored (step ``steps``, no ``train/*``), so ``reward_last`` is the final policy's reward.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf_core import devices, kinds
from rlhf_core.config import param
from rlhf_core.jobs import JobCancelled, JobContext
from rlhf_core.resume import TrainingState, load_trainable_state, random_state, trainable_state
from rlhf_core.text.generation import SamplingSettings
from rlhf_core.text.lora import AUTO as AUTO_LORA, LORA_RANK_HELP
from rlhf_core.text.prompts import load_builtin_set
from rlhf_core.text.reward_model import load_text_reward_model, resolve_reward_model, score_responses
from rlhf_core.text.rewards import parse_reward_spec, parse_spec_items
from rlhf_core.text.rl_common import (
    PolicySetup,
    TokenBatch,
    backward,
    batch_from_samples,
    completion_logprobs_and_hidden,
    job_device,
    load_policy,
    masked_mean,
    optimizer_step,
    peak_rss_mb,
    render_chat_prompt,
    sample_for_training,
    policy_card,
    save_policy,
    set_threads,
)

CHECKPOINT_KIND = kinds.TEXT_POLICY
SAMPLE_KIND = kinds.SAMPLE_TEXT_RL

#: ``reward_fn(prompts, responses, metas) -> {component name: [n] tensor}``; the total is their sum.
#: ``metas[i]`` has ``completion_tokens`` (tokens of completion i, end token included) and, when the
#: prompt has one, ``gold_answer``.
RewardFn = Callable[[Sequence[str], Sequence[str], Sequence[dict]], dict[str, torch.Tensor]]
#: ``gold_fn(prompts, responses, metas) -> [n] tensor`` (measured, never optimised), logged as
#: ``gold/reward``; or a dict ``{name: [n] tensor}`` with a ``"reward"`` entry, each logged as ``gold/<name>``
GoldFn = Callable[[Sequence[str], Sequence[str], Sequence[dict]], "torch.Tensor | dict[str, torch.Tensor]"]


# ------------------------------------------------------------------------------- the pieces (tested by hand)
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns ``[B, C]`` for right-padded completions.

    ``mask[i]`` is 1 on the real tokens of row ``i`` (a prefix of the row); the value after a row's
    last token is 0 (the episode ends). Padding columns get advantage and return 0.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    width = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t + 1 < width else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    returns = (advantages + values) * mask
    return advantages, returns


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries (population std); padding stays 0.

    With fewer than two real entries, or no spread, only the mean is removed.
    """
    mask = mask.to(values.dtype)
    count = mask.sum()
    mean = (values * mask).sum() / count.clamp(min=1.0)
    var = (((values - mean) ** 2) * mask).sum() / count.clamp(min=1.0)
    centred = values - mean
    if count >= 2 and float(var) > 1e-12:
        out = centred * torch.rsqrt(var + 1e-8)
        if not shift_mean:
            out = out + mean
    else:
        out = centred if shift_mean else values
    return out * mask


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, float, float]:
    """PPO's clipped surrogate, averaged over completion tokens: (loss, clip fraction, approx KL).

    ``clip fraction``: the share of tokens where the clipped term was the larger (active) one.
    ``approx KL``: the mean of ``0.5 * (log pi - log pi_old)^2`` (old vs new policy, a diagnostic).
    """
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = float(masked_mean((clipped > unclipped).float(), mask))
        approx_kl = float(masked_mean(0.5 * log_ratio ** 2, mask))
    return loss, clip_fraction, approx_kl


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> torch.Tensor:
    """Clipped value loss ``0.5 * max((V - R)^2, (V_clipped - R)^2)`` averaged over completion tokens."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    losses = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(losses, mask)


def shaped_rewards(score: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                   beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``-beta * k1`` with ``score[i]`` added at row i's last real token: (rewards, k1)."""
    kl = (logp - ref_logp) * mask
    rewards = -beta * kl
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += score.to(device=rewards.device, dtype=rewards.dtype)
    return rewards * mask, kl


class FixedKLController:
    """A constant beta."""

    def __init__(self, beta: float):
        self.beta = float(beta)

    def update(self, current_kl: float, n_samples: int) -> float:
        return self.beta


class AdaptiveKLController:
    """Ziegler et al. (2019): move beta so the per-sequence KL approaches ``target``.

    ``e = clip(KL / target - 1, -0.2, 0.2)``, ``beta <- beta * (1 + e * n_samples / horizon)``.
    """

    def __init__(self, beta: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError("the adaptive KL controller needs a positive target and horizon")
        self.beta = float(beta)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_samples: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_samples / self.horizon
        return self.beta


class ValueHead(nn.Module):
    """``Linear(hidden, 1)`` on the policy's last hidden layer, zero-initialised (V = 0 at the start)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(int(hidden), 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


# ------------------------------------------------------------------------------- rewards
class RewardModelScorer:
    """A learned text reward model as a reward function (optionally standardised on its first batch)."""

    def __init__(self, folder: str | Path | None = None, *, normalize: bool = True, batch_size: int = 16,
                 model: Any = None, tokenizer: Any = None, device=None, precision: str = "float32"):
        if model is None:
            if folder is None:
                raise ValueError("a reward model folder or a loaded model is needed")
            # scores only: on the device, half weights on a GPU (rlhf_core.devices.frozen_dtype)
            model, tokenizer = load_text_reward_model(folder, device=device, precision=precision)
        self.model, self.tokenizer = model, tokenizer
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.normalize = normalize
        self.batch_size = batch_size
        self.offset = 0.0
        self.scale = 1.0
        self.calibrated = not normalize
        self.prompt_offsets: dict[str, float] = {}

    def raw(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        return score_responses(self.model, self.tokenizer, list(prompts), list(responses),
                               batch_size=self.batch_size).float()

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], metas: Sequence[dict] = ()) -> torch.Tensor:
        scores = self.raw(prompts, responses)
        if not self.calibrated:
            self.offset = float(scores.mean())
            std = float(scores.std()) if scores.numel() > 1 else 0.0
            self.scale = std if std > 1e-6 else 1.0
            self.calibrated = True
        if self.prompt_offsets:
            return PromptBaseline(self.prompt_offsets, self.offset, self.scale)(prompts, scores)
        return (scores - self.offset) / self.scale

    def calibrate_per_prompt(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, float]:
        """Centre each prompt's scores on the mean score of ``responses`` to it (e.g. the reference's samples).

        Afterwards a completion to prompt ``x`` scores ``(r - mean_x) / s`` with ``mean_x`` the mean raw
        score of the given responses to ``x`` and ``s`` their pooled within-prompt standard deviation:
        the reward says how much better than the reference's typical answer to the same prompt a
        completion is, so prompts that the reward model simply likes more stop adding variance to the
        advantages (a per-prompt baseline; subtracting a function of the prompt leaves the optimum of
        the KL-regularised objective unchanged). Prompts not seen here use the overall mean.
        Returns ``{"offset", "scale", "prompts"}``.
        """
        base = PromptBaseline.fit(prompts, self.raw(prompts, responses).tolist())
        self.prompt_offsets, self.offset, self.scale = base.offsets, base.offset, base.scale
        self.calibrated = True
        return {"offset": self.offset, "scale": self.scale, "prompts": len(base.offsets)}

    def calibration(self) -> dict:
        """The centring in force (JSON), for a resumed run: its policy is no longer the reference."""
        return {"offset": self.offset, "scale": self.scale, "calibrated": self.calibrated,
                "prompt_offsets": dict(self.prompt_offsets)}

    def restore_calibration(self, saved: dict) -> None:
        self.offset, self.scale = float(saved["offset"]), float(saved["scale"])
        self.calibrated = bool(saved["calibrated"])
        self.prompt_offsets = {str(k): float(v) for k, v in saved["prompt_offsets"].items()}


@dataclass
class PromptBaseline:
    """Per-prompt centring of a score: ``(v - offsets[prompt]) / scale``, with ``offsets`` the mean score of
    some reference responses to each prompt, ``scale`` their pooled within-prompt standard deviation
    (``n - 1`` degrees of freedom per prompt) and ``offset`` (the overall mean) for prompts not seen."""

    offsets: dict[str, float]
    offset: float
    scale: float

    @classmethod
    def fit(cls, prompts: Sequence[str], values: Sequence[float]) -> "PromptBaseline":
        groups: dict[str, list[float]] = {}
        for p, v in zip(prompts, values):
            groups.setdefault(p, []).append(float(v))
        offsets = {p: sum(v) / len(v) for p, v in groups.items()}
        squares = sum((x - offsets[p]) ** 2 for p, v in groups.items() for x in v)
        dof = sum(len(v) - 1 for v in groups.values())
        std = math.sqrt(squares / dof) if dof > 0 else 0.0
        values = [float(v) for v in values]
        return cls(offsets, sum(values) / len(values) if values else 0.0, std if std > 1e-6 else 1.0)

    def __call__(self, prompts: Sequence[str], values: Sequence[float] | torch.Tensor) -> torch.Tensor:
        values = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
        offsets = torch.tensor([self.offsets.get(p, self.offset) for p in prompts], dtype=torch.float32)
        return (values - offsets) / self.scale


def _reward_model_folder(spec: str, ctx: JobContext | None) -> Path:
    project = ctx.project() if ctx is not None and ctx.project_path is not None else None
    return resolve_reward_model(spec, project)[0]


def make_reward_fn(config: "PPOTextConfig", ctx: JobContext | None, *, device=None,
                   precision: str = "float32") -> RewardFn:
    """The configured reward: the learned model (component ``model``) plus a combined reward spec.

    The spec (:func:`rlhf_core.text.rewards.parse_reward_spec`) holds the rule-based components;
    a ``model:w`` item in it sets the weight of the ``reward_model`` score (1 when left out), which
    is always scored here so that ``normalize_reward`` applies to it. The reward model scores on
    ``device`` (the CPU when None) under ``precision``.
    """
    items: list[tuple[str, float]] = []
    if config.reward.strip():
        items = parse_spec_items(config.reward)
    model_weight = sum(w for name, w in items if name == "model") if any(n == "model" for n, _ in items) else 1.0
    rest = [(name, w) for name, w in items if name != "model"]
    scorer = None
    if config.reward_model.strip():
        scorer = RewardModelScorer(_reward_model_folder(config.reward_model, ctx), normalize=config.normalize_reward,
                                   device=device, precision=precision)
    elif len(rest) != len(items):
        raise ValueError("the reward spec names 'model': set reward_model to a reward model folder or checkpoint id")
    combined = None
    if rest:
        combined = parse_reward_spec(",".join(f"{n}:{w!r}" for n, w in rest))
    if scorer is None and combined is None:
        raise ValueError("choose a reward: reward_model (a folder or checkpoint id) and/or reward (a spec)")

    def reward_fn(prompts: Sequence[str], responses: Sequence[str], metas: Sequence[dict]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if scorer is not None:
            out["model"] = model_weight * scorer(prompts, responses)
        if combined is not None:
            result = combined.evaluate(list(prompts), list(responses), list(metas))
            for name, values in result.components.items():
                out[name] = torch.tensor(values, dtype=torch.float32)
        return out

    reward_fn.scorer = scorer  # type: ignore[attr-defined]  # for calibrate_on_reference
    return reward_fn


@torch.no_grad()
def calibrate_on_reference(scorers: RewardModelScorer | Sequence[RewardModelScorer], setup: PolicySetup,
                           prompts: Sequence[str], samples: int, settings: SamplingSettings, seed: int,
                           ctx: JobContext | None = None) -> dict[str, float]:
    """Sample ``samples`` completions to every prompt from the untouched policy and centre each scorer
    per prompt on them (:meth:`RewardModelScorer.calibrate_per_prompt`; the same completions for all,
    e.g. the optimised reward model and a held-out gold one). Returns the first scorer's summary plus
    ``seconds``. Call before the first update: the policy is then the reference."""
    scorers = [scorers] if isinstance(scorers, RewardModelScorer) else list(scorers)
    started = time.monotonic()
    prompts = list(prompts)
    rendered = [render_chat_prompt(setup.tokenizer, p) for p in prompts for _ in range(samples)]
    seeds = [seed * 7_919 + 104_729 + i for i in range(len(rendered))]  # apart from the rollouts' seeds

    def on_step() -> None:
        if ctx is not None:
            ctx.raise_if_cancelled()

    texts: list[str] = []
    # one sampling batch: 32 rows decode 1.35x faster per token than 16 here
    # (docs/experiments/ppo-overoptimisation.md)
    chunk = 32
    for start in range(0, len(rendered), chunk):
        on_step()
        with setup.autocast():
            out = sample_for_training(setup.model, setup.tokenizer, rendered[start:start + chunk], settings,
                                      seeds[start:start + chunk], on_step=on_step, batch_size=chunk)
        texts.extend(s.text for s in out)
        if ctx is not None:
            ctx.progress(0.0, message=f"Reward baseline: {len(texts)} of {len(rendered)} reference completions "
                                      f"({samples} per prompt)")
    infos = [sc.calibrate_per_prompt([p for p in prompts for _ in range(samples)], texts) for sc in scorers]
    return {**infos[0], "seconds": time.monotonic() - started}


def _gold_from_model(spec: str, ctx: JobContext | None, normalize: bool, *, device=None,
                     precision: str = "float32") -> GoldFn:
    return RewardModelScorer(_reward_model_folder(spec, ctx), normalize=normalize, device=device,
                             precision=precision)


def _model_device(model: Any) -> torch.device:
    """The device of ``model``'s weights."""
    return next(model.parameters()).device


# ------------------------------------------------------------------------------- the job's config
@dataclass
class PPOTextConfig:
    model: str = param("", "Policy to start from: a causal-LM folder ('' = the bundled SmolLM2-135M-Instruct).")
    reward_model: str = param("", "Learned reward: a folder saved by the text_reward_model job, or the id of "
                              "such a checkpoint in this project.")
    reward: str = param("", "Combined reward spec (rlhf_core.text.rewards), added to the reward model's score.")
    gold_reward_model: str = param("", "Held-out GOLD reward model ('' = none): a folder or checkpoint id (e.g. "
                                   "the one a text_reward_model run with gold_fraction > 0 made), measured each "
                                   "eval step and never optimised.")
    prompt_set: str = param("starter", "Built-in prompt set to train on (empty: only prompt_ids).")
    category: str = param("", "Only prompts of this category from the set (comma-separated; empty: all).")
    prompt_ids: list = param([], "Ids of project prompts to train on (with or instead of the prompt set).",
                             each="id")
    max_prompts: int = param(0, "Use at most this many prompts (0: all).", min=0)
    steps: int = param(20, "PPO steps (one rollout + update each).", min=1, max=100_000)
    batch_size: int = param(8, "Completions per rollout (one per prompt).", min=1, max=4096)
    minibatch_size: int = param(4, "Completions per gradient step of the PPO epochs.", min=1, max=4096)
    ppo_epochs: int = param(2, "Passes over each rollout (InstructGPT/TRL use 4; fewer is cheaper on CPU).",
                            min=1, max=64)
    learning_rate: float = param(1e-5, "AdamW learning rate of the policy (LoRA needs about 10x more).",
                                 min=0.0, min_inclusive=False)
    value_learning_rate: float = param(1e-4, "AdamW learning rate of the value head.", min=0.0, min_inclusive=False)
    value_backbone: str = param("shared", "shared: the value loss also trains the transformer (x vf_coef); "
                                "detached: only the value head learns from it.", choices=("shared", "detached"))
    vf_coef: float = param(0.1, "Weight of the value loss.", min=0.0)
    cliprange: float = param(0.2, "PPO ratio clip epsilon.", min=0.0, min_inclusive=False, max=1.0)
    cliprange_value: float = param(0.2, "Value clip: how far a value may move from its rollout value.",
                                   min=0.0, min_inclusive=False)
    gamma: float = param(1.0, "Discount over completion tokens.", min=0.0, max=1.0)
    lam: float = param(0.95, "GAE lambda.", min=0.0, max=1.0)
    beta: float = param(0.05, "KL coefficient (the starting value with the adaptive controller; "
                        "InstructGPT 0.02). 0 = no KL penalty.", min=0.0)
    adaptive_kl: bool = param(False, "Adapt beta towards kl_target (Ziegler et al. 2019).")
    kl_target: float = param(6.0, "Adaptive KL: target per-sequence KL in nats.", min=0.0, min_inclusive=False)
    kl_horizon: float = param(10_000.0, "Adaptive KL: horizon in completions.", min=1.0)
    normalize_reward: bool = param(True, "Standardise reward-model scores (see reward_baseline); off: raw scores.")
    reward_baseline: str = param("prompt", "How the reward model's scores are centred: prompt = minus the mean score "
                                 "of the untouched policy's own completions to the same prompt (baseline_samples "
                                 "each, sampled before step 0), in units of their within-prompt spread; batch = "
                                 "standardised with the first rollout's mean/std.", choices=("prompt", "batch"))
    baseline_samples: int = param(4, "reward_baseline = prompt: reference completions per training prompt.",
                                  min=2, max=64)
    whiten_advantages: bool = param(True, "Whiten the advantages over each rollout's tokens.")
    entropy_coef: float = param(0.0, "Entropy bonus weight (0: entropy is only logged).", min=0.0)
    max_grad_norm: float = param(1.0, "Clip the gradient norm to this (0: no clipping).", min=0.0)
    max_new_tokens: int = param(32, "Longest completion in tokens.", min=1, max=4096)
    temperature: float = param(1.0, "Sampling temperature (log-probs use the same).", min=0.0,
                               min_inclusive=False, max=5.0)
    lora_rank: int = param(AUTO_LORA, LORA_RANK_HELP, min=-1, max=1024, default_text="auto")
    lora_alpha: int = param(0, "LoRA alpha (0 = 2 x rank).", min=0)
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass (less memory).")
    eval_every: int = param(1, "Score the gold reward every N steps (0: never).", min=0)
    samples_per_step: int = param(3, "Completions published to the app per step.", min=0, max=64)
    seed: int = param(0, "Random seed (prompt order, sampling, value head).", min=0)
    threads: int = param(1, "torch threads.", min=0, max=256)
    save: bool = param(False, "Store the final policy as a checkpoint of the project.")
    save_steps: int = param(0, "Save a resumable state every N steps (0: only when cancelled); a cancelled, "
                            "failed or killed run resumes from the last one.", min=0)
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def check(self) -> list[str]:
        problems = []
        problem = devices.spec_problem(self.device)
        if problem:
            problems.append(problem)
        if not self.reward_model.strip() and not self.reward.strip():
            problems.append("choose a reward: reward_model (a folder or checkpoint id) or reward (a spec)")
        if not self.prompt_set.strip() and not self.prompt_ids:
            problems.append("choose prompts: a prompt_set or some prompt_ids")
        if self.reward.strip():
            try:
                parse_spec_items(self.reward)
            except ValueError as exc:
                problems.append(f"reward: {exc}")
        if self.minibatch_size > self.batch_size:
            problems.append("minibatch_size cannot be larger than batch_size")
        if self.reward_baseline == "prompt" and not self.normalize_reward and self.reward_model.strip():
            problems.append("reward_baseline 'prompt' centres and scales the reward model's scores: turn "
                            "normalize_reward on, or choose reward_baseline 'batch' to use raw scores")
        return problems


def ppo_prompts(config: Any, ctx: JobContext | None) -> tuple[list[str], dict[str, str]]:
    """The training prompts (the project's ``prompt_ids`` and/or a built-in set, seeded order) and
    the gold answers of those that have one (``{prompt: answer}``)."""
    texts: list[str] = []
    gold: dict[str, str] = {}
    if config.prompt_ids:
        if ctx is None or ctx.project_path is None:
            raise ValueError("prompt_ids need a project")
        project = ctx.project()
        for pid in config.prompt_ids:
            row = project.conn.execute("SELECT text, gold_answer FROM prompts WHERE id=? AND deleted_at IS NULL",
                                       [int(pid)]).fetchone()
            if row is None:
                raise ValueError(f"the project has no prompt {pid}")
            texts.append(row[0])
            if row[1] is not None:
                gold[row[0]] = row[1]
    if config.prompt_set.strip():
        for record in load_builtin_set(config.prompt_set.strip(), config.category or None):
            texts.append(record.text)
            if record.gold_answer is not None:
                gold.setdefault(record.text, record.gold_answer)
    seen: set[str] = set()
    texts = [t for t in texts if not (t in seen or seen.add(t))]
    random.Random(config.seed).shuffle(texts)
    if config.max_prompts:
        texts = texts[:config.max_prompts]
    if not texts:
        raise ValueError("no prompts to train on")
    return texts, {t: gold[t] for t in texts if t in gold}


# ------------------------------------------------------------------------------- the trainer
@dataclass
class Rollout:
    prompts: list[str]
    texts: list[str]
    metas: list[dict]
    batch: TokenBatch
    old_logp: torch.Tensor
    old_values: torch.Tensor
    ref_logp: torch.Tensor
    kl: torch.Tensor
    score: torch.Tensor
    components: dict[str, torch.Tensor]
    advantages: torch.Tensor
    returns: torch.Tensor
    stopped: list[bool]


class PPOTextTrainer:
    """The PPO loop on a policy, a reward function and a prompt list (used by the job and the demo)."""

    def __init__(self, setup: PolicySetup, prompts: Sequence[str], reward_fn: RewardFn, config: Any,
                 *, gold_fn: GoldFn | None = None, gold_answers: dict[str, str] | None = None):
        """Trains where ``setup`` put the policy, under its precision (:func:`load_policy`'s ``device``
        and ``precision``)."""
        self.setup = setup
        self.model = setup.model
        self.tokenizer = setup.tokenizer
        self.prompts = list(prompts)
        self.rendered = {p: render_chat_prompt(self.tokenizer, p) for p in self.prompts}
        self.reward_fn = reward_fn
        self.gold_fn = gold_fn
        self.gold_answers = dict(gold_answers or {})
        self.config = config
        self.device = _model_device(self.model)
        self.precision = setup.precision
        self.scaler = setup.grad_scaler()
        torch.manual_seed(config.seed)
        self.value_head = ValueHead(int(self.model.config.hidden_size)).to(self.device)
        groups = [{"params": setup.trainable_parameters(), "lr": config.learning_rate},
                  {"params": list(self.value_head.parameters()), "lr": config.value_learning_rate}]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        if config.adaptive_kl:
            self.kl_ctl: FixedKLController | AdaptiveKLController = AdaptiveKLController(
                config.beta, config.kl_target, config.kl_horizon)
        else:
            self.kl_ctl = FixedKLController(config.beta)
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                          else self.tokenizer.eos_token_id)
        self.settings = SamplingSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                         top_p=1.0, top_k=0)
        self._order: list[str] = []
        self._rng = random.Random(config.seed)

    # --- resuming ---------------------------------------------------------------------------
    def _scorers(self) -> list[RewardModelScorer]:
        found = (getattr(self.reward_fn, "scorer", None), self.gold_fn)
        return [sc for sc in found if isinstance(sc, RewardModelScorer)]

    def counters(self) -> dict:
        """The small JSON part of the state (beta, prompt order, random state, reward centring): cheap
        enough to take at the start of every step."""
        return {"beta": self.kl_ctl.beta, "order": list(self._order), "rng": self._rng.getstate(),
                "scorers": [sc.calibration() for sc in self._scorers()]}

    def tensors(self) -> dict:
        """The trainable weights (policy and value head) and the optimiser's state."""
        return {"model": trainable_state(self.model), "value_head": self.value_head.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: TrainingState) -> None:
        """Continue from a state saved by :func:`run_ppo` (weights, optimiser, beta, order, centring)."""
        load_trainable_state(self.model, state.tensors["model"])
        self.value_head.load_state_dict(state.tensors["value_head"])
        self.optimizer.load_state_dict(state.tensors["optimizer"])
        saved = state.extra["trainer"]
        self.kl_ctl.beta = float(saved["beta"])
        self._order = list(saved["order"])
        self._rng.setstate(random_state(saved["rng"]))
        scorers = self._scorers()
        if len(scorers) != len(saved["scorers"]):
            raise ValueError("The saved training state has a different reward set-up; start a new run instead.")
        for sc, calibration in zip(scorers, saved["scorers"]):
            sc.restore_calibration(calibration)

    # --- rollouts --------------------------------------------------------------------------
    def next_prompts(self) -> list[str]:
        out = []
        while len(out) < self.config.batch_size:
            if not self._order:
                self._order = list(self.prompts)
                self._rng.shuffle(self._order)
            out.append(self._order.pop())
        return out

    def autocast(self):
        """The autocast context of the policy's forward passes (a no-op for float32)."""
        return self.setup.autocast()

    def values_and_logprobs(self, batch: TokenBatch, *, with_entropy: bool = False):
        with self.autocast():
            logp, entropy, hidden = completion_logprobs_and_hidden(self.model, batch, with_entropy=with_entropy,
                                                                   temperature=self.config.temperature)
        if self.config.value_backbone == "detached":
            hidden = hidden.detach()
        values = self.value_head(hidden) * batch.completion_mask  # float32, outside autocast
        return logp, entropy, values

    def rollout(self, step: int, on_step: Callable[[], None] | None = None) -> Rollout:
        c = self.config
        prompts = self.next_prompts()
        seeds = [c.seed * 1_000_003 + step * 4099 + i for i in range(len(prompts))]
        with self.autocast():
            samples = sample_for_training(self.model, self.tokenizer, [self.rendered[p] for p in prompts],
                                          self.settings, seeds, on_step=on_step, batch_size=len(prompts))
        batch = batch_from_samples(samples, self.pad_id).to(self.device)
        mask = batch.completion_mask
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                old_logp, _, old_values = self.values_and_logprobs(batch)
                ref_logp = self.setup.reference_logprobs(batch, temperature=c.temperature).float()
        finally:
            self.model.train(was_training)
        texts = [s.text for s in samples]
        metas = [self.meta(p, len(s.completion_ids)) for p, s in zip(prompts, samples)]
        components = {k: torch.as_tensor(v).detach().float().reshape(-1)
                      for k, v in self.reward_fn(prompts, texts, metas).items()}
        score = torch.stack(list(components.values())).sum(0) if components else torch.zeros(len(texts))
        if not bool(torch.isfinite(score).all()):
            bad = [name for name, v in components.items() if not bool(torch.isfinite(v).all())]
            raise ValueError(f"the reward is not a finite number for some completions (components: {', '.join(bad)})")
        rewards, kl = shaped_rewards(score, old_logp, ref_logp, mask, self.kl_ctl.beta)
        advantages, returns = gae(rewards, old_values, mask, c.gamma, c.lam)
        if c.whiten_advantages:
            advantages = whiten(advantages, mask)
        return Rollout(prompts, texts, metas, batch, old_logp, old_values, ref_logp, kl, score, components,
                       advantages, returns, [s.completion.finish_reason == "stop" for s in samples])

    def meta(self, prompt: str, completion_tokens: int) -> dict:
        out: dict[str, Any] = {"completion_tokens": int(completion_tokens)}
        if prompt in self.gold_answers:
            out["gold_answer"] = self.gold_answers[prompt]
        return out

    # --- the update ------------------------------------------------------------------------
    def update(self, ro: Rollout, cancel: Callable[[], None] | None = None) -> dict[str, float]:
        c = self.config
        n = len(ro.batch)
        self.model.train()
        totals = {"train/loss": 0.0, "train/value_loss": 0.0, "train/clip_fraction": 0.0, "train/entropy": 0.0,
                  "train/approx_kl": 0.0, "train/grad_norm": 0.0}
        count = 0
        params = self.setup.trainable_parameters() + list(self.value_head.parameters())
        for _ in range(c.ppo_epochs):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self._rng.randrange(2 ** 31)))
            for start in range(0, n, c.minibatch_size):
                if cancel is not None:
                    cancel()
                rows = order[start:start + c.minibatch_size]
                mb = ro.batch.select(rows)
                mask = mb.completion_mask
                logp, entropy, values = self.values_and_logprobs(mb, with_entropy=True)
                pg, clip_fraction, approx_kl = policy_loss(logp, ro.old_logp[rows], ro.advantages[rows], mask,
                                                           c.cliprange)
                vf = value_loss(values, ro.old_values[rows], ro.returns[rows], mask, c.cliprange_value)
                mean_entropy = masked_mean(entropy, mask)
                loss = pg + c.vf_coef * vf - c.entropy_coef * mean_entropy
                self.optimizer.zero_grad(set_to_none=True)
                backward(loss, self.optimizer, self.scaler)  # fp16: unscaled again before the norm
                if c.max_grad_norm > 0:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm))
                else:
                    grad_norm = float(torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in params
                                                     if p.grad is not None)))
                optimizer_step(self.optimizer, self.scaler)
                for key, value in (("train/loss", float(loss.detach())), ("train/value_loss", float(vf.detach())),
                                   ("train/clip_fraction", clip_fraction),
                                   ("train/entropy", float(mean_entropy.detach())),
                                   ("train/approx_kl", approx_kl), ("train/grad_norm", grad_norm)):
                    totals[key] += value
                count += 1
        return {k: v / max(count, 1) for k, v in totals.items()}

    # --- metrics ---------------------------------------------------------------------------
    def rollout_metrics(self, ro: Rollout, beta: float) -> dict[str, float]:
        mask = ro.batch.completion_mask
        lengths = mask.sum(-1)
        seq_kl = ro.kl.sum(-1)
        out = {"reward/mean": float(ro.score.mean()),
               "reward/std": float(ro.score.std()) if len(ro.score) > 1 else 0.0,
               "kl/token_mean": float(masked_mean(ro.kl, mask)),
               "kl/seq_mean": float(seq_kl.mean()),
               "kl/beta": float(beta),
               "completions/mean_length": float(lengths.mean()),
               "completions/min_length": float(lengths.min()), "completions/max_length": float(lengths.max()),
               "completions/stopped_fraction": sum(ro.stopped) / max(len(ro.stopped), 1)}
        out["kl/sqrt_seq"] = math.sqrt(max(out["kl/seq_mean"], 0.0))
        for name, value in ro.components.items():
            out[f"reward/{name}"] = float(value.mean())
        return out


def run_ppo(trainer: PPOTextTrainer, ctx: JobContext, *, progress_span: tuple[float, float] = (0.0, 1.0),
            on_rollout: Callable[[int], dict[str, float] | None] | None = None, resumable: bool = False,
            save_steps: int = 0, job_state: dict | None = None) -> dict:
    """Steps ``0 .. steps-1`` (rollout + update) and a final rollout at ``steps``; returns the result dict.

    ``on_rollout(step)``, when given, runs after each rollout and before that step's update (so it sees the
    policy after ``step`` updates, the final one at ``step == steps``); the metrics it returns are logged
    with the step's own.

    ``resumable``: continue from ``ctx.resume_from`` when set, and save a state (``ctx.save_state``, with
    the caller's ``job_state`` JSON) when cancelled and every ``save_steps`` steps. A cancel then stops
    before or after a step's update, never inside it (a half-done update could not be resumed)."""
    c = trainer.config
    started = time.monotonic()
    history: list[dict[str, float]] = []
    lo, hi = progress_span
    start = 0
    state = ctx.resume_from if resumable else None
    if state is not None:
        trainer.load_state(state)
        history = state.extra["history"]
        start = state.step + 1
        state.restore_random()

    def save(done: int, counters: dict) -> None:
        if resumable and done >= 0:
            # the first and last 3 steps are all the result reads (window <= 3)
            kept = history if len(history) <= 6 else history[:3] + history[-3:]
            ctx.save_state(done, trainer.tensors(), {"trainer": counters, "history": kept, "job": job_state or {}})

    for step in range(start, c.steps + 1):
        counters = trainer.counters() if resumable else {}  # what this step starts from
        try:
            ctx.raise_if_cancelled()
            beta = trainer.kl_ctl.beta
            ro = trainer.rollout(step, on_step=ctx.raise_if_cancelled)
            metrics = trainer.rollout_metrics(ro, beta)
            gold = None
            if trainer.gold_fn is not None and c.eval_every and (step % c.eval_every == 0 or step == c.steps):
                out = trainer.gold_fn(ro.prompts, ro.texts, ro.metas)
                parts = dict(out) if isinstance(out, dict) else {"reward": out}
                for name, values in parts.items():
                    metrics[f"gold/{name}"] = float(torch.as_tensor(values).float().mean())
                gold = torch.as_tensor(parts["reward"]).float().reshape(-1)
            trainer.kl_ctl.update(metrics["kl/seq_mean"], len(ro.batch))
            ctx.raise_if_cancelled()
            if on_rollout is not None:
                metrics.update(on_rollout(step) or {})
            ctx.raise_if_cancelled()
        except JobCancelled:  # before this step's update: the state after the previous step
            save(step - 1, counters)
            raise
        if step < c.steps:
            metrics.update(trainer.update(ro, cancel=None if resumable else ctx.raise_if_cancelled))
        metrics["memory/peak_rss_mb"] = peak_rss_mb()
        elapsed = time.monotonic() - started
        metrics["time/steps_per_second"] = (step + 1 - start) / elapsed if elapsed > 0 else 0.0
        ctx.metrics(step, metrics)
        _publish_samples(ctx, step, ro, gold, c.samples_per_step)
        history.append(metrics)
        ctx.progress(lo + (hi - lo) * (step + 1) / (c.steps + 1), 1.0,
                     f"step {step}/{c.steps}: reward {metrics['reward/mean']:.3f}, KL {metrics['kl/seq_mean']:.3f}")
        if resumable and ctx.cancelled and step == c.steps:  # after the final rollout: only the result is left
            save(step, trainer.counters())
            raise JobCancelled("cancelled")
        if save_steps and (step + 1) % save_steps == 0 and step < c.steps:
            save(step, trainer.counters())
    first = history[0] if history else {}
    last = history[-1] if history else {}
    result = {"steps": c.steps,
              "reward_first": first.get("reward/mean"), "reward_last": last.get("reward/mean"),
              "kl_first": first.get("kl/seq_mean"), "kl_last": last.get("kl/seq_mean"),
              "length_first": first.get("completions/mean_length"),
              "length_last": last.get("completions/mean_length"),
              "beta_last": last.get("kl/beta"),
              "wall_seconds": round(time.monotonic() - started, 2), "peak_rss_mb": round(peak_rss_mb(), 1)}
    if "gold/reward" in first:
        result["gold_first"] = first["gold/reward"]
        result["gold_last"] = last.get("gold/reward")
    # single steps are noisy (one batch): means over the first and last `window` rollouts as well
    window = max(1, min(3, (c.steps + 1) // 2))  # len(history) // 2 of an uninterrupted run
    result["window"] = window
    for name, key in (("reward", "reward/mean"), ("gold", "gold/reward"), ("gold_centred", "gold/centred"),
                      ("kl", "kl/seq_mean"), ("length", "completions/mean_length")):
        head = [h[key] for h in history[:window] if key in h]
        tail = [h[key] for h in history[-window:] if key in h]
        if head and tail:
            result[f"{name}_window_first"] = sum(head) / len(head)
            result[f"{name}_window_last"] = sum(tail) / len(tail)
    return result


def _publish_samples(ctx: JobContext, step: int, ro: Rollout, gold: torch.Tensor | None, count: int) -> None:
    lengths = ro.batch.completion_mask.sum(-1)
    for i in range(min(count, len(ro.texts))):
        payload = {"step": step, "prompt": ro.prompts[i], "response": ro.texts[i], "reward": float(ro.score[i]),
                   "components": {k: float(v[i]) for k, v in ro.components.items()}, "length": int(lengths[i]),
                   "kl": float(ro.kl[i].sum())}
        if gold is not None:
            payload["gold"] = float(gold[i])
        ctx.sample(SAMPLE_KIND, payload, step=step)


def save_checkpoint(trainer: PPOTextTrainer, ctx: JobContext, name: str, step: int, meta: dict,
                    card: Any = None) -> dict:
    """Store the policy (and its value head) under the run's folder, with its model card ``card``, and
    register a checkpoint."""
    if ctx.project_path is None or ctx.run_id is None:
        ctx.log("no project: the policy is not saved")
        return {}
    from safetensors.torch import save_file

    project = ctx.project()
    folder = project.run_folder(ctx.run_id) / name
    save_policy(trainer.setup, folder, meta=meta, card=card)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainer.value_head.state_dict().items()},
              str(Path(folder) / "value_head.safetensors"))
    cid = project.add_checkpoint(ctx.run_id, CHECKPOINT_KIND, folder, step=step, meta=meta)
    return {"checkpoint_id": cid, "path": str(folder)}


#: prompt tokens assumed by the GPU memory estimate (a chat-templated prompt of a few sentences)
PROMPT_TOKENS_ESTIMATE = 256


def train_ppo_text(config: PPOTextConfig, ctx: JobContext) -> dict:
    set_threads(config.threads)
    device, precision = job_device(config)  # DeviceError (a sentence) before anything is loaded
    prompts, gold_answers = ppo_prompts(config, ctx)
    ctx.progress(0.0, message=f"Loading the policy and the reward ({len(prompts)} prompts)")
    reward_fn = make_reward_fn(config, ctx, device=device, precision=precision)
    gold_fn = _gold_from_model(config.gold_reward_model, ctx, config.normalize_reward, device=device,
                               precision=precision) if config.gold_reward_model.strip() else None
    setup = load_policy(config.model, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                        gradient_checkpointing=config.gradient_checkpointing, need_reference=True, ctx=ctx,
                        device=device, precision=precision,
                        batch_shape=(config.minibatch_size, PROMPT_TOKENS_ESTIMATE + config.max_new_tokens))
    ctx.raise_if_cancelled()
    trainer = PPOTextTrainer(setup, prompts, reward_fn, config, gold_fn=gold_fn, gold_answers=gold_answers)
    # the optimised reward model and the held-out gold one are centred on the same reference completions
    scorers = [sc for sc in (getattr(reward_fn, "scorer", None), gold_fn) if isinstance(sc, RewardModelScorer)]
    baseline: dict[str, float] = {}
    if ctx.resume_from is not None:  # the centring is restored with the state: the policy is not the reference now
        baseline = ctx.resume_from.extra["job"].get("baseline", {})
    elif scorers and config.normalize_reward and config.reward_baseline == "prompt":
        baseline = calibrate_on_reference(scorers, setup, prompts, config.baseline_samples, trainer.settings,
                                          config.seed, ctx)
        ctx.log(f"reward baseline: {config.baseline_samples} reference completions for each of "
                f"{int(baseline['prompts'])} prompts in {baseline['seconds']:.1f} s; within-prompt spread "
                + ", ".join(f"{sc.scale:.4g}" for sc in scorers))
    result = run_ppo(trainer, ctx, resumable=True, save_steps=config.save_steps, job_state={"baseline": baseline})
    result.update(lora=setup.lora, lora_rank=setup.lora_rank)
    result.update(devices.device_record(device, precision))
    if baseline:
        result.update(baseline_prompts=int(baseline["prompts"]), baseline_scale=baseline["scale"],
                      baseline_offset=baseline["offset"], baseline_seconds=round(baseline["seconds"], 2))
    if config.save:
        card = policy_card("ppo_text", config, setup, ctx, training_data={"prompts": len(prompts), "steps": config.steps},
                           result=result)
        result.update(save_checkpoint(trainer, ctx, "ppo_policy", config.steps,
                                      {"job": "ppo_text", "base_model": setup.model_id,
                                       "reward_model": config.reward_model, "reward": config.reward,
                                       "steps": config.steps, "reward_last": result["reward_last"]}, card))
    return result
