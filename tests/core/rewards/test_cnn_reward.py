"""A CNN reward learned from pixels: rendered CartPole frames, snippets ranked by true return (T-REX).

Random play and a noisy linear controller give returns that differ; the CNN ensemble sees only
downscaled frames (the cart-and-pole band, grey, inverted, stacks of 2) and must order snippets of
trajectories it never saw. Here it reaches 0.72-0.83 on 120 held-out pairs over seeds 0-4 (an MLP on
the true state 0.84-0.94): the bound below is well above chance (0.5) and under every seed's result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.pixels import PixelObservations, PixelSpec, pixel_observations
from rlhf_core.envs.rollout import rollout
from rlhf_core.rewards.datasets import PairSet, trex_pairs
from rlhf_core.rewards.learned import LearnedReward
from rlhf_core.rewards.networks import RewardEnsemble
from rlhf_core.rewards.training import FitSettings, fit_reward_ensemble, pair_set_accuracy

SPEC = PixelSpec(height=44, width=44, grey=True, stack=2, crop=(0.3, 0.75, 0.35, 0.65), invert=True)
CAP = 30  # steps per episode: the controller's episodes all reach it, random play's end at 9-30
SNIPPETS = {"min_len": 4, "max_len": 10}


class Controller:
    """A linear state-feedback controller taking a random action with probability ``epsilon`` (1: random play)."""

    def __init__(self, epsilon: float, seed: int):
        self.epsilon, self.rng = epsilon, np.random.default_rng(seed)

    def act(self, obs):
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(2))
        return int(np.dot([0.3, 0.6, 3.0, 1.0], obs) > 0)


def pixel_trajectories(env, seeds) -> tuple[list[np.ndarray], list[float]]:
    observations, returns = [], []
    for seed in seeds:
        t = rollout(env, Controller(1.0 if seed % 2 == 0 else 0.3, seed), seed=seed, max_steps=CAP)
        observations.append(pixel_observations(t.frames, SPEC))
        returns.append(t.true_return)
    return observations, returns


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    env = make_env("CartPole-v1")
    try:
        train = pixel_trajectories(env, range(60))
        held = pixel_trajectories(env, range(500, 512))
    finally:
        close_env(env)
    pairs = trex_pairs(*train, 400, seed=0, **SNIPPETS)
    settings = FitSettings(members=2, steps=300, batch_size=8, lr=1e-3, weight_decay=0.0, eval_every=25,
                           image_shape=SPEC.shape, seed=0)
    ensemble, stats = fit_reward_ensemble(pairs, settings)
    return ensemble, stats, train, held


def test_cnn_ensemble_ranks_held_out_pixel_snippets(trained):
    ensemble, stats, train, (held_obs, held_returns) = trained
    assert ensemble.spec.kind == "cnn" and ensemble.spec.image_shape == SPEC.shape == (2, 44, 44)
    assert len(set(train[1])) > 5 and min(train[1]) < 20 and max(train[1]) == CAP  # returns differ
    assert train[0][0].dtype == np.uint8 and stats["heldout_pairs"] == 40
    # snippets of trajectories the model never saw, of clearly different returns
    pool = trex_pairs(held_obs, held_returns, 400, seed=99, **SNIPPETS)
    keep = [k for k in range(len(pool))
            if abs(held_returns[pool.first[k].traj] - held_returns[pool.second[k].traj]) >= 10][:120]
    held = PairSet(pool.obs, pool.offsets, [pool.first[k] for k in keep], [pool.second[k] for k in keep],
                   pool.target[keep])
    assert len(held) >= 100
    accuracy = pair_set_accuracy(ensemble, held)
    assert accuracy >= 0.62, accuracy


def test_saved_cnn_ensemble_loads_and_scores_a_live_pixel_env(trained, tmp_path):
    ensemble, _, train, _ = trained
    frames = torch.from_numpy(train[0][1][:6])
    path = tmp_path / "reward_ensemble.safetensors"
    ensemble.save(path, {"env_id": "CartPole-v1", "reward_mean": 0.5, "reward_std": 2.0})
    loaded, extra = RewardEnsemble.load(path)
    assert loaded.spec == ensemble.spec and extra["env_id"] == "CartPole-v1"
    np.testing.assert_allclose(loaded.predict(frames).numpy(), ensemble.predict(frames).numpy(), rtol=1e-5, atol=1e-6)
    # flattened rows (the pair tables) and images score alike
    np.testing.assert_allclose(loaded.predict(frames.reshape(6, -1)).numpy(), loaded.predict(frames).numpy(),
                               rtol=1e-5, atol=1e-6)
    env = LearnedReward(PixelObservations(make_env("CartPole-v1"), SPEC), path)
    try:
        obs, _ = env.reset(seed=3)
        assert obs.shape == SPEC.shape and obs.dtype == np.uint8
        obs, reward, _, _, info = env.step(1)
        expected = (float(loaded.predict(torch.from_numpy(obs[None]))[0]) - 0.5) / 2.0
        assert info["true_reward"] == 1.0 and math.isfinite(reward)
        assert reward == pytest.approx(expected, rel=1e-4, abs=1e-5)
    finally:
        close_env(env)


def test_fit_refuses_observations_that_are_not_the_images_named(trained):
    _, _, train, _ = trained
    pairs = trex_pairs(*train, 20, seed=1, **SNIPPETS)
    with pytest.raises(ValueError, match=r"not images of shape \(2, 40, 40\)"):
        fit_reward_ensemble(pairs, FitSettings(members=1, steps=1, image_shape=(2, 40, 40)))


def test_a_cnn_fit_asking_for_a_gpu_that_is_not_there_is_refused_in_words(trained):
    import torch

    from rlhf_core.devices import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _, _, train, _ = trained
    pairs = trex_pairs(*train, 20, seed=1, **SNIPPETS)
    with pytest.raises(DeviceError, match="torch sees none here"):
        fit_reward_ensemble(pairs, FitSettings(members=1, steps=1, image_shape=SPEC.shape, device="cuda"))
    ensemble, _ = fit_reward_ensemble(pairs, FitSettings(members=1, steps=2, image_shape=SPEC.shape, device="cpu"))
    assert next(ensemble.parameters()).device.type == "cpu"
