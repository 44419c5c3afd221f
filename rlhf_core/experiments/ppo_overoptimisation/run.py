"""PPO over-optimisation demo (Gao, Schulman & Hilton 2022): job ``ppo_demo``, also
``python -m rlhf_core demo ppo --steps N --seed S --beta B [--model PATH]``.

1. A hidden GOLD reward stands in for what people really want. Here it is a simple programme
   (:func:`gold_reward`): the share of the prompt's key words (words of 4+ letters that are not
   stop words, matched on their first 5 letters) that the response mentions, minus
   ``gold_length_weight`` per completion token beyond ``gold_length_limit`` (a preference for
   on-topic, short answers; the limit is below the completion cap so that it can matter in a
   short CPU run). With ``gold_repeat_weight`` w > 0 the gold also loses w times the share of the
   response's content words that repeat an earlier one (:func:`repetition_share`): late samples of
   beta-0 runs stuffed key words ("your interviewer's interviewer feedback") or looped ("bike bike
   bike"), which the key-word gold alone scored as well as a real answer.
2. Synthetic preferences: ``label_samples`` responses per prompt are sampled from the untouched
   policy; every pair of responses to the same prompt is labelled by the gold reward (the higher
   one wins; equal gold is a tie, target 0.5).
3. A PROXY reward model learns those labels with the Bradley-Terry loss, reusing
   :mod:`rlhf_core.text.reward_model` (a causal-LM backbone + a scalar head on the last token).
   ``proxy_train = "head"`` (default, cheap on CPU) keeps the backbone frozen: the last-token
   features of every labelled text are computed once and only the head is fitted (a linear probe
   on the backbone's features); ``"full"`` fine-tunes the whole model with the reward-model job's
   own training step. A quarter of the pairs is held out to measure how well the proxy agrees
   with the gold reward.
4. PPO (:mod:`rlhf_core.trainers.text.ppo`) optimises the proxy (centred per prompt, see below) with a
   per-token KL penalty ``beta``; every step logs the proxy reward (``reward/model``), the gold
   reward of the same completions (``gold/reward``), the same gold in the proxy's units
   (``gold/centred``: minus the mean gold of the reference's label samples for the prompt, divided by
   their pooled within-prompt spread ``gold_scale``, so 0 is the reference on both scales) and
   ``kl/sqrt_seq`` = sqrt(KL), the x axis of Gao et al.'s plots.

The JSON last line (``demo ppo``): ``reward_first``/``reward_last`` (the proxy reward, standardised,
of the first and the final rollout), ``gold_first``/``gold_last``, ``kl_last`` (per-sequence KL to
the reference) and ``sqrt_kl_last``, ``mean_length_first``/``mean_length_last``, ``wall_seconds``
(and the time of each phase, ``seconds_per_step`` = the PPO phase over ``steps``, the final rollout
included); one rollout of 8 completions is noisy, so ``*_window_first`` / ``*_window_last`` also give
the means over the first and last ``window`` (3) rollouts. The over-optimisation verdict
(:func:`overoptimisation_summary`): ``gold_peak`` (the largest centred 3-step mean of the gold reward)
and ``gold_peak_step``, ``proxy_at_gold_peak``, ``gold_last_window`` / ``proxy_last_window`` (the
last 3 rollouts), ``gold_step_noise``, ``overoptimised`` (proxy still rising after the gold peak AND
the gold down by more than ``overopt_margin``), and ``curve`` (per-rollout step, proxy, gold, KL).
``goodhart_gap`` (:func:`goodhart_gap`) = ``reward_window_last - gold_centred_window_last``: how much
better than the reference the proxy says the final policy is, minus how much better it is by the gold,
in reference spreads — the part of the proxy's gain that is not real.

After PPO, :func:`heldout_win_rates` compares the final policy's greedy response with the
reference's on ``eval_prompts`` prompts used neither for the labels nor for PPO, judged by the
proxy and by the gold reward: ``win_rate_proxy``, ``win_rate_gold``, ``eval_proxy_policy`` /
``eval_proxy_reference`` (standardised like ``reward/model``), ``eval_gold_policy`` /
``eval_gold_reference`` and ``eval_length_*``.

Then :func:`paired_goodhart_eval` measures the gap on ``paired_eval_samples`` (8) fresh responses to
each training prompt, drawn by the final policy and by the reference with the same random numbers
(common random numbers: where the two models agree they write the same text, so a pair's difference
is 0 and only the policy's real change adds noise): ``paired_proxy_gain``, ``paired_gold_gain``,
``paired_goodhart_gap`` (their difference), each with ``*_se`` (standard error over the pairs),
``paired_identical`` (the share of pairs with the same text) and ``paired_seconds``. With
``paired_eval_every`` N it also runs every N steps (logged as ``eval/paired_*`` at that step: a
low-noise proxy and gold curve against sqrt(KL)); the reference's side is sampled once. The label
samples' per-prompt means cancel in each pair, so this gap, unlike ``goodhart_gap``, carries none of
their noise, and its standard error says whether one run's gap is real. The checks together
(:func:`paired_curve`): ``paired_curve`` (step, KL, proxy and gold gain +- SE, from the reference at
step 0), ``paired_gold_peak_step`` / ``paired_gold_peak``, ``paired_gold_drop`` +- ``paired_gold_drop_se``
(peak minus last, pair by pair) and ``paired_overoptimised``: the gold fell past its peak by more than
2 SE while the proxy kept rising — Gao et al.'s PPO curve, read on one run.

Before PPO, with ``bon_samples`` N (32; 0 = skip), :func:`best_of_n_curve` reads the proxy's
over-optimisation without any training: N fresh reference responses per training prompt, and for
n = 1, 2, 4 ... N the expected proxy and gold of the proxy's pick among n (unbiased over all n-subsets)
at KL = log n - (n - 1) / n (logged as ``bon/proxy``, ``bon/gold``, ``bon/kl`` at step n; the JSON has
``bon_curve``, ``bon_gold_peak_n``, ``bon_gold_drop`` +- ``bon_gold_drop_se``, ``bon_overoptimised``).
``--steps 0`` runs only this.

What to look for: with ``beta > 0`` the proxy reward rises while the KL stays bounded; with
``beta = 0`` the policy drifts further (KL grows) and the proxy keeps rising while the gold reward
stalls or falls: the proxy was fitted on the reference policy's samples and is wrong away from
them. On a 2-core CPU only short runs fit (the defaults take about 25 minutes).
The proxy's scores are centred per prompt (``reward_baseline = "prompt"``, the default): a
completion scores its proxy reward minus the mean proxy reward of the reference's label samples for
the same prompt, in units of their pooled within-prompt spread. Without it (``"batch"``: standardised
on the first rollout) most of the reward's spread in a batch of 8 different prompts says which
prompt the proxy likes, not which answer, the linear value head does not learn that in 20 steps, and
the policy gradient is mostly noise: the gold reward of the rollouts fell.
To see the gold turn down past its peak (Gao et al.'s decline) the policy has to go further along the
KL axis than the defaults reach: ``demo ppo --beta 0 --learning-rate 4e-5 --steps 40 --bon-samples 0``.
Results, and the record of every test run on it: docs/experiments/ppo-overoptimisation.md.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlhf_core.config import param
from rlhf_core.jobs import JobContext
from rlhf_core.rewards.bradley_terry import bradley_terry_loss, pair_accuracy
from rlhf_core.analysis.text_evaluation import win_rate_from_scores
from rlhf_core.text.generation import SamplingSettings
from rlhf_core.text.gold_eval import sample_completions
from rlhf_core.text.pairs import TextPair, split_pairs
from rlhf_core.trainers.text.ppo import PPOTextConfig, PPOTextTrainer, PromptBaseline, RewardModelScorer, run_ppo
from rlhf_core.text.prompts import load_builtin_set
from rlhf_core.text.reward_model import format_pair_text, load_base_reward_model, score_responses
from rlhf_core.trainers.text.reward_model import evaluate_reward_pairs, train_step
from rlhf_core.text.rl_common import load_policy, make_optimizer, render_chat_prompt, sample_for_training, set_threads

_WORD = re.compile(r"[a-z]+")
STOP_WORDS = frozenset("""
about above after again against also among another answer anything around because been before being
below between both briefly could describe does doing down during each either else enough every example
explain from give gives given have having here into just kind kinds know least less like list make many
more most much must name near need only other over please same should show since some something such
sure tell than that their them then there these they thing things this those through under until used
using very want what when where whether which while will with within without word words would write
your sentence sentences short simple
""".split())


# ------------------------------------------------------------------------------- the hidden gold reward
def key_words(prompt: str) -> list[str]:
    """The prompt's key words: lower-case words of 4+ letters that are not stop words (in order, unique)."""
    out: list[str] = []
    for w in _WORD.findall(prompt.lower()):
        if len(w) >= 4 and w not in STOP_WORDS and w not in out:
            out.append(w)
    return out


def keyword_coverage(prompt: str, response: str) -> float:
    """Share of the prompt's key words whose first 5 letters start a word of the response (0 when none)."""
    keys = key_words(prompt)
    if not keys:
        return 0.0
    stems = {w[:5] for w in _WORD.findall(response.lower())}
    return sum(1 for k in keys if k[:5] in stems) / len(keys)


def repetition_share(response: str) -> float:
    """Share of the response's content words (4+ letters, not stop words, compared on their first 5
    letters, as key words are) that repeat an earlier content word of the same response; 0 when it has
    none. "bike bike bike bike" -> 0.75 (3 of 4 repeat); "budget rule ... budget" -> 1/3."""
    words = [w[:5] for w in _WORD.findall(response.lower()) if len(w) >= 4 and w not in STOP_WORDS]
    return (len(words) - len(set(words))) / len(words) if words else 0.0


def gold_reward(prompt: str, response: str, completion_tokens: int, *, length_limit: int = 20,
                length_weight: float = 0.03, repeat_weight: float = 0.0) -> float:
    """Keyword coverage minus ``length_weight`` per completion token beyond ``length_limit``, minus
    ``repeat_weight`` times :func:`repetition_share` (0 by default: key words and length only)."""
    gold = keyword_coverage(prompt, response) - length_weight * max(0, int(completion_tokens) - length_limit)
    return gold - repeat_weight * repetition_share(response) if repeat_weight else gold


# ------------------------------------------------------------------------------- did it over-optimise?
def _centred_means(values: Sequence[float], window: int) -> list[float]:
    """Mean of ``values[i - h .. i + h]`` (``h = window // 2``) for every ``i`` with a full window."""
    h = window // 2
    return [sum(values[i - h:i + h + 1]) / (2 * h + 1) for i in range(h, len(values) - h)]


def overoptimisation_summary(steps: Sequence[int], proxy: Sequence[float], gold: Sequence[float],
                             kl_seq: Sequence[float], *, window: int = 3, margin: float = 0.15) -> dict:
    """Gao et al.'s verdict on one run from its per-rollout proxy, gold and per-sequence KL.

    One rollout of 8 completions is noisy, so everything is read through ``window``-step means:

    - ``gold_peak``: the largest centred moving mean of the gold reward; ``gold_peak_step`` its
      centre step; ``proxy_at_gold_peak``: the proxy's centred mean at that same step;
    - ``gold_last_window`` / ``proxy_last_window``: the means over the last ``window`` rollouts (the
      last full window, so a peak in it makes ``gold_last_window == gold_peak``);
    - ``gold_step_noise``: the gold reward's step-to-step noise, ``sqrt(mean(diff^2) / 2)`` (the
      von Neumann estimate; a trend inflates it a little);
    - ``overoptimised``: ``proxy_last_window > proxy_at_gold_peak`` (the proxy still went up after
      the gold peak) and ``gold_last_window < gold_peak - margin`` (the gold came down by more than
      noise). The default margin 0.15 is the 95th percentile of ``gold_peak - gold_last_window`` for a
      gold reward with NO trend and the per-step noise measured on SmolLM2 (0.07-0.09 with 8
      completions per rollout, 20-30 rollouts; simulated), so a flat noisy run passes it about 1 time
      in 20.

    Steps without a gold value (NaN) are dropped. With fewer than ``window`` rollouts every value is
    None and ``overoptimised`` is False.
    """
    rows = [(int(s), float(p), float(g), float(k)) for s, p, g, k in zip(steps, proxy, gold, kl_seq)
            if math.isfinite(float(g)) and math.isfinite(float(p))]
    out: dict = {"gold_peak": None, "gold_peak_step": None, "proxy_at_gold_peak": None, "gold_last_window": None,
                 "proxy_last_window": None, "gold_step_noise": None, "overopt_margin": float(margin),
                 "overoptimised": False,
                 "curve": {"step": [r[0] for r in rows], "proxy": [round(r[1], 4) for r in rows],
                           "gold": [round(r[2], 4) for r in rows], "kl_seq": [round(r[3], 3) for r in rows]}}
    if rows and kl_seq:
        out["sqrt_kl_last"] = math.sqrt(max(float(kl_seq[-1]), 0.0))
    window = max(1, int(window)) | 1  # odd, so that a window has a centre step
    if len(rows) < window:
        return out
    s, p, g = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    gold_means, proxy_means = _centred_means(g, window), _centred_means(p, window)
    peak = max(range(len(gold_means)), key=lambda i: gold_means[i])  # the first of equal peaks
    h = window // 2
    out.update(gold_peak=gold_means[peak], gold_peak_step=s[peak + h], proxy_at_gold_peak=proxy_means[peak],
               gold_last_window=gold_means[-1], proxy_last_window=proxy_means[-1])
    if len(g) >= 2:
        out["gold_step_noise"] = math.sqrt(sum((b - a) ** 2 for a, b in zip(g, g[1:])) / (len(g) - 1) / 2)
    out["overoptimised"] = bool(proxy_means[-1] > proxy_means[peak] and gold_means[-1] < gold_means[peak] - margin)
    return out


# ------------------------------------------------------------------------------- the demo
@dataclass
class PPODemoConfig:
    model: str = param("", "Policy: a causal-LM folder ('' = the bundled SmolLM2-135M-Instruct).")
    proxy_model: str = param("", "Backbone of the proxy reward model ('' = the policy's model).")
    proxy_train: str = param("head", "head: frozen backbone, fit only the scalar head on cached features "
                             "(cheap); full: fine-tune the whole proxy (the text_reward_model training step).",
                             choices=("head", "full"))
    steps: int = param(20, "PPO steps (0 = no PPO: only the best-of-n curve, with bon_samples > 0).", min=0,
                       max=10_000)
    beta: float = param(1.0, "KL coefficient (0 = no KL penalty: watch the over-optimisation).", min=0.0)
    adaptive_kl: bool = param(False, "Adapt beta towards kl_target (Ziegler et al.).")
    kl_target: float = param(6.0, "Adaptive KL target per sequence (nats).", min=0.0, min_inclusive=False)
    seed: int = param(0, "Random seed.", min=0)
    prompt_set: str = param("starter", "Built-in prompt set.")
    category: str = param("helpfulness", "Category of the set (empty: all).")
    n_prompts: int = param(8, "Prompts used for the labels and for PPO.", min=1, max=10_000)
    label_samples: int = param(4, "Responses per prompt for the synthetic labels (all pairs are labelled).",
                               min=2, max=32)
    proxy_epochs: int = param(200, "head: full-batch Adam steps on the cached features; full: epochs of "
                              "minibatches over the label pairs.", min=1, max=100_000)
    proxy_learning_rate: float = param(1e-2, "Proxy learning rate (head: Adam on the head; full: AdamW on "
                                       "everything, use about 1e-5).", min=0.0, min_inclusive=False)
    proxy_batch_size: int = param(4, "full only: pairs per proxy training step.", min=1)
    proxy_max_length: int = param(192, "Longest proxy input in tokens.", min=16)
    gold_length_limit: int = param(20, "Gold reward: completion tokens allowed before the length penalty.", min=0)
    gold_length_weight: float = param(0.03, "Gold reward: penalty per token beyond the limit.", min=0.0)
    gold_repeat_weight: float = param(0.0, "Gold reward: penalty times the share of the response's content words "
                                      "that repeat an earlier one (keyword stuffing, 'bike bike bike'; 1 = as bad "
                                      "as missing the same share of the prompt's key words; 0 = off).", min=0.0)
    batch_size: int = param(32, "PPO completions per step (the prompts in turn: 32 = 4 per prompt with 8 prompts; "
                            "far fewer and the proxy hardly moves).", min=1, max=4096)
    minibatch_size: int = param(8, "PPO minibatch size.", min=1, max=4096)
    ppo_epochs: int = param(2, "PPO epochs per rollout.", min=1, max=64)
    learning_rate: float = param(2e-5, "Policy learning rate (LoRA needs about 10x more). With beta 0, 4e-5 and 40 "
                                 "steps push the policy far enough along the KL axis for the gold to turn down; "
                                 "at 2e-5 it rarely does.", min=0.0, min_inclusive=False)
    value_learning_rate: float = param(1e-4, "Value head learning rate.", min=0.0, min_inclusive=False)
    value_backbone: str = param("detached", "shared: the value loss also trains the transformer (x vf_coef); "
                                "detached: only the value head learns from it.", choices=("shared", "detached"))
    lora_rank: int = param(0, "LoRA rank for the policy (0 = full fine-tune).", min=0, max=1024)
    max_new_tokens: int = param(24, "Longest completion in tokens.", min=1, max=4096)
    temperature: float = param(1.0, "Sampling temperature.", min=0.0, min_inclusive=False, max=5.0)
    threads: int = param(1, "torch threads.", min=0, max=256)
    eval_prompts: int = param(16, "Held-out prompts (used neither for the labels nor for PPO) on which the final "
                              "policy's greedy response is compared with the reference's, judged by the proxy and "
                              "by the gold reward (0 = skip).", min=0, max=10_000)
    reward_baseline: str = param("prompt", "How the proxy's scores are centred before PPO: batch = standardised "
                                 "on the first rollout; prompt = each prompt's score minus the mean score of the "
                                 "reference's label samples for that prompt (a per-prompt baseline), in units of "
                                 "their pooled within-prompt spread.", choices=("batch", "prompt"))
    paired_eval_samples: int = param(8, "After PPO, responses per training prompt sampled from the final policy AND "
                                     "from the reference with the same random numbers, scored by the proxy and the "
                                     "gold: the paired Goodhart gap with its standard error (0 = skip).",
                                     min=0, max=256)
    paired_eval_every: int = param(5, "Also run the paired evaluation every N PPO steps, for a low-noise proxy and "
                                   "gold curve against sqrt(KL) (0 = only after the last step).", min=0, max=10_000)
    overopt_margin: float = param(0.15, "Summary: the gold reward's 3-step mean must end this far below its peak "
                                  "(and the proxy above its value there) to call the run over-optimised.", min=0.0)

    bon_samples: int = param(32, "Before PPO, the best-of-n curve (Gao et al.): this many fresh reference "
                             "responses per training prompt, scored by the proxy and the gold; the expected proxy and "
                             "gold of the proxy's pick among n of them for n = 1, 2, 4, ... (0 = skip).",
                             min=0, max=4096)

    def check(self) -> list[str]:
        problems = ["minibatch_size cannot be larger than batch_size"] if self.minibatch_size > self.batch_size else []
        if self.steps == 0 and self.bon_samples == 0:
            problems.append("nothing to run: steps is 0 (no PPO) and bon_samples is 0 (no best-of-n curve)")
        if self.bon_samples == 1:
            problems.append("bon_samples must be 0 (off) or at least 2")
        return problems


def _ppo_config(c: PPODemoConfig):
    return PPOTextConfig(model=c.model, reward_model="(proxy)", prompt_set=c.prompt_set, steps=c.steps,
                         batch_size=c.batch_size, minibatch_size=c.minibatch_size, ppo_epochs=c.ppo_epochs,
                         learning_rate=c.learning_rate, value_learning_rate=c.value_learning_rate,
                         value_backbone=c.value_backbone, beta=c.beta,
                         adaptive_kl=c.adaptive_kl, kl_target=c.kl_target, max_new_tokens=c.max_new_tokens,
                         temperature=c.temperature, lora_rank=c.lora_rank, seed=c.seed, threads=c.threads)


def gold_function(config: PPODemoConfig):
    """``gold_of(prompt, response, completion_tokens)``: :func:`gold_reward` with the demo's gold settings."""
    def gold_of(prompt: str, response: str, tokens: int) -> float:
        return gold_reward(prompt, response, tokens, length_limit=config.gold_length_limit,
                           length_weight=config.gold_length_weight, repeat_weight=config.gold_repeat_weight)
    return gold_of


def label_pairs(prompts: Sequence[str], samples, golds: Sequence[float]):
    """All pairs of responses to the same prompt, labelled by the gold reward (ties: 0.5)."""
    by_prompt: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_prompt.setdefault(s.prompt_index, []).append(i)
    pairs = []
    for idx, rows in sorted(by_prompt.items()):
        for a, b in itertools.combinations(rows, 2):
            ga, gb = golds[a], golds[b]
            target = 1.0 if ga > gb else 0.0 if ga < gb else 0.5
            pairs.append(TextPair(prompts[idx], samples[a].text, samples[b].text, target))
    return pairs


@torch.no_grad()
def _last_token_features(model, tokenizer, texts: Sequence[str], batch_size: int = 8) -> torch.Tensor:
    """The backbone's last-token hidden state of each formatted text (what the scalar head reads)."""
    feats = []
    for i in range(0, len(texts), batch_size):
        enc = model.encode(texts[i:i + batch_size], tokenizer)
        out = model.backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False)
        last = enc["attention_mask"].long().sum(1) - 1
        feats.append(out.last_hidden_state[torch.arange(len(last)), last].float())
    return torch.cat(feats)


def train_proxy(config: PPODemoConfig, train_pairs, held_pairs, ctx: JobContext, model_spec: str):
    """Fit the proxy reward model on the labelled pairs: (model, tokenizer, held-out accuracy, train accuracy)."""
    model, tokenizer, _ = load_base_reward_model(model_spec, max_length=config.proxy_max_length, seed=config.seed,
                                                 ctx=ctx)
    if config.proxy_train == "full":
        model.train()
        optimiser = make_optimizer(model.parameters(), config.proxy_learning_rate)
        rng = random.Random(config.seed)
        step = 0
        for _ in range(config.proxy_epochs):
            order = list(range(len(train_pairs)))
            rng.shuffle(order)
            for b in range(0, len(order), config.proxy_batch_size):
                ctx.raise_if_cancelled()
                step += 1
                batch = [train_pairs[i] for i in order[b:b + config.proxy_batch_size]]
                ctx.metrics(step, train_step(model, optimiser, batch, tokenizer))
        model.eval()
        _, train_acc = evaluate_reward_pairs(model, train_pairs, tokenizer)
        held_acc = evaluate_reward_pairs(model, held_pairs, tokenizer)[1] if held_pairs else float("nan")
        return model, tokenizer, held_acc, train_acc
    # head only: features once, then full-batch Adam on the linear head
    model.eval()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    everything = list(train_pairs) + list(held_pairs)
    texts = sorted({format_pair_text(tokenizer, p.prompt, r) for p in everything for r in (p.left, p.right)})
    index = {t: i for i, t in enumerate(texts)}
    ctx.raise_if_cancelled()
    feats = _last_token_features(model, tokenizer, texts)

    def columns(pairs):
        left = [index[format_pair_text(tokenizer, p.prompt, p.left)] for p in pairs]
        right = [index[format_pair_text(tokenizer, p.prompt, p.right)] for p in pairs]
        return torch.tensor(left), torch.tensor(right), torch.tensor([p.target for p in pairs])

    tl, tr, tt = columns(train_pairs)
    optimiser = torch.optim.Adam(model.head.parameters(), lr=config.proxy_learning_rate)
    log_every = max(1, config.proxy_epochs // 20)
    for step in range(1, config.proxy_epochs + 1):
        scores = model.head(feats).squeeze(-1)
        loss = bradley_terry_loss(scores[tl], scores[tr], tt)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % log_every == 0 or step == config.proxy_epochs:
            ctx.raise_if_cancelled()
            acc = pair_accuracy(scores[tl].detach(), scores[tr].detach(), tt)
            ctx.metrics(step, {"reward_model/loss": float(loss.detach()), "reward_model/train_accuracy": acc})
    with torch.no_grad():
        scores = model.head(feats).squeeze(-1)
        train_acc = pair_accuracy(scores[tl], scores[tr], tt)
        held_acc = float("nan")
        if held_pairs:
            hl, hr, ht = columns(held_pairs)
            held_acc = pair_accuracy(scores[hl], scores[hr], ht)
    return model, tokenizer, held_acc, train_acc


def heldout_win_rates(setup, proxy, proxy_tokenizer, prompts: Sequence[str], gold_of, *, max_new_tokens: int,
                      seed: int = 0, on_step=None) -> dict:
    """The trained policy against the frozen reference on ``prompts``: one greedy response each, judged
    twice, by the proxy reward model (what PPO optimised) and by the hidden gold reward (what was wanted).

    Returns ``win_rate_proxy`` / ``win_rate_gold`` (win 1, tie 0.5, loss 0; a tie is an equal score),
    the mean score of each side under each judge (``eval_proxy_policy`` ...), the mean response
    lengths and ``eval_prompts``. A policy that games the proxy wins under the proxy and loses under
    the gold reward. With LoRA the reference is the policy with its adapters switched off.
    """
    rendered = [render_chat_prompt(setup.tokenizer, p) for p in prompts]
    common = dict(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=seed, eos_token_ids=None,
                  on_step=on_step, batch_size=16)
    ours = [g[0] for g in sample_completions(setup.model, setup.tokenizer, rendered, 1, **common)]
    reference, switch_off = _reference_of(setup)
    with switch_off:
        theirs = [g[0] for g in sample_completions(reference, setup.tokenizer, rendered, 1, **common)]
    n = len(prompts)
    proxy_scores = score_responses(proxy, proxy_tokenizer, list(prompts) * 2,
                                   [s.text for s in ours] + [s.text for s in theirs]).tolist()
    gold_scores = [gold_of(p, s.text, len(s.completion_ids)) for p, s in zip(list(prompts) * 2, ours + theirs)]
    by_proxy = win_rate_from_scores(proxy_scores[:n], proxy_scores[n:])
    by_gold = win_rate_from_scores(gold_scores[:n], gold_scores[n:])

    def mean(xs):
        return sum(xs) / len(xs)

    return {"eval_prompts": n, "win_rate_proxy": by_proxy["win_rate"], "win_rate_gold": by_gold["win_rate"],
            "eval_proxy_policy": mean(proxy_scores[:n]), "eval_proxy_reference": mean(proxy_scores[n:]),
            "eval_gold_policy": mean(gold_scores[:n]), "eval_gold_reference": mean(gold_scores[n:]),
            "eval_length_policy": mean([len(s.completion_ids) for s in ours]),
            "eval_length_reference": mean([len(s.completion_ids) for s in theirs])}


def best_of_n_expectations(proxy: Sequence[float], gold: Sequence[float], n: int) -> tuple[float, float]:
    """Unbiased estimates, from N responses to one prompt, of the expected proxy and gold score of the
    response the proxy ranks highest among n drawn at random without replacement (Gao et al. 2022, after
    Nakano et al. 2021): with the responses sorted by proxy, the i-th lowest (1-based) is the best of a
    random n-subset with probability C(i-1, n-1) / C(N, n)."""
    big_n = len(proxy)
    if not 1 <= n <= big_n or len(gold) != big_n:
        raise ValueError(f"n must be in 1..{big_n} and proxy/gold the same length")
    order = sorted(range(big_n), key=lambda i: proxy[i])
    total = math.comb(big_n, n)
    weights = [math.comb(rank - 1, n - 1) / total for rank in range(1, big_n + 1)]
    return (sum(w * proxy[i] for w, i in zip(weights, order)), sum(w * gold[i] for w, i in zip(weights, order)))


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || reference) = log n - (n - 1) / n nats (Stiennon et al. 2020; exact for continuous scores)."""
    return math.log(n) - (n - 1) / n


def best_of_n_curve(proxy_by_prompt: Sequence[Sequence[float]], gold_by_prompt: Sequence[Sequence[float]],
                    ns: Sequence[int]) -> dict:
    """The best-of-n curve averaged over prompts: for each n the KL, and the proxy and gold expectations
    with their standard errors across prompts (the prompts are the independent units). Also the gold's
    peak (``gold_peak_n``, ``gold_peak``), its value at the largest n (``gold_last``) and ``gold_drop`` =
    peak - last with ``gold_drop_se`` (the SE of the per-prompt differences; the peak is chosen after
    looking, so this flatters the drop a little), and ``overoptimised``: the gold at the largest n is
    below its peak by more than 2 of those SEs while the proxy there is above its value at the peak."""
    curve: dict = {"n": [], "kl": [], "sqrt_kl": [], "proxy": [], "proxy_se": [], "gold": [], "gold_se": []}
    per_prompt_gold = []
    for n in ns:
        pairs = [best_of_n_expectations(p, g, n) for p, g in zip(proxy_by_prompt, gold_by_prompt)]
        (pm, pse), (gm, gse) = _mean_se([a for a, _ in pairs]), _mean_se([b for _, b in pairs])
        per_prompt_gold.append([b for _, b in pairs])
        curve["n"].append(int(n))
        curve["kl"].append(best_of_n_kl(n))
        curve["sqrt_kl"].append(math.sqrt(best_of_n_kl(n)))
        curve["proxy"].append(pm)
        curve["proxy_se"].append(pse)
        curve["gold"].append(gm)
        curve["gold_se"].append(gse)
    peak = max(range(len(ns)), key=lambda i: curve["gold"][i])
    drop, drop_se = _mean_se([a - b for a, b in zip(per_prompt_gold[peak], per_prompt_gold[-1])])
    return {"curve": curve, "gold_peak_n": curve["n"][peak], "gold_peak": curve["gold"][peak],
            "gold_last": curve["gold"][-1], "proxy_last": curve["proxy"][-1], "gold_drop": drop,
            "gold_drop_se": drop_se,
            "overoptimised": bool(drop > 2.0 * drop_se and curve["proxy"][-1] > curve["proxy"][peak])}


def _reference_of(setup):
    """The frozen reference and a context in which it answers (LoRA: the policy with its adapters off)."""
    import contextlib

    if setup.reference is not None:
        return setup.reference, contextlib.nullcontext()
    return setup.model, setup.model.disable_adapter()


def _mean_se(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample SD / sqrt(n); 0 for a single value)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


def paired_goodhart_eval(setup, proxy_fn, gold_fn, prompts: Sequence[str], k: int, *, settings, seed: int,
                         on_step=None, batch_size: int = 32, cache: dict | None = None,
                         pairs_out: list | None = None) -> dict:
    """The final policy against the frozen reference on ``prompts``, ``k`` sampled responses each, paired:
    response j to prompt i is drawn by both models with the same seed (the sampler draws each token by
    inverse CDF from one uniform per row, so where the two models agree they write the same text and the
    pair's difference is exactly 0). ``proxy_fn(prompts, texts)`` and ``gold_fn(prompts, texts, tokens)``
    return scores in the same units (reference spreads, as PPO saw them).

    Per pair: proxy gain = proxy(policy) - proxy(reference), gold gain likewise, gap = the difference.
    Returns their means and standard errors over the ``len(prompts) * k`` pairs (``paired_proxy_gain``,
    ``paired_gold_gain``, ``paired_goodhart_gap`` and ``*_se``), ``paired_n``, ``paired_identical`` (the
    share of pairs with the same text) and the mean lengths. Neither side's per-prompt baseline enters:
    it cancels in the differences, so the gap carries no noise from the label samples. Pass the same
    ``cache`` dict to repeated calls with the same arguments: the reference's side (texts, lengths and
    scores) is computed once. With ``pairs_out`` (a list), the per-pair proxy and gold gains are appended
    to it as one tuple ``(d_proxy, d_gold)``: :func:`paired_curve` compares checks pair by pair.
    """
    rows = [p for p in prompts for _ in range(k)]
    rendered = [render_chat_prompt(setup.tokenizer, p) for p in rows]
    seeds = [seed * 7919 + 500_009 + 31 * i for i in range(len(rows))]
    common = dict(on_step=on_step, batch_size=batch_size)  # sampling and scoring run without gradients
    cache = {} if cache is None else cache
    if "reference" not in cache:
        reference, switch_off = _reference_of(setup)
        with switch_off:
            theirs = sample_for_training(reference, setup.tokenizer, rendered, settings, seeds, **common)
        texts, tokens = [s.text for s in theirs], [len(s.completion_ids) for s in theirs]
        cache["reference"] = (texts, tokens, [float(x) for x in proxy_fn(rows, texts)],
                              [float(x) for x in gold_fn(rows, texts, tokens)])
    ref_texts, ref_tokens, ref_proxy, ref_gold = cache["reference"]
    ours = sample_for_training(setup.model, setup.tokenizer, rendered, settings, seeds, **common)
    texts, tokens = [s.text for s in ours], [len(s.completion_ids) for s in ours]
    d_proxy = [float(a) - b for a, b in zip(proxy_fn(rows, texts), ref_proxy)]
    d_gold = [float(a) - b for a, b in zip(gold_fn(rows, texts, tokens), ref_gold)]
    if pairs_out is not None:
        pairs_out.append((d_proxy, d_gold))
    n = len(rows)
    out: dict = {"paired_n": n, "paired_identical": sum(a == b for a, b in zip(texts, ref_texts)) / n,
                 "paired_length_policy": sum(tokens) / n, "paired_length_reference": sum(ref_tokens) / n}
    for name, xs in (("proxy_gain", d_proxy), ("gold_gain", d_gold),
                     ("goodhart_gap", [a - b for a, b in zip(d_proxy, d_gold)])):
        out[f"paired_{name}"], out[f"paired_{name}_se"] = _mean_se(xs)
    return out


def paired_curve(steps: Sequence[int], kl_seq: Sequence[float], pairs: Sequence[tuple[Sequence[float],
                                                                                      Sequence[float]]]) -> dict:
    """The paired checks of one run as a curve, and whether the gold fell past its peak (Gao et al.'s shape).

    ``pairs[j] = (d_proxy, d_gold)``: the per-pair gains of the check at ``steps[j]`` (KL ``kl_seq[j]``),
    all checks drawn with the same seeds against the same reference responses. The reference itself is
    the curve's origin (step 0, KL 0, every gain exactly 0: before any update the two sides write the
    same texts). ``paired_gold_peak_step`` is where the mean gold gain is highest (the origin included),
    ``paired_gold_drop`` = gold gain at the peak - at the last check, with ``paired_gold_drop_se`` the
    standard error of the per-pair differences (pair i of every check uses the same random numbers, so
    the checks' noise is correlated and this SE is the right one for the difference; the peak is chosen
    after looking, which flatters the drop a little). ``paired_overoptimised``: the drop is larger than 2
    of those SEs while the proxy gain at the last check is above its value at the peak. With no check,
    or the peak at the last check, the drop is 0 and the verdict False."""
    n = len(pairs[0][0]) if pairs else 0
    rows = [(0, 0.0, [0.0] * n, [0.0] * n)] + [(int(s), float(k), list(p), list(g))
                                               for s, k, (p, g) in zip(steps, kl_seq, pairs)]
    curve: dict = {"step": [], "kl": [], "proxy": [], "proxy_se": [], "gold": [], "gold_se": []}
    for s, k, p, g in rows:
        (pm, pse), (gm, gse) = (_mean_se(p), _mean_se(g)) if n else ((0.0, 0.0), (0.0, 0.0))
        for key, value in zip(curve, (s, k, pm, pse, gm, gse)):
            curve[key].append(value)
    peak = max(range(len(rows)), key=lambda i: curve["gold"][i])  # the first of equal peaks
    drop, drop_se = _mean_se([a - b for a, b in zip(rows[peak][3], rows[-1][3])]) if n else (0.0, 0.0)
    return {"paired_curve": curve, "paired_gold_peak_step": curve["step"][peak],
            "paired_gold_peak": curve["gold"][peak], "paired_gold_drop": drop, "paired_gold_drop_se": drop_se,
            "paired_overoptimised": bool(peak < len(rows) - 1 and drop > 2.0 * drop_se
                                         and curve["proxy"][-1] > curve["proxy"][peak])}


def run_ppo_demo(config: PPODemoConfig, ctx: JobContext) -> dict:
    set_threads(config.threads)
    started = time.monotonic()
    prompts = [r.text for r in load_builtin_set(config.prompt_set, config.category or None)]
    random.Random(config.seed).shuffle(prompts)
    eval_prompts = prompts[config.n_prompts:config.n_prompts + config.eval_prompts]
    prompts = prompts[:config.n_prompts]

    gold_of = gold_function(config)

    # 1-2. the untouched policy's samples, labelled by the gold reward
    ctx.progress(0.0, message="Loading the policy")
    setup = load_policy(config.model, lora_rank=config.lora_rank, need_reference=True, ctx=ctx)
    ctx.raise_if_cancelled()
    ctx.progress(0.02, message=f"Sampling {config.label_samples} responses for each of {len(prompts)} prompts")
    rendered = [render_chat_prompt(setup.tokenizer, p) for p in prompts for _ in range(config.label_samples)]
    settings = SamplingSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=1.0,
                                top_k=0)
    samples = sample_for_training(setup.model, setup.tokenizer, rendered, settings,
                                  [config.seed * 7919 + 17 * i + 1 for i in range(len(rendered))],
                                  on_step=ctx.raise_if_cancelled, batch_size=16)
    for s in samples:  # sample i answers prompt i // label_samples
        s.prompt_index //= config.label_samples
    golds = [gold_of(prompts[s.prompt_index], s.text, len(s.completion_ids)) for s in samples]
    # the gold in the proxy's units: centred per prompt on the same reference samples, in their spread
    gold_base = PromptBaseline.fit([prompts[s.prompt_index] for s in samples], golds)

    def gold_fn(ps, responses, metas):
        raw = torch.tensor([gold_of(p, r, m["completion_tokens"]) for p, r, m in zip(ps, responses, metas)])
        return {"reward": raw, "centred": gold_base(ps, raw)}

    def gold_centred(ps, responses, tokens):  # the same centred gold, from completion lengths
        return gold_fn(ps, responses, [{"completion_tokens": n} for n in tokens])["centred"].tolist()

    pairs = label_pairs(prompts, samples, golds)
    train_pairs, held_pairs = split_pairs(pairs, 0.25, config.seed)
    label_seconds = time.monotonic() - started

    # 3. the proxy reward model
    ctx.progress(0.08, message=f"Training the proxy reward model on {len(train_pairs)} pairs")
    t0 = time.monotonic()
    proxy, proxy_tok, held_acc, train_acc = train_proxy(config, train_pairs, held_pairs, ctx,
                                                        config.proxy_model or config.model)
    ctx.metrics(0, {"reward_model/heldout_accuracy": held_acc})
    proxy_seconds = time.monotonic() - t0
    scorer = RewardModelScorer(model=proxy, tokenizer=proxy_tok, normalize=True)
    if config.reward_baseline == "prompt":
        scorer.calibrate_per_prompt([prompts[s.prompt_index] for s in samples], [s.text for s in samples])

    bon: dict = {}
    if config.bon_samples:  # 3b. best-of-n on fresh reference samples: over-optimisation without training
        t0 = time.monotonic()
        k = config.bon_samples
        ctx.progress(0.09, message=f"Best-of-n: {k} reference responses for each of {len(prompts)} prompts")
        rows = [p for p in prompts for _ in range(k)]
        fresh = sample_for_training(setup.model, setup.tokenizer,
                                    [render_chat_prompt(setup.tokenizer, p) for p in rows], settings,
                                    [config.seed * 7919 + 900_001 + 37 * i for i in range(len(rows))],
                                    on_step=ctx.raise_if_cancelled, batch_size=32)
        ctx.raise_if_cancelled()
        # both scores centred per prompt on these samples and divided by their pooled within-prompt spread:
        # n = 1 (the reference itself) is exactly 0 on both, and 1 is one reference spread
        raw_proxy = scorer.raw(rows, [f.text for f in fresh]).tolist()
        raw_gold = [gold_of(p, f.text, len(f.completion_ids)) for p, f in zip(rows, fresh)]
        proxy_scores = PromptBaseline.fit(rows, raw_proxy)(rows, raw_proxy).tolist()
        gold_scores = PromptBaseline.fit(rows, raw_gold)(rows, raw_gold).tolist()
        ns = sorted({min(2 ** i, k) for i in range(k.bit_length() + 1)})
        bon = best_of_n_curve([proxy_scores[i * k:(i + 1) * k] for i in range(len(prompts))],
                              [gold_scores[i * k:(i + 1) * k] for i in range(len(prompts))], ns)
        c = bon["curve"]
        for i, n in enumerate(c["n"]):
            ctx.metrics(n, {"bon/proxy": c["proxy"][i], "bon/gold": c["gold"][i], "bon/kl": c["kl"][i]})
        bon = {f"bon_{key}": value for key, value in bon.items()}
        bon.update(bon_samples=k, bon_seconds=round(time.monotonic() - t0, 2),
                   bon_mean_length=sum(len(f.completion_ids) for f in fresh) / len(fresh))
    if config.steps == 0:
        return {"steps": 0, "seed": config.seed, "reward_baseline": config.reward_baseline,
                "gold_scale": gold_base.scale, "proxy_scale": scorer.scale, "label_pairs": len(pairs),
                "proxy_train_pairs": len(train_pairs), "proxy_heldout_accuracy": _finite(held_acc),
                "proxy_train_accuracy": _finite(train_acc), "label_seconds": round(label_seconds, 2),
                "proxy_seconds": round(proxy_seconds, 2), "wall_seconds": round(time.monotonic() - started, 2),
                **bon}

    # 4. PPO on the proxy; the gold reward is measured on the same completions, never optimised
    ctx.progress(0.12, message="PPO on the proxy reward")
    t0 = time.monotonic()
    trainer = PPOTextTrainer(setup, prompts, lambda p, r, m: {"model": scorer(p, r)}, _ppo_config(config),
                             gold_fn=gold_fn)
    history: list[dict] = []  # every rollout's metrics, for the over-optimisation summary

    def record(step: int, values: dict) -> None:
        if "reward/model" in values:
            history.append({"step": step, **values})

    paired: dict = {}
    paired_cache: dict = {}
    paired_seconds: list[float] = []  # every paired evaluation's time, kept out of seconds_per_step
    paired_steps: list[int] = []
    paired_pairs: list[tuple] = []  # every check's per-pair gains, for the curve's peak-to-last drop

    def paired_check(step: int) -> dict | None:
        """The paired evaluation after the last step and, with ``paired_eval_every``, along the way."""
        every = config.paired_eval_every
        if not config.paired_eval_samples or not (step == config.steps or (every and step and step % every == 0)):
            return None
        t = time.monotonic()
        ctx.progress(0.12 + 0.88 * step / (config.steps + 1),
                     message=f"step {step}: paired evaluation, {config.paired_eval_samples} responses per prompt from "
                     "the policy and the reference")
        paired.clear()
        paired.update(paired_goodhart_eval(
            setup, lambda ps, texts: scorer(ps, texts).tolist(),
            gold_centred, prompts, config.paired_eval_samples, settings=settings, seed=config.seed,
            on_step=ctx.raise_if_cancelled, cache=paired_cache, pairs_out=paired_pairs))
        paired["paired_seconds"] = round(time.monotonic() - t, 2)
        paired_seconds.append(paired["paired_seconds"])
        paired_steps.append(step)
        return {f"eval/{k}": paired[k] for k in ("paired_proxy_gain", "paired_proxy_gain_se", "paired_gold_gain",
                                                  "paired_gold_gain_se", "paired_goodhart_gap",
                                                  "paired_goodhart_gap_se")}

    ctx._metric_sinks.append(record)
    try:
        result = run_ppo(trainer, ctx, progress_span=(0.12, 1.0), on_rollout=paired_check)
    finally:
        ctx._metric_sinks.remove(record)
    ppo_seconds = time.monotonic() - t0
    win: dict = {"eval_prompts": 0}
    if config.eval_prompts and not eval_prompts:
        win["win_rate_skipped"] = (f"no held-out prompts: the set has only {len(prompts)} prompts and all are "
                                   "used for training")
    elif eval_prompts:
        ctx.progress(1.0, message=f"Win rate against the reference on {len(eval_prompts)} held-out prompts")
        win = heldout_win_rates(setup, proxy, proxy_tok, eval_prompts, gold_of, max_new_tokens=config.max_new_tokens,
                                seed=config.seed, on_step=ctx.raise_if_cancelled)
        for key in ("eval_proxy_policy", "eval_proxy_reference"):  # in the units PPO saw (reward/model)
            win[key] = (win[key] - scorer.offset) / scorer.scale
        ctx.metrics(config.steps, {"eval/win_rate": win["win_rate_proxy"], "eval/win_rate_gold": win["win_rate_gold"],
                                   "eval/policy_score": win["eval_proxy_policy"],
                                   "eval/reference_score": win["eval_proxy_reference"]})
    win.update(paired)  # the last paired evaluation: the final policy's
    if paired_pairs:
        kl_at = {h["step"]: h["kl/seq_mean"] for h in history}
        win.update(paired_curve(paired_steps, [kl_at.get(s, float("nan")) for s in paired_steps], paired_pairs))
    summary = overoptimisation_summary([h["step"] for h in history], [h["reward/model"] for h in history],
                                       [h.get("gold/reward", float("nan")) for h in history],
                                       [h["kl/seq_mean"] for h in history], margin=config.overopt_margin)
    return {"reward_first": result["reward_first"], "reward_last": result["reward_last"],
            "gold_first": result.get("gold_first"), "gold_last": result.get("gold_last"),
            "kl_first": result["kl_first"], "kl_last": result["kl_last"],
            "sqrt_kl_last": max(result["kl_last"], 0.0) ** 0.5,
            "mean_length_first": result["length_first"], "mean_length_last": result["length_last"],
            "window": result["window"],
            **{f"{n}_window_{e}": result.get(f"{n}_window_{e}") for n in ("reward", "gold", "gold_centred", "kl",
                                                                           "length") for e in ("first", "last")},
            "gold_scale": gold_base.scale, "goodhart_gap": goodhart_gap(result),
            "beta": config.beta, "beta_last": result["beta_last"], "steps": config.steps, "seed": config.seed,
            "learning_rate": config.learning_rate, "reward_baseline": config.reward_baseline,
            "proxy_offset": scorer.offset, "proxy_scale": scorer.scale,
            "proxy_prompt_baselines": len(scorer.prompt_offsets),
            "label_pairs": len(pairs), "proxy_train_pairs": len(train_pairs),
            "proxy_heldout_accuracy": _finite(held_acc), "proxy_train_accuracy": _finite(train_acc),
            "label_gold_mean": sum(golds) / len(golds),
            "label_seconds": round(label_seconds, 2), "proxy_seconds": round(proxy_seconds, 2),
            "ppo_seconds": round(ppo_seconds, 2), "wall_seconds": round(time.monotonic() - started, 2),
            "peak_rss_mb": result["peak_rss_mb"],
            "paired_evaluations": len(paired_seconds), "paired_seconds_total": round(sum(paired_seconds), 2),
            "seconds_per_step": round((ppo_seconds - sum(paired_seconds)) / max(config.steps, 1), 2), **win,
            **bon, **summary}


def goodhart_gap(result: dict) -> float | None:
    """At the end of a run, how much better than the reference the proxy says the policy is, minus how
    much better it is by the gold reward: ``reward_window_last - gold_centred_window_last``. Both are
    centred per prompt on the reference's label samples and divided by their within-prompt spread, so 0
    on either scale is the reference and the units match: the gap is the part of the proxy's gain that
    is not real (0 for a proxy that tracks the gold). None without the centred gold."""
    if result.get("reward_window_last") is None or result.get("gold_centred_window_last") is None:
        return None
    return result["reward_window_last"] - result["gold_centred_window_last"]


def _finite(x: float) -> float | None:
    return None if x != x else float(x)
