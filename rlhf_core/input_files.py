"""Reading files and JSON given by a person: every problem becomes a sentence, never a traceback.

- :func:`read_input_file` reads a regular file up to a size limit (a FIFO, a device or a folder is
  refused without opening it for reading, so nothing can block or read without end). A project's
  own database files are refused unopened too: closing any descriptor of a database drops the
  SQLite locks a connection of this process holds on it.
- :func:`parse_json` is ``json.loads`` that refuses what the standard library accepts but cannot
  store or hand on: nesting deeper than :data:`MAX_JSON_DEPTH`, integers beyond 64 bits,
  ``NaN``/``Infinity``, and strings with lone surrogate escapes (``"\\ud800"``, not Unicode text).
- :class:`InputFileError` is the error of a whole file, listing each problem with its line.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

MAX_JSON_DEPTH = 100
MAX_REPORTED_PROBLEMS = 50
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT_DIGITS = 19  # int64 has at most 19 digits


class InputProblem(ValueError):
    """One problem with an input (without the file name); ``str(error)`` is a sentence."""


class InputFileError(ValueError):
    """A file has problems; ``problems`` lists them, each naming its line. Nothing was imported."""

    def __init__(self, path: str | os.PathLike, problems: Sequence[str]):
        self.path = Path(path)
        self.problems = list(problems)
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        more = len(self.problems) - len(shown)
        lines = [f"{self.path.name}: nothing was imported; fix these problems first:"]
        lines += [f"  {p}" for p in shown]
        if more > 0:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


def read_input_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; :class:`InputProblem` otherwise."""
    path = Path(path)
    if path.name.startswith("project.db") and (path.parent / "project.db").exists():
        raise InputProblem("this is a workbench project's database, not a data file")
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InputProblem(f"cannot read the file: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise InputProblem("this is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise InputProblem("this is not a regular file (a pipe, socket or device); save the data to a file first")
    if info.st_size > max_bytes:
        raise InputProblem(f"the file is {_size(info.st_size)}; the limit is {_size(max_bytes)}: split it into smaller files")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputProblem(f"cannot read the file: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the stat above
            raise InputProblem("this is not a regular file (a pipe, socket or device)")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise InputProblem(f"cannot read the file: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise InputProblem(f"the file is larger than the limit of {_size(max_bytes)}: split it into smaller files")
    return data



def read_data_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """:func:`read_input_file` for an import: a problem raises :class:`InputFileError`; a UTF-8 byte-order mark
    (spreadsheet exports write one) is dropped."""
    try:
        raw = read_input_file(path, max_bytes)
    except InputProblem as exc:
        raise InputFileError(path, [str(exc)]) from exc
    return raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw

def _size(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n} bytes"


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _INT_DIGITS or not (INT64_MIN <= int(text) <= INT64_MAX):
        raise InputProblem("a whole number is too large (the limit is 64 bits)")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise InputProblem(f"the number {text[:30]}{'...' if len(text) > 30 else ''} is too large")
    return value


def _parse_constant(name: str) -> Any:
    raise InputProblem(f"{name} is not a JSON number")


def parse_json(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(text)`` with the limits of the module docstring; :class:`InputProblem` on any problem."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputProblem(f"not valid UTF-8 text (byte {exc.start + 1})") from exc
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise InputProblem(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError as exc:
        raise InputProblem(f"JSON nested more than {max_depth} levels deep") from exc
    except ValueError as exc:  # our own InputProblem, or a limit of the decoder
        if isinstance(exc, InputProblem):
            raise
        raise InputProblem(f"not valid JSON ({exc})") from exc
    check_json_value(value, max_depth=max_depth)
    return value


def jsonl_values(raw: bytes, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSON Lines file; a line that is not JSON adds
    ``"line N: why"`` to ``problems`` and is skipped."""
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, parse_json(line)
        except InputProblem as exc:
            problems.append(f"line {number}: {exc}")


def check_json_value(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse nesting deeper than ``max_depth`` and strings that are not Unicode text."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise InputProblem(problem)
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                raise InputProblem(f"JSON nested more than {max_depth} levels deep")
            if isinstance(item, dict):
                stack.extend((k, depth + 1) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as UTF-8 (a lone surrogate), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        return (f"the text has a lone surrogate (\\u{code:04x}) at character {exc.start + 1}, "
                "which is not valid Unicode")
    return None
