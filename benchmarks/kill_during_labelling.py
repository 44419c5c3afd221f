"""kill -9 while a person labels: every label the app acked is in the database, and it is intact.

Each run makes a fresh project of text pairs and starts a child process with the real text pair
view (offscreen Qt) and its label writer; the child presses a label key every few milliseconds and
prints ``ack <comparison id>`` when the writer has committed a label. The parent SIGKILLs the child
at a random moment, then checks that every acked label is in the database (live), that no queue
entry was answered twice, and ``PRAGMA integrity_check``. The JSON result is the last line.

    .venv/bin/python benchmarks/kill_during_labelling.py [--runs 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_project(folder: Path, prompts: int = 40, per_prompt: int = 4) -> None:
    from rlhf_core.store import Project
    from rlhf_core.labelers.text_labels import queue_response_pairs

    with Project.create(folder) as project:
        for p in range(prompts):
            pid = project.add_prompt(f"Prompt {p}")
            for r in range(per_prompt):
                project.add_item("response", prompt_id=pid, text=f"answer {r} to prompt {p}", model_id="bench",
                                 source="generated")
        queue_response_pairs(project, seed=0)


def child(folder: str, interval_ms: int) -> None:
    """Label the project's text pairs by key presses until killed (or the queue is empty)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from app.labeling.text_pair_view import TextPairView
    from app.settings import Settings
    from rlhf_core.store import Project

    app = QApplication([])
    project = Project.open(folder)
    view = TextPairView(Settings(str(Path(folder).parent / "settings.ini")))
    view.label_recorded.connect(lambda cid: print(f"ack {cid}", flush=True))
    view.set_project(project)
    view.show()
    keys = [Qt.Key.Key_Left, Qt.Key.Key_Right, Qt.Key.Key_Equal, Qt.Key.Key_B]
    rng = random.Random(0)

    def press() -> None:
        if view.current is not None:
            QTest.keyClick(view, rng.choice(keys))
        QTimer.singleShot(interval_ms, press)

    print("ready", flush=True)
    QTimer.singleShot(0, press)
    app.exec()


def check(folder: Path, acked: list[int]) -> dict:
    conn = sqlite3.connect(folder / "project.db")
    try:
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        live = {r[0] for r in conn.execute("SELECT id FROM comparisons WHERE deleted_at IS NULL")}
        doubles = conn.execute(
            "SELECT count(*) FROM (SELECT left_id, right_id FROM comparisons WHERE deleted_at IS NULL "
            "GROUP BY left_id, right_id HAVING count(*) > 1)").fetchone()[0]
    finally:
        conn.close()
    return {"lost": sum(1 for c in acked if c not in live), "integrity_ok": integrity == ["ok"],
            "stored": len(live), "doubles": doubles}


def one_run(tmp: Path, i: int, rng: random.Random, interval_ms: int) -> dict:
    folder = tmp / f"run{i}.rlhf"
    make_project(folder)
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(folder), "--interval-ms", str(interval_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    acked: list[int] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("ack "):
                acked.append(int(line.split()[1]))
            elif line.strip() == "ready":
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(60):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"run {i}: the labelling child never became ready (exit code {proc.returncode})")
    time.sleep(rng.uniform(0.05, 1.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(10)
    result = check(folder, list(acked))
    result["acked"] = len(acked)
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--interval-ms", type=int, default=5, help="time between two label keys in the child")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.interval_ms)
        return {}
    os.environ.setdefault("RLHF_WORKBENCH_HOME", tempfile.mkdtemp(prefix="wb-kill-home-"))
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    totals = {"runs": 0, "runs_with_acks": 0, "acked": 0, "lost": 0, "integrity_failures": 0, "double_labels": 0,
              "stored": 0}
    with tempfile.TemporaryDirectory(prefix="wb-kill-") as tmp:
        for i in range(args.runs):
            r = one_run(Path(tmp), i, rng, args.interval_ms)
            totals["runs"] += 1
            totals["acked"] += r["acked"]
            totals["runs_with_acks"] += r["acked"] > 0  # a run killed before its first ack checks nothing
            totals["lost"] += r["lost"]
            totals["stored"] += r["stored"]
            totals["double_labels"] += r["doubles"]
            totals["integrity_failures"] += 0 if r["integrity_ok"] else 1
            print(f"run {i + 1}: acked {r['acked']}, stored {r['stored']}, lost {r['lost']}, "
                  f"integrity {'ok' if r['integrity_ok'] else 'FAILED'}", flush=True)
    totals["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(totals), flush=True)
    return totals


if __name__ == "__main__":
    main()
