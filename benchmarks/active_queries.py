"""Time of the active_queries job: a pool of 500 Pendulum clips and a pool of 200 text responses.

Clips: 20 random-policy episodes of 200 steps cut into 25 clips of 25 steps each; a 3-member reward
ensemble of the reward_model job's default size (2 x 64) with its random initial weights (the time does
not depend on what it learned); queue 20 pairs among 20 x 10 candidates, then among 20 x 100.
Text: 50 prompts x 4 responses (20-80 words), 60 synthetic labels, a reward model on the bundled
SmolLM2-135M (converted on first use, not timed); 5 heads, 200 steps each. One torch thread; the CPU
time of the process is given beside the wall time (on a shared machine the wall time also counts waiting).

    .venv/bin/python benchmarks/active_queries.py [--skip-text]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RLHF_WORKBENCH_HOME", tempfile.mkdtemp(prefix="wb-bench-home-"))

import torch  # noqa: E402

from rlhf_core import kinds  # noqa: E402
from rlhf_core.envs.clips import make_clips  # noqa: E402
from rlhf_core.envs.make import close_env, make_env  # noqa: E402
from rlhf_core.envs.policies import RandomPolicy  # noqa: E402
from rlhf_core.envs.rollout import rollout  # noqa: E402
from rlhf_core.envs.storage import save_trajectory  # noqa: E402
from rlhf_core.jobs import RecordingContext, execute_job, get_job  # noqa: E402
from rlhf_core.labelers.active_queries import ActiveQueriesConfig  # noqa: E402
from rlhf_core.rewards.networks import RewardEnsemble, RewardNetSpec  # noqa: E402
from rlhf_core.store import Project  # noqa: E402

WORDS = "the reward model compares two answers and prefers the clearer one with a short reason".split()


def timed(folder: Path, **settings) -> dict:
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = execute_job(get_job("active_queries"), ActiveQueriesConfig(**settings), RecordingContext(),
                      project_path=folder, torch_threads=1)
    if out.status != "completed":
        raise SystemExit(out.error)
    result = out.result
    return {"wall_seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(time.process_time() - cpu0, 2),
            "selection_seconds": result["selection_seconds"],
            "pool_items": result["pool_items"], "candidates": result["candidates"], "queued": result["queued"]}


def clips_pool(folder: Path) -> dict:
    with Project.create(folder) as project:
        env = make_env("Pendulum-v1", render=False)
        trajs = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=200,
                                                  render=False)) for s in range(20)]
        close_env(env)
        make_clips(project, trajs, length=25, per_trajectory=25)
        ensemble = RewardEnsemble(RewardNetSpec(obs_dim=3, hidden=64, layers=2), 3)
        path = project.folder / "ensemble.safetensors"
        ensemble.save(path, {"env_id": "Pendulum-v1"})
        project.add_checkpoint(None, kinds.REWARD_ENSEMBLE, path, meta={"env_id": "Pendulum-v1"})
    return {"x10": timed(folder, env_id="Pendulum-v1", queue_pairs=20, candidate_multiplier=10),
            "x100": timed(folder, env_id="Pendulum-v1", queue_pairs=20, candidate_multiplier=100)}


def text_pool(folder: Path) -> dict:
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model

    rng = random.Random(0)
    t0 = time.perf_counter()
    model, _, _ = load_base_reward_model("", max_length=512)
    rm = save_text_reward_model(model, folder.parent / "rm", {"base_model": "default"})
    setup = time.perf_counter() - t0
    pids = []
    with Project.create(folder) as project:
        for p in range(50):
            pid = project.add_prompt(f"Question {p}: explain step {p} of reward modelling.")
            pids.append(pid)
            ids = [project.add_item("response", prompt_id=pid, model_id="bench",
                                    text=" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80))))
                   for _ in range(4)]
            if p < 30:
                project.add_comparison(ids[0], ids[1], rng.choice(["left", "right"]), source="synthetic")
                project.add_comparison(ids[2], ids[3], rng.choice(["left", "right"]), source="synthetic")
    return {"model_setup_seconds": round(setup, 1), **timed(folder, pool="responses", reward_model=str(rm),
                                                          prompt_set="", from_run=0, prompt_ids=pids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-text", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="wb-bench-aq-") as tmp:
        out = {"clips_500": clips_pool(Path(tmp) / "clips.rlhf")}
        if not args.skip_text:
            out["responses_200"] = text_pool(Path(tmp) / "text.rlhf")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
