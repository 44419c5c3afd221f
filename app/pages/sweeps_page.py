"""Sweeps: one job over seeds and a grid of settings, read as the field reports it.

Pick a sweep and a metric: the plot draws each setting's curve as the mean over its seeds with a 95 %
bootstrap band, the results table gives each setting's final value as the interquartile mean and the mean,
each with its 95 % bootstrap interval, over n seeds, and the members table lists every run by setting and
seed (:func:`rlhf_core.sweeps.sweep_view`). The bootstrap takes a moment on long curves, so it runs off the
GUI thread; a running sweep is read again every few seconds while the page is shown.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.jobs import BackgroundCall, on_own_connection
from app.plain import escaped, plain_label, tip
from app.plots.export import with_export
from rlhf_core.metrics import PALETTE, unit
from rlhf_core.store import Project
from rlhf_core.sweeps import SWEEP_KIND, SweepError, SweepView, sweep_view

NO_SWEEP_TEXT = ("No sweep in this project yet. A sweep runs one job over several seeds (and a grid of settings) "
                 "and reports each setting with confidence intervals; start one from a terminal: python -m "
                 "rlhf_core sweep JOB --project P --seeds 0 1 2 [--grid name=v1,v2] [--engine ray].")
RESULT_COLUMNS = ["Setting", "Seeds", "IQM", "IQM 95 % CI", "Mean", "Mean 95 % CI", "n"]
MEMBER_COLUMNS = ["Setting", "Seed", "Run", "Status", "Final"]
LIVE_REFRESH_MS = 5000
_STATUS_COLOURS = {"completed": "#1b7f3b", "failed": "#b00020", "cancelled": "#8a6d00", "running": "#1f5fbf",
                   "queued": "#666666"}


def number(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.4g}"


def interval(pair) -> str:
    return "–" if not pair else f"[{number(pair[0])}, {number(pair[1])}]"


def compute(folder: str, sweep_id: int, key: str | None) -> SweepView | str:
    """In a worker thread, on its own connection: the view's data, or the sentence saying why not."""
    return on_own_connection(folder, sweep_view, sweep_id, key, errors=(SweepError,))


class SweepsPage(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.view: SweepView | None = None
        self._shown_for: tuple | None = None  # (folder, sweep, key) the widgets show
        self._computing: tuple | None = None
        self.worker = BackgroundCall(self)
        self.worker.finished.connect(self._on_computed)
        self.timer = QTimer(self)  # a running sweep: its members land one by one
        self.timer.setInterval(LIVE_REFRESH_MS)
        self.timer.timeout.connect(self._on_timer)

        self.sweep_box = QComboBox()
        self.sweep_box.setMinimumWidth(320)
        self.sweep_box.setToolTip("The project's sweeps (runs of kind sweep), newest first.")
        self.sweep_box.currentIndexChanged.connect(lambda _i: self.request())
        self.metric_box = QComboBox()
        self.metric_box.setMinimumWidth(260)
        self.metric_box.setToolTip("The metric plotted and summarised: its final value in each member run.")
        self.metric_box.currentIndexChanged.connect(lambda _i: self.request())
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Read the sweeps and their members again.")
        self.refresh_button.clicked.connect(self.refresh)
        top = QHBoxLayout()
        top.addWidget(QLabel("Sweep:"))
        top.addWidget(self.sweep_box, 1)
        top.addWidget(QLabel("Metric:"))
        top.addWidget(self.metric_box, 1)
        top.addWidget(self.refresh_button)

        self.summary = plain_label(NO_SWEEP_TEXT)
        self.summary.setWordWrap(True)
        self.results = self._table(RESULT_COLUMNS)
        self.results.setToolTip("Each setting's final value over its seeds: the interquartile mean (the mean of "
                                "the middle half, robust to one bad seed) and the mean, each with a 95 % "
                                "percentile-bootstrap interval over runs (Agarwal et al. 2021).")
        self.members = self._table(MEMBER_COLUMNS)
        self.members.setToolTip("Every member run by setting and seed; its final value of the metric.")
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(plain_label("Results per setting"))
        left_layout.addWidget(self.results, 2)
        left_layout.addWidget(plain_label("Member runs"))
        left_layout.addWidget(self.members, 3)

        self.plot = pg.PlotWidget(background="w")
        self.plot.setLabel("bottom", "step")
        self.plot.getPlotItem().setMenuEnabled(False)
        self.plot.getAxis("left").enableAutoSIPrefix(False)  # a fraction stays a fraction (no "x0.001")
        self.legend = self.plot.addLegend(offset=(5, 5), brush=pg.mkBrush(255, 255, 255, 190), labelTextSize="8pt")
        self.curves: list[tuple[pg.PlotDataItem, pg.PlotDataItem, pg.PlotDataItem]] = []  # (mean, low, high)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(with_export(self.plot, "Sweep"))
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([520, 760])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(splitter, 1)

    @staticmethod
    def _table(columns: list[str]) -> QTableWidget:
        table = QTableWidget(0, len(columns))
        table.setHorizontalHeaderLabels(columns)
        table.verticalHeader().hide()
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        table.setWordWrap(False)
        table.setTextElideMode(Qt.TextElideMode.ElideRight)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        return table

    # --- choices --------------------------------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self._shown_for = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the project's sweeps (cheap) and recompute the chosen one."""
        chosen = self.sweep_id()
        sweeps = list(reversed(self.project.runs(SWEEP_KIND))) if self.project is not None else []
        self.sweep_box.blockSignals(True)
        self.sweep_box.clear()
        for run in sweeps:
            config = run["config"]
            seeds = len(config.get("seeds") or [])
            self.sweep_box.addItem(f"Run {run['id']} · {config.get('job', '?')} · {seeds} seed(s) · {run['status']}",
                                   run["id"])
        index = self.sweep_box.findData(chosen) if chosen is not None else -1
        self.sweep_box.setCurrentIndex(index if index >= 0 else (0 if sweeps else -1))
        self.sweep_box.blockSignals(False)
        if not sweeps:
            self._clear(NO_SWEEP_TEXT)
        self._shown_for = None  # members may have landed since
        self.request()

    def sweep_id(self) -> int | None:
        return self.sweep_box.currentData()

    def select_sweep(self, run_id: int) -> None:
        index = self.sweep_box.findData(run_id)
        if index >= 0:
            self.sweep_box.setCurrentIndex(index)

    def metric_key(self) -> str | None:
        return self.metric_box.currentData()

    def select_metric(self, key: str) -> None:
        index = self.metric_box.findData(key)
        if index >= 0:
            self.metric_box.setCurrentIndex(index)

    # --- computing ------------------------------------------------------------------------------
    def wanted(self) -> tuple | None:
        sweep = self.sweep_id()
        if self.project is None or sweep is None:
            return None
        same_sweep = self.view is not None and self.view.sweep["id"] == sweep
        return str(self.project.folder), sweep, self.metric_key() if same_sweep else None

    def request(self) -> None:
        """Compute the chosen sweep and metric in the background when shown and not on screen yet."""
        want = self.wanted()
        if want is None or not self.isVisible() or want == self._shown_for or self.worker.busy:
            return  # a busy worker: the newest choice is computed when the running one reports
        self._computing = want
        self.worker.start(compute, *want)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.refresh()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().hideEvent(event)
        self.timer.stop()

    def _on_timer(self) -> None:
        if self.isVisible() and self.view is not None and self.view.sweep["status"] in ("queued", "running"):
            self.refresh()
        else:
            self.timer.stop()

    def _on_computed(self, result, error) -> None:
        done, self._computing = self._computing, None
        if error is not None or isinstance(result, str):
            self._shown_for = done
            self._clear(result if isinstance(result, str) else f"The sweep could not be read: {error}")
        elif done is not None and done[1] == self.sweep_id():
            self._shown_for = (done[0], done[1], result.key)
            self.show_view(result)
        want = self.wanted()
        if want is not None and want != self._shown_for:
            self.request()

    # --- showing --------------------------------------------------------------------------------
    def _clear(self, text: str) -> None:
        self.view = None
        self.summary.setText(text)
        self.results.setRowCount(0)
        self.members.setRowCount(0)
        self._clear_plot()
        self.metric_box.blockSignals(True)
        self.metric_box.clear()
        self.metric_box.blockSignals(False)

    def _clear_plot(self) -> None:
        self.plot.clear()  # the legend stays, emptied
        self.legend.clear()
        self.curves = []

    def show_view(self, view: SweepView) -> None:
        self.view = view
        self.metric_box.blockSignals(True)
        self.metric_box.clear()
        for key in view.keys:
            self.metric_box.addItem(key + (f" ({unit(key)})" if unit(key) else ""), key)
        self.metric_box.setCurrentIndex(self.metric_box.findData(view.key))
        self.metric_box.blockSignals(False)
        config, sweep = view.sweep["config"], view.sweep
        members = sum(len(g.runs) for g in view.groups)
        completed = sum(s == "completed" for g in view.groups for s in g.statuses)
        engine = config.get("engine") or "local"
        self.summary.setText(f"Sweep run {sweep['id']} ({sweep['status']}): {config.get('job', '?')} over seeds "
                             f"{', '.join(str(s) for s in config.get('seeds') or [])}"
                             f"{' and ' + str(len(view.groups)) + ' settings' if len(view.groups) > 1 else ''}, "
                             f"{engine} engine; {completed} of {members} member runs completed."
                             + ("" if view.key else " No member has logged a metric yet."))
        self._fill_results(view)
        self._fill_members(view)
        self._draw(view)
        if sweep["status"] in ("queued", "running"):
            self.timer.start()

    def _fill_results(self, view: SweepView) -> None:
        self.results.setRowCount(len(view.groups))
        for row, group in enumerate(view.groups):
            s = group.summary or {}
            values = [group.label, ", ".join(str(x) for x in sorted(group.seeds)), s.get("iqm"), s.get("iqm_ci"),
                      s.get("mean"), s.get("mean_ci"), s.get("n", 0)]
            for col, value in enumerate(values):
                if col in (2, 4):
                    text = number(value)
                elif col in (3, 5):
                    text = interval(value)
                else:
                    text = str(value)
                cell = QTableWidgetItem(text)
                cell.setData(Qt.ItemDataRole.UserRole, value)  # the number itself (tests and copies read it)
                cell.setToolTip(tip(f"{RESULT_COLUMNS[col]}: {text}"))
                if col >= 2:
                    cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if col == 0:
                    cell.setForeground(QColor(PALETTE[row % len(PALETTE)]))
                self.results.setItem(row, col, cell)

    def _fill_members(self, view: SweepView) -> None:
        rows = [(g, run, seed, status) for g in view.groups
                for seed, run, status in sorted(zip(g.seeds, g.runs, g.statuses), key=lambda m: (m[0] is None, m[0]))]
        self.members.setRowCount(len(rows))
        for row, (group, run, seed, status) in enumerate(rows):
            final = group.finals.get(run)
            cells = [group.label, str(seed), str(run), status, number(final)]
            for col, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                cell.setToolTip(tip(text))
                if col == 3:
                    cell.setForeground(QColor(_STATUS_COLOURS.get(status, "#000000")))
                if col == 4:
                    cell.setData(Qt.ItemDataRole.UserRole, final)
                    cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.members.setItem(row, col, cell)

    def _draw(self, view: SweepView) -> None:
        self._clear_plot()
        key = view.key or ""
        self.plot.setLabel("left", escaped(key + (f" ({unit(key)})" if unit(key) else "")))
        self.plot.setTitle(escaped(f"{key}: mean over seeds, 95 % bootstrap band") if key else "")
        for row, group in enumerate(view.groups):
            colour = QColor(PALETTE[row % len(PALETTE)])
            band = group.band
            if not band.steps:  # no member of this setting has finished
                continue
            low = pg.PlotDataItem(band.steps, band.low, pen=pg.mkPen(None))
            high = pg.PlotDataItem(band.steps, band.high, pen=pg.mkPen(None))
            fill = QColor(colour)
            fill.setAlpha(55)
            self.plot.addItem(low)
            self.plot.addItem(high)
            self.plot.addItem(pg.FillBetweenItem(low, high, brush=pg.mkBrush(fill)))
            n = max(band.n) if band.n else 0
            mean = self.plot.plot(band.steps, band.mean, pen=pg.mkPen(colour, width=1),
                                  name=escaped(f"{group.label} (n={n})"))
            self.curves.append((mean, low, high))
