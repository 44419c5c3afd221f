"""The label writer: one background thread per open project that commits the labelling views' writes.

The GUI thread never waits on SQLite's write lock, which another process (a CLI job, a second app)
may hold for seconds. A view submits a write, a function of a :class:`Project`, and goes on at
once; the writer runs the writes one at a time in the order submitted (an undo after the label it
undoes) on its own connection, opened in its own thread, and calls back in the GUI thread with the
result or with a sentence for a person (:func:`rlhf_core.store.errors.friendly_db_error`). A label
counts as given once its write is acked.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from rlhf_core.store import Project
from rlhf_core.store.errors import friendly_db_error

log = logging.getLogger(__name__)


class Write:
    """One submitted write; ``result`` is what its function returned once committed."""

    def __init__(self, fn: Callable[[Project], Any], on_done, on_error):
        self.fn, self.on_done, self.on_error = fn, on_done, on_error
        self.result: Any = None
        self.exc: BaseException | None = None


class LabelWriter(QObject):
    _wake = Signal()

    def __init__(self, folder: str | Path):
        super().__init__()
        self.folder = Path(folder)
        self._jobs: queue.Queue[Write | None] = queue.Queue()
        self._results: queue.Queue[Write] = queue.Queue()
        self._pending = 0  # submitted, callback not run yet (GUI thread)
        self._wake.connect(self._deliver)
        self._thread = threading.Thread(target=self._loop, name="label-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, fn: Callable[[Project], Any], on_done: Callable[[Any], object] | None = None,
               on_error: Callable[[str], object] | None = None) -> Write:
        """Queue ``fn(project)``; ``on_done(result)`` or ``on_error(sentence)`` runs in the GUI thread."""
        write = Write(fn, on_done, on_error)
        self._pending += 1
        self._jobs.put(write)
        return write

    def _loop(self) -> None:
        project: Project | None = None
        while True:
            write = self._jobs.get()
            if write is None:
                break
            try:
                if project is None:
                    project = Project.open(self.folder, check=False)
                write.result = write.fn(project)
            except BaseException as exc:  # noqa: BLE001 - handed to the GUI thread
                write.exc = exc
                try:
                    if project is not None:
                        project.rollback()
                except Exception:  # noqa: BLE001 - the writer must live on to answer the writes after it
                    log.exception("rollback after a failed label write failed")
            self._results.put(write)
            self._wake.emit()
        if project is not None:
            project.close()

    def _deliver(self) -> None:
        """Run the callbacks of every acked write; an unexpected error (a bug) is raised only after all
        of them ran, so one bad callback never strands the others."""
        bug: BaseException | None = None
        while True:
            try:
                write = self._results.get_nowait()
            except queue.Empty:
                break
            self._pending -= 1
            try:
                self._callback(write)
            except Exception as exc:  # noqa: BLE001 - raised below, after the other callbacks
                bug = bug or exc
        if bug is not None:
            raise bug  # the app's error handler logs and shows it

    def _callback(self, write: Write) -> None:
        if write.exc is None:
            if write.on_done is not None:
                write.on_done(write.result)
            return
        exc = write.exc
        friendly = friendly_db_error(exc, self.folder)
        text = str(friendly) if friendly is not None else str(exc) if isinstance(exc, ValueError) else (
            f"Nothing was saved: {exc}")
        log.warning("label write failed: %s", text)
        if write.on_error is not None:
            write.on_error(text)
        if friendly is None and not isinstance(exc, ValueError):
            raise exc

    def close(self, timeout: float = 60.0) -> bool:
        """Finish the writes submitted so far (their callbacks run), then close the connection.
        False when the thread is still busy after ``timeout`` (it goes on; see :func:`close_writer`)."""
        self._jobs.put(None)
        self._thread.join(timeout)
        try:
            self._deliver()
        except Exception:  # noqa: BLE001 - closing must go on (switching or closing the project)
            log.exception("a label write's callback failed while closing")
        return not self._thread.is_alive()


_writers: weakref.WeakKeyDictionary[Project, LabelWriter] = weakref.WeakKeyDictionary()


def writer_for(project: Project) -> LabelWriter:
    """The one writer of the project open in the GUI (started on first use)."""
    writer = _writers.get(project)
    if writer is None:
        writer = _writers[project] = LabelWriter(project.folder)
    return writer


_closing: set[LabelWriter] = set()  # closed writers whose thread was still busy: joined again at exit


def close_writer(project: Project | None, timeout: float = 60.0) -> bool:
    """Finish and stop the project's writer (before the project is closed); True if none was left busy."""
    writer = _writers.pop(project, None) if project is not None else None
    if writer is None or writer.close(timeout):
        return True
    _closing.add(writer)  # its queued writes still run, in order; the exit hook waits for them
    return False


def pending_writes() -> int:
    """Writes submitted and not acked yet, over every open project (tests wait for 0)."""
    return sum(w.pending for w in list(_writers.values()))


@atexit.register
def _finish_at_exit(timeout: float = 10.0) -> None:
    """Commit what was handed to a writer before the interpreter exits (a daemon thread would be
    stopped mid-queue); callbacks are not run, the GUI is gone by then."""
    for writer in list(_writers.values()):
        writer._jobs.put(None)
    for writer in [*_writers.values(), *_closing]:
        writer._thread.join(timeout)
