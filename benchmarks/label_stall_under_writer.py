"""The GUI thread while another process keeps taking the project's write lock.

A child process loops ``BEGIN IMMEDIATE; sleep HOLD; COMMIT; sleep 50 ms`` on the project; the real
text pair view (offscreen Qt) gets a label key every 200 ms. Reported: the time spent inside each
key press (``key_ms``) and how late a 10 ms GUI timer came (``tick_late_ms``), p50/p95/max, then
how many labels were stored once the writes finished. The numbers before the label writer
(docs/reliability.md) came from a `git archive` of c3f8b74 with this file and
benchmarks/kill_during_labelling.py (its ``make_project``) copied in.

    .venv/bin/python benchmarks/label_stall_under_writer.py [--labels 30] [--hold 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("RLHF_WORKBENCH_HOME", tempfile.mkdtemp(prefix="wb-bench-home-"))

import numpy as np  # noqa: E402
from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.labeling.text_pair_view import TextPairView  # noqa: E402
from app.settings import Settings  # noqa: E402
from benchmarks.kill_during_labelling import make_project  # noqa: E402
from benchmarks.lateness import run_ticking  # noqa: E402
from rlhf_core.store import Project  # noqa: E402

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
hold = float(sys.argv[2])
first = True
while True:
    conn.execute("BEGIN IMMEDIATE")
    if first:
        print("locked", flush=True)
        first = False
    time.sleep(hold)
    conn.execute("COMMIT")
    time.sleep(0.05)
"""


def start_locker(db_path: Path, hold: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(db_path), str(hold)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def pct(values) -> dict:
    a = np.asarray(values, dtype=float)
    return {"p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1),
            "max": round(float(a.max()), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=int, default=30)
    ap.add_argument("--hold", type=float, default=0.5, help="seconds the other process holds the lock each time")
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="wb-stall-"))
    make_project(tmp / "p.rlhf", prompts=10)
    project = Project.open(tmp / "p.rlhf")
    view = TextPairView(Settings(str(tmp / "settings.ini")))
    view.resize(1000, 700)
    view.set_project(project)
    view.show()
    app.processEvents()
    locker = start_locker(project.db_path, args.hold)
    key_ms: list[float] = []
    keys = [Qt.Key.Key_Left, Qt.Key.Key_Right, Qt.Key.Key_Equal]

    def press() -> None:
        if len(key_ms) >= args.labels:
            return
        t0 = time.perf_counter()
        QTest.keyClick(view, keys[len(key_ms) % 3])
        key_ms.append((time.perf_counter() - t0) * 1000)
        QTimer.singleShot(200, press)

    try:
        late, wall = run_ticking(start=press, done=lambda: len(key_ms) >= args.labels)
        t0 = time.perf_counter()
        try:
            from app.labeling.writer import pending_writes

            run_ticking(done=lambda: pending_writes() == 0)
        except ImportError:  # a tree from before the label writer: every label was written in the key press
            pass
        drain_s = time.perf_counter() - t0
    finally:
        locker.kill()
        locker.wait()
    stored = project.conn.execute("SELECT count(*) FROM comparisons WHERE deleted_at IS NULL").fetchone()[0]
    print(json.dumps({"labels": args.labels, "hold_s": args.hold, "key_ms": pct(key_ms),
                      "tick_late_ms": pct(late), "wall_s": round(wall, 2), "drain_s": round(drain_s, 2),
                      "stored": stored}))


if __name__ == "__main__":
    main()
