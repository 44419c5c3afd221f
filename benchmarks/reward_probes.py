"""Where does a learned reward put behaviour its demonstrations never show? HalfCheetah probes.

    .venv/bin/python benchmarks/reward_probes.py [--seeds 10 11] [--variants linear mlp ...] [--cache DIR]
        [-- NAME=VALUE ...]   # extrapolation-demo settings for the learner and pairs, e.g. max_demo_return=500

Probe trajectories, made once (seed 99, the extrapolation demo's HalfCheetah PPO): 2 episodes at each of
10 checkpoints of PPO on the true reward (up to 700k steps: forwards, to ~2,000) and at each of 8
checkpoints of PPO with ``forward_reward_weight=-1`` (up to 400k: running backwards, to ~-4,000). For
each seed, the extrapolation demo's learner demonstrations (its HalfCheetah preset, ranked by true
return) train each reward variant on the same T-REX pairs; each is scored on the probes plus the
learner's trajectories it did not see: Pearson r and Spearman with the true return, and where the fast
runners land (mean predicted return of probes below -1,000 / above 1,000, in standard deviations of
the demos' predicted returns, from the demos' mean). Learner demos and probes are cached in --cache.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rlhf_core.analysis.extrapolation import spearman  # noqa: E402
from rlhf_core.config import from_dict  # noqa: E402
from rlhf_core.experiments.extrapolation import (ExtrapolationDemoConfig, _learner_demos, resolve_presets,  # noqa: E402
                                                  select_demos)
from rlhf_core.jobs import JobContext  # noqa: E402
from rlhf_core.rewards.datasets import trex_pairs  # noqa: E402
from rlhf_core.rewards.training import FitSettings, fit_reward_ensemble  # noqa: E402
from rlhf_core.sweeps import parse_grid  # noqa: E402

ENV = "HalfCheetah-v5"
#: name -> (FitSettings overrides, pessimism k: the reward is the members' mean - k x their std)
VARIANTS = {
    "mlp": ({"hidden": 64, "layers": 2}, 0.0),
    "mlp_pessimistic": ({"hidden": 64, "layers": 2}, 3.0),
    "mlp_1_layer": ({"hidden": 64, "layers": 1}, 0.0),
    "mlp_256": ({"hidden": 256, "layers": 2}, 0.0),  # T-REX's MuJoCo width: ~15 min per fit here
    "linear": ({"layers": 0}, 0.0),
}


def probes(cache: Path) -> list:
    """The forward and backward runners (cached)."""
    path = cache / "probes.pkl"
    if path.exists():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from rlhf_core.envs.make import close_env, make_env
    from rlhf_core.envs.rollout import rollout
    from rlhf_core.sources.learner import FAST_MUJOCO_PPO, make_ppo, ppo_kwargs
    from rlhf_core.trainers.control.ppo_learned import FastActor

    out: list = []
    env = make_env(ENV, render=False)
    for weight, steps, every in ((1.0, 700_000, 70_000), (-1.0, 400_000, 50_000)):
        n_envs, kwargs = ppo_kwargs(ENV, **FAST_MUJOCO_PPO)
        venv = make_vec_env(ENV, n_envs=n_envs, seed=99, env_kwargs={"forward_reward_weight": weight})
        model = make_ppo(venv, 99, kwargs)

        class Take(BaseCallback):
            next_at = every

            def _on_step(self) -> bool:
                if self.num_timesteps >= self.next_at:
                    self.next_at += every
                    actor = FastActor(self.model)
                    out.extend(rollout(env, actor, seed=5000 + len(out), render=False,
                                       source={"kind": "probe", "forward_weight": weight, "step": self.num_timesteps})
                               for _ in range(2))
                return True

        model.learn(steps, callback=Take())
        venv.close()
    close_env(env)
    with open(path, "wb") as fh:
        pickle.dump(out, fh)
    return out


def demo_config(seed: int, settings: dict) -> tuple:
    return resolve_presets(from_dict(ExtrapolationDemoConfig, {**settings, "env_id": ENV, "seed": seed}))


def learner_trajectories(seed: int, cache: Path, settings: dict) -> list:
    tag = "".join(f"_{k}{v}" for k, v in sorted(settings.items()))
    path = cache / f"learner_{seed}{tag}.pkl"
    if path.exists():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    config, _, _, learner_over = demo_config(seed, settings)
    trajs = _learner_demos(config, JobContext(), cache, keep_files=False, overrides=learner_over).trajectories
    with open(path, "wb") as fh:
        pickle.dump(trajs, fh)
    return trajs


def predicted(ensemble, trajs: list, k: float) -> np.ndarray:
    out = []
    with torch.no_grad():
        for t in trajs:
            r = ensemble(torch.from_numpy(np.asarray(t.observations[1:], np.float32)))  # [members, T]
            out.append(float((r.mean(0) - k * r.std(0)).sum()) if k else float(r.mean(0).sum()))
    return np.asarray(out)


def score(seed: int, variant: str, learner: list, probe: list, settings: dict, fits: dict) -> dict:
    """``fits`` caches each network's fit for this seed (variants that differ only in k share one)."""
    config, *_ = demo_config(seed, settings)
    demos, unseen = select_demos(config, learner)
    pairs = trex_pairs([t.observations for t in demos], [t.true_return for t in demos], config.snippet_pairs,
                       min_len=config.snippet_min, max_len=config.snippet_max, seed=seed)
    over, k = VARIANTS[variant]
    settings = dataclasses.replace(FitSettings(members=config.members, steps=config.reward_steps, seed=seed), **over)
    key = json.dumps(over, sort_keys=True)
    if key not in fits:
        t0 = time.perf_counter()
        fits[key] = (*fit_reward_ensemble(pairs, settings), time.perf_counter() - t0)
    ensemble, fit, seconds = fits[key]
    scored = probe + unseen
    true = np.asarray([t.true_return for t in scored])
    pred = predicted(ensemble, scored, k)
    pred_demo = predicted(ensemble, demos, k)
    spread = float(pred_demo.std()) or 1.0

    def where(mask) -> float | None:
        return round(float((pred[mask].mean() - pred_demo.mean()) / spread), 2) if mask.any() else None

    return {"seed": seed, "variant": variant, "n_demos": len(demos),
            "best_demo": round(max(t.true_return for t in demos), 1), "n_scored": len(scored),
            "heldout_accuracy": fit.get("heldout_accuracy"), "fit_seconds": round(seconds, 1),
            "pearson": round(float(np.corrcoef(true, pred)[0, 1]), 3), "spearman": round(float(spearman(true, pred)), 3),
            "backward_runners_sd": where(true < -1000), "forward_runners_sd": where(true > 1000)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11])
    parser.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v != "mlp_256"], choices=list(VARIANTS))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/reward-probes"))
    parser.add_argument("extra", nargs="*", help="extrapolation-demo settings as NAME=VALUE, after --")
    args = parser.parse_args()
    settings = {k: json.loads(v[-1]) for k, v in parse_grid(args.extra).items()}  # numbers: max_demo_return=500
    torch.set_num_threads(1)
    args.cache.mkdir(parents=True, exist_ok=True)
    probe = probes(args.cache)
    rows = []
    for seed in args.seeds:
        learner = learner_trajectories(seed, args.cache, settings)
        fits: dict = {}
        for variant in args.variants:
            rows.append(score(seed, variant, learner, probe, settings, fits))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"benchmark": "reward_probes", "env": ENV, "settings": settings, "n_probes": len(probe),
                      "probe_returns": [round(min(t.true_return for t in probe)), round(max(t.true_return for t in probe))],
                      "rows": rows}))


if __name__ == "__main__":
    main()
