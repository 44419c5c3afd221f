"""Runs that resume: the state is written atomically, a cancelled or killed run continues as the same run,
and its metrics equal those of an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from rlhf_core.cli import main
from rlhf_core.jobs import RecordingContext, ResumeError, execute_job, get_job, resume_run
from rlhf_core.resume import load_state, save_state
from rlhf_core.store import Project
from rlhf_core.trainers.text.sft import SFTConfig
from tests.conftest import ROOT, add_marker_pairs, needs_model

#: wall-clock and memory readings differ between any two runs; everything else must match
UNTIMED = ("time/", "memory/")


def test_a_state_round_trips_and_a_kill_between_the_renames_keeps_the_old_one(tmp_path):
    torch.manual_seed(3)
    random.seed(4)
    np.random.seed(5)
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    save_state(tmp_path, 7, {"model": weights}, {"loss_first": 1.5})
    expected = (torch.rand(3), random.random(), np.random.rand(2))
    state = load_state(tmp_path)
    assert (state.step, state.extra) == (7, {"loss_first": 1.5})
    assert torch.equal(state.tensors["model"]["w"], weights["w"])
    state.restore_random()
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(expected[0], again[0]) and expected[1] == again[1] and np.array_equal(expected[2], again[2])
    # a kill after the old state was moved aside and before the new one was moved in
    base = tmp_path / "resume"
    os.replace(base / "state", base / "state.old")
    (base / "state.partial-x").mkdir()
    (base / "state.partial-x" / "state.json").write_text("{")  # half written
    assert load_state(tmp_path).step == 7
    save_state(tmp_path, 9, {"model": weights})
    assert load_state(tmp_path).step == 9 and not (base / "state.old").exists()
    assert load_state(tmp_path / "nothing") is None


def _demonstrations(project, n=6):
    for i in range(n):
        pid = project.add_prompt(f"Name fruit number {i}.")
        project.add_item("response", prompt_id=pid, text=f"Fruit {i} is a pear.", source="demonstration",
                         model_id=None)


def _metrics(project, run_id):
    return {k: v for k, v in project.metrics(run_id).items() if not k.startswith(UNTIMED)}


def _assert_same_series(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0] == b[key][0], key  # the same steps: none twice, none missing
        assert np.allclose(a[key][1], b[key][1], rtol=1e-5, atol=1e-6), key


@needs_model
def test_a_cancelled_sft_run_resumes_to_the_uninterrupted_metrics(project, tiny_model):
    _demonstrations(project)
    config = SFTConfig(model=str(tiny_model), data="demonstrations", steps=6, batch_size=2, max_length=48,
                       learning_rate=1e-3, heldout_fraction=0.34, eval_every=2, save=False, seed=1)
    whole = execute_job(get_job("sft"), config, RecordingContext(), project_path=project.folder)
    assert whole.status == "completed", whole.error
    cut = execute_job(get_job("sft"), config, RecordingContext(cancel_after_metrics=4), project_path=project.folder)
    assert cut.status == "cancelled"
    assert max(project.metrics(cut.run_id)["train/loss"][0]) == 3
    resumed = resume_run(project.folder, cut.run_id, RecordingContext())
    assert (resumed.status, resumed.run_id) == ("completed", cut.run_id), resumed.error
    _assert_same_series(_metrics(project, whole.run_id), _metrics(project, cut.run_id))
    assert resumed.result["loss_first"] == pytest.approx(whole.result["loss_first"])
    assert resumed.result["heldout_loss_last"] == pytest.approx(whole.result["heldout_loss_last"], rel=1e-5)
    with pytest.raises(ResumeError, match=f"Run {cut.run_id} is completed"):
        resume_run(project.folder, cut.run_id, RecordingContext())


@needs_model
@pytest.mark.timeout(400)
def test_a_killed_cli_run_resumes_from_the_command_line(tmp_path, tiny_model, capsys):
    folder = tmp_path / "p.rlhf"
    with Project.create(folder) as project:
        _demonstrations(project, 8)
    flags = ["--model", str(tiny_model), "--data", "demonstrations", "--steps", "8", "--batch-size", "2",
             "--max-length", "48", "--learning-rate", "1e-3", "--heldout-fraction", "0.25", "--eval-every", "2",
             "--save-steps", "1", "--seed", "2", "--no-save"]
    assert main(["run", "sft", "--project", str(folder), *flags]) == 0
    whole = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_core", "run", "sft", "--project", str(folder), *flags],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    try:
        deadline = time.monotonic() + 300
        with Project.open(folder) as project:
            while time.monotonic() < deadline and proc.poll() is None:
                runs = [r for r in project.runs() if r["id"] != whole]
                done = project.metrics(runs[0]["id"]).get("train/loss", ([], []))[0] if runs else []
                if done and max(done) >= 4:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = max(done)
                    break
                time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert killed_at is not None, "the run ended before it could be killed"
    with Project.open(folder) as project:
        cut = max(r["id"] for r in project.runs())
    assert main(["resume", "--project", str(folder), "--run", str(cut)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["run_id"], out["status"]) == (cut, "completed")
    with Project.open(folder) as project:
        assert project.get_run(cut)["status"] == "completed"
        _assert_same_series(_metrics(project, whole), _metrics(project, cut))


def test_runs_that_cannot_resume_say_why(project, capsys):
    run = project.create_run("sft", {})
    project.start_run(run)
    project.finish_run(run, "cancelled")
    assert main(["resume", "--project", str(project.folder), "--run", str(run)]) == 2
    assert f"Run {run} (sft) saved no resumable state" in capsys.readouterr().err
    assert main(["resume", "--project", str(project.folder), "--run", "99"]) == 2
    assert "Run 99 does not exist." in capsys.readouterr().err


def _cancel_and_resume(project, job, config, cancel_after):
    whole = execute_job(get_job(job), config, RecordingContext(), project_path=project.folder)
    assert whole.status == "completed", whole.error
    cut = execute_job(get_job(job), config, RecordingContext(cancel_after_metrics=cancel_after),
                      project_path=project.folder)
    assert cut.status == "cancelled", cut.error
    resumed = resume_run(project.folder, cut.run_id, RecordingContext())
    assert resumed.status == "completed", resumed.error
    _assert_same_series(_metrics(project, whole.run_id), _metrics(project, cut.run_id))
    return whole, resumed


@needs_model
def test_dpo_resumes_to_the_uninterrupted_metrics(project, tiny_model):
    from rlhf_core.trainers.text.dpo import DPOConfig

    add_marker_pairs(project, 10)
    config = DPOConfig(model=str(tiny_model), steps=5, batch_size=2, max_length=48, eval_every=2, save=False,
                       learning_rate=1e-3, seed=3)
    whole, resumed = _cancel_and_resume(project, "dpo", config, cancel_after=4)
    for key in ("loss_first", "loss_last", "margin_last", "heldout_accuracy_first", "heldout_loss_last"):
        assert resumed.result[key] == pytest.approx(whole.result[key], rel=1e-5, abs=1e-6), key


@needs_model
def test_grpo_resumes_to_the_uninterrupted_metrics_and_samples(project, tiny_model):
    from rlhf_core.trainers.text.grpo import GRPOConfig

    config = GRPOConfig(model=str(tiny_model), prompt_source="tasks", steps=4, prompts_per_step=2, group_size=2,
                        max_new_tokens=4, train_tasks=6, heldout_tasks=2, eval_every=2, save=False, seed=5)
    whole, resumed = _cancel_and_resume(project, "grpo", config, cancel_after=4)
    for key in ("reward_first", "reward_last", "kl_last"):
        assert resumed.result[key] == pytest.approx(whole.result[key], rel=1e-5, abs=1e-6), key
    texts = [[(s["step"], s["payload"]["response"]) for s in project.samples(run)]
             for run in (whole.run_id, resumed.run_id)]
    assert texts[0] == texts[1]  # the same completions were sampled at the same steps


@needs_model
def test_the_text_reward_model_resumes_to_the_uninterrupted_metrics(project, tiny_model):
    from rlhf_core.trainers.text.reward_model import TextRewardModelConfig

    add_marker_pairs(project, 12)
    config = TextRewardModelConfig(model=str(tiny_model), epochs=2, batch_size=2, max_length=48,
                                   learning_rate=1e-3, heldout_fraction=0.25, score_responses=8, seed=2)
    # cancelled after 6 metric rows: steps 1-5 of epoch 1 and its held-out accuracy at its last step
    whole, resumed = _cancel_and_resume(project, "text_reward_model", config, cancel_after=6)
    for key in ("heldout_accuracy", "train_loss", "length_correlation"):
        assert resumed.result[key] == pytest.approx(whole.result[key], rel=1e-5, abs=1e-6), key


class _CancelMidStep(RecordingContext):
    """Cancels itself at the ``nth`` cancellation check after ``after_metrics`` metric calls: inside a step
    (e.g. while sampling), not between two steps."""

    def __init__(self, after_metrics: int, nth: int):
        super().__init__()
        self._after, self._nth, self._checks = after_metrics, nth, 0

    def raise_if_cancelled(self) -> None:
        if len(self.metric_log) >= self._after:
            self._checks += 1
            if self._checks == self._nth:
                self.cancel()
        super().raise_if_cancelled()


def _resume_until_done(project, run_id):
    resumed = resume_run(project.folder, run_id, RecordingContext())
    assert (resumed.status, resumed.run_id) == ("completed", run_id), resumed.error
    return resumed


@needs_model
@pytest.mark.timeout(300)
def test_text_ppo_resumes_to_the_uninterrupted_metrics_after_a_cancel_between_or_inside_steps(project, tiny_model):
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model
    from rlhf_core.trainers.text.ppo import PPOTextConfig

    rm = project.folder / "models" / "rm"
    model, _, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=0)
    save_text_reward_model(model, rm, meta={"base_model": "tiny"})
    pids = [project.add_prompt(t) for t in ("Say hi.", "Name a fruit.", "What is 2+2?")]
    # the per-prompt reward baseline (sampled before step 0), a gold model and an adaptive beta: all must
    # come back from the state, not be recomputed from the trained policy
    config = PPOTextConfig(model=str(tiny_model), reward_model=str(rm), gold_reward_model=str(rm), prompt_set="",
                           prompt_ids=pids, steps=4, batch_size=2, minibatch_size=1, ppo_epochs=2, max_new_tokens=4,
                           reward="model:1,length:0.01", beta=0.1, adaptive_kl=True, kl_target=1.0, kl_horizon=10.0,
                           baseline_samples=2, learning_rate=1e-3, seed=4)
    whole, resumed = _cancel_and_resume(project, "ppo_text", config, cancel_after=2)
    betas = _metrics(project, whole.run_id)["kl/beta"][1]
    assert len(set(betas)) == len(betas) == 5  # beta moved at every step
    for key in ("reward_last", "kl_last", "beta_last", "gold_last", "baseline_scale", "reward_window_last"):
        assert resumed.result[key] == pytest.approx(whole.result[key], rel=1e-5, abs=1e-6), key
    samples = [[(s["step"], s["payload"]["response"]) for s in project.samples(run)]
               for run in (whole.run_id, resumed.run_id)]
    assert samples[0] == samples[1]
    # cancelled while sampling step 2's completions: the state of step 1, with the prompt order and beta
    # that step 2 started from
    ctx = _CancelMidStep(after_metrics=2, nth=3)
    cut = execute_job(get_job("ppo_text"), config, ctx, project_path=project.folder)
    assert cut.status == "cancelled" and [s for s, _ in ctx.metric_log] == [0, 1]
    assert load_state(project.run_folder(cut.run_id)).step == 1
    _resume_until_done(project, cut.run_id)
    _assert_same_series(_metrics(project, whole.run_id), _metrics(project, cut.run_id))


def _control_rollouts(project, episodes=1, seed=0):
    outcome = execute_job(get_job("rollouts"), get_job("rollouts").config_class()(
        env_id="CartPole-v1", episodes=episodes, noise_schedule="drex_discrete", max_steps=40, clips_per_trajectory=1,
        clip_length=8, queue_pairs=0, record_video=False, seed=seed), RecordingContext(), project_path=project.folder)
    assert outcome.status == "completed", outcome.error


def test_the_control_reward_model_resumes_to_the_uninterrupted_metrics_and_weights(project):
    from rlhf_core.rewards.networks import RewardEnsemble
    from rlhf_core.trainers.control.reward_model import RewardModelConfig

    _control_rollouts(project)
    # evaluations (one metric row per member) at steps 49, 99, 149, 199
    config = RewardModelConfig(env_id="CartPole-v1", source="drex", snippet_pairs=60, snippet_min=3, snippet_max=8,
                               members=2, hidden=16, steps=200, seed=3)
    whole, resumed = _cancel_and_resume(project, "reward_model", config, cancel_after=4)
    steps = _metrics(project, whole.run_id)["reward_model/m1_loss"][0]
    assert steps == [49, 99, 149, 199]
    for key in ("heldout_accuracy", "reward_mean", "reward_std"):
        assert resumed.result[key] == pytest.approx(whole.result[key], rel=1e-5, abs=1e-6), key

    def weights(outcome):
        cid = outcome.result["checkpoint_id"]
        row = next(c for c in project.checkpoints() if c["id"] == cid)
        ensemble, _ = RewardEnsemble.load(project.abspath(row["path"]))
        return [p.detach() for p in ensemble.parameters()]

    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(weights(whole), weights(resumed)))
    # cancelled between two evaluations (at step 60): the minibatch generators continue from there
    ctx = _CancelMidStep(after_metrics=2, nth=11)
    cut = execute_job(get_job("reward_model"), config, ctx, project_path=project.folder)
    assert cut.status == "cancelled" and load_state(project.run_folder(cut.run_id)).step == 59
    _resume_until_done(project, cut.run_id)
    _assert_same_series(_metrics(project, whole.run_id), _metrics(project, cut.run_id))
    # new trajectories change the pairs: the saved fit no longer fits them, and the run says so
    cut = execute_job(get_job("reward_model"), config, RecordingContext(cancel_after_metrics=2),
                      project_path=project.folder)
    _control_rollouts(project, seed=1)
    again = resume_run(project.folder, cut.run_id, RecordingContext())
    assert again.status == "failed" and "training pairs changed" in again.message
    assert load_state(project.run_folder(cut.run_id)).step == 49  # still there: the run stays resumable


class _CancelMidRollout(RecordingContext):
    """Cancels itself at the ``nth`` read of ``cancelled`` after ``after_metrics`` metric calls (an SB3
    callback reads it at every environment step): in the middle of a rollout."""

    def __init__(self, after_metrics: int, nth: int):
        super().__init__()
        self._after, self._nth, self._reads = after_metrics, nth, 0

    @property
    def cancelled(self) -> bool:
        if len(self.metric_log) >= self._after:
            self._reads += 1
            if self._reads == self._nth:
                self.cancel()
        return self._cancel.is_set()


class _FailAfter(RecordingContext):
    """Fails the job (an error, not a cancel) at its ``n``-th metric call, after that row is stored."""

    def __init__(self, n: int):
        super().__init__()
        self._n = n

    def _on_metrics(self, step, values):
        super()._on_metrics(step, values)
        if len(self.metric_log) == self._n:
            raise RuntimeError("the machine went away")


def _assert_same_steps(a, b):
    """SB3 runs: a new episode starts on resuming (an env cannot be saved mid-episode), so only the steps
    must match: none twice, none missing."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0] == b[key][0], key


def _checkpoint_steps(project, run_id, kind="sb3_ppo"):
    return sorted(c["step"] for c in project.checkpoints(run_id) if c["kind"] == kind)


def _trajectory_sources(project, run_id):
    return sorted((json.loads(t["params_json"]).get("step"), t["seed"]) for t in project.items("trajectory")
                  if t["run_id"] == run_id)


def test_the_learner_resumes_without_saving_a_checkpoint_twice(project):
    from rlhf_core.sources.learner import LearnerConfig

    # CartPole: 8 envs x 32 steps = 256 per rollout; checkpoints at 0, 1000 and 2000 (inside rollouts)
    # and the final 2048, one 30-step demonstration from each
    config = LearnerConfig(env_id="CartPole-v1", total_steps=2048, checkpoint_every=1000, episodes_per_checkpoint=1,
                           max_steps=30, record_video=False, seed=1)
    whole_ctx = RecordingContext()
    whole = execute_job(get_job("learner"), config, whole_ctx, project_path=project.folder)
    assert whole.status == "completed", whole.error
    expected = _metrics(project, whole.run_id)
    assert _checkpoint_steps(project, whole.run_id) == [0, 1000, 2000, 2048]
    first_demo = next(i for i, (_, v) in enumerate(whole_ctx.metric_log) if "demos/true_return" in v)

    def check(cut_run):
        _assert_same_steps(expected, _metrics(project, cut_run))
        assert _checkpoint_steps(project, cut_run) == [0, 1000, 2000, 2048]
        assert _trajectory_sources(project, cut_run) == _trajectory_sources(project, whole.run_id)

    # 1. cancelled at step 1016, inside the rollout that saved checkpoint 1000: the state is the rollout's start
    ctx = _CancelMidRollout(after_metrics=3, nth=31)
    cut = execute_job(get_job("learner"), config, ctx, project_path=project.folder)
    assert cut.status == "cancelled" and load_state(project.run_folder(cut.run_id)).step == 768
    assert _checkpoint_steps(project, cut.run_id) == [0, 1000]
    resumed = _resume_until_done(project, cut.run_id)
    check(cut.run_id)
    assert [c["step"] for c in resumed.result["checkpoints"]] == [0, 1000, 2000, 2048]
    # 2. cancelled between two demonstrations: those made stay, the rest follow
    cut = execute_job(get_job("learner"), config, RecordingContext(cancel_after_metrics=first_demo + 2),
                      project_path=project.folder)
    assert cut.status == "cancelled" and load_state(project.run_folder(cut.run_id)).step == 2048 + 1
    assert len(_trajectory_sources(project, cut.run_id)) == 2
    _resume_until_done(project, cut.run_id)
    check(cut.run_id)
    # 3. failed at step 1280 with a state saved every 768 steps: the checkpoint it saved at 1000, after its
    # last state, is dropped and saved again by the resumed run
    failing = LearnerConfig(**{**config.__dict__, "save_steps": 768})
    cut = execute_job(get_job("learner"), failing, _FailAfter(5), project_path=project.folder)
    assert cut.status == "failed" and load_state(project.run_folder(cut.run_id)).step == 768
    assert _checkpoint_steps(project, cut.run_id) == [0, 1000]
    _resume_until_done(project, cut.run_id)
    check(cut.run_id)


def test_ppo_on_a_learned_reward_resumes_to_the_same_steps(project):
    from rlhf_core.trainers.control.ppo_learned import PPOLearnedConfig
    from rlhf_core.trainers.control.reward_model import RewardModelConfig

    _control_rollouts(project)
    rm = execute_job(get_job("reward_model"), RewardModelConfig(
        env_id="CartPole-v1", source="drex", snippet_pairs=40, snippet_min=3, snippet_max=8, members=2, hidden=16,
        steps=20), RecordingContext(), project_path=project.folder)
    # rollouts of 256 steps: metrics at 256, 512, 768 and 1024
    config = PPOLearnedConfig(env_id="CartPole-v1", reward_checkpoint_id=0, total_steps=1024, eval_episodes=1,
                              record_video=False, seed=2)
    whole, resumed = _cancel_and_resume_steps(project, "ppo_learned", config, RecordingContext(cancel_after_metrics=2),
                                              state_step=512)
    assert _metrics(project, whole.run_id)["rollout/learned_return"][0] == [256, 512, 768, 1024]
    # a reward model trained meanwhile is not the one a resumed run (reward_checkpoint_id 0: the newest) uses
    ctx = _CancelMidRollout(after_metrics=1, nth=10)
    cut = execute_job(get_job("ppo_learned"), config, ctx, project_path=project.folder)
    assert cut.status == "cancelled" and load_state(project.run_folder(cut.run_id)).step == 256
    execute_job(get_job("reward_model"), RewardModelConfig(
        env_id="CartPole-v1", source="drex", snippet_pairs=40, snippet_min=3, snippet_max=8, members=1, hidden=8,
        steps=20), RecordingContext(), project_path=project.folder)
    again = _resume_until_done(project, cut.run_id)
    _assert_same_steps(_metrics(project, whole.run_id), _metrics(project, cut.run_id))
    assert again.result["reward_checkpoint_id"] == rm.result["checkpoint_id"] == whole.result["reward_checkpoint_id"]


def _cancel_and_resume_steps(project, job, config, cancelling, state_step):
    """SB3 jobs: an uninterrupted run, then one cancelled (state at ``state_step``) and resumed: same steps."""
    whole = execute_job(get_job(job), config, RecordingContext(), project_path=project.folder)
    assert whole.status == "completed", whole.error
    cut = execute_job(get_job(job), config, cancelling, project_path=project.folder)
    assert cut.status == "cancelled", cut.error
    assert load_state(project.run_folder(cut.run_id)).step == state_step
    resumed = _resume_until_done(project, cut.run_id)
    _assert_same_steps(_metrics(project, whole.run_id), _metrics(project, cut.run_id))
    return whole, resumed


PREFERENCE_RL = dict(env_id="CartPole-v1", rounds=3, steps_per_round=256, initial_labels=6, labels_per_round=4,
                     clip_length=5, episodes_per_round=2, members=2, reward_steps=20, seed=1)


def test_preference_rl_resumes_with_its_labels_and_label_count(project):
    from rlhf_core.trainers.control.preference_rl import PreferenceRLConfig

    config = PreferenceRLConfig(**PREFERENCE_RL)
    # metric calls: labels at 0; round 1 at 256 (returns, labels); round 2 at 512; round 3 at 768 (returns)
    whole, resumed = _cancel_and_resume_steps(project, "preference_rl", config,
                                              RecordingContext(cancel_after_metrics=3), state_step=256)
    assert _metrics(project, whole.run_id)["preferences/labels"] == ([0, 256, 512], [6.0, 10.0, 13.0])
    assert _metrics(project, resumed.run_id)["preferences/labels"][1] == [6.0, 10.0, 13.0]
    assert resumed.result["labels"] == 13 and [c["steps"] for c in resumed.result["curve"]] == [256, 512, 768]
    # cancelled during round 2's PPO: the state is the end of round 1
    ctx = _CancelMidRollout(after_metrics=3, nth=5)
    cut = execute_job(get_job("preference_rl"), config, ctx, project_path=project.folder)
    assert cut.status == "cancelled" and load_state(project.run_folder(cut.run_id)).step == 256
    _resume_until_done(project, cut.run_id)
    _assert_same_steps(_metrics(project, whole.run_id), _metrics(project, cut.run_id))
    assert _checkpoint_steps(project, cut.run_id) == [768]


@pytest.mark.timeout(300)
def test_a_persons_answers_to_a_cancelled_round_count_when_it_resumes(project):
    import threading

    from rlhf_core.trainers.control.preference_rl import PreferenceRLConfig

    config = PreferenceRLConfig(**{**PREFERENCE_RL, "labeller": "human", "rounds": 2, "initial_labels": 2,
                                   "labels_per_round": 2})

    def answer(labeller, n, stop=lambda: False):
        done = 0
        deadline = time.monotonic() + 120
        while done < n and time.monotonic() < deadline and not stop():
            for pair in labeller.pending_pairs(10)[:n - done]:
                labeller.add_comparison(pair["left_id"], pair["right_id"], "left", queue_id=pair["id"])
                done += 1
            time.sleep(0.1)
        return done

    def in_thread(fn):
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("out", fn()))
        thread.start()
        return thread, box

    ctx, again = RecordingContext(), RecordingContext()
    thread, box = in_thread(lambda: execute_job(get_job("preference_rl"), config, ctx, project_path=project.folder))
    try:
        with Project.open(project.folder, check=False) as labeller:
            assert answer(labeller, 2) == 2  # round 0
            assert answer(labeller, 1) == 1  # one of round 1's two queries, then the run is cancelled
            time.sleep(1.0)  # the job reads that answer and waits for the other one
            ctx.cancel()
            thread.join(60)
            assert box["out"].status == "cancelled"
            assert load_state(project.run_folder(box["out"].run_id)).step == 0
            run_id = box["out"].run_id
            assert len(labeller.pending_pairs(10)) == 1  # the question left open stays in the queue
            thread, box = in_thread(lambda: resume_run(project.folder, run_id, again))
            # round 1 asks anew (how many depends on the clips its episodes give); the open one is answered too
            asked = answer(labeller, 100, stop=lambda: not thread.is_alive())
            thread.join(120)
    finally:  # a failed check must not leave a job waiting for labels
        ctx.cancel()
        again.cancel()
        thread.join(60)
    assert (box["out"].status, box["out"].run_id) == ("completed", run_id), box["out"].error
    assert project.pending_pairs(10) == []
    # 2 before the state + the late answer + the open one and those of the resumed round 1
    assert asked >= 2 and box["out"].result["labels"] == 3 + asked
    assert project.metrics(run_id)["preferences/labels"] == ([0, 256], [2.0, 3.0 + asked])
    assert project.metrics(run_id)["rollout/true_return"][0] == [256, 512]


def test_a_state_carries_files_and_refuses_odd_names(tmp_path):
    source = tmp_path / "model.zip"
    source.write_bytes(b"zip bytes")
    save_state(tmp_path, 3, {}, {"n": 1}, files={"ppo.zip": b"first", "copy.zip": source})
    state = load_state(tmp_path)
    assert {name: path.read_bytes() for name, path in state.files.items()} == {"ppo.zip": b"first",
                                                                               "copy.zip": b"zip bytes"}
    assert state.files["ppo.zip"].parent == state.folder
    save_state(tmp_path, 4, {}, files={"ppo.zip": b"second"})  # the new state replaces the old one whole
    state = load_state(tmp_path)
    assert state.step == 4 and set(state.files) == {"ppo.zip"} and state.files["ppo.zip"].read_bytes() == b"second"
    for bad in ("../escape.zip", "tensors.pt"):
        with pytest.raises(ValueError, match="plain name"):
            save_state(tmp_path, 5, {}, files={bad: b"x"})
    assert load_state(tmp_path).step == 4 and not list((tmp_path / "resume").glob("state.partial-*"))
    (state.files["ppo.zip"]).unlink()  # a state that lost a file is not a complete state
    assert load_state(tmp_path) is None
