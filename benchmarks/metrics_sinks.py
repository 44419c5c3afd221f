"""What the TensorBoard sink costs a job, and how long a run report takes to write.

1. A job that only logs metrics (``--keys`` keys per step, ``--steps`` steps) runs through ``execute_job`` into a
   real project, with the TensorBoard sink off and on, alternating, ``--repeats`` times each: metric calls per
   second (median) and the ratio. Any real job does work between its metric calls, so this is the worst case;
   the fastest real job, ``synthetic_preferences`` (a metrics call every ~1.5 ms step), is timed the same way.
2. ``write_report`` for a run of that size plus ``--samples`` text samples (the Runs page writes reports in the
   GUI thread: it has to stay well under a second).

    .venv/bin/python benchmarks/metrics_sinks.py [--steps 20000] [--keys 8] [--repeats 3] [--samples 500]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RLHF_WORKBENCH_HOME", tempfile.mkdtemp(prefix="wb-bench-home-"))

from rlhf_core.io.report import write_report  # noqa: E402
from rlhf_core.io.tensorboard import FOLDER  # noqa: E402
from rlhf_core.jobs import NullContext, execute_job, get_job  # noqa: E402
from rlhf_core.runtime import set_tensorboard_enabled  # noqa: E402
from rlhf_core.store import Project  # noqa: E402
from rlhf_core.trainers.control.synthetic_preferences import SyntheticPreferenceConfig  # noqa: E402

KEYS = ["reward/mean", "reward/std", "kl/token_mean", "kl/seq_mean", "completions/mean_length", "train/loss",
        "train/grad_norm", "time/steps_per_second", "gold/reward", "kl/beta"]


@dataclass
class NoSettings:
    pass


def make_job(steps: int, keys: list[str], samples: int):
    every = max(1, steps // samples) if samples else 0

    def logging_job(config, ctx):
        for step in range(steps):
            ctx.metrics(step, {key: 1.0 / (step + 1 + i) for i, key in enumerate(keys)})
            if every and step % every == 0:
                ctx.sample("text_rl", {"step": step, "prompt": "What is 2 + 2? " * 4,
                                       "response": "<think>add</think><answer>4</answer> " * 20,
                                       "reward": 1.0, "length": 40}, step=step)
        return {"steps": steps}

    return logging_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    keys = KEYS[:args.keys]
    folder = Path(tempfile.mkdtemp(prefix="wb-bench-sinks-")) / "p.rlhf"
    project = Project.create(folder)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for mode in ("off", "on"):
            set_tensorboard_enabled(mode == "on")
            t0 = time.perf_counter()  # the whole run: the sinks' last writes and closing included
            out = execute_job(make_job(args.steps, keys, 0), NoSettings(), NullContext(), project_path=folder,
                              kind="bench")
            rates[mode].append(args.steps / (time.perf_counter() - t0))
            assert out.status == "completed", out.error
            if mode == "on":
                events = list((project.run_folder(out.run_id, create=False) / FOLDER).glob("events.*"))
                event_bytes = sum(p.stat().st_size for p in events)
    job_rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.repeats + 1):
        for mode in ("off", "on"):
            set_tensorboard_enabled(mode == "on")
            t0 = time.perf_counter()
            out = execute_job(get_job("synthetic_preferences"), SyntheticPreferenceConfig(steps=600, eval_every=100),
                              NullContext(), project_path=folder)
            job_rates[mode].append(600 / (time.perf_counter() - t0))
    set_tensorboard_enabled(False)
    out = execute_job(make_job(args.steps, keys, args.samples), NoSettings(), NullContext(), project_path=folder,
                      kind="grpo")
    last_run = out.run_id
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        path = write_report(project, last_run, folder.parent / "report")
        times.append(time.perf_counter() - t0)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    print(json.dumps({
        "steps": args.steps, "keys": len(keys),
        "metric_calls_per_s_off": round(off), "metric_calls_per_s_on": round(on),
        "tensorboard_ratio": round(on / off, 3), "tensorboard_us_per_call": round(1e6 / on - 1e6 / off, 1),
        "event_file_bytes": event_bytes,
        "synthetic_preferences_steps_per_s_off": round(statistics.median(job_rates["off"]), 1),
        "synthetic_preferences_steps_per_s_on": round(statistics.median(job_rates["on"]), 1),
        "report_rows": args.steps * len(keys), "report_samples": len(project.samples(last_run)),
        "report_seconds_median": round(statistics.median(times), 3), "report_bytes": path.stat().st_size,
    }))


if __name__ == "__main__":
    main()
