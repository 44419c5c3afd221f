"""Runs: every run of the project with its status, settings, result or error, and live plots.

Tick runs in the table to overlay their metrics; the plot reloads finished runs from the
database, and the running job's metrics arrive live from the job runner.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.error_view import ErrorView
from app.pages.compare_view import CompareView
from app.jobs import round_why_not
from app.plain import message_box, tip
from app.plots.after_release import AfterRelease
from app.plots.metric_plot import MetricPlotView
from rlhf_core.analysis.intervals import heldout_of_result
from rlhf_core.analysis.reward_check import LEARNED_REWARD_JOBS, control_alerts
from rlhf_core.io.report import ReportError, write_report
from rlhf_core.jobs import RESUMABLE_STATUSES, Timing, resumable
from rlhf_core.store import Project

_STATUS_COLOURS = {
    "completed": "#1b7f3b", "failed": "#b00020", "cancelled": "#8a6d00",
    "running": "#1f5fbf", "queued": "#666666",
}
COLUMNS = ["Run", "Job", "Status", "Started (UTC)", "Duration"]


def _duration(run: dict, timing: Timing | None = None) -> str:
    """A finished run's duration; a running one's elapsed time, speed and time left (``timing``)."""
    from datetime import datetime

    if timing is not None and run.get("status") == "running":
        return timing.short_text()
    if not run.get("started_at"):
        return ""
    start = datetime.fromisoformat(run["started_at"])
    end = datetime.fromisoformat(run["finished_at"]) if run.get("finished_at") else None
    if end is None:
        return "…"
    return f"{(end - start).total_seconds():.1f} s"


class RunsPage(QWidget):
    new_run_requested = Signal()
    cancel_requested = Signal(int)
    resume_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self._runs: list[dict] = []
        self._loaded_finished: set[int] = set()
        self._timing: tuple[int, Timing] | None = None  # the running job's latest timing (the runner's)
        self._details_shown: tuple[int, str] | None = None  # (run id, status) in the details pane
        self.external_runs: set[int] = set()  # runs another process works on (followed, not cancellable here)
        # runs the page ticked to show the selected/latest run (not the user): replaced by the next one
        self._auto_ticked: set[int] = set()

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        self.table.itemChanged.connect(self._on_table_item_changed)
        self.table.setToolTip("The selected run is plotted; tick more runs to overlay their metrics.")
        self._after_click = AfterRelease(self.table)

        self.new_button = QPushButton("New run…")
        self.new_button.setToolTip("Start a job (Ctrl+R)")
        self.new_button.clicked.connect(self.new_run_requested)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(self._on_resume_clicked)
        self.resume_button.setEnabled(False)
        self.report_button = QPushButton("Export report…")
        self.report_button.setToolTip("Write the selected run's report: one HTML page (plots, final metrics, settings, "
                                       "data, samples, versions) that opens in a browser and prints to PDF.")
        self.report_button.clicked.connect(self._on_report_clicked)
        self.report_button.setEnabled(False)
        self._report_folder = str(Path.home())
        buttons = QHBoxLayout()
        buttons.addWidget(self.new_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.report_button)
        buttons.addStretch(1)

        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("Select a run to see its settings and result.")
        self.error_text = ErrorView()  # a sentence and what to do; the traceback under Details
        self.alert_label = QLabel()  # a policy trained on a learned reward: reward hacking? (control_alerts)
        self.alert_label.setObjectName("run_alert")
        self.alert_label.setTextFormat(Qt.TextFormat.PlainText)
        self.alert_label.setWordWrap(True)
        self.alert_label.setStyleSheet("color: #b00020; font-weight: 600;")
        self.alert_label.hide()
        self._alerts: dict[int, list] = {}  # finished runs' alerts, read once
        self.info_tabs = QTabWidget()
        self.info_tabs.addTab(self.details, "Settings && result")
        self.info_tabs.addTab(self.error_text, "Error")
        self.compare = CompareView()  # the ticked runs side by side
        self.info_tabs.addTab(self.compare, "Compare")
        self._compared: tuple = ()
        self._runner_runs: set[int] = set()  # queued or running in this app's runner (job_finished not seen yet)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.table, 3)
        left_layout.addWidget(self.alert_label)
        left_layout.addWidget(self.info_tabs, 2)

        self.plot = MetricPlotView()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        self.plot_title = QLabel("Metrics")
        self.plot_title.setStyleSheet("font-weight: 600;")
        title_row = QHBoxLayout()
        title_row.addWidget(self.plot_title, 1)
        title_row.addWidget(self.plot.export_button)  # the plots' Export… beside their title
        right_layout.addLayout(title_row)
        right_layout.addWidget(self.plot, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([460, 820])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    # --- data --------------------------------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self._compared = ()
        self._runner_runs.clear()
        self._alerts.clear()
        self.external_runs.clear()
        self._loaded_finished.clear()
        self.plot.clear()
        self._auto_ticked.clear()
        self.table.setRowCount(0)  # no ticks carried over from the previous project
        self.refresh()
        if project is not None and self._runs:
            last = self._runs[-1]["id"]
            self.select_run(last)
            self._show_in_plot(last)  # the latest run alone; more by ticking them

    def refresh(self) -> None:
        """Re-read the runs table (cheap); keeps ticks and selection."""
        checked = set(self.checked_runs())
        selected = self.selected_run_id()
        self._runs = self.project.runs() if self.project is not None else []
        self.table.blockSignals(True)
        self.table.setRowCount(len(self._runs))
        for row, run in enumerate(reversed(self._runs)):
            id_item = QTableWidgetItem(str(run["id"]))
            id_item.setData(Qt.ItemDataRole.UserRole, run["id"])
            id_item.setFlags(id_item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            id_item.setCheckState(Qt.CheckState.Checked if run["id"] in checked else Qt.CheckState.Unchecked)
            status = QTableWidgetItem(run["status"])
            status.setForeground(QColor(_STATUS_COLOURS.get(run["status"], "#000")))
            started = QTableWidgetItem((run.get("started_at") or "")[11:19])
            started.setToolTip((run.get("started_at") or "")[:19].replace("T", " ") + " UTC")
            job = QTableWidgetItem(run["name"] or run["kind"])
            job.setToolTip(tip(f"{run['name']} ({run['kind']})"))
            timing = self._timing[1] if self._timing is not None and self._timing[0] == run["id"] else None
            duration = QTableWidgetItem(_duration(run, timing))
            if timing is not None:
                duration.setToolTip(timing.text())
            cells = [id_item, job, status, started, duration]
            for col, cell in enumerate(cells):
                if col:
                    cell.setFlags(cell.flags() & ~Qt.ItemFlag.ItemIsUserCheckable)
                self.table.setItem(row, col, cell)
        self.table.blockSignals(False)
        if selected is not None:
            self.select_run(selected)
        self._show_details(self.selected_run_id())  # the same row may stay selected: its status changed
        self._update_plot_runs()

    def run_by_id(self, run_id: int) -> dict | None:
        return next((r for r in self._runs if r["id"] == run_id), None)

    def checked_runs(self) -> list[int]:
        out = []
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(Qt.ItemDataRole.UserRole))
        return sorted(out)

    def selected_run_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)

    def select_run(self, run_id: int) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == run_id:
                self.table.selectRow(row)
                return

    def _set_checked(self, run_id: int, checked: bool) -> None:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item.data(Qt.ItemDataRole.UserRole) == run_id:
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    # --- live updates from the runner -----------------------------------------------------------
    def on_job_queued(self, run_id: int) -> None:
        self._runner_runs.add(run_id)  # its metrics come live until job_finished, whatever the database says
        self.refresh()
        self.select_run(run_id)
        self._show_in_plot(run_id)

    def follow_external(self, run_id: int) -> None:
        """A run another process works on in this project: ticked and selected, its history from the
        project now, the rest through :meth:`on_metrics`."""
        if self.project is None:
            return
        self.plot.load_run(run_id, self.project.metrics(run_id), label=f"run {run_id}")
        self.plot.live_runs.add(run_id)
        self.external_runs.add(run_id)
        self.on_job_queued(run_id)
        self._show_details(self.selected_run_id())  # it may have been selected already (Cancel off now)

    def on_metrics(self, run_id: int, batch) -> None:
        self.plot.append(run_id, batch)

    def on_status_changed(self, run_id: int, status: str) -> None:
        """A run's stored status changed (queued -> running): the table and its details follow."""
        self.refresh()

    def on_timing(self, run_id: int, timing: Timing) -> None:
        """The running job's elapsed time, speed and time left, in its Duration cell."""
        self._timing = (run_id, timing)
        run = self.run_by_id(run_id)
        for row in range(self.table.rowCount()):
            if run is not None and self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == run_id:
                cell = self.table.item(row, 4)
                cell.setText(_duration(run, timing))
                cell.setToolTip(timing.text() if run["status"] == "running" else "")

    def on_job_finished(self, run_id: int, status: str, error: str) -> None:
        self.external_runs.discard(run_id)
        self._runner_runs.discard(run_id)
        if self._timing is not None and self._timing[0] == run_id:
            self._timing = None
        self.plot.mark_finished(run_id)
        self.refresh()
        self._show_details(self.selected_run_id())

    # --- slots -------------------------------------------------------------------------------
    def _on_table_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 0:
            self._auto_ticked.discard(item.data(Qt.ItemDataRole.UserRole))  # ticked or unticked by the user
            self._update_plot_runs()

    def _on_table_selection(self) -> None:
        run_id = self.selected_run_id()
        self._show_details(run_id)
        if run_id is not None:
            self._after_click.call(lambda: self._show_in_plot(run_id))

    def _show_in_plot(self, run_id: int) -> None:
        """Plot ``run_id`` by default: tick it in place of the run ticked for the last selection; the
        user's own ticks stay (more runs are overlaid by choice)."""
        if self.run_by_id(run_id) is None or run_id in self.checked_runs():
            return
        self.table.blockSignals(True)
        for old in self._auto_ticked:
            self._set_checked(old, False)
        self._set_checked(run_id, True)
        self.table.blockSignals(False)
        self._auto_ticked = {run_id}
        self._update_plot_runs()

    def _on_cancel_clicked(self) -> None:
        run_id = self.selected_run_id()
        if run_id is not None:
            self.cancel_requested.emit(run_id)

    def _on_resume_clicked(self) -> None:
        run_id = self.selected_run_id()
        if run_id is not None:
            self.resume_requested.emit(run_id)

    def _on_report_clicked(self) -> None:
        run_id = self.selected_run_id()
        if run_id is None or self.project is None:
            return
        folder = QFileDialog.getExistingDirectory(self, f"Folder for run {run_id}'s report", self._report_folder)
        if folder:
            self.export_report(run_id, folder)

    def export_report(self, run_id: int, folder: str) -> Path | None:
        """Write run ``run_id``'s report into ``folder`` and say where it is (or, in words, why not). In the GUI
        thread: ~15 ms for a short run, under a second for 160,000 metric rows (docs/performance.md)."""
        if self.project is None:
            return None
        try:
            path = write_report(self.project, run_id, folder)
        except ReportError as exc:
            message_box(self, "No report written", str(exc)).exec()
            return None
        self._report_folder = folder
        box = message_box(self, "Report written", f"Run {run_id}'s report is in {path}.\n\nIt opens in any "
                          "browser and prints to PDF from there.", QMessageBox.Icon.Information)
        show = box.addButton("Open in browser", QMessageBox.ButtonRole.ActionRole)
        box.exec()
        if box.clickedButton() is show:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
        return path

    def _update_resume_button(self, run: dict | None) -> None:
        why = None
        is_round = run is not None and run["kind"] == "round"
        if run is None or self.project is None or (run["status"] not in RESUMABLE_STATUSES and not is_round):
            why = "Select a cancelled, failed or interrupted run to continue it."
        elif is_round:  # a round also continues once the pairs it waits for are labelled
            why = round_why_not(self.project, run["id"])
        else:
            why = resumable(self.project, run["id"])
        self.resume_button.setEnabled(why is None)
        self.resume_button.setToolTip(tip(why) if why else (
            f"Finish round run {run['id']} from its first unfinished step, as the same run." if is_round else
            f"Continue run {run['id']} from its last saved state, as the same run."))

    def _show_details(self, run_id: int | None) -> None:
        run = self.run_by_id(run_id) if run_id is not None else None
        self._update_resume_button(run)
        self._show_alert(run)
        self.report_button.setEnabled(run is not None and self.project is not None)
        if run is None:
            self.details.setPlainText("")
            self.error_text.setPlainText("")
            self.cancel_button.setEnabled(False)
            return
        external = run["id"] in self.external_runs
        self.cancel_button.setEnabled(run["status"] in ("queued", "running") and not external)
        self.cancel_button.setToolTip("Another process runs this one: stop it there (e.g. Ctrl+C in its terminal)."
                                      if external else "")
        text = {"run": run["id"], "job": run["kind"], "status": run["status"],
                "created_at": run["created_at"], "started_at": run["started_at"],
                "finished_at": run["finished_at"], "settings": run["config"], "result": run["result"]}
        held = heldout_of_result(run["result"])  # an accuracy is said with its n and interval
        head = (held.text()[0].upper() + held.text()[1:] + ".\n\n") if held is not None else ""
        self.details.setPlainText(head + json.dumps(text, indent=2, default=str))
        self.error_text.setPlainText(run.get("error") or "")
        shown, self._details_shown = self._details_shown, (run["id"], run["status"])
        if run["status"] == "failed" and shown != self._details_shown:  # not again at every refresh
            self.info_tabs.setCurrentWidget(self.error_text)

    def _show_alert(self, run: dict | None) -> None:
        """Reward hacking in a run that trains a policy on a learned reward: the learned return rose while the
        true return fell, beyond the noise margin (``rlhf_core.analysis.reward_check.control_alerts``)."""
        alerts = []
        if run is not None and self.project is not None and run["kind"] in LEARNED_REWARD_JOBS:
            alerts = self._alerts.get(run["id"])
            if alerts is None:
                alerts = control_alerts(self.project.metrics(run["id"]))
                if run["status"] not in ("queued", "running"):
                    self._alerts[run["id"]] = alerts
        self.alert_label.setText("\n".join(f"Run {run['id']}: {a.message}" for a in alerts) if alerts else "")
        self.alert_label.setVisible(bool(alerts))

    def _update_plot_runs(self) -> None:
        runs = self.checked_runs()
        if self.project is not None:
            for run_id in runs:
                run = self.run_by_id(run_id)
                # (not while its live metrics are still arriving: the database may say "completed" before the
                # queued batches reach this thread, and they would be added to the loaded series twice)
                if (run and run["status"] not in ("queued", "running") and run_id not in self._loaded_finished
                        and run_id not in self.plot.live_runs and run_id not in self._runner_runs):
                    # finished runs are (re)loaded from the database: the single source of truth
                    self.plot.load_run(run_id, self.project.metrics(run_id), label=f"run {run_id}")
                    self._loaded_finished.add(run_id)
                if run:  # returns of different environments get different plots
                    self.plot.set_run_env(run_id, (run.get("config") or {}).get("env_id"))
        self.plot.set_visible_runs(runs)
        compared = tuple((r, (self.run_by_id(r) or {}).get("status")) for r in runs)
        if compared != self._compared:  # ticks changed, or a compared run finished
            self._compared = compared
            self.compare.show_runs(self.project, runs)
            self.info_tabs.setTabText(self.info_tabs.indexOf(self.compare),
                                      f"Compare ({len(runs)})" if len(runs) >= 2 else "Compare")
        self.plot_title.setText("Metrics — " + (", ".join(f"run {r}" for r in runs) if runs else "no run ticked"))
