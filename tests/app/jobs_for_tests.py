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


@dataclass
class CountingConfig:
    steps: int = param(200, "Steps of 10 ms each; a resumable state after every one.", min=1)


def counting(config: CountingConfig, ctx) -> dict:
    """Counts steps; saves a resumable state after each and continues from one (rlhf_core.resume)."""
    import torch

    state = ctx.resume_from
    start = state.step + 1 if state is not None else 0
    resumed_from = state.step if state is not None else None
    for step in range(start, config.steps):
        ctx.raise_if_cancelled()
        time.sleep(0.01)
        ctx.metrics(step, {"test/step": float(step)})
        ctx.progress(step + 1, config.steps)
        ctx.save_state(step, {"count": torch.tensor(step)})
    return {"steps": config.steps, "resumed_from": resumed_from}


COUNTING = JobSpec(name="test_counting", title="Counting test job", description="Counts; resumable.",
                   target="tests.app.jobs_for_tests:counting", config="tests.app.jobs_for_tests:CountingConfig")
