"""The reward-extrapolation demo over several seeds: median of each number (issue 4's targets).

    .venv/bin/python benchmarks/extrapolation.py --env Pendulum-v1 --seeds 0 1 2 [--method trex|drex]

Runs `python -m rlhf_core demo extrapolation` once per seed (one process each, one torch thread)
and prints a JSON object as its last line: the per-seed results and the medians.
Targets on Pendulum-v1: best demo <= -700, reward correlation >= 0.9 on unseen trajectories,
policy return >= -300, <= 60 s wall per run.
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
KEYS = ("best_demo_return", "mean_demo_return", "policy_return", "reward_correlation", "reward_spearman",
        "heldout_pair_accuracy", "wall_seconds", "bc_return")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--method", default="trex", choices=("trex", "drex"))
    parser.add_argument("extra", nargs="*", help="more demo flags, after --")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        cmd = [sys.executable, "-m", "rlhf_core", "demo", "extrapolation", "--env", args.env, "--seed", str(seed),
               "--method", args.method, *args.extra]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"seed {seed} failed")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"seed {seed}: " + ", ".join(f"{k}={runs[-1].get(k)}" for k in KEYS if k in runs[-1])
              + f", stage_seconds={runs[-1].get('stage_seconds')}", file=sys.stderr)
    median = {k: statistics.median(r[k] for r in runs) for k in KEYS if all(k in r and r[k] is not None for r in runs)}
    targets = {}
    if args.env == "Pendulum-v1":
        targets = {"best_demo_at_most_-700": median["best_demo_return"] <= -700,
                   "reward_correlation_at_least_0.9": median["reward_correlation"] >= 0.9,
                   "policy_at_least_-300": median["policy_return"] >= -300,
                   "wall_at_most_60s": median["wall_seconds"] <= 60}
    print(json.dumps({"benchmark": "extrapolation", "env": args.env, "method": args.method, "seeds": args.seeds,
                      "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                      "median": median, "targets_met": targets, "runs": runs}))


if __name__ == "__main__":
    main()
