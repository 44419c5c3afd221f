"""How long the GUI thread stalls when the ranking view loads trajectories: decoding in place vs on
the frame loader's worker thread (app/labeling/frame_loader.py).

A project gets ``--trajectories`` Pendulum-v1 rollouts of ``--steps`` steps with video. A 10 ms
precise QTimer runs in the GUI thread while the Rank view loads them (a thumbnail from the middle of
each video, then the first one played) two ways in the same process:

- ``inline``: the same decoding done on the GUI thread (the view's earlier way:
  ``read_video`` for each thumbnail, then ``load_frames`` for the selected trajectory);
- ``worker``: ``RankingView.load_items`` as it is now, until every thumbnail and the selected video
  have arrived.

Reports the longest timer lateness (the longest the window could not repaint or take a key) and the
wall time until everything is on screen, for each, and their ratios.

    .venv/bin/python benchmarks/video_decode_gui.py [--trajectories 12] [--steps 200] [--repeats 3]

Prints a JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("RLHF_WORKBENCH_HOME", tempfile.mkdtemp(prefix="wb-bench-home-"))

import numpy as np  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from benchmarks.lateness import run_ticking  # noqa: E402


def make_project(folder: Path, n: int, steps: int):
    from rlhf_core.envs.make import close_env, make_env
    from rlhf_core.envs.policies import RandomPolicy
    from rlhf_core.envs.rollout import rollout
    from rlhf_core.envs.storage import save_trajectory
    from rlhf_core.store import Project

    project = Project.create(folder / "decode.rlhf")
    env = make_env("Pendulum-v1")
    ids = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=steps,
                                            source={"kind": "random"})) for s in range(n)]
    close_env(env)
    return project, ids


def run_with_timer(start, done) -> tuple[float, float]:
    """(max lateness of a 10 ms timer in ms, seconds until ``done()``) while ``start()`` runs in the loop."""
    late, wall = run_ticking(start=start, done=done)
    return (float(late.max()) if late.size else 0.0), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=12)
    parser.add_argument("--steps", type=int, default=200, help="at most 200: Pendulum-v1 ends there")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from app.labeling.ranking_view import RankingView
    from app.settings import Settings
    from rlhf_core.envs.storage import load_frames, read_video

    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="decode-bench-"))
    project, ids = make_project(tmp, args.trajectories, args.steps)
    view = RankingView(Settings(str(tmp / "settings.ini")))
    view.resize(1100, 700)
    view.show()
    view.set_project(project)

    def inline() -> None:  # the old path: every decode on the GUI thread
        for iid in ids:
            traj = project.get_item(iid)
            mid = traj["length"] // 2
            read_video(project.abspath(traj["media_path"]), mid, mid + 1)
        load_frames(project, project.get_item(ids[0]))
        box["inline_done"] = True

    def worker_done() -> bool:
        icons = all(not view.list.item(i).icon().isNull() for i in range(view.list.count()))
        return view.list.count() == len(ids) and icons and view.preview.frames is not None

    box: dict = {}
    rows = {"inline": [], "worker": []}
    for _ in range(args.repeats):
        box.clear()
        rows["inline"].append(run_with_timer(inline, lambda: box.get("inline_done", False)))
        view.set_project(project)  # empty cache: the worker decodes everything again
        rows["worker"].append(run_with_timer(lambda: view.load_items(ids), worker_done))
    frames = int(view.preview.frames.shape[0])
    project.close()

    med = {k: (float(np.median([r[0] for r in v])), float(np.median([r[1] for r in v]))) for k, v in rows.items()}
    print(json.dumps({
        "benchmark": "video_decode_gui", "trajectories": len(ids), "frames_per_video": frames,
        "repeats": args.repeats, "python": platform.python_version(), "cpus": os.cpu_count(),
        "inline_max_stall_ms": round(med["inline"][0], 1), "worker_max_stall_ms": round(med["worker"][0], 1),
        "inline_seconds_to_screen": round(med["inline"][1], 3), "worker_seconds_to_screen": round(med["worker"][1], 3),
        "stall_ratio_worker_over_inline": round(med["worker"][0] / max(med["inline"][0], 1e-9), 3),
        "time_ratio_worker_over_inline": round(med["worker"][1] / max(med["inline"][1], 1e-9), 3),
        "all_runs": {k: [[round(a, 1), round(b, 3)] for a, b in v] for k, v in rows.items()},
    }))


if __name__ == "__main__":
    main()
