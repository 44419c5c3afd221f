"""The window's errors, quitting, remembered views, shortcut list and size, on a real MainWindow:

- a failed run reads as a sentence with what to do (traceback under Details), after a restart too;
- the Errors dock shows only when this session had an error (restoreState does not bring it back empty);
- quitting with a running job asks; No keeps the job, Yes cancels it and the window closes without the
  GUI thread blocking (the longest gap between 10 ms timer ticks is measured);
- forms and view toggles come back per project;
- F1/? list every key the window has (its QActions and QShortcuts, and the keys the views read);
- the window cannot be made smaller than the pages need, and Text RL's plots keep their room at 1280x720.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import QApplication, QMessageBox

from rlhf_core.config import param
from rlhf_core.jobs import JobSpec
from rlhf_core.store import Project, describe_stored_error
from tests.app.conftest import wait_finished
from tests.app.jobs_for_tests import SLEEPY, SleepyConfig


@dataclass
class SlowStepConfig:
    steps: int = param(1000, "Steps.", min=1)
    step_seconds: float = param(0.6, "Seconds a step takes without looking at Cancel (a long training step).")


def slow_steps(config: SlowStepConfig, ctx) -> dict:
    for step in range(config.steps):
        ctx.raise_if_cancelled()
        time.sleep(config.step_seconds)
        ctx.metrics(step, {"test/step": float(step)})
    return {}


SLOW = JobSpec(name="test_slow_steps", title="Slow steps", description="Long steps between cancel checks.",
               target="tests.app.test_errors_quit_views:slow_steps",
               config="tests.app.test_errors_quit_views:SlowStepConfig")


class GapMeter:
    """The GUI thread's longest pause: a 10 ms timer's largest interval between ticks."""

    def __init__(self):
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.monotonic()))

    def start(self) -> None:
        self.ticks = [time.monotonic()]
        self.timer.start()

    def longest_after(self, t0: float, until: float) -> float:
        times = [t for t in self.ticks if t >= t0] + [until]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def _answer_quit(qtbot, button: QMessageBox.StandardButton, seen: list) -> None:
    """Answer the quit question once it shows, noting its text and when it was answered."""
    def check():
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox) and box.isVisible():
            seen.append((box.text(), box.button(button).text(), time.monotonic()))
            box.button(button).click()
            return
        QTimer.singleShot(10, check)

    QTimer.singleShot(0, check)


def _quit_action(window) -> QAction:
    return next(a for a in window.findChildren(QAction) if a.text() == "&Quit")


# ------------------------------------------------------------------------------------------ errors
def test_a_failed_run_is_a_sentence_with_the_traceback_under_details_and_stays_so_after_a_restart(
        qtbot, window, settings):
    from app.main_window import MainWindow

    bad = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=10, fail_at=3))
    assert wait_finished(qtbot, window, bad)[0] == "failed"
    view = window.runs_page.error_text
    window.show_page("runs")
    window.runs_page.select_run(bad)
    assert window.runs_page.info_tabs.currentWidget() is view
    assert view.what.text() == "deliberate failure at step 3."
    assert "report it with the Details" in view.todo.text()
    assert view.details.isHidden() and view.details_button.isVisible()
    view.details_button.click()
    assert view.details.isVisible()
    details = view.details.toPlainText()
    assert details.startswith("Traceback") and details.rstrip().endswith("ValueError: deliberate failure at step 3")
    dock = window.error_panel.text.toPlainText()
    assert "Run 1 failed" in dock and "deliberate failure at step 3." in dock and "Traceback" not in dock
    assert window.statusBar().currentMessage() == f"Run {bad} failed: deliberate failure at step 3."

    folder = window.project.folder
    window.close()
    qtbot.waitUntil(lambda: window.project is None, timeout=5000)
    again = MainWindow(settings, interactive=False)
    qtbot.addWidget(again)
    again.show()
    assert again.open_project(folder)
    run = again.project.get_run(bad)
    assert run["status"] == "failed" and "ValueError: deliberate failure at step 3" in run["error"]
    again.runs_page.select_run(bad)
    shown = again.runs_page.error_text
    assert shown.what.text() == "deliberate failure at step 3."  # the real cause, not "Interrupted"
    assert shown.failure == describe_stored_error(run["error"])
    assert again.error_panel.isHidden()  # this session had no error yet
    again.close()


def test_a_run_the_app_never_finished_says_so_and_what_to_do(qtbot, window, tmp_path):
    folder = tmp_path / "crashed.rlhf"
    with Project.create(folder) as p:
        rid = p.create_run("synthetic_preferences", {})
        p.start_run(rid)  # the process "crashed" here
    assert window.open_project(folder)
    window.runs_page.select_run(rid)
    view = window.runs_page.error_text
    assert view.what.text().startswith("The app stopped before this run finished")
    assert "crash.log" in view.todo.text()


def test_the_errors_dock_shows_only_after_an_error_this_session_and_stays_small(qtbot, window, settings):
    from app.main_window import MainWindow

    assert window.error_panel.isHidden()
    window.show_error("Something", "It broke. Do this.")
    qtbot.waitUntil(lambda: window.error_panel.isVisible())
    QApplication.processEvents()
    assert window.error_panel.height() <= window.error_panel.SHOWN_HEIGHT + 40  # not a quarter of the window
    window.close()  # its state (dock shown) is saved
    again = MainWindow(settings, interactive=False)
    qtbot.addWidget(again)
    again.show()
    QApplication.processEvents()
    assert again.error_panel.isHidden() and again.error_panel.count == 0
    errors_action = next(a for a in again.findChildren(QAction) if a.text() == "&Errors Panel")
    errors_action.trigger()  # View ▸ Errors Panel brings it back on request
    assert again.error_panel.isVisible()
    again.close()


# ------------------------------------------------------------------------------------------ quitting
def test_quitting_with_a_running_job_asks_and_no_keeps_the_job(qtbot, window):
    window.interactive = True
    run_id = window.runner.submit(window.project, SLEEPY, SleepyConfig(steps=100_000))
    qtbot.waitUntil(lambda: window.project.get_run(run_id)["status"] == "running", timeout=10_000)
    assert _quit_action(window).shortcut() == QKeySequence("Ctrl+Q")
    seen: list = []
    _answer_quit(qtbot, QMessageBox.StandardButton.No, seen)
    _quit_action(window).trigger()
    assert seen and seen[0][0] == f"A job is running (run {run_id}): cancel it and quit?"
    assert seen[0][1] == "Keep Running"
    assert window.isVisible() and window.runner.current_run_id == run_id
    count = len(window.runs_page.plot.store.data(run_id, "test/step")[0])
    qtbot.waitUntil(lambda: len(window.runs_page.plot.store.data(run_id, "test/step")[0]) > count + 5)
    assert window.project.get_run(run_id)["status"] == "running"
    window.runner.cancel(run_id)
    assert wait_finished(qtbot, window, run_id)[0] == "cancelled"


def test_quitting_yes_cancels_and_closes_without_blocking_the_gui_thread(qtbot, window):
    """The job's steps take 0.6 s without looking at Cancel: the old close joined the thread in the GUI
    thread (frozen until the step ended); now the window stays live and closes when the job stopped."""
    window.interactive = True
    run_id = window.runner.submit(window.project, SLOW, SlowStepConfig())
    qtbot.waitUntil(lambda: len(window.runs_page.plot.store.data(run_id, "test/step")[0]) > 0, timeout=20_000)
    folder = window.project.folder
    meter = GapMeter()
    meter.start()
    seen: list = []
    _answer_quit(qtbot, QMessageBox.StandardButton.Yes, seen)
    _quit_action(window).trigger()
    assert seen and seen[0][1] == "Cancel Job and Quit"
    answered = seen[0][2]
    assert not window.menuBar().isEnabled()  # stopping: nothing new can be started meanwhile
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    closed = time.monotonic()
    meter.timer.stop()
    longest = meter.longest_after(answered, closed)
    print(f"quit: closed {closed - answered:.2f} s after the answer; longest GUI gap {longest * 1000:.0f} ms")
    assert longest < 0.2
    assert window.project is None
    with Project.open(folder) as p:
        assert p.get_run(run_id)["status"] == "cancelled"


def test_quitting_closes_after_a_short_wait_when_the_job_does_not_stop(qtbot, window, monkeypatch):
    import app.main_window as main_window

    monkeypatch.setattr(main_window, "QUIT_WAIT_MS", 300)
    run_id = window.runner.submit(window.project, SLOW, SlowStepConfig(step_seconds=3.0))
    qtbot.waitUntil(lambda: window.project.get_run(run_id)["status"] == "running", timeout=20_000)
    folder = window.project.folder
    t0 = time.monotonic()
    window.close()  # not interactive: no question
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=3000)
    assert time.monotonic() - t0 < 1.5
    with Project.open(folder) as p:
        run = p.get_run(run_id)
    assert run["status"] == "cancelled" and describe_stored_error(run["error"]).kind == "cancelled"
    assert "quit" in describe_stored_error(run["error"]).what


# ------------------------------------------------------------------------------------------ views
def test_forms_and_view_toggles_are_remembered_per_project(qtbot, window, settings, tmp_path):
    from app.main_window import MainWindow
    from app.remembered import TOGGLES, toggle

    form = window.generate_page.form
    defaults = form.values()
    form.set_value("max_prompts", 7)
    form.set_value("temperature", 0.35)
    window.clip_page.reveal_box.setChecked(True)
    window.text_page.pairs.diff_box.setChecked(not window.text_page.pairs.diff_box.isChecked())
    diff = window.text_page.pairs.diff_box.isChecked()
    first = window.project.folder

    assert window.open_project(tmp_path / "other.rlhf", create=True)  # another project: the defaults
    assert form.values() == defaults and not window.clip_page.reveal_box.isChecked()
    form.set_value("max_prompts", 3)
    assert window.open_project(first)  # back: as it was left
    assert form.values()["max_prompts"] == 7 and form.values()["temperature"] == pytest.approx(0.35)
    assert window.clip_page.reveal_box.isChecked() and window.text_page.pairs.diff_box.isChecked() == diff

    window.clip_page.strip_box.setChecked(False)  # saved a moment after the change, and on closing
    window.close()
    again = MainWindow(settings, interactive=False)
    qtbot.addWidget(again)
    assert again.open_project(first)
    assert again.generate_page.form.values()["max_prompts"] == 7
    assert again.clip_page.reveal_box.isChecked() and not again.clip_page.strip_box.isChecked()
    assert again.open_project(tmp_path / "other.rlhf")
    assert again.generate_page.form.values()["max_prompts"] == 3 and not again.clip_page.reveal_box.isChecked()
    assert all(toggle(again.pages, page, path) for page, path in TOGGLES)  # the table names real check boxes
    again.close()


def test_a_saved_value_the_form_cannot_take_keeps_the_default(qtbot, window, settings, tmp_path):
    folder = tmp_path / "edited.rlhf"
    Project.create(folder).close()
    default_set = window.generate_page.form.values()["prompt_set"]
    settings.set_project_views(folder, {"forms": {"generate/GenerateConfig": {
        "prompt_set": "no-such-set", "max_prompts": "seven", "temperature": 0.5}}, "toggles": "junk"})
    assert window.open_project(folder)
    values = window.generate_page.form.values()
    assert values["prompt_set"] == default_set and values["temperature"] == pytest.approx(0.5)
    assert values["max_prompts"] != "seven"


# ------------------------------------------------------------------------------------------ keys
def _window_keys(window) -> set[tuple[str, str]]:
    """(section, key) of every shortcut registered in the window, outside dialogs."""
    from app.pages import PAGES
    from app.shortcuts import ANYWHERE, _page_of, in_dialog

    titles = {p.name: p.title for p in PAGES}
    keys = set()
    for action in window.findChildren(QAction):
        owner = action.parent()
        if action.shortcuts() and not in_dialog(owner if owner is not window else None):
            keys |= {s.toString() for s in action.shortcuts()}
    for shortcut in window.findChildren(QShortcut):
        if not shortcut.key().isEmpty() and not in_dialog(shortcut.parent()):
            page = _page_of(shortcut.parent(), window.pages)
            keys.add((titles.get(page, ANYWHERE), shortcut.key().toString()))
    return keys


def test_f1_and_question_mark_list_every_shortcut_of_the_window(qtbot, window):
    window.activateWindow()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=5000)
    qtbot.keyClick(window, Qt.Key.Key_F1)
    overlay = window.shortcut_overlay
    assert overlay is not None and overlay.isVisible()
    listed = overlay.listed()
    by_section = {(row.section, s) for row in overlay.rows for s in row.sequences}
    expected = _window_keys(window)
    assert expected, "the window registers shortcuts"
    for key in expected:
        if isinstance(key, tuple):
            assert key in by_section, key  # a page's QShortcut, under that page's title
        else:
            assert key in listed, key
    for key in ("Ctrl+Q", "Ctrl+R", "Ctrl+.", "F1", "?"):
        assert key in listed
    described = {row.keys: row.what for row in overlay.rows if row.section == "Extrapolation"}
    assert described["Z / Del"].startswith("Clear") and described["A"].startswith("Agree")
    assert overlay.tree.topLevelItemCount() == len(overlay.rows) + len({r.section for r in overlay.rows})
    overlay.close()
    qtbot.waitUntil(lambda: window.shortcut_overlay is None)
    window.activateWindow()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=5000)
    qtbot.keyClicks(window, "?")
    assert window.shortcut_overlay is not None and window.shortcut_overlay.isVisible()
    window.shortcut_overlay.close()


PROBE_KEYS = ([getattr(Qt.Key, f"Key_{c}") for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"]
              + [Qt.Key.Key_Left, Qt.Key.Key_Right, Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_Space,
                 Qt.Key.Key_Comma, Qt.Key.Key_Period, Qt.Key.Key_Equal, Qt.Key.Key_Minus, Qt.Key.Key_Plus,
                 Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Escape, Qt.Key.Key_Delete, Qt.Key.Key_Backspace,
                 Qt.Key.Key_Slash, Qt.Key.Key_Home, Qt.Key.Key_End, Qt.Key.Key_PageUp, Qt.Key.Key_PageDown])


@pytest.mark.parametrize("page,view", [("clips", ""), ("demo", ""), ("text", "pairs"), ("text", "revisions"),
                                       ("labels", "pane"), ("adjudicate", "")])
def test_every_key_a_view_reads_itself_is_in_the_list(qtbot, window, monkeypatch, page, view):
    """The labelling views read keys in keyPressEvent (no QShortcut to find): each key they take is listed."""
    from app.pages import PAGES

    widget = window.pages[page]
    for name in filter(None, view.split(".")):
        widget = getattr(widget, name)
    monkeypatch.setattr(widget, "start", lambda *a: None, raising=False)  # the demo recorder's Return
    title = next(p.title for p in PAGES if p.name == page)
    overlay = window.show_shortcuts()
    listed = {s for row in overlay.rows if row.section == title for s in row.sequences}
    taken = []
    for key in PROBE_KEYS:
        event = QKeyEvent(QEvent.Type.KeyPress, key, Qt.KeyboardModifier.NoModifier)
        widget.keyPressEvent(event)
        if hasattr(widget, "choosing_side"):
            widget.choosing_side = False
        if event.isAccepted():
            taken.append(QKeySequence(key).toString())
    overlay.close()
    assert taken, "the view reads keys"
    assert set(taken) <= listed, set(taken) - listed


# ------------------------------------------------------------------------------------------ size
def test_the_window_keeps_a_size_the_pages_work_at(qtbot, window):
    from app.main_window import MIN_SIZE

    window.resize(600, 400)
    assert window.width() >= MIN_SIZE[0] and window.height() >= MIN_SIZE[1]
    for page in window.pages.values():  # no page is squeezed below its own minimum
        assert window.stack.width() >= page.minimumSizeHint().width()
    window.resize(1280, 720)
    window.show_page("text_rl")
    QApplication.processEvents()
    assert window.text_rl_page.plot.width() >= 400  # the plots, not the lists, get the room
