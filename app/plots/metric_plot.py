"""Live metric plots: workers only append, a timer redraws at ≤ 10 Hz.

:class:`MetricSeriesStore` holds every series as growing numpy arrays (doubling capacity, so an
append is amortised O(1)); the job runner's ``metrics_logged`` signal and the database loader both
append to it. :class:`MetricPlotView` shows one plot per key namespace and unit
(``rollout · return``, ``rollout · steps``; returns once per environment, their scales differ), the
x axes of one namespace linked, and one curve per (run, key): colour by key (the same whatever order
keys arrive in), line style by run, markers while a series has few points. Ensemble members
(``reward_model/m{k}_…``) are thin light curves of their metric's colour under a bold ensemble mean.
Legends sit under the data. The wheel scrolls the page; Ctrl+wheel, or the wheel after a click in
the plots, zooms. A ``QTimer`` redraws only the series that changed since the last frame, with
pyqtgraph's peak downsampling and clip-to-view for long runs; everything can be reloaded from the
``metrics`` table after a restart. An **Export…** button saves the plots shown as PNG or SVG and their
data as CSV (``app/plots/export.py``).
"""

from __future__ import annotations

import csv
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QColor, QWheelEvent
from PySide6.QtWidgets import QAbstractScrollArea, QApplication, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from app.plain import escaped, message_box, tip
from app.plots.export import ask_path, export_button, save_png, save_svg
from rlhf_core.metrics import METRIC_KEYS, METRIC_UNITS, colour, current_key, declared, describe, namespace, unit

REDRAW_MS = 100  # at most 10 Hz
MAX_REDRAW_MS = 1000
# The GUI thread holds the GIL while pyqtgraph paints; a job thread then waits for it. The timer
# backs off so that drawing takes at most this share of the GUI thread (see docs/performance.md).
DRAW_BUDGET = 0.10
_RUN_STYLES = [Qt.PenStyle.SolidLine, Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine]
FEW_POINTS = 20  # a series with fewer points gets markers (one point draws no line)
FEW_MEMBER_POINTS = 3  # members' thin curves: markers only where there is hardly a line
PLOT_HEIGHT = 200  # px per plot before its legend rows
LEGEND_ROW_HEIGHT = 16
LEGEND_COLUMNS = 2
#: units whose scale is the environment's: one plot per environment (CartPole's +500 beside Pendulum's -1,500)
ENV_UNITS = frozenset({"return"})
MEMBER_SHADE = 0.6  # ensemble members: their metric's colour this far towards white


def _plot_key(key: str) -> tuple[str, str]:
    """(namespace, unit) of a key: the plot it is drawn in (before the environment split)."""
    return namespace(key), unit(key)


def _declared_order() -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], int]]:
    """Per (namespace, unit): its declared keys in declaration order, and the rank of the unit in the namespace."""
    keys: dict[tuple[str, str], list[str]] = {}
    for key in METRIC_KEYS:
        keys.setdefault((namespace(key), METRIC_UNITS.get(key, "")), []).append(key)
    rank = {group: i for i, group in enumerate(keys)}
    return keys, rank


_DECLARED, _UNIT_RANK = _declared_order()
_KEY_RANK = {key: i for i, key in enumerate(METRIC_KEYS)}
_MEMBER = re.compile(r"/m([0-9]+)_")


def _metric(key: str) -> str:
    """The metric a key's curve shows: its declared entry (``reward_model/m{k}_loss`` for member 3's loss)."""
    key = current_key(key)
    return declared(key) or key


_colour = colour  # fixed by the declared table (rlhf_core.metrics.colour), the same in run reports


def _curve_order(run_key: tuple[int, str]) -> tuple:
    """Curves (and legend rows) in the declared table's order, members by number."""
    run_id, key = run_key
    member = _MEMBER.search(key)
    return run_id, _KEY_RANK.get(_metric(key), len(_KEY_RANK)), int(member.group(1)) if member else 0, key


def member_offsets(steps: list[np.ndarray]) -> list[float]:
    """Step offsets that put ensemble members (in member order) on one step axis.

    Runs stored before members shared one step axis logged member k after member k-1 (from step k x
    steps): when each member's first step comes after the previous member's last, each is moved to
    start where member 0 starts. Members logged on one axis are left as they are (offsets 0).
    """
    zeros = [0.0] * len(steps)
    if len(steps) < 2 or any(len(x) == 0 for x in steps):
        return zeros
    if all(steps[i][0] > steps[i - 1][-1] for i in range(1, len(steps))):
        return [float(x[0] - steps[0][0]) for x in steps]
    return zeros


def _lighter(colour: str, amount: float) -> QColor:
    c = QColor(colour)
    return QColor(*(round(v + (255 - v) * amount) for v in (c.red(), c.green(), c.blue())))


def ensemble_mean(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the members that logged each step (members stopped early drop out); NaNs are skipped."""
    parts = [(x, y) for x, y in parts if len(x)]
    if not parts:
        return np.empty(0), np.empty(0)
    xs = np.concatenate([x for x, _ in parts])
    ys = np.concatenate([y for _, y in parts])
    ok = np.isfinite(ys)
    steps, inverse = np.unique(xs, return_inverse=True)
    sums = np.bincount(inverse, weights=np.where(ok, ys, 0.0), minlength=len(steps))
    counts = np.bincount(inverse, weights=ok.astype(float), minlength=len(steps))
    with np.errstate(invalid="ignore", divide="ignore"):
        return steps, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


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


class _PlotGraphics(pg.GraphicsLayoutWidget):
    """The plots' canvas. Remembers how long its last paint took; the mouse wheel zooms only with Ctrl
    held or after a click in the plots (until the pointer leaves them), otherwise it scrolls the page."""

    last_paint_s = 0.0
    zoom_armed = False

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        t0 = time.perf_counter()
        super().paintEvent(event)
        self.last_paint_s = time.perf_counter() - t0

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self.zoom_armed = True
        super().mousePressEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.zoom_armed = False
        super().leaveEvent(event)

    def wheelEvent(self, event) -> None:  # noqa: N802
        if self.zoom_armed or event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(event)
            return
        area = self._scroll_area()
        if area is not None:  # scroll the plots' column
            viewport = area.viewport()
            scroll = QWheelEvent(viewport.mapFromGlobal(event.globalPosition()), event.globalPosition(),
                                 event.pixelDelta(), event.angleDelta(), event.buttons(), event.modifiers(),
                                 event.phase(), event.inverted())
            QApplication.sendEvent(viewport, scroll)
            if scroll.isAccepted():
                event.accept()
                return
        event.ignore()  # nothing left to scroll here: Qt offers the wheel to the page around the plots

    def _scroll_area(self) -> QAbstractScrollArea | None:
        widget = self.parentWidget()
        while widget is not None and not isinstance(widget, QAbstractScrollArea):
            widget = widget.parentWidget()
        return widget


class _LegendSample(pg.ItemSample):
    """A legend swatch that ignores clicks (the rows stand for metrics and runs, not for one curve)."""

    def mouseClickEvent(self, event) -> None:  # noqa: N802
        event.ignore()


@dataclass
class _Plot:
    """One plot: a namespace and unit (and the environment, for returns), with its legend under the data."""

    title: str
    namespace: str
    item: pg.PlotItem
    legend: pg.LegendItem
    rows: dict[str, pg.PlotDataItem] = field(default_factory=dict)  # legend row name -> its swatch's item


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
    """One pyqtgraph plot per (namespace, unit); curves per (visible run, key)."""

    def __init__(self, store: MetricSeriesStore | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=False, background="w", foreground="k")
        self.store = store or MetricSeriesStore()
        self.visible_runs: list[int] = []
        self.run_labels: dict[int, str] = {}
        self.run_env: dict[int, str] = {}  # the environment of a run's returns (splits the "return" plots)
        self._plots: dict[str, _Plot] = {}  # plot id -> plot, in layout order
        self._curves: dict[tuple[int, str], tuple[pg.PlotDataItem, int]] = {}
        self._curve_plot: dict[tuple[int, str], str] = {}  # (run, key) -> plot id
        self._member_curves: set[tuple[int, str]] = set()  # drawn with their ensemble mean
        # (run, member template) -> (mean curve, member keys, member versions drawn)
        self._means: dict[tuple[int, str], tuple[pg.PlotDataItem, list[str], tuple]] = {}
        self._x_limit: dict[str, float] = {}  # per namespace (its plots share the x axis)
        self._auto_x: dict[str, bool] = {}
        self._setting_range = False
        self._curves_dirty = False
        self.live_runs: set[int] = set()  # runs still receiving metrics: x grows in steps
        # plots drawn first, in this order: a namespace ("reward") or a namespace and unit ("kl:KL/token");
        # the rest by namespace, then by the declaration order of their units
        self.group_order: list[str] = []
        self.redraw_count = 0

        self.graphics = _PlotGraphics()
        self.graphics.setMinimumHeight(200)
        self.graphics.setToolTip("Drag to pan; Ctrl+wheel (or click, then wheel) to zoom; "
                                 "the A button in a corner fits the data again.")
        self.empty_label = QLabel("No metrics yet. Start a run, or tick runs in the list to overlay them.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setStyleSheet("color: #666; padding: 24px;")
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.graphics)
        self.export_button = export_button(self, self.export_dialog)  # PNG / SVG / CSV of what is shown
        self.export_button.setEnabled(False)
        self.export_bar = QHBoxLayout()
        self.export_bar.setContentsMargins(0, 0, 0, 0)
        self.export_bar.addStretch(1)
        self.export_bar.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.export_bar)
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
        self._forget_curves(run_id)  # redraw (and refit) on the next frame

    def load_run(self, run_id: int, metrics, label: str | None = None, env: str | None = None) -> None:
        """Replace a run's series with ``metrics`` (from the database). The plots keep their layout
        (and colours) unless the run brings a plot they do not have."""
        self.live_runs.discard(run_id)
        self.store.load(run_id, metrics)
        if label:
            self.run_labels[run_id] = label
        self.set_run_env(run_id, env)
        if any(k[0] == run_id and k not in self.store.series for k in self._curves):
            self._layout_dirty = True  # a curve whose series is gone: lay out again
        self._forget_curves(run_id)
        self._curves_dirty = True

    def set_run_env(self, run_id: int, env: str | None) -> None:
        """The environment ``run_id``'s returns are measured in (returns of different environments get
        different plots)."""
        if env and self.run_env.get(run_id) != env:
            self.run_env[run_id] = env
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
        if not self._layout_dirty and self._curves_dirty and not self._add_missing_curves():
            self._layout_dirty = True  # a series needs a plot that is not there: lay out again, in order
        if self._layout_dirty:
            self._rebuild_layout()
        t0 = time.perf_counter()
        changed = False
        for (run_id, key), (curve, drawn_version) in list(self._curves.items()):
            series = self.store.series.get((run_id, key))
            if series is None or series.version == drawn_version or (run_id, key) in self._member_curves:
                continue
            x, y = series.data()
            curve.setData(x, y)
            self._mark_points(curve, len(x))
            self._curves[(run_id, key)] = (curve, series.version)
            changed = True
        for (run_id, template), (curve, members, drawn) in list(self._means.items()):
            series = [self.store.series.get((run_id, k)) for k in members]
            versions = tuple(s.version if s is not None else -1 for s in series)
            if versions == drawn:
                continue
            data = [s.data() if s is not None else (np.empty(0), np.empty(0)) for s in series]
            shifted = []
            for key, (mx, my), offset, version in zip(members, data, member_offsets([x for x, _ in data]), versions):
                mx = mx - offset if offset else mx
                member_curve = self._curves[(run_id, key)][0]
                member_curve.setData(mx, my)
                self._mark_points(member_curve, len(mx), FEW_MEMBER_POINTS)
                self._curves[(run_id, key)] = (member_curve, version)
                shifted.append((mx, my))
            x, y = ensemble_mean(shifted)
            curve.setData(x, y)
            self._mark_points(curve, len(x))
            self._means[(run_id, template)] = (curve, members, versions)
            changed = True
        self.redraw_count += 1
        if changed:
            self._follow_x()
            # cost of one update = our work now + the paint it caused last time
            cost = time.perf_counter() - t0 + self.graphics.last_paint_s
            interval = int(min(MAX_REDRAW_MS, max(REDRAW_MS, 1000 * cost / DRAW_BUDGET)))
            if interval != self.timer.interval():
                self.timer.setInterval(interval)

    @staticmethod
    def _mark_points(curve: pg.PlotDataItem, n: int, few_points: int = FEW_POINTS) -> None:
        """Markers on a series of few points (one point has no line to draw), none on a long one."""
        few = n < few_points
        if few != (curve.opts["symbol"] is not None):
            curve.setSymbol("o" if few else None)

    def _follow_x(self) -> None:
        """Grow each namespace's x range in steps of 50 % so the axis is not re-laid-out every frame.

        With no live run among the visible ones the range fits the data exactly. A namespace the user
        has zoomed or panned is left alone until they click an "A" button of its plots.
        """
        growing = bool(self.live_runs & set(self.visible_runs))
        xmax: dict[str, float] = {}
        for curve, ns in self._drawn_curves():
            if curve.xData is not None and len(curve.xData):
                xmax[ns] = max(xmax.get(ns, 0.0), float(curve.xData[-1]))
        for ns, plot in self._first_plots().items():
            if not self._auto_x.get(ns, True):
                continue
            current = self._x_limit.get(ns, 0.0)
            top = xmax.get(ns, 0.0)
            if not growing:
                limit = max(1.0, top)
            elif top >= current or top < current / 4:
                limit = max(10.0, top * 1.5)
            else:
                continue
            if limit != current:
                self._x_limit[ns] = limit
                self._setting_range = True
                plot.item.setXRange(0, limit, padding=0.02 if not growing else 0)
                self._setting_range = False

    def _drawn_curves(self):
        for (run_id, key), (curve, _) in self._curves.items():
            yield curve, namespace(key)
        for (run_id, template), (curve, _, _) in self._means.items():
            yield curve, namespace(template)

    def _first_plots(self) -> dict[str, _Plot]:
        first: dict[str, _Plot] = {}
        for plot in self._plots.values():
            first.setdefault(plot.namespace, plot)
        return first

    def _on_range_changed_manually(self, ns: str) -> None:
        if not self._setting_range:
            self._auto_x[ns] = False

    def _on_auto_button(self, ns: str) -> None:
        self._auto_x[ns] = True
        self._x_limit.pop(ns, None)

    # --- layout ----------------------------------------------------------------------------------
    def _place(self, run_id: int, key: str) -> tuple[str, str, str, str]:
        """(plot id, namespace, unit, environment or "") of the plot that draws (run, key)."""
        ns, u = _plot_key(key)
        env = self.run_env.get(run_id, "") if u in ENV_UNITS else ""
        return f"{ns}|{u}|{env}", ns, u, env

    def _rank(self, place: tuple[str, str, str, str]) -> tuple:
        _, ns, u, env = place
        order = next((i for i, entry in enumerate(self.group_order) if entry in (ns, f"{ns}:{u}")),
                     len(self.group_order))
        return order, ns, _UNIT_RANK.get((ns, u), len(_UNIT_RANK)), u, env

    def _rebuild_layout(self) -> None:
        self._layout_dirty = False
        self.graphics.clear()
        self._plots.clear()
        self._curves.clear()
        self._curve_plot.clear()
        self._member_curves.clear()
        self._means.clear()
        self._x_limit.clear()
        self._auto_x.clear()
        visible = set(self.visible_runs)
        places = {}
        for run_id, key in self.store.series:
            if run_id in visible:
                place = self._place(run_id, key)
                places[place[0]] = place
        for place in sorted(places.values(), key=self._rank):
            self._add_plot(*place)
        self._add_missing_curves()
        self._update_empty()

    def _add_plot(self, plot_id: str, ns: str, u: str, env: str) -> _Plot:
        title = " · ".join(part for part in (ns, u if u != ns else "", env) if part)
        item = self.graphics.addPlot(row=len(self._plots), col=0)
        item.setTitle(escaped(title), size="9pt")
        # no grid: grid lines made every repaint of the axes ~3x slower (docs/performance.md)
        item.setDownsampling(auto=True, mode="peak")
        item.setClipToView(True)
        item.setLabel("bottom", "step")
        if u:
            item.setLabel("left", escaped(u))
        item.getAxis("left").enableAutoSIPrefix(False)
        item.enableAutoRange(axis="x", enable=False)
        first = self._first_plots().get(ns)
        if first is not None:
            item.setXLink(first.item)  # one step axis per namespace: zoom one, the others follow
        item.getViewBox().sigRangeChangedManually.connect(lambda *_, n=ns: self._on_range_changed_manually(n))
        item.autoBtn.clicked.connect(lambda *_, n=ns: self._on_auto_button(n))
        # the legend in the plot's own grid, under the x axis: it never covers the data
        legend = pg.LegendItem(labelTextSize="8pt", colCount=LEGEND_COLUMNS, sampleType=_LegendSample,
                               horSpacing=4, verSpacing=-6, frame=False)
        item.layout.addItem(legend, 4, 1)
        plot = _Plot(title, ns, item, legend)
        self._plots[plot_id] = plot
        return plot

    def _add_missing_curves(self) -> bool:
        """Add curves for (visible run, key) series that appeared since the last frame; False if one
        needs a plot that is not laid out yet."""
        self._curves_dirty = False
        styles = {run_id: _RUN_STYLES[i % len(_RUN_STYLES)] for i, run_id in enumerate(self.visible_runs)}
        multi = len(self.visible_runs) > 1
        for run_id, key in sorted(self.store.series, key=_curve_order):
            if run_id not in styles or (run_id, key) in self._curves:
                continue
            plot_id = self._place(run_id, key)[0]
            plot = self._plots.get(plot_id)
            if plot is None:
                return False
            style, colour = styles[run_id], _colour(key)
            metric = _metric(key)
            short = metric.split("/", 1)[-1]
            member = "{k}" in metric
            curve = plot.item.plot(pen=pg.mkPen(_lighter(colour, MEMBER_SHADE) if member else colour, width=1,
                                                style=style),
                                   symbolBrush=_lighter(colour, MEMBER_SHADE) if member else colour,
                                   symbolPen=None, symbolSize=5 if not member else 4)
            curve.setToolTip(tip(describe(key) or key))
            self._curves[(run_id, key)] = (curve, -1)
            self._curve_plot[(run_id, key)] = plot_id
            if member:
                curve.setZValue(-1)  # under the mean
                self._member_curves.add((run_id, key))
                self._add_member(plot, run_id, key, metric, colour, style)
                name = short.replace("m{k}_", "")
                self._legend_row(plot, f"{name} (ensemble mean)", pg.mkPen(colour, width=2))
                self._legend_row(plot, f"{name} (members)", pg.mkPen(_lighter(colour, MEMBER_SHADE), width=1))
            else:
                self._legend_row(plot, short, pg.mkPen(colour, width=1))
            if multi:
                self._legend_row(plot, self.run_labels.get(run_id, f"run {run_id}"),
                                 pg.mkPen("#555", width=1, style=style))
        self._size_graphics()
        return True

    def _add_member(self, plot: _Plot, run_id: int, key: str, template: str, colour: str, style) -> None:
        """Member ``key`` joins the ensemble mean curve of (run, its template), made on first use."""
        entry = self._means.get((run_id, template))
        if entry is None:
            mean = plot.item.plot(pen=pg.mkPen(colour, width=2, style=style), symbolBrush=colour, symbolPen=None,
                                  symbolSize=6)
            mean.setZValue(1)
            mean.setToolTip(tip("Ensemble mean: " + (describe(template) or template)))
            entry = (mean, [], ())
        entry[1].append(key)
        self._means[(run_id, template)] = (entry[0], entry[1], ())  # recompute on the next frame

    def _legend_row(self, plot: _Plot, name: str, pen) -> None:
        if name in plot.rows:
            return
        swatch = pg.PlotDataItem(pen=pen)  # drawn only as the row's sample, never in the plot
        plot.rows[name] = swatch
        plot.legend.addItem(swatch, escaped(name))

    def _size_graphics(self) -> None:
        total = 0
        for plot in self._plots.values():
            rows = -(-len(plot.rows) // LEGEND_COLUMNS)
            height = PLOT_HEIGHT + rows * LEGEND_ROW_HEIGHT
            plot.item.setMinimumHeight(height)
            total += height
        self.graphics.setMinimumHeight(max(200, total + 10))

    def _forget_curves(self, run_id: int) -> None:
        for key in [k for k in self._curves if k[0] == run_id]:
            curve, _ = self._curves[key]
            self._curves[key] = (curve, -1)
        for key in [k for k in self._means if k[0] == run_id]:
            curve, members, _ = self._means[key]
            self._means[key] = (curve, members, ())

    def _update_empty(self) -> None:
        has = bool(self._plots)
        self.empty_label.setVisible(not has)
        self._scroll.setVisible(has)
        self.export_button.setEnabled(has)

    # --- export ----------------------------------------------------------------------------------
    def _settle(self) -> None:
        """Draw what is pending and lay the plots out now (an export renders the scene as it is)."""
        self.redraw()
        self.graphics.ci.layout.activate()

    def export_png(self, path: str | Path) -> QSize:
        """Every plot shown, with its legend, as a PNG at twice the screen size; returns its size."""
        self._settle()
        return save_png(self.graphics, path)

    def export_svg(self, path: str | Path) -> None:
        self._settle()
        save_svg(self.graphics, path, title="Metrics of " + ", ".join(
            self.run_labels.get(r, f"run {r}") for r in self.visible_runs))

    def export_rows(self) -> list[tuple[int, str, str, float, float]]:
        """The data behind the curves shown: (run, key, unit, step, value), every point (not downsampled)."""
        rows = []
        for run_id, key in sorted(self.store.series, key=_curve_order):
            if run_id in self.visible_runs:
                steps, values = self.store.data(run_id, key)
                rows.extend((run_id, key, unit(key), float(s), float(v)) for s, v in zip(steps, values))
        return rows

    def export_csv(self, path: str | Path) -> int:
        """``run,key,unit,step,value`` for every point shown (empty value: NaN); returns the rows written."""
        rows = self.export_rows()
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(("run", "key", "unit", "step", "value"))
            for run_id, key, u, step, value in rows:
                writer.writerow((run_id, key, u, int(step) if step.is_integer() else step,
                                 repr(value) if math.isfinite(value) else ""))
        return len(rows)

    def export_dialog(self, fmt: str) -> None:
        """The Export… menu: ask where, write, and say in words what went wrong."""
        runs = "-".join(str(r) for r in self.visible_runs[:4]) or "none"
        path = ask_path(self, fmt, str(Path.home() / f"metrics-run-{runs}.{fmt}"))
        if not path:
            return
        if not Path(path).parent.is_dir():
            message_box(self, "Nothing was exported", f"The folder {Path(path).parent} does not exist.").exec()
            return
        try:
            {"png": self.export_png, "svg": self.export_svg, "csv": self.export_csv}[fmt](path)
        except OSError as exc:
            message_box(self, "Nothing was exported", f"{path} could not be written: {exc.strerror or exc}.").exec()

    # --- inspection (tests, tools) ------------------------------------------------------------
    def plotted_data(self, run_id: int, key: str) -> tuple[np.ndarray, np.ndarray]:
        """What the curve for (run, key) currently shows (empty arrays if not drawn). A member template
        (``reward_model/m{k}_loss``) gives the ensemble mean."""
        entry = self._curves.get((run_id, key)) or self._means.get((run_id, key))
        if entry is None:
            return np.empty(0), np.empty(0)
        x, y = entry[0].xData, entry[0].yData  # full data (getData() is the downsampled view)
        if x is None:
            return np.empty(0), np.empty(0)
        return np.asarray(x), np.asarray(y)

    def curve(self, run_id: int, key: str) -> pg.PlotDataItem | None:
        """The curve of (run, key), or of a member template's ensemble mean."""
        entry = self._curves.get((run_id, key)) or self._means.get((run_id, key))
        return entry[0] if entry else None

    def plot_groups(self) -> list[str]:
        """The namespaces shown."""
        return sorted({plot.namespace for plot in self._plots.values()})

    def plot_titles(self) -> list[str]:
        """The plots' titles (``namespace · unit[ · environment]``), top to bottom."""
        return [plot.title for plot in self._plots.values()]

    def plot_of(self, run_id: int, key: str) -> str | None:
        """The title of the plot that draws (run, key)."""
        plot_id = self._curve_plot.get((run_id, key))
        return self._plots[plot_id].title if plot_id in self._plots else None

    def plot_item(self, title: str) -> pg.PlotItem | None:
        return next((p.item for p in self._plots.values() if p.title == title), None)

    def legend_rows(self, title: str) -> list[str]:
        plot = next((p for p in self._plots.values() if p.title == title), None)
        return list(plot.rows) if plot else []
