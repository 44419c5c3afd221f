"""Make any gymnasium environment, headless, with a clear message when that is impossible.

- Any registered id works, including a user's own: ``"my_package.envs:MyEnv-v0"`` imports
  ``my_package.envs`` first (gymnasium's own ``module:id`` syntax).
- Atari ids (``ALE/...``) register ale-py's environments on first use.
- MuJoCo renders through EGL (Mesa's CPU rasteriser works without a display); where no EGL
  library is found it falls back to OSMesa. Shadows, reflections and the skybox are switched off
  after the first frame: HalfCheetah renders ~4x faster that way and the clips stay readable.
- Create and render an env in the same thread (MuJoCo gives black frames otherwise), and call
  :func:`close_env` when done: an old MuJoCo viewer's finaliser can free a newer env's GL objects.
"""

from __future__ import annotations

import ctypes.util
import difflib
import gc
import os
from dataclasses import dataclass

import numpy as np


def _choose_mujoco_gl() -> None:
    if "MUJOCO_GL" in os.environ:
        return
    if ctypes.util.find_library("EGL"):
        os.environ["MUJOCO_GL"] = "egl"
    elif ctypes.util.find_library("OSMesa"):
        os.environ["MUJOCO_GL"] = "osmesa"
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    else:
        os.environ["MUJOCO_GL"] = "egl"  # the error at render time names the fix


_choose_mujoco_gl()
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame (classic control) never opens a window

import gymnasium as gym  # noqa: E402

_INSTALL_HINTS = {
    "box2d": 'pip install "gymnasium[box2d]"',
    "mujoco": 'pip install "gymnasium[mujoco]"',
    "ale": "pip install ale-py",
    "pygame": 'pip install "gymnasium[classic-control]"',
}


class EnvError(ValueError):
    """An environment cannot be made or rendered; the message names the fix."""


@dataclass(frozen=True)
class EnvInfo:
    env_id: str
    discrete: bool
    n_actions: int | None  # discrete
    action_dim: int | None  # continuous
    action_low: tuple | None
    action_high: tuple | None
    obs_shape: tuple
    fps: int
    max_episode_steps: int | None


def _register_ale() -> None:
    try:
        import ale_py
    except ImportError as exc:
        raise EnvError(f"Atari environments need ale-py: {_INSTALL_HINTS['ale']}.") from exc
    gym.register_envs(ale_py)


def make_env(env_id: str, *, render: bool = True, **kwargs) -> gym.Env:
    """``gym.make`` with ``render_mode="rgb_array"`` (when ``render``) and clear errors."""
    env_id = env_id.strip()
    if not env_id:
        raise EnvError("No environment id given.")
    module, sep, name = env_id.partition(":")
    if sep and (not name.strip() or not all(part.isidentifier() for part in module.split("."))):
        raise EnvError(f"{env_id!r} is not an environment id: write a registered id such as 'Pendulum-v1', "
                       "or 'your_module:YourEnv-v0' for your own.")
    if env_id.startswith("ALE/"):
        _register_ale()
    try:
        env = gym.make(env_id, render_mode="rgb_array" if render else None, **kwargs)
    except gym.error.DependencyNotInstalled as exc:
        text = str(exc).lower()
        hint = next((h for k, h in _INSTALL_HINTS.items() if k in text), "install the package it names")
        raise EnvError(f"{env_id} needs an optional dependency that is missing ({exc}). Fix: {hint}.") from exc
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound,
            gym.error.UnregisteredEnv) as exc:
        known = sorted(gym.registry.keys())
        close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise EnvError(f"Unknown environment {env_id!r}.{hint} Your own environment works as "
                       "'your_module:YourEnv-v0' once the module registers it.") from exc
    except ModuleNotFoundError as exc:
        raise EnvError(f"Cannot make {env_id!r}: module {exc.name!r} is not installed or not importable.") from exc
    except gym.error.Error as exc:
        raise EnvError(f"Cannot make {env_id!r}: {exc}") from exc
    return env


def speed_up_mujoco_rendering(env: gym.Env) -> bool:
    """Turn off shadows, reflections and skybox once the MuJoCo viewer exists. True if applied."""
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    viewer = getattr(renderer, "viewer", None) if renderer is not None else None
    if viewer is None or not hasattr(viewer, "scn"):
        return False
    import mujoco

    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
        viewer.scn.flags[flag] = 0
    return True


def render_frame(env: gym.Env) -> np.ndarray:
    """One RGB frame (H, W, 3) uint8; MuJoCo's speed flags are applied after its first frame."""
    try:
        frame = env.render()
    except Exception as exc:  # noqa: BLE001 - GL back-ends fail in many ways
        gl = os.environ.get("MUJOCO_GL", "")
        raise EnvError(f"Rendering {env.spec.id if env.spec else env} failed ({exc}). For MuJoCo, try "
                       f"MUJOCO_GL=osmesa with the Debian package libosmesa6 (now: MUJOCO_GL={gl!r}).") from exc
    if frame is None:
        raise EnvError("The environment was made without rendering (render_mode is None).")
    if not getattr(env, "_rlhf_fast_render", False):
        if speed_up_mujoco_rendering(env):
            frame = env.render()
        env._rlhf_fast_render = True  # type: ignore[attr-defined]
    return np.ascontiguousarray(frame, dtype=np.uint8)


def close_env(env: gym.Env) -> None:
    """Close and collect, so a MuJoCo viewer's finaliser cannot hit the next env's GL objects."""
    env.close()
    del env
    gc.collect()


def env_info(env: gym.Env) -> EnvInfo:
    space = env.action_space
    discrete = isinstance(space, gym.spaces.Discrete)
    fps = int(env.metadata.get("render_fps") or 30)
    spec = env.spec
    return EnvInfo(
        env_id=spec.id if spec else str(env),
        discrete=discrete,
        n_actions=int(space.n) if discrete else None,
        action_dim=None if discrete else int(np.prod(space.shape)),
        action_low=None if discrete else tuple(float(v) for v in np.asarray(space.low).ravel()),
        action_high=None if discrete else tuple(float(v) for v in np.asarray(space.high).ravel()),
        obs_shape=tuple(int(d) for d in (env.observation_space.shape or ())),
        fps=fps,
        max_episode_steps=spec.max_episode_steps if spec else None,
    )


def frame_is_blank(frame: np.ndarray) -> bool:
    """True for an all-black (or single-colour) frame: a broken GL context, not a picture."""
    return frame.size == 0 or int(frame.max()) == int(frame.min())


#: The environment families the workbench makes, renders and learns rewards on: entry-point module -> name.
SUPPORTED_FAMILIES = {
    "gymnasium.envs.classic_control": "classic control",
    "gymnasium.envs.box2d": "Box2D",
    "gymnasium.envs.mujoco": "MuJoCo",
    "ale_py": "Atari",
}


def supported_env_ids() -> list[tuple[str, str]]:
    """(id, family) of the registered environments of :data:`SUPPORTED_FAMILIES`, newest version of each
    name only, by family then name. MuJoCo's v2/v3 (they need the old mujoco-py) and Atari ids outside
    ``ALE/`` are left out; any other id still works when typed (see :func:`make_env`)."""
    try:
        _register_ale()
    except EnvError:
        pass  # no Atari: the other families are listed
    newest: dict[tuple[str, str], tuple[int, str, str]] = {}
    for env_id, spec in gym.registry.items():
        entry = spec.entry_point if isinstance(spec.entry_point, str) else ""
        module = entry.partition(":")[0]
        family = next((name for prefix, name in SUPPORTED_FAMILIES.items()
                       if module == prefix or module.startswith(prefix + ".")), None)
        if family is None or spec.version is None:
            continue
        if family == "Atari" and not env_id.startswith("ALE/"):
            continue
        if family == "MuJoCo" and spec.version < 4:
            continue
        key = (family, f"{spec.namespace}/{spec.name}" if spec.namespace else spec.name)
        if key not in newest or spec.version > newest[key][0]:
            newest[key] = (spec.version, env_id, family)
    order = list(SUPPORTED_FAMILIES.values())
    rows = sorted(newest.values(), key=lambda v: (order.index(v[2]), v[1].lower()))
    return [(env_id, family) for _, env_id, family in rows]
