"""How long opening a large project takes, with and without the on-open integrity check.

A real project is filled with ``--gigabytes`` of metric rows (the table that grows largest: a long
run logs tens of keys per step), closed, and then opened ``--repeats`` times each way in the same
process, alternating: ``Project.open`` as the app and the CLI call it, and the full ``quick_check``
that older versions ran on every open (``Project.integrity_problems``, which the app now runs in the
background for projects larger than ``QUICK_CHECK_MAX_BYTES``). Page cache warm (the file was just
written): a cold disk is slower still for the full check.

    .venv/bin/python benchmarks/open_large_project.py [--gigabytes 1.0] [--repeats 3] [--keep DIR]

Prints a JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlhf_core.store import Project  # noqa: E402
from rlhf_core.store.project import QUICK_CHECK_MAX_BYTES  # noqa: E402


def fill(folder: Path, gigabytes: float) -> int:
    with Project.create(folder) as project:
        run = project.create_run("benchmark", status="running")
        keys = [f"train/key_{k:02d}" for k in range(40)]
        step = 0
        db = folder / "project.db"
        while os.path.getsize(db) + os.path.getsize(folder / "project.db-wal") < gigabytes * 1e9:
            project.log_metric_rows(run, [(s, {k: s * 0.5 for k in keys}, None) for s in range(step, step + 5000)])
            step += 5000
            if step % 100_000 == 0:
                project.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        project.finish_run(run, "completed")
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gigabytes", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="build the project here (reused if it exists)")
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="open-large-"))
    folder = base / "large.rlhf"
    t0 = time.perf_counter()
    steps = fill(folder, args.gigabytes) if not folder.exists() else None
    fill_s = time.perf_counter() - t0
    size = os.path.getsize(folder / "project.db")
    opens, checks = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        project = Project.open(folder)
        opens.append(time.perf_counter() - t)
        t = time.perf_counter()
        problems = project.integrity_problems()
        checks.append(time.perf_counter() - t)
        project.close()
        assert problems == [], problems
    result = {
        "benchmark": "open_large_project", "db_bytes": size, "metric_steps_written": steps,
        "fill_s": round(fill_s, 1), "quick_check_max_bytes": QUICK_CHECK_MAX_BYTES,
        "open_s_median": round(statistics.median(opens), 4), "open_s_max": round(max(opens), 4),
        "full_quick_check_s_median": round(statistics.median(checks), 3),
        "ratio_open_vs_full_check": round(statistics.median(opens) / statistics.median(checks), 4),
        "repeats": args.repeats,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
