"""Pixel observations: rendered frames, downscaled and stacked, as a reward network's input.

A CNN reward (:class:`rlhf_core.rewards.networks.CNNReward`, ``image_shape`` (C, H, W)) reads what a
person sees instead of the env's state vector. :func:`pixel_observations` turns a trajectory's
rendered frames ``[T+1, h, w, 3]`` (``rollout(render=True)``, or a stored video) into
``[T+1, C, H, W]`` uint8 stacks: grey (or RGB) frames area-averaged to (H, W), the last ``stack``
of them together so that one observation shows motion (Atari's 84x84 grey stacks of 4; the
first frame is repeated until there are enough). A crop keeps the part that matters at a higher
resolution (CartPole: the band of the cart and pole around the centre). :class:`PixelObservations` gives a live env the
same observations, so a CNN ensemble trained on stored frames scores a running env
(:class:`rlhf_core.rewards.learned.LearnedReward`).

Only numpy: resizing is a mean over the source pixels of each target cell (no image library).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from rlhf_core.envs.make import render_frame


@dataclass(frozen=True)
class PixelSpec:
    """How frames become observations: (H, W) after resizing, grey or RGB, frames per stack."""

    height: int = 64
    width: int = 64
    grey: bool = True
    stack: int = 2
    crop: tuple = (0.0, 1.0, 0.0, 1.0)  # (top, bottom, left, right) of the frame kept, as fractions
    invert: bool = False  # 255 - value: a light background (classic control) becomes 0, the objects bright

    def __post_init__(self):
        if self.height < 1 or self.width < 1 or self.stack < 1:
            raise ValueError("pixel observations need a height, width and stack of at least 1")
        top, bottom, left, right = self.crop
        if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
            raise ValueError(f"crop {self.crop} is not (top, bottom, left, right) fractions with top < bottom "
                             "and left < right")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one observation: the ``image_shape`` of a CNN reward reading it."""
        return ((1 if self.grey else 3) * self.stack, self.height, self.width)


def _cell_edges(n_in: int, n_out: int) -> np.ndarray:
    return (np.arange(n_out) * n_in) // n_out


def resize_frames(frames: np.ndarray, height: int, width: int, grey: bool = True,
                  crop: tuple = (0.0, 1.0, 0.0, 1.0)) -> np.ndarray:
    """``[N, h, w, 3]`` uint8 -> ``[N, C, H, W]`` uint8 (C 1 grey or 3): the ``crop`` (fractions) of
    each frame, each target pixel the mean of the source pixels of its cell (a target larger than the
    source repeats pixels)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frames must be [N, H, W, 3] images, not an array of shape {frames.shape}")
    h, w = frames.shape[1:3]
    top, bottom, left, right = crop
    frames = frames[:, int(round(top * h)):max(int(round(bottom * h)), int(round(top * h)) + 1),
                    int(round(left * w)):max(int(round(right * w)), int(round(left * w)) + 1)]
    x = frames[..., :3] if frames.shape[-1] != 1 else frames
    h, w = x.shape[1:3]
    # sums over each cell in integers (rows first: the large axis shrinks before anything else is done)
    if height <= h:
        rows = _cell_edges(h, height)
        x = np.add.reduceat(x, rows, axis=1, dtype=np.uint32) / np.diff(np.append(rows, h))[None, :, None, None]
    else:
        x = x[:, (np.arange(height) * h) // height].astype(np.float32)
    if width <= w:
        cols = _cell_edges(w, width)
        x = np.add.reduceat(x, cols, axis=2) / np.diff(np.append(cols, w))[None, None, :, None]
    else:
        x = x[:, :, (np.arange(width) * w) // width]
    if grey and x.shape[-1] == 3:
        x = (x @ np.asarray([0.299, 0.587, 0.114]))[..., None]
    elif not grey and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2))


def stack_frames(small: np.ndarray, stack: int) -> np.ndarray:
    """``[N, c, H, W]`` -> ``[N, stack * c, H, W]``: observation i holds frames i-stack+1 .. i (oldest
    first; frame 0 repeated before the start)."""
    if stack == 1:
        return small
    idx = np.maximum(np.arange(len(small))[:, None] + np.arange(-stack + 1, 1)[None, :], 0)
    out = small[idx]  # [N, stack, c, H, W]
    return np.ascontiguousarray(out.reshape(len(small), -1, *small.shape[2:]))


def pixel_observations(frames: np.ndarray, spec: PixelSpec = PixelSpec()) -> np.ndarray:
    """A trajectory's frames ``[T+1, h, w, 3]`` as pixel observations ``[T+1, *spec.shape]`` uint8."""
    return stack_frames(_small(frames, spec), spec.stack)


def _small(frames: np.ndarray, spec: PixelSpec) -> np.ndarray:
    small = resize_frames(frames, spec.height, spec.width, spec.grey, spec.crop)
    return 255 - small if spec.invert else small


class PixelObservations(gym.ObservationWrapper):
    """``env`` (made with ``render_mode="rgb_array"``) whose observations are pixel stacks of ``spec``.

    The observations equal :func:`pixel_observations` of the episode's frames, so a reward model
    trained on stored trajectories scores the live env's steps the same way.
    """

    def __init__(self, env: gym.Env, spec: PixelSpec = PixelSpec()):
        if env.render_mode != "rgb_array":
            raise ValueError("pixel observations need an environment made with render_mode='rgb_array' "
                             "(make_env(env_id, render=True))")
        super().__init__(env)
        self.spec_pixels = spec
        self.observation_space = gym.spaces.Box(0, 255, spec.shape, np.uint8)
        self._frames: deque = deque(maxlen=spec.stack)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._frames.clear()
        return self.observation(obs), info

    def observation(self, observation):
        spec = self.spec_pixels
        small = _small(render_frame(self.env)[None], spec)[0]
        if not self._frames:
            self._frames.extend([small] * self.spec_pixels.stack)
        else:
            self._frames.append(small)
        return np.concatenate(list(self._frames), axis=0)
