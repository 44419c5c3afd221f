"""The reward-extrapolation demo over several seeds: median of each number (issue 4's targets).

    .venv/bin/python benchmarks/extrapolation.py --env Pendulum-v1 --seeds 0 1 2 [--method trex|drex]
        [--ranking true_return|checkpoint] [--workers 1] [--threads 1] [--engine local|ray [--address ADDR]]
        [--project P] [-- NAME=VALUE ...]

The seeds run as one sweep of the `extrapolation_demo` job (rlhf_core/sweeps.py: worker processes, or Ray
tasks with --engine ray), by default one run at a time with one torch thread, so that each run's wall time
is its own. The sweep and its member runs are kept in --project (default: a temporary project, removed).
Prints a JSON object as its last line: the per-seed results (in seed order), their medians and the sweep's
aggregate (IQM and mean with bootstrap 95 % intervals per number).
Targets on Pendulum-v1 (T-REX ranked by true return): best demo <= -700, reward correlation >= 0.9 on
unseen trajectories, policy return >= -300, <= 60 s wall per run. D-REX (any env): noise-curve Spearman
<= -0.9, policy beats the demonstrator's mean and BC, reward correlation >= 0.7 (medians). T-REX on
HalfCheetah-v5: every seed's policy beats its best demo, reward correlation >= 0.9 (median), <= 15 min per run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlhf_core.analysis.aggregate import summarise  # noqa: E402
from rlhf_core.jobs import CliContext, execute_job  # noqa: E402
from rlhf_core.store import Project  # noqa: E402
from rlhf_core.sweeps import SWEEP_KIND, SweepConfig, parse_grid, run_sweep  # noqa: E402

KEYS = ("best_demo_return", "mean_demo_return", "policy_return", "reward_correlation", "reward_spearman",
        "heldout_pair_accuracy", "wall_seconds", "bc_return", "demonstrator_mean_return", "noise_curve_spearman",
        "demonstrator_step", "n_demos")


def run_seeds(job: str, seeds: list[int], settings: dict, *, project: Path | None, workers: int, threads: int,
              engine: str = "local", address: str = "", title: str = "") -> tuple[list[dict], dict]:
    """One sweep of ``job`` over ``seeds``: the member runs' results in seed order, and the sweep's result."""
    folder = project or Path(tempfile.mkdtemp(prefix="bench-")) / "sweep.rlhf"
    try:
        if not (folder / "project.db").exists():
            Project.create(folder).close()
        config = SweepConfig(job=job, seeds=seeds, settings=settings, workers=workers, threads=threads,
                             engine=engine, address=address)
        outcome = execute_job(run_sweep, config, CliContext(title=title or f"{job} sweep"), project_path=folder,
                              kind=SWEEP_KIND)
        if outcome.status != "completed":
            raise SystemExit(f"the sweep {outcome.status}: {outcome.message or outcome.error}")
        with Project.open(folder) as p:
            members = [p.get_run(r) for g in outcome.result["groups"] for r in g["runs"]]
        failed = [m for m in members if m["status"] != "completed"]
        if failed:
            print((failed[0]["error"] or "")[-3000:], file=sys.stderr)
            raise SystemExit(f"seed {failed[0]['config'].get('seed')} {failed[0]['status']}")
        members.sort(key=lambda m: (m["config"].get("seed"), m["id"]))
        return members, outcome.result
    finally:
        if project is None:
            shutil.rmtree(folder.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--method", default="trex", choices=("trex", "drex"))
    parser.add_argument("--ranking", default="true_return", choices=("true_return", "checkpoint"),
                        help="trex: rank the demos by true return or by learner checkpoint.")
    parser.add_argument("--workers", type=int, default=1, help="Runs at once (default 1: each run's wall is its own).")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per run (default 1).")
    parser.add_argument("--engine", default="local", choices=("local", "ray"))
    parser.add_argument("--address", default="", help="--engine ray: the cluster (default: a local Ray).")
    parser.add_argument("--project", type=Path, default=None, help="Keep the sweep in this project.")
    parser.add_argument("extra", nargs="*", help="more demo settings as NAME=VALUE, after --")
    args = parser.parse_args()
    settings = {k: v[-1] for k, v in parse_grid(args.extra).items()}
    settings.update(env_id=args.env, method=args.method, ranking=args.ranking)
    members, sweep = run_seeds("extrapolation_demo", args.seeds, settings, project=args.project,
                               workers=args.workers, threads=args.threads, engine=args.engine, address=args.address,
                               title="extrapolation")
    runs = [{"seed": m["config"]["seed"], "run_id": m["id"], **(m["result"] or {})} for m in members]
    for run in runs:
        print(f"seed {run['seed']}: " + ", ".join(f"{k}={run.get(k)}" for k in KEYS if k in run)
              + f", stage_seconds={run.get('stage_seconds')}", file=sys.stderr)
    complete = [k for k in KEYS if all(k in r and r[k] is not None for r in runs)]
    median = {k: statistics.median(r[k] for r in runs) for k in complete}
    aggregate = {k: summarise([r[k] for r in runs]).as_dict() for k in complete}
    targets = {}
    if args.method == "drex" and {"noise_curve_spearman", "bc_return", "demonstrator_mean_return"} <= set(median):
        targets = {"noise_curve_spearman_at_most_-0.9": median["noise_curve_spearman"] <= -0.9,
                   "policy_beats_demonstrator": median["policy_return"] > median["demonstrator_mean_return"],
                   "policy_beats_bc": median["policy_return"] > median["bc_return"],
                   "reward_correlation_at_least_0.7": median["reward_correlation"] >= 0.7,
                   "every_seed_beats_demonstrator_and_bc": all(
                       r["policy_return"] > max(r["demonstrator_mean_return"], r["bc_return"]) for r in runs)}
    elif args.env == "HalfCheetah-v5" and {"best_demo_return", "reward_correlation", "policy_return"} <= set(median):
        targets = {"every_seed_beats_best_demo": all(r["policy_return"] > r["best_demo_return"] for r in runs),
                   "reward_correlation_at_least_0.9": median["reward_correlation"] >= 0.9,
                   "wall_at_most_15min": all(r["wall_seconds"] <= 900 for r in runs)}
    elif args.env == "Pendulum-v1" and {"best_demo_return", "reward_correlation", "policy_return"} <= set(median):
        targets = {"best_demo_at_most_-700": median["best_demo_return"] <= -700,
                   "reward_correlation_at_least_0.9": median["reward_correlation"] >= 0.9,
                   "policy_at_least_-300": median["policy_return"] >= -300,
                   "wall_at_most_60s": median["wall_seconds"] <= 60}
    print(json.dumps({"benchmark": "extrapolation", "env": args.env, "method": args.method, "ranking": args.ranking,
                      "seeds": args.seeds,
                      "engine": args.engine, "machine": f"{platform.machine()} {os.cpu_count()} cores, Python "
                      f"{platform.python_version()}", "median": median, "aggregate": aggregate,
                      "targets_met": targets, "runs": runs, "sweep_members": sweep["members"]}))


if __name__ == "__main__":
    main()
