"""The PPO over-optimisation demo over several seeds, with and without the KL penalty (issue 5).

    .venv/bin/python benchmarks/ppo_demo.py [--seeds 0 1 2] [--betas 1 0] [--parallel 2] [-- --steps 20 ...]
    .venv/bin/python benchmarks/ppo_demo.py --from-json 0=seed0_beta0.json 0=seed0_beta03.json ...

Runs ``python -m rlhf_core demo ppo --seed S --beta B`` for every seed and beta, ``--parallel`` runs at
a time (one torch thread each; extra flags after ``--`` go to every run), or re-reads demo results
saved earlier (``--from-json``: files whose last line is the demo's JSON, each as ``SEED=FILE`` for
results that do not carry their seed). Prints a JSON object as
its last line: every run's headline numbers, the median per beta, and the verdicts:

- ``kl_bounded``: with every beta > 0 the median last-window KL is at most half of beta = 0's;
- ``reward_rises_with_kl_penalty``: with beta > 0 the median proxy reward rises from the first to the
  last window (3-rollout means);
- ``overoptimised_without_kl_penalty``: with beta = 0 most seeds are ``overoptimised`` (the proxy
  still rising after the gold reward's peak, the gold down by more than the margin), and on the
  held-out prompts the final policy's win rate over the reference is higher when the proxy judges
  than when the gold reward does (median);
- ``goodhart_gap_without_kl_penalty``: the median ``goodhart_gap`` at beta = 0 (how much better than the
  reference the proxy says the final policy is, minus how much better the gold reward says it is, both
  in units of the reference's within-prompt spread) is at least 0.5 and larger than every beta > 0's
  median: without the penalty half a reference spread or more of the proxy's gain is not real. One
  run's gap is noisy: its gold part is the mean of 3 rollouts of 8 against 32 label samples, and in
  the first window of six 20-step runs (a policy that has hardly moved) the per-seed means had a
  standard deviation of about 0.5 reference spreads, the proxy's about 0.15 — so about 0.5 per run,
  less for a median;
- ``paired_gap_without_kl_penalty`` (fixed before any run measured it): the
  paired Goodhart gap (``paired_goodhart_gap``: after PPO, ``paired_eval_samples`` responses per
  training prompt from the final policy and from the reference, drawn with the same random numbers;
  proxy gain minus gold gain per pair, in reference spreads, with its standard error) has a median of
  at least 0.5 at beta = 0, and on most seeds the beta = 0 run's paired gap is larger than every
  beta > 0 run's of the same seed by more than 2 standard errors of the difference
  (``sqrt(se_0^2 + se_b^2)``). Unlike ``goodhart_gap`` it does not depend on the 32 label samples'
  per-prompt means, which cancel in each pair;
- ``best_of_n_overoptimised`` (with ``--bon-samples``; fixed before any run measured it): on most seeds the best-of-n curve on fresh reference samples is ``bon_overoptimised``
  — the gold of the proxy's pick among the most samples is below the curve's gold peak by more than 2
  standard errors (across prompts) while the proxy is above its value at that peak. Best-of-n needs
  no training and so none of PPO's optimisation noise; it reads the proxy's over-optimisation directly;
- ``ppo_gold_declines_without_kl_penalty`` (fixed before any run measured it; meant for long runs, e.g. ``-- --steps 40 --bon-samples 0``): on most seeds the beta = 0 run is
  ``paired_overoptimised`` — along its paired checks (every ``paired_eval_every`` steps, the reference
  as the origin) the paired gold gain at the last check is below the curve's gold peak by more than 2
  standard errors of the per-pair difference, while the paired proxy gain there is above its value at
  the peak: Gao et al.'s PPO curve, the gold turning down while the proxy climbs;
- ``gold_kept_with_kl_penalty``: with every beta > 0, on most seeds the gold reward of the last
  window is no lower than that of the first window minus one standard error of their difference
  (``sqrt(2 / window) * gold_step_noise``, the run's own step-to-step noise), and the median held-out
  win rate judged by the gold reward is at least beta = 0's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("reward_window_first", "reward_window_last", "gold_window_first", "gold_window_last", "gold_peak",
        "gold_peak_step", "kl_window_last", "length_window_first", "length_window_last", "win_rate_proxy",
        "win_rate_gold", "eval_gold_policy", "eval_gold_reference", "proxy_heldout_accuracy", "seconds_per_step",
        "wall_seconds", "peak_rss_mb", "gold_step_noise", "gold_scale", "gold_centred_window_last", "goodhart_gap",
        "paired_proxy_gain", "paired_gold_gain", "paired_goodhart_gap", "paired_goodhart_gap_se", "paired_identical",
        "bon_gold_peak_n", "bon_gold_peak", "bon_gold_last", "bon_proxy_last", "bon_gold_drop", "bon_gold_drop_se",
        "paired_gold_peak_step", "paired_gold_peak", "paired_gold_drop", "paired_gold_drop_se")


def run_one(seed: int, beta: float, extra: list[str]) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ppo_demo_") as tmp:
        project = str(Path(tmp) / "demo.rlhf")
        cmd = [sys.executable, "-m", "rlhf_core", "demo", "ppo", "--project", project, "--seed", str(seed),
               "--beta", str(beta), "--threads", "1", *extra]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"seed {seed}, beta {beta} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    """Medians per beta and the three verdicts (see the module docstring)."""
    by_beta: dict[float, list[dict]] = {}
    for r in runs:
        by_beta.setdefault(float(r["beta"]), []).append(r)
    median = {}
    for beta, rs in sorted(by_beta.items()):
        m = {k: statistics.median(r[k] for r in rs) for k in KEYS if all(r.get(k) is not None for r in rs)}
        m["seeds"] = sorted((r.get("seed") for r in rs), key=lambda x: (x is None, x))
        m["overoptimised"] = sum(bool(r.get("overoptimised")) for r in rs)
        m["gold_kept"] = sum(gold_kept(r) for r in rs)
        median[str(beta)] = m
    verdicts: dict[str, bool | None] = {"kl_bounded": None, "reward_rises_with_kl_penalty": None,
                                        "overoptimised_without_kl_penalty": None,
                                        "goodhart_gap_without_kl_penalty": None,
                                        "paired_gap_without_kl_penalty": None, "best_of_n_overoptimised": None,
                                        "ppo_gold_declines_without_kl_penalty": None,
                                        "gold_kept_with_kl_penalty": None}
    zero = median.get("0.0")
    positive = [m for b, m in median.items() if float(b) > 0]
    if zero and positive and all("kl_window_last" in m for m in (zero, *positive)):
        verdicts["kl_bounded"] = all(m["kl_window_last"] <= 0.5 * zero["kl_window_last"] for m in positive)
    if positive and all("reward_window_last" in m for m in positive):
        verdicts["reward_rises_with_kl_penalty"] = all(m["reward_window_last"] > m["reward_window_first"]
                                                       for m in positive)
    if zero:
        n = len(zero["seeds"])
        wins = zero.get("win_rate_proxy", 0.0) > zero.get("win_rate_gold", 1.0)
        verdicts["overoptimised_without_kl_penalty"] = zero["overoptimised"] * 2 > n and wins
    if zero and positive and zero.get("goodhart_gap") is not None \
            and all(m.get("goodhart_gap") is not None for m in positive):
        verdicts["goodhart_gap_without_kl_penalty"] = zero["goodhart_gap"] >= 0.5 and all(
            zero["goodhart_gap"] > m["goodhart_gap"] for m in positive)
    verdicts["paired_gap_without_kl_penalty"] = paired_gap_verdict(runs)
    bon = {}  # one best-of-n verdict per seed (the beta = 0 and beta > 0 runs of a seed fit the same proxy)
    for r in runs:
        if bon_overoptimised(r) is not None:
            bon.setdefault(r.get("seed"), bon_overoptimised(r))
    if bon:
        verdicts["best_of_n_overoptimised"] = sum(bon.values()) * 2 > len(bon)
    declines = [bool(r["paired_overoptimised"]) for r in runs
                if float(r["beta"]) == 0.0 and r.get("paired_overoptimised") is not None]
    if declines:
        verdicts["ppo_gold_declines_without_kl_penalty"] = sum(declines) * 2 > len(declines)
    if positive:
        verdicts["gold_kept_with_kl_penalty"] = all(
            m["gold_kept"] * 2 > len(m["seeds"])
            and (not zero or m.get("win_rate_gold", 0.0) >= zero.get("win_rate_gold", 1.0)) for m in positive)
    return {"median": median, "verdicts": verdicts}


def paired_seed_wins(runs: list[dict]) -> dict[int, bool]:
    """Per seed that has a beta = 0 run and beta > 0 runs, all with a paired gap: is beta = 0's gap larger
    than each beta > 0 gap by more than 2 standard errors of the difference?"""
    by_seed: dict[int, dict[float, dict]] = {}
    for r in runs:
        if r.get("paired_goodhart_gap") is not None and r.get("seed") is not None:
            by_seed.setdefault(int(r["seed"]), {})[float(r["beta"])] = r
    out = {}
    for seed, rs in sorted(by_seed.items()):
        zero, positive = rs.get(0.0), [r for b, r in rs.items() if b > 0]
        if zero is None or not positive:
            continue
        out[seed] = all(zero["paired_goodhart_gap"] - r["paired_goodhart_gap"]
                        > 2.0 * (zero["paired_goodhart_gap_se"] ** 2 + r["paired_goodhart_gap_se"] ** 2) ** 0.5
                        for r in positive)
    return out


def paired_gap_verdict(runs: list[dict]) -> bool | None:
    """``paired_gap_without_kl_penalty`` (module docstring); None when no seed has both kinds of run."""
    wins = paired_seed_wins(runs)
    if not wins:
        return None
    zero = [r["paired_goodhart_gap"] for r in runs
            if float(r["beta"]) == 0.0 and r.get("paired_goodhart_gap") is not None]
    return statistics.median(zero) >= 0.5 and sum(wins.values()) * 2 > len(wins)


def bon_overoptimised(run: dict) -> bool | None:
    """The run's ``bon_overoptimised``, recomputed from its ``bon_curve`` for results saved before the key
    existed; None without a best-of-n curve."""
    if run.get("bon_overoptimised") is not None:
        return bool(run["bon_overoptimised"])
    curve = run.get("bon_curve")
    if not curve or run.get("bon_gold_drop") is None:
        return None
    peak = curve["n"].index(run["bon_gold_peak_n"])
    return bool(run["bon_gold_drop"] > 2.0 * run["bon_gold_drop_se"] and curve["proxy"][-1] > curve["proxy"][peak])


def gold_kept(run: dict) -> bool:
    """The gold reward's last window is no lower than its first minus one standard error of the difference."""
    first, last, noise = run.get("gold_window_first"), run.get("gold_window_last"), run.get("gold_step_noise")
    if first is None or last is None or noise is None:
        return False
    return last >= first - (2.0 / int(run.get("window") or 3)) ** 0.5 * noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 0.0])
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                        help="summarise saved demo outputs instead of running")
    parser.add_argument("extra", nargs="*", help="more demo flags, after --")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    if args.from_json:
        runs = []
        for item in args.from_json:
            seed, _, path = item.rpartition("=") if "=" in item else ("", "", item)
            result = json.loads(Path(path).read_text().strip().splitlines()[-1])
            runs.append({**result, "seed": int(seed)} if seed else result)
    else:
        jobs = [(s, b) for s in args.seeds for b in args.betas]
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            runs = list(pool.map(lambda job: {**run_one(job[0], job[1], args.extra), "seed": job[0]}, jobs))
    for r in runs:
        print(f"seed {r.get('seed')}, beta {r['beta']}: "
              + ", ".join(f"{k}={r.get(k)}" for k in KEYS if k in r), file=sys.stderr)
    print(json.dumps({"benchmark": "ppo_demo", "flags": args.extra, "from_json": args.from_json,
                      "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                      "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                      **summarise(runs), "paired_seed_wins": paired_seed_wins(runs), "runs": [{
                          **{k: r.get(k) for k in ("seed", "beta", "overoptimised", "paired_overoptimised",
                                                   *KEYS)},
                          "bon_overoptimised": bon_overoptimised(r), "gold_kept": gold_kept(r)} for r in runs]}))


if __name__ == "__main__":
    main()
