"""Label efficiency of online preference RL: random vs active (ensemble-disagreement) queries.

A simulated oracle labels clips online (rlhf_core/trainers/control/preference_rl.py). For each selection
rule we record, round by round, the labels used so far and the agent's TRUE return, and report
the labels needed to reach 90 % of true-reward PPO's return, normalised between a random policy
(0 %) and PPO trained on the true reward for the same number of steps (100 %). Same seed, same
settings, same run.

    .venv/bin/python benchmarks/label_efficiency.py [--env Pendulum-v1] [--rounds 10] [--seeds 0 1 2]
        [--workers 1] [--engine local|ray [--address ADDR]] [--project P] [--selections RULE ...]
        [--baselines-from EARLIER_RESULT] [-- NAME=VALUE ...]

The preference-RL runs are one sweep (rlhf_core/sweeps.py): `preference_rl` over the seeds x
selection=random,disagreement (``--selections``), by default one run at a time with one torch thread; the two
baselines are computed here once per seed (``--workers`` at a time) or read from an earlier result
(``--baselines-from``). The env's preference_rl preset (PRESETS in
preference_rl.py) applies as in the job: --rounds / --steps-per-round default to it (else 10 / 8192), and
true-reward PPO runs with the same PPO settings as the preference-RL runs. Prints a JSON object as its
last line: per selection rule the numbers of each seed and, over seeds, the final normalised return as
IQM and mean with bootstrap 95 % intervals; ``presets`` lists the preset values applied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rlhf_core.analysis.aggregate import summarise  # noqa: E402
from rlhf_core.config import from_dict  # noqa: E402
from rlhf_core.jobs import CliContext, execute_job  # noqa: E402
from rlhf_core.store import Project  # noqa: E402
from rlhf_core.sweeps import SWEEP_KIND, SweepConfig, SweepError, parse_grid, plan_sweep, run_sweep  # noqa: E402
from rlhf_core.trainers.control.preference_rl import PreferenceRLConfig, resolve_presets  # noqa: E402

from rlhf_core.rewards.query_selection import SELECTIONS as RULES  # noqa: E402

SELECTIONS = ("random", "disagreement")  # the default comparison; --selections picks others of RULES


def true_reward_ppo(env_id: str, steps: int, seed: int, ppo_overrides: dict | None = None) -> float:
    """PPO on the true reward; ``ppo_overrides``: those of the preference-RL runs (resolve_presets)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from rlhf_core.sources.learner import make_ppo, ppo_kwargs

    torch.set_num_threads(1)
    n_envs, kwargs = ppo_kwargs(env_id, **(ppo_overrides or {}))
    model = make_ppo(make_vec_env(env_id, n_envs=n_envs, seed=seed), seed, kwargs)  # logs nowhere: no SB3-* folder
    model.learn(steps)
    mean, _ = evaluate_policy(model, make_vec_env(env_id, n_envs=1, seed=seed + 90_000), n_eval_episodes=5)
    return float(mean)


def random_return(env_id: str, seed: int) -> float:
    from rlhf_core.envs.make import make_env
    from rlhf_core.envs.policies import RandomPolicy
    from rlhf_core.envs.rollout import rollout

    env = make_env(env_id, render=False)
    r = [rollout(env, RandomPolicy(env.action_space, seed=seed + i), seed=seed + i, render=False).true_return
         for i in range(5)]
    env.close()
    return float(np.mean(r))


def baselines(env_id: str, steps: int, seed: int, ppo_overrides: dict) -> tuple[float, float]:
    """(true-reward PPO's return, a random policy's return) for one seed."""
    return true_reward_ppo(env_id, steps, seed, ppo_overrides), random_return(env_id, seed)


def earlier_baselines(path: Path, out: dict) -> dict[int, tuple[float, float]]:
    """{seed: (true-reward PPO, random policy)} from an earlier result of the same env, steps and presets."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{path} holds no result (a JSON line)")
    old = json.loads(lines[-1])
    for key in ("env", "ppo_steps", "presets"):
        if old.get(key) != out[key]:
            raise SystemExit(f"{path} was measured with {key} {old.get(key)!r}, this run uses {out[key]!r}")
    missing = [s for s in out["seeds"] if str(s) not in old["true_reward_ppo_return"]]
    if missing:
        raise SystemExit(f"{path} has no baselines for seed(s) {missing}")
    out["baselines_from"] = str(path)
    return {s: (old["true_reward_ppo_return"][str(s)], old["random_policy_return"][str(s)]) for s in out["seeds"]}


def sweep_members(settings: dict, seeds: list[int], args) -> list[dict]:
    """The preference-RL runs of every seed and selection rule, as one sweep; their run rows."""
    folder = args.project or Path(tempfile.mkdtemp(prefix="bench-")) / "sweep.rlhf"
    try:
        if not (folder / "project.db").exists():
            Project.create(folder).close()
        config = SweepConfig(job="preference_rl", seeds=seeds, grid={"selection": list(args.selections)},
                             settings=settings, workers=args.workers, threads=args.threads, engine=args.engine,
                             address=args.address)
        outcome = execute_job(run_sweep, config, CliContext(title="label efficiency"), project_path=folder,
                              kind=SWEEP_KIND)
        if outcome.status != "completed":
            raise SystemExit(f"the sweep {outcome.status}: {outcome.message or outcome.error}")
        with Project.open(folder) as project:
            members = [project.get_run(r) for g in outcome.result["groups"] for r in g["runs"]]
    finally:
        if args.project is None:
            shutil.rmtree(folder.parent, ignore_errors=True)
    failed = [m for m in members if m["status"] != "completed"]
    if failed:
        print((failed[0]["error"] or "")[-3000:], file=sys.stderr)
        raise SystemExit(f"seed {failed[0]['config'].get('seed')} ({failed[0]['config'].get('selection')}) "
                         f"{failed[0]['status']}")
    return members


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--rounds", type=int, default=None, help="default: the env's preset, else 10")
    parser.add_argument("--steps-per-round", type=int, default=None, help="default: the env's preset, else 8192")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)  # the earlier flag: --seeds S
    parser.add_argument("--workers", type=int, default=1, help="Runs at once (default 1).")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per run (default 1).")
    parser.add_argument("--engine", default="local", choices=("local", "ray"))
    parser.add_argument("--address", default="", help="--engine ray: the cluster (default: a local Ray).")
    parser.add_argument("--project", type=Path, default=None, help="Keep the sweep in this project.")
    parser.add_argument("--selections", nargs="+", default=list(SELECTIONS), choices=RULES,
                        help="Selection rules to compare (uncertainty: mean P(left) nearest 0.5, i.e. its "
                             "largest entropy).")
    parser.add_argument("--baselines-from", type=Path, default=None,
                        help="Take the two baselines from this earlier result (its JSON line) instead of training "
                             "true-reward PPO again; it must be of the same env, PPO steps and presets.")
    parser.add_argument("extra", nargs="*", help="more preference_rl settings as NAME=VALUE, after --")
    args = parser.parse_args()
    seeds = [args.seed] if args.seed is not None else args.seeds
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    settings = {k: v[-1] for k, v in parse_grid(args.extra).items()}
    settings["env_id"] = args.env
    for name in ("rounds", "steps_per_round"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    # the settings each run resolves (checked and typed as the sweep does): its rounds, steps and PPO
    try:
        planned = plan_sweep("preference_rl", seeds, settings=settings).members[0]
    except SweepError as exc:
        raise SystemExit(str(exc)) from None
    resolved, applied, ppo_over = resolve_presets(from_dict(PreferenceRLConfig, {**planned.settings, "seed": seeds[0]}))
    steps = resolved.rounds * resolved.steps_per_round
    members = sweep_members(settings, seeds, args)
    out = {"benchmark": "label_efficiency", "env": args.env, "seeds": seeds, "ppo_steps": steps, "engine": args.engine,
           "presets": applied, "true_reward_ppo_return": {}, "random_policy_return": {},
           "runs": {s: {"seeds": {}} for s in args.selections}}
    jobs = [(args.env, steps, s, ppo_over) for s in seeds]
    if args.baselines_from is not None:
        done = earlier_baselines(args.baselines_from, out)
    elif min(args.workers, len(seeds)) > 1:  # the baselines of several seeds at once, one torch thread each
        with ProcessPoolExecutor(min(args.workers, len(seeds)), mp_context=get_context("spawn")) as pool:
            done = dict(zip(seeds, pool.map(baselines, *zip(*jobs))))
    else:
        done = {job[2]: baselines(*job) for job in jobs}
    for seed in seeds:
        r_true, r_rand = done[seed]
        out["true_reward_ppo_return"][seed], out["random_policy_return"][seed] = r_true, r_rand
        for member in (m for m in members if m["config"]["seed"] == seed):
            res = member["result"]
            curve = res["curve"]
            for point in curve:
                point["normalised"] = (point["true_return"] - r_rand) / (r_true - r_rand)
            reached = next((p["labels"] for p in curve if p["normalised"] >= 0.9), None)
            final_norm = (res["final_true_return"] - r_rand) / (r_true - r_rand)
            out["runs"][member["config"]["selection"]]["seeds"][seed] = {
                "run_id": member["id"], "labels_to_90pct": reached, "labels_total": res["labels"],
                "final_true_return": res["final_true_return"], "final_normalised": final_norm, "curve": curve}
    for selection, entry in out["runs"].items():
        per_seed = entry["seeds"].values()
        entry["final_normalised"] = summarise([s["final_normalised"] for s in per_seed]).as_dict()
        entry["labels_to_90pct"] = [s["labels_to_90pct"] for s in per_seed]
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out["machine"] = f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
