"""The public LearnedReward: a reward ensemble trained by the ordinary reward_model job (safetensors)
wraps a plain gymnasium CartPole; the reward is the standardised learned one, the true one stays in info."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors import safe_open

from tests.conftest import ROOT


@pytest.fixture
def reward_file(project):
    from rlhf_core.envs.make import close_env, make_env
    from rlhf_core.envs.policies import RandomPolicy
    from rlhf_core.envs.rollout import rollout
    from rlhf_core.envs.storage import save_trajectory
    from rlhf_core.jobs import RecordingContext, execute_job, get_job
    from rlhf_core.trainers.control.reward_model import RewardModelConfig

    env = make_env("CartPole-v1", render=False)
    ids = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, render=False))
           for s in range(5)]
    close_env(env)
    returns = {i: project.get_item(i)["true_return"] for i in ids}
    project.add_ranking([[i] for i in sorted(ids, key=returns.get)])
    config = RewardModelConfig(env_id="CartPole-v1", source="rankings", members=2, steps=20, snippet_pairs=40,
                               snippet_min=3, snippet_max=6, hidden=8)
    out = execute_job(get_job("reward_model"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    return project.abspath(project.checkpoints()[-1]["path"])


def test_learned_reward_wraps_a_gymnasium_env(reward_file):
    from rlhf_core.rewards import LearnedReward
    from rlhf_core.rewards.networks import RewardEnsemble

    assert reward_file.suffix == ".safetensors"
    with safe_open(str(reward_file), framework="pt") as fh:  # readable without the workbench
        assert fh.metadata()["format"] == "rlhf-workbench/reward-ensemble"
    ensemble, extra = RewardEnsemble.load(reward_file)
    assert extra["env_id"] == "CartPole-v1" and extra["reward_std"] > 0
    from rlhf_core.store.model_card import read_card_header

    card = read_card_header(reward_file.parent / "README.md")  # the model card beside the file
    assert "reward-model" in card["tags"] and card["rlhf_workbench"]["files"] == [reward_file.name]
    assert "LearnedReward(gym.make(" in (reward_file.parent / "README.md").read_text(encoding="utf-8")

    env = LearnedReward(gym.make("CartPole-v1"), reward_file)
    obs, _ = env.reset(seed=0)
    total_true = 0.0
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        expected = (float(ensemble.predict(torch.from_numpy(obs[None]))[0]) - extra["reward_mean"]) / extra["reward_std"]
        assert reward == pytest.approx(expected, rel=1e-5, abs=1e-6) and info["learned_reward"] == reward
        assert info["true_reward"] == 1.0  # CartPole's own reward, kept
        total_true += info["true_reward"]
        if terminated or truncated:
            break
    batch = np.stack([env.observation_space.sample() for _ in range(3)])
    assert env.reward(batch).shape == (3,) and np.ndim(env.reward(batch[0])) == 0
    env.close()

    positive = LearnedReward(gym.make("CartPole-v1"), reward_file, positive=True)
    positive.reset(seed=0)
    assert 0.0 < positive.step(0)[1] < 1.0
    with pytest.raises(ValueError, match="trained on CartPole-v1, not Acrobot-v1"):
        LearnedReward(gym.make("Acrobot-v1"), reward_file)
    with pytest.raises(ValueError, match="observations of 4 numbers"):
        LearnedReward(gym.make("Acrobot-v1"), reward_file, allow_other_env=True)


def test_safetensors_files_round_trip_and_others_are_refused(tmp_path):
    from safetensors.torch import save_file

    from rlhf_core.rewards.networks import RewardEnsemble, RewardNetSpec

    torch.manual_seed(0)
    ens = RewardEnsemble(RewardNetSpec(obs_dim=3, hidden=8), 2)
    ens.save(tmp_path / "r.safetensors", {"reward_mean": 0.25, "env_id": "Pendulum-v1"})
    again, extra = RewardEnsemble.load(tmp_path / "r.safetensors")
    x = torch.randn(5, 3)
    torch.testing.assert_close(again(x), ens(x))
    assert extra == {"reward_mean": 0.25, "env_id": "Pendulum-v1"} and again.spec == ens.spec
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a reward ensemble saved by the workbench"):
        RewardEnsemble.load(tmp_path / "other.safetensors")


def test_importing_the_rewards_package_does_not_load_torch():
    code = "import sys, rlhf_core.rewards; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
