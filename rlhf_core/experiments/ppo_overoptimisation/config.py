"""The demo's settings (job ``ppo_demo``): the policy, the gold reward, the proxy, PPO and the checks."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core.config import param


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
