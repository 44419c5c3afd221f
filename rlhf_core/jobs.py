"""Long tasks as plain functions: ``fn(config, ctx)``.

A job function receives its validated config dataclass and a :class:`JobContext`. It reports
through the context and checks for cancellation at every step boundary::

    def train_foo(config: FooConfig, ctx: JobContext) -> dict:
        for step in range(config.steps):
            ctx.raise_if_cancelled()
            ...
            ctx.metrics(step, {"train/loss": loss})
            ctx.progress(step + 1, config.steps)
        return {"final_loss": loss}          # JSON-able result, stored with the run

A job of several phases gives each its share of the bar with ``with ctx.stage(lo, hi):`` so
that the bar rises once over the whole job. :class:`ProgressClock` turns the reports into elapsed
time, seconds per step and the time left (:class:`Timing`), the one estimate every view shows.

Contexts: :class:`RecordingContext` (tests), :class:`CliContext` (text progress bar on stderr),
and the GUI's Qt context (``app/jobs.py``), which only relays to signals. :func:`execute_job` is
the ONE place that turns a call into a run: it creates/updates the ``runs`` row, writes metrics
and samples to the project database from the job's own thread and connection, applies the torch
thread count, and records completed / cancelled / failed (with the traceback).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rlhf_core import config as cfg
from rlhf_core.registry import JobSpec, get_job, list_jobs, register_job  # noqa: F401  (the job API)
from rlhf_core.io.tensorboard import FOLDER as TENSORBOARD_FOLDER, TensorBoardSink
from rlhf_core.runtime import set_torch_threads, tensorboard_enabled
from rlhf_core.store import Project

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a job by :meth:`JobContext.raise_if_cancelled` after a cancel request."""


# ---------------------------------------------------------------------------- timing
def format_duration(seconds: float) -> str:
    """``42 s``, ``3 m 05 s``, ``1 h 02 m``: a duration for a person."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} m {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} m"


@dataclasses.dataclass(frozen=True)
class Timing:
    """How long a running job has taken and how long it may still take (seconds; None: not known yet).
    ``step``/``total`` are the counts the job reported last (None when it reports fractions only)."""

    elapsed: float
    fraction: float = 0.0
    step: int | None = None
    total: int | None = None
    seconds_per_step: float | None = None
    remaining: float | None = None

    def aged(self, seconds: float) -> Timing:
        """The same estimate ``seconds`` later: elapsed grows, the time left shrinks (never below 0)."""
        seconds = max(0.0, seconds)
        left = None if self.remaining is None else max(0.0, self.remaining - seconds)
        return dataclasses.replace(self, elapsed=self.elapsed + seconds, remaining=left)

    def rate_text(self) -> str:
        """``40.1 s/step`` (or ``12.5 steps/s`` for fast steps); '' without counts."""
        sps = self.seconds_per_step
        if sps is None or sps <= 0:
            return ""
        return f"{sps:.1f} s/step" if sps >= 1 else f"{1 / sps:.1f} steps/s"

    def eta_text(self) -> str:
        """``about 31 m 20 s left``; ``estimating time left…`` before the second step."""
        if self.remaining is None:
            return "estimating time left…"
        return f"about {format_duration(self.remaining)} left" if self.remaining >= 1 else "almost done"

    def text(self) -> str:
        """``2 m 05 s elapsed · 40.1 s/step · about 31 m 20 s left``."""
        parts = [f"{format_duration(self.elapsed)} elapsed", self.rate_text(), self.eta_text()]
        return " · ".join(p for p in parts if p)

    def short_text(self, rate: bool = False) -> str:
        """``2 m 05 s · ~31 m 20 s left`` (a table cell; :meth:`text` for its tooltip); with ``rate``
        ``2 m 05 s · 40.1 s/step · ~31 m 20 s left``."""
        left = "estimating…" if self.remaining is None else f"~{format_duration(self.remaining)} left"
        return " · ".join(p for p in (format_duration(self.elapsed), self.rate_text() if rate else "", left) if p)


class ProgressClock:
    """Elapsed time, seconds per step and time left from one job's progress reports.

    The rate is measured over the last ``window`` steps (reports with counts: ``progress(3, 50)``),
    or over the last ``window`` rises of the fraction for jobs that report fractions only. The first
    step is left out as soon as a later one is measured: it also pays for loading the model and
    warming up, and would inflate every estimate. Counts count toward the job's end only while they
    are the job's own fraction (no :meth:`JobContext.stage` in between); otherwise the time left
    comes from how fast the fraction rises. A new series (another total, or a count or fraction
    that goes back) starts the measurement again.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, window: int = 10):
        self.clock = clock
        self.window = max(1, int(window))
        self.restart()

    def restart(self) -> None:
        self.started = self.clock()
        self.fraction = 0.0
        self.total: int | None = None
        self._steps: list[tuple[float, int]] = []  # (when first seen, step): the last window + 2
        self._n_steps = 0  # how many step values this series has seen
        self._fractions: list[tuple[float, float]] = []  # (when, fraction) at each rise
        self._n_fractions = 0
        self._counts_are_fraction = False

    def update(self, fraction: float, step: int | None = None, total: int | None = None) -> None:
        now = self.clock()
        if step is not None and total:
            step, total = int(step), int(total)
            if total != self.total or (self._steps and step < self._steps[-1][1]):
                self.total, self._steps, self._n_steps = total, [], 0
            if not self._steps or step > self._steps[-1][1]:
                self._steps.append((now, step))
                self._n_steps += 1
                del self._steps[:-(self.window + 2)]
            self._counts_are_fraction = abs(fraction - step / total) < 1e-9
        else:
            self._counts_are_fraction = False
        if fraction < self.fraction - 1e-12:  # the bar went back: another phase, measured afresh
            self._fractions, self._n_fractions = [], 0
        if not self._fractions or fraction > self._fractions[-1][1]:
            self._fractions.append((now, fraction))
            self._n_fractions += 1
            del self._fractions[:-(self.window + 2)]
        self.fraction = fraction

    @staticmethod
    def _rate(points: list, seen: int, window: int) -> tuple[float, float, float] | None:
        """(time per unit, last time, last value) over the last ``window`` intervals, the series'
        first interval left out once there is another."""
        if len(points) < 2:
            return None
        first = 1 if seen == len(points) and len(points) >= 3 else 0
        start = max(first, len(points) - 1 - window)
        (t0, v0), (t1, v1) = points[start], points[-1]
        if v1 <= v0 or t1 <= t0:
            return None
        return (t1 - t0) / (v1 - v0), t1, v1

    def timing(self) -> Timing:
        now = self.clock()
        elapsed = now - self.started
        sps = remaining = None
        step = self._steps[-1][1] if self._steps else None
        steps = self._rate(self._steps, self._n_steps, self.window)
        if steps is not None:
            sps, t_last, last = steps
            if self._counts_are_fraction and self.total:
                remaining = max(0.0, (self.total - last) * sps - (now - t_last))
        if remaining is None:
            frac = self._rate(self._fractions, self._n_fractions, self.window)
            if frac is not None:
                per_unit, t_last, last = frac
                remaining = max(0.0, (1.0 - last) * per_unit - (now - t_last))
        if self.fraction >= 1.0:
            remaining = 0.0
        return Timing(elapsed=elapsed, fraction=self.fraction, step=step,
                      total=self.total if step is not None else None, seconds_per_step=sps, remaining=remaining)


class JobContext:
    """What a job sees of the outside world. Subclasses override the ``_on_*`` hooks."""

    def __init__(self, cancel_event: threading.Event | None = None):
        self._cancel = cancel_event or threading.Event()
        self.run_id: int | None = None
        self.project_path: Path | None = None
        self._project = None
        self._project_thread: int | None = None
        self.resume_from = None  # a rlhf_core.resume.TrainingState when this run continues an earlier one
        self._metric_sinks: list[Callable[[int, dict[str, float]], None]] = []
        self._sample_sinks: list[Callable[[str, Any, int | None], None]] = []
        self.clock = ProgressClock()
        self._span = (0.0, 1.0)  # the part of the job's bar that progress() fills now (see stage)

    # --- reporting -------------------------------------------------------------------------
    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report progress: ``progress(3, 10)`` or ``progress(0.3)`` (a fraction; of the current
        :meth:`stage` when inside one)."""
        if total:
            fraction = float(done) / float(total)
        else:
            fraction = float(done)
        lo, hi = self._span
        fraction = lo + (hi - lo) * min(max(fraction, 0.0), 1.0)
        whole = bool(total) and float(done).is_integer() and float(total).is_integer()
        self.clock.update(fraction, *((int(done), int(total)) if whole else (None, None)))
        self._on_progress(fraction, message)

    @contextlib.contextmanager
    def stage(self, start: float, end: float) -> Iterator[None]:
        """Inside, progress() fills only ``[start, end]`` of the current span (stages nest), so a job
        of several phases fills its bar once, reaching 1 only when its last phase does."""
        lo, hi = self._span
        outer = self._span
        self._span = (lo + (hi - lo) * start, lo + (hi - lo) * end)
        try:
            yield
        finally:
            self._span = outer

    def timing(self) -> Timing:
        """Elapsed time, seconds per step and time left, from the reports so far."""
        return self.clock.timing()

    def _restart_progress(self) -> None:
        """A new job starts on this context: its bar and clock from zero."""
        self._span = (0.0, 1.0)
        self.clock.restart()

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        """Log scalar metrics for one step: ``{key: value}`` with namespaced keys (see metrics.py)."""
        clean = {}
        for key, value in values.items():
            if value is None:
                continue
            v = float(value)
            clean[str(key)] = v if math.isfinite(v) else float("nan")
        if not clean:
            return
        for sink in self._metric_sinks:
            sink(int(step), clean)
        self._on_metrics(int(step), clean)

    def sample(self, kind: str, payload: Any, step: int | None = None) -> None:
        """Publish a sample (a new clip, a generation, ...). ``payload`` must be JSON-able."""
        for sink in self._sample_sinks:
            sink(kind, payload, step)
        self._on_sample(kind, payload, step)

    def log(self, message: str) -> None:
        self._on_log(message)

    # --- cancellation ----------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def raise_if_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled("cancelled")

    # --- the project -----------------------------------------------------------------------
    def project(self):
        """The job's own connection to the project (opened lazily in the calling thread)."""
        if self.project_path is None:
            raise RuntimeError("this job runs without a project")
        if self._project is None or self._project_thread != threading.get_ident():
            self._project = Project.open(self.project_path, check=False)
            self._project_thread = threading.get_ident()
        return self._project

    def save_state(self, step: int, tensors: dict, extra: dict | None = None, files: dict | None = None) -> None:
        """Save what resuming this run after ``step`` needs (see :mod:`rlhf_core.resume`; ``files``: name ->
        bytes or a path, e.g. an SB3 model's zip); nothing without a stored run."""
        if self.project_path is None or self.run_id is None:
            return
        from rlhf_core.resume import save_state  # start-up: imports torch

        for sink in self._metric_sinks:  # the steps the state covers are in the database before it
            flush = getattr(sink, "flush", None)
            if flush is not None:
                flush()
        project = self.project()
        save_state(project.run_folder(self.run_id), step, tensors, extra, files,
                   checkpoints=[c["id"] for c in project.checkpoints(self.run_id)])

    # --- hooks -----------------------------------------------------------------------------
    def _on_progress(self, fraction: float, message: str) -> None:
        pass

    def _on_metrics(self, step: int, values: dict[str, float]) -> None:
        pass

    def _on_sample(self, kind: str, payload: Any, step: int | None) -> None:
        pass

    def _on_log(self, message: str) -> None:
        pass

    def _on_status(self, status: str) -> None:
        pass


class ChildContext(JobContext):
    """The context of a job run as one step of another (a round, a demo): the parent's Cancel stops it, its
    bar fills ``[lo, hi]`` of the parent's, its log lines go to the parent's log under ``name``. Its
    metrics and samples stay with its own run."""

    def __init__(self, parent: JobContext, lo: float, hi: float, name: str):
        super().__init__()
        self.parent, self.lo, self.hi, self.name = parent, lo, hi, name

    @property
    def cancelled(self) -> bool:
        return self.parent.cancelled

    def cancel(self) -> None:
        self.parent.cancel()

    def raise_if_cancelled(self) -> None:
        if self.parent.cancelled:
            raise JobCancelled("cancelled")

    def _on_progress(self, fraction: float, message: str) -> None:
        with self.parent.stage(self.lo, self.hi):
            self.parent.progress(fraction, message=f"{self.name}: {message}" if message else self.name)

    def _on_log(self, message: str) -> None:
        self.parent.log(f"{self.name}: {message}")


class NullContext(JobContext):
    """A context that ignores everything (for calling a job function as a library call)."""


class RecordingContext(JobContext):
    """Records every report; optionally cancels itself after ``cancel_after_metrics`` metric calls."""

    def __init__(self, cancel_after_metrics: int | None = None):
        super().__init__()
        self.progress_log: list[tuple[float, str]] = []
        self.metric_log: list[tuple[int, dict[str, float]]] = []
        self.sample_log: list[tuple[str, Any, int | None]] = []
        self.messages: list[str] = []
        self._cancel_after = cancel_after_metrics

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress_log.append((fraction, message))

    def _on_metrics(self, step: int, values: dict[str, float]) -> None:
        self.metric_log.append((step, values))
        if self._cancel_after is not None and len(self.metric_log) >= self._cancel_after:
            self.cancel()

    def _on_sample(self, kind: str, payload: Any, step: int | None) -> None:
        self.sample_log.append((kind, payload, step))

    def _on_log(self, message: str) -> None:
        self.messages.append(message)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        steps = [s for s, v in self.metric_log if key in v]
        values = [v[key] for s, v in self.metric_log if key in v]
        return steps, values


class CliContext(JobContext):
    """Draws a text progress bar on stderr (redrawn in place on a terminal, else every 10 %)."""

    def __init__(self, stream=None, width: int = 30, title: str = ""):
        super().__init__()
        self.stream = stream or sys.stderr
        self.width = width
        self.title = title
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1
        self._last_draw = 0.0

    def _on_progress(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if self._tty:
            if now - self._last_draw < 0.1 and fraction < 1.0:
                return
            self._last_draw = now
            self.stream.write("\r" + self._bar(fraction, message, now) + "\x1b[K")
            if fraction >= 1.0:
                self.stream.write("\n")
        else:
            decile = int(fraction * 10)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(self._bar(fraction, message, now) + "\n")
        self.stream.flush()

    def _bar(self, fraction: float, message: str, now: float) -> str:
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        head = f"{self.title} " if self.title else ""
        timing = self.timing()
        return f"{head}[{bar}] {fraction * 100:5.1f}% {timing.text()}  {message}".rstrip()

    def _on_log(self, message: str) -> None:
        if self._tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(message + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------------- execution
@dataclasses.dataclass
class JobOutcome:
    run_id: int | None
    status: str  # completed | cancelled | failed
    result: Any = None
    error: str | None = None  # the traceback (stored with the run and logged)
    wall_seconds: float = 0.0
    message: str | None = None  # the failure in one line, for a person


def failure_message(exc: BaseException) -> str:
    """A failure in one line: the exception's own message (its type where it has none)."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    if isinstance(exc, (KeyError, AttributeError, TypeError, IndexError, ZeroDivisionError, AssertionError,
                        RecursionError, MemoryError, NameError, OverflowError, UnicodeError)):
        return f"{type(exc).__name__}: {text}"
    return text


class _DbMetricWriter:
    """Buffers metric rows and writes them in one transaction every ``interval`` seconds."""

    def __init__(self, ctx: JobContext, run_id: int, interval: float = 0.5):
        self.ctx = ctx
        self.run_id = run_id
        self.interval = interval
        self.buffer: list[tuple[int, dict[str, float], float]] = []
        self.last_flush = time.monotonic()

    def __call__(self, step: int, values: dict[str, float]) -> None:
        self.buffer.append((step, values, time.time()))
        if time.monotonic() - self.last_flush >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            rows, self.buffer = self.buffer, []
            self.ctx.project().log_metric_rows(self.run_id, rows)
        self.last_flush = time.monotonic()


def execute_job(
    job: JobSpec | Callable[[Any, JobContext], Any],
    config: Any,
    ctx: JobContext,
    *,
    project_path: str | Path | None = None,
    run_id: int | None = None,
    kind: str | None = None,
    torch_threads: int | None = None,
    resume_from: Any = None,
    parent_run_id: int | None = None,
) -> JobOutcome:
    """Run one job to its end in the calling thread and record it as a run.

    With ``project_path`` the run is stored: ``run_id`` names an existing (queued) run, or a new
    one is created. Exceptions never escape: a failure is returned (and stored) with its
    traceback, a cancellation as status ``cancelled``. ``resume_from`` (a training state of run
    ``run_id``) continues that run: see :func:`resume_run`.
    """
    if isinstance(job, JobSpec):
        fn, _ = job.load()
        kind = kind or job.name
    else:
        fn = job
        kind = kind or getattr(fn, "__name__", "job")
    started = time.monotonic()
    ctx._restart_progress()
    writer: _DbMetricWriter | None = None
    events: TensorBoardSink | None = None
    project = None
    status, result, error, message = "failed", None, None, None
    try:
        cfg.validate(config)
        if project_path is not None:
            ctx.project_path = Path(project_path)
            project = ctx.project()
            if run_id is None:
                run_id = project.create_run(kind, cfg.to_dict(config), status="queued",
                                            parent_run_id=parent_run_id)
            ctx.run_id = run_id
            project.start_run(run_id)
            writer = _DbMetricWriter(ctx, run_id)
            ctx._metric_sinks.append(writer)
            if tensorboard_enabled():  # the metrics also as TensorBoard event files, in the run's folder
                events = TensorBoardSink(project.run_folder(run_id, create=False) / TENSORBOARD_FOLDER,
                                         resume_step=getattr(resume_from, "step", None))
                ctx._metric_sinks.append(events)
            ctx._sample_sinks.append(
                lambda k, p, s: ctx.project().add_sample(run_id, k, p, step=s)  # type: ignore[arg-type]
            )
        ctx.resume_from = resume_from
        ctx._on_status("running")
        set_torch_threads(torch_threads)
        ctx.raise_if_cancelled()
        result = fn(config, ctx)
        status = "completed"
    except JobCancelled:
        status = "cancelled"
    except KeyboardInterrupt:  # Ctrl+C twice in a terminal: stored as cancelled (not failed with no error)
        status, error = "cancelled", "Cancelled: stopped with Ctrl+C."
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a job must never take the app down (nor its thread)
        status = "failed"
        error = traceback.format_exc()
        message = failure_message(exc)
    finally:
        wall = time.monotonic() - started
        if writer is not None:
            try:
                writer.flush()
            except Exception as exc:  # noqa: BLE001
                error = (error or "") + "\nWhile saving metrics:\n" + traceback.format_exc()
                message = message or f"the metrics could not be saved: {failure_message(exc)}"
                status = "failed"
        if project is not None and run_id is not None:
            try:
                project.finish_run(run_id, status, error=error, result=_jsonable(result))
            except Exception as exc:  # noqa: BLE001
                error = (error or "") + "\nWhile saving the run:\n" + traceback.format_exc()
                message = message or f"the run could not be saved: {failure_message(exc)}"
                status = "failed"
        if events is not None:
            events.close()  # never raises: a failed write only stops the event file
        if ctx._project is not None:
            ctx._project.close()
            ctx._project = None
        ctx._metric_sinks.clear()
        ctx._sample_sinks.clear()
    if error:
        log.error("job %s (run %s) failed: %s\n%s", kind, run_id, message, error)
    ctx._on_status(status)
    return JobOutcome(run_id=run_id, status=status, result=result, error=error, wall_seconds=wall,
                      message=message)


class ResumeError(ValueError):
    """A run cannot be resumed; ``str(error)`` says why."""


RESUMABLE_STATUSES = ("cancelled", "failed")


def resumable(project, run_id: int) -> str | None:
    """Why run ``run_id`` cannot be resumed, or None when it can."""
    from rlhf_core.resume import has_state  # start-up: the resume module imports numpy

    run = project.get_run(run_id)
    if run is None:
        return f"Run {run_id} does not exist."
    if run["status"] not in RESUMABLE_STATUSES:
        return f"Run {run_id} is {run['status']}; only a cancelled, failed or interrupted run resumes."
    if not has_state(project.run_folder(run_id, create=False)):
        return (f"Run {run_id} ({run['kind']}) saved no resumable state: it stopped before its first save "
                "(set save_steps to save one every N steps), or its job cannot resume.")
    return None


def resume_run(project_path: str | Path, run_id: int, ctx: JobContext, *,
               torch_threads: int | None = None) -> JobOutcome:
    """Continue a cancelled, failed or interrupted run from its last saved state, as the same run: the
    metrics and samples it logged after that state are replaced by the continuation's."""
    from rlhf_core.resume import load_state  # start-up: imports torch

    with Project.open(project_path) as project:
        project.mark_interrupted_runs()
        why = resumable(project, run_id)
        if why is not None:
            raise ResumeError(why)
        run = project.get_run(run_id)
        spec = get_job(run["kind"])
        config = cfg.from_dict(spec.config_class(), run["config"], strict=False)
        state = load_state(project.run_folder(run_id))
        project.discard_after(run_id, state.step)
        if state.checkpoints is not None:  # added by a killed run after its state: the continuation adds them
            project.delete_checkpoints(c["id"] for c in project.checkpoints(run_id) if c["id"] not in state.checkpoints)
    return execute_job(spec, config, ctx, project_path=project_path, run_id=run_id, torch_threads=torch_threads,
                       resume_from=state)


def _jsonable(value: Any) -> Any:
    """A job's result as JSON the database accepts: NaN and infinities (no JSON for them) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    try:
        number = float(value)  # numpy and torch scalars
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None
