"""The GRPO demo: rule-based rewards make a small model's reward rise within minutes on a CPU.

``python -m rlhf_core demo grpo --steps N --seed S [--model PATH]`` (or the ``grpo_demo`` job in
the app) trains the bundled SmolLM2-135M-Instruct with GRPO (:mod:`rlhf_core.trainers.text.grpo`) on
generated level-1 arithmetic word problems (:mod:`rlhf_core.text.tasks`), rewarded for the
``<think>..</think><answer>..</answer>`` format (partial credit, weight 0.5) and the exact answer
(weight 1.0), and prints the headline numbers as the JSON last line:

- ``reward_first`` / ``reward_last``: mean reward over the FIRST / LAST ``window`` steps (5, or
  fewer for short runs; one step's 8 completions are too few to compare single steps), with
  ``reward_step_first`` / ``reward_step_last`` the single-step values;
- ``kl_last``: k3 KL per token to the starting model at the last step (0 at the first);
- ``mean_length_first`` / ``mean_length_last``: completion tokens, window means as above;
- ``gold_accuracy_first`` / ``gold_accuracy_last``: greedy pass@1 on held-out problems before
  and after training (``gold_format_*``: the fraction with the exact format);
- ``wall_seconds``: the whole run, model loading and both evaluations included.

Defaults (16 steps of 2 prompts x 4 completions x at most 40 tokens, full fine-tune, learning rate
2e-5, beta 0.04, temperature 0.7, 1 thread) fit in 15 minutes on a 2-core CPU shared with one other
job. The prompt is part of every one of the B x G rows, so it is kept to about 120 tokens
(:func:`rlhf_core.text.tasks.task_messages`) and the training forward passes run each prompt once
per group (:func:`rlhf_core.text.rl_common.grouped_logprobs`). Two threads can be slower than one while
another process holds a core. The reward is noisy from step to step (8 completions), so compare the
window means. Results per seed (``benchmarks/grpo_demo.py``): docs/experiments/grpo-demo.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core import devices
from rlhf_core.config import param
from rlhf_core.jobs import JobContext
from rlhf_core.trainers.text.grpo import GRPOConfig, train_grpo


@dataclass
class GRPODemoConfig:
    model: str = param("", "Causal language model folder ('' = the bundled SmolLM2-135M-Instruct).")
    steps: int = param(16, "GRPO steps.", min=1)
    seed: int = param(0, "Random seed (tasks, prompt order, sampling).", min=0)
    task_level: int = param(1, "Task difficulty (1: one small addition ... 4: multi-step).", min=1, max=4)
    reward: str = param("format:0.5,correctness:1.0", "Weighted reward components.")
    prompts_per_step: int = param(2, "Prompts per step (B).", min=1)
    group_size: int = param(4, "Completions per prompt (G).", min=2)
    max_new_tokens: int = param(40, "Longest completion in tokens (the worked example's answer is about 25).",
                                min=1)
    temperature: float = param(0.7, "Sampling temperature.", min=0.0, min_inclusive=False)
    learning_rate: float = param(2e-5, "AdamW learning rate (full fine-tune; LoRA needs about 10x more).",
                                 min=0.0, min_inclusive=False)
    beta: float = param(0.04, "KL coefficient (k3 added to the loss).", min=0.0)
    lora_rank: int = param(0, "LoRA rank (0: full fine-tune).", min=0)
    heldout_tasks: int = param(16, "Held-out problems for gold accuracy (greedy, before and after).", min=0)
    threads: int = param(1, "torch threads (2 can be faster on a quiet 2-core machine, but sampling slowed "
                            "4x with 2 threads while other work held a core).", min=1)
    save: bool = param(False, "Save the trained policy as a checkpoint (needs a project).")
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def check(self) -> list[str]:
        return grpo_config_for_demo(self).check()


def grpo_config_for_demo(config: GRPODemoConfig) -> GRPOConfig:
    return GRPOConfig(model=config.model, prompt_source="tasks", task_level=config.task_level,
                      train_tasks=256, heldout_tasks=config.heldout_tasks, reward=config.reward,
                      steps=config.steps, prompts_per_step=config.prompts_per_step, group_size=config.group_size,
                      max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                      learning_rate=config.learning_rate, beta=config.beta, lora_rank=config.lora_rank,
                      eval_every=0, seed=config.seed, threads=config.threads, save=config.save,
                      device=config.device, precision=config.precision)


def run_grpo_demo(config: GRPODemoConfig, ctx: JobContext) -> dict:
    result = train_grpo(grpo_config_for_demo(config), ctx)
    out = {
        "reward_first": result["reward_first_window"],
        "reward_last": result["reward_last_window"],
        "reward_step_first": result["reward_first"],
        "reward_step_last": result["reward_last"],
        "kl_last": result["kl_last"],
        "mean_length_first": result["mean_length_first_window"],
        "mean_length_last": result["mean_length_last_window"],
        "gold_accuracy_first": result.get("gold_accuracy_first"),
        "gold_accuracy_last": result.get("gold_accuracy_last"),
        "gold_format_first": result.get("gold_format_first"),
        "gold_format_last": result.get("gold_format_last"),
        "window": result["window"],
        "steps": result["steps"],
        "seconds_per_step": result["seconds_per_step"],
        "wall_seconds": result["wall_seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "seed": config.seed,
        "threads": config.threads,
        "model": result["model"],
        **{k: result[k] for k in ("device", "device_name", "dtype", "peak_memory_mb", "peak_memory_kind")},
    }
    for key in ("checkpoint_id", "path"):
        if key in result:
            out[key] = result[key]
    return out

