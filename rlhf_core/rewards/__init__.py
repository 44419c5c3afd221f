"""Reward learning: Bradley-Terry preference losses and reward networks (no Qt).

Public: ``from rlhf_core.rewards import LearnedReward`` (a gymnasium wrapper around a saved reward
ensemble, :mod:`rlhf_core.rewards.learned`). It is imported on first use, so that importing this
package does not load torch.
"""

__all__ = ["LearnedReward"]


def __getattr__(name: str):
    if name == "LearnedReward":
        from rlhf_core.rewards.learned import LearnedReward  # start-up: pulls in torch and gymnasium

        return LearnedReward
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
