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

Contexts: :class:`RecordingContext` (tests), :class:`CliContext` (text progress bar on stderr),
and the GUI's Qt context (``app/jobs.py``), which only relays to signals. :func:`execute_job` is
the ONE place that turns a call into a run: it creates/updates the ``runs`` row, writes metrics
and samples to the project database from the job's own thread and connection, applies the torch
thread count, and records completed / cancelled / failed (with the traceback).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlhf_core import config as cfg
from rlhf_core.registry import JobSpec, get_job, list_jobs, register_job  # noqa: F401  (the job API)
from rlhf_core.runtime import set_torch_threads
from rlhf_core.store import Project

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a job by :meth:`JobContext.raise_if_cancelled` after a cancel request."""


class JobContext:
    """What a job sees of the outside world. Subclasses override the ``_on_*`` hooks."""

    def __init__(self, cancel_event: threading.Event | None = None):
        self._cancel = cancel_event or threading.Event()
        self.run_id: int | None = None
        self.project_path: Path | None = None
        self._project = None
        self._project_thread: int | None = None
        self._metric_sinks: list[Callable[[int, dict[str, float]], None]] = []
        self._sample_sinks: list[Callable[[str, Any, int | None], None]] = []

    # --- reporting -------------------------------------------------------------------------
    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report progress: ``progress(3, 10)`` or ``progress(0.3)`` (a fraction)."""
        if total:
            fraction = float(done) / float(total)
        else:
            fraction = float(done)
        fraction = min(max(fraction, 0.0), 1.0)
        self._on_progress(fraction, message)

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
        self._started = time.monotonic()

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
        elapsed = now - self._started
        head = f"{self.title} " if self.title else ""
        return f"{head}[{bar}] {fraction * 100:5.1f}% {elapsed:6.1f}s {message}".rstrip()

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
) -> JobOutcome:
    """Run one job to its end in the calling thread and record it as a run.

    With ``project_path`` the run is stored: ``run_id`` names an existing (queued) run, or a new
    one is created. Exceptions never escape: a failure is returned (and stored) with its
    traceback, a cancellation as status ``cancelled``.
    """
    if isinstance(job, JobSpec):
        fn, _ = job.load()
        kind = kind or job.name
    else:
        fn = job
        kind = kind or getattr(fn, "__name__", "job")
    started = time.monotonic()
    writer: _DbMetricWriter | None = None
    project = None
    status, result, error, message = "failed", None, None, None
    try:
        cfg.validate(config)
        if project_path is not None:
            ctx.project_path = Path(project_path)
            project = ctx.project()
            if run_id is None:
                run_id = project.create_run(kind, cfg.to_dict(config), status="queued")
            ctx.run_id = run_id
            project.start_run(run_id)
            writer = _DbMetricWriter(ctx, run_id)
            ctx._metric_sinks.append(writer)
            ctx._sample_sinks.append(
                lambda k, p, s: ctx.project().add_sample(run_id, k, p, step=s)  # type: ignore[arg-type]
            )
        ctx._on_status("running")
        set_torch_threads(torch_threads)
        ctx.raise_if_cancelled()
        result = fn(config, ctx)
        status = "completed"
    except JobCancelled:
        status = "cancelled"
    except Exception as exc:  # noqa: BLE001 - a job must never take the app down
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


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
