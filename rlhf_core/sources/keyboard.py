"""Demonstrations from a person at the keyboard: key names -> actions, one step at a time.

The app owns the clock and the keys; this module owns the environment and the recording, so the
same code records a demonstration in the GUI and in tests. Key names are plain strings
("left", "right", "up", "down"); each supported environment maps the set of held keys to an
action, with a default when nothing is held (``None`` = repeat the last action).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf_core.envs.make import EnvError, close_env, make_env, render_frame
from rlhf_core.envs.rollout import Trajectory


@dataclass(frozen=True)
class KeyMap:
    keys: dict  # key name -> action, first match in this order wins
    default: object  # action when no mapped key is held; None repeats the last one
    help: str


KEYMAPS: dict[str, KeyMap] = {
    "CartPole-v1": KeyMap({"left": 0, "right": 1}, None, "← push left · → push right"),
    "Acrobot-v1": KeyMap({"left": 0, "right": 2}, 1, "← torque −1 · → torque +1"),
    "MountainCar-v0": KeyMap({"left": 0, "right": 2}, 1, "← accelerate left · → accelerate right"),
    "MountainCarContinuous-v0": KeyMap({"left": np.array([-1.0], np.float32), "right": np.array([1.0], np.float32)},
                                       np.array([0.0], np.float32), "← push left · → push right"),
    "Pendulum-v1": KeyMap({"left": np.array([2.0], np.float32), "right": np.array([-2.0], np.float32)},
                          np.array([0.0], np.float32), "← turn anticlockwise · → turn clockwise"),
    "LunarLander-v3": KeyMap({"up": 2, "left": 1, "right": 3}, 0, "↑ main engine · ← / → side engines"),
}


def supported_envs() -> list[str]:
    return sorted(KEYMAPS)


class HumanDemo:
    """Step an environment from held keys and record the episode as a :class:`Trajectory`."""

    def __init__(self, env_id: str, seed: int = 0, labeller: str = "you", max_steps: int | None = None):
        if env_id not in KEYMAPS:
            raise EnvError(f"No keyboard mapping for {env_id!r}; keyboard demos work for: {', '.join(supported_envs())}.")
        self.env_id, self.seed, self.labeller = env_id, int(seed), labeller
        self.keymap = KEYMAPS[env_id]
        self.env = make_env(env_id)
        self.fps = int(self.env.metadata.get("render_fps") or 30)
        self.max_steps = max_steps or (self.env.spec.max_episode_steps if self.env.spec else None) or 1000
        obs, _ = self.env.reset(seed=self.seed)
        self.observations = [np.asarray(obs, dtype=np.float32)]
        self.actions: list = []
        self.rewards: list[float] = []
        self.frames = [render_frame(self.env)]
        self.done = False
        self.terminated = False
        self._last = self.keymap.default if self.keymap.default is not None else next(iter(self.keymap.keys.values()))

    def action_for(self, held: set[str]):
        for key, action in self.keymap.keys.items():
            if key in held:
                return action
        return self._last if self.keymap.default is None else self.keymap.default

    def step(self, held: set[str]) -> np.ndarray:
        """Advance one step with the keys held now; returns the new frame."""
        if self.done:
            return self.frames[-1]
        action = self.action_for(held)
        self._last = action
        obs, reward, terminated, truncated, _ = self.env.step(action)
        self.observations.append(np.asarray(obs, dtype=np.float32))
        self.actions.append(np.asarray(action))
        self.rewards.append(float(reward))
        self.frames.append(render_frame(self.env))
        self.terminated = bool(terminated)
        self.done = bool(terminated or truncated or len(self.rewards) >= self.max_steps)
        return self.frames[-1]

    def trajectory(self) -> Trajectory:
        return Trajectory(env_id=self.env_id, seed=self.seed, observations=np.stack(self.observations),
                          actions=np.stack(self.actions) if self.actions else np.zeros((0,)),
                          rewards=np.asarray(self.rewards, dtype=np.float32), frames=np.stack(self.frames),
                          fps=self.fps, source={"kind": "human", "labeller": self.labeller}, terminated=self.terminated)

    def close(self) -> None:
        close_env(self.env)
