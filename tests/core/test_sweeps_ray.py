"""Sweeps on Ray: a real local Ray (2 CPUs) runs CartPole members as tasks whose runs land in the project, and
Cancel stops them; without Ray the engine is refused in one sentence before anything is written."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from rlhf_core import config as cfg
from rlhf_core.cli import main
from rlhf_core.jobs import NullContext, RecordingContext, execute_job, get_job
from rlhf_core.sweeps import SWEEP_KIND, SweepConfig, run_sweep

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="the optional extra `ray` is not installed (pip install 'rlhf-workbench[ray]')")
SETTINGS = {"env_id": "CartPole-v1", "episodes": 2, "max_steps": 60, "clips_per_trajectory": 1, "queue_pairs": 1}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one costs ~7 s here); its workers make their scratch projects
    under a folder of the test's own, and nothing of Ray is left running afterwards."""
    import ray

    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    scratch = temp / "scratch"
    scratch.mkdir()
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(scratch)  # the workers inherit it from the raylet ray.init starts
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(temp / "ray"))
    finally:
        if previous is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = previous
    yield scratch
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def _members(project, sweep_id: int) -> list[dict]:
    return [r for r in project.runs() if r["parent_run_id"] == sweep_id]


@needs_ray
@pytest.mark.timeout(120)
def test_a_ray_sweep_lands_each_member_complete_as_a_local_run_would(project, local_ray):
    earlier = project.create_run("synthetic_preferences", {}, status="running")  # its files are linked, never touched
    weights = project.run_folder(earlier) / "reward_mlp.pt"
    weights.write_bytes(b"earlier weights")
    project.add_checkpoint(earlier, "reward_mlp", weights)
    project.finish_run(earlier, "completed")
    config = SweepConfig(job="rollouts", seeds=[0, 1], settings=SETTINGS, engine="ray", workers=2)
    outcome = execute_job(run_sweep, config, RecordingContext(), project_path=project.folder, kind=SWEEP_KIND)
    assert outcome.status == "completed", outcome.error
    assert (outcome.result["members"], outcome.result["completed"]) == (2, 2)
    members = _members(project, outcome.run_id)
    assert sorted(r["config"]["seed"] for r in members) == [0, 1]
    assert all(r["status"] == "completed" and r["kind"] == "rollouts" for r in members)
    assert not list(local_ray.iterdir())  # the workers' scratch projects are gone
    assert weights.read_bytes() == b"earlier weights" and len(project.checkpoints()) == 1

    spec = get_job("rollouts")  # the same member run here, in this process
    local = execute_job(spec, cfg.from_dict(spec.config_class(), {**SETTINGS, "seed": 0}), NullContext(),
                        project_path=project.folder).run_id
    remote = next(r["id"] for r in members if r["config"]["seed"] == 0)
    ours, theirs = project.metrics(local), project.metrics(remote)
    assert {k: len(v[0]) for k, v in theirs.items()} == {k: len(v[0]) for k, v in ours.items()}
    assert theirs["rollout/true_return"] == ours["rollout/true_return"]  # CartPole and the policy are seeded
    for run in members:
        trajectories = project.run_items(run["id"], "trajectory")
        assert len(trajectories) == 2 and run["result"]["trajectories"] == [t["id"] for t in trajectories]
        assert all(project.abspath(t["data_path"]).is_file() and project.abspath(t["media_path"]).is_file()
                   for t in trajectories)
        clips = project.run_items(run["id"], "clip")
        assert {c["parent_id"] for c in clips} == {t["id"] for t in trajectories}
        assert len(project.run_queue(run["id"])) == 1


def _running_members(scratch: Path) -> int:
    """Members whose job is running in a worker's scratch project (read-only; the worker writes it)."""
    running = 0
    for db in scratch.glob("*/member.rlhf/project.db"):
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            try:
                running += conn.execute("SELECT count(*) FROM metrics m JOIN runs r ON r.id = m.run_id "
                                        "WHERE r.status = 'running'").fetchone()[0] > 0
            finally:
                conn.close()
        except sqlite3.Error:
            pass
    return running


@needs_ray
@pytest.mark.timeout(120)
def test_cancel_stops_the_ray_tasks_and_the_stopped_runs_come_back_cancelled(project, local_ray):
    # members that run for minutes (CartPole's 10,000 episodes took 8 s: under load both could finish
    # before the poll below saw them running together)
    config = SweepConfig(job="rollouts", seeds=[0, 1, 2], engine="ray", workers=2,
                         settings={**SETTINGS, "env_id": "Pendulum-v1", "max_steps": 200, "episodes": 10_000,
                                   "record_video": False})
    ctx = RecordingContext()
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", execute_job(
        run_sweep, config, ctx, project_path=project.folder, kind=SWEEP_KIND)))
    thread.start()
    deadline = time.monotonic() + 90
    while _running_members(local_ray) < 2 and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.2)
    ctx.cancel()
    thread.join(timeout=90)
    assert not thread.is_alive()
    assert box["out"].status == "cancelled"
    members = _members(project, box["out"].run_id)
    assert len(members) == 2 and all(r["status"] == "cancelled" for r in members)  # the third never started
    assert all(project.metrics(r["id"])["rollout/true_return"][0] for r in members)  # what they did came back


def test_without_ray_the_engine_is_refused_in_one_sentence(project, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main(["sweep", "rollouts", "--project", str(project.folder), "--seeds", "0", "1", "--engine", "ray"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("error: The Ray engine needs Ray, which is not installed here: install the optional "
                                 "extra: pip install 'rlhf-workbench[ray]'.")
    assert project.runs() == []
    for job, flags, says in [("rollouts", ["--address", "auto"], "use it with --engine ray"),
                             ("label_pairs", ["--engine", "ray"], "brings runs back, not labels")]:
        assert main(["sweep", job, "--project", str(project.folder), "--seeds", "0", *flags]) == 2
        assert says in capsys.readouterr().err
    assert project.runs() == []
