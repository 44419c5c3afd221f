"""B-Pref simulated teachers: each one's statistics over 1,000 pairs."""


import numpy as np
import pytest

from rlhf_core.labelers.synthetic import Teacher
from rlhf_core.jobs import RecordingContext, execute_job, get_job


def pairs(n=1000, H=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, H)), rng.normal(size=(n, H))


def oracle_answers(L, R):
    return np.where(L.sum(1) > R.sum(1), "left", "right")


def test_oracle_is_always_right():
    L, R = pairs()
    rng = np.random.default_rng(1)
    t = Teacher.preset("oracle")
    assert [t.label(a, b, rng) for a, b in zip(L, R)] == list(oracle_answers(L, R))


def test_mistake_flips_about_epsilon_of_labels():
    L, R = pairs()
    rng = np.random.default_rng(1)
    t = Teacher.preset("mistake", epsilon=0.1)
    got = np.array([t.label(a, b, rng) for a, b in zip(L, R)])
    flipped = (got != oracle_answers(L, R)).mean()
    assert flipped == pytest.approx(0.1, abs=0.03)


def test_noisy_agrees_at_the_bradley_terry_rate():
    L, R = pairs(n=2000)
    rng = np.random.default_rng(2)
    t = Teacher.preset("noisy", beta=0.5)
    got = np.array([t.label(a, b, rng) for a, b in zip(L, R)])
    dr = L.sum(1) - R.sum(1)
    expected = np.mean(1 / (1 + np.exp(-0.5 * np.abs(dr))))
    assert (got == oracle_answers(L, R)).mean() == pytest.approx(expected, abs=0.03)


def test_skip_and_equal_thresholds():
    L, R = pairs()
    rng = np.random.default_rng(3)
    skip = Teacher.preset("skip", skip_threshold=0.0)
    got = np.array([skip.label(a, b, rng) for a, b in zip(L, R)])
    both_low = (np.maximum(L.sum(1), R.sum(1)) < 0)
    assert ((got == "skip") == both_low).all() and 0.15 < both_low.mean() < 0.35
    equal = Teacher.preset("equal", equal_threshold=1.0)
    got = np.array([equal.label(a, b, rng) for a, b in zip(L, R)])
    close = np.abs(L.sum(1) - R.sum(1)) < 1.0
    assert ((got == "tie") == close).all()


def test_myopic_weights_the_end_of_the_clip():
    t = Teacher.preset("myopic", gamma=0.9)
    early = np.array([5.0] + [0.0] * 9)  # all reward at the start
    late = np.array([0.0] * 9 + [3.0])  # less reward, at the end
    assert t.returns(early) == pytest.approx(5 * 0.9 ** 9)
    assert t.label(early, late, np.random.default_rng(0)) == "right"  # the oracle would say left
    assert Teacher.preset("oracle").label(early, late, np.random.default_rng(0)) == "left"


def test_unknown_teacher():
    with pytest.raises(ValueError, match="unknown teacher"):
        Teacher.preset("psychic")


def test_label_pairs_job_labels_the_queue(project):
    from rlhf_core.envs.make import close_env, make_env
    from rlhf_core.envs.policies import RandomPolicy
    from rlhf_core.envs.rollout import rollout
    from rlhf_core.envs.storage import save_trajectory
    from rlhf_core.labelers.label_pairs import LabelPairsConfig

    env = make_env("Pendulum-v1", render=False)
    ids = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=20,
                                            render=False)) for s in range(4)]
    close_env(env)
    for i in range(3):
        project.enqueue_pair(ids[i], ids[i + 1])
    prompt = project.add_prompt("Say hi")
    texts = [project.add_item("response", prompt_id=prompt, text=t) for t in ("hi", "hello")]
    text_pair = project.enqueue_pair(*texts)  # no true reward: the teacher leaves it alone
    out = execute_job(get_job("label_pairs"), LabelPairsConfig(teacher="oracle"), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "completed", out.error
    comps = project.comparisons()
    assert len(comps) == 3 and [p["id"] for p in project.pending_pairs()] == [text_pair]
    for c in comps:
        lr = project.get_item(c["left_id"])["true_return"], project.get_item(c["right_id"])["true_return"]
        assert c["source"] == "synthetic" and c["outcome"] == ("left" if lr[0] > lr[1] else "right")
    assert out.result["labelled"] == 3 and sum(out.result["outcomes"].values()) == 3
