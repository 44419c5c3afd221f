"""Copying a finished run between projects (rlhf_core.store.run_copy): real jobs in a real source project, copied
into a target that already has rows of its own, so every id and run folder changes on the way."""

from __future__ import annotations

import json
import sqlite3

import pytest

from rlhf_core.envs.storage import load_arrays
from rlhf_core.jobs import NullContext, execute_job
from rlhf_core.registry import get_job
from rlhf_core.store import Project
from rlhf_core.store.model_card import ModelCard, read_card_header
from rlhf_core.store.run_copy import RunCopyError, SharedIds, copy_run, export_run, import_run
from rlhf_core import config as cfg


def _run(project: Project, job: str, **settings) -> int:
    spec = get_job(job)
    config = cfg.from_dict(spec.config_class(), settings)
    outcome = execute_job(spec, config, NullContext(), project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    return outcome.run_id


def _busy_target(tmp_path) -> Project:
    """A target whose next ids are not the source's: a run, a trajectory and a checkpoint name already there."""
    target = Project.create(tmp_path / "target.rlhf")
    for _ in range(3):
        run = target.create_run("rollouts", {}, status="running")
        target.finish_run(run, "completed")
    target.add_item("trajectory", run_id=run, env_id="CartPole-v1", length=1, true_return=1.0)
    target.add_checkpoint(run, "reward_mlp", "checkpoints/elsewhere.pt")
    target.conn.execute("UPDATE checkpoints SET name = 'best' WHERE run_id = ?", [run])
    return target


def test_a_run_is_copied_with_its_rows_files_and_references(project, tmp_path):
    rollouts = _run(project, "rollouts", env_id="CartPole-v1", episodes=2, seed=3, clips_per_trajectory=2,
                    queue_pairs=2, max_steps=40)
    reward = _run(project, "synthetic_preferences", steps=3, n_pairs=40, seed=1)
    ckpt = project.checkpoints(reward)[0]
    project.conn.execute("UPDATE checkpoints SET name = 'best' WHERE id = ?", [ckpt["id"]])
    folder = project.run_folder(reward)  # a model card and a resumable state name the run and its checkpoints
    ModelCard(job="synthetic_preferences", config={}, run_id=reward, project=project.name).write(folder)
    (folder / "resume" / "state").mkdir(parents=True)
    (folder / "resume" / "state" / "state.json").write_text(json.dumps({"step": 3, "checkpoints": [ckpt["id"]]}))
    target = _busy_target(tmp_path)
    try:
        new = copy_run(project, rollouts, target)
        assert new != rollouts
        old_run, new_run = project.get_run(rollouts), target.get_run(new)
        for key in ("kind", "status", "config", "started_at", "finished_at"):
            assert new_run[key] == old_run[key]
        assert target.metrics(new) == project.metrics(rollouts)
        old_trajs, new_trajs = project.run_items(rollouts, "trajectory"), target.run_items(new, "trajectory")
        assert [t["true_return"] for t in new_trajs] == [t["true_return"] for t in old_trajs]
        assert new_run["result"]["trajectories"] == [t["id"] for t in new_trajs]
        assert new_run["result"]["clips"] == old_run["result"]["clips"]  # a count stays a count
        for old, copied in zip(old_trajs, new_trajs):
            assert target.abspath(copied["media_path"]).read_bytes() == project.abspath(old["media_path"]).read_bytes()
            assert (load_arrays(target, copied)["rewards"] == load_arrays(project, old)["rewards"]).all()
        clips = target.run_items(new, "clip")
        assert len(clips) == len(project.run_items(rollouts, "clip")) >= 2
        assert {c["parent_id"] for c in clips} == {t["id"] for t in new_trajs}
        assert all(json.loads(c["params_json"])["trajectory"] == c["parent_id"] for c in clips)
        queue = target.run_queue(new)
        assert len(queue) == len(project.run_queue(rollouts)) >= 1
        assert {q["left_id"] for q in queue} | {q["right_id"] for q in queue} <= {c["id"] for c in clips}

        copied = copy_run(project, reward, target)
        [new_ckpt] = target.checkpoints(copied)
        assert new_ckpt["path"] == f"checkpoints/run-{copied:05d}/reward_mlp.pt"
        assert target.abspath(new_ckpt["path"]).read_bytes() == project.abspath(ckpt["path"]).read_bytes()
        assert new_ckpt["name"] == f"best (run {copied})"  # the target's own 'best' stays
        assert target.get_run(copied)["result"]["checkpoint"] == new_ckpt["path"]
        header = read_card_header(target.run_folder(copied))
        assert header["rlhf_workbench"]["run_id"] == copied
        state = json.loads((target.run_folder(copied) / "resume" / "state" / "state.json").read_text())
        assert state == {"step": 3, "checkpoints": [new_ckpt["id"]]}
        assert target.samples(copied) == [] and len(target.metrics(copied)) == len(project.metrics(reward))
    finally:
        target.close()


def test_references_outside_the_run_are_refused_and_a_failed_copy_leaves_nothing(project, tmp_path):
    maker = project.create_run("rollouts", {}, status="running")
    trajectory = project.add_item("trajectory", run_id=maker, env_id="CartPole-v1", length=2, true_return=2.0)
    project.finish_run(maker, "completed")
    cutter = project.create_run("rollouts", {}, status="running")
    project.add_item("clip", parent_id=trajectory, run_id=cutter, env_id="CartPole-v1", length=1)
    with pytest.raises(RunCopyError, match="is still running"):
        export_run(project, cutter)
    project.finish_run(cutter, "completed")
    with pytest.raises(RunCopyError, match=f"comes from item {trajectory}, which another run made"):
        export_run(project, cutter)
    with pytest.raises(RunCopyError, match="no run 999"):
        export_run(project, 999)
    shared = export_run(project, cutter, shared=SharedIds(items=trajectory))  # a target that has that trajectory
    assert [i["parent_id"] for i in shared.rows["items"]] == [trajectory]

    target = _busy_target(tmp_path)
    try:
        reward = _run(project, "synthetic_preferences", steps=2, n_pairs=40, seed=0)
        bundle = export_run(project, reward)
        for path in bundle.files.values():
            path.unlink()  # the file went away between export and import: the import fails as a whole
        state = lambda: (len(target.runs()), len(target.items()), sorted(  # noqa: E731
            str(p.relative_to(target.folder)) for p in target.folder.rglob("*") if "locks" not in p.parts))
        before = state()
        with pytest.raises(FileNotFoundError):
            import_run(target, bundle)
        assert state() == before
        shared.rows["items"][0]["parent_id"] = 10**6  # a trajectory the bundle says the target has: it has not
        with pytest.raises(sqlite3.IntegrityError):
            import_run(target, shared)  # the run row went in first: the transaction takes it back
        assert state() == before
    finally:
        target.close()
