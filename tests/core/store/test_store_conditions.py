"""Projects on a full disk, a read-only disk, with records a person damaged, or too large to check on
open: each gets a sentence, keeps what it had, and leaves nothing half-made."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from rlhf_core.store import CorruptProjectError, DiskFullError, Project, ReadOnlyProjectError
from rlhf_core.store import project as project_module
from rlhf_core.store.errors import friendly_db_error

from tests.conftest import ROOT


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {out.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A real 600 KB file system (tmpfs), unmounted afterwards."""
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    _mount(disk, "600k")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf_core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def _fill(project: Project) -> int:
    written = 0
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for i in range(10_000):
            project.add_prompt(f"{i} " + "words " * 200)
            written += 1
    return written


def test_a_full_disk_keeps_what_was_saved_and_says_so(small_disk):
    folder = small_disk / "full.rlhf"
    with Project.create(folder) as project:
        written = _fill(project)
        assert written > 10
        error = friendly_db_error(sqlite3.OperationalError("database or disk is full"), folder)
        assert isinstance(error, DiskFullError)
        assert str(error).startswith("The disk is full (0 MB free): nothing was saved")
    with Project.open(folder) as again:  # everything committed before the disk filled is there, undamaged
        assert again.counts()["prompts"] == written
        assert again.integrity_problems() == []
    # a new project on the full disk: a sentence, and no half-made folder left to look like a project
    with pytest.raises(DiskFullError, match=r"^The disk is full \(0 MB free\): nothing was saved"):
        Project.create(small_disk / "new.rlhf")
    assert sorted(p.name for p in small_disk.iterdir()) == ["full.rlhf"]
    out = _cli("new-project", small_disk / "cli.rlhf")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "The disk is full" in out.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == ["full.rlhf"]


_KILLED_WRITER = """
import os, sys
from rlhf_core.store import Project
p = Project.open(sys.argv[1])
p.add_prompt("written just before the kill")
os.kill(os.getpid(), 9)
"""


def test_opening_on_a_full_disk_after_a_crash_says_the_disk_is_full(small_disk):
    folder = small_disk / "crashed.rlhf"
    Project.create(folder).close()
    out = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(folder)], cwd=ROOT, capture_output=True)
    assert out.returncode == -9
    assert (folder / "project.db-wal").exists()  # the crash left its WAL behind, as a kill does
    (folder / "project.db-shm").unlink()  # nobody holds it any more; SQLite must make a new one on open
    filler = small_disk / "filler"
    with pytest.raises(OSError):
        filler.write_bytes(b"x" * 10_000_000)
    with pytest.raises(DiskFullError, match="The disk is full"):
        Project.open(folder)
    filler.unlink()
    with Project.open(folder) as project:  # space again: the crashed writer's prompt is there
        assert project.counts()["prompts"] == 1


def test_a_read_only_disk_is_named_not_called_damaged(small_disk):
    folder = small_disk / "ro.rlhf"
    with Project.create(folder) as project:
        project.add_prompt("kept")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(ReadOnlyProjectError, match="read-only"):
        Project.open(folder)
    out = _cli("info", folder)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and "damaged" not in out.stderr
    assert "read-only" in out.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_missing_project_record_and_unreadable_run_settings_still_open(tmp_path):
    folder = tmp_path / "edited.rlhf"
    with Project.create(folder) as project:
        run = project.create_run("x", {"a": 1}, status="completed")
        listed = project.create_run("y", {"a": 1}, status="completed")
        project.log_metrics(run, 0, {"k/v": 1.5})
        project.conn.execute("DELETE FROM project")
        project.conn.execute("PRAGMA ignore_check_constraints = ON")  # as a hand edit in a SQLite shell can
        project.conn.execute("UPDATE runs SET config_json='{not json', result_json='[1,' WHERE id=?", [run])
        project.conn.execute("UPDATE runs SET config_json='[1, 2]' WHERE id=?", [listed])
    with Project.open(folder) as project:
        assert project.name == "edited"  # the folder's name stands in for the missing record
        row = project.get_run(run)
        assert row["config"] == {} and row["result"] is None
        assert "could not be read" in row["config_error"]
        assert project.get_run(listed)["config"] == {} and "could not be read" in project.get_run(listed)["config_error"]
        assert [r["id"] for r in project.runs()] == [run, listed]
    info = _cli("info", folder)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout.splitlines()[-1])["name"] == "edited"
    metrics = _cli("metrics", folder, "--run", run)
    assert metrics.returncode == 0, metrics.stderr
    assert json.loads(metrics.stdout.splitlines()[-1])["metrics"]["k/v"]["values"] == [1.5]


def test_large_projects_open_without_the_full_check_and_are_checked_apart(tmp_path, monkeypatch):
    folder = tmp_path / "damaged.rlhf"
    with Project.create(folder) as p:
        for i in range(300):
            p.add_prompt("prompt %d " % i * 20)
        p.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db = folder / "project.db"
    data = bytearray(db.read_bytes())  # no connection is open: safe to touch the file directly
    for off in range(len(data) - 4096 * 6, len(data) - 4096, 4096 * 2):  # prompt pages, written last
        data[off: off + 200] = b"\xff" * 200
    db.write_bytes(bytes(data))
    monkeypatch.setattr(project_module, "QUICK_CHECK_MAX_BYTES", 0)  # "too large to check on open"
    with Project.open(folder) as project:  # the tables read on open are sound: it opens at once
        problems = project.integrity_problems()
    assert problems and problems != ["ok"]
    monkeypatch.setattr(project_module, "QUICK_CHECK_MAX_BYTES", 128 * 1024 * 1024)
    with pytest.raises(CorruptProjectError, match="damaged"):  # small enough: checked on open
        Project.open(folder)
