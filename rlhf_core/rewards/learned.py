"""A learned control reward for use outside the app: a gymnasium wrapper around a saved reward ensemble.

    import gymnasium as gym
    from rlhf_core.rewards import LearnedReward

    env = LearnedReward(gym.make("CartPole-v1"), "project.rlhf/checkpoints/run-00003/reward_ensemble.safetensors")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    info["true_reward"], info["learned_reward"]    # the env's own reward is kept; reward == learned

The reward of a step is the ensemble's mean prediction for the state it reached, standardised with
the mean and std over the training states that the ``reward_model`` job stored in the file: the
reward ``ppo_learned`` trains on (:class:`rlhf_core.rewards.wrapper.LearnedRewardVecEnv`, SB3's
vector-env form of the same thing). ``positive=True`` squashes it through a sigmoid, as that job's
``positive_reward`` does for alive-bonus tasks. :meth:`LearnedReward.reward` scores states directly.

Files: the ``reward_ensemble.safetensors`` the ``reward_model`` job writes, or the older
``reward_ensemble.pt`` (read with ``weights_only=True``). Only torch, numpy and gymnasium are needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rlhf_core.rewards.networks import RewardEnsemble


class LearnedReward(gym.Wrapper):
    """``env`` whose reward is the learned reward of the state reached; the env's own reward goes to
    ``info["true_reward"]`` and the learned one also to ``info["learned_reward"]``.

    ``reward_file``: a saved reward ensemble (see the module docstring). ``standardise``: subtract the
    stored mean and divide by the stored std (default, as in training). ``positive``: then a sigmoid.
    Raises ``ValueError`` when the file was trained for another environment (its stored ``env_id``
    differs from ``env.spec.id``; ``allow_other_env=True`` skips that check) or for observations of
    another size.
    """

    def __init__(self, env: gym.Env, reward_file: str | os.PathLike, *, standardise: bool = True,
                 positive: bool = False, allow_other_env: bool = False):
        super().__init__(env)
        self.ensemble, self.extra = RewardEnsemble.load(Path(reward_file))
        spec = self.ensemble.spec
        if spec.action_dim:
            raise ValueError("this reward model also reads actions; LearnedReward scores states only")
        trained_for = self.extra.get("env_id")
        here = env.spec.id if env.spec is not None else None
        if trained_for and here and trained_for != here and not allow_other_env:
            raise ValueError(f"the reward model was trained on {trained_for}, not {here} "
                             "(allow_other_env=True uses it anyway)")
        size = int(np.prod(env.observation_space.shape or (1,)))
        wanted = int(np.prod(spec.image_shape)) if spec.kind == "cnn" else spec.obs_dim
        if size != wanted:
            raise ValueError(f"the reward model reads observations of {wanted} numbers; "
                             f"this environment's have {size}")
        self.mean = float(self.extra.get("reward_mean", 0.0)) if standardise else 0.0
        self.std = float(self.extra.get("reward_std", 1.0)) if standardise else 1.0
        self.positive = bool(positive)

    def reward(self, observations) -> np.ndarray:
        """Learned rewards of states ``[N, *obs_shape]`` (or one state: a 0-d array), as :meth:`step` gives them."""
        obs = np.asarray(observations, dtype=np.float32)
        one = obs.shape == tuple(self.observation_space.shape)
        batch = obs.reshape(1 if one else len(obs), *self._input_shape())
        with torch.no_grad():
            r = self.ensemble.predict(torch.from_numpy(np.ascontiguousarray(batch))).numpy().astype(np.float64)
        r = (r - self.mean) / self.std
        if self.positive:
            r = 1.0 / (1.0 + np.exp(-r))
        return r[0] if one else r

    def step(self, action):
        obs, true_reward, terminated, truncated, info = self.env.step(action)
        learned = float(self.reward(obs))
        info = dict(info)
        info["true_reward"] = float(true_reward)
        info["learned_reward"] = learned
        return obs, learned, terminated, truncated, info

    def _input_shape(self) -> tuple:
        spec = self.ensemble.spec
        return tuple(spec.image_shape) if spec.kind == "cnn" else (spec.obs_dim,)
