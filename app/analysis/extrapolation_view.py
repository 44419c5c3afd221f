"""Does the learned reward extrapolate? Predicted vs true return for every extrapolation run.

Left: the runs of the extrapolation demo as a results table (best demo, mean demo, BC where
D-REX trained one, the policy on the learned reward, correlation on unseen trajectories), with
mean ± std over the runs of each environment and method. Right: for the selected run, the T-REX
extrapolation plot — x = true return, y = predicted return — for the demonstrations (the only
thing the reward model learned from) and for unseen trajectories, with a line at the best
demonstration: points right of it are better than anything the model was shown. For D-REX runs
the noise-degradation curve (mean true return per ε) is drawn under it.

A second tab, "Any reward model" (``app/analysis/reward_check_view.py``), draws the same plot for any
control reward model of the project over its stored trajectories (optionally one policy's). A third,
"D-REX ranking" (``app/analysis/drex_view.py``), shows the project's own noise rollouts and lets the
person override D-REX's automatic order of noise levels.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTabWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.analysis.drex_view import DrexView
from app.analysis.reward_check_view import RewardCheckView
from app.plots.export import with_export
from rlhf_core import kinds
from rlhf_core.store import Project

COLUMNS = ["Run", "Env", "Method", "Best demo", "Mean demo", "BC", "Policy", "r unseen"]


EMPTY_TEXT = ("No finished extrapolation runs yet. Press “Run the extrapolation demo…”: it ranks demonstrations of "
              "an early learner, learns a reward from them and trains PPO on it; the plot then shows whether the "
              "learned reward extrapolates beyond the best demonstration.")


def _fmt(v, digits=1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


class ExtrapolationView(QWidget):
    run_requested = Signal(str)  # a job to open in the New Run dialog (the extrapolation demo)

    def __init__(self, parent: QWidget | None = None, settings=None):
        super().__init__(parent)
        self.project: Project | None = None
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeaderItem(6).setToolTip("Mean ± std of the final policy's TRUE return")
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Extrapolation runs")
        title.setStyleSheet("font-weight: 600;")
        self.run_button = QPushButton("Run the extrapolation demo…")
        self.run_button.setObjectName("run_extrapolation_demo")
        self.run_button.setToolTip("T-REX or D-REX end to end: ranked demonstrations → a learned reward → PPO on "
                                   "it, scored on the true return")
        self.run_button.clicked.connect(lambda: self.run_requested.emit("extrapolation_demo"))
        head = QHBoxLayout()
        head.addWidget(title)
        head.addStretch(1)
        head.addWidget(self.run_button)
        ll.addLayout(head)
        ll.addWidget(self.table, 1)
        ll.addWidget(self.summary)

        pg.setConfigOptions(antialias=True, background="w", foreground="k")
        self.graphics = pg.GraphicsLayoutWidget()
        self.scatter_plot = self.graphics.addPlot(row=0, col=0, title="Learned vs true return")
        self.scatter_plot.setLabel("bottom", "true return")
        self.scatter_plot.setLabel("left", "predicted return")
        self.scatter_plot.addLegend(offset=(10, 10), brush=pg.mkBrush(255, 255, 255, 200))
        self.noise_plot = self.graphics.addPlot(row=1, col=0, title="D-REX noise degradation")
        self.noise_plot.setLabel("bottom", "ε (probability of a random action)")
        self.noise_plot.setLabel("left", "mean true return")
        self.noise_plot.hide()
        self.stats = QLabel("Select a run.")
        self.stats.setTextFormat(Qt.TextFormat.PlainText)
        self.stats.setWordWrap(True)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(with_export(self.graphics, "Extrapolation"), 1)
        rl.addWidget(self.stats)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([430, 640])
        self.drex_view = DrexView(settings)
        self.reward_check = RewardCheckView()
        self.reward_check.run_requested.connect(self.run_requested)
        self.tabs = QTabWidget()
        self.tabs.addTab(splitter, "Extrapolation runs")
        self.tabs.addTab(self.reward_check, "Any reward model")
        self.tabs.addTab(self.drex_view, "D-REX ranking")
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        self._tab_chosen_for: Project | None = None
        self.runs: list[dict] = []

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.refresh()

    def refresh(self) -> None:
        self.runs = [r for r in (self.project.runs("extrapolation_demo") if self.project else [])
                     if r["status"] == "completed" and r["result"]]
        self.table.setRowCount(len(self.runs))
        for row, run in enumerate(reversed(self.runs)):
            res = run["result"]
            pol = f"{_fmt(res.get('policy_return'))} ± {_fmt(res.get('policy_return_std'))}"
            cells = [str(run["id"]), res.get("env_id", ""), res.get("method", ""), _fmt(res.get("best_demo_return")),
                     _fmt(res.get("mean_demo_return")), _fmt(res.get("bc_return")), pol,
                     _fmt(res.get("reward_correlation"), 3)]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, run["id"])
                if col == 6 and res.get("beats_best_demo"):
                    item.setForeground(Qt.GlobalColor.darkGreen)
                    item.setToolTip("Better than the best demonstration")
                self.table.setItem(row, col, item)
        self.summary.setText(self._summary_text())
        self.drex_view.set_project(self.project)
        if self.reward_check.project is not self.project:
            self.reward_check.set_project(self.project)
        else:
            self.reward_check.refresh()
        if self.project is not self._tab_chosen_for:  # once per project, then the person's choice stays
            self._tab_chosen_for = self.project
            if not self.runs and self.reward_check.has_models():  # no demo runs: the project's own reward models
                self.tabs.setCurrentWidget(self.reward_check)
            elif not self.runs and self.drex_view.env_box.count():  # nothing to show here: open the D-REX tab
                self.tabs.setCurrentWidget(self.drex_view)
        if self.runs and not self.table.selectedItems():
            self.table.selectRow(0)
        elif not self.runs:
            self.scatter_plot.clear()
            self.stats.setText(EMPTY_TEXT)

    def _summary_text(self) -> str:
        groups: dict[tuple, list[dict]] = {}
        for run in self.runs:
            res = run["result"]
            groups.setdefault((res.get("env_id"), res.get("method")), []).append(res)
        lines = []
        for (env, method), results in sorted(groups.items()):
            pol = np.array([r["policy_return"] for r in results])
            best = np.array([r["best_demo_return"] for r in results])
            spread = f" ± {pol.std():.1f} over {len(pol)} runs" if len(pol) > 1 else " (1 run)"
            lines.append(f"{env} · {method}: policy true return {pol.mean():.1f}{spread}; "
                         f"best demo {best.mean():.1f}")
        return "\n".join(lines)

    def _on_table_selection(self) -> None:
        items = self.table.selectedItems()
        if items:
            self.show_run(items[0].data(Qt.ItemDataRole.UserRole))

    def show_run(self, run_id: int) -> None:
        samples = self.project.samples(run_id, kinds.SAMPLE_EXTRAPOLATION)
        self.scatter_plot.clear()
        if not samples:
            self.stats.setText(f"Run {run_id} has no extrapolation data.")
            return
        data = samples[-1]["payload"]
        td, pd_, tu, pu = (np.asarray(data[k], float) for k in ("true_demo", "pred_demo", "true_unseen", "pred_unseen"))
        self.scatter_plot.plot(td, pd_, pen=None, symbol="o", symbolSize=8, symbolBrush=pg.mkBrush(31, 119, 180, 200),
                               name="demonstrations (trained on)")
        self.scatter_plot.plot(tu, pu, pen=None, symbol="t", symbolSize=9, symbolBrush=pg.mkBrush(255, 127, 14, 220),
                               name="unseen trajectories")
        best = float(td.max())
        self.scatter_plot.addItem(pg.InfiniteLine(pos=best, angle=90, pen=pg.mkPen("#888", style=Qt.PenStyle.DashLine),
                                                  label="best demo", labelOpts={"position": 0.9, "color": "#555"}))
        rep = data.get("report", {})
        self.stats.setText(
            f"Run {run_id}: Pearson r on unseen trajectories {rep.get('unseen_pearson', float('nan')):.3f}, "
            f"Spearman {rep.get('unseen_spearman', float('nan')):.3f}; on demos r {rep.get('demo_pearson', float('nan')):.3f}. "
            f"{rep.get('unseen_beyond_best_demo', 0)} of {rep.get('n_unseen', 0)} unseen trajectories beat the best demo.")
        noise = self.project.samples(run_id, kinds.SAMPLE_NOISE_CURVE)
        self.noise_plot.clear()
        if noise:
            curve = noise[-1]["payload"]
            self.noise_plot.plot(curve["epsilon"], curve["mean_true_return"], pen=pg.mkPen("#2ca02c", width=2),
                                 symbol="o", symbolSize=6)
            self.noise_plot.show()
        else:
            self.noise_plot.hide()
