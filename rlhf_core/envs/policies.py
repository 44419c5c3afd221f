"""Policies that produce trajectories: random, SB3 checkpoints, behavioural cloning, ε-noise.

A policy is anything with ``act(obs) -> action`` (a numpy array or int fit for ``env.step``).
``EpsilonGreedy`` is D-REX's noise injection: with probability ε it takes a uniformly random
action instead of the base policy's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import nn


class Policy(Protocol):
    def act(self, obs: np.ndarray): ...


class RandomPolicy:
    def __init__(self, space: gym.Space, seed: int = 0):
        self.space = space
        self.space.seed(seed)

    def act(self, obs):
        return self.space.sample()


class SB3Policy:
    """A saved stable-baselines3 model (zip), acting deterministically by default."""

    def __init__(self, path: str | Path, deterministic: bool = True):
        from stable_baselines3 import PPO

        self.model = PPO.load(str(path), device="cpu")
        self.deterministic = deterministic

    def act(self, obs):
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return action


class EpsilonGreedy:
    """With probability ``epsilon`` a uniform random action, else the base policy's."""

    def __init__(self, base: Policy, space: gym.Space, epsilon: float, seed: int = 0):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError("epsilon must be in [0, 1]")
        self.base, self.space, self.epsilon = base, space, float(epsilon)
        self.rng = np.random.default_rng(seed)
        self.space.seed(seed + 7919)
        self.random_actions = 0
        self.steps = 0

    def act(self, obs):
        self.steps += 1
        if self.rng.random() < self.epsilon:
            self.random_actions += 1
            return self.space.sample()
        return self.base.act(obs)


# --------------------------------------------------------------------------- behavioural cloning
@dataclass(frozen=True)
class BCSpec:
    obs_dim: int
    discrete: bool
    n_out: int
    hidden: int
    action_low: tuple | None = None
    action_high: tuple | None = None


class BCNet(nn.Module):
    """MLP policy: logits for discrete actions, tanh-squashed means for continuous ones."""

    def __init__(self, spec: BCSpec):
        super().__init__()
        self.spec = spec
        self.net = nn.Sequential(
            nn.Linear(spec.obs_dim, spec.hidden), nn.Tanh(),
            nn.Linear(spec.hidden, spec.hidden), nn.Tanh(),
            nn.Linear(spec.hidden, spec.n_out),
        )
        if not spec.discrete:
            low = torch.tensor(spec.action_low, dtype=torch.float32)
            high = torch.tensor(spec.action_high, dtype=torch.float32)
            self.register_buffer("center", (high + low) / 2)
            self.register_buffer("scale", (high - low) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.net(obs)
        if self.spec.discrete:
            return out
        return self.center + self.scale * torch.tanh(out)


class BCPolicy:
    def __init__(self, net: BCNet):
        self.net = net.eval()

    @torch.no_grad()
    def act(self, obs):
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32).ravel()).unsqueeze(0)
        out = self.net(x)[0]
        if self.net.spec.discrete:
            return int(out.argmax())
        return out.numpy().astype(np.float32)

    def save(self, path: str | Path) -> None:
        torch.save({"spec": self.net.spec.__dict__, "state": self.net.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path) -> BCPolicy:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        spec = BCSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in blob["spec"].items()})
        net = BCNet(spec)
        net.load_state_dict(blob["state"])
        return cls(net)
