"""Live metric plots: workers only append, a timer redraws at ≤ 10 Hz.

:class:`MetricSeriesStore` holds every series as growing numpy arrays (doubling capacity, so an
append is amortised O(1)); the job runner's ``metrics_logged`` signal and the database loader both
append to it. :class:`MetricPlotView` shows one plot per key namespace (``reward_model/…``,
``rollout/…``) with one curve per (run, key); a ``QTimer`` redraws only the series that changed
since the last frame, with pyqtgraph's peak downsampling and clip-to-view for long runs. Runs can
be overlaid and toggled; everything can be reloaded from the ``metrics`` table after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget

from app.plain import escaped, tip
from rlhf_core.metrics import describe, namespace

REDRAW_MS = 100  # at most 10 Hz
MAX_REDRAW_MS = 1000
# The GUI thread holds the GIL while pyqtgraph paints; a job thread then waits for it. The timer
# backs off so that drawing takes at most this share of the GUI thread (see docs/performance.md).
DRAW_BUDGET = 0.10
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
_RUN_STYLES = [Qt.PenStyle.SolidLine, Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine]


class GrowingSeries:
    """Steps and values in preallocated arrays that double when full."""

    __slots__ = ("steps", "values", "n", "version")

    def __init__(self, capacity: int = 256):
        self.steps = np.empty(capacity, dtype=np.float64)
        self.values = np.empty(capacity, dtype=np.float64)
        self.n = 0
        self.version = 0

    def extend(self, steps: Iterable[float], values: Iterable[float]) -> None:
        s = np.asarray(list(steps), dtype=np.float64)
        v = np.asarray(list(values), dtype=np.float64)
        need = self.n + len(s)
        if need > len(self.steps):
            cap = max(need, 2 * len(self.steps))
            self.steps = np.resize(self.steps, cap)
            self.values = np.resize(self.values, cap)
        self.steps[self.n:need] = s
        self.values[self.n:need] = v
        self.n = need
        self.version += 1

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.steps[: self.n], self.values[: self.n]


class _TimedGraphics(pg.GraphicsLayoutWidget):
    """A GraphicsLayoutWidget that remembers how long its last paint took."""

    last_paint_s = 0.0

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        t0 = time.perf_counter()
        super().paintEvent(event)
        self.last_paint_s = time.perf_counter() - t0


class MetricSeriesStore:
    """All series shown by the plots, keyed by (run_id, metric key). GUI-thread only."""

    def __init__(self) -> None:
        self.series: dict[tuple[int, str], GrowingSeries] = {}

    def append(self, run_id: int, batch: Iterable[tuple[int, Mapping[str, float]]]) -> None:
        per_key: dict[str, tuple[list[int], list[float]]] = {}
        for step, values in batch:
            for key, value in values.items():
                s, v = per_key.setdefault(key, ([], []))
                s.append(step)
                v.append(value)
        for key, (s, v) in per_key.items():
            self.series.setdefault((run_id, key), GrowingSeries()).extend(s, v)

    def load(self, run_id: int, metrics: Mapping[str, tuple[list[int], list[float]]]) -> None:
        """Replace a run's series with what the database holds."""
        for key in [k for k in self.series if k[0] == run_id]:
            del self.series[key]
        for key, (steps, values) in metrics.items():
            series = GrowingSeries(max(16, len(steps)))
            series.extend(steps, values)
            self.series[(run_id, key)] = series

    def keys(self, run_ids: Iterable[int] | None = None) -> list[str]:
        wanted = None if run_ids is None else set(run_ids)
        return sorted({k for r, k in self.series if wanted is None or r in wanted})

    def data(self, run_id: int, key: str) -> tuple[np.ndarray, np.ndarray]:
        series = self.series.get((run_id, key))
        if series is None:
            return np.empty(0), np.empty(0)
        return series.data()


class MetricPlotView(QWidget):
    """One pyqtgraph plot per metric namespace; curves per (visible run, key)."""

    def __init__(self, store: MetricSeriesStore | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=False, background="w", foreground="k")
        self.store = store or MetricSeriesStore()
        self.visible_runs: list[int] = []
        self.run_labels: dict[int, str] = {}
        self._plots: dict[str, pg.PlotItem] = {}
        self._curves: dict[tuple[int, str], tuple[pg.PlotDataItem, int]] = {}
        self._colour_of: dict[str, dict[str, str]] = {}
        self._x_limit: dict[str, float] = {}
        self._auto_x: dict[str, bool] = {}
        self._setting_range = False
        self._curves_dirty = False
        self.live_runs: set[int] = set()  # runs still receiving metrics: x grows in steps
        self.group_order: list[str] = []  # namespaces drawn first, in this order (the rest alphabetically)
        self.redraw_count = 0

        self.graphics = _TimedGraphics()
        self.graphics.setMinimumHeight(200)
        self.empty_label = QLabel("No metrics yet. Start a run, or tick runs in the list to overlay them.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setStyleSheet("color: #666; padding: 24px;")
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.graphics)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.empty_label)
        layout.addWidget(scroll, 1)
        self._scroll = scroll

        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()
        self._layout_dirty = True
        self._update_empty()

    # --- feeding ---------------------------------------------------------------------------------
    def append(self, run_id: int, batch) -> None:
        """Slot for ``JobRunner.metrics_logged``: store only; the timer draws."""
        new_keys = any((run_id, k) not in self.store.series for _, values in batch for k in values)
        self.live_runs.add(run_id)
        self.store.append(run_id, batch)
        if new_keys and run_id in self.visible_runs:
            self._curves_dirty = True

    def mark_finished(self, run_id: int) -> None:
        """The run will receive no more metrics: fit the x axis to its data."""
        self.live_runs.discard(run_id)
        self._x_limit.clear()
        for (rid, key), (curve, _) in list(self._curves.items()):
            if rid == run_id:
                self._curves[(rid, key)] = (curve, -1)  # redraw (and refit) on the next frame

    def load_run(self, run_id: int, metrics, label: str | None = None) -> None:
        self.live_runs.discard(run_id)
        self.store.load(run_id, metrics)
        if label:
            self.run_labels[run_id] = label
        self._forget_curves(run_id)
        self._layout_dirty = True

    def set_visible_runs(self, run_ids: Iterable[int]) -> None:
        run_ids = list(dict.fromkeys(run_ids))
        if run_ids != self.visible_runs:
            self.visible_runs = run_ids
            self._layout_dirty = True
            self.redraw()

    def clear(self) -> None:
        self.store = MetricSeriesStore()
        self.visible_runs = []
        self._layout_dirty = True
        self.redraw()

    # --- drawing ---------------------------------------------------------------------------------
    def redraw(self) -> None:
        if self.window().isVisible() and not self.isVisible():
            return  # on a hidden page: keep the data, draw when shown (the timer is still running)
        if self._layout_dirty:
            self._rebuild_layout()
        elif self._curves_dirty:
            self._add_missing_curves()
        t0 = time.perf_counter()
        changed = False
        for (run_id, key), (curve, drawn_version) in list(self._curves.items()):
            series = self.store.series.get((run_id, key))
            if series is None or series.version == drawn_version:
                continue
            x, y = series.data()
            curve.setData(x, y)
            self._curves[(run_id, key)] = (curve, series.version)
            changed = True
        self.redraw_count += 1
        if changed:
            self._follow_x()
            # cost of one update = our work now + the paint it caused last time
            cost = time.perf_counter() - t0 + self.graphics.last_paint_s
            interval = int(min(MAX_REDRAW_MS, max(REDRAW_MS, 1000 * cost / DRAW_BUDGET)))
            if interval != self.timer.interval():
                self.timer.setInterval(interval)

    def _follow_x(self) -> None:
        """Grow each plot's x range in steps of 50 % so the axis is not re-laid-out every frame.

        With no live run among the visible ones the range fits the data exactly. A plot the user
        has zoomed or panned is left alone until they click its "A" button.
        """
        growing = bool(self.live_runs & set(self.visible_runs))
        for group, plot in self._plots.items():
            if not self._auto_x.get(group, True):
                continue
            xmax = 0.0
            for (run_id, key), (curve, _) in self._curves.items():
                if namespace(key) == group and curve.xData is not None and len(curve.xData):
                    xmax = max(xmax, float(curve.xData[-1]))
            current = self._x_limit.get(group, 0.0)
            if not growing:
                limit = max(1.0, xmax)
            elif xmax >= current or xmax < current / 4:
                limit = max(10.0, xmax * 1.5)
            else:
                continue
            if limit != current:
                self._x_limit[group] = limit
                self._setting_range = True
                plot.setXRange(0, limit, padding=0.02 if not growing else 0)
                self._setting_range = False

    def _on_range_changed_manually(self, group: str) -> None:
        if not self._setting_range:
            self._auto_x[group] = False

    def _on_auto_button(self, group: str) -> None:
        self._auto_x[group] = True
        self._x_limit.pop(group, None)

    def _rebuild_layout(self) -> None:
        self._layout_dirty = False
        self.graphics.clear()
        self._plots.clear()
        self._curves.clear()
        self._x_limit.clear()
        self._auto_x.clear()
        self._colour_of.clear()
        groups = {namespace(k) for k in self.store.keys(self.visible_runs)}
        first = [g for g in self.group_order if g in groups]
        for group in first + sorted(groups - set(first)):
            self._plot_for(group)
        self._add_missing_curves()

    def _plot_for(self, group: str) -> pg.PlotItem:
        plot = self._plots.get(group)
        if plot is not None:
            return plot
        plot = self.graphics.addPlot(row=len(self._plots), col=0, title=escaped(group))
        # no grid: grid lines made every repaint of the axes ~3x slower (docs/performance.md)
        plot.setDownsampling(auto=True, mode="peak")
        plot.setClipToView(True)
        plot.setLabel("bottom", "step")
        plot.enableAutoRange(axis="x", enable=False)
        plot.getViewBox().sigRangeChangedManually.connect(lambda *_, g=group: self._on_range_changed_manually(g))
        plot.autoBtn.clicked.connect(lambda *_, g=group: self._on_auto_button(g))
        legend = plot.addLegend(offset=(-10, 10), brush=pg.mkBrush(255, 255, 255, 200))
        legend.setLabelTextSize("8pt")
        self._plots[group] = plot
        self.graphics.setMinimumHeight(max(200, 220 * len(self._plots)))
        self._update_empty()
        return plot

    def _add_missing_curves(self) -> None:
        """Add curves for (visible run, key) series that appeared since the last frame."""
        self._curves_dirty = False
        multi = len(self.visible_runs) > 1
        for key in self.store.keys(self.visible_runs):
            group = namespace(key)
            colours = self._colour_of.setdefault(group, {})
            for r_index, run_id in enumerate(self.visible_runs):
                if (run_id, key) in self._curves or (run_id, key) not in self.store.series:
                    continue
                plot = self._plot_for(group)
                colour = colours.setdefault(key, _PALETTE[len(colours) % len(_PALETTE)])
                pen = pg.mkPen(colour, width=1, style=_RUN_STYLES[r_index % len(_RUN_STYLES)])
                short = key.split("/", 1)[-1]
                name = f"{self.run_labels.get(run_id, f'run {run_id}')} · {short}" if multi else short
                curve = plot.plot(name=escaped(name), pen=pen)
                curve.setToolTip(tip(describe(key) or key))
                self._curves[(run_id, key)] = (curve, -1)

    def _forget_curves(self, run_id: int) -> None:
        for key in [k for k in self._curves if k[0] == run_id]:
            curve, _ = self._curves[key]
            self._curves[key] = (curve, -1)

    def _update_empty(self) -> None:
        has = bool(self._plots)
        self.empty_label.setVisible(not has)
        self._scroll.setVisible(has)

    # --- inspection (tests, tools) ------------------------------------------------------------
    def plotted_data(self, run_id: int, key: str) -> tuple[np.ndarray, np.ndarray]:
        """What the curve for (run, key) currently shows (empty arrays if not drawn)."""
        entry = self._curves.get((run_id, key))
        if entry is None:
            return np.empty(0), np.empty(0)
        x, y = entry[0].xData, entry[0].yData  # full data (getData() is the downsampled view)
        if x is None:
            return np.empty(0), np.empty(0)
        return np.asarray(x), np.asarray(y)

    def plot_groups(self) -> list[str]:
        return sorted(self._plots)
