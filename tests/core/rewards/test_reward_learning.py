"""Reward learning: snippet rules, D-REX ranking, ensembles, the reward wrapper, a small end-to-end."""

import numpy as np
import pytest
import torch

from rlhf_core.analysis.extrapolation import extrapolation_report, pearson, spearman
from rlhf_core.rewards.datasets import drex_pairs, drex_ranks, trex_pairs, whole_pairs
from rlhf_core.rewards.networks import RewardEnsemble, RewardNetSpec
from rlhf_core.rewards.training import FitSettings, fit_reward_ensemble, predicted_returns


def toy_trajectories(n=12, T=60, dim=3, seed=0):
    """Observations whose true per-state reward is obs[:, 0]; trajectory i drifts upwards with i."""
    rng = np.random.default_rng(seed)
    obs = []
    for i in range(n):
        o = rng.normal(size=(T + 1, dim)).astype(np.float32)
        o[:, 0] += (i - n / 2) * 0.15
        obs.append(o)
    true = [float(o[1:, 0].sum()) for o in obs]
    return obs, true


def test_trex_snippets_follow_the_rules():
    obs, true = toy_trajectories()
    pairs = trex_pairs(obs, true, 500, min_len=5, max_len=20, seed=1)
    assert len(pairs) == 500
    for a, b, t in zip(pairs.first, pairs.second, pairs.target):
        la, lb = a.end - a.start, b.end - b.start
        assert la == lb and 5 <= la <= 20
        assert true[a.traj] != true[b.traj]
        better, worse = (a, b) if t == 1.0 else (b, a)
        assert true[better.traj] > true[worse.traj]  # the label follows the ranking
        assert better.start >= worse.start  # progress prior
        assert 0 <= a.start and a.end <= len(obs[a.traj]) - 1
    assert 0.4 < pairs.target.mean() < 0.6  # sides are randomised
    idx, mask = pairs.index_arrays("first", 20)
    a = pairs.first[0]
    n = a.end - a.start
    assert mask[0].sum() == n and idx[0, 0] == pairs.offsets[a.traj] + a.start + 1  # states reached


def test_trex_refuses_a_single_rank():
    obs, _ = toy_trajectories(n=3)
    with pytest.raises(ValueError, match="two different ranks"):
        trex_pairs(obs, [1.0, 1.0, 1.0], 10)


def test_drex_pairs_only_far_apart_noise_levels_and_less_noise_wins():
    obs, _ = toy_trajectories(n=6)
    eps = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
    assert drex_ranks(eps) == [-e for e in eps]
    pairs = drex_pairs(obs, eps, 300, min_gap=0.3, min_len=5, max_len=10, seed=0)
    assert len(pairs) == 300
    for a, b, t in zip(pairs.first, pairs.second, pairs.target):
        assert abs(eps[a.traj] - eps[b.traj]) >= 0.3 - 1e-9
        assert (t == 1.0) == (eps[a.traj] < eps[b.traj])
    # a person's override of one automatic pair wins over the noise ranking
    over = drex_pairs(obs, eps, 300, min_gap=0.3, min_len=5, max_len=10, seed=0, overrides={(0, 5): 0.0})
    for a, b, t in zip(over.first, over.second, over.target):
        if (a.traj, b.traj) == (0, 5):
            assert t == 0.0
        if (a.traj, b.traj) == (5, 0):
            assert t == 1.0


def test_ensemble_members_differ_and_predict_is_their_mean(tmp_path):
    obs, true = toy_trajectories()
    pairs = trex_pairs(obs, true, 300, min_len=5, max_len=20)
    ens, stats = fit_reward_ensemble(pairs, FitSettings(members=3, steps=60, eval_every=20, hidden=16))
    x = torch.randn(7, 3)
    per = ens(x)
    assert per.shape == (3, 7) and not torch.allclose(per[0], per[1])
    torch.testing.assert_close(ens.predict(x), per.mean(0))
    assert len(stats["members"]) == 3 and stats["heldout_pairs"] == 30
    ens.save(tmp_path / "r.pt", {"reward_mean": 0.5})
    again, extra = RewardEnsemble.load(tmp_path / "r.pt")
    torch.testing.assert_close(again.predict(x), ens.predict(x))
    assert extra == {"reward_mean": 0.5}


def test_learned_reward_orders_unseen_trajectories_better_than_chance():
    obs, true = toy_trajectories(n=14, seed=0)
    pairs = trex_pairs(obs, true, 1500, min_len=10, max_len=30, seed=0)
    ens, stats = fit_reward_ensemble(pairs, FitSettings(members=2, steps=300, hidden=32, seed=0))
    assert stats["heldout_accuracy"] > 0.8
    test_obs, test_true = toy_trajectories(n=10, seed=99)  # never seen
    pred = predicted_returns(ens, test_obs)
    assert spearman(test_true, pred) > 0.7


def test_linear_reward_extrapolates_far_beyond_the_demos(tmp_path):
    """reward_layers=0: one affine map per member; ranked demos drifting within +-0.9 give a reward
    that still orders trajectories drifting five times further, on both sides."""
    obs, true = toy_trajectories(n=12, seed=0)
    pairs = trex_pairs(obs, true, 1000, min_len=10, max_len=30, seed=0)
    ens, stats = fit_reward_ensemble(pairs, FitSettings(members=3, layers=0, steps=300, seed=0))
    assert all(len(list(m.parameters())) == 2 for m in ens.members)  # weight and bias, no hidden layer
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(ens.predict(a) + ens.predict(b), ens.predict(a + b) + ens.predict(torch.zeros(5, 3)))
    far, far_true = [], []
    rng = np.random.default_rng(7)
    for i in range(10):
        o = rng.normal(size=(61, 3)).astype(np.float32)
        o[:, 0] += (i - 5) * 0.9  # -4.5 .. +3.6: beyond every demo on both sides
        far.append(o)
        far_true.append(float(o[1:, 0].sum()))
    pred = predicted_returns(ens, far)
    assert spearman(far_true, pred) > 0.95
    assert pred.max() > predicted_returns(ens, obs).max()  # the best far trajectory beats the best demo
    ens.save(tmp_path / "linear.safetensors")
    again, _ = RewardEnsemble.load(tmp_path / "linear.safetensors")
    assert again.spec.layers == 0
    torch.testing.assert_close(again.predict(a), ens.predict(a))


def test_a_linear_reward_gives_no_weight_to_a_feature_the_demos_never_vary():
    """Starting at zero, a linear reward's weight on a feature that is the same in every demo stays
    near zero (rounding alone moves it), so unseen trajectories that vary it wildly are still ranked by
    what the demos ranked (a random start would keep a random weight there: the pairs give it no gradient)."""
    obs, true = toy_trajectories(n=12, seed=0)
    for o in obs:
        o[:, 2] = 0.5  # e.g. a posture every demonstration holds
    pairs = trex_pairs(obs, true, 1000, min_len=10, max_len=30, seed=0)
    ens, _ = fit_reward_ensemble(pairs, FitSettings(members=3, layers=0, steps=300, seed=0))
    for m in ens.members:
        assert abs(float(m.net[0].weight[0, 2])) < 0.01  # nn.Linear's random start: up to 0.58
        assert float(m.net[0].weight[0, 0]) > 0.1
    rng = np.random.default_rng(3)
    unseen, unseen_true = [], []
    for i in range(10):
        o = rng.normal(size=(61, 3)).astype(np.float32)
        o[:, 0] += (i - 5) * 0.3
        o[:, 2] = rng.uniform(-20, 20)  # never seen: a posture no demo holds
        unseen.append(o)
        unseen_true.append(float(o[1:, 0].sum()))
    assert spearman(unseen_true, predicted_returns(ens, unseen)) > 0.9


def test_whole_item_pairs_and_ties():
    obs, _ = toy_trajectories(n=4, T=8)
    pairs = whole_pairs(obs, [(0, 1, 1.0), (2, 3, 0.5)])
    assert [s.end for s in pairs.first] == [8, 8] and pairs.target.tolist() == [1.0, 0.5]


def test_correlations_and_report():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert spearman(x, x ** 3) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)
    rep = extrapolation_report([1, 2, 3], [1, 2, 3], [2, 5, 6], [2, 4, 7])
    assert rep["best_demo_return"] == 3 and rep["unseen_beyond_best_demo"] == 2
    assert rep["unseen_spearman"] == pytest.approx(1.0)


def test_reward_wrapper_replaces_reward_and_keeps_the_true_one():
    from stable_baselines3.common.env_util import make_vec_env

    from rlhf_core.rewards.wrapper import LearnedRewardVecEnv

    spec = RewardNetSpec(obs_dim=3, hidden=8)
    ens = RewardEnsemble(spec, 2)
    venv = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    env = LearnedRewardVecEnv(venv, ens, mean=0.3, std=2.0)
    env.reset()
    actions = np.zeros((2, 1), dtype=np.float32)
    obs, r, dones, infos = env.step(actions)
    expected = (ens.predict(torch.from_numpy(obs.astype(np.float32))).numpy() - 0.3) / 2.0
    np.testing.assert_allclose(r, expected, rtol=1e-5)
    assert all("true_reward" in i for i in infos) and all(i["true_reward"] <= 0 for i in infos)
    pos = LearnedRewardVecEnv(make_vec_env("Pendulum-v1", n_envs=2, seed=0), ens, mean=0.3, std=2.0, positive=True)
    pos.reset()
    _, rp, _, _ = pos.step(actions)
    assert ((rp > 0) & (rp < 1)).all()
    # run to the end of an episode: the Monitor underneath records the TRUE return
    true_sum = np.array([i["true_reward"] for i in infos])
    for _ in range(199):  # Pendulum episodes last 200 steps
        _, _, dones, infos = env.step(actions)
        true_sum += [i["true_reward"] for i in infos]
    assert dones.all() and len(env.finished_learned_returns) == 2
    monitor_returns = [i["episode"]["r"] for i in infos]
    np.testing.assert_allclose(monitor_returns, true_sum, rtol=1e-4)  # the TRUE return, not the learned one


def test_extrapolation_demo_tiny_end_to_end(project, tmp_path, monkeypatch):
    import tempfile

    from rlhf_core.experiments.extrapolation import ExtrapolationDemoConfig
    from rlhf_core.jobs import RecordingContext, execute_job, get_job

    # CartPole: its tuned PPO collects 256 steps per update, so tiny budgets are honoured
    cfg = ExtrapolationDemoConfig(env_id="CartPole-v1", learner_steps=1024, checkpoint_every=512,
                                  episodes_per_checkpoint=2, max_demo_return=1000.0, snippet_pairs=200, members=1,
                                  reward_steps=40, snippet_min=5, snippet_max=10, ppo_steps=1024, eval_episodes=1,
                                  video_of_policy=False, reward_layers=0, reward_l1=0.5)
    ctx = RecordingContext()
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    import rlhf_core.experiments.extrapolation as demo

    fits = []  # the real fit, its settings noted
    real_fit = demo.fit_reward_ensemble
    monkeypatch.setattr(demo, "fit_reward_ensemble", lambda pairs, settings, *a, **k: (
        fits.append(settings), real_fit(pairs, settings, *a, **k))[1])
    out = execute_job(get_job("extrapolation_demo"), cfg, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    assert not list(temp.glob("SB3-*"))  # both PPO runs log nowhere (SB3 would leave an empty folder per run)
    r = out.result
    for key in ("best_demo_return", "mean_demo_return", "policy_return", "reward_correlation", "wall_seconds"):
        assert key in r
    n_ckpt = len(list(project.run_folder(out.run_id).glob("learner_*.zip")))
    assert n_ckpt >= 2 and r["n_demos"] == 2 * n_ckpt  # two episodes per learner checkpoint, all kept
    assert r["best_demo_return"] >= r["mean_demo_return"]
    assert len(project.items("trajectory")) == r["n_demos"]
    assert [c["kind"] for c in project.checkpoints()] == ["reward_ensemble"]
    saved, _ = RewardEnsemble.load(project.run_folder(out.run_id) / "reward_ensemble.safetensors")
    assert saved.spec.layers == 0  # reward_layers reaches the fitted network
    assert [f.l1 for f in fits] == [0.5]  # and reward_l1 its fit
    sample = project.samples(out.run_id, "extrapolation")[0]["payload"]
    assert len(sample["true_demo"]) == r["n_demos"] and len(sample["true_unseen"]) == len(sample["pred_unseen"])


def _pendulum_trajectories(project, n=6, policy="random"):
    from rlhf_core.envs.make import close_env, make_env
    from rlhf_core.envs.policies import RandomPolicy
    from rlhf_core.envs.rollout import rollout
    from rlhf_core.envs.storage import save_trajectory

    env = make_env("Pendulum-v1", render=False)
    ids = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=60,
                                            render=False, source={"kind": "random", "epsilon": 0.25 * (s % 5)}))
           for s in range(n)]
    close_env(env)
    return ids


@pytest.mark.parametrize("source", ["comparisons", "rankings", "drex"])
def test_reward_model_job_from_project_data(project, source):
    from rlhf_core.jobs import RecordingContext, execute_job, get_job
    from rlhf_core.trainers.control.reward_model import RewardModelConfig

    ids = _pendulum_trajectories(project)
    rets = {i: project.get_item(i)["true_return"] for i in ids}
    if source == "comparisons":
        for a, b in zip(ids, ids[1:]):
            project.add_comparison(a, b, "left" if rets[a] > rets[b] else "right", source="synthetic")
        project.add_comparison(ids[0], ids[2], "skip")  # carries no preference: left out
    elif source == "rankings":
        project.add_ranking([[i] for i in sorted(ids, key=rets.get)])
    cfg = RewardModelConfig(env_id="Pendulum-v1", source=source, members=2, steps=40, snippet_pairs=200,
                            snippet_min=10, snippet_max=20, hidden=16)
    out = execute_job(get_job("reward_model"), cfg, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    if source == "comparisons":
        assert out.result["pairs"] == 5
    ens, extra = RewardEnsemble.load(project.abspath(project.checkpoints()[-1]["path"]))
    assert len(ens.members) == 2 and extra["source"] == source and extra["reward_std"] > 0


def test_reward_model_job_explains_missing_data(project):
    from rlhf_core.jobs import RecordingContext, execute_job, get_job
    from rlhf_core.trainers.control.reward_model import RewardModelConfig

    out = execute_job(get_job("reward_model"), RewardModelConfig(source="comparisons"), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "failed" and "label more pairs first" in out.error


def test_cnn_reward_shapes():
    spec = RewardNetSpec(obs_dim=0, kind="cnn", image_shape=(4, 84, 84))
    ens = RewardEnsemble(spec, 2)
    frames = torch.randint(0, 255, (3, 5, 4, 84, 84), dtype=torch.uint8)  # [pairs, steps, C, H, W]
    assert ens(frames).shape == (2, 3, 5)


@pytest.mark.parametrize("snippet_len,l1", [((5, 20), 0.0), ((40, 60), 0.0), ((5, 20), 0.5)])  # whole-table /
def test_batched_ensemble_fit_equals_the_sequential_one(snippet_len, l1):  # per-snippet scoring; L1 penalty
    from rlhf_core.jobs import RecordingContext

    obs, true = toy_trajectories(n=10, T=60)
    pairs = trex_pairs(obs, true, 300, min_len=snippet_len[0], max_len=snippet_len[1], seed=3)
    # patience 1: members stop early at different steps, which the batched fit must reproduce
    settings = FitSettings(members=3, steps=80, eval_every=10, hidden=16, patience=1, seed=5, lr=1e-2, l1=l1)
    logs, results = [], []
    for batched in (False, True):
        ctx = RecordingContext()
        ens, stats = fit_reward_ensemble(pairs, settings, ctx, batched=batched)
        logs.append({(step, k): v for step, values in ctx.metric_log for k, v in values.items()})
        results.append((ens, stats))
    seq, bat = logs
    assert seq.keys() == bat.keys() and any(k.endswith("m2_heldout_loss") for _, k in seq)
    for key, value in seq.items():  # per-member losses and accuracies at the same steps
        assert bat[key] == pytest.approx(value, abs=1e-5, nan_ok=True), key
    (ens_s, st_s), (ens_b, st_b) = results
    assert [m["steps"] for m in st_s["members"]] == [m["steps"] for m in st_b["members"]]
    assert len({m["steps"] for m in st_s["members"]}) > 1  # they did stop at different steps
    x = torch.randn(50, 3)
    torch.testing.assert_close(ens_b(x), ens_s(x), atol=1e-4, rtol=1e-3)  # best weights written back (fp rounding)
    assert st_b["heldout_accuracy"] == pytest.approx(st_s["heldout_accuracy"])


@pytest.mark.parametrize("batched", [False, True])
def test_ensemble_members_are_logged_on_one_step_axis(batched):
    """Member k's metrics are logged at the step it trained, not after member k - 1's (the plots draw
    the members over one another, under their mean)."""
    from rlhf_core.jobs import RecordingContext

    obs, true = toy_trajectories(n=8, T=40)
    pairs = trex_pairs(obs, true, 100, min_len=5, max_len=10, seed=1)
    ctx = RecordingContext()
    fit_reward_ensemble(pairs, FitSettings(members=3, steps=40, eval_every=10, hidden=8, patience=100), ctx,
                        step_offset=5, batched=batched)
    steps = {k: [step for step, values in ctx.metric_log if f"reward_model/m{k}_loss" in values] for k in range(3)}
    assert steps[0] == steps[1] == steps[2] == [14, 24, 34, 44]


def test_ensemble_files_of_the_old_layout_still_load(tmp_path):
    # the layout every saved ensemble has had: spec dict, member count, per-member nn.Linear state
    spec = RewardNetSpec(obs_dim=3, hidden=8)
    torch.manual_seed(0)
    old = RewardEnsemble(spec, 2)
    state = {k: v.clone() for k, v in old.state_dict().items()}
    assert "members.1.net.2.weight" in state
    torch.save({"spec": {"obs_dim": 3, "action_dim": 0, "hidden": 8, "layers": 2, "kind": "mlp", "image_shape": []},
                "members": 2, "state": state, "extra": {"reward_mean": 1.5}}, tmp_path / "old.pt")
    ens, extra = RewardEnsemble.load(tmp_path / "old.pt")
    x = torch.randn(4, 3)
    torch.testing.assert_close(ens(x), old(x))
    assert extra == {"reward_mean": 1.5}
    # and an ensemble trained by the batched fit saves in that same layout
    obs, true = toy_trajectories(n=6, T=30)
    fitted, _ = fit_reward_ensemble(trex_pairs(obs, true, 60, min_len=5, max_len=10), FitSettings(members=2, steps=20, hidden=8))
    assert fitted.state_dict().keys() == old.state_dict().keys()


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_fast_actor_acts_like_sb3_predict(env_id):
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from rlhf_core.sources.learner import ppo_kwargs
    from rlhf_core.trainers.control.ppo_learned import FastActor

    n_envs, kwargs = ppo_kwargs(env_id)
    model = PPO("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=0), seed=0, device="cpu", **kwargs)
    with torch.no_grad():  # move the weights away from the orthogonal init so the check means something
        for p in model.policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    actor = FastActor(model)
    assert actor.supported
    env = gym.make(env_id)
    obs, _ = env.reset(seed=1)
    for _ in range(100):
        want = model.predict(obs, deterministic=True)[0]
        got = actor.act(obs)
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64), atol=1e-5)
        obs, _, term, trunc, _ = env.step(want)
        if term or trunc:
            obs, _ = env.reset()
    env.close()


def test_demo_presets_apply_only_to_settings_left_at_their_defaults():
    from rlhf_core.experiments.extrapolation import DEMO_PRESETS, ExtrapolationDemoConfig, resolve_presets

    DEMO_PRESETS["Test-v0"] = {"learner_steps": 50_000, "reward_hidden": 256, "ppo": {"n_envs": 2, "batch_size": 128},
                               "learner_ppo": {"learning_rate": 1e-4}}
    try:
        cfg, applied, ppo, learner = resolve_presets(ExtrapolationDemoConfig(env_id="Test-v0"))
        assert (cfg.learner_steps, cfg.reward_hidden) == (50_000, 256)
        assert ppo == {"n_envs": 2, "batch_size": 128} and learner == {"learning_rate": 1e-4, "batch_size": 64}
        assert applied["learner_steps"] == 50_000 and applied["ppo"] == ppo
        # what the user set wins, field by field (ppo_batch_size replaces the presets' minibatch)
        cfg, applied, ppo, learner = resolve_presets(ExtrapolationDemoConfig(env_id="Test-v0", learner_steps=9_000,
                                                                             ppo_batch_size=32))
        assert (cfg.learner_steps, cfg.reward_hidden) == (9_000, 256) and "learner_steps" not in applied
        assert ppo == {"n_envs": 2, "batch_size": 32} and learner["batch_size"] == 32
        # an env without presets runs with the declared defaults
        plain = ExtrapolationDemoConfig(env_id="CartPole-v1")
        cfg, applied, ppo, learner = resolve_presets(plain)
        assert cfg == plain and applied == {} and ppo == learner == {"batch_size": 64}
        # presets off: the declared defaults are taken as they are, even for an env with presets
        off = ExtrapolationDemoConfig(env_id="Test-v0", use_presets=False)
        cfg, applied, ppo, learner = resolve_presets(off)
        assert cfg == off and applied == {} and ppo == learner == {"batch_size": 64}
    finally:
        del DEMO_PRESETS["Test-v0"]


def test_an_l1_penalty_keeps_the_reward_on_the_feature_that_ranks():
    """FitSettings.l1: feature 0 decides the ranking; two noise features are measured in units 10x larger
    (cheap to weigh if the penalty were per unit of weight; it is scaled by each feature's spread). The
    sparse reward keeps feature 0 and drops the noise features far below the unpenalised fit's."""
    obs, true = toy_trajectories(n=12, seed=0)
    for o in obs:
        o[:, 1:] *= 10
    pairs = trex_pairs(obs, true, 1000, min_len=10, max_len=30, seed=0)

    def weights(l1):
        ens, stats = fit_reward_ensemble(pairs, FitSettings(members=3, layers=0, steps=300, seed=0, l1=l1))
        return torch.stack([m.net[0].weight[0].detach() for m in ens.members]), stats

    plain, _ = weights(0.0)
    sparse, stats = weights(1.0)
    assert stats["heldout_accuracy"] > 0.8
    assert float(sparse[:, 0].min()) > 0.1
    assert float(sparse[:, 1:].abs().max()) < 0.3 * float(plain[:, 1:].abs().max())
    with pytest.raises(ValueError, match="CNN"):
        fit_reward_ensemble(pairs, FitSettings(members=1, steps=10, l1=1.0, image_shape=(1, 1, 3)))
