"""Collect trajectories from a policy source and store them (with videos and clips) in the project.

Sources: a uniformly random policy; a saved SB3 checkpoint; a behavioural-cloning policy. Any of
them can be run with ε-noise (D-REX): with probability ε a uniform random action. The D-REX
schedules are built in: 20 levels 0.00-0.95 for continuous control, {1.0, 0.75, 0.5, 0.25, 0.01}
for discrete actions (Brown et al., CoRL 2019). Each trajectory records its source and ε.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf_core.config import param
from rlhf_core.envs.clips import default_clip_length, make_clips, queue_random_pairs
from rlhf_core.envs.make import close_env, env_info, make_env
from rlhf_core.envs.policies import BCPolicy, EpsilonGreedy, RandomPolicy, SB3Policy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import save_trajectory
from rlhf_core.jobs import JobContext

DREX_CONTINUOUS = tuple(round(0.05 * i, 2) for i in range(20))  # 0.00 ... 0.95
DREX_DISCRETE = (1.0, 0.75, 0.5, 0.25, 0.01)


@dataclass
class RolloutConfig:
    env_id: str = param("Pendulum-v1", "Gymnasium environment id (your own: 'module:Env-v0').")
    policy: str = param("random", "Where actions come from: a random policy, an SB3 checkpoint or a "
                        "behavioural-cloning checkpoint of this project.", choices=("random", "checkpoint", "bc"))
    checkpoint_id: int = param(0, "Checkpoint id (for policy 'checkpoint' or 'bc').", min=0)
    episodes: int = param(4, "Episodes to roll out (per noise level).", min=1, max=10_000)
    max_steps: int = param(0, "Stop an episode after this many steps (0: the env's own limit).", min=0)
    epsilon: float = param(0.0, "Noise: probability of a uniform random action at each step.", min=0.0, max=1.0)
    noise_schedule: str = param("none", "D-REX noise levels instead of one epsilon.",
                                choices=("none", "drex_continuous", "drex_discrete"))
    seed: int = param(0, "Seed of the first episode (episode i uses seed + i).", min=0)
    record_video: bool = param(True, "Render and store frames as video (needed for clips).")
    # by default a run leaves something to label: clips cut and random pairs of them queued
    clips_per_trajectory: int = param(3, "Also cut this many clips from each trajectory (0: none; a trajectory "
                                      "shorter than a clip gives one clip).", min=0)
    clip_length: int = param(0, "Clip length in steps (0: about 1.5 s, 25-50 steps).", min=0)
    queue_pairs: int = param(12, "Queue this many random clip pairs for labelling (0: none; fewer when the "
                             "clips allow fewer different pairs).", min=0)


def _policy(config: RolloutConfig, env, ctx: JobContext):
    if config.policy == "random":
        return RandomPolicy(env.action_space, seed=config.seed)
    if not config.checkpoint_id:
        raise ValueError(f"policy {config.policy!r} needs a checkpoint_id")
    project = ctx.project()
    ckpt = next((c for c in project.checkpoints() if c["id"] == config.checkpoint_id), None)
    if ckpt is None:
        raise ValueError(f"no checkpoint {config.checkpoint_id} in this project")
    path = project.abspath(ckpt["path"])
    return SB3Policy(path) if config.policy == "checkpoint" else BCPolicy.load(path)


def collect_rollouts(config: RolloutConfig, ctx: JobContext) -> dict:
    env = make_env(config.env_id, render=config.record_video)
    try:
        info = env_info(env)
        base = _policy(config, env, ctx)
        if config.noise_schedule == "drex_continuous":
            levels = DREX_CONTINUOUS
        elif config.noise_schedule == "drex_discrete":
            levels = DREX_DISCRETE
        else:
            levels = (config.epsilon,)
        total = len(levels) * config.episodes
        project = ctx.project() if ctx.project_path is not None else None
        ids, returns_by_eps = [], {}
        done = 0
        for eps in levels:
            for ep in range(config.episodes):
                ctx.raise_if_cancelled()
                seed = config.seed + done
                policy = EpsilonGreedy(base, env.action_space, eps, seed=seed) if eps > 0 else base
                source = {"kind": config.policy, "epsilon": eps, "checkpoint_id": config.checkpoint_id or None}
                traj = rollout(env, policy, seed=seed, max_steps=config.max_steps or None,
                               render=config.record_video, source=source,
                               on_step=lambda t: ctx.raise_if_cancelled() if t % 50 == 0 else None)
                returns_by_eps.setdefault(eps, []).append(traj.true_return)
                if project is not None:
                    ids.append(save_trajectory(project, traj, run_id=ctx.run_id))
                ctx.metrics(done, {"rollout/true_return": traj.true_return, "rollout/episode_length": traj.length,
                                   "rollout/epsilon": eps})
                done += 1
                ctx.progress(done, total, f"episode {done}/{total}  return {traj.true_return:.1f}")
        result = {"trajectories": ids, "env_id": config.env_id,
                  "mean_return_by_epsilon": {str(e): float(np.mean(r)) for e, r in returns_by_eps.items()}}
        if project is not None and config.clips_per_trajectory and config.record_video:
            length = config.clip_length or default_clip_length(info.fps)
            clips = make_clips(project, ids, length=length, per_trajectory=config.clips_per_trajectory,
                               seed=config.seed, run_id=ctx.run_id)
            result["clips"] = len(clips)
            if config.queue_pairs:  # a pair needs two clips: one clip queues none
                result["queued_pairs"] = len(queue_random_pairs(project, clips, config.queue_pairs,
                                                                seed=config.seed, run_id=ctx.run_id)
                                             ) if len(clips) >= 2 else 0
        return result
    finally:
        close_env(env)
