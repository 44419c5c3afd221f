"""Online preference RL with a person labelling: waiting for every answer vs training on while the person labels.

A thread plays the person in Label clips (a PairSession on its own connection, each label a ``claim_pair``, as
the page writes them): it takes ``--delay`` seconds per pair and prefers the clip whose pole stays more upright
(CartPole: smaller mean |angle|; Pendulum: larger mean cos angle). The same run twice: ``max_wait_seconds`` =
600 (every round waits for all its answers, the behaviour before the asynchronous mode) and 0 with
``refit_after`` (PPO never waits; the reward refits between updates as labels arrive). Reports wall time, the
seconds PPO stood still, the seconds in PPO and between rounds, the PPO steps of rounds that began with queries
waiting, labels used and the final true return. JSON last line.

    .venv/bin/python benchmarks/preference_rl_async.py [--env CartPole-v1] [--delay 1.0] [--rounds 6] [--steps 8192]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rlhf_core.envs.storage import load_arrays  # noqa: E402
from rlhf_core.jobs import JobContext, execute_job, get_job  # noqa: E402
from rlhf_core.labelers.session import PairSession  # noqa: E402
from rlhf_core.store import Project  # noqa: E402
from rlhf_core.trainers.control.preference_rl import PreferenceRLConfig  # noqa: E402


def upright(obs: np.ndarray) -> float:
    """How upright the pole stays in a clip, as a person would judge it (higher is better)."""
    if obs.shape[1] == 3:  # Pendulum: cos(angle)
        return float(obs[:, 0].mean())
    return -float(np.abs(obs[:, 2]).mean())  # CartPole: the pole's angle


class Person(threading.Thread):
    """Answers the clip pairs of the queue, ``delay`` seconds each: the clip whose pole stays more upright wins."""

    def __init__(self, folder: Path, delay: float):
        super().__init__(daemon=True)
        self.folder, self.delay = folder, delay
        self.stop = threading.Event()
        self.answers: list[float] = []  # time.monotonic() of each label

    def run(self) -> None:
        with Project.open(self.folder, check=False) as project:
            session = PairSession(project, "clip")
            while not self.stop.is_set():
                pending = session.upcoming(1)
                if not pending:
                    time.sleep(0.05)
                    continue
                pair = pending[0]
                session.show(pair)
                tilt = [upright(load_arrays(project, project.get_item(pair[k]))["observations"])
                        for k in ("left_id", "right_id")]
                if self.stop.wait(self.delay):
                    break
                step = session.label("left" if tilt[0] > tilt[1] else "right" if tilt[1] > tilt[0] else "tie", "bench")
                session.labelled(step.given, step.fn(project))
                self.answers.append(time.monotonic())


class Timed(JobContext):
    """Times the PPO round ends (``rollout/true_return``) and the labels reports (``preferences/waiting``: at a
    round's end, after its wait and refit, and at refits between PPO updates)."""

    def __init__(self):
        super().__init__()
        self.ppo: list[tuple[float, int]] = []  # (time, PPO steps) at each round end
        self.waiting: list[tuple[float, int, float]] = []  # (time, step, open queries)

    def _on_metrics(self, step, values):
        if "rollout/true_return" in values:
            self.ppo.append((time.monotonic(), step))
        if "preferences/waiting" in values:
            self.waiting.append((time.monotonic(), step, values["preferences/waiting"]))

    def phases(self, steps: int) -> tuple[float, float]:
        """Seconds in PPO (round starts to round ends, refits between updates included) and between rounds
        (roll-outs, clips, queries, waits, round-end refits)."""
        ends = {step: t for t, step in self.ppo}
        starts = {step: t for t, step, _ in self.waiting}  # the last report at a step: the round's end
        ppo = sum(ends[s] - starts[s - steps] for s in ends if s - steps in starts)
        between = sum(starts[s] - ends[s] for s in ends if s in starts)
        return ppo, between


def one(mode: str, args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"pref-async-{mode}-")) / "bench.rlhf"
    Project.create(folder).close()
    config = PreferenceRLConfig(
        env_id=args.env, labeller="human", rounds=args.rounds, steps_per_round=args.steps,
        initial_labels=args.labels, labels_per_round=args.labels, label_decay=1.0, min_labels_to_start=args.labels,
        clip_length=args.clip_length, episodes_per_round=4, members=3, reward_steps=200, seed=args.seed,
        max_wait_seconds=600.0 if mode == "wait" else 0.0, refit_after=max(1, args.labels // 2))
    person = Person(folder, args.delay)
    person.start()
    ctx = Timed()
    t0 = time.monotonic()
    out = execute_job(get_job("preference_rl"), config, ctx, project_path=folder)
    wall = time.monotonic() - t0
    person.stop.set()
    person.join(10)
    if out.status != "completed":
        raise SystemExit(f"{mode}: {out.status}: {out.message}")
    # PPO steps of the rounds that began with queries still waiting (the value logged at the round's start)
    waiting_at = {step: n for _, step, n in ctx.waiting}  # a round end's value is the last one at its step
    steps_while_open = sum(args.steps for k in range(args.rounds) if waiting_at.get(k * args.steps, 0) > 0)
    with Project.open(folder, check=False) as p:
        queue = p.run_queue(out.run_id)
    r = out.result
    ppo_s, between_s = ctx.phases(args.steps)
    return {"mode": mode, "wall_s": round(wall, 1), "ppo_idle_waiting_s": r["waited_seconds"],
            "ppo_s": round(ppo_s, 1), "between_rounds_s": round(between_s, 1),
            "ppo_steps": ctx.ppo[-1][1] if ctx.ppo else 0, "ppo_steps_begun_with_queries_open": steps_while_open,
            "labels_used": r["labels"], "answered_by_end": len(person.answers),
            "left_unanswered": sum(1 for q in queue if q["outcome"] is None), "refits": r["refits"],
            "final_true_return": round(r["final_true_return"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="CartPole-v1", choices=("CartPole-v1", "Pendulum-v1"))
    ap.add_argument("--clip-length", type=int, default=5)
    ap.add_argument("--delay", type=float, default=1.0, help="seconds the person takes per pair")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=8192, help="PPO steps per round")
    ap.add_argument("--labels", type=int, default=6, help="queries per round (round 0 too)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [one(mode, args) for mode in ("wait", "async")]
    for row in rows:
        print(row)
    print(json.dumps({"rows": rows, "args": vars(args), "python": platform.python_version(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
