"""execute_job: runs are recorded completed / cancelled / failed, with metrics in the database."""

import threading
import time

import pytest

from rlhf_core.jobs import JobContext, RecordingContext, execute_job, get_job
from rlhf_core.trainers.control.synthetic_preferences import (
    SyntheticPreferenceConfig,
    load_reward_mlp,
    make_problem,
    train_synthetic_preferences,
)

SMALL = dict(n_items=60, n_pairs=300, steps=30, eval_every=10)


def test_completed_run_writes_metrics_result_and_checkpoint(project):
    ctx = RecordingContext()
    out = execute_job(get_job("synthetic_preferences"), SyntheticPreferenceConfig(**SMALL), ctx,
                      project_path=project.folder)
    assert out.status == "completed", out.error
    run = project.get_run(out.run_id)
    assert run["status"] == "completed" and run["config"]["steps"] == 30
    assert run["started_at"] <= run["finished_at"]
    db = project.metrics(out.run_id)
    steps, losses = ctx.series("reward_model/loss")
    assert db["reward_model/loss"] == (steps, losses) and steps == list(range(30))
    assert db["reward_model/heldout_accuracy"][0] == [0, 9, 19, 29]  # 0: untrained baseline
    assert ctx.progress_log[-1][0] == 1.0
    ckpt = project.checkpoints(out.run_id)[0]
    assert run["result"]["checkpoint"] == ckpt["path"]
    model = load_reward_mlp(project.abspath(ckpt["path"]), 8, 64)
    assert sum(p.numel() for p in model.parameters()) == 8 * 64 + 64 + 64 * 64 + 64 + 64 + 1


def test_cancel_stops_at_the_next_step(project):
    ctx = RecordingContext(cancel_after_metrics=5)
    out = execute_job(get_job("synthetic_preferences"), SyntheticPreferenceConfig(steps=100_000), ctx,
                      project_path=project.folder)
    assert out.status == "cancelled"
    assert len(ctx.metric_log) == 5  # not one step more
    assert project.get_run(out.run_id)["status"] == "cancelled"
    assert len(project.metrics(out.run_id)["reward_model/loss"][0]) == 5  # flushed on the way out


def test_cancel_from_another_thread_within_two_seconds(project):
    ctx = RecordingContext()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", execute_job(
        get_job("synthetic_preferences"), SyntheticPreferenceConfig(steps=10_000_000), ctx,
        project_path=project.folder)))
    t.start()
    while not ctx.metric_log:
        time.sleep(0.01)
    t0 = time.monotonic()
    ctx.cancel()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 2.0
    assert box["out"].status == "cancelled"


def _explode(config, ctx: JobContext):
    ctx.metrics(0, {"x/y": 1.0})
    raise RuntimeError("boom at step 0")


def test_failure_is_recorded_with_traceback(project):
    out = execute_job(_explode, SyntheticPreferenceConfig(), RecordingContext(), project_path=project.folder)
    assert out.status == "failed" and "RuntimeError: boom at step 0" in out.error
    run = project.get_run(out.run_id)
    assert run["status"] == "failed" and "boom at step 0" in run["error"] and "Traceback" in run["error"]
    assert project.metrics(out.run_id) == {"x/y": ([0], [1.0])}


def test_invalid_config_fails_before_creating_anything(project):
    out = execute_job(get_job("synthetic_preferences"), SyntheticPreferenceConfig(learning_rate=-1.0),
                      RecordingContext(), project_path=project.folder)
    assert out.status == "failed" and "learning_rate: must be greater than 0.0" in out.error
    assert project.runs() == []


def test_samples_are_stored(project):
    def job(config, ctx):
        ctx.sample("text", {"completion": "<script>x</script>"}, step=3)
        return {"ok": True}

    out = execute_job(job, SyntheticPreferenceConfig(), RecordingContext(), project_path=project.folder)
    assert project.samples(out.run_id)[0]["payload"] == {"completion": "<script>x</script>"}
    assert project.get_run(out.run_id)["result"] == {"ok": True}


def test_reward_model_learns_the_true_reward():
    """With an oracle teacher the learned reward must rank held-out pairs well and track r*."""
    ctx = RecordingContext()
    result = train_synthetic_preferences(
        SyntheticPreferenceConfig(teacher="oracle", steps=300, n_pairs=2000, save=False), ctx)
    assert result["heldout_accuracy"] > 0.9
    assert result["true_correlation"] > 0.9
    first = sum(ctx.series("reward_model/loss")[1][:20]) / 20
    last = sum(ctx.series("reward_model/loss")[1][-20:]) / 20
    assert last < first * 0.6


def test_noisy_teacher_flips_labels_at_the_bradley_terry_rate():
    import numpy as np

    p = make_problem(SyntheticPreferenceConfig(n_pairs=20000, beta=1.0))
    dr = p["true_r"][p["left"]] - p["true_r"][p["right"]]
    agree = ((dr > 0) == (p["label"] > 0.5)).mean()
    expected = (1 / (1 + np.exp(-np.abs(dr)))).mean()
    assert agree == pytest.approx(expected, abs=0.01)


def test_a_result_with_nan_is_stored_with_null_in_its_place(project):
    from dataclasses import dataclass

    import numpy as np

    from rlhf_core.jobs import RecordingContext, execute_job

    @dataclass
    class Nothing:
        pass

    def job(config, ctx):
        return {"heldout_accuracy": float("nan"), "best": np.float32("inf"), "ok": 0.5, "all": [float("nan"), 1.0]}

    out = execute_job(job, Nothing(), RecordingContext(), project_path=project.folder, kind="nan_job")
    assert out.status == "completed", out.error
    assert project.get_run(out.run_id)["result"] == {"heldout_accuracy": None, "best": None, "ok": 0.5,
                                                     "all": [None, 1.0]}
