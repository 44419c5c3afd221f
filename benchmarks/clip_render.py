"""Rendered clip generation speed: our rollout + MP4 storage vs the env's own render() loop.

For each environment, in the same run: (1) the baseline, a plain loop of ``env.step`` +
``env.render()`` with random actions; (2) ours, ``rollout(render=True)`` (same steps, MuJoCo's
speed flags on) + ``save_trajectory`` (H.264 encode + npz) into a temporary project.
Reports frames/s of both and the overhead ratio (ours / baseline; > 1 means ours is faster, which
happens for MuJoCo because we switch off shadows and reflections).

    .venv/bin/python benchmarks/clip_render.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from rlhf_core.envs.make import close_env, make_env  # noqa: E402
from rlhf_core.envs.policies import RandomPolicy  # noqa: E402
from rlhf_core.envs.rollout import rollout  # noqa: E402
from rlhf_core.envs.storage import save_trajectory  # noqa: E402
from rlhf_core.store import Project  # noqa: E402


def baseline(env_id: str, steps: int) -> float:
    env = make_env(env_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    env.render()
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        env.render()
        if term or trunc:
            env.reset()
    dt = time.perf_counter() - t0
    close_env(env)
    return steps / dt


def ours(env_id: str, steps: int, project: Project) -> dict:
    """Episodes until ``steps`` steps are done (random CartPole episodes are short)."""
    env = make_env(env_id)
    frames, t_roll, t_save, seed = 0, 0.0, 0.0, 0
    policy = RandomPolicy(env.action_space, seed=0)
    while frames < steps:
        t0 = time.perf_counter()
        traj = rollout(env, policy, seed=seed, max_steps=steps - frames)
        t1 = time.perf_counter()
        save_trajectory(project, traj)
        t_roll, t_save = t_roll + t1 - t0, t_save + time.perf_counter() - t1
        frames += traj.length + 1
        seed += 1
    close_env(env)
    return {"frames": frames, "episodes": seed, "rollout_fps": frames / t_roll, "encode_fps": frames / t_save,
            "total_fps": frames / (t_roll + t_save)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        project = Project.create(Path(tmp) / "bench.rlhf")
        for env_id in ("CartPole-v1", "HalfCheetah-v5"):
            steps = args.steps
            base = baseline(env_id, steps)
            mine = ours(env_id, steps, project)
            results[env_id] = {"baseline_render_fps": round(base, 1), **{k: round(v, 1) for k, v in mine.items()},
                               "ratio_total_vs_baseline": round(mine["total_fps"] / base, 3)}
        project.close()
    print(json.dumps({"benchmark": "clip_render", "steps": args.steps, "cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
