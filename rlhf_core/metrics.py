"""Metric keys: a documented contract between trainers, the database and the plots.

Keys are ``namespace/name``. The plots group series by namespace (one plot per namespace), the
``metrics`` table stores them as they are, and later trainers add their own keys here so the list
below stays the single reference (compare TRL's "logged metrics" and SB3's ``rollout/``,
``train/`` keys).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

METRIC_KEYS: dict[str, str] = {
    # reward-model training (Bradley-Terry and relatives)
    "reward_model/loss": "Bradley-Terry cross-entropy on the training batch (nats).",
    "reward_model/train_accuracy": "Fraction of training-batch pairs the model orders like the label.",
    "reward_model/heldout_accuracy": "Same, on the held-out pairs (ties excluded).",
    "reward_model/heldout_loss": "Bradley-Terry loss on the held-out pairs (nats).",
    "reward_model/length_correlation": "Text reward model: Pearson r between reward and response length over "
                                        "the project's responses (near +1: it mostly rewards length).",
    "reward_model/true_correlation": "Pearson r between predicted and true reward (synthetic tasks).",
    # control rollouts and RL (used by the control track)
    "rollout/true_return": "Mean true environment return of finished episodes.",
    "rollout/learned_return": "Mean return under the learned reward.",
    "rollout/episode_length": "Mean length of finished episodes.",
    "train/approx_kl": "PPO's approximate KL between old and new policy.",
    "train/entropy": "Policy entropy.",
    # language-model RL (SFT, PPO, GRPO, DPO; the Text RL page reads these keys)
    "reward/mean": "Mean total reward of the step's completions.",
    "reward/std": "Standard deviation of that reward.",
    # reward/<component>: mean of one weighted reward component (reward/format, reward/correctness,
    # reward/model, reward/length_penalty, ...), logged next to the total.
    "kl/token_mean": "Mean per-token KL(pi || pi_ref) estimate over completion tokens (k1 for PPO, "
                     "k3 for GRPO; 0 at step 0).",
    "kl/seq_mean": "Mean per-sequence KL(pi || pi_ref): the per-token estimates summed over a completion.",
    "kl/beta": "The KL coefficient used at this step (changes with the adaptive controller).",
    "length/mean": "Mean completion length in tokens (end token included).",
    "length/min": "Shortest completion of the step, in tokens.",
    "length/max": "Longest completion of the step, in tokens.",
    "completions/mean_length": "Mean completion length in tokens (generation job).",
    "completions/stopped_fraction": "Fraction of completions that ended with the end-of-turn token.",
    "train/loss": "The optimised loss of the step.",
    "train/clip_fraction": "Fraction of completion tokens whose probability ratio was clipped (PPO/GRPO).",
    "train/value_loss": "Value-head regression loss (PPO).",
    "train/grad_norm": "Gradient norm before clipping.",
    "gold/accuracy": "Exact-answer accuracy (pass@1, greedy) on held-out gold tasks: the metric the "
                     "reward is a proxy for.",
    "gold/reward": "Gold reward (rule-based or a held-out reward model) of the step's completions.",
    "gold/cons_at_k": "GRPO final evaluation (eval_consensus_k > 0): majority vote of k sampled answers per held-out "
                      "prompt, fraction right (cons@k).",
    # text policy evaluation (the text_eval job, rlhf_core/text/evaluation.py)
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
    # bookkeeping every job may log
    "time/steps_per_second": "Optimisation steps per wall-clock second.",
}


def namespace(key: str) -> str:
    """The plot group of a key: ``"reward_model/loss"`` -> ``"reward_model"``."""
    return key.split("/", 1)[0] if "/" in key else "other"


def group_keys(keys: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        groups[namespace(key)].append(key)
    return dict(groups)


def describe(key: str) -> str:
    return METRIC_KEYS.get(key, "")


class MetricAverager:
    """Collects values between log points and returns their means (e.g. per-batch -> per-epoch)."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self._sums[k] += float(v)
            self._counts[k] += 1

    def pop_means(self) -> dict[str, float]:
        out = {k: self._sums[k] / self._counts[k] for k in self._sums if self._counts[k]}
        self._sums.clear()
        self._counts.clear()
        return out
