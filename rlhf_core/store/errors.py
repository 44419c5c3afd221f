"""Errors raised when a project cannot be opened or written; each message is meant for a person."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path


class ProjectError(Exception):
    """A project could not be created, opened or changed. ``str(error)`` is a complete message."""


class NotAProjectError(ProjectError):
    """The path exists but is not a workbench project."""


class CorruptProjectError(ProjectError):
    """The project's database is damaged or is not an SQLite database at all."""


class NewerSchemaError(ProjectError):
    """The project was written by a newer version of the workbench than this one."""


class DiskFullError(ProjectError):
    """The disk (or the database's size limit) is full: the write was rolled back, nothing was saved."""


class ReadOnlyProjectError(ProjectError):
    """The project's folder or database cannot be written (read-only mount, permissions)."""


class ProjectBusyError(ProjectError):
    """Another process held the database's write lock for longer than the wait allowed."""


def free_megabytes(folder: str | os.PathLike) -> float | None:
    """Free space on the disk holding ``folder`` in MB (None when it cannot be asked)."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free / 1e6
    except OSError:
        return None


def _is_disk_full(exc: BaseException) -> bool:
    text = str(exc).lower()
    errno = getattr(exc, "errno", None)
    return "database or disk is full" in text or errno == 28 or "no space left" in text


def _is_read_only(exc: BaseException) -> bool:
    text = str(exc).lower()
    errno = getattr(exc, "errno", None)
    return "readonly database" in text or "read-only" in text or errno in (13, 30)


def friendly_db_error(exc: BaseException, folder: str | os.PathLike | None = None) -> ProjectError | None:
    """The person-facing :class:`ProjectError` for an SQLite or OS error met while writing a project,
    or None when it is not one of the known conditions (disk full, read-only, locked)."""
    if isinstance(exc, ProjectError):
        return exc
    where = f" ({folder})" if folder is not None else ""
    free = free_megabytes(folder) if folder is not None else None
    # SQLite reports a side file it could not grow on a full disk as a plain I/O error
    io_error_on_full_disk = "disk i/o error" in str(exc).lower() and free is not None and free < 1
    if _is_disk_full(exc) or io_error_on_full_disk:
        room = f" ({free:.0f} MB free)" if free is not None else ""
        return DiskFullError(f"The disk is full{room}: nothing was saved{where}. Free some space and try again.")
    if _is_read_only(exc):
        return ReadOnlyProjectError(
            f"The project cannot be written{where}: its folder or database is read-only. "
            "Nothing was saved. Copy the project to a writable folder, or change its permissions."
        )
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower():
        return ProjectBusyError(
            f"The project is busy{where}: another program kept it locked too long. Nothing was saved; "
            "try again in a moment."
        )
    return None
