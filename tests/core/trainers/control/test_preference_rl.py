"""Online preference RL: query selection by disagreement, synthetic and human labelling loops."""

import threading
import time

import numpy as np

from rlhf_core.envs.rollout import Trajectory
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.rewards.networks import RewardEnsemble, RewardNetSpec
from rlhf_core.trainers.control.preference_rl import PreferenceRLConfig, _clips, select_queries

TINY = dict(env_id="CartPole-v1", rounds=2, steps_per_round=256, initial_labels=6, labels_per_round=4,
            clip_length=5, episodes_per_round=2, members=2, reward_steps=20)


def fake_trajs(n=3, T=20):
    rng = np.random.default_rng(0)
    return [Trajectory("X", i, rng.normal(size=(T + 1, 2)).astype(np.float32), np.zeros(T), np.zeros(T, np.float32),
                       None, 30) for i in range(n)]


def test_clips_are_consecutive_segments():
    trajs = fake_trajs(n=2, T=12)
    assert _clips(trajs, 5) == [(0, 0, 5), (0, 5, 10), (1, 0, 5), (1, 5, 10)]


def test_disagreement_selection_picks_the_most_uncertain_pairs():
    trajs = fake_trajs()
    clips = _clips(trajs, 4)
    ens = RewardEnsemble(RewardNetSpec(obs_dim=2, hidden=8), 3)
    rng = np.random.default_rng(1)
    all_pairs = select_queries(ens, trajs, clips, 1000, 1, "random", np.random.default_rng(2))
    variances = sorted((float(np.var(p)) for _, _, p in all_pairs), reverse=True)
    picked = select_queries(ens, trajs, clips, 5, 1000, "disagreement", rng)  # candidates: every pair
    assert [round(float(np.var(p)), 6) for _, _, p in picked] == [round(v, 6) for v in variances[:5]]
    assert all(len(p) == 3 for _, _, p in picked)  # each query carries the member predictions


def test_synthetic_loop_runs_and_counts_labels(project):
    out = execute_job(get_job("preference_rl"), PreferenceRLConfig(**TINY), RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    # 6 initial + 4 after round 1 (the last round has no queries)
    assert out.result["labels"] == 10 and len(out.result["curve"]) == 2
    kinds = sorted(c["kind"] for c in project.checkpoints())
    assert kinds == ["reward_ensemble", "sb3_ppo"]


def test_human_labelling_waits_for_answers_in_the_queue(project):
    from rlhf_core.store import Project

    cfg = PreferenceRLConfig(**{**TINY, "labeller": "human", "rounds": 1, "initial_labels": 3})
    ctx = RecordingContext()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", execute_job(
        get_job("preference_rl"), cfg, ctx, project_path=project.folder)))
    t.start()
    answered = 0
    with Project.open(project.folder, check=False) as labeller:
        deadline = time.monotonic() + 120
        while answered < 3 and time.monotonic() < deadline:
            for pair in labeller.pending_pairs(10):
                assert pair["reason_json"]  # "why this pair" is stored with the query
                labeller.add_comparison(pair["left_id"], pair["right_id"], "left", queue_id=pair["id"])
                answered += 1
            time.sleep(0.2)
    t.join(120)
    assert answered == 3 and box["out"].status == "completed", box.get("out")
    assert box["out"].result["labels"] == 3
    assert any("waiting for labels" in m for _, m in ctx.progress_log)
    clips = project.items("clip")
    assert len(clips) == 6 and all(c["env_id"] == "CartPole-v1" for c in clips)
    assert project.items("trajectory")[0]["media_path"]  # the person sees real video


def test_human_labelling_can_be_cancelled_while_waiting(project):
    cfg = PreferenceRLConfig(**{**TINY, "labeller": "human", "rounds": 1})
    ctx = RecordingContext()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", execute_job(
        get_job("preference_rl"), cfg, ctx, project_path=project.folder)))
    t.start()
    deadline = time.monotonic() + 60
    while not any("waiting" in m for _, m in ctx.progress_log) and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    ctx.cancel()
    t.join(10)
    assert box["out"].status == "cancelled" and time.monotonic() - t0 < 2.0


def test_a_run_with_reward_layers_0_fits_a_reward_linear_in_the_state_and_reports_its_presets(project, monkeypatch):
    import rlhf_core.trainers.control.preference_rl as job
    from rlhf_core.rewards.networks import RewardEnsemble
    from rlhf_core.trainers.control.preference_rl import PRESETS

    fits = []  # the real fit, its settings noted
    real_fit = job.fit_reward_ensemble
    monkeypatch.setattr(job, "fit_reward_ensemble", lambda pairs, settings, *a, **k: (
        fits.append(settings), real_fit(pairs, settings, *a, **k))[1])
    PRESETS["CartPole-v1"] = {"reward_layers": 0, "reward_l1": 0.5, "clip_length": 9, "ppo": {"n_epochs": 2}}
    try:
        ctx = RecordingContext()
        out = execute_job(get_job("preference_rl"), PreferenceRLConfig(**{**TINY, "rounds": 1}), ctx,
                          project_path=project.folder)
    finally:
        del PRESETS["CartPole-v1"]
    assert out.status == "completed", out.error
    # TINY gives clip_length 5 (not the default): the preset's 9 does not apply
    assert out.result["presets"] == {"reward_layers": 0, "reward_l1": 0.5, "ppo": {"n_epochs": 2, "batch_size": 64}}
    assert sum("CartPole-v1 presets: reward_layers=0, reward_l1=0.5" in m for m in ctx.messages) == 1
    assert fits and all(f.l1 == 0.5 and f.layers == 0 for f in fits)  # every refit is sparse and linear
    assert "reward_ensemble" in [c["kind"] for c in project.checkpoints(out.run_id)]
    ensemble, _ = RewardEnsemble.load(project.run_folder(out.run_id) / "reward_ensemble.safetensors")
    assert ensemble.spec.layers == 0 and len(ensemble.members) == 2
    # each member: one linear map of the observation to the reward, no hidden layer
    assert all([type(m).__name__ for m in member.net] == ["Linear"] for member in ensemble.members)
    assert tuple(ensemble.members[0].net[0].weight.shape) == (1, 4)


def test_presets_apply_only_to_settings_left_at_their_defaults():
    from rlhf_core.trainers.control.preference_rl import PRESETS, resolve_presets

    PRESETS["Test-v0"] = {"rounds": 3, "clip_length": 7, "reward_layers": 1, "ppo": {"n_envs": 2, "batch_size": 128}}
    try:
        cfg, applied, ppo = resolve_presets(PreferenceRLConfig(env_id="Test-v0"))
        assert (cfg.rounds, cfg.clip_length, cfg.reward_layers, cfg.reward_hidden) == (3, 7, 1, 64)
        assert ppo == {"n_envs": 2, "batch_size": 128}
        assert applied == {"rounds": 3, "clip_length": 7, "reward_layers": 1, "ppo": ppo}
        # what the user set wins, field by field (ppo_batch_size replaces the preset's minibatch)
        cfg, applied, ppo = resolve_presets(PreferenceRLConfig(env_id="Test-v0", rounds=5, ppo_batch_size=32))
        assert (cfg.rounds, cfg.clip_length) == (5, 7) and "rounds" not in applied
        assert ppo == {"n_envs": 2, "batch_size": 32}
        # presets off, or an env without one: the settings as they are, PPO with the default minibatch
        for plain in (PreferenceRLConfig(env_id="Test-v0", use_presets=False), PreferenceRLConfig()):
            cfg, applied, ppo = resolve_presets(plain)
            assert cfg == plain and applied == {} and ppo == {"batch_size": 64}
    finally:
        del PRESETS["Test-v0"]


def test_the_halfcheetah_preset_resolves_to_fast_ppo_a_linear_reward_and_longer_rounds():
    from rlhf_core.experiments.extrapolation import DEMO_PRESETS
    from rlhf_core.sources.learner import ppo_kwargs
    from rlhf_core.trainers.control.preference_rl import resolve_presets

    cfg, applied, ppo = resolve_presets(PreferenceRLConfig(env_id="HalfCheetah-v5"))
    assert (cfg.reward_layers, cfg.clip_length, cfg.steps_per_round, cfg.rounds) == (0, 50, 32_768, 15)
    assert cfg.reward_l1 == DEMO_PRESETS["HalfCheetah-v5"]["reward_l1"] == 1.0  # the demo's sparse reward
    assert ppo == {"n_envs": 16, "n_steps": 256, "batch_size": 256, "learning_rate": 3e-4, "n_epochs": 10,
                   "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0, "max_grad_norm": 0.5,
                   "vf_coef": 0.5, "policy_kwargs": {"log_std_init": -0.5,
                                                     "net_arch": {"pi": [64, 64], "vf": [64, 64]}}}
    assert ppo == DEMO_PRESETS["HalfCheetah-v5"]["ppo"] and applied["ppo"] == ppo  # the demo's PPO
    n_envs, kwargs = ppo_kwargs("HalfCheetah-v5", **ppo)
    assert n_envs == 16 and kwargs["learning_rate"] == 3e-4 and kwargs["n_epochs"] == 10
    assert kwargs["policy_kwargs"]["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}
    assert "activation_fn" not in kwargs["policy_kwargs"]  # not rl-zoo's ReLU 256-unit nets
