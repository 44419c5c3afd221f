"""Pixel observations: resizing by cell means, crops, stacks, and a live env giving the same stacks."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.pixels import PixelObservations, PixelSpec, pixel_observations, resize_frames, stack_frames
from rlhf_core.envs.policies import RandomPolicy
from rlhf_core.envs.rollout import rollout


def test_resize_is_the_mean_of_each_cell_and_crops():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    rgb = resize_frames(frames, 10, 20, grey=False)
    assert rgb.shape == (3, 3, 10, 20) and rgb.dtype == np.uint8
    expected = frames.reshape(3, 10, 4, 20, 3, 3).astype(float).mean((2, 4)).transpose(0, 3, 1, 2)
    assert np.abs(rgb.astype(float) - expected).max() <= 0.5
    grey = resize_frames(frames, 10, 20)
    weights = np.array([0.299, 0.587, 0.114])
    assert grey.shape == (3, 1, 10, 20)
    assert np.abs(grey[:, 0].astype(float) - (expected.transpose(0, 2, 3, 1) @ weights)).max() <= 0.5
    # the right half only, at full resolution: the pixels themselves
    crop = resize_frames(frames, 40, 30, grey=False, crop=(0.0, 1.0, 0.5, 1.0))
    assert np.array_equal(crop, frames[:, :, 30:].transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="images"):
        resize_frames(frames[0], 10, 10)
    with pytest.raises(ValueError, match="crop"):
        PixelSpec(crop=(0.5, 0.5, 0.0, 1.0))


def test_stacks_hold_the_last_frames_oldest_first():
    small = np.arange(4, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 2, 2), np.uint8)
    stacked = stack_frames(small, 3)
    assert stacked.shape == (4, 3, 2, 2)
    assert stacked[:, :, 0, 0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]


def test_live_env_observations_equal_those_of_the_rendered_frames():
    spec = PixelSpec(height=48, width=48, stack=3, invert=True)
    env = PixelObservations(make_env("CartPole-v1"), spec)
    try:
        assert env.observation_space.shape == spec.shape == (3, 48, 48)
        t = rollout(env, RandomPolicy(env.action_space, seed=1), seed=1, max_steps=8)
    finally:
        close_env(env)
    assert np.array_equal(t.observations.astype(np.uint8), pixel_observations(t.frames, spec))
    assert t.observations[0].max() > 100  # inverted: the cart is bright on a dark background
    plain = make_env("CartPole-v1", render=False)
    try:
        with pytest.raises(ValueError, match="render_mode"):
            PixelObservations(plain)
    finally:
        close_env(plain)
