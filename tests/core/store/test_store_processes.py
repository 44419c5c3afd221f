"""Several processes on one project: the live WAL and run leases survive other openers.

On Linux, closing any file descriptor of a database drops every POSIX lock the process holds on it,
SQLite's included; another process then believes it is the last user and deletes the live -wal/-shm.
These tests open the project the ways the app, its jobs and the CLI do, with real processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rlhf_core.store import Project, run_leases

from tests.conftest import ROOT

_COUNT = """
import sqlite3, sys
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(conn.execute("SELECT count(*) FROM prompts").fetchone()[0])
conn.close()
"""

_OPEN_CLOSE = """
import json, sys
from rlhf_core.store import Project, run_leases
with Project.open(sys.argv[1]) as p:
    alive = {r: run_leases.is_alive(p.folder, r) for r in map(int, sys.argv[2:])}
    marked = p.mark_interrupted_runs()
print(json.dumps({"alive": alive, "marked": marked}))
"""


def _python(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf_core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_the_live_wal_survives_other_openers_in_this_and_other_processes(tmp_path):
    folder = tmp_path / "shared.rlhf"
    Project.create(folder).close()
    app = Project.open(folder)  # the app's live connection
    try:
        app.add_prompt("written before anyone else opened it")
        wal, shm = folder / "project.db-wal", folder / "project.db-shm"
        assert wal.exists() and shm.exists()
        run = app.create_run("live", status="running")
        # a job in the app's process opens and closes the project (it checks the file as it opens)
        Project.open(folder).close()
        with Project.open(folder, check=False) as job:
            job.add_prompt("written by a job of the app")
        # another process opens and closes it: the CLI's `info`, and a script that also asks about leases
        assert _cli("info", folder).returncode == 0
        seen = json.loads(_python(_OPEN_CLOSE, folder, run).splitlines()[-1])
        assert seen == {"alive": {str(run): True}, "marked": 0}
        assert wal.exists() and shm.exists(), "another process deleted the live WAL"
        for i in range(20):  # the app goes on writing
            app.add_prompt(f"written after the others closed it {i}")
        assert int(_python(_COUNT, folder / "project.db")) == 22  # a third process sees every write
        assert app.get_run(run)["status"] == "running"
        assert run_leases.is_alive(folder, run) and run_leases.lock_path(folder, run).exists()
    finally:
        app.close()
    # after the last connection closes everything is in the database file itself
    assert int(_python(_COUNT, folder / "project.db")) == 22
    with Project.open(folder) as again:
        assert again.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_lease_survives_another_process_asking_about_it(tmp_path):
    folder = tmp_path / "leases.rlhf"
    with Project.create(folder) as app:
        run = app.create_run("held", status="running")
        for _ in range(3):
            seen = json.loads(_python(_OPEN_CLOSE, folder, run).splitlines()[-1])
            assert seen == {"alive": {str(run): True}, "marked": 0}
        assert app.get_run(run)["status"] == "running"
