"""Errors raised when a project cannot be opened or written, and a failed job in words
(:func:`describe_failure`, :func:`describe_stored_error`); each message is meant for a person."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
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


# ---------------------------------------------------------------------------- a failed job, in words
@dataclass(frozen=True)
class Failure:
    """A failure for a person: what went wrong and what to do about it (each one sentence, no traceback).
    ``kind`` names the case (``out_of_memory``, ``disk_full``, ``model_missing``, ``bad_config``,
    ``no_cuda``, ``bad_device``, ``cancelled``, ``interrupted``, ``file_missing``, ``no_permission``, ``read_only``,
    ``project_busy``, ``project_damaged``, ``missing_module``, ``other``)."""

    what: str
    todo: str
    kind: str = "other"

    @property
    def sentence(self) -> str:
        return f"{self.what} {self.todo}".strip()


#: the opening line of a traceback, and the lines that join the tracebacks of chained exceptions
_TRACEBACK_HEAD = "Traceback (most recent call last):"
_CHAIN_LINES = ("During handling of the above exception", "The above exception was the direct cause")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
INTERRUPTED_ERROR = "Interrupted: the app stopped before this run finished."


def _sentence(text: str, limit: int = 300) -> str:
    """``text`` on one line, ending in a full stop, at most ``limit`` characters."""
    line = " ".join(str(text).split()).rstrip()
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line if not line or line[-1] in ".!?…" else line + "."


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 10:
        out.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return out


def describe_failure(exc: BaseException, folder: str | os.PathLike | None = None) -> Failure:
    """What went wrong and what to do, for an exception that stopped a job (Qt-free; the app, the CLI
    and the runs' stored errors use it). ``folder``: the project, to say how much disk is free.
    Cases: out of memory, disk full, read-only or busy project, missing model folder, bad settings,
    no CUDA, cancel (``KeyboardInterrupt`` included), missing file, no permission, a missing module;
    anything else keeps the exception's own message."""
    chain = [(tuple(c.__name__ for c in type(e).__mro__), str(e), getattr(e, "errno", None)) for e in _chain(exc)]
    found = _classify(chain, folder)
    if found is not None:
        return found
    return _other(type(exc).__name__, str(exc))


def describe_stored_error(text: str | None) -> Failure | None:
    """The same as :func:`describe_failure` for a run's stored error: a traceback (its exception lines
    are read, the chained ones too) or a message stored as is (``Interrupted: …``, ``Cancelled …``).
    None for no error."""
    if not text or not text.strip():
        return None
    text = text.strip()
    if not text.startswith(_TRACEBACK_HEAD):
        head = text.split("\n\n" + _TRACEBACK_HEAD, 1)[0].strip()
        if head.startswith("Interrupted"):
            return Failure(
                "The app stopped before this run finished (it was closed, crashed or was killed, for example "
                "when the computer ran out of memory).",
                "Start the run again; if it stops again, Help ▸ Open Logs Folder has crash.log.", "interrupted")
        if head.lower().startswith("cancelled"):
            return Failure(_sentence(head), "Nothing to fix: start it again when you want it.", "cancelled")
        if not head.startswith(_TRACEBACK_HEAD):
            found = _classify([((), head, None)], None)
            return found or Failure(_sentence(head), _OTHER_TODO, "other")
    lines = _exception_lines(text)
    if not lines:
        return Failure(_sentence(text.splitlines()[-1]), _OTHER_TODO, "other")
    pairs = [((name, name.rsplit(".", 1)[-1]), message, _errno_in(message)) for name, message in reversed(lines)]
    found = _classify(pairs, None)
    if found is not None:
        return found
    name, message = lines[-1]
    return _other(name.rsplit(".", 1)[-1], message)


def _exception_lines(text: str) -> list[tuple[str, str]]:
    """(type name, message) of each exception a traceback text shows, innermost cause first."""
    out = []
    in_traceback = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(_TRACEBACK_HEAD):
            in_traceback = True
            continue
        if not in_traceback or not line or line[0].isspace() or line.startswith(_CHAIN_LINES):
            continue
        match = _EXCEPTION_LINE.match(line)
        if match is None:
            continue
        message = [match.group(2) or ""]
        for more in lines[i + 1:]:  # a message over several lines, up to the next traceback
            if more.startswith(_TRACEBACK_HEAD) or more.startswith(_CHAIN_LINES) or not more.strip():
                break
            message.append(more)
        out.append((match.group(1), " ".join(m.strip() for m in message).strip()))
        in_traceback = False
    return out


def _errno_in(message: str) -> int | None:
    match = re.match(r"\[Errno (\d+)\]", message)
    return int(match.group(1)) if match else None


_OTHER_TODO = ("If it happens again, report it with the Details (the same traceback is in the log: "
               "Help ▸ Open Logs Folder).")
#: exception types whose message alone does not say what it is about
_BARE_TYPES = ("KeyError", "AttributeError", "TypeError", "IndexError", "ZeroDivisionError", "AssertionError",
               "RecursionError", "NameError", "OverflowError", "UnicodeError", "UnicodeDecodeError",
               "UnicodeEncodeError", "NotImplementedError")


def _other(name: str, message: str) -> Failure:
    message = " ".join(message.split())
    if not message:
        what = f"The job stopped with an error ({name})."
    elif name in _BARE_TYPES:
        what = _sentence(f"{name}: {message}")
    else:
        what = _sentence(message)
    return Failure(what, _OTHER_TODO, "other")


def _quoted_path(message: str) -> str | None:
    match = re.search(r"""['"]([^'"]+)['"]\s*$""", message) or re.search(r"""['"](/[^'"]+|[A-Za-z]:\\[^'"]+)['"]""",
                                                                        message)
    return match.group(1) if match else None


def _classify(chain: list[tuple[tuple[str, ...], str, int | None]], folder) -> Failure | None:
    """The first case that any exception of ``chain`` (type names with their bases, message, errno) is."""
    for rule in _RULES:
        for names, message, errno in chain:
            found = rule(set(names), message, errno, folder)
            if found is not None:
                return found
    return None


def _cancelled(names, message, errno, folder):
    if "KeyboardInterrupt" in names:
        return Failure("The run was stopped with Ctrl+C.", "Nothing to fix: start it again when you want it.",
                       "cancelled")
    if "JobCancelled" in names:
        return Failure("The run was cancelled.", "Nothing to fix: start it again when you want it.", "cancelled")
    return None


def _out_of_memory(names, message, errno, folder):
    low = message.lower()
    if names & {"MemoryError", "OutOfMemoryError"} or errno == 12 or any(
            s in low for s in ("out of memory", "can't allocate memory", "cannot allocate memory",
                               "not enough memory", "failed to allocate")):
        return Failure(
            f"The {'GPU' if 'cuda' in low else 'computer'} ran out of memory while the job ran.",
            "Use smaller settings (batch size, samples per prompt, response length or model), close other "
            "programs, then start it again.", "out_of_memory")
    return None


def _disk_full(names, message, errno, folder):
    if errno == 28 or "no space left" in message.lower() or "database or disk is full" in message.lower() \
            or "DiskFullError" in names:
        free = free_megabytes(folder) if folder is not None else None
        room = f" ({free:.0f} MB free)" if free is not None else ""
        return Failure(f"The disk is full{room}: the job could not save its results.",
                       "Free some space (old checkpoints under the project's checkpoints folder are the largest "
                       "files), then start it again.", "disk_full")
    return None


def _device(names, message, errno, folder):
    if "DeviceError" in names:  # rlhf_core.devices: its message already says what is wrong and what fits here
        return Failure(_sentence(message), "Change the run's device or precision setting (cpu always works), "
                       "then start it again.", "bad_device")
    return None


def _no_cuda(names, message, errno, folder):
    low = message.lower()
    if "CudaMissing" in names or any(s in low for s in (
            "not compiled with cuda", "no nvidia driver", "cuda is not available", "no cuda gpus are available",
            "cuda driver", "attempting to deserialize object on a cuda device", "cuda error")):
        return Failure("The job tried to use an NVIDIA GPU (CUDA), and this computer has none it can use.",
                       "The workbench trains on the CPU: choose a model or checkpoint saved for the CPU, or "
                       "set its device to cpu, then start it again.", "no_cuda")
    return None


def _model_missing(names, message, errno, folder):
    low = message.lower()
    if names & {"ModelNotFoundError", "NetworkDisabledError", "BundledModelMissingError"} or any(
            s in low for s in ("does not appear to have a file named", "is not a local folder",
                               "can't load tokenizer", "can't load the configuration", "repo id must be",
                               "not a valid model identifier")):
        what = _sentence(message) if names & {"ModelNotFoundError", "NetworkDisabledError",
                                              "BundledModelMissingError"} else \
            _sentence(f"The model could not be found: {message}")
        return Failure(what,
                       "Check the model setting: choose a folder that holds a model (config.json and its "
                       "weights, as SFT or Generate save them), or allow downloads in Settings ▸ Preferences "
                       "to use a hub id.", "model_missing")
    if names & {"CorruptModelError", "NotACausalLMError", "ModelError"}:
        return Failure(_sentence(message), "Choose another model folder, or save the model again.", "model_missing")
    return None


def _bad_config(names, message, errno, folder):
    if names & {"ConfigError", "InputFileError", "EnvError"}:
        return Failure(_sentence(f"The run's settings are not valid: {message}"),
                       "Change the setting in the run's form and start it again.", "bad_config")
    return None


def _project(names, message, errno, folder):
    if "ReadOnlyProjectError" in names or errno in (30,) or "readonly database" in message.lower():
        return Failure("The project cannot be written: its folder or database is read-only.",
                       "Copy the project to a writable folder (or change its permissions) and run it there.",
                       "read_only")
    if "ProjectBusyError" in names or ("OperationalError" in names and "locked" in message.lower()):
        return Failure("The project stayed locked by another program for too long.",
                       "Close the other program that has this project open, then start the run again.",
                       "project_busy")
    if "CorruptProjectError" in names or "malformed" in message.lower():
        return Failure("The project's database is damaged.",
                       "Copy the project folder somewhere safe and restore project.db from a backup.",
                       "project_damaged")
    return None


def _file_missing(names, message, errno, folder):
    path = _quoted_path(message)
    if "PermissionError" in names or errno in (1, 13):
        where = f" {path}" if path else " a file the job needs"
        return Failure(f"The job has no permission to read or write{where}.",
                       "Change the file's permissions, or choose a file or folder you own.", "no_permission")
    if "FileNotFoundError" in names or errno == 2:
        where = f": {path}" if path else ""
        return Failure(_sentence(f"A file or folder the job needs is missing{where}"),
                       "Check the paths in the run's settings; if it was moved or deleted, put it back or "
                       "choose another.", "file_missing")
    return None


def _missing_module(names, message, errno, folder):
    if names & {"ModuleNotFoundError", "ImportError"}:
        return Failure(_sentence(f"A part of the workbench could not be loaded: {message}"),
                       "Reinstall the workbench (or run scripts/setup.sh in a source checkout).", "missing_module")
    return None


#: in order: the first case any exception of the chain matches wins
_RULES = (_cancelled, _device, _out_of_memory, _disk_full, _project, _no_cuda, _model_missing, _bad_config, _file_missing,
          _missing_module)
