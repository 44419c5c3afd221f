"""Untrusted text stays text: prompts, responses, labeller and run names, an imported file's keys and
error messages that look like HTML show literally in every view, tooltip and dialog, and never make
Qt load a local file. The bait is ``<img src="file:///.../probe.png">`` on a real PNG, watched with
Linux inotify: a rich-text render of it opens the file."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import struct
import sys

import pytest
import shiboken6
from PySide6 import QtGui
from PySide6.QtCore import QModelIndex, QPoint, Qt, QTimer
from PySide6.QtGui import QColor, QImage, QTextDocument
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDialog,
    QDialogButtonBox,
    QGraphicsTextItem,
    QGraphicsView,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QTabWidget,
    QToolTip,
    QWidget,
)

from rlhf_core.store import Project
from tests.app.labeling.test_labeling import fill

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")

IN_ACCESS, IN_OPEN, IN_NONBLOCK = 0x1, 0x20, 0o4000
MARK = "probe.png"  # in every bait string, escaped or not


class FileWatch:
    """Counts opens and reads of one file (inotify through ctypes, read without blocking)."""

    def __init__(self, path):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN | IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {path}")
        self.events = 0

    def poll(self) -> int:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return self.events
            offset = 0
            while offset < len(data):
                length = struct.unpack_from("iIII", data, offset)[3]
                self.events += 1
                offset += 16 + length

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def probe(tmp_path):
    path = tmp_path / MARK
    image = QImage(8, 8, QImage.Format.Format_RGB32)
    image.fill(QColor("red"))
    assert image.save(str(path), "PNG")
    watch = FileWatch(path)  # from here on, any open or read of the PNG counts
    yield path, watch
    watch.close()


def bait(probe_path, who: str = "") -> str:
    url = f"file://{probe_path}"
    return (f'{who}<img src="{url}"> <b>bold</b> <a href="{url}">link</a> <script>alert(1)</script>'
            f' <img src="{url}" width=1>')


def rendered(text: str) -> str:
    """What a person reads for ``text`` where Qt decides between plain and rich text (a tooltip)."""
    if not QtGui.Qt.mightBeRichText(text):
        return text
    doc = QTextDocument()
    doc.setHtml(text)
    return doc.toPlainText()


def _ptr(w) -> int:
    return shiboken6.getCppPointer(w)[0]


def _name(w) -> str:
    parts = []
    while w is not None:
        parts.append(w.objectName() or type(w).__name__)
        w = w.parentWidget() if isinstance(w, QWidget) else None
    return "/".join(reversed(parts))


class Sweep:
    """Lays out every label, shows every tooltip carrying the bait and checks each shows it literally
    and opened no file."""

    def __init__(self, watch: FileWatch):
        self.watch = watch
        self.seen: list[tuple[str, str, QWidget]] = []  # (what, where, widget)

    def all(self, root: QWidget) -> None:
        for w in [root, *root.findChildren(QWidget)]:
            self.widget(w)
            assert self.watch.poll() == 0, f"{_name(w)} rendered untrusted text as HTML and opened the file it named"

    def widget(self, w: QWidget) -> None:
        if isinstance(w, QLabel) and w.objectName() != "qtooltip_label":  # tooltips: see tooltip()
            w.sizeHint()  # lays the text out: a rich-text label loads its images here
            w.heightForWidth(300)
            if MARK in w.text():
                assert w.textFormat() == Qt.TextFormat.PlainText, _name(w)
                assert "<img src=" in w.text(), _name(w)
                self.seen.append(("label", _name(w), w))
        self.tooltip(w, w.toolTip(), _name(w))
        if isinstance(w, QMessageBox) and MARK in w.text():
            assert w.textFormat() == Qt.TextFormat.PlainText, _name(w)
        if isinstance(w, QAbstractItemView) and not isinstance(w, QHeaderView) and w.model() is not None:
            model = w.model()
            for r in range(model.rowCount(QModelIndex())):
                for c in range(64):
                    index = model.index(r, c)
                    if not index.isValid():
                        break
                    self.tooltip(w.viewport(), index.data(Qt.ItemDataRole.ToolTipRole), f"{_name(w)}[{r},{c}]")
                    if MARK in str(index.data(Qt.ItemDataRole.DisplayRole) or ""):
                        self.seen.append(("cell", _name(w), w))  # item views draw their text as plain text
        if isinstance(w, QGraphicsView) and w.scene() is not None:
            for item in w.scene().items():
                if isinstance(item, QGraphicsTextItem):  # pyqtgraph's titles, legends and labels are HTML
                    item.document().size()
                    if MARK in item.toPlainText():
                        assert "<img src=" in item.toPlainText(), _name(w)
                        self.seen.append(("plot text", _name(w), w))
                self.tooltip(w.viewport(), item.toolTip(), f"{_name(w)} item")
        if isinstance(w, (QPlainTextEdit, QLineEdit)):
            text = w.toPlainText() if isinstance(w, QPlainTextEdit) else w.text()
            if MARK in text:
                self.seen.append(("text box", _name(w), w))

    def tooltip(self, w: QWidget, text, where: str) -> None:
        if not text or MARK not in str(text):
            return
        QToolTip.showText(w.mapToGlobal(QPoint(2, 2)), text, w)
        QApplication.processEvents()
        QToolTip.hideText()
        assert self.watch.poll() == 0, f"{where}: tooltip {text!r} opened the file it named"
        assert "<img src=" in rendered(text), f"{where}: tooltip {text!r} is rendered as HTML"
        self.seen.append(("tooltip", where, w))


@contextlib.contextmanager
def answering_dialogs(sweep: Sweep):
    """Sweep and close each modal dialog as it opens (a person reads it and clicks OK)."""
    shown: list[tuple[str, str]] = []
    failures: list[AssertionError] = []

    def check():
        box = QApplication.activeModalWidget()
        if isinstance(box, QDialog) and box.isVisible():
            shown.append((box.windowTitle(), box.text() if isinstance(box, QMessageBox) else ""))
            try:
                sweep.all(box)
            except AssertionError as exc:
                failures.append(exc)  # raised once the dialog is closed, not inside Qt's event loop
            box.done(0)

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(check)
    timer.start()
    try:
        yield shown
    finally:
        timer.stop()
    if failures:
        raise failures[0]


def fill_with_bait(project: Project, probe_path, tmp_path) -> dict:
    """Every kind of untrusted text the views show, each holding the bait."""
    b = lambda who="": bait(probe_path, who)  # noqa: E731
    # clips and a queued clip pair (the reason says why it was asked), rankings by a bait labeller
    traj_ids = fill(project, n_traj=3, pairs=2)
    clips = [i["id"] for i in project.items("clip")]
    labeller = project.ensure_labeller(b("person "), "human")
    other = project.ensure_labeller(b("second "), "human")
    project.enqueue_pair(clips[0], clips[1], priority=10.0, reason={"selection": b()})
    project.add_ranking([[traj_ids[0]], [traj_ids[1], traj_ids[2]]], labeller_id=labeller)
    # text: a bait prompt and responses, two labellers who disagree, a ranking, an AI label with a bait principle
    pid = project.add_prompt(b("prompt "))
    responses = [project.add_item("response", prompt_id=pid, text=b(f"response {k} "), model_id=b("model "),
                                  source="generated") for k in range(4)]
    project.add_comparison(responses[0], responses[1], "left", labeller_id=labeller, source="human")
    project.add_comparison(responses[0], responses[1], "right", labeller_id=other, source="human")
    project.add_ranking([[responses[1]], [responses[0]], [responses[2]]], labeller_id=labeller, prompt_id=pid)
    ai = project.ensure_labeller(b("judge "), "ai")
    project.add_comparison(responses[2], responses[3], "left", labeller_id=ai, source="ai", principle=b("principle "),
                           meta={"principle": b("principle "), "rationale": b("because ")})
    project.enqueue_pair(responses[1], responses[2])
    # runs: a failed run with a bait name and error, a text-RL run with bait samples, an evaluation with a
    # bait skip reason, a generation with bait responses
    gen = project.create_run("generate", {"prompt_set": "starter"}, name=b("gen "), status="running")
    project.add_sample(gen, "generation", {"completions": [{"prompt": b(), "text": b(), "sample_index": 0,
                                                            "n_tokens": 3, "finish_reason": "length"}]})
    project.finish_run(gen, "completed", result={})
    rl = project.create_run("grpo", {}, name=b("rl "), status="running")
    for step in range(3):
        project.log_metrics(rl, step, {"reward/mean": 0.1 * step, "kl/seq_mean": 0.1 * step})
        project.add_sample(rl, "text_rl", {"step": step, "prompt": b(), "response": b(), "reward": 0.1,
                                           "components": {"format": 0.1}, "length": 3}, step=step)
    project.finish_run(rl, "completed", result={})
    ev = project.create_run("text_eval", {}, name=b("eval "), status="running")
    project.finish_run(ev, "completed", result={"policy": b(), "pass_at_1": 0.5, "win_rate": None,
                                                "win_rate_skipped": b("skipped ")})
    failed = project.create_run("rollouts", {}, name=b("run "), status="running")
    project.log_metrics(failed, 0, {"train/loss": 1.0})
    project.finish_run(failed, "failed", error=b("error "))
    (project.folder / "constitution.txt").write_text(b("Which response is better? ") + "\n")
    return {"prompt_id": pid, "responses": responses}


def test_every_view_tooltip_and_dialog_shows_untrusted_text_literally(qtbot, window, settings, probe, tmp_path):
    from app.errors import error_dialog
    from app.labeling.constitution_dialog import ConstitutionDialog
    from app.training.config_form import RunDialog
    from rlhf_core.jobs import list_jobs

    probe_path, watch = probe
    folder = tmp_path / "bait.rlhf"
    project = Project.create(folder, name=bait(probe_path, "project "))
    fill_with_bait(project, probe_path, tmp_path)
    project.close()
    settings.labeller = bait(probe_path, "person ")
    assert window.open_project(folder)
    window.resize(1400, 900)
    sweep = Sweep(watch)

    # every page, every tab, painted, then every widget swept
    for name, page in window.pages.items():
        window.show_page(name)
        tabs = page.findChildren(QTabWidget)
        for tab in tabs:
            for i in range(tab.count()):
                tab.setCurrentIndex(i)
                QApplication.processEvents()
                window.grab()
        QApplication.processEvents()
        window.grab()
    window.text_page.pairs.review_box.setChecked(True)  # the AI label and its principle
    QApplication.processEvents()
    window.show_page("text")
    window.grab()
    sweep.all(window)
    window.text_page.pairs.review_box.setChecked(False)
    window.grab()
    sweep.all(window)

    # dialogs: the import error box (the file's keys), a run's settings errors, the constitution, the
    # generic error box; shown as a person would see them
    window.interactive = True
    keys_file = tmp_path / "keys.jsonl"
    keys_file.write_text(json.dumps({bait(probe_path): "x", "other": 1}) + "\n")
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text(json.dumps({"text": "ok", bait(probe_path): 1}) + "\n")
    with answering_dialogs(sweep) as shown:
        assert window.import_trl(keys_file) is None
        assert window.import_prompts(prompts_file) is None
        window.show_error(bait(probe_path, "title "), bait(probe_path, "message "))
        error_dialog("Unexpected error", bait(probe_path, "ValueError: "), bait(probe_path, "Traceback "))
        qtbot.waitUntil(lambda: len(shown) == 4, timeout=5000)
    assert [t for t, _ in shown[:2]] == ["Nothing was imported"] * 2
    assert "keys.jsonl" in shown[0][1] and "line 1" in shown[0][1] and bait(probe_path) in shown[0][1]
    assert "prompts.jsonl" in shown[1][1] and bait(probe_path) in shown[1][1]

    dialog = RunDialog(list_jobs(), "generate", window)
    dialog.form.editors["prompt_set"].setText(bait(probe_path))
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    dialog.show()
    QApplication.processEvents()
    assert bait(probe_path) in dialog.errors.text()
    sweep.all(dialog)
    dialog.close()
    constitution = ConstitutionDialog(window.project.folder, window)
    constitution.show()
    QApplication.processEvents()
    sweep.all(constitution)
    constitution.close()

    # the bait reached the places that used to render it, and everything else that shows it
    tooltips = {_ptr(w) for kind, _, w in sweep.seen if kind == "tooltip"}
    labels = {_ptr(w) for kind, _, w in sweep.seen if kind == "label"}
    for must in (window.text_page.agreement.disagreements.viewport(), window.runs_page.table.viewport(),
                 window.text_rl_page.eval_table.viewport()):
        assert _ptr(must) in tooltips, (_name(must), sweep.seen)
    for must in (window.project_page.title, window.text_page.pairs.ai_info, window.clip_page.why_label,
                 dialog.errors):
        assert _ptr(must) in labels, (_name(must), sweep.seen)
    kinds = {kind for kind, _, _ in sweep.seen}
    assert {"label", "tooltip", "cell", "text box"} <= kinds
    assert watch.poll() == 0, "a widget rendered untrusted text as HTML and opened the file it named"

    # and the watch does see a rich-text render of the same bait
    control = QLabel(bait(probe_path))
    control.sizeHint()
    assert watch.poll() > 0


def test_project_names_and_paths_show_as_written_in_the_title_and_recent_menu(qtbot, window, tmp_path):
    odd = tmp_path / "R&D [*] study.rlhf"
    assert window.open_project(odd, create=True)
    qtbot.waitUntil(lambda: window.windowHandle() is not None)
    assert window.windowHandle().title().startswith("R&D [*] study — ")
    window._fill_recent_menu()
    texts = [a.text() for a in window.recent_menu.actions()]
    assert str(odd).replace("&", "&&") in texts  # shown as "R&D", not with D as a shortcut
    next(a for a in window.recent_menu.actions() if a.text() == str(odd).replace("&", "&&")).trigger()
    assert window.project.folder == odd
