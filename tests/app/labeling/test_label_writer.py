"""The label writer: the GUI thread never waits on the write lock, a full disk is said in words and
loses nothing, a claimed pair is never labelled twice, and kill -9 loses no acked label."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from benchmarks import kill_during_labelling
from benchmarks.label_stall_under_writer import LOCKER
from tests.app.conftest import wait_saved

from tests.conftest import ROOT


def text_pairs(project, prompts=3, per_prompt=4):
    from rlhf_core.labelers.text_labels import queue_response_pairs

    for p in range(prompts):
        pid = project.add_prompt(f"Prompt {p}")
        for r in range(per_prompt):
            project.add_item("response", prompt_id=pid, text=f"answer {r} to {p}", model_id="t", source="generated")
    return queue_response_pairs(project, seed=0)


def test_label_keys_do_not_wait_while_another_process_holds_the_lock(qtbot, window):
    text_pairs(window.project)
    window.text_page.set_project(window.project)
    window.show_page("text")
    view = window.text_page.pairs
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(window.project.db_path), "1.0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        spent = []
        for key in (Qt.Key.Key_Left, Qt.Key.Key_Right, Qt.Key.Key_Equal, Qt.Key.Key_B, Qt.Key.Key_1):
            shown = view.current["id"]
            t0 = time.perf_counter()
            qtbot.keyClick(view, key)
            spent.append(time.perf_counter() - t0)
            assert view.current["id"] != shown  # the next pair is on screen at once
            qtbot.wait(50)
        assert max(spent) < 0.1, spent
        wait_saved(qtbot, timeout=30_000)
    finally:
        locker.kill()
        locker.wait()
    assert len(window.project.comparisons()) == 5
    assert view.progress_label.text() == "Labelled 5 · 13 waiting"


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")


def test_a_full_disk_is_said_in_words_and_the_pair_stays(qtbot, window, tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "4m")
    try:
        assert window.open_project(disk / "full.rlhf", create=True)
        text_pairs(window.project, prompts=2, per_prompt=3)
        window.text_page.set_project(window.project)
        window.show_page("text")
        view = window.text_page.pairs
        pair = view.current
        filler = disk / "filler"
        with open(filler, "wb") as fh:  # every byte the disk has left
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        qtbot.keyClick(view, Qt.Key.Key_Left)
        wait_saved(qtbot)
        assert view.message.text().startswith("The disk is full (") and "nothing was saved" in view.message.text()
        assert view.current == pair and window.project.comparisons() == []  # back on screen, still waiting
        assert pair["id"] in [p["id"] for p in window.project.pending_pairs(limit=100)]
        filler.unlink()
        qtbot.keyClick(view, Qt.Key.Key_Left)
        wait_saved(qtbot)
        comps = window.project.comparisons()
        assert [(c["left_id"], c["right_id"], c["outcome"]) for c in comps] == [
            (pair["left_id"], pair["right_id"], "left")]
        assert view.message.text() == ""
    finally:
        window.close()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_view_and_label_pairs_job_in_another_process_never_label_a_pair_twice(qtbot, filled_clips):
    window = filled_clips
    view = window.clip_page
    window.show_page("clips")
    project = window.project
    n = project.counts()["queued_pairs"]
    # the job labels slowly (as a teacher reading long clips would): the person labels meanwhile
    code = ("import sys, time\n"
            "import rlhf_core.labelers.label_pairs as lp\n"
            "from rlhf_core.jobs import RecordingContext, execute_job, get_job\n"
            "judge = lp.Teacher.label\n"
            "lp.Teacher.label = lambda *a, **k: (time.sleep(0.1), judge(*a, **k))[1]\n"
            "print('start', flush=True)\n"
            "out = execute_job(get_job('label_pairs'), lp.LabelPairsConfig(max_pairs=1000), RecordingContext(),"
            " project_path=sys.argv[1])\n"
            "import json; print(json.dumps(out.result), flush=True)\n")
    job = subprocess.Popen([sys.executable, "-c", code, str(project.folder)], stdout=subprocess.PIPE, text=True,
                           cwd=ROOT)
    try:
        assert job.stdout.readline().strip() == "start"
        qtbot.waitUntil(lambda: bool(project.comparisons(source="synthetic")), timeout=60_000)
        view.show_next()
        deadline = time.monotonic() + 120
        while view.current is not None or job.poll() is None:
            assert time.monotonic() < deadline, "the person and the job did not finish the queue in 120 s"
            if view.current is not None:
                qtbot.keyClick(view, Qt.Key.Key_Left)
            qtbot.wait(60)
            if view.current is None:
                view.show_next()
        result = json.loads(job.stdout.read().strip().splitlines()[-1])
    finally:
        job.kill()
        job.wait()
    wait_saved(qtbot)
    comps = project.comparisons()
    pairs = [(c["left_id"], c["right_id"]) for c in comps]
    assert len(pairs) == len(set(pairs)) == n  # every pair labelled once
    assert project.counts()["queued_pairs"] == 0
    people = sum(1 for c in comps if c["source"] == "human")
    assert people > 0 and result["labelled"] == n - people > 0
    assert result["labelled_by_others_meanwhile"] == people


@pytest.fixture
def filled_clips(window):
    from tests.app.labeling.test_labeling import fill

    fill(window.project, n_traj=3, pairs=30)
    window.open_project(window.project.folder)
    return window


def test_kill_during_labelling_loses_no_acked_label():
    totals = kill_during_labelling.main(["--runs", "3", "--seed", "1"])
    assert totals["runs"] == 3 and totals["acked"] > 0
    assert totals["lost"] == 0 and totals["integrity_failures"] == 0 and totals["double_labels"] == 0


_EXIT_WITH_A_WRITE_QUEUED = """
import sys, time
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.labeling.writer import writer_for
from rlhf_core.store import Project
project = Project.open(sys.argv[1])
def slow(p):
    time.sleep(0.5)
    return p.add_prompt("committed on the way out")
writer_for(project).submit(slow)
sys.exit(0)
"""


def test_a_write_handed_over_before_the_app_exits_is_committed(tmp_path):
    from rlhf_core.store import Project

    folder = tmp_path / "exit.rlhf"
    Project.create(folder).close()
    out = subprocess.run([sys.executable, "-c", _EXIT_WITH_A_WRITE_QUEUED, str(folder)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    with Project.open(folder) as project:
        assert [r["text"] for r in project.conn.execute("SELECT text FROM prompts")] == ["committed on the way out"]
