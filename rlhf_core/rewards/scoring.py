"""Score items with a project's learned reward (for views: the reward strip under each clip)."""

from __future__ import annotations

import json

import numpy as np
import torch

from rlhf_core import kinds
from rlhf_core.envs.storage import load_arrays
from rlhf_core.rewards.networks import RewardEnsemble

_CACHE: dict[tuple[str, int], tuple[RewardEnsemble, dict]] = {}


def latest_reward_model(project, env_id: str) -> tuple[int, RewardEnsemble, dict] | None:
    """The newest ``reward_ensemble`` checkpoint trained for ``env_id`` (or None)."""
    for ckpt in reversed(project.checkpoints()):
        if ckpt["kind"] != kinds.REWARD_ENSEMBLE or json.loads(ckpt["meta_json"]).get("env_id") != env_id:
            continue
        key = (str(project.folder), ckpt["id"])
        if key not in _CACHE:
            _CACHE[key] = RewardEnsemble.load(project.abspath(ckpt["path"]))
        model, extra = _CACHE[key]
        return ckpt["id"], model, extra
    return None


@torch.no_grad()
def per_step_rewards(model: RewardEnsemble, extra: dict, observations: np.ndarray) -> np.ndarray:
    """Standardised learned reward of each state reached (observations[1:])."""
    obs = np.asarray(observations[1:], dtype=np.float32).reshape(len(observations) - 1, -1)
    r = model.predict(torch.from_numpy(obs)).numpy()
    return (r - extra.get("reward_mean", 0.0)) / max(extra.get("reward_std", 1.0), 1e-6)


def item_reward_curve(project, item: dict) -> tuple[int, np.ndarray] | None:
    """(checkpoint id, per-step learned reward) for a clip or trajectory, if a model exists."""
    found = latest_reward_model(project, item["env_id"])
    if found is None:
        return None
    cid, model, extra = found
    return cid, per_step_rewards(model, extra, load_arrays(project, item)["observations"])
