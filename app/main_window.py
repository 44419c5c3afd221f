"""The main window: composes the pages, owns the project connection and the job runner."""

from __future__ import annotations

import importlib
import logging
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

from PySide6.QtCore import QTimer, QUrl, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QIcon, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QWidget,
)

from app import data_dialogs, remembered
from app.device_choice import DeviceBox, about_lines
from app.errors import file_error_text
from app.jobs import ExternalRunWatcher, JobRunner
from app.labeling.writer import close_writer
from app.pages import PAGES
from app.plain import message_box, plain_label
from app.settings import Settings
from app.shortcuts import ShortcutOverlay, collect
from app.training.config_form import RunDialog
from rlhf_core import __version__
from rlhf_core import config as cfg
from rlhf_core.demo import DEMO_NAME, add_demo_labellers, demo_runs
from rlhf_core.devices import set_default_device
from rlhf_core.jobs import ResumeError, list_jobs
from rlhf_core.paths import demo_project_path, logs_dir, resource_path
from rlhf_core.runtime import set_network_allowed, set_tensorboard_enabled, set_torch_threads, tensorboard_enabled
from rlhf_core.store import PROJECT_SUFFIX, Failure, Project, ProjectError, describe_stored_error
from rlhf_core.store.project import QUICK_CHECK_MAX_BYTES, integrity_problems

log = logging.getLogger(__name__)
APP_TITLE = "RLHF Workbench"
# what reading a file a person chose may raise; each is worded by app.errors.file_error_text
IMPORT_ERRORS = (ProjectError, OSError, sqlite3.Error, ValueError, RecursionError, MemoryError)
MIN_SIZE = (1200, 640)  # the pages are laid out for 1280x720 and up; narrower, Text RL's plots were crushed
QUIT_WAIT_MS = 5000  # quitting: how long a cancelled job has to stop before the window closes anyway
QUIT_CANCELLED = "Cancelled: the app was quit while this run was still stopping."


class ErrorPanel(QDockWidget):
    """This session's errors, each in a sentence with what to do (a failed run's traceback is on the Runs
    page, under Error ▸ Details). Hidden until the first error; plain text only."""

    SHOWN_HEIGHT = 150  # px: a strip under the pages, not a quarter of the window

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Errors", parent)
        self.setObjectName("errors_dock")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setPlaceholderText("Errors from failed runs appear here; the app keeps running.")
        self.setWidget(self.text)
        self.count = 0

    def add_error(self, title: str, details: str) -> None:
        self.count += 1
        self.text.appendPlainText(f"── {title} ──\n{details.rstrip()}\n")
        first = self.isHidden()
        self.show()
        self.raise_()
        window = self.parentWidget()
        if first and isinstance(window, QMainWindow) and not self.isFloating():
            window.resizeDocks([self], [self.SHOWN_HEIGHT], Qt.Orientation.Vertical)


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.threads = QSpinBox()
        self.threads.setRange(1, max(1, os.cpu_count() or 1))
        self.threads.setValue(settings.torch_threads)
        self.threads.setToolTip(
            "Threads torch may use per job. 1 is fastest for small networks and stays stable when\n"
            "another program is busy; 2 can be ~25 % faster for the language model on a quiet machine."
        )
        self.network = QCheckBox("Allow downloads from the Hugging Face hub")
        self.network.setChecked(settings.allow_network)
        self.network.setToolTip(
            "Off by default: the workbench works fully offline with local model folders.\n"
            "On: a model may be given as a hub id (e.g. org/name) and is downloaded once. No telemetry either way."
        )
        self.tensorboard = QCheckBox("Also write TensorBoard event files")
        self.tensorboard.setChecked(settings.tensorboard or tensorboard_enabled())
        self.tensorboard.setToolTip(
            "Every run also writes its metrics as TensorBoard event files, in the run's folder under\n"
            "checkpoints/run-NNNNN/tensorboard/ (view them with: tensorboard --logdir PROJECT/checkpoints).\n"
            "Runs started after the change; the same as RLHF_TENSORBOARD=1 or the CLI's --tensorboard."
        )
        self.device = DeviceBox(settings.device)
        form = QFormLayout(self)
        form.addRow("Device", self.device)
        form.addRow("Torch threads", self.threads)
        form.addRow("Network", self.network)
        form.addRow("Metrics", self.tensorboard)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


class MainWindow(QMainWindow):
    project_changed = Signal(object)
    torch_ready = Signal(float)  # emitted (queued, in the GUI thread) when the preload finished: seconds
    integrity_checked = Signal(str, object)  # (database path, problems): the background check of a large project

    def __init__(self, settings: Settings | None = None, *, interactive: bool = True):
        super().__init__()
        self.settings = settings or Settings()
        self.interactive = interactive  # False in tests/smoke: errors go to the panel, not dialogs
        self.project: Project | None = None
        self.runner = JobRunner(self)
        self.watcher = ExternalRunWatcher(self.runner, self)  # runs another process trains in the project
        self._preload: threading.Thread | None = None
        self._damage_reported: set[str] = set()  # databases whose damage the person was told about
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(QIcon(str(resource_path("icons", "app.svg"))))
        self.resize(1280, 800)
        self._quitting = False  # a quit was confirmed: the window closes once the running job stopped
        self._quit_timer = QTimer(self)  # ... or when this fires (QUIT_WAIT_MS)
        self._quit_timer.setSingleShot(True)
        self._quit_timer.timeout.connect(self._quit_without_waiting)
        self._quit_gave_up = False
        self.shortcut_overlay: ShortcutOverlay | None = None

        # pages, as app.pages.PAGES lists them: self.pages[name] and the attribute each names
        self.stack = QStackedWidget()
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.pages: dict[str, QWidget] = {}
        for page in PAGES:
            module, cls = page.widget.split(":")
            widget = getattr(importlib.import_module(module), cls)(**page.options(self.settings))
            setattr(self, page.attr, widget)
            self.pages[page.name] = widget
            self.stack.addWidget(widget)
            self.nav.addItem(QListWidgetItem(page.title))
        self.nav.currentRowChanged.connect(self._on_nav_row_changed)
        # as wide as its longest title: every pixel it does not need goes to the pages' plots
        self.nav.setFixedWidth(max(self.nav.sizeHintForColumn(0), 100) + 2 * self.nav.frameWidth() + 12)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(6, 6, 6, 6)
        row.addWidget(self.nav)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.error_panel = ErrorPanel(self)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.error_panel)
        self.error_panel.hide()

        self._build_status_bar()
        self._build_menus()
        hint = self.minimumSizeHint()  # the widest page's own minimum, if that is more
        self.setMinimumSize(max(MIN_SIZE[0], hint.width()), max(MIN_SIZE[1], hint.height()))

        # wiring
        self.project_page.new_project_requested.connect(self.new_project_dialog)
        self.project_page.open_project_requested.connect(self.open_project_dialog)
        self.project_page.demo_requested.connect(self.open_demo_project)
        self.project_page.step_requested.connect(self.go_to_step)
        self.extrapolation_page.run_requested.connect(self.new_run_dialog)
        self.extrapolation_page.demo_requested.connect(lambda job, config: self.new_run_dialog(job, initial=config))
        self.runs_page.new_run_requested.connect(lambda: self.new_run_dialog())
        self.runs_page.cancel_requested.connect(self.cancel_run)
        self.runs_page.resume_requested.connect(self.resume_run)
        self.models_page.next_round_requested.connect(self.next_round_dialog)
        self.models_page.show_run_requested.connect(self.show_run)
        self.rounds_page.start_requested.connect(lambda: self.next_round_dialog(""))
        self.rounds_page.next_round_requested.connect(self.next_round_dialog)
        self.rounds_page.continue_requested.connect(self.resume_run)
        self.rounds_page.label_requested.connect(lambda track: self.label_text() if track == "text"
                                                 else self.show_page("clips"))
        self.runner.job_queued.connect(self.runs_page.on_job_queued)
        self.runner.job_started.connect(self._on_runner_job_started)
        self.runner.status_changed.connect(self._on_runner_status_changed)
        self.runner.progress_changed.connect(self._on_runner_progress_changed)
        self.runner.metrics_logged.connect(self.runs_page.on_metrics)
        self.runner.job_finished.connect(self._on_runner_job_finished)
        self.runner.queue_changed.connect(self._update_queue_label)
        self.text_page.run_requested.connect(lambda job: self.new_run_dialog(job, show_runs=False))  # AI labeller
        self.text_pages = (self.generate_page, self.text_reward_page, self.text_rl_page)
        self.runner.job_queued.connect(self._on_runner_job_queued)
        self.runner.metrics_logged.connect(self.text_reward_page.on_metrics)
        self.runner.metrics_logged.connect(self.text_rl_page.on_metrics)
        self.runner.sample_emitted.connect(self.generate_page.on_sample)
        self.runner.sample_emitted.connect(self.text_reward_page.on_sample)
        self.runner.sample_emitted.connect(self.text_rl_page.on_sample)
        self.runner.progress_changed.connect(self.generate_page.on_progress)
        self.runner.timing_changed.connect(self._on_runner_timing)
        for page in (self.runs_page, *self.text_pages):
            self.runner.timing_changed.connect(page.on_timing)
        self.generate_page.run_requested.connect(lambda job, config: self.start_run(job, config, show_runs=False))
        self.generate_page.cancel_requested.connect(self.runner.cancel)
        self.generate_page.label_requested.connect(self.label_text)
        self.text_reward_page.train_requested.connect(lambda: self.new_run_dialog("text_reward_model", show_runs=False))
        self.text_rl_page.run_requested.connect(lambda job: self.new_run_dialog(job, show_runs=False))
        self.text_rl_page.start_requested.connect(lambda job, config: self.start_run(job, config, show_runs=False))
        self.watcher.run_appeared.connect(self._on_external_run)
        self.watcher.run_finished.connect(self._on_runner_job_finished)
        for page in (self.runs_page, self.text_reward_page, self.text_rl_page):
            self.watcher.metrics_logged.connect(page.on_metrics)
        for page in (self.text_reward_page, self.text_rl_page):
            self.watcher.sample_emitted.connect(page.on_sample)

        geometry = self.settings.window_geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)
        self.error_panel.setVisible(self.error_panel.count > 0)  # restoreState brings back what was shown last time

        # forms and view toggles, remembered per project (app/remembered.py)
        self._default_views = remembered.capture(self.pages)
        self._restoring_views = False
        self._views_timer = QTimer(self)
        self._views_timer.setSingleShot(True)
        self._views_timer.setInterval(500)
        self._views_timer.timeout.connect(self._save_views)
        remembered.watch(self.pages, self._on_views_changed)
        if "torch" in sys.modules:  # otherwise once preload_torch has loaded it (see _on_torch_ready)
            set_torch_threads(self.settings.torch_threads)
        self.torch_ready.connect(self._on_torch_ready)
        self.integrity_checked.connect(self._on_integrity_checked)
        set_network_allowed(self.settings.allow_network)
        if self.settings.tensorboard:  # off leaves RLHF_TENSORBOARD=1 from the environment on
            set_tensorboard_enabled(True)
        if self.settings.device != "auto":  # auto leaves RLHF_DEVICE from the environment on
            set_default_device(self.settings.device)
        self.nav.setCurrentRow(0)
        self._update_title()

    # --- pages ------------------------------------------------------------------------------------
    def show_page(self, name: str) -> None:
        self.nav.setCurrentRow(self.stack.indexOf(self.pages[name]))

    def go_to_step(self, step) -> None:
        """A next step of the Project page (rlhf_core.analysis.next_steps.NextStep): its job in the New Run
        dialog, or its page (text pairs queued first when the step says so)."""
        if step.job:
            self.new_run_dialog(step.job)
        elif step.page == "text" and step.queue:
            self.label_text()
        elif step.page:
            self.show_page(step.page)

    def label_text(self) -> None:
        """Label text with pairs on screen: when none is waiting, the responses' pairs are queued first."""
        self.show_page("text")
        self.text_page.label_responses()

    def _on_nav_row_changed(self, row: int) -> None:
        if 0 <= row < self.stack.count():
            self.stack.setCurrentIndex(row)
            page = self.stack.widget(row)
            if page is self.clip_page and self.clip_page.current is None:
                self.clip_page.show_next()
            if page is self.ranking_page and self.ranking_page.list.count() == 0:
                self.ranking_page.load_random()
            if page in (self.clip_page, self.demo_page, self.adjudication_page):
                page.setFocus()
            if page is self.labels_page:
                page.table.setFocus()  # the arrows move between labels, Enter opens one
            if page in (self.models_page, self.rounds_page) and self.project is not None:
                page.refresh()  # labels given or names changed elsewhere since

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.job_label = plain_label("Idle")
        self.job_label.setMinimumWidth(320)
        self.job_progress = QProgressBar()
        self.job_progress.setRange(0, 1000)
        self.job_progress.setFixedWidth(220)
        self.job_progress.setTextVisible(True)
        self.job_progress.hide()
        self.job_timing = plain_label("")  # elapsed · s/step · time left (rlhf_core.jobs.Timing)
        self.queue_label = plain_label("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Cancel the running job (Ctrl+.)")
        self.cancel_button.clicked.connect(lambda: self.runner.cancel())
        self.cancel_button.hide()
        bar.addPermanentWidget(self.queue_label)
        bar.addPermanentWidget(self.job_label)
        bar.addPermanentWidget(self.job_progress)
        bar.addPermanentWidget(self.job_timing)
        bar.addPermanentWidget(self.cancel_button)

    def _build_menus(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self._action(file_menu, "&New Project…", self.new_project_dialog, QKeySequence.StandardKey.New)
        self._action(file_menu, "&Open Project…", self.open_project_dialog, QKeySequence.StandardKey.Open)
        self._action(file_menu, "Open &Demo Project", self.open_demo_project)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addSeparator()
        self._action(file_menu, "&Export Preferences (TRL JSONL)…", self.export_trl_dialog)
        self._action(file_menu, "&Import Preferences (TRL JSONL)…", self.import_trl_dialog)
        self._action(file_menu, "Import &Prompts (JSONL or CSV)…", self.import_prompts_dialog)
        file_menu.addSeparator()  # control data: trajectories and clip labels
        self._action(file_menu, "Export &Trajectories (Minari)…", lambda: data_dialogs.export_minari(self))
        self._action(file_menu, "Import Demonstrations (&Minari)…", lambda: data_dialogs.import_minari(self))
        self._action(file_menu, "Export Clip &Labels (JSONL)…", lambda: data_dialogs.export_comparisons(self))
        self._action(file_menu, "Import Clip La&bels (JSONL)…", lambda: data_dialogs.import_comparisons(self))
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence("Ctrl+Q"))  # Cmd+Q on macOS; some platforms bind none

        run_menu = menu.addMenu("&Run")
        self._action(run_menu, "&New Run…", lambda: self.new_run_dialog(), QKeySequence("Ctrl+R"))
        self._action(run_menu, "Next &Round…", self.next_round_from_view, QKeySequence("Ctrl+Shift+N"))
        self._action(run_menu, "Reward &Extrapolation Demo…", lambda: self.new_run_dialog("extrapolation_demo"))
        self.cancel_action = self._action(run_menu, "&Cancel Running Job", lambda: self.runner.cancel(),
                                          QKeySequence("Ctrl+."))

        settings_menu = menu.addMenu("&Settings")
        self._action(settings_menu, "&Preferences…", self.preferences_dialog, QKeySequence.StandardKey.Preferences)

        view_menu = menu.addMenu("&View")
        errors_action = self.error_panel.toggleViewAction()
        errors_action.setText("&Errors Panel")
        view_menu.addAction(errors_action)

        help_menu = menu.addMenu("&Help")
        self._action(help_menu, "&Keyboard Shortcuts", self.show_shortcuts, QKeySequence("F1"))
        question = QShortcut(QKeySequence("?"), self, self.show_shortcuts)
        question.setWhatsThis("Keyboard shortcuts (this list)")
        self._action(help_menu, "Open &Logs Folder", self.open_logs_folder)
        self._action(help_menu, "&About", self.about_dialog)

    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    # --- projects --------------------------------------------------------------------------------
    def open_project(self, path: str | Path, *, create: bool = False, name: str | None = None) -> bool:
        """Open (or create) a project; on failure show the reason and keep the current one."""
        try:
            if create:
                project = Project.create(path, name=name)
            else:
                project = Project.open(path)
        except IMPORT_ERRORS as exc:
            self.show_error("Cannot open project" if not create else "Cannot create project",
                            file_error_text(exc, path))
            return False
        if self.runner.busy or self.runner.queued_run_ids:
            self.runner.shutdown(timeout=5.0)
        self.watcher.set_project(None)
        if self.project is not None:
            self._save_views()
            self._finish_label_writes()
            self.project.close()
        self.project = project
        if project.db_path.stat().st_size > QUICK_CHECK_MAX_BYTES:  # too large to check on open
            self.check_integrity_in_background(project.db_path)
        self.settings.add_recent_project(str(project.folder))
        try:
            interrupted = project.mark_interrupted_runs()
            if interrupted:
                self.statusBar().showMessage(
                    f"{interrupted} run(s) did not finish last time (app closed or crashed) and are marked failed.",
                    10000)
            self.project_page.show_project(project)
            for page in self.pages.values():
                if hasattr(page, "set_project"):
                    page.set_project(project)
            self._restore_views(project)
            self.watcher.set_project(project)
            self.watcher.poll()  # runs another process is training here right now: follow them at once
        except sqlite3.DatabaseError as exc:  # damage the on-open check did not reach (large projects)
            self._report_damage(str(project.db_path), [str(exc)])
        self._update_title()
        self.show_page("project")  # a project opens on its overview and next steps
        self.project_changed.emit(project)
        return True

    def open_demo_project(self) -> bool:
        """Open the built-in demo project; first time, create it and fill it by a live run."""
        folder = demo_project_path()
        if (folder / "project.db").exists():
            return self.open_project(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if not self.open_project(folder, create=True, name=DEMO_NAME):
            return False
        assert self.project is not None
        add_demo_labellers(self.project)
        project = self.project

        def submit_demo_runs(_seconds: float = 0.0) -> None:
            if self.project is not project:  # another project was opened meanwhile
                return
            for spec, config in demo_runs():  # filled in live by the job runner
                self.runner.submit(project, spec, config, torch_threads=self.settings.torch_threads)
            self.project_page.refresh(project)
            self.statusBar().clearMessage()

        self.show_page("runs")
        if "torch" in sys.modules:
            submit_demo_runs()
        else:  # the runs' configs live in modules that import torch: load it without freezing the window
            self.statusBar().showMessage("Preparing the demo project's first runs (loading torch)…")
            self.torch_ready.connect(submit_demo_runs, Qt.ConnectionType.SingleShotConnection)
            QTimer.singleShot(0, self.preload_torch)  # once the window is painted
        self.project_page.refresh(project)
        return True

    def new_project_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "New project folder", str(Path.home() / f"untitled{PROJECT_SUFFIX}"))
        if path:
            if not path.endswith(PROJECT_SUFFIX):
                path += PROJECT_SUFFIX
            self.open_project(path, create=True)

    def open_project_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project folder", str(Path.home()))
        if path:
            self.open_project(path)

    def export_trl(self, path: str | Path, *, conversational: bool = False) -> dict | None:
        """Write the project's text preferences as TRL JSONL; returns the report (None on failure)."""
        from rlhf_core.io.trl import export_trl

        if self.project is None:
            self.show_error("No project open", "Open a project to export its preferences.")
            return None
        try:
            report = export_trl(self.project, path, conversational=conversational)
        except OSError as exc:
            self.show_error("Export failed", f"Could not write {path}: {exc}")
            return None
        skipped = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in report.skipped.items() if n) or "none"
        self.statusBar().showMessage(f"Exported {report.written} preference pairs to {report.path.name} "
                                     f"(left out: {skipped}).", 10000)
        return report.as_dict()

    def import_trl(self, path: str | Path) -> dict | None:
        """Import a TRL JSONL file into the open project; a bad file imports nothing and says why."""
        from rlhf_core.io.trl import import_trl

        report = self._import_file(path, "preferences", import_trl)
        if report is None:
            return None
        self.text_page.refresh()
        self.statusBar().showMessage(
            f"Imported {report.comparisons_added} comparisons ({report.already_present} already present), "
            f"{report.prompts_added} prompts, {report.responses_added} responses from {Path(path).name}"
            + (f"; left out {len(report.skipped_rows)} rows whose two answers are the same." if report.skipped_rows
               else "."), 10000)
        return report.as_dict()

    def import_prompts(self, path: str | Path) -> dict | None:
        """Import a JSONL or CSV prompt file into the open project; a bad file imports nothing and says why."""
        from rlhf_core.text.prompts import import_prompts

        result = self._import_file(path, "prompts", import_prompts)
        if result is None:
            return None
        self.statusBar().showMessage(f"Imported {len(result.added_ids)} prompts ({len(result.existing_ids)} already "
                                     f"present) from {Path(path).name}.", 10000)
        return result.as_dict()

    def _import_file(self, path: str | Path, what: str, importer):
        """``importer(project, path)`` on a file a person chose; None (and a sentence naming the file) when
        nothing was imported."""
        if self.project is None:
            self.show_error("No project open", f"Open or create a project to import {what} into.")
            return None
        try:
            result = importer(self.project, path)
        except IMPORT_ERRORS as exc:
            self.show_error("Nothing was imported", file_error_text(exc, path, self.project.folder))
            return None
        self.project_page.refresh(self.project)
        return result

    def import_prompts_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import prompts", str(Path.home()),
                                              "Prompt files (*.jsonl *.csv);;All files (*)")
        if path:
            self.import_prompts(path)

    def export_trl_dialog(self) -> None:
        if self.project is None:
            self.show_error("No project open", "Open a project to export its preferences.")
            return
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export preferences (TRL)", str(Path.home() / "preferences.jsonl"),
            "TRL preference JSONL, plain strings (*.jsonl);;TRL preference JSONL, chat messages (*.jsonl)")
        if path:
            self.export_trl(path, conversational="chat" in chosen)

    def import_trl_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import preferences (TRL)", str(Path.home()),
                                              "JSON Lines (*.jsonl *.json);;All files (*)")
        if path:
            self.import_trl(path)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_projects()
        if not recent:
            action = self.recent_menu.addAction("(none)")
            action.setEnabled(False)
        for path in recent:
            action = self.recent_menu.addAction(path.replace("&", "&&"))  # a lone & would mark a shortcut
            action.triggered.connect(lambda _=False, p=path: self.open_project(p))

    def _update_title(self) -> None:
        # "[*]" in a title is Qt's modified-marker placeholder; doubled it shows as written
        name = self.project.name.replace("[*]", "[*][*]") if self.project else ""
        self.setWindowTitle(f"{name} — {APP_TITLE}" if self.project else APP_TITLE)

    # --- runs ------------------------------------------------------------------------------------
    def new_run_dialog(self, job_name: str | None = None, *, show_runs: bool = True, initial=None) -> None:
        """The New Run dialog on ``job_name`` (its form filled from ``initial``, a config of that job)."""
        if self.project is None:
            self.show_error("No project open", "Open or create a project first: runs are stored in it.")
            return
        dialog = RunDialog(list_jobs(), job_name, self, initial=initial)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.start_run(dialog.spec.name, dialog.result_config, show_runs=show_runs)

    def next_round_dialog(self, reference: str = "") -> int | None:
        """The round dialog from policy ``reference`` (checkpoint:ID; '' = round 1), its other settings those of
        the round that made the policy; the round starts when accepted. Returns its run id."""
        if self.project is None:
            self.show_error("No project open", "Open or create a project first: runs are stored in it.")
            return None
        from rlhf_core.rounds import RoundError, next_round_config

        try:
            initial = next_round_config(self.project, {"from_policy": reference})
        except (RoundError, cfg.ConfigError, ValueError) as exc:
            self.show_error("Cannot start the next round", str(exc))
            return None
        dialog = RunDialog(list_jobs(), "round", self, initial=initial)
        self.round_dialog = dialog  # tests fill it in and accept it
        if dialog.exec() == QDialog.DialogCode.Accepted:
            return self.start_run(dialog.spec.name, dialog.result_config, show_runs=False)
        return None

    def next_round_from_view(self) -> int | None:
        """Ctrl+Shift+N: the next round from the policy selected on Models or Rounds, else from the newest
        round's policy, else round 1."""
        if self.project is None:
            return self.next_round_dialog("")
        page = self.stack.currentWidget()
        reference = ""
        if page is self.models_page and self.models_page.round_button.isEnabled():
            reference = self.models_page.selected().reference
        elif page is self.rounds_page and self.rounds_page.next_button.isEnabled():
            reference = self.rounds_page.selected()["policy"]
        else:
            from rlhf_core.rounds import round_rows

            made = [row["policy"] for row in round_rows(self.project) if row.get("policy")]
            reference = made[-1] if made else ""
        return self.next_round_dialog(reference)

    def show_run(self, run_id: int) -> None:
        self.show_page("runs")
        self.runs_page.select_run(run_id)

    def _on_external_run(self, run_id: int, kind: str) -> None:
        """Another process (a terminal's ``python -m rlhf_core``, a second app) works on a run here."""
        self.runs_page.follow_external(run_id)
        self.text_rl_page.follow_external(run_id, kind)
        self.text_reward_page.on_job_queued(run_id, kind)
        self.statusBar().showMessage(f"Following run {run_id} ({kind}), which another process is running.", 10000)

    def cancel_run(self, run_id: int | None = None) -> None:
        """Cancel a run of this app's runner; a run another process works on can only be stopped there."""
        if run_id is not None and run_id in self.watcher.followed:
            self.statusBar().showMessage(
                f"Run {run_id} is running in another process (a terminal or another window): stop it there.", 10000)
            return
        self.runner.cancel(run_id)

    def resume_run(self, run_id: int) -> bool:
        """Continue a cancelled, failed or interrupted run from its saved state; why not, in the status bar."""
        if self.project is None:
            return False
        try:
            self.runner.resume(self.project, run_id, torch_threads=self.settings.torch_threads)
        except ResumeError as exc:
            self.statusBar().showMessage(str(exc), 10000)
            return False
        run = self.project.get_run(run_id) or {}
        self.statusBar().showMessage(f"Continuing round run {run_id} from its first unfinished step." if
                                     run.get("kind") == "round" else
                                     f"Resuming run {run_id} from its last saved state.", 5000)
        return True

    def _on_runner_job_queued(self, run_id: int) -> None:
        run = self.project.get_run(run_id) if self.project is not None else None
        if run is not None:
            for page in self.text_pages:
                page.on_job_queued(run_id, run["kind"])

    def start_run(self, job_name: str, config, *, show_runs: bool = True) -> int | None:
        if self.project is None:
            self.show_error("No project open", "Open or create a project first: runs are stored in it.")
            return None
        try:
            run_id = self.runner.submit(self.project, job_name, config, torch_threads=self.settings.torch_threads)
        except (cfg.ConfigError, KeyError) as exc:
            self.show_error("Cannot start run", str(exc))
            return None
        if show_runs:
            self.show_page("runs")
        return run_id

    def _on_runner_status_changed(self, run_id: int, status: str) -> None:
        # queued -> running, in every list of runs; the end is handled by job_finished, once the job's
        # metrics are all stored
        if status == "running":
            for page in (self.runs_page, self.text_reward_page, self.text_rl_page):
                page.on_status_changed(run_id, status)

    def _on_runner_timing(self, run_id: int, timing) -> None:
        if run_id == self.runner.current_run_id:
            self.job_timing.setText(timing.text())

    def _on_runner_job_started(self, run_id: int) -> None:
        self.job_label.setText(f"Run {run_id}: starting…")
        self.job_progress.setValue(0)
        self.job_progress.show()
        self.cancel_button.show()
        self.runs_page.refresh()

    def _on_runner_progress_changed(self, run_id: int, fraction: float, message: str) -> None:
        self.job_progress.setValue(int(fraction * 1000))
        self.job_progress.setFormat(f"{fraction * 100:.0f} %")
        self.job_label.setText(f"Run {run_id}: {message}" if message else f"Run {run_id}")

    def _on_runner_job_finished(self, run_id: int, status: str, error: str) -> None:
        if not self.runner.busy:
            self.job_progress.hide()
            self.job_timing.setText("")
            self.cancel_button.hide()
            self.job_label.setText(f"Run {run_id} {status}")
        self.runs_page.on_job_finished(run_id, status, error)
        if self.project is not None:
            self.project_page.refresh(self.project)
            if self.clip_page.current is None:
                self.clip_page.show_next()
            if self.ranking_page.list.count() == 0:
                self.ranking_page.set_project(self.project)
            self.extrapolation_page.refresh()
            self.models_page.refresh()
            self.rounds_page.refresh()
            self.text_page.refresh()
            for page in self.text_pages:
                page.on_job_finished(run_id, status, error)
        if status == "failed":
            failure = self.run_failure(run_id, error)
            self.error_panel.add_error(f"Run {run_id} failed",
                                       f"{failure.sentence}\n(The traceback: Runs & plots ▸ Error ▸ Details.)")
            self.statusBar().showMessage(f"Run {run_id} failed: {failure.what}", 10000)
        elif status == "cancelled":
            self.statusBar().showMessage(f"Run {run_id} cancelled.", 5000)

    def run_failure(self, run_id: int, error: str = "") -> Failure:
        """A failed run in words, from its stored error (as after a restart), else from ``error``."""
        run = self.project.get_run(run_id) if self.project is not None else None
        failure = describe_stored_error((run or {}).get("error") or error)
        return failure or Failure("The run failed and left no error message.",
                                  "Help ▸ Open Logs Folder has the log of what it did.")

    def _update_queue_label(self) -> None:
        n = len(self.runner.queued_run_ids)
        self.queue_label.setText(f"{n} queued" if n else "")

    # --- dialogs ---------------------------------------------------------------------------------
    def show_error(self, title: str, message: str) -> None:
        self.error_panel.add_error(title, message)
        if self.interactive:
            message_box(self, title, message).exec()

    def preload_torch(self) -> threading.Thread:
        """Import torch in a background thread once the window is up, so that the first job or
        reward score does not wait for it. The window stays live (an import in another thread paused
        it at most ~0.3 s, p99 ~0.1 s; importing in the GUI thread froze it for the whole 2.5 s).
        A job that imports torch meanwhile simply waits for this import to finish."""
        def load() -> None:
            t0 = time.monotonic()
            try:
                importlib.import_module("torch")
            except Exception:  # noqa: BLE001 - a job that needs torch reports the error itself
                log.exception("preloading torch failed")
                return
            self.torch_ready.emit(time.monotonic() - t0)

        if self._preload is not None:  # once per window
            return self._preload
        self._preload = threading.Thread(target=load, name="preload-torch", daemon=True)
        self._preload.start()
        return self._preload

    def check_integrity_in_background(self, db_path: Path) -> threading.Thread:
        """SQLite's quick_check of a project too large to check on open (~1.6-2.3 s a GB here), on a
        read-only connection in a thread of its own; damage is reported in words when it is done."""
        def check() -> None:
            t0 = time.monotonic()
            problems = integrity_problems(db_path)
            log.info("integrity check of %s: %s in %.1f s", db_path, problems or "ok", time.monotonic() - t0)
            self.integrity_checked.emit(str(db_path), problems)

        self.statusBar().showMessage("Checking the project's database in the background…", 5000)
        thread = threading.Thread(target=check, name="integrity-check", daemon=True)
        thread.start()
        return thread

    def _on_integrity_checked(self, db_path: str, problems: list) -> None:
        if self.project is None or str(self.project.db_path) != db_path:
            return  # another project is open by now
        if not problems:
            self.statusBar().showMessage("The project's database checked out fine.", 5000)
            return
        self._report_damage(db_path, problems)

    def _report_damage(self, db_path: str, problems: list) -> None:
        if db_path in self._damage_reported:
            return  # told once already (on open and by the background check)
        self._damage_reported.add(db_path)
        self.show_error(
            "The project's database is damaged",
            f"SQLite's check of {db_path} found problems: {'; '.join(map(str, problems[:3]))}. "
            "Copy the project folder somewhere safe now and restore the database from a backup; "
            "what you save meanwhile may not be readable later.")

    def _on_torch_ready(self, seconds: float) -> None:
        set_torch_threads(self.settings.torch_threads)  # the GUI thread's count (jobs set their own)
        log.info("torch loaded in %.2f s in the background", seconds)

    def show_shortcuts(self) -> ShortcutOverlay:
        """Every key of the app, read from the window's actions and shortcuts (app/shortcuts.py)."""
        if self.shortcut_overlay is not None:
            self.shortcut_overlay.close()
        titles = {page.name: page.title for page in PAGES}
        overlay = ShortcutOverlay(collect(self, self.pages, titles), self)
        overlay.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        overlay.destroyed.connect(lambda: setattr(self, "shortcut_overlay", None))
        self.shortcut_overlay = overlay
        overlay.open()
        return overlay

    # --- forms and toggles remembered per project ----------------------------------------------------
    def _on_views_changed(self) -> None:
        if not self._restoring_views and self.project is not None:
            self._views_timer.start()

    def _save_views(self) -> None:
        self._views_timer.stop()
        if self.project is not None:
            self.settings.set_project_views(self.project.folder, remembered.capture(self.pages))

    def _restore_views(self, project: Project) -> None:
        self._restoring_views = True
        try:
            remembered.restore(self.pages, self.settings.project_views(project.folder), self._default_views)
        finally:
            self._restoring_views = False

    def preferences_dialog(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.settings.torch_threads = dialog.threads.value()
            set_torch_threads(self.settings.torch_threads)
            self.settings.allow_network = dialog.network.isChecked()
            set_network_allowed(self.settings.allow_network)
            self.settings.tensorboard = dialog.tensorboard.isChecked()
            set_tensorboard_enabled(self.settings.tensorboard)
            self.settings.device = dialog.device.value()
            set_default_device(self.settings.device)

    def open_logs_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(logs_dir())))

    def about_text(self) -> str:
        """Help ▸ About: the version, the torch build and GPUs, the default device, threads, the logs folder."""
        return (f"{APP_TITLE} {__version__}\nTurn human judgements into reward models and better policies.\n\n"
                + "\n".join(about_lines(self.settings)) + f"\n\nLogs: {logs_dir()}")

    def about_dialog(self) -> None:
        message_box(self, f"About {APP_TITLE}", self.about_text(), QMessageBox.Icon.Information).exec()

    # --- closing ---------------------------------------------------------------------------------
    def _finish_label_writes(self) -> None:
        """Labels still on their way to the database are written before the project closes."""
        if self.project is not None and not close_writer(self.project):
            self.error_panel.add_error("Closing", "Labels were still waiting to be saved after 60 s "
                                       "(the project stayed locked by another program).")

    def confirm_quit(self) -> bool:
        """Asked when quitting with a job running or queued: True to cancel it and quit."""
        running = self.runner.current_run_id
        question = (f"A job is running (run {running}): cancel it and quit?" if running is not None
                    else "Jobs are waiting to run: cancel them and quit?")
        yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
        box = QMessageBox(QMessageBox.Icon.Question, "Quit RLHF Workbench", question, yes | no, self)
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setInformativeText("Its run is kept as cancelled, with everything it logged so far.")
        box.button(yes).setText("Cancel Job and Quit")
        box.button(no).setText("Keep Running")
        box.setDefaultButton(no)
        box.setEscapeButton(no)
        return box.exec() == yes

    def _close_after_job(self, *_args) -> None:
        if self._quitting and not self.runner.busy:
            QTimer.singleShot(0, self.close)

    def _quit_without_waiting(self) -> None:
        """The cancelled job did not stop in time: its run is stored as cancelled and the window closes."""
        self._quit_gave_up = True
        run_id = self.runner.current_run_id
        if run_id is not None and self.project is not None:
            try:
                self.project.finish_run(run_id, "cancelled", error=QUIT_CANCELLED)
            except sqlite3.Error as exc:
                log.warning("could not store run %s as cancelled on quitting: %s", run_id, exc)
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._quitting:
            if (self.runner.busy or self.runner.queued_run_ids) and self.interactive and not self.confirm_quit():
                event.ignore()
                return
            self._quitting = True
        # cancel without waiting; the GUI thread never blocks on the job: the window closes when the runner
        # reports the job finished, or after QUIT_WAIT_MS
        stopped = self.runner.shutdown(timeout=0.0)
        if not stopped and not self._quit_gave_up:
            event.ignore()
            if not self._quit_timer.isActive():
                self._quit_timer.start(QUIT_WAIT_MS)
                self.runner.job_finished.connect(self._close_after_job)
                self.centralWidget().setEnabled(False)
                self.menuBar().setEnabled(False)
                self.statusBar().showMessage(f"Stopping run {self.runner.current_run_id} before quitting…")
            return
        self._quit_timer.stop()
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self._save_views()
        self.runner.blockSignals(True)  # late 'finished' events must not touch a closed project
        self._finish_label_writes()
        self.watcher.set_project(None)
        self.text_reward_page.shutdown()
        for page in self.pages.values():
            if hasattr(page, "set_project"):
                page.set_project(None)
        if self.project is not None:
            self.project.close()
            self.project = None
        event.accept()
