"""Label efficiency of online preference RL: random vs active (ensemble-disagreement) queries.

A simulated oracle labels clips online (rlhf_core/trainers/control/preference_rl.py). For each selection
rule we record, round by round, the labels used so far and the agent's TRUE return, and report
the labels needed to reach 90 % of true-reward PPO's return, normalised between a random policy
(0 %) and PPO trained on the true reward for the same number of steps (100 %). Same seed, same
settings, same run.

    .venv/bin/python benchmarks/label_efficiency.py [--env Pendulum-v1] [--rounds 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rlhf_core.jobs import NullContext  # noqa: E402
from rlhf_core.trainers.control.preference_rl import PreferenceRLConfig, train_preference_rl  # noqa: E402


def true_reward_ppo(env_id: str, steps: int, seed: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from rlhf_core.sources.learner import ppo_kwargs

    n_envs, kwargs = ppo_kwargs(env_id)
    model = PPO("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=seed), seed=seed, device="cpu", **kwargs)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps-per-round", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    steps = args.rounds * args.steps_per_round
    r_true = true_reward_ppo(args.env, steps, args.seed)
    r_rand = random_return(args.env, args.seed)
    out = {"benchmark": "label_efficiency", "env": args.env, "seed": args.seed, "ppo_steps": steps,
           "true_reward_ppo_return": r_true, "random_policy_return": r_rand, "runs": {}}
    for selection in ("random", "disagreement"):
        res = train_preference_rl(PreferenceRLConfig(env_id=args.env, selection=selection, rounds=args.rounds,
                                                     steps_per_round=args.steps_per_round, seed=args.seed), NullContext())
        curve = res["curve"]
        for point in curve:
            point["normalised"] = (point["true_return"] - r_rand) / (r_true - r_rand)
        reached = next((p["labels"] for p in curve if p["normalised"] >= 0.9), None)
        final_norm = (res["final_true_return"] - r_rand) / (r_true - r_rand)
        out["runs"][selection] = {"labels_to_90pct": reached, "labels_total": res["labels"],
                                  "final_true_return": res["final_true_return"], "final_normalised": final_norm,
                                  "curve": curve}
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out["machine"] = f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
