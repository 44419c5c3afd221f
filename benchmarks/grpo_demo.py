"""The GRPO demo over several seeds: the median of each headline number (issue 5's target).

    .venv/bin/python benchmarks/grpo_demo.py [--seeds 0 1 2] [-- --steps 60 --threads 2 ...]

Runs ``python -m rlhf_core demo grpo --seed S`` once per seed (one process each, one after the
other; extra flags after ``--`` go to every run) and prints a JSON object as its last line: the
per-seed results and the medians. Target (2 CPU cores, a quiet machine): the mean reward clearly
rises (``reward_last`` - ``reward_first`` >= 0.1, both means over 5 steps) within 15 minutes of wall
time per run (``wall_seconds`` <= 900, model loading and the held-out evaluations included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("reward_first", "reward_last", "reward_step_first", "reward_step_last", "kl_last", "mean_length_first",
        "mean_length_last", "gold_accuracy_first", "gold_accuracy_last", "gold_format_first", "gold_format_last",
        "seconds_per_step", "wall_seconds", "peak_rss_mb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("extra", nargs="*", help="more demo flags, after --")
    args = parser.parse_args()
    runs = []
    load_before = os.getloadavg()[0]
    for seed in args.seeds:
        cmd = [sys.executable, "-m", "rlhf_core", "demo", "grpo", "--seed", str(seed), *args.extra]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"seed {seed} failed")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"seed {seed}: " + ", ".join(f"{k}={runs[-1].get(k)}" for k in KEYS if k in runs[-1]), file=sys.stderr)
    median = {k: statistics.median(r[k] for r in runs) for k in KEYS if all(r.get(k) is not None for r in runs)}
    rise = [r["reward_last"] - r["reward_first"] for r in runs]
    median["reward_rise"] = statistics.median(rise)
    targets = {"reward_rises_by_0.1": median["reward_rise"] >= 0.1,
               "wall_at_most_900s": median["wall_seconds"] <= 900}
    print(json.dumps({"benchmark": "grpo_demo", "seeds": args.seeds, "flags": args.extra,
                      "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                      "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                      "median": median, "targets_met": targets, "runs": runs}))


if __name__ == "__main__":
    main()
