"""Scripted end-to-end experiments, each a job (also ``python -m rlhf_core demo NAME``): reward
extrapolation, GRPO on arithmetic, PPO over-optimisation. Their results are in ``docs/experiments/``."""
