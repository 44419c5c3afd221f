"""Any control reward model against the true return: a reward model and a policy made by the ordinary jobs
(rollouts -> label_pairs with the oracle -> reward_model -> ppo_learned -> rollouts of that policy) on
CartPole, checked against values recomputed here; the control reward-hacking alert on hand-made series."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_core import config as cfg
from rlhf_core import kinds
from rlhf_core.analysis.reward_check import (
    LEARNED_KEY,
    TRUE_KEY,
    RewardCheckError,
    check_reward,
    control_alerts,
    policy_trajectory_counts,
)
from rlhf_core.envs.storage import load_arrays
from rlhf_core.jobs import RecordingContext, execute_job, get_job

ENV = "CartPole-v1"


def _run(project, job: str, **settings) -> dict:
    spec = get_job(job)
    out = execute_job(spec, cfg.from_dict(spec.config_class(), settings), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "completed", f"{job}: {out.error}"
    return out.result


def make_reward_and_policy(project) -> dict:
    """Labelled clips of six random CartPole episodes, a reward model on those labels, a short PPO on it and
    three rollouts of that policy made after the reward model (ids in the returned dict)."""
    first = _run(project, "rollouts", env_id=ENV, episodes=6, max_steps=40, clips_per_trajectory=2, clip_length=8,
                 queue_pairs=10)
    _run(project, "label_pairs", teacher="oracle")
    rm = _run(project, "reward_model", env_id=ENV, source="comparisons", label_sources="synthetic", members=2,
              hidden=16, steps=30, heldout_fraction=0.0)
    ppo = _run(project, "ppo_learned", env_id=ENV, reward_checkpoint_id=rm["checkpoint_id"], total_steps=1000,
               eval_episodes=1, record_video=False)
    later = _run(project, "rollouts", env_id=ENV, policy="checkpoint", checkpoint_id=ppo["checkpoint_id"], episodes=3,
                 max_steps=60, seed=100, clips_per_trajectory=0, queue_pairs=0, record_video=False)
    return {"first": first["trajectories"], "later": later["trajectories"], "reward": rm["checkpoint_id"],
            "policy": ppo["checkpoint_id"], "ppo_run": max(r["id"] for r in project.runs("ppo_learned"))}


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank (Spearman's definition)."""
    values, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def test_any_reward_model_against_the_true_return(project):
    made = make_reward_and_policy(project)
    check = check_reward(project, made["reward"])
    assert check.env_id == ENV and check.item_ids == made["first"] + made["later"]
    items = [project.get_item(i) for i in check.item_ids]
    np.testing.assert_array_equal(check.true_returns, [it["true_return"] for it in items])
    # predictions recomputed through the public gymnasium wrapper (raw, unstandardised rewards of the states reached)
    import gymnasium as gym

    from rlhf_core.rewards import LearnedReward

    art_path = project.abspath(next(c for c in project.checkpoints() if c["id"] == made["reward"])["path"])
    wrapper = LearnedReward(gym.make(ENV), art_path, standardise=False)
    expected = [float(wrapper.reward(load_arrays(project, it)["observations"][1:]).sum()) for it in items]
    np.testing.assert_allclose(check.predicted, expected, rtol=1e-5, atol=1e-5)
    # seen: the trajectories whose clips are in the labels it trained on; the policy's later rollouts are unseen
    labelled = {project.get_item(i)["parent_id"] for c in project.comparisons() for i in (c["left_id"], c["right_id"])}
    assert {i for i, s in zip(check.item_ids, check.seen) if s} == labelled
    assert not check.seen[-3:].any()
    assert check.report["n_unseen"] == len(made["later"]) + len(set(made["first"]) - labelled)
    assert check.best_demo_return == max(project.get_item(i)["true_return"] for i in labelled)
    # correlations recomputed with numpy on the same arrays
    true, pred = check.true_returns, check.predicted
    assert check.report["all_pearson"] == pytest.approx(np.corrcoef(true, pred)[0, 1], abs=1e-9)
    assert check.report["all_spearman"] == pytest.approx(
        np.corrcoef(_average_ranks(true), _average_ranks(pred))[0, 1], abs=1e-9)
    unseen = ~check.seen
    beyond = int((true[unseen] > check.best_demo_return).sum())
    assert check.report["unseen_beyond_best_demo"] == beyond
    text = check.text()
    assert "Pearson r = " in text and "Spearman ρ = " in text and f"{beyond} of the {unseen.sum()} unseen" in text

    # one policy's rollouts only: the three made after the reward model, none seen
    assert policy_trajectory_counts(project, ENV) == {made["policy"]: 3}
    mine = check_reward(project, made["reward"], f"checkpoint:{made['policy']}")
    assert mine.item_ids == made["later"] and not mine.seen.any() and mine.best_demo_return is None
    np.testing.assert_allclose(mine.predicted, check.predicted[-3:])
    assert mine.policy_name in mine.text() and "no best demonstration" in mine.text()

    # the PPO run on the learned reward logged both returns the alert reads
    metrics = project.metrics(made["ppo_run"])
    assert len(metrics[LEARNED_KEY][0]) >= 3 and metrics[LEARNED_KEY][0] == metrics[TRUE_KEY][0]
    assert {a.kind for a in control_alerts(metrics)} <= {"reward_hacking"}


def test_bad_choices_are_refused_in_a_sentence(project):
    import torch

    from rlhf_core.rewards.networks import RewardEnsemble, RewardNetSpec

    first = _run(project, "rollouts", env_id=ENV, episodes=2, max_steps=20, clips_per_trajectory=0, queue_pairs=0,
                 record_video=False)
    project.add_ranking([[first["trajectories"][0]], [first["trajectories"][1]]])
    rm = _run(project, "reward_model", env_id=ENV, source="rankings", members=1, hidden=8, steps=10,
              snippet_pairs=10, snippet_min=2, snippet_max=4)
    policy = _run(project, "bc", env_id=ENV, demo_ids=first["trajectories"], epochs=1, eval_episodes=0)
    # a reward model of an environment the project has no trajectories of (an imported file, no run)
    torch.manual_seed(0)
    path = project.folder / "acrobot_reward.safetensors"
    RewardEnsemble(RewardNetSpec(obs_dim=6, hidden=4), 1).save(path, {"env_id": "Acrobot-v1"})
    other = project.add_checkpoint(None, kinds.REWARD_ENSEMBLE, path, meta={"env_id": "Acrobot-v1"})
    before = project.counts()
    with pytest.raises(RewardCheckError, match="is a behavioural-cloning policy, not a control reward model"):
        check_reward(project, policy["checkpoint_id"])
    with pytest.raises(RewardCheckError, match="No control reward model is called 'nope'"):
        check_reward(project, "nope")
    with pytest.raises(RewardCheckError, match=r"no trajectories of .*roll it out with the rollouts job"):
        check_reward(project, rm["checkpoint_id"], policy["checkpoint_id"])
    with pytest.raises(RewardCheckError, match="no trajectories of Acrobot-v1 to score"):
        check_reward(project, other)
    with pytest.raises(RewardCheckError, match="acts in CartPole-v1, but .* is a reward model of Acrobot-v1"):
        check_reward(project, other, policy["checkpoint_id"])
    assert isinstance(RewardCheckError("x"), ValueError) and project.counts() == before  # nothing changed
    # rankings: both ranked trajectories are what it saw
    check = check_reward(project, rm["checkpoint_id"])
    assert check.seen.all() and "rankings" in check.basis


def _series(values, start=0, every=256):
    return [start + every * i for i in range(len(values))], list(values)


def test_control_alert_fires_when_the_learned_return_rises_and_the_true_return_falls():
    learned = [10, 12, 15, 19, 24, 30, 37, 45]
    true = [20, 60, 120, 180, 200, 150, 90, 40]
    alerts = control_alerts({LEARNED_KEY: _series(learned), TRUE_KEY: _series(true)})
    assert [a.kind for a in alerts] == ["reward_hacking"]
    assert alerts[0].step == 7 * 256
    assert "the learned return rose" in alerts[0].message and "the true return fell from 200.000 to 40.000" in (
        alerts[0].message)


def test_control_alert_stays_quiet_within_the_noise_margin():
    rng = np.random.default_rng(0)
    learned = list(np.linspace(10, 45, 12))
    # true return wobbling within 1 % of its level: under the margin (a fraction of its scale)
    true = list(200 + rng.uniform(-1.5, 1.5, 12))
    assert control_alerts({LEARNED_KEY: _series(learned), TRUE_KEY: _series(true)}) == []
    # both rise: no alert; both fall (the reward model sees the decline too): no alert
    assert control_alerts({LEARNED_KEY: _series(learned), TRUE_KEY: _series(np.linspace(20, 200, 12))}) == []
    assert control_alerts({LEARNED_KEY: _series(learned[::-1]), TRUE_KEY: _series(np.linspace(200, 40, 12))}) == []
    # text keys are not read: a control run has none
    assert control_alerts({"reward/mean": _series(learned), "gold/reward": _series([3, 5, 1])}) == []
