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


# ------------------------------------------------------------------ B-Pref's relative thresholds
def test_relative_thresholds_come_from_the_batch_of_returns():
    t = Teacher.preset("skip", skip_fraction=0.25)
    limits = t.thresholds([-40.0, -10.0, -20.0, -30.0])  # lo -40, hi -10: skip below -40 + 0.25 * 30
    assert limits.skip_below == pytest.approx(-32.5) and limits.tie_within is None
    assert Teacher.preset("equal", equal_fraction=0.2).thresholds([-40.0, -10.0]).tie_within == pytest.approx(6.0)
    rng = np.random.default_rng(0)
    batch = [(np.array([-20.0, -20.0]), np.array([-30.0, -5.0])), (np.array([-5.0]), np.array([-1.0]))]
    assert t.label_batch(batch, rng) == ["skip", "right"]  # returns -40 and -35, both below -40 + 0.25 * 39
    assert t.label(*batch[0], rng) == "right"  # labelled alone, a pair is its own batch: never skipped


def pendulum_queue(project, n_pairs=30):
    from rlhf_core.envs.clips import make_clips, queue_random_pairs
    from rlhf_core.envs.make import close_env, make_env
    from rlhf_core.envs.policies import RandomPolicy
    from rlhf_core.envs.rollout import rollout
    from rlhf_core.envs.storage import load_arrays, save_trajectory

    env = make_env("Pendulum-v1", render=False)
    trajs = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=60,
                                              render=False)) for s in range(5)]
    close_env(env)
    clips = make_clips(project, trajs, length=10, per_trajectory=4, seed=1)
    queue_random_pairs(project, clips, n_pairs, seed=2)
    pending = project.pending_pairs(limit=1000)
    ret = {c: float(load_arrays(project, project.get_item(c))["rewards"].astype(np.float64).sum()) for c in clips}
    return [(ret[p["left_id"]], ret[p["right_id"]]) for p in pending]


def label_queue(project, **settings):
    from rlhf_core.labelers.label_pairs import LabelPairsConfig

    out = execute_job(get_job("label_pairs"), LabelPairsConfig(**settings), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "completed", out.error
    return out.result["outcomes"], out.result


def test_skip_teacher_labels_a_pendulum_queue_at_the_expected_rate(project):
    returns = pendulum_queue(project)
    values = [r for pair in returns for r in pair]
    assert max(values) < 0  # Pendulum: every reward is negative
    lo, hi = min(values), max(values)
    expected = {}
    for fraction in (0.1, 0.5):
        threshold = lo + fraction * (hi - lo)
        expected[fraction] = sum(max(pair) < threshold for pair in returns)
    assert expected[0.1] < expected[0.5] < len(returns)  # the defaults skip few; a half skips more, not all
    outcomes, result = label_queue(project, teacher="skip", max_pairs=15)
    # the job's batch is the 15 pairs it labels (queue order)
    first = returns[:15]
    lo15, hi15 = min(r for p in first for r in p), max(r for p in first for r in p)
    threshold = lo15 + 0.1 * (hi15 - lo15)
    assert outcomes.get("skip", 0) == sum(max(p) < threshold for p in first)
    assert result["thresholds"]["clip Pendulum-v1"]["skip_below"] == pytest.approx(threshold)
    assert sum(outcomes.values()) == 15 and outcomes.get("skip", 0) < 15
    rest = returns[15:]
    lo, hi = min(r for p in rest for r in p), max(r for p in rest for r in p)
    outcomes, _ = label_queue(project, teacher="skip", skip_fraction=0.5)
    assert outcomes.get("skip", 0) == sum(max(p) < lo + 0.5 * (hi - lo) for p in rest) > 0


def test_equal_teacher_ties_at_the_expected_rate_and_old_absolute_settings_still_work(project):
    returns = pendulum_queue(project, n_pairs=20)
    values = [r for pair in returns for r in pair]
    spread = max(values) - min(values)
    ties = sum(abs(a - b) < 0.3 * spread for a, b in returns)
    assert 0 < ties < len(returns)
    outcomes, _ = label_queue(project, teacher="equal", equal_fraction=0.3, max_pairs=10)
    assert outcomes.get("tie", 0) == sum(abs(a - b) < 0.3 * (max(v for p in returns[:10] for v in p) -
                                                               min(v for p in returns[:10] for v in p))
                                         for a, b in returns[:10])
    # the absolute threshold of earlier versions (skip below 0) skips every Pendulum pair
    outcomes, _ = label_queue(project, teacher="skip", thresholds="absolute", skip_threshold=0.0)
    assert outcomes == {"skip": 10}


def test_old_stored_teacher_settings_still_read(project):
    from rlhf_core import config as cfg
    from rlhf_core.labelers.label_pairs import LabelPairsConfig, make_teacher
    from rlhf_core.trainers.control.preference_rl import PreferenceRLConfig

    old = {"teacher": "skip", "beta": 1.0, "epsilon": 0.1, "gamma": 0.9, "skip_threshold": -5.0,
           "equal_threshold": 1.0, "max_pairs": 100, "seed": 0, "text_reward": "", "queued_by_run": 0}
    run_id = project.create_run("label_pairs", old, status="completed")
    config = cfg.from_dict(LabelPairsConfig, project.get_run(run_id)["config"])
    assert config.skip_threshold == -5.0 and config.thresholds == "relative"  # new runs: relative by default
    assert make_teacher(cfg.replace(config, thresholds="absolute")).skip_threshold == -5.0
    assert make_teacher(config).skip_fraction == 0.1 and make_teacher(config).skip_threshold is None
    online = cfg.from_dict(PreferenceRLConfig, {"env_id": "Pendulum-v1", "teacher": "equal", "selection": "random"})
    assert (online.equal_fraction, online.skip_fraction) == (0.1, 0.1)


def test_online_job_uses_the_teachers_settings(project):
    from rlhf_core.trainers.control.preference_rl import PreferenceRLConfig

    # MountainCarContinuous: clip returns differ (CartPole's are all equal); its PPO preset is quick
    config = PreferenceRLConfig(env_id="MountainCarContinuous-v0", rounds=1, steps_per_round=256, initial_labels=6,
                                clip_length=5, episodes_per_round=1, members=2, reward_steps=20, ppo_batch_size=8,
                                teacher="equal", equal_fraction=1.0)
    out = execute_job(get_job("preference_rl"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    # every difference but the one between the batch's highest and lowest return is within the whole range
    assert out.result["labels"] == 6 and out.result["teacher_outcomes"].get("tie", 0) >= 5
