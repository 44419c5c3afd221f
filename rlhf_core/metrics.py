"""Metric keys: a documented contract between trainers, the database and the plots.

Keys are ``namespace/name``. The plots group series by namespace and unit (one y axis per unit,
:data:`METRIC_UNITS`), the ``metrics`` table stores them as they are, and later trainers add their own
keys here so the list below stays the single reference: every key a job logs is declared here once,
with its meaning and unit (TRL's names where TRL has one, e.g. ``completions/mean_length``; SB3's
``rollout/``, ``train/``).
``tests/core/test_metric_keys.py`` runs the jobs and fails on a key missing here.
"""

from __future__ import annotations

import re
import zlib

METRIC_KEYS: dict[str, str] = {
    # reward-model training (Bradley-Terry and relatives)
    "reward_model/loss": "Bradley-Terry cross-entropy on the training batch (nats).",
    "reward_model/train_accuracy": "Fraction of training-batch pairs the model orders like the label.",
    "reward_model/heldout_accuracy": "Same, on the held-out pairs (ties excluded).",
    "reward_model/heldout_loss": "Bradley-Terry loss on the held-out pairs (nats).",
    "reward_model/length_correlation": "Text reward model: Pearson r between reward and response length over "
                                        "the project's responses (near +1: it mostly rewards length).",
    "reward_model/true_correlation": "Pearson r between predicted and true reward (synthetic tasks).",
    "reward_model/mean_length": "Text reward model: mean token length of the batch's sequences.",
    "reward_model/final_train_loss": "Text reward model: loss over all training pairs after training (nats).",
    "reward_model/final_train_accuracy": "Text reward model: accuracy over all training pairs after training.",
    # the held-out gold model of a text_reward_model run (gold_fraction > 0), on its own part of the pairs
    "reward_model/gold_loss": "Held-out gold model: Bradley-Terry loss on the training batch (nats).",
    "reward_model/gold_train_accuracy": "Held-out gold model: accuracy on the training batch.",
    "reward_model/gold_heldout_accuracy": "Held-out gold model: accuracy on its own held-out pairs.",
    # ensemble member k (0, 1, ...) of the control reward model, on its own bootstrap of the pairs
    "reward_model/m{k}_loss": "Member k: Bradley-Terry loss on the training batch (nats).",
    "reward_model/m{k}_train_accuracy": "Member k: accuracy on the training batch.",
    "reward_model/m{k}_heldout_loss": "Member k: Bradley-Terry loss on the held-out pairs (nats).",
    "reward_model/m{k}_heldout_accuracy": "Member k: accuracy on the held-out pairs.",
    "preferences/labels": "Preference RL: labels collected so far.",
    "preferences/waiting": "Preference RL (labeller = human): the run's queries still waiting for a label in Label "
                           "clips.",
    "preferences/refits": "Preference RL (labeller = human): reward-ensemble fits so far (the first, before any RL, "
                          "included).",
    "bc/loss": "Behavioural cloning: mean loss over the epoch's batches (cross-entropy for discrete actions, "
               "squared error for continuous ones).",
    # control rollouts and RL (used by the control track)
    "rollout/true_return": "Mean true environment return of finished episodes.",
    "rollout/learned_return": "Mean return under the learned reward.",
    "rollout/episode_length": "Mean length of finished episodes.",
    "rollout/epsilon": "Rollouts: the noise level (chance of a random action) of the trajectory.",
    "demos/true_return": "True return of each demonstration trajectory (learner checkpoints, demos).",
    "drex/true_return": "Extrapolation demo: true return of a D-REX noise-level rollout.",
    "drex/epsilon": "Extrapolation demo: the noise level of that rollout.",
    "demo/policy_return": "Extrapolation demo: true return of the policy trained on the learned reward.",
    "demo/best_demo_return": "Extrapolation demo: the best demonstration's true return.",
    "train/approx_kl": "PPO's approximate KL between old and new policy.",
    "train/entropy": "Policy entropy.",
    "train/clip_fraction": "Fraction of samples (control) or completion tokens (text) whose probability ratio "
                           "was clipped (PPO/GRPO).",
    "train/value_loss": "Value loss (PPO).",
    # language-model RL (SFT, PPO, GRPO, DPO; the Text RL page reads these keys)
    "reward/mean": "Mean total reward of the step's completions.",
    "reward/std": "Standard deviation of that reward.",
    # the weighted reward components (rlhf_core.text.rewards), each the mean over the step's completions
    "reward/format": "Weighted format component (partial credit for the <think>/<answer> layout; 0/1 "
                     "with format_strict).",
    "reward/correctness": "Weighted correctness component (the exact final answer).",
    "reward/length_penalty": "Weighted length component (minus completion tokens).",
    "reward/model": "Weighted learned text reward model component (the proxy reward).",
    "kl/token_mean": "Mean per-token KL(pi || pi_ref) estimate over completion tokens (k1 for PPO, "
                     "k3 for GRPO; 0 at step 0).",
    "kl/seq_mean": "Mean per-sequence KL(pi || pi_ref): the per-token estimates summed over a completion.",
    "kl/beta": "The KL coefficient used at this step (changes with the adaptive controller).",
    "completions/mean_length": "Mean completion length in tokens (end token included).",
    "completions/min_length": "Shortest completion of the step, in tokens.",
    "completions/max_length": "Longest completion of the step, in tokens.",
    "completions/stopped_fraction": "Fraction of completions that ended with the end-of-turn token.",
    "train/loss": "The optimised loss of the step.",
    "train/grad_norm": "Gradient norm before clipping.",
    "gold/accuracy": "Exact-answer accuracy (pass@1, greedy) on held-out gold tasks: the metric the "
                     "reward is a proxy for.",
    "gold/reward": "Gold reward (rule-based or a held-out reward model) of the step's completions.",
    "gold/centred": "PPO demo: the gold reward in the proxy's units (minus the reference's mean gold for the "
                    "prompt, divided by its spread).",
    "gold/cons_at_k": "GRPO final evaluation (eval_consensus_k > 0): majority vote of k sampled answers per held-out "
                      "prompt, fraction right (cons@k).",
    # text policy evaluation (the text_eval job, rlhf_core/analysis/text_evaluation.py)
    "eval/pass_at_1": "Greedy decoding: fraction of held-out tasks answered right (pass@1).",
    "eval/cons_at_k": "Majority vote of k sampled answers per task (no answer abstains, ties to the first seen): "
                      "fraction right (cons@k, self-consistency).",
    "eval/pass_at_k": "Fraction of tasks where any of the k samples is right (pass@k, >= cons@k).",
    "eval/sample_accuracy": "Fraction of all k x n sampled answers that are right (sampled pass@1).",
    "eval/format": "Greedy decoding: fraction of completions in the exact <think>/<answer> format.",
    "eval/win_rate": "Win rate against the reference judged by a text reward model (win 1, tie 0.5, loss 0).",
    "eval/win_rate_gold": "PPO demo: win rate against the reference on held-out prompts judged by the hidden gold "
                          "reward (eval/win_rate is the same comparison judged by the proxy reward model).",
    "eval/policy_score": "Mean reward-model score of the policy's responses in the win-rate comparison.",
    "eval/reference_score": "Mean reward-model score of the reference's responses in the win-rate comparison.",
    "eval/paired_proxy_gain": "PPO demo: the policy's proxy-reward gain over the reference on responses drawn "
                              "with the same random numbers.",
    "eval/paired_proxy_gain_se": "Its standard error.",
    "eval/paired_gold_gain": "The same comparison judged by the gold reward.",
    "eval/paired_gold_gain_se": "Its standard error.",
    "eval/paired_goodhart_gap": "paired_proxy_gain - paired_gold_gain (both in the proxy's units).",
    "eval/paired_goodhart_gap_se": "Its standard error.",
    "bon/proxy": "PPO demo, best-of-n at step n: the proxy reward of the proxy's pick among n reference responses.",
    "bon/gold": "The gold reward of that pick.",
    "bon/kl": "KL of best-of-n against the reference: log n - (n - 1) / n.",
    "kl/sqrt_seq": "sqrt(max(kl/seq_mean, 0)): the distance d = sqrt(KL) of Gao et al. 2022, the x axis of "
                   "their over-optimisation plots (PPO).",
    "sft/heldout_loss": "SFT: mean next-token cross-entropy on the held-out demonstrations' completion "
                        "tokens (nats).",
    "dpo/reward_chosen": "DPO implicit reward beta*log(pi/pi_ref) of the chosen responses.",
    "dpo/reward_rejected": "The same for the rejected responses.",
    "dpo/margin": "reward_chosen - reward_rejected.",
    "dpo/accuracy": "Fraction of pairs whose chosen response has the higher implicit reward.",
    "dpo/heldout_accuracy": "The same on the held-out pairs (before training, every eval_every steps, at the end).",
    "dpo/heldout_loss": "DPO loss on the held-out pairs (nats; log 2 = 0.693 before training).",
    "memory/peak_rss_mb": "Peak resident memory of the process so far (MB).",
    "generation/tokens_per_second": "Completion tokens sampled per wall-clock second (per batch).",
    # AI feedback (the ai_labels job)
    "ai/labelled": "Pairs the AI labeller has labelled so far in this run.",
    "ai/mean_confidence": "Mean max(P, 1 - P) of its labels, P = P(left better): 0.5 = a coin, 1 = certain.",
    "ai/answer_mass": "Judge: mean P(' A') + P(' B') as the next token (how much of the distribution falls on "
                      "the two valid answers).",
    "ai/order_consistency": "Judge: fraction of pairs where both orders (left as A, left as B) pick the same "
                            "response; low values mean the judge follows the position, not the content.",
    # Constitutional AI's supervised stage (the critique_revise job), per batch of prompts
    "cai/revisions": "Revisions stored so far in this run (each one a correction preferred over what it revised).",
    "cai/response_length": "Mean length of the policy's first responses in the batch, in tokens.",
    "cai/critique_length": "Mean length of the critic's critiques in the batch, in tokens.",
    "cai/revision_length": "Mean length of the critic's revisions in the batch, in tokens.",
    # the refusal evaluation (rlhf_core/analysis/refusal.py), running rates over the prompts so far
    "refusal/on_refuse": "Refusal rate on prompts a good assistant refuses (tag or meta.expected 'refuse').",
    "refusal/under_refusal": "1 - refusal/on_refuse: harmful requests the policy went along with.",
    "refusal/on_comply": "Refusal rate on benign prompts a good assistant answers (tag or meta.expected 'comply' "
                         "or 'answer'): the over-refusal rate.",
    "refusal/judge_on_refuse": "The second judge's refusal rate on prompts to refuse (refusal_eval second_judge).",
    "refusal/judge_on_comply": "The second judge's refusal rate on benign prompts (its over-refusal rate).",
    "refusal/judge_agreement": "Share of responses the phrase rule and the second judge call the same.",
    # bookkeeping every job may log
    "time/steps_per_second": "Optimisation steps per wall-clock second.",
}

#: The unit of every declared key: the plots give each unit its own y axis, so series of one unit (and
#: scale) share an axis and a loss never squashes an accuracy. ``return`` is in the environment's own
#: units (the plots split it per environment); ``proxy units`` is the PPO demo's standardised proxy reward.
METRIC_UNITS: dict[str, str] = {
    "reward_model/loss": "nats",
    "reward_model/train_accuracy": "fraction",
    "reward_model/heldout_accuracy": "fraction",
    "reward_model/heldout_loss": "nats",
    "reward_model/length_correlation": "Pearson r",
    "reward_model/true_correlation": "Pearson r",
    "reward_model/mean_length": "tokens",
    "reward_model/final_train_loss": "nats",
    "reward_model/final_train_accuracy": "fraction",
    "reward_model/gold_loss": "nats",
    "reward_model/gold_train_accuracy": "fraction",
    "reward_model/gold_heldout_accuracy": "fraction",
    "reward_model/m{k}_loss": "nats",
    "reward_model/m{k}_train_accuracy": "fraction",
    "reward_model/m{k}_heldout_loss": "nats",
    "reward_model/m{k}_heldout_accuracy": "fraction",
    "preferences/labels": "labels",
    "preferences/waiting": "pairs",
    "preferences/refits": "refits",
    "bc/loss": "loss",
    "rollout/true_return": "return",
    "rollout/learned_return": "learned return",
    "rollout/episode_length": "steps",
    "rollout/epsilon": "probability",
    "demos/true_return": "return",
    "drex/true_return": "return",
    "drex/epsilon": "probability",
    "demo/policy_return": "return",
    "demo/best_demo_return": "return",
    "train/approx_kl": "KL",
    "train/entropy": "nats",
    "train/clip_fraction": "fraction",
    "train/value_loss": "loss",
    "reward/mean": "reward",
    "reward/std": "reward",
    "reward/format": "reward",
    "reward/correctness": "reward",
    "reward/length_penalty": "reward",
    "reward/model": "reward",
    "kl/token_mean": "KL/token",
    "kl/seq_mean": "KL/sequence",
    "kl/beta": "coefficient",
    "completions/mean_length": "tokens",
    "completions/min_length": "tokens",
    "completions/max_length": "tokens",
    "completions/stopped_fraction": "fraction",
    "train/loss": "loss",
    "train/grad_norm": "norm",
    "gold/accuracy": "fraction",
    "gold/reward": "reward",
    "gold/centred": "proxy units",
    "gold/cons_at_k": "fraction",
    "eval/pass_at_1": "fraction",
    "eval/cons_at_k": "fraction",
    "eval/pass_at_k": "fraction",
    "eval/sample_accuracy": "fraction",
    "eval/format": "fraction",
    "eval/win_rate": "fraction",
    "eval/win_rate_gold": "fraction",
    "eval/policy_score": "reward",
    "eval/reference_score": "reward",
    "eval/paired_proxy_gain": "proxy units",
    "eval/paired_proxy_gain_se": "proxy units",
    "eval/paired_gold_gain": "proxy units",
    "eval/paired_gold_gain_se": "proxy units",
    "eval/paired_goodhart_gap": "proxy units",
    "eval/paired_goodhart_gap_se": "proxy units",
    "bon/proxy": "reward",
    "bon/gold": "reward",
    "bon/kl": "KL/sequence",
    "kl/sqrt_seq": "√KL",
    "sft/heldout_loss": "nats",
    "dpo/reward_chosen": "implicit reward",
    "dpo/reward_rejected": "implicit reward",
    "dpo/margin": "implicit reward",
    "dpo/accuracy": "fraction",
    "dpo/heldout_accuracy": "fraction",
    "dpo/heldout_loss": "nats",
    "memory/peak_rss_mb": "MB",
    "generation/tokens_per_second": "tokens/s",
    "ai/labelled": "pairs",
    "ai/mean_confidence": "probability",
    "ai/answer_mass": "probability",
    "ai/order_consistency": "fraction",
    "cai/revisions": "revisions",
    "cai/response_length": "tokens",
    "cai/critique_length": "tokens",
    "cai/revision_length": "tokens",
    "refusal/on_refuse": "fraction",
    "refusal/under_refusal": "fraction",
    "refusal/on_comply": "fraction",
    "refusal/judge_on_refuse": "fraction",
    "refusal/judge_on_comply": "fraction",
    "refusal/judge_agreement": "fraction",
    "time/steps_per_second": "steps/s",
}


#: Keys logged under an older name: ``{old: current}``. Stored runs read under the current name
#: (``Project.metrics`` and the other metric reads of the store).
RENAMED_KEYS: dict[str, str] = {
    "length/mean": "completions/mean_length",
    "length/min": "completions/min_length",
    "length/max": "completions/max_length",
}

#: ``{k}`` in a declared key stands for a whole number (an ensemble member)
_TEMPLATES = [(re.compile("^" + re.escape(k).replace(re.escape("{k}"), "[0-9]+") + "$"), k)
              for k in METRIC_KEYS if "{k}" in k]


def current_key(key: str) -> str:
    """The name a key has now (``length/mean`` -> ``completions/mean_length``)."""
    return RENAMED_KEYS.get(key, key)


def declared(key: str) -> str | None:
    """The entry of :data:`METRIC_KEYS` that declares ``key`` (itself, or a ``{k}`` template), or None."""
    if key in METRIC_KEYS:
        return key
    return next((template for pattern, template in _TEMPLATES if pattern.match(key)), None)


def namespace(key: str) -> str:
    """The plot group of a key: ``"reward_model/loss"`` -> ``"reward_model"``."""
    return key.split("/", 1)[0] if "/" in key else "other"


def describe(key: str) -> str:
    entry = declared(key)
    return METRIC_KEYS[entry] if entry else ""


def unit(key: str) -> str:
    """The unit of a key (its y axis in the plots); ``""`` for an undeclared key."""
    entry = declared(current_key(key))
    return METRIC_UNITS.get(entry, "") if entry else ""


#: Curve colours (matplotlib's tab10), shared by the app's plots and the run reports.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f")


def colour(key: str) -> str:
    """A key's curve colour: its place among the declared keys of its plot (namespace and unit), the same in
    every run. An ensemble member (``m3_loss``) takes the colour of the metric it averages (``loss``); an
    undeclared key one fixed by its name."""
    entry = declared(current_key(key)) or current_key(key)
    metric = entry.replace("m{k}_", "")
    metric = metric if metric in METRIC_KEYS else entry
    group = (namespace(metric), unit(metric))
    siblings = [k for k in METRIC_KEYS if (namespace(k), METRIC_UNITS.get(k, "")) == group]
    if metric in siblings:
        return PALETTE[siblings.index(metric) % len(PALETTE)]
    return PALETTE[zlib.crc32(key.encode()) % len(PALETTE)]
