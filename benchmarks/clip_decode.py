"""How long one clip takes to decode from its trajectory's video, by where the clip starts: the writer
and reader of older projects (x264's default keyframe interval of up to 250 frames, every frame
decoded from frame 0) against now (a keyframe at least every ``storage.KEYFRAME_INTERVAL`` frames,
``read_video`` seeks to the one before the clip).

A real ``--env`` rollout of ``--steps`` steps with random actions (HalfCheetah-v5: 1000 steps, the
length of a MuJoCo episode) is rendered once; its frames are written both ways; then clips of
``--clip`` frames starting at 0 %, 50 % and 95 % of the trajectory are decoded ``--repeats`` times
each way, alternating, in the same process. Reports the median seconds per clip, their ratio
(new / old), and both files' sizes.

    .venv/bin/python benchmarks/clip_decode.py [--env HalfCheetah-v5] [--steps 1000] [--clip 50]

Prints a JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402

from rlhf_core.envs import storage  # noqa: E402
from rlhf_core.envs.make import close_env, make_env  # noqa: E402
from rlhf_core.envs.policies import RandomPolicy  # noqa: E402
from rlhf_core.envs.rollout import rollout  # noqa: E402


def keyframes(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(container.streams.video[0]) if p.is_keyframe and p.pts is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--clip", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keyframe-interval", type=int, default=storage.KEYFRAME_INTERVAL,
                        help="the new writer's keyframe interval (default: the one write_video uses)")
    args = parser.parse_args()

    env = make_env(args.env)
    t0 = time.perf_counter()
    traj = rollout(env, RandomPolicy(env.action_space, seed=0), seed=0, max_steps=args.steps, source={"kind": "random"})
    close_env(env)
    render_s = time.perf_counter() - t0
    folder = Path(tempfile.mkdtemp(prefix="clip-decode-"))
    old_path, new_path = folder / "old.mp4", folder / "new.mp4"
    storage.write_video(old_path, traj.frames, traj.fps, keyframe_interval=None)  # as older projects wrote it
    storage.write_video(new_path, traj.frames, traj.fps, keyframe_interval=args.keyframe_interval)
    n = len(traj.frames)
    starts = sorted({0, n // 2, max(0, int(n * 0.95) - args.clip // 2)})
    rows = []
    for start in starts:
        end = min(n, start + args.clip)
        want = storage._read_from_start(old_path, start, end)
        assert storage.read_video(new_path, start, end).shape == want.shape
        old_s, new_s = [], []
        for _ in range(args.repeats):  # alternate, so that load changes hit both alike
            t = time.perf_counter()
            storage._read_from_start(old_path, start, end)
            old_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            storage.read_video(new_path, start, end)
            new_s.append(time.perf_counter() - t)
        old_m, new_m = statistics.median(old_s), statistics.median(new_s)
        rows.append({"start": start, "end": end, "old_s": round(old_m, 4), "new_s": round(new_m, 4),
                     "ratio_new_over_old": round(new_m / old_m, 3)})
        print(f"clip {start}:{end}  old {old_m * 1000:.1f} ms  new {new_m * 1000:.1f} ms  ratio {new_m / old_m:.2f}",
              file=sys.stderr)
    result = {"benchmark": "clip_decode", "env": args.env, "frames": n, "frame_shape": list(want.shape[1:]),
              "fps": traj.fps, "keyframe_interval": args.keyframe_interval, "clip": args.clip,
              "repeats": args.repeats, "render_seconds": round(render_s, 2),
              "old_bytes": old_path.stat().st_size, "new_bytes": new_path.stat().st_size,
              "size_ratio": round(new_path.stat().st_size / old_path.stat().st_size, 3),
              "old_keyframes": keyframes(old_path), "new_keyframes": keyframes(new_path), "clips": rows,
              "load_average_1min": round(os.getloadavg()[0], 2), "python": platform.python_version()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
