"""D-REX's noise ranking and curve, and T-REX ranked by learner checkpoint without any true return."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rlhf_core.envs.make import close_env, env_info, make_env
from rlhf_core.envs.policies import RandomPolicy
from rlhf_core.envs.rollout import Trajectory, rollout
from rlhf_core.experiments.extrapolation import (ExtrapolationDemoConfig, _learner_demos, checkpoint_ranks,
                                                 noise_curve, noise_rollouts, ranked_pairs, select_demos,
                                                 train_bc)
from rlhf_core.jobs import RecordingContext
from rlhf_core.rewards.datasets import drex_pairs
from rlhf_core.rewards.training import FitSettings, fit_reward_ensemble, predicted_returns


class Balancer:
    """A hand-written CartPole controller (push towards where the pole falls): a demonstrator BC can copy."""

    def act(self, obs):
        return int(obs[2] + 0.5 * obs[3] > 0)


@pytest.fixture(scope="module")
def cartpole_noise():
    """BC cloned from 3 balancer episodes, rolled out at the discrete D-REX noise levels (8 rollouts per
    level: with fewer the two nearly random levels, 0.75 and 1.0, can swap; 8 BC seeds tried, all monotone)."""
    env = make_env("CartPole-v1", render=False)
    try:
        config = ExtrapolationDemoConfig(env_id="CartPole-v1", seed=3, bc_steps=1000, drex_rollouts_per_level=8)
        demos = [rollout(env, Balancer(), seed=100 + i, max_steps=300, render=False) for i in range(3)]
        bc = train_bc(config, demos, env_info(env), RecordingContext())
        trajs, eps = noise_rollouts(config, bc, env, RecordingContext())
    finally:
        close_env(env)
    return config, trajs, eps


def test_noise_curve_of_a_cloned_policy_falls(cartpole_noise):
    _, trajs, eps = cartpole_noise
    curve, rho = noise_curve(trajs, eps)
    assert [c["epsilon"] for c in curve] == [0.01, 0.25, 0.5, 0.75, 1.0]
    assert all(c["n"] == 8 and c["std_return"] >= 0 for c in curve)
    assert rho <= -0.9
    # the cloned balancer keeps the pole up far longer than random play (about 20 steps)
    assert curve[0]["mean_return"] >= 150 and curve[0]["mean_return"] > curve[-1]["mean_return"] + 100


def test_noise_rollouts_share_start_states_across_levels(cartpole_noise):
    config, trajs, eps = cartpole_noise
    per_level = config.drex_rollouts_per_level
    starts = [t.seed for t in trajs]
    assert starts == [config.seed + 20_000 + k for _ in range(len(set(eps))) for k in range(per_level)]
    assert all(t.source == {"kind": "bc", "epsilon": e} for t, e in zip(trajs, eps))


def test_drex_pairs_always_prefer_less_noise_by_the_margin(cartpole_noise):
    _, trajs, eps = cartpole_noise
    pairs = drex_pairs([t.observations for t in trajs], eps, 300, min_gap=0.3, min_len=5, max_len=10, seed=0)
    assert len(pairs) == 300
    for a, b, p in zip(pairs.first, pairs.second, pairs.target):
        ea, eb = eps[a.traj], eps[b.traj]
        assert abs(ea - eb) >= 0.3 - 1e-9
        assert p == (1.0 if ea < eb else 0.0)


class BlindTrajectory(Trajectory):
    """A trajectory whose true rewards cannot be read: any read fails the test."""

    @property
    def rewards(self):
        raise AssertionError("the true reward was read")

    @rewards.setter
    def rewards(self, value):
        self._hidden = value


def _checkpoint_demos():
    env = make_env("Pendulum-v1", render=False)
    try:
        return [rollout(env, RandomPolicy(env.action_space, seed=i), seed=i, max_steps=40, render=False,
                        source={"kind": "checkpoint", "step": 1000 * (i // 2)}) for i in range(6)]
    finally:
        close_env(env)


@pytest.mark.parametrize("gap", [0.0, 0.1])
def test_checkpoint_ranking_reads_no_true_return(gap):
    demos = _checkpoint_demos()
    config = ExtrapolationDemoConfig(ranking="checkpoint", checkpoint_gap=gap, learner_steps=20_000, snippet_pairs=120,
                                     snippet_min=5, snippet_max=10, seed=1)
    blind = [BlindTrajectory(**{f.name: getattr(t, f.name) for f in dataclasses.fields(t)}) for t in demos]
    with pytest.raises(AssertionError, match="true reward was read"):
        ranked_pairs(dataclasses.replace(config, ranking="true_return"), blind)
    _, pairs = ranked_pairs(config, blind)  # would raise on any read of a reward
    step = [t.source["step"] for t in demos]
    for a, b, p in zip(pairs.first, pairs.second, pairs.target):
        assert abs(step[a.traj] - step[b.traj]) >= max(gap * 20_000, 1)  # one checkpoint's episodes never pair
        assert p == (1.0 if step[a.traj] > step[b.traj] else 0.0)  # the later checkpoint is better

    # zeroing the stored true rewards changes neither the pairs nor the learned reward
    zeroed = [dataclasses.replace(t, rewards=np.zeros_like(t.rewards)) for t in demos]
    obs, original = ranked_pairs(config, demos)
    _, again = ranked_pairs(config, zeroed)
    assert (original.first, original.second) == (again.first, again.second)
    np.testing.assert_array_equal(original.target, again.target)
    settings = FitSettings(members=1, hidden=8, steps=30, seed=0)
    ens_a, _ = fit_reward_ensemble(original, settings)
    ens_b, _ = fit_reward_ensemble(again, settings)
    np.testing.assert_array_equal(predicted_returns(ens_a, obs), predicted_returns(ens_b, obs))


def test_checkpoint_gap_wider_than_the_learner_is_one_sentence():
    config = ExtrapolationDemoConfig(ranking="checkpoint", checkpoint_gap=0.25, learner_steps=20_000, snippet_pairs=10)
    with pytest.raises(ValueError, match="no two learner policies are checkpoint_gap"):
        ranked_pairs(config, _checkpoint_demos())


def test_min_demo_return_keeps_demos_within_bounds_and_refuses_too_few():
    trajs = _checkpoint_demos()
    returns = sorted(t.true_return for t in trajs)
    lo, hi = returns[1], returns[4]
    config = ExtrapolationDemoConfig(max_demo_return=hi, min_demo_return=lo)
    demos, unseen = select_demos(config, trajs)
    assert len(demos) == 4 and all(lo <= t.true_return <= hi for t in demos)
    assert len(unseen) == 2 and all(not lo <= t.true_return <= hi for t in unseen)  # the rest: never seen
    # off by default: every demo up to the cap is kept
    assert len(select_demos(ExtrapolationDemoConfig(max_demo_return=hi), trajs)[0]) == 5
    with pytest.raises(ValueError, match=r"^only 1 learner trajectories have a true return between .*; lower "
                                         r"min_demo_return"):
        select_demos(dataclasses.replace(config, min_demo_return=hi), trajs)


def test_checkpoint_ranking_runs_the_learner_without_stopping_on_returns():
    # CartPole's returns are all above this cap: ranked by true return the learner stops at its first
    # checkpoint; ranked by checkpoint no return decides anything, so it runs its whole budget
    config = ExtrapolationDemoConfig(env_id="CartPole-v1", learner_steps=768, checkpoint_every=256,
                                     episodes_per_checkpoint=1, max_demo_return=-1.0, ppo_batch_size=64)
    by_return = _learner_demos(config, RecordingContext(), None, keep_files=False)
    by_step = _learner_demos(dataclasses.replace(config, ranking="checkpoint"), RecordingContext(), None,
                             keep_files=False)
    assert len(by_return.trajectories) == 1
    assert len({t.source["step"] for t in by_step.trajectories}) >= 3 and by_step.demonstrator == []


def test_checkpoints_carry_the_steps_their_policy_was_trained_on():
    # CartPole's PPO updates every 8 envs x 32 steps = 256: checkpoints every 100 steps share policies
    config = ExtrapolationDemoConfig(env_id="CartPole-v1", learner_steps=1024, checkpoint_every=100,
                                     episodes_per_checkpoint=1, max_demo_return=1e9, ppo_batch_size=64)
    every = _learner_demos(config, RecordingContext(), None, keep_files=False).trajectories
    steps = [t.source["step"] for t in every]
    assert steps == sorted(steps) and len(steps) >= 8
    assert [t.source["policy_step"] for t in every] == [(s - 1) // 256 * 256 for s in steps]
    # ranked by checkpoint: one checkpoint per policy, its rank the policy's training steps
    once = _learner_demos(dataclasses.replace(config, ranking="checkpoint"), RecordingContext(), None,
                          keep_files=False).trajectories
    assert [t.source["policy_step"] for t in once] == [0, 256, 512, 768]
    assert checkpoint_ranks(once) == [0.0, 256.0, 512.0, 768.0]


TINY = dict(env_id="CartPole-v1", learner_steps=1024, checkpoint_every=512, episodes_per_checkpoint=2,
            snippet_pairs=200, members=1, reward_steps=40, snippet_min=5, snippet_max=10, ppo_steps=1024,
            eval_episodes=2, video_of_policy=False, bc_steps=100, drex_rollouts_per_level=2)


def test_drex_job_reports_demonstrator_bc_and_noise_curve(project):
    from rlhf_core.jobs import execute_job, get_job

    # CartPole returns are >= 8: the first checkpoint is the demonstrator
    config = ExtrapolationDemoConfig(method="drex", drex_demo_episodes=3, drex_demonstrator_return=0.0, **TINY)
    out = execute_job(get_job("extrapolation_demo"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    r = out.result
    assert r["n_demos"] == 3 and r["demonstrator_mean_return"] == pytest.approx(r["mean_demo_return"])
    assert r["demonstrator_step"] is not None and np.isfinite(r["bc_return"])
    assert [c["epsilon"] for c in r["noise_curve"]] == [0.01, 0.25, 0.5, 0.75, 1.0]
    assert all(set(c) == {"epsilon", "mean_return", "std_return", "n"} and c["n"] == 2 for c in r["noise_curve"])
    assert -1.0 <= r["noise_curve_spearman"] <= 1.0
    assert r["beats_bc"] == (r["policy_return"] > r["bc_return"])
    sample = project.samples(out.run_id, "noise_curve")[0]["payload"]
    assert sample["epsilon"] == [c["epsilon"] for c in r["noise_curve"]]
    assert sample["mean_true_return"] == [c["mean_return"] for c in r["noise_curve"]]
    assert len(project.items("trajectory")) == 3  # the demonstrator's episodes are the stored demos


def test_checkpoint_ranked_job_keeps_every_checkpoint(project):
    from rlhf_core.jobs import execute_job, get_job

    # ranked by true return this cap would leave no demonstration at all
    config = ExtrapolationDemoConfig(ranking="checkpoint", max_demo_return=-1.0, **TINY)
    out = execute_job(get_job("extrapolation_demo"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    r = out.result
    n_ckpt = len(list(project.run_folder(out.run_id).glob("learner_*.zip")))
    assert r["ranking"] == "checkpoint" and n_ckpt >= 2 and r["n_demos"] == 2 * n_ckpt
    assert "noise_curve" not in r
