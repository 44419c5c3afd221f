"""Bad files chosen in the window (File → Open Project, Import Preferences, Import Prompts) are answered
with a message box naming the file (and its line where known), never the "Unexpected error" dialog;
nothing is imported and the open project stays open."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

LONE_SURROGATE = '"\\ud800"'
DEEP = "[" * 50_000 + "]" * 50_000


def _write(path, data) -> None:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")


# (case, file name, content or a kind of non-file, text the message must hold besides the file name)
BAD_TRL = [
    ("bad json", "bad.jsonl", '{"prompt": "x", "chosen": \n', "line 1"),
    ("lone surrogate", "surrogate.jsonl", f'{{"prompt": {LONE_SURROGATE}, "chosen": "a", "rejected": "b"}}\n',
     "line 1"),
    ("deep nesting", "deep.jsonl", DEEP + "\n", "line 1"),
    ("binary junk", "junk.jsonl", bytes(range(256)) * 8, "line 2"),
    ("fifo", "pipe.jsonl", "fifo", "not a regular file"),
    ("directory", "folder.jsonl", "dir", "folder"),
]
BAD_PROMPTS = [
    ("bad json", "bad.jsonl", '{"text": \n', "line 1"),
    ("lone surrogate", "surrogate.jsonl", f'{{"text": {LONE_SURROGATE}}}\n', "line 1"),
    ("deep nesting", "deep.jsonl", DEEP + "\n", "line 1"),
    ("binary junk", "junk.jsonl", bytes(range(256)) * 8, "line 2"),
    ("bad csv", "junk.csv", b"text\n\xff\xfe\x00bad\n", "line 2"),
    ("fifo", "pipe.csv", "fifo", "not a regular file"),
    ("directory", "folder.csv", "dir", "folder"),
]


def _make(tmp_path, name, content):
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    if content == "fifo":
        os.mkfifo(path)  # no writer: reading it would block the window for ever
    elif content == "dir":
        path.mkdir()
    else:
        _write(path, content)
    return path


@pytest.fixture
def answered(window, monkeypatch):
    """The window shows its message boxes (as for a person); each is read and closed. An unexpected
    error dialog is recorded instead of shown."""
    import app.errors as errors

    window.interactive = True
    boxes: list[dict] = []
    unexpected: list[str] = []
    monkeypatch.setattr(errors, "error_dialog", lambda title, summary, details="", parent=None, **_:
                        unexpected.append(summary))

    def check():
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox) and box.isVisible():
            boxes.append({"title": box.windowTitle(), "text": box.text(), "format": box.textFormat()})
            box.done(0)

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(check)
    timer.start()
    yield boxes, unexpected
    timer.stop()


def _choose(monkeypatch, path) -> None:
    """The file dialogs answer ``path``, as if a person picked it."""
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(path)))


def _trigger(window, text: str) -> None:
    action = next(a for a in window.findChildren(QAction) if a.text() == text)
    action.trigger()


def _check_answer(qtbot, window, answered, path, must, before, title="Nothing was imported", named=None):
    boxes, unexpected = answered
    qtbot.waitUntil(lambda: len(boxes) == 1, timeout=10_000)
    box = boxes[0]
    assert unexpected == []
    assert box["title"] == title and box["format"] == Qt.TextFormat.PlainText
    assert (named or path.name) in box["text"] and must in box["text"], box["text"]
    assert "Traceback" not in box["text"]
    assert window.project is not None and window.project.counts() == before


@pytest.mark.parametrize("case,name,content,must", BAD_TRL, ids=[c[0] for c in BAD_TRL])
def test_bad_trl_import_from_the_menu_is_answered_in_words(qtbot, window, answered, monkeypatch, tmp_path,
                                                           case, name, content, must):
    path = _make(tmp_path, name, content)
    before = window.project.counts()
    _choose(monkeypatch, path)
    _trigger(window, "&Import Preferences (TRL JSONL)…")
    _check_answer(qtbot, window, answered, path, must, before)


@pytest.mark.parametrize("case,name,content,must", BAD_PROMPTS, ids=[c[0] for c in BAD_PROMPTS])
def test_bad_prompt_import_from_the_menu_is_answered_in_words(qtbot, window, answered, monkeypatch, tmp_path,
                                                              case, name, content, must):
    path = _make(tmp_path, name, content)
    before = window.project.counts()
    _choose(monkeypatch, path)
    _trigger(window, "Import &Prompts (JSONL or CSV)…")
    _check_answer(qtbot, window, answered, path, must, before)


def test_a_good_prompt_file_imports_from_the_menu(qtbot, window, answered, monkeypatch, tmp_path):
    path = _make(tmp_path, "good.jsonl", json.dumps({"text": "What is 2+2?", "category": "math"}) + "\n")
    _choose(monkeypatch, path)
    _trigger(window, "Import &Prompts (JSONL or CSV)…")
    assert window.project.counts()["prompts"] == 1 and answered[0] == []
    assert "Imported 1 prompts" in window.statusBar().currentMessage()


def _damaged(tmp_path):
    folder = tmp_path / "damaged.rlhf"
    folder.mkdir()
    (folder / "project.db").write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    return folder


def _not_a_project(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.txt").write_text("not a project")
    return folder


def _db_is_a_folder(tmp_path):
    folder = tmp_path / "odd.rlhf"
    (folder / "project.db").mkdir(parents=True)
    return folder


def _a_fifo(tmp_path):
    path = tmp_path / "pipe.rlhf"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("make", [_damaged, _not_a_project, _db_is_a_folder, _a_fifo],
                         ids=["damaged database", "not a project", "database is a folder", "fifo"])
def test_opening_a_bad_project_from_the_menu_is_answered_in_words(qtbot, window, answered, monkeypatch, tmp_path,
                                                                  make):
    current = window.project.folder
    before = window.project.counts()
    path = make(tmp_path)
    _choose(monkeypatch, path)
    _trigger(window, "&Open Project…")
    _check_answer(qtbot, window, answered, path, "", before, title="Cannot open project")
    assert window.project.folder == current


RAW_ERRORS = [
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "surrogate"),
    (MemoryError(), "too large"),
    (PermissionError(13, "Permission denied"), "Permission denied"),
    (ValueError("Exceeds the limit (4300 digits) for integer string conversion"), "4300 digits"),
    (OSError(28, "No space left on device"), "disk is full"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "read-only"),
]


@pytest.mark.parametrize("error,must", RAW_ERRORS, ids=[type(e).__name__ for e, _ in RAW_ERRORS])
def test_an_error_the_reader_did_not_word_is_still_answered_with_the_file_name(
        qtbot, window, answered, monkeypatch, tmp_path, error, must):
    """Whatever a reader raises for a bad file, the window words it and names the file."""
    import rlhf_core.text.prompts as prompts
    import rlhf_core.io.trl as trl_io

    def fail(*_a, **_k):
        raise error

    monkeypatch.setattr(trl_io, "import_trl", fail)
    monkeypatch.setattr(prompts, "import_prompts", fail)
    path = _make(tmp_path, "file.jsonl", "{}\n")
    before = window.project.counts()
    _choose(monkeypatch, path)
    _trigger(window, "&Import Preferences (TRL JSONL)…")
    # a full disk or a read-only database is the project's, not the file's
    named = str(window.project.folder) if must in ("disk is full", "read-only") else None
    _check_answer(qtbot, window, answered, path, must, before, named=named)
    answered[0].clear()
    _trigger(window, "Import &Prompts (JSONL or CSV)…")
    _check_answer(qtbot, window, answered, path, must, before, named=named)
