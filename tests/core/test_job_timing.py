"""Elapsed time, seconds per step and time left (ProgressClock / Timing) and progress stages."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest

from rlhf_core.jobs import CliContext, ProgressClock, RecordingContext, Timing, execute_job, format_duration


class Clock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def at(clock: Clock, progress: ProgressClock, t: float, *args) -> None:
    clock.now = t
    progress.update(*args)


def test_eta_from_a_known_step_time_sequence_leaves_out_the_slow_first_step():
    # GRPO-like: 20 s loading, a first step of 80 s (warm-up), then 40 s a step; 50 steps
    clock = Clock()
    p = ProgressClock(clock)
    at(clock, p, 0.0, 0.0)  # "Loading the policy"
    at(clock, p, 20.0, 0.0, 0, 50)  # step 0 begins
    t = p.timing()
    assert (t.elapsed, t.seconds_per_step, t.remaining, t.step, t.total) == (20.0, None, None, 0, 50)
    assert t.text() == "20 s elapsed · estimating time left…"
    at(clock, p, 100.0, 1 / 50, 1, 50)  # only the first step is known: it is all there is
    t = p.timing()
    assert t.seconds_per_step == pytest.approx(80.0) and t.remaining == pytest.approx(49 * 80.0)
    for step in range(2, 6):
        at(clock, p, 100.0 + 40.0 * (step - 1), step / 50, step, 50)
    t = p.timing()  # t = 260: the first step's 80 s are left out
    assert t.seconds_per_step == pytest.approx(40.0)
    assert t.remaining == pytest.approx(45 * 40.0) and t.elapsed == pytest.approx(260.0)
    assert t.text() == "4 m 20 s elapsed · 40.0 s/step · about 30 m 00 s left"
    clock.now = 270.0  # between reports the estimate counts down
    t = p.timing()
    assert t.remaining == pytest.approx(1790.0) and t.elapsed == pytest.approx(270.0)
    assert t.short_text() == "4 m 30 s · ~29 m 50 s left"
    assert t.short_text(rate=True) == "4 m 30 s · 40.0 s/step · ~29 m 50 s left"


def test_the_rate_follows_the_last_steps():
    clock = Clock()
    p = ProgressClock(clock, window=4)
    at(clock, p, 0.0, 0.0, 0, 100)
    t = 0.0
    for step in range(1, 11):  # 10 s a step
        t += 10.0
        at(clock, p, t, step / 100, step, 100)
    for step in range(11, 15):  # then 2 s a step: the last 4 steps decide
        t += 2.0
        at(clock, p, t, step / 100, step, 100)
    timing = p.timing()
    assert timing.seconds_per_step == pytest.approx(2.0) and timing.remaining == pytest.approx(86 * 2.0)
    assert timing.rate_text() == "2.0 s/step"


def test_fast_steps_read_as_steps_per_second_and_repeated_reports_do_not_count():
    clock = Clock()
    p = ProgressClock(clock)
    for i, t in enumerate([0.0, 1.0, 1.5, 2.0, 2.5]):
        at(clock, p, t, i * 10 / 1000, i * 10, 1000)
        at(clock, p, t + 0.2, i * 10 / 1000, i * 10, 1000)  # the same step again (a message only)
    timing = p.timing()
    assert timing.seconds_per_step == pytest.approx(0.05)  # (2.5 - 1.0) s / 30 steps
    assert timing.rate_text() == "20.0 steps/s"


def test_fraction_only_jobs_and_stages_get_a_time_left_from_the_fraction():
    clock = Clock()
    p = ProgressClock(clock)
    at(clock, p, 0.0, 0.0)
    at(clock, p, 30.0, 0.1)  # loading: slow, left out once there is more
    at(clock, p, 40.0, 0.2)
    at(clock, p, 50.0, 0.3)
    timing = p.timing()
    assert timing.seconds_per_step is None and timing.remaining == pytest.approx(70.0)
    # counts of a stage (its own 0..n) are no clock for the job: the fraction is
    at(clock, p, 60.0, 0.4, 5, 10)
    timing = p.timing()
    assert timing.remaining == pytest.approx(60.0) and timing.step == 5


def test_a_new_series_starts_the_measurement_again():
    clock = Clock()
    p = ProgressClock(clock)
    at(clock, p, 0.0, 0.0, 0, 10)
    at(clock, p, 100.0, 1.0, 10, 10)  # e.g. a one-time model conversion filled the bar
    at(clock, p, 101.0, 0.0, 0, 50)  # then training starts from 0
    at(clock, p, 105.0, 0.02, 1, 50)
    at(clock, p, 109.0, 0.04, 2, 50)
    at(clock, p, 113.0, 0.06, 3, 50)
    timing = p.timing()
    assert timing.seconds_per_step == pytest.approx(4.0) and timing.remaining == pytest.approx(47 * 4.0)


def test_timing_ages_without_going_below_zero():
    t = Timing(elapsed=10.0, fraction=0.5, remaining=3.0)
    assert t.aged(5.0) == Timing(elapsed=15.0, fraction=0.5, remaining=0.0)
    assert t.aged(5.0).eta_text() == "almost done"
    assert [format_duration(s) for s in (0.4, 42, 185, 3720)] == ["0 s", "42 s", "3 m 05 s", "1 h 02 m"]


def test_stages_map_progress_into_their_part_of_the_bar():
    ctx = RecordingContext()
    ctx.progress(1, 10)
    with ctx.stage(0.2, 0.6):
        ctx.progress(5, 10)
        with ctx.stage(0.5, 1.0):  # nested: the second half of [0.2, 0.6]
            ctx.progress(0.5)
        ctx.progress(1.0)
    ctx.progress(0.9)
    assert [f for f, _ in ctx.progress_log] == pytest.approx([0.1, 0.4, 0.5, 0.6, 0.9])


@dataclass
class NoSettings:
    pass


def test_execute_job_starts_each_job_on_a_fresh_bar_and_clock():
    def job(config, ctx):
        with ctx.stage(0.0, 0.5):
            ctx.progress(3, 3, "first half")
            raise ValueError("stops inside its stage")

    def second(config, ctx):
        ctx.progress(1, 4)
        return ctx.timing()

    ctx = CliContext(stream=io.StringIO(), title="t")
    assert execute_job(job, NoSettings(), ctx).status == "failed"
    out = execute_job(second, NoSettings(), ctx)
    assert out.status == "completed", out.error
    timing = out.result
    assert timing.fraction == 0.25 and timing.step == 1 and timing.total == 4  # not inside the old stage
    assert "elapsed" in ctx.stream.getvalue()
