"""Train RL on a learned reward: a VecEnvWrapper that replaces the environment's reward.

The learned reward of a transition is r_hat(s') of the state reached (for an episode's last
step, SB3's ``terminal_observation``), standardised with the mean/std of r_hat over the training
states. The true reward is kept in ``info["true_reward"]`` (and the Monitor below this wrapper
still records TRUE episode returns), so progress on the real task can be logged. On alive-bonus
tasks (CartPole, Hopper) a negative learned reward teaches the agent to end episodes early:
``positive=True`` passes the standardised reward through a sigmoid.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnvWrapper

from rlhf_core.rewards.networks import RewardEnsemble


class LearnedRewardVecEnv(VecEnvWrapper):
    def __init__(self, venv, ensemble: RewardEnsemble, mean: float = 0.0, std: float = 1.0, positive: bool = False):
        super().__init__(venv)
        self.ensemble = ensemble.eval()
        self.mean, self.std, self.positive = float(mean), float(std), bool(positive)
        self.learned_returns = np.zeros(self.num_envs, dtype=np.float64)
        self.finished_learned_returns: list[float] = []

    def reset(self):
        self.learned_returns[:] = 0.0
        return self.venv.reset()

    def step_wait(self):
        obs, true_reward, dones, infos = self.venv.step_wait()
        reached = np.array(obs, dtype=np.float32, copy=True)
        for i, done in enumerate(dones):
            if done and "terminal_observation" in infos[i]:
                reached[i] = infos[i]["terminal_observation"]
        with torch.no_grad():
            r = self.ensemble.predict(torch.from_numpy(reached.reshape(self.num_envs, -1))).numpy()
        r = (r - self.mean) / self.std
        if self.positive:
            r = 1.0 / (1.0 + np.exp(-r))
        self.learned_returns += r
        for i, done in enumerate(dones):
            infos[i]["true_reward"] = float(true_reward[i])
            if done:
                self.finished_learned_returns.append(float(self.learned_returns[i]))
                self.learned_returns[i] = 0.0
        return obs, r.astype(np.float32), dones, infos
