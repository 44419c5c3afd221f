"""Runs page ▸ Export report…: the selected run's report written into the chosen folder (fast enough for the GUI
thread), or a message in words; Preferences ▸ TensorBoard makes the app's runs write event files."""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QDialog, QFileDialog, QMessageBox

from app.main_window import SettingsDialog
from rlhf_core.io.tensorboard import FOLDER
from rlhf_core.runtime import TENSORBOARD_ENV, tensorboard_enabled
from tests.app.conftest import wait_finished
from tests.app.jobs_for_tests import SLEEPY, SleepyConfig
from tests.core.io.runs_for_reports import make_reported_run


@pytest.fixture
def answered():
    """Every message box shown: its title and text; closed at once (the Open button not pressed)."""
    boxes = []

    def check():
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox) and box.isVisible():
            boxes.append((box.windowTitle(), box.text(), [b.text() for b in box.buttons()]))
            box.done(0)

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(check)
    timer.start()
    yield boxes
    timer.stop()


def test_export_report_writes_the_selected_runs_page(qtbot, window, answered, monkeypatch, tmp_path):
    run_id = make_reported_run(window.project)
    page = window.runs_page
    window.show_page("runs")
    page.refresh()
    page.table.clearSelection()
    assert not page.report_button.isEnabled()  # nothing selected
    page.select_run(run_id)
    assert page.report_button.isEnabled() and page.report_button.isVisible()
    target = tmp_path / "reports"
    target.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(target)))
    started = time.perf_counter()
    page.report_button.click()
    qtbot.waitUntil(lambda: len(answered) == 1, timeout=10_000)
    seconds = time.perf_counter() - started
    title, text, buttons = answered[0]
    report = target / f"run-{run_id}-report.html"
    assert title == "Report written" and str(report) in text and "Open in browser" in buttons
    assert report.is_file() and f"Run {run_id}:" in report.read_text(encoding="utf-8")
    assert seconds < 5  # in the GUI thread: ~30 ms here (docs/performance.md); generous for a busy CI machine

    blocker = tmp_path / "a-file"  # a file where the folder should be: said in words, nothing written
    blocker.write_text("x")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(blocker)))
    page.report_button.click()
    qtbot.waitUntil(lambda: len(answered) == 2, timeout=10_000)
    title, text, _ = answered[1]
    assert title == "No report written" and "is a file" in text and "Traceback" not in text
    assert blocker.read_text() == "x"


def test_the_tensorboard_preference_makes_runs_write_event_files(qtbot, window, monkeypatch):
    monkeypatch.setenv(TENSORBOARD_ENV, "0")  # restored after the test, whatever the app sets

    def accept_with_tensorboard(dialog):
        assert not dialog.tensorboard.isChecked()
        dialog.tensorboard.setChecked(True)
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(SettingsDialog, "exec", accept_with_tensorboard)
    window.preferences_dialog()
    assert window.settings.tensorboard and tensorboard_enabled()
    run_id = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=5))
    assert wait_finished(qtbot, window, run_id)[0] == "completed"
    events = list((window.project.run_folder(run_id, create=False) / FOLDER).glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
