"""The active_queries job: the pairs of a pool where the reward model's members disagree most, checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rlhf_core import config as cfg
from rlhf_core import kinds
from rlhf_core.envs.clips import make_clips
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import RandomPolicy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import load_arrays, save_trajectory
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.labelers.active_queries import ActiveQueriesConfig
from rlhf_core.rewards.networks import RewardEnsemble, RewardNetSpec
from rlhf_core.rewards.text_heads import fit_heads, head_probs
from tests.conftest import add_marker_pairs, needs_model

#: member k's reward of a Pendulum state is W[k] . (cos, sin, velocity): members that disagree on purpose
W = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.3], [-0.5, 0.5, 0.1]], dtype=np.float32)


@pytest.fixture
def pool(project):
    """12 Pendulum clips of 5 steps, one queued pair, and a 4-member linear reward ensemble of Pendulum."""
    env = make_env("Pendulum-v1", render=False)
    trajs = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=20,
                                              render=False)) for s in range(4)]
    close_env(env)
    clips = make_clips(project, trajs, length=5, per_trajectory=3, seed=0)
    project.enqueue_pair(clips[0], clips[1])  # already waiting: never queued again
    ensemble = RewardEnsemble(RewardNetSpec(obs_dim=3, hidden=1, layers=0), members=len(W))
    with torch.no_grad():
        for member, w in zip(ensemble.members, W):
            member.net[0].weight.copy_(torch.from_numpy(w)[None])
            member.net[0].bias.zero_()
    path = project.folder / "ensemble.safetensors"
    ensemble.save(path, {"env_id": "Pendulum-v1"})
    ckpt = project.add_checkpoint(None, kinds.REWARD_ENSEMBLE, path, meta={"env_id": "Pendulum-v1"})
    return project, clips, ckpt


def by_hand(project, clips) -> dict[frozenset, np.ndarray]:
    """Each new pair's member P(first better), from the clips' states and W, in float64."""
    states = {c: load_arrays(project, project.get_item(c))["observations"][1:].astype(np.float64).sum(0) for c in clips}
    out = {}
    for i, a in enumerate(clips):
        for b in clips[i + 1:]:
            if {a, b} != {clips[0], clips[1]}:
                out[frozenset((a, b))] = 1 / (1 + np.exp(-(W.astype(np.float64) @ (states[a] - states[b]))))
    return out


def run(project, **settings):
    out = execute_job(get_job("active_queries"), ActiveQueriesConfig(**settings), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "completed", out.error
    rows = [dict(r) for r in project.conn.execute("SELECT * FROM pair_queue WHERE id IN (%s) ORDER BY id" %
                                                  ",".join(map(str, out.result["queue_ids"])))]
    return out.result, rows


def test_disagreement_queues_the_pairs_of_highest_variance(pool):
    project, clips, ckpt = pool
    probs = by_hand(project, clips)
    ranked = sorted(probs, key=lambda p: -np.var(probs[p]))
    assert np.var(probs[ranked[4]]) - np.var(probs[ranked[5]]) > 1e-6  # a clear top 5
    result, rows = run(project, env_id="Pendulum-v1", queue_pairs=5, candidate_multiplier=100)
    assert result["candidates"] == 65 and result["members"] == 4 and result["reward_checkpoint_id"] == ckpt
    assert {frozenset((r["left_id"], r["right_id"])) for r in rows} == set(ranked[:5])
    for r in rows:  # why this pair: every member's P(left better), as computed by hand
        reason = json.loads(r["reason_json"])
        hand = probs[frozenset((r["left_id"], r["right_id"]))]
        hand = hand if r["left_id"] < r["right_id"] else 1 - hand
        assert reason["selection"] == "disagreement" and reason["reward_checkpoint_id"] == ckpt
        assert reason["member_p_left"] == pytest.approx(hand.tolist(), abs=1e-4)
        assert reason["disagreement"] == pytest.approx(np.var(hand), abs=1e-5)
    assert [json.loads(r["reason_json"])["disagreement"] for r in rows] == sorted(
        (json.loads(r["reason_json"])["disagreement"] for r in rows), reverse=True)  # the most useful first


def test_uncertainty_and_random_selections(pool):
    project, clips, _ = pool
    probs = by_hand(project, clips)
    nearest = sorted(probs, key=lambda p: abs(probs[p].mean() - 0.5))
    _, rows = run(project, env_id="Pendulum-v1", selection="uncertainty", queue_pairs=3, candidate_multiplier=100)
    assert {frozenset((r["left_id"], r["right_id"])) for r in rows} == set(nearest[:3])
    result, rows = run(project, env_id="Pendulum-v1", selection="random", queue_pairs=5, candidate_multiplier=100,
                       seed=3)
    picked = {frozenset((r["left_id"], r["right_id"])) for r in rows}
    top = set(sorted(probs, key=lambda p: -np.var(probs[p]))[:5])
    assert len(picked) == 5 and picked != top and not picked & set(nearest[:3])  # none queued twice
    assert all(len(json.loads(r["reason_json"])["member_p_left"]) == 4 for r in rows)  # the members still say


def test_a_pool_without_a_reward_model_says_what_to_do(project):
    env = make_env("Pendulum-v1", render=False)
    traj = save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=0), seed=0, max_steps=12,
                                            render=False))
    close_env(env)
    make_clips(project, [traj], length=4, per_trajectory=3)
    out = execute_job(get_job("active_queries"), ActiveQueriesConfig(env_id="Pendulum-v1"), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "failed" and "no reward model of Pendulum-v1" in out.error
    assert project.pending_pairs() == []
    result, rows = run(project, env_id="Pendulum-v1", selection="random", queue_pairs=2)
    assert len(rows) == 2 and all(json.loads(r["reason_json"])["member_p_left"] == [] for r in rows)
    with pytest.raises(cfg.ConfigError, match="choose the responses"):
        cfg.validate(ActiveQueriesConfig(pool="responses", prompt_set=""))
    with pytest.raises(cfg.ConfigError, match="no built-in prompt set 'nope'"):
        cfg.validate(ActiveQueriesConfig(pool="responses", prompt_set="nope"))


def test_heads_learn_the_labels_each_from_its_own_bootstrap():
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(120, 8)).astype(np.float32))
    pairs = [(i, i + 60, float(features[i, 0] > features[i + 60, 0])) for i in range(60)]  # feature 0 decides
    heads = fit_heads(features, pairs, members=3, steps=150, seed=0)
    p = head_probs(heads, features[:60], features[60:])
    assert p.shape == (60, 3) and not torch.allclose(heads.weight[0], heads.weight[1])
    labels = np.array([t for *_, t in pairs], dtype=bool)
    assert ((p > 0.5) == labels[:, None]).mean() > 0.85 and ((p.mean(1) > 0.5) == labels).mean() > 0.9
    untrained = fit_heads(features, [], members=3, seed=0)  # no labels: the random draws
    assert not torch.allclose(untrained.weight[0], untrained.weight[1])
    few = head_probs(fit_heads(features, pairs[:6], members=3, seed=0), features[:60], features[60:])
    assert few.var(1).mean() > 2 * p.var(1).mean()  # fewer labels: more disagreement (0.030 vs 0.008 here)


@needs_model
def test_text_pool_queues_pairs_by_the_heads_disagreement(project, tiny_model, tmp_path):
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model

    model, _, _ = load_base_reward_model(str(tiny_model), max_length=64)
    folder = save_text_reward_model(model, tmp_path / "rm", {"base_model": str(tiny_model)})
    pids = add_marker_pairs(project, n_pairs=8)  # 4 prompts x 4 responses: 24 pairs, 8 labelled
    labelled = {frozenset((c["left_id"], c["right_id"])) for c in project.comparisons()}
    result, rows = run(project, pool="responses", reward_model=str(folder), prompt_set="", prompt_ids=pids, heads=3,
                       head_steps=20, queue_pairs=4, label_sources="synthetic")
    assert result["candidates"] == 16 and result["labels"] == 8 and result["members"] == 3 and len(rows) == 4
    for r in rows:
        reason = json.loads(r["reason_json"])
        left, right = project.get_item(r["left_id"]), project.get_item(r["right_id"])
        assert left["prompt_id"] == right["prompt_id"] == reason["prompt_id"]
        assert frozenset((left["id"], right["id"])) not in labelled
        assert len(reason["member_p_left"]) == 3 and reason["heads"] == 3
        assert reason["disagreement"] == pytest.approx(np.var(reason["member_p_left"]), abs=1e-9)
    out = execute_job(get_job("active_queries"), ActiveQueriesConfig(pool="responses", reward_model=str(folder),
                                                                     prompt_set="", prompt_ids=pids,
                                                                     label_sources="human"),
                      RecordingContext(), project_path=project.folder)
    assert out.status == "failed" and "no text labels from human" in out.error
