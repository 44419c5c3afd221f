"""Roll a policy out in an environment and record everything a person or a reward model needs.

Frame ``i`` is the picture after ``i`` steps (frame 0 after ``reset``), so a trajectory of T steps
has T+1 frames and the clip of steps [a, b) shows frames a..b-1 (the states it acts from).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from rlhf_core.envs.make import render_frame


@dataclass
class Trajectory:
    env_id: str
    seed: int
    observations: np.ndarray  # [T+1, ...] float32 (includes the final observation)
    actions: np.ndarray  # [T, ...]
    rewards: np.ndarray  # [T] float32, the TRUE reward (hidden from labellers by default)
    frames: np.ndarray | None  # [T+1, H, W, 3] uint8 or None
    fps: int
    source: dict = field(default_factory=dict)  # e.g. {"kind": "checkpoint", "step": 20000}
    terminated: bool = False

    @property
    def length(self) -> int:
        return int(len(self.rewards))

    @property
    def true_return(self) -> float:
        return float(np.sum(self.rewards))


def rollout(
    env: gym.Env,
    policy,
    *,
    seed: int,
    max_steps: int | None = None,
    render: bool = True,
    source: dict | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Trajectory:
    """Run one episode (until termination, truncation or ``max_steps``)."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards = [np.asarray(obs, dtype=np.float32)], [], []
    frames = [render_frame(env)] if render else None
    limit = max_steps or (env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 1000)
    terminated = False
    for t in range(limit):
        action = policy.act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(np.asarray(obs, dtype=np.float32))
        actions.append(np.asarray(action))
        rewards.append(float(reward))
        if frames is not None:
            frames.append(render_frame(env))
        if on_step is not None:
            on_step(t)
        if terminated or truncated:
            break
    return Trajectory(
        env_id=env.spec.id if env.spec else "unknown",
        seed=int(seed),
        observations=np.stack(observations),
        actions=np.stack(actions) if actions else np.zeros((0,)),
        rewards=np.asarray(rewards, dtype=np.float32),
        frames=np.stack(frames) if frames is not None else None,
        fps=int(env.metadata.get("render_fps") or 30),
        source=dict(source or {}),
        terminated=bool(terminated),
    )
