"""The GUI's job runner: the only place in the app that knows about threads.

Core jobs (``fn(config, ctx)``) run in a background ``threading.Thread`` through
``rlhf_core.jobs.execute_job``; a :class:`QtJobContext` relays their reports to Qt signals on a
relay object that lives in the GUI thread, so every slot runs in the GUI thread (queued
connections). Jobs run one at a time (every job here is CPU-heavy on 2 cores); others wait in a
FIFO queue. Cancel is cooperative:
the job sees ``ctx.cancelled`` at its next step boundary. Closing the window cancels and joins.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from rlhf_core import config as cfg
from rlhf_core.jobs import JobContext, JobOutcome, JobSpec, ResumeError, Timing, execute_job, get_job, resumable, resume_run
from rlhf_core.store import Project, run_leases

log = logging.getLogger("rlhf_workbench")


class _Relay(QObject):
    progress_changed = Signal(int, float, str)
    metrics_logged = Signal(int, object)  # run_id, [(step, {key: value}), ...]
    sample_emitted = Signal(int, str, object, object)  # run_id, kind, payload, step
    log_emitted = Signal(int, str)
    finished = Signal(int, str, str)  # run_id, status, error
    status_changed = Signal(int, str)  # run_id, status stored in the project ("running")
    timing_changed = Signal(int, object)  # run_id, rlhf_core.jobs.Timing at the moment of the report


class QtJobContext(JobContext):
    """Relays reports to signals; metrics are batched (≤ 20 emits/s), progress throttled."""

    BATCH_SECONDS = 0.05

    def __init__(self, relay: _Relay, run_id: int):
        super().__init__()
        self.relay = relay
        self.run_id = run_id
        self._lock = threading.Lock()
        self._pending: list[tuple[int, dict[str, float]]] = []
        self._last_metric_emit = 0.0
        self._last_progress_emit = 0.0
        self._last_fraction = -1.0

    def _on_progress(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress_emit < self.BATCH_SECONDS:
            return
        self._last_progress_emit = now
        self._last_fraction = fraction
        self.relay.progress_changed.emit(self.run_id, fraction, message)
        self.relay.timing_changed.emit(self.run_id, self.timing())

    def _on_metrics(self, step: int, values: dict[str, float]) -> None:
        with self._lock:
            self._pending.append((step, values))
        if time.monotonic() - self._last_metric_emit >= self.BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        self._last_metric_emit = time.monotonic()
        if batch:
            self.relay.metrics_logged.emit(self.run_id, batch)

    def _on_sample(self, kind: str, payload: Any, step: int | None) -> None:
        self.relay.sample_emitted.emit(self.run_id, kind, payload, step)

    def _on_log(self, message: str) -> None:
        self.relay.log_emitted.emit(self.run_id, message)

    def _on_status(self, status: str) -> None:
        self.relay.status_changed.emit(self.run_id, status)


@dataclasses.dataclass
class _Queued:
    run_id: int
    spec: JobSpec
    config: Any
    project_path: Path
    torch_threads: int
    resume: bool = False  # continue the run from its saved state (rlhf_core.jobs.resume_run)
    round_continue: bool = False  # finish a round from its first unfinished step (rlhf_core.rounds.continue_round)


def on_own_connection(folder, fn, *args, errors: tuple[type[Exception], ...] = (ValueError,)):
    """For a worker thread: ``fn(project, *args)`` on a connection of its own to the project at ``folder``;
    one of ``errors`` comes back as its sentence (a str) for the view to show."""
    project = Project.open(folder, check=False)
    try:
        return fn(project, *args)
    except errors as exc:
        return str(exc)
    finally:
        project.close()


def round_why_not(project: Project, run_id: int) -> str | None:
    """Why round run ``run_id`` cannot be continued (it waits for labels, it is running, ...), or None."""
    from rlhf_core.rounds import RoundError, continuable_round

    try:
        continuable_round(project, run_id)
    except RoundError as exc:
        return str(exc)
    return None


def last_line(error: str) -> str:
    """A stored run error for a person: a traceback's closing line (the exception and its message)."""
    if not error.lstrip().startswith("Traceback"):
        return error
    lines = [ln for ln in error.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else error


def _loader(spec: JobSpec):
    """The job's function, imported when it runs, in the job's thread.

    A job module imports torch (2.5-3.5 s the first time). In the GUI thread that froze the window
    for the whole import; in the job's thread the window stays live (pauses of at most ~0.3 s
    measured while the extension libraries load; docs/performance.md). An import error becomes the
    run's error, like any failure.
    """
    def run(config, ctx):
        fn, _ = spec.load()
        return fn(config, ctx)

    run.__name__ = spec.name
    return run


class JobRunner(QObject):
    """Queues runs and executes them one at a time off the GUI thread."""

    job_queued = Signal(int)
    job_started = Signal(int)
    progress_changed = Signal(int, float, str)
    metrics_logged = Signal(int, object)
    sample_emitted = Signal(int, str, object, object)
    log_emitted = Signal(int, str)
    job_finished = Signal(int, str, str)  # run_id, status, error text ('' if none)
    status_changed = Signal(int, str)  # run_id, status just stored by the job's thread ("running")
    #: run_id, Timing (elapsed, s/step, time left) of the running job: at each progress report and
    #: every second in between, so that every view's elapsed time and estimate tick
    timing_changed = Signal(int, object)
    queue_changed = Signal()
    TICK_MS = 1000

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._relay = _Relay(self)
        self._relay.progress_changed.connect(self.progress_changed)
        self._relay.metrics_logged.connect(self.metrics_logged)
        self._relay.sample_emitted.connect(self.sample_emitted)
        self._relay.log_emitted.connect(self.log_emitted)
        self._relay.finished.connect(self._on_relay_finished)
        self._relay.status_changed.connect(self.status_changed)
        self._relay.timing_changed.connect(self._on_relay_timing)
        self._queue: deque[_Queued] = deque()
        self._timing: tuple[float, Timing] | None = None  # (when received, the running job's last Timing)
        self._started_at = 0.0
        self._tick = QTimer(self)
        self._tick.setInterval(self.TICK_MS)
        self._tick.timeout.connect(self._emit_timing)
        self._current: _Queued | None = None
        self._ctx: QtJobContext | None = None
        self._thread: threading.Thread | None = None
        self._outcomes: dict[int, Any] = {}
        self._held = False

    # --- public API --------------------------------------------------------------------------
    def submit(self, project: Project, job: str | JobSpec, config: Any, *, torch_threads: int = 1,
               name: str = "") -> int:
        """Validate ``config``, store a queued run in ``project`` and schedule it. Returns the run id.

        Raises ``ConfigError`` (nothing stored) if the config is impossible.
        """
        spec = get_job(job) if isinstance(job, str) else job
        cfg.validate(config)
        run_id = project.create_run(spec.name, cfg.to_dict(config), name=name or spec.title, status="queued")
        self._queue.append(_Queued(run_id, spec, config, project.folder, torch_threads))
        self.job_queued.emit(run_id)
        self.queue_changed.emit()
        self._maybe_start()
        return run_id

    def resume(self, project: Project, run_id: int, *, torch_threads: int = 1) -> None:
        """Schedule a cancelled, failed or interrupted run to continue from its saved state, as the same run.

        Raises ``ResumeError`` saying why when it cannot (nothing is queued then)."""
        if run_id == self.current_run_id or run_id in self.queued_run_ids:
            raise ResumeError(f"Run {run_id} is already running or waiting to run.")
        run = project.get_run(run_id)
        is_round = run is not None and run["kind"] == "round"
        why = round_why_not(project, run_id) if is_round else resumable(project, run_id)
        if why is not None:
            raise ResumeError(why)
        spec = get_job(run["kind"])
        self._queue.append(_Queued(run_id, spec, None, project.folder, torch_threads, resume=not is_round,
                                   round_continue=is_round))
        self.job_queued.emit(run_id)
        self.queue_changed.emit()
        self._maybe_start()

    def cancel(self, run_id: int | None = None) -> bool:
        """Cancel the running job (``run_id`` None or its id) or remove a queued one."""
        if self._current is not None and (run_id is None or run_id == self._current.run_id):
            assert self._ctx is not None
            self._ctx.cancel()
            return True
        for item in list(self._queue):
            if item.run_id == run_id:
                self._queue.remove(item)
                if not item.resume:  # a run waiting to resume keeps what it said when it stopped
                    self._mark_cancelled(item)
                self.job_finished.emit(item.run_id, "cancelled", "")
                self.queue_changed.emit()
                return True
        return False

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Cancel everything and wait for the running job; True if it stopped within ``timeout``."""
        while self._queue:
            item = self._queue.popleft()
            if not item.resume:
                self._mark_cancelled(item)
        if self._ctx is not None:
            self._ctx.cancel()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def hold(self) -> None:
        """Queue submitted runs without starting them until :meth:`release` (the app's start-up:
        the demo project's first runs wait until the window is on screen)."""
        self._held = True

    def release(self) -> None:
        self._held = False
        self._maybe_start()

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def current_run_id(self) -> int | None:
        return self._current.run_id if self._current else None

    @property
    def queued_run_ids(self) -> list[int]:
        return [q.run_id for q in self._queue]

    def outcome(self, run_id: int):
        """The ``JobOutcome`` of a finished run (this session only)."""
        return self._outcomes.get(run_id)

    def timing(self, run_id: int) -> Timing | None:
        """The running job's elapsed time and estimate as of now (None: not the running job)."""
        if self._current is None or self._current.run_id != run_id:
            return None
        if self._timing is None:  # started, no report yet
            return Timing(elapsed=time.monotonic() - self._started_at)
        received, timing = self._timing
        return timing.aged(time.monotonic() - received)

    # --- internals ---------------------------------------------------------------------------
    def _maybe_start(self) -> None:
        if self._current is not None or not self._queue or self._held:
            return
        item = self._queue.popleft()
        self.queue_changed.emit()
        fn = _loader(item.spec)
        self._current = item
        self._ctx = QtJobContext(self._relay, item.run_id)
        self._thread = threading.Thread(
            target=self._work, args=(item, fn, self._ctx), name=f"job-{item.run_id}", daemon=True
        )
        self._timing, self._started_at = None, time.monotonic()
        self.job_started.emit(item.run_id)
        self._thread.start()
        self._tick.start()

    def _work(self, item: _Queued, fn, ctx: QtJobContext) -> None:  # the job's thread
        if item.resume or item.round_continue:
            try:
                if item.round_continue:
                    from rlhf_core.rounds import continue_round

                    outcome = continue_round(item.project_path, ctx, item.run_id, torch_threads=item.torch_threads)
                else:
                    outcome = resume_run(item.project_path, item.run_id, ctx, torch_threads=item.torch_threads)
            except Exception as exc:  # noqa: BLE001 - e.g. the state went missing since it was queued
                outcome = JobOutcome(item.run_id, "failed", error=str(exc), message=str(exc))
        else:
            outcome = execute_job(fn, item.config, ctx, project_path=item.project_path, run_id=item.run_id,
                                  kind=item.spec.name, torch_threads=item.torch_threads)
        ctx.flush()
        self._outcomes[item.run_id] = outcome
        # a person reads the failure in one line; the traceback stays with the run and in the log
        self._relay.finished.emit(item.run_id, outcome.status, outcome.message or outcome.error or "")

    def _on_relay_timing(self, run_id: int, timing: Timing) -> None:
        if self._current is not None and self._current.run_id == run_id:
            self._timing = (time.monotonic(), timing)
            self.timing_changed.emit(run_id, timing)

    def _emit_timing(self) -> None:
        if self._current is not None:
            self.timing_changed.emit(self._current.run_id, self.timing(self._current.run_id))

    def _on_relay_finished(self, run_id: int, status: str, error: str) -> None:
        if self._thread is not None:
            self._thread.join(5.0)
        self._tick.stop()
        self._current, self._ctx, self._thread, self._timing = None, None, None, None
        self.job_finished.emit(run_id, status, error)
        self._maybe_start()

    @staticmethod
    def _mark_cancelled(item: _Queued) -> None:
        with Project.open(item.project_path, check=False) as project:
            project.finish_run(item.run_id, "cancelled", error="Cancelled before it started.")


class _CallRelay(QObject):
    done = Signal(object, object)  # result, error text (None on success)


class BackgroundCall(QObject):
    """A short piece of work off the GUI thread that is not a run (e.g. scoring one response).

    ``start(fn, *args)`` runs ``fn(*args)`` in a daemon thread with ``torch_threads`` torch threads;
    ``finished(result, error)`` arrives in the GUI thread (``error`` is a one-line message or None).
    One call at a time: ``start`` while busy returns False.
    """

    finished = Signal(object, object)

    def __init__(self, parent: QObject | None = None, torch_threads: int = 1):
        super().__init__(parent)
        self.torch_threads = torch_threads
        self._relay = _CallRelay(self)
        self._relay.done.connect(self._on_done)
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, fn, *args) -> bool:
        if self._thread is not None:
            return False
        self._thread = threading.Thread(target=self._work, args=(fn, args), name="background-call", daemon=True)
        self._thread.start()
        return True

    def _work(self, fn, args) -> None:
        from rlhf_core.runtime import set_torch_threads

        try:
            set_torch_threads(self.torch_threads)
            result, error = fn(*args), None
        except Exception as exc:  # noqa: BLE001 - shown to the person, the app keeps running
            result, error = None, f"{type(exc).__name__}: {exc}"
        self._relay.done.emit(result, error)

    def _on_done(self, result, error) -> None:
        if self._thread is not None:
            self._thread.join(1.0)
        self._thread = None
        self.finished.emit(result, error)

    def wait(self, timeout: float = 10.0) -> None:
        """Join a running call (closing the window)."""
        if self._thread is not None:
            self._thread.join(timeout)


class ExternalRunWatcher(QObject):
    """Follows the runs that another process works on in the open project — ``python -m rlhf_core ...
    --project P`` training in a terminal, or a second app window — so that their plots grow here too.

    Every ``interval_ms`` it reads, on the GUI's own connection, the queued/running runs that the
    app's runner does not own and whose lease is held (:mod:`rlhf_core.store.run_leases`). A run seen
    for the first time is announced with ``run_appeared`` inside one read snapshot together with the
    cursors, so the pages load its history from the project and then receive exactly the rows written
    after it (``metrics_logged`` / ``sample_emitted``, the runner's signal shapes); ``run_finished``
    when its status becomes final. A followed run whose process died (lease gone) is marked failed.
    """

    run_appeared = Signal(int, str)  # run id, kind: load its history from the project now
    metrics_logged = Signal(int, object)  # run id, [(step, {key: value}), ...]
    sample_emitted = Signal(int, str, object, object)  # run id, kind, payload, step
    run_finished = Signal(int, str, str)  # run id, status, error text

    def __init__(self, runner: JobRunner, parent: QObject | None = None, *, interval_ms: int = 2000):
        super().__init__(parent)
        self.runner = runner
        self.project: Project | None = None
        self.followed: dict[int, str] = {}  # run id -> kind
        self._metric_cursor = 0
        self._sample_cursor = 0
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.poll)

    def set_project(self, project: Project | None) -> None:
        """Follow ``project`` (None: stop). Call after the pages have loaded it."""
        self.project = project
        self.followed.clear()
        self._metric_cursor = self._sample_cursor = 0
        if project is None:
            self.timer.stop()
        else:
            self.timer.start()

    def owns(self, run_id: int) -> bool:
        """True when the app's own runner has this run (queued or running here)."""
        return run_id == self.runner.current_run_id or run_id in self.runner.queued_run_ids

    def poll(self) -> None:
        if self.project is None:
            return
        try:
            self._poll(self.project)
        except sqlite3.Error as exc:  # a busy or vanished database: try again next time, never a dialog storm
            log.warning("following other processes' runs: %s", exc)

    def _poll(self, project: Project) -> None:
        appeared: list[tuple[int, str]] = []
        finished: list[dict] = []
        dead = False
        with project.read_snapshot():  # the pages' loads and the cursors see the same rows
            live = {r["id"]: r for r in project.live_runs() if not self.owns(r["id"])}
            for run_id in list(self.followed):
                if run_id not in live:
                    finished.append(project.get_run(run_id) or {"id": run_id, "status": "failed",
                                                                "error": "The run was deleted."})
            batches = project.metric_rows_since(self.followed, self._metric_cursor)
            samples = project.samples_since(self.followed, self._sample_cursor)
            for run_id, run in live.items():
                if not run_leases.is_alive(project.folder, run_id):
                    dead = True
                elif run_id not in self.followed:
                    appeared.append((run_id, run["kind"]))
            for run_id, kind in appeared:
                self.followed[run_id] = kind
                self.run_appeared.emit(run_id, kind)  # the pages read its history in this snapshot
            self._metric_cursor, self._sample_cursor = project.newest_row_ids()
        for run_id, batch in batches.items():
            self.metrics_logged.emit(run_id, batch)
        for row in samples:
            self.sample_emitted.emit(row["run_id"], row["kind"], row["payload"], row["step"])
        for run in finished:
            self.followed.pop(run["id"], None)
            self.run_finished.emit(run["id"], run["status"], last_line(run.get("error") or ""))
        if dead:  # its process is gone: fail it now (re-checked outside the snapshot), report it next time
            project.mark_interrupted_runs()
