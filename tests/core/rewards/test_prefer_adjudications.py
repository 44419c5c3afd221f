"""Training prefers an adjudication over the disputed labels of its pair: the one shared helper
(rlhf_core.rewards.outcomes.prefer_adjudications) on real rows, and the readers that use it (text pairs for
the text reward model / DPO / SFT, the TRL export, the control reward model's comparisons)."""

from __future__ import annotations

from rlhf_core.envs.clips import make_clips
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import RandomPolicy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import save_trajectory
from rlhf_core.io.trl import preference_pairs as trl_pairs
from rlhf_core.rewards.outcomes import prefer_adjudications
from rlhf_core.text.pairs import text_pairs
from rlhf_core.trainers.control.reward_model import RewardModelConfig, _comparison_pairs


def _adjudicate(project, a, b, outcome, name="judge"):
    ids = [r["id"] for r in project.pair_comparisons(a, b) if r["role"] == "label"]
    previous = [r["id"] for r in project.pair_comparisons(a, b) if r["role"] == "adjudication"]
    return project.add_adjudication(a, b, outcome, labeller_id=project.ensure_labeller(name), disputed_ids=ids,
                                    previous_id=previous[-1] if previous else None)


def test_the_adjudication_stands_for_its_pair_and_other_pairs_pass_unchanged(project):
    pid = project.add_prompt("Name a fruit.")
    r = [project.add_item("response", prompt_id=pid, text=t) for t in ("apple", "a rock", "pear", "stone")]
    alice, bob = project.ensure_labeller("alice"), project.ensure_labeller("bob")
    disputed = [project.add_comparison(r[0], r[1], "left", labeller_id=alice),
                project.add_comparison(r[1], r[0], "left", labeller_id=bob)]
    other = project.add_comparison(r[2], r[3], "left", labeller_id=alice)
    first = _adjudicate(project, r[0], r[1], "tie")
    assert [c["id"] for c in prefer_adjudications(project.comparisons())] == [other, first]
    project.add_comparison(r[0], r[1], "right", labeller_id=project.ensure_labeller("carol"))  # reopens it
    second = _adjudicate(project, r[1], r[0], "left")  # the newest decision, given the other way round
    rows = prefer_adjudications(project.comparisons())
    assert [c["id"] for c in rows] == [other, second]
    # rows without a role are labels; nothing to prefer leaves the list as it was
    plain = [{"id": 1, "left_id": 5, "right_id": 6}, {"id": 2, "left_id": 6, "right_id": 5}]
    assert prefer_adjudications(plain) == plain
    assert disputed[0] not in [c["id"] for c in rows]


def test_text_pairs_and_the_trl_export_train_on_the_adjudication_only(project):
    pid = project.add_prompt("Name a fruit.")
    r = [project.add_item("response", prompt_id=pid, text=t) for t in ("apple", "a rock", "pear", "stone")]
    alice, bob = project.ensure_labeller("alice"), project.ensure_labeller("bob")
    project.add_comparison(r[0], r[1], "left", labeller_id=alice)
    project.add_comparison(r[0], r[1], "right", labeller_id=bob)
    kept = project.add_comparison(r[2], r[3], "left", labeller_id=alice)
    before = text_pairs(project, "human")
    assert sorted(p.target for p in before if p.left == "apple") == [0.0, 1.0]  # both disputed labels
    decision = _adjudicate(project, r[0], r[1], "left")
    pairs = text_pairs(project, "human")
    assert [(p.comparison_id, p.left, p.right, p.target) for p in pairs] == [
        (kept, "pear", "stone", 1.0), (decision, "apple", "a rock", 1.0)]
    exported = trl_pairs(project, sources="human")[0]
    assert [(p.chosen, p.rejected) for p in exported] == [("pear", "stone"), ("apple", "a rock")]
    # a decision of "both bad" drops the pair from training altogether
    project.add_comparison(r[1], r[0], "left", labeller_id=project.ensure_labeller("carol"))
    _adjudicate(project, r[0], r[1], "both_bad")
    assert [p.comparison_id for p in text_pairs(project, "human")] == [kept]


def test_the_control_reward_model_trains_on_the_adjudication_only(project):
    env = make_env("CartPole-v1")
    traj = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=20,
                                             source={"kind": "random"})) for s in range(2)]
    close_env(env)
    clips = make_clips(project, traj, length=6, per_trajectory=2)
    alice, bob = project.ensure_labeller("alice"), project.ensure_labeller("bob")
    project.add_comparison(clips[0], clips[1], "left", labeller_id=alice)
    project.add_comparison(clips[1], clips[0], "left", labeller_id=bob)
    project.add_comparison(clips[2], clips[3], "right", labeller_id=alice)
    config = RewardModelConfig(env_id="CartPole-v1", source="comparisons", label_sources="human")
    assert _comparison_pairs(project, config)[0].target.tolist() == [1.0, 1.0, 0.0]  # P(stored left better)
    _adjudicate(project, clips[1], clips[0], "right")  # clip 0 better, given the other way round
    pairs = _comparison_pairs(project, config)[0]
    assert pairs.target.tolist() == [0.0, 0.0] and len(pairs) == 2
