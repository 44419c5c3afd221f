"""Cut trajectories into clips and queue clip pairs for labelling.

Christiano et al. show clips of ~1.5 s (15-60 steps in MuJoCo, 25 in Atari); the default here is
``seconds * fps`` steps clamped to [25, 50].
"""

from __future__ import annotations

import numpy as np

from rlhf_core.envs.storage import load_arrays


def default_clip_length(fps: int, seconds: float = 1.5) -> int:
    return int(min(50, max(25, round(seconds * fps))))


def make_clips(project, trajectory_ids, *, length: int, per_trajectory: int, seed: int = 0,
               run_id: int | None = None) -> list[int]:
    """Cut ``per_trajectory`` random clips of ``length`` steps from each trajectory.

    A trajectory shorter than ``length`` gives one clip of its whole length. Returns clip ids.
    """
    if length < 1 or per_trajectory < 1:
        raise ValueError("clip length and clips per trajectory must be at least 1")
    rng = np.random.default_rng(seed)
    ids = []
    for tid in trajectory_ids:
        traj = project.get_item(tid)
        if traj is None or traj["kind"] != "trajectory":
            raise ValueError(f"item {tid} is not a trajectory")
        rewards = load_arrays(project, traj)["rewards"]
        T = len(rewards)
        n = min(per_trajectory, max(1, T - length + 1))
        starts = [0] if T <= length else sorted(rng.choice(T - length + 1, size=n, replace=False).tolist())
        for a in starts:
            b = min(T, a + length)
            ids.append(project.add_item(
                "clip", parent_id=tid, run_id=run_id, source=traj["source"], env_id=traj["env_id"],
                seed=traj["seed"], start_step=int(a), end_step=int(b), length=int(b - a),
                true_return=float(rewards[a:b].sum()), params={"trajectory": tid},
            ))
    return ids


def queue_random_pairs(project, clip_ids, n_pairs: int, *, seed: int = 0, run_id: int | None = None,
                       different_trajectories: bool = True) -> list[int]:
    """Queue ``n_pairs`` random pairs of clips (from different trajectories where possible)."""
    rng = np.random.default_rng(seed)
    clips = [project.get_item(c) for c in clip_ids]
    if len(clips) < 2:
        raise ValueError("need at least two clips to make a pair")
    queued, tries = [], 0
    seen = set()
    while len(queued) < n_pairs and tries < n_pairs * 50:
        tries += 1
        i, j = rng.choice(len(clips), size=2, replace=False)
        a, b = clips[i], clips[j]
        if different_trajectories and a["parent_id"] == b["parent_id"] and len({c["parent_id"] for c in clips}) > 1:
            continue
        key = (min(a["id"], b["id"]), max(a["id"], b["id"]))
        if key in seen:
            continue
        seen.add(key)
        queued.append(project.enqueue_pair(a["id"], b["id"], run_id=run_id, reason={"selection": "random"}))
    return queued
