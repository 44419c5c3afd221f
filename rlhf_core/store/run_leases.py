"""Which queued or running runs are still alive, across processes.

A run's status in the database says ``queued`` or ``running`` both while a process is working on it
and after that process crashed or was killed. To tell the two apart, the process that creates or
starts a run holds an exclusive ``flock`` on ``locks/run-<id>.lock`` in the project folder until the
run finishes (or the :class:`~rlhf_core.store.project.Project` that took it is closed). The kernel
drops the lock when the process dies, however it dies, so "nobody holds the lock" means "nobody is
working on this run". Another process (the app opening a project while ``python -m rlhf_core`` trains
in it, or a second app window) asks :func:`is_alive` before it marks a run as interrupted.

Without ``fcntl`` (Windows) only this process's own runs are known to be alive; a run of another
process looks interrupted, as it did before leases existed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FOLDER = "locks"

_held: dict[tuple[str, int], int] = {}  # (project folder, run id) -> the open, locked file descriptor
_mutex = threading.Lock()


def _key(folder: str | os.PathLike, run_id: int) -> tuple[str, int]:
    return os.path.realpath(folder), int(run_id)


def lock_path(folder: str | os.PathLike, run_id: int) -> Path:
    return Path(folder) / LOCK_FOLDER / f"run-{int(run_id)}.lock"


def hold(folder: str | os.PathLike, run_id: int) -> bool:
    """Take the run's lease for this process (a no-op when it already holds it). False when another
    process holds it or the lock file cannot be made (the run then simply has no lease)."""
    key = _key(folder, run_id)
    with _mutex:
        if key in _held:
            return True
        if fcntl is None:
            _held[key] = -1
            return True
        path = lock_path(folder, run_id)
        try:
            path.parent.mkdir(exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        _held[key] = fd
        return True


def release(folder: str | os.PathLike, run_id: int) -> None:
    """Give the lease back and remove its file (nothing happens if this process does not hold it)."""
    with _mutex:
        fd = _held.pop(_key(folder, run_id), None)
        if fd is None:
            return
        if fd >= 0:
            lock_path(folder, run_id).unlink(missing_ok=True)  # while still locked: nobody can take it half-removed
            os.close(fd)


def held_here(folder: str | os.PathLike, run_id: int) -> bool:
    with _mutex:
        return _key(folder, run_id) in _held


def is_alive(folder: str | os.PathLike, run_id: int) -> bool:
    """True when this process or another one holds the run's lease."""
    if held_here(folder, run_id):
        return True
    if fcntl is None:
        return False
    try:
        fd = os.open(lock_path(folder, run_id), os.O_RDWR)
    except OSError:  # no lock file: nobody ever held it, or its holder finished and removed it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
