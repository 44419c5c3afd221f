"""Environments, rollouts, trajectory/clip storage and the policy sources, on real envs."""

import json

import numpy as np
import pytest

from rlhf_core.envs.clips import make_clips, queue_random_pairs
from rlhf_core.envs.make import EnvError, close_env, env_info, frame_is_blank, make_env
from rlhf_core.envs.policies import EpsilonGreedy, RandomPolicy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import item_fps, load_arrays, load_frames, save_trajectory
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.sources.rollouts import DREX_CONTINUOUS, DREX_DISCRETE, RolloutConfig


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "MountainCarContinuous-v0", "LunarLander-v3",
                                    "HalfCheetah-v5", "Hopper-v5", "ALE/Enduro-v5"])
def test_env_rolls_out_and_renders_real_frames(env_id):
    env = make_env(env_id)
    try:
        traj = rollout(env, RandomPolicy(env.action_space, seed=1), seed=1, max_steps=12)
    finally:
        close_env(env)
    assert traj.length == 12 or traj.terminated
    assert traj.frames.shape[0] == traj.length + 1 and traj.frames.dtype == np.uint8
    assert not any(frame_is_blank(f) for f in traj.frames)
    assert traj.true_return == pytest.approx(float(traj.rewards.sum()))


def test_unknown_env_and_missing_module_give_clear_messages():
    with pytest.raises(EnvError, match="Unknown environment 'CartPol-v1'.*CartPole-v1"):
        make_env("CartPol-v1")
    with pytest.raises(EnvError, match="not_a_module_xyz"):
        make_env("not_a_module_xyz:Thing-v0")


def test_missing_optional_dependency_names_the_fix(monkeypatch):
    import gymnasium as gym

    def fake_make(*args, **kwargs):
        raise gym.error.DependencyNotInstalled("Box2D is not installed, run `pip install box2d`")

    monkeypatch.setattr(gym, "make", fake_make)
    with pytest.raises(EnvError, match=r'pip install "gymnasium\[box2d\]"'):
        make_env("LunarLander-v3")


def test_bc_continuous_actions(project):
    from rlhf_core.envs.policies import BCPolicy
    from rlhf_core.trainers.control.bc import BCConfig

    env = make_env("Pendulum-v1", render=False)

    class Damp:  # a simple continuous controller: torque against the angular velocity
        def act(self, obs):
            return np.clip(np.array([-0.8 * obs[2]], np.float32), -2, 2)

    for s in range(2):
        save_trajectory(project, rollout(env, Damp(), seed=s, max_steps=100, render=False, source={"kind": "human"}))
    env.close()
    out = execute_job(get_job("bc"), BCConfig(env_id="Pendulum-v1", epochs=150, eval_episodes=0), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "completed", out.error
    policy = BCPolicy.load(project.abspath(project.checkpoints()[0]["path"]))
    obs = np.array([0.5, 0.5, 1.0], np.float32)
    action = policy.act(obs)
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0
    assert action[0] == pytest.approx(-0.8, abs=0.25)  # imitates the controller


def test_env_info_discrete_and_continuous():
    a, b = make_env("CartPole-v1", render=False), make_env("Pendulum-v1", render=False)
    ia, ib = env_info(a), env_info(b)
    a.close(), b.close()
    assert ia.discrete and ia.n_actions == 2 and ia.fps == 50
    assert not ib.discrete and ib.action_dim == 1 and ib.action_low == (-2.0,) and ib.action_high == (2.0,)


def test_trajectory_and_clip_storage_round_trip(project):
    env = make_env("CartPole-v1")
    traj = rollout(env, RandomPolicy(env.action_space, seed=3), seed=3, max_steps=40, source={"kind": "random"})
    close_env(env)
    tid = save_trajectory(project, traj)
    row = project.get_item(tid)
    assert row["length"] == traj.length and row["true_return"] == pytest.approx(traj.true_return)
    assert row["media_path"].startswith("media/") and row["source"] == "random" and item_fps(project, row) == 50
    arrays = load_arrays(project, row)
    np.testing.assert_allclose(arrays["rewards"], traj.rewards)
    np.testing.assert_allclose(arrays["observations"], traj.observations, rtol=1e-6)
    frames = load_frames(project, row)
    assert frames.shape[0] == traj.length + 1
    # lossy video, but close to the rendered frames
    h, w = frames.shape[1:3]
    assert np.abs(frames.astype(int) - traj.frames[:, :h, :w].astype(int)).mean() < 6
    [cid] = make_clips(project, [tid], length=10, per_trajectory=1, seed=0)
    clip = project.get_item(cid)
    assert clip["end_step"] - clip["start_step"] == 10
    assert clip["true_return"] == pytest.approx(traj.rewards[clip["start_step"]:clip["end_step"]].sum())
    assert load_frames(project, clip).shape[0] == 10
    assert len(load_arrays(project, clip)["rewards"]) == 10


def test_epsilon_greedy_takes_random_actions_at_rate_epsilon():
    env = make_env("CartPole-v1", render=False)
    policy = EpsilonGreedy(RandomPolicy(env.action_space), env.action_space, 0.3, seed=0)
    for _ in range(4000):
        policy.act(None)
    env.close()
    assert policy.random_actions / policy.steps == pytest.approx(0.3, abs=0.03)


def test_drex_noise_schedules():
    assert len(DREX_CONTINUOUS) == 20 and DREX_CONTINUOUS[0] == 0.0 and DREX_CONTINUOUS[-1] == 0.95
    assert DREX_DISCRETE == (1.0, 0.75, 0.5, 0.25, 0.01)


def test_rollout_job_random_with_noise_schedule_clips_and_pairs(project):
    cfg = RolloutConfig(env_id="CartPole-v1", episodes=1, noise_schedule="drex_discrete", max_steps=30,
                        clips_per_trajectory=1, clip_length=8, queue_pairs=3)
    out = execute_job(get_job("rollouts"), cfg, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    trajs = project.items("trajectory")
    assert [json.loads(t["params_json"])["epsilon"] for t in trajs] == list(DREX_DISCRETE)
    assert len(project.items("clip")) == 5 and len(project.pending_pairs(100)) == 3
    assert set(out.result["mean_return_by_epsilon"]) == {str(e) for e in DREX_DISCRETE}


def test_bc_then_noisy_bc_rollouts(project):
    # demonstrations: a hand-written CartPole controller (push towards the pole's lean)
    env = make_env("CartPole-v1", render=False)

    class Lean:
        def act(self, obs):
            return int(obs[2] + 0.5 * obs[3] > 0)

    for s in range(3):
        t = rollout(env, Lean(), seed=s, max_steps=200, render=False, source={"kind": "human"})
        save_trajectory(project, t)
    env.close()
    from rlhf_core.trainers.control.bc import BCConfig

    out = execute_job(get_job("bc"), BCConfig(env_id="CartPole-v1", epochs=80, eval_episodes=2), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "completed", out.error
    assert out.result["pairs"] == 600 and out.result["mean_eval_return"] >= 100  # demos reach 200; random play ~22
    noisy = RolloutConfig(env_id="CartPole-v1", policy="bc", checkpoint_id=out.result["checkpoint_id"],
                          episodes=2, epsilon=1.0, record_video=False)
    res = execute_job(get_job("rollouts"), noisy, RecordingContext(), project_path=project.folder)
    assert res.status == "completed", res.error
    # pure noise is much worse than the cloned policy
    assert res.result["mean_return_by_epsilon"]["1.0"] < out.result["mean_eval_return"] / 2


def test_learner_checkpoints_then_rollout_from_checkpoint(project):
    from rlhf_core.sources.learner import LearnerConfig

    cfg = LearnerConfig(env_id="CartPole-v1", total_steps=2048, checkpoint_every=1024, episodes_per_checkpoint=1,
                        max_steps=50)
    ctx = RecordingContext()
    out = execute_job(get_job("learner"), cfg, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    steps = [c["step"] for c in out.result["checkpoints"]]
    assert steps[0] == 0 and steps[-1] >= 2048 and len(steps) >= 3
    demos = project.items("trajectory")
    assert len(demos) == len(steps)
    assert [json.loads(d["params_json"])["step"] for d in demos] == steps
    assert any(k == "rollout/true_return" for _, v in ctx.metric_log for k in v)
    ckpt = out.result["checkpoints"][-1]["id"]
    res = execute_job(get_job("rollouts"), RolloutConfig(env_id="CartPole-v1", policy="checkpoint", checkpoint_id=ckpt,
                                                         episodes=1, max_steps=20, record_video=False),
                      RecordingContext(), project_path=project.folder)
    assert res.status == "completed", res.error


def test_queue_random_pairs_prefers_different_trajectories(project):
    env = make_env("CartPole-v1")
    ids = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=30))
           for s in range(2)]
    close_env(env)
    clips = make_clips(project, ids, length=5, per_trajectory=3)
    queued = queue_random_pairs(project, clips, 5)
    assert len(queued) == 5
    for pair in project.pending_pairs(10):
        a, b = project.get_item(pair["left_id"]), project.get_item(pair["right_id"])
        assert a["parent_id"] != b["parent_id"]


def test_keyboard_demo_records_a_trajectory(project):
    from rlhf_core.sources.keyboard import HumanDemo, supported_envs

    assert {"CartPole-v1", "Pendulum-v1", "LunarLander-v3", "MountainCarContinuous-v0"} <= set(supported_envs())
    demo = HumanDemo("CartPole-v1", seed=5, labeller="ada")
    held = [{"left"}, {"right"}, set(), {"right"}, {"left", "right"}]
    for keys in held:
        demo.step(keys)
    traj = demo.trajectory()
    demo.close()
    # no key repeats the last action; with both held the first mapped key (left) wins
    assert traj.actions.tolist() == [0, 1, 1, 1, 0]
    assert traj.frames.shape[0] == 6 and traj.source == {"kind": "human", "labeller": "ada"}
    tid = save_trajectory(project, traj)
    assert project.get_item(tid)["source"] == "human" and project.get_item(tid)["length"] == 5
    with pytest.raises(EnvError, match="No keyboard mapping"):
        HumanDemo("HalfCheetah-v5")


def test_keyboard_demo_continuous_actions():
    from rlhf_core.sources.keyboard import HumanDemo

    demo = HumanDemo("Pendulum-v1", seed=0)
    demo.step({"left"})
    demo.step(set())
    demo.step({"right"})
    acts = demo.trajectory().actions
    demo.close()
    np.testing.assert_allclose(acts.ravel(), [2.0, 0.0, -2.0])


def _numbered_frames(n: int, size: int = 64) -> np.ndarray:
    """Frames that say their own index: frame i has a bright bar 4 + i % 56 pixels wide and a grey one
    whose height grows with i // 56."""
    frames = np.zeros((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        frames[i, :, : 4 + (i % 56)] = 220  # width of the bar = 4 + i % 56
        frames[i, : 4 + (i // 56) * 8, -8:] = 120
    return frames


def _sequential(path, start, end):
    import av

    with av.open(str(path)) as container:
        got = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    got = got[start:end]
    return np.stack(got) if got else np.zeros((0, 0, 0, 3), dtype=np.uint8)


@pytest.mark.parametrize("keyframe_every", ["writer", 250])
def test_read_video_seeks_to_a_clip_and_returns_the_same_frames_as_decoding_from_the_start(tmp_path,
                                                                                        keyframe_every):
    """read_video(start, end) seeks to the keyframe before ``start``; the frames are those a decode from
    frame 0 gives, for clips on, just after and between keyframes, at the end, and for videos written
    with x264's default 250-frame GOP (as older projects have)."""
    import av

    from rlhf_core.envs import storage

    path = tmp_path / "v.mp4"
    frames = _numbered_frames(130)
    # "writer": a keyframe at least every KEYFRAME_INTERVAL frames; 250: x264's default, as in older projects
    storage.write_video(path, frames, fps=20, keyframe_interval=None if keyframe_every == 250 else
                        storage.KEYFRAME_INTERVAL)
    with av.open(str(path)) as c:
        keys = [pk.pts for pk in c.demux(c.streams.video[0]) if pk.is_keyframe and pk.pts is not None]
    if keyframe_every == "writer":
        assert len(keys) >= 130 // storage.KEYFRAME_INTERVAL + 1  # the writer's GOP, so that seeking helps
    for start, end in [(0, 10), (1, 5), (19, 25), (59, 61), (60, 61), (61, 90), (100, 130), (119, 122),
                       (125, None), (129, 130), (60, 60)]:
        want = _sequential(path, start, end)
        got = storage.read_video(path, start, end)
        assert got.shape[0] == want.shape[0] == len(range(130)[start:end]), (start, end)
        np.testing.assert_array_equal(got, want, err_msg=f"frames {start}:{end}")
        if start > 0:
            # the seek path itself answered (not the decode-from-0 fallback), with the same frames
            seek = storage._read_after_seek(str(path), start, end)
            assert seek is not None and np.array_equal(seek, want), (start, end)
    # and the decoded frames are the ones written (lossy: close, in the right order)
    bar = (storage.read_video(path, 70, 75)[:, 32, :, 0] > 128).sum(axis=1)
    assert list(bar) == [4 + i % 56 for i in range(70, 75)]
