"""PPO over-optimisation demo (Gao, Schulman & Hilton 2022): job ``ppo_demo``, also
``python -m rlhf_core demo ppo --steps N --seed S --beta B [--model PATH]``.

A programmatic gold reward (:mod:`.gold`) labels pairs of the untouched policy's samples, a proxy
reward model is fitted on those labels (:mod:`.proxy`), and PPO optimises the proxy with a KL penalty
while the gold is measured on the same completions (:mod:`.run`). The checks of :mod:`.evaluation`
say how much of the proxy's gain is real: a learned reward is wrong away from the samples it was
fitted on, and an optimiser finds where. Every step and JSON key, and the results:
docs/experiments/ppo-overoptimisation.md.
"""

from rlhf_core.experiments.ppo_overoptimisation.config import PPODemoConfig
from rlhf_core.experiments.ppo_overoptimisation.evaluation import (
    best_of_n_curve,
    best_of_n_expectations,
    best_of_n_kl,
    goodhart_gap,
    heldout_win_rates,
    overoptimisation_summary,
    paired_curve,
    paired_goodhart_eval,
)
from rlhf_core.experiments.ppo_overoptimisation.gold import (
    STOP_WORDS,
    gold_function,
    gold_reward,
    key_words,
    keyword_coverage,
    repetition_share,
)
from rlhf_core.experiments.ppo_overoptimisation.proxy import label_pairs, train_proxy
from rlhf_core.experiments.ppo_overoptimisation.run import run_ppo_demo

__all__ = [
    "PPODemoConfig", "STOP_WORDS", "best_of_n_curve", "best_of_n_expectations", "best_of_n_kl", "gold_function",
    "gold_reward", "goodhart_gap", "heldout_win_rates", "key_words", "keyword_coverage", "label_pairs",
    "overoptimisation_summary", "paired_curve", "paired_goodhart_eval", "repetition_share", "run_ppo_demo",
    "train_proxy",
]
