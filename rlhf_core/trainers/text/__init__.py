"""Text-track trainers: SFT, the text reward model, PPO with a KL penalty, GRPO and DPO. Shared
plumbing (log-probs, KL estimators, optimiser) is :mod:`rlhf_core.text.rl_common`."""
