"""The project store: creation, labels, undo, rankings, runs, and refusing bad files."""

import hashlib
import shutil
import sqlite3
import threading

import pytest

from rlhf_core.store import (
    CorruptProjectError,
    NotAProjectError,
    Project,
    ProjectError,
    copy_project,
    expand_ranking,
)

from tests.conftest import ROOT


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_create_makes_folder_layout(tmp_path):
    with Project.create(tmp_path / "a.rlhf") as p:
        assert p.name == "a"
        assert p.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert p.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert {x.name for x in (tmp_path / "a.rlhf").iterdir()} >= {"project.db", "media", "checkpoints", "artifacts"}


def test_create_refuses_non_empty_folder_and_existing_project(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ProjectError, match="not empty"):
        Project.create(tmp_path / "busy")
    assert [x.name for x in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    Project.create(tmp_path / "p.rlhf").close()
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(tmp_path / "p.rlhf")


def test_label_is_committed_immediately_and_visible_to_other_connections(project):
    a, b = project.add_item("trajectory", env_id="CartPole-v1"), project.add_item("trajectory", env_id="CartPole-v1")
    you = project.ensure_labeller("you")
    cid = project.add_comparison(a, b, "left", labeller_id=you, response_ms=850)
    # a second, independent connection (as after a crash) sees it at once
    other = sqlite3.connect(project.db_path)
    row = other.execute("SELECT left_id, right_id, outcome, response_ms, source FROM comparisons WHERE id=?", [cid]).fetchone()
    other.close()
    assert row == (a, b, "left", 850, "human")


@pytest.mark.parametrize("bad", [{"outcome": "maybe"}, {"source": "robot"}])
def test_comparison_rejects_bad_values(project, bad):
    a, b = project.add_item("trajectory"), project.add_item("trajectory")
    kwargs = {"outcome": "left", **bad}
    outcome = kwargs.pop("outcome")
    with pytest.raises(ValueError):
        project.add_comparison(a, b, outcome, **kwargs)
    with pytest.raises(ValueError):
        project.add_comparison(a, a, "left")
    with pytest.raises(ValueError):
        project.add_comparison(a, 999, "left")  # foreign key
    assert project.comparisons(include_deleted=True) == []


def test_undo_is_soft_and_edit_supersedes(project):
    a, b = project.add_item("trajectory"), project.add_item("trajectory")
    q = project.enqueue_pair(a, b, priority=1.0)
    cid = project.add_comparison(a, b, "left", queue_id=q)
    assert project.pending_pairs() == []
    project.undo_comparison(cid)
    assert project.comparisons() == []
    kept = project.comparisons(include_deleted=True)
    assert len(kept) == 1 and kept[0]["deleted_at"] is not None  # the fact is kept
    assert [p["id"] for p in project.pending_pairs()] == [q]  # the pair is back in the queue
    c2 = project.add_comparison(a, b, "tie", queue_id=q)
    c3 = project.edit_comparison(c2, "right")
    live = project.comparisons()
    assert [(c["id"], c["outcome"], c["supersedes_id"]) for c in live] == [(c3, "right", c2)]
    assert len(project.comparisons(include_deleted=True)) == 3


def test_ranking_expands_to_k_choose_2_pairs(project):
    ids = [project.add_item("trajectory", true_return=float(i)) for i in range(4)]
    # worst -> best, items 1 and 2 tied
    rid = project.add_ranking([[ids[0]], [ids[1], ids[2]], [ids[3]]], source="synthetic")
    pairs = {(c["left_id"], c["right_id"], c["outcome"]) for c in project.comparisons() if c["ranking_id"] == rid}
    assert len(pairs) == 6
    assert (ids[1], ids[2], "tie") in pairs
    assert (ids[0], ids[3], "right") in pairs
    assert project.ranking_groups(rid) == [[ids[0]], [ids[1], ids[2]], [ids[3]]]
    project.undo_ranking(rid)
    assert project.comparisons() == []


def test_expand_ranking_validates():
    assert expand_ranking([[1], [2]]) == [(1, 2, "right")]
    with pytest.raises(ValueError):
        expand_ranking([[1], [1]])
    with pytest.raises(ValueError):
        expand_ranking([[1]])


def test_items_constraints(project):
    with pytest.raises(ValueError):
        project.add_item("clip")  # a clip needs its trajectory
    t = project.add_item("trajectory", env_id="Pendulum-v1", seed=3, true_return=-700.5, meta={"policy": "random"})
    c = project.add_item("clip", parent_id=t, start_step=10, end_step=60)
    pid = project.add_prompt("Explain RL to a 6 year old", category="helpfulness", tags=["lecture"])
    r = project.add_item("response", prompt_id=pid, text="<b>not html</b>", model_id="tiny")
    assert project.get_item(c)["parent_id"] == t
    assert project.get_item(r)["text"] == "<b>not html</b>"
    assert project.counts()["trajectories"] == 1 and project.counts()["clips"] == 1


def test_runs_metrics_samples_and_interrupted(project):
    worker = Project.open(project.folder, check=False)  # the connection a job works through
    run = worker.create_run("x", {"lr": 0.1})
    worker.start_run(run)
    worker.log_metrics(run, 0, {"a/loss": 1.0, "a/acc": 0.5})
    worker.log_metrics(run, 1, {"a/loss": 0.5})
    worker.add_sample(run, "text", {"completion": "hi"}, step=1)
    assert project.metrics(run) == {"a/acc": ([0], [0.5]), "a/loss": ([0, 1], [1.0, 0.5])}
    assert project.samples(run)[0]["payload"] == {"completion": "hi"}
    assert project.mark_interrupted_runs() == 0  # its connection is open: the run is alive
    assert project.get_run(run)["status"] == "running"
    worker.close()  # gone without finishing the run
    assert project.mark_interrupted_runs() == 1
    r = project.get_run(run)
    assert r["status"] == "failed" and "Interrupted" in r["error"] and r["config"] == {"lr": 0.1}
    assert not (project.folder / "locks" / f"run-{run}.lock").exists()



def test_run_items_newest_row_ids_and_read_snapshot(project):
    run, other = project.create_run("x"), project.create_run("y")
    prompt = project.add_prompt("p")
    mine = [project.add_item("trajectory", run_id=run),
            project.add_item("response", run_id=run, prompt_id=prompt, text="a")]
    project.add_item("trajectory", run_id=other)
    assert [i["id"] for i in project.run_items(run, "trajectory")] == mine[:1]
    assert [i["text"] for i in project.run_items(run, "response")] == ["a"]
    assert project.newest_row_ids() == (0, 0)
    writer = Project.open(project.folder, check=False)
    writer.log_metrics(run, 0, {"a/loss": 1.0})
    with project.read_snapshot():
        first = project.newest_row_ids()
        writer.log_metrics(run, 1, {"a/loss": 0.5})
        writer.add_sample(run, "text", {"completion": "hi"})
        assert project.newest_row_ids() == first  # one snapshot: later writes are not seen inside
    assert first[1] == 0 and project.newest_row_ids() == (first[0] + 1, 1)
    assert not project.conn.in_transaction
    writer.close()

_HOLDER = """
import sys, time
from rlhf_core.store import Project
p = Project.open(sys.argv[1], check=False)
queued = p.create_run("queued-elsewhere")
running = p.create_run("running-elsewhere")
p.start_run(running)
done = p.create_run("finished-elsewhere")
p.start_run(done)
p.finish_run(done, "completed")
print(queued, running, done, flush=True)
time.sleep(600)
"""


def test_runs_of_another_live_process_are_not_marked_interrupted_until_it_is_killed(project, tmp_path):
    """The app opening a project while `python -m rlhf_core` trains in it used to mark that run failed."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), str(project.folder)], stdout=subprocess.PIPE, text=True,
                            cwd=str(ROOT))
    try:
        queued, running, done = map(int, proc.stdout.readline().split())
        assert project.mark_interrupted_runs() == 0
        assert [project.get_run(r)["status"] for r in (queued, running, done)] == ["queued", "running", "completed"]
        assert sorted(p.name for p in (project.folder / "locks").iterdir()) == [f"run-{queued}.lock",
                                                                                 f"run-{running}.lock"]
    finally:
        proc.send_signal(signal.SIGKILL)  # no finally blocks, no clean-up: like a crash
        proc.wait(30)
    assert project.mark_interrupted_runs() == 2
    assert [project.get_run(r)["status"] for r in (queued, running, done)] == ["failed", "failed", "completed"]
    assert list((project.folder / "locks").iterdir()) == []


def test_one_connection_per_thread(project):
    """A worker thread opens its own connection; WAL lets the GUI connection read meanwhile."""
    run = project.create_run("x")
    errors = []

    def worker():
        try:
            with Project.open(project.folder, check=False) as mine:
                for step in range(50):
                    mine.log_metrics(run, step, {"k/v": step})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    while t.is_alive():
        project.metrics(run)
    t.join()
    assert errors == []
    assert project.metrics(run)["k/v"][0] == list(range(50))
    with pytest.raises(sqlite3.ProgrammingError):  # sqlite3 forbids sharing a connection
        _use_in_thread(project)


def _use_in_thread(project):
    box = []

    def use():
        try:
            project.counts()
        except sqlite3.ProgrammingError as exc:
            box.append(exc)

    t = threading.Thread(target=use)
    t.start()
    t.join()
    raise box[0]


def test_open_refuses_things_that_are_not_projects(tmp_path):
    with pytest.raises(NotAProjectError, match="does not exist"):
        Project.open(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotAProjectError, match="no project.db"):
        Project.open(empty)
    assert list(empty.iterdir()) == []  # nothing was created
    other = tmp_path / "other"
    other.mkdir()
    conn = sqlite3.connect(other / "project.db")
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    before = _digest(other)
    with pytest.raises(NotAProjectError, match="not a workbench project"):
        Project.open(other)
    assert _digest(other) == before


def test_open_refuses_corrupt_database_and_leaves_it_untouched(tmp_path):
    folder = tmp_path / "broken.rlhf"
    Project.create(folder).close()
    (folder / "project.db").write_bytes(b"this is not sqlite at all" * 100)
    before = _digest(folder)
    with pytest.raises(CorruptProjectError, match="not an SQLite database"):
        Project.open(folder)
    assert _digest(folder) == before


def test_open_refuses_damaged_pages(tmp_path):
    folder = tmp_path / "damaged.rlhf"
    with Project.create(folder) as p:
        a = p.add_item("trajectory")
        for i in range(300):
            p.add_prompt("prompt %d " % i * 20)
        p.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert a
    db = folder / "project.db"
    data = bytearray(db.read_bytes())
    page = 4096
    for off in range(page * 2, len(data) - page, page * 3):  # scribble over some pages (header kept)
        data[off: off + 200] = b"\xff" * 200
    db.write_bytes(bytes(data))
    before = _digest(folder)
    with pytest.raises(CorruptProjectError):
        Project.open(folder)
    assert _digest(folder) == before


def test_copy_project_includes_uncheckpointed_data(tmp_path, project):
    a, b = project.add_item("trajectory"), project.add_item("trajectory")
    project.add_comparison(a, b, "right")
    dst = copy_project(project.folder, tmp_path / "copy.rlhf")
    with Project.open(dst) as copy:
        assert [c["outcome"] for c in copy.comparisons()] == ["right"]
    shutil.rmtree(dst)
