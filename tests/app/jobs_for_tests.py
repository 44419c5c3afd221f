"""Jobs used only by the app tests (a failing one and a slow one)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rlhf_core.config import param
from rlhf_core.jobs import JobSpec


@dataclass
class SleepyConfig:
    steps: int = param(1000, "Steps of 20 ms each.", min=1)
    fail_at: int = param(-1, "Raise at this step (-1: never).")


def sleepy(config: SleepyConfig, ctx) -> dict:
    for step in range(config.steps):
        ctx.raise_if_cancelled()
        if step == config.fail_at:
            raise ValueError(f"deliberate failure at step {step}")
        time.sleep(0.02)
        ctx.metrics(step, {"test/step": float(step)})
        ctx.progress(step + 1, config.steps)
    return {"steps": config.steps}


SLEEPY = JobSpec(name="test_sleepy", title="Sleepy test job", description="Sleeps; may fail on purpose.",
                 target="tests.app.jobs_for_tests:sleepy", config="tests.app.jobs_for_tests:SleepyConfig")
