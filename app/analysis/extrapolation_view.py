"""Does the learned reward extrapolate? Predicted vs true return for every extrapolation run.

Top: the results per environment and method (T-REX ranked by true return, T-REX ranked by
checkpoint order, D-REX ranked by noise): demonstrator mean, best demo, BC (D-REX), the policy on
the learned reward, each the mean ± std over the runs of that method. Buttons start the demo with
each ranking (the New Run dialog opens with method and ranking set). Below, left: every run; right:
for the selected run, the T-REX extrapolation plot — x = true return, y = predicted return — for
the demonstrations (the only thing the reward model learned from) and for unseen trajectories, with
a line at the best demonstration: points right of it are better than anything the model was shown.
For D-REX runs the noise-degradation curve (mean ± std true return per ε, the Spearman correlation
of ε with it in the title) is drawn under it. Runs stored before a key existed show "—" for it.

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
    QAbstractItemView,
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
from rlhf_core.analysis.extrapolation import spearman
from rlhf_core.store import Project

COLUMNS = ["Run", "Env", "Method", "Best demo", "Demo mean", "BC", "Policy", "r unseen", "Noise ρ"]
RESULT_COLUMNS = ["Env", "Method", "Runs", "Demo mean", "Best demo", "BC", "Policy"]
NOISE_TITLE = "D-REX noise curve"  # short: with the Spearman it still fits a 1280-wide window's plot
MISSING = "—"  # a number this run did not store (runs from before the key existed)

#: the demo's three rankings: (method, ranking, the method's name in the tables, the button's text)
RANKINGS = (
    ("trex", "true_return", "T-REX · true return", "T-REX, ranked by true return…"),
    ("trex", "checkpoint", "T-REX · checkpoint", "T-REX, ranked by checkpoint order…"),
    ("drex", "noise", "D-REX · noise", "D-REX, ranked by noise…"),
)
RANKING_TIPS = {
    "true_return": "Learner demonstrations below a return cap, ranked by their true return (as a person who "
                   "sees the return would rank them).",
    "checkpoint": "Every learner checkpoint's demonstrations, ranked by the step they came from (later = better): "
                  "no true return is read on the way to the reward.",
    "noise": "One suboptimal demonstrator, behavioural cloning, then rollouts with ε random actions ranked "
             "automatically: less noise is better.",
}

EMPTY_TEXT = ("No finished extrapolation runs yet. Press “Run the extrapolation demo…” or one of the rankings: "
              "it ranks demonstrations, learns a reward from them and trains PPO on it; the plot then shows whether "
              "the learned reward extrapolates beyond the best demonstration.")


def _fmt(v, digits=1) -> str:
    return MISSING if v is None else f"{v:.{digits}f}"


def method_name(result: dict) -> str:
    """The run's method with its ranking ("T-REX · —" for T-REX runs stored before rankings were recorded)."""
    if result.get("method") == "drex":
        return RANKINGS[2][2]
    names = {ranking: name for method, ranking, name, _ in RANKINGS if method == "trex"}
    return names.get(result.get("ranking"), f"T-REX · {MISSING}")


def demonstrator_mean(result: dict):
    """The demonstrations' mean true return: D-REX's one demonstrator, T-REX's ranked demos."""
    value = result.get("demonstrator_mean_return")
    return value if value is not None else result.get("mean_demo_return")


def _spread(values: list) -> str:
    """Mean ± std over runs ("—" when no run stored the number; a single run: its value)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return MISSING
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def results_rows(runs: list[dict]) -> list[list[str]]:
    """One row per (environment, method) of the finished runs: RESULT_COLUMNS as text."""
    order = {name: i for i, (_, _, name, _) in enumerate(RANKINGS)}
    order[f"T-REX · {MISSING}"] = 1.5  # older T-REX runs after the ranked ones, before D-REX
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        res = run["result"]
        groups.setdefault((res.get("env_id", ""), method_name(res)), []).append(res)
    rows = []
    for (env, method), results in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))):
        rows.append([env, method, str(len(results)), _spread([demonstrator_mean(r) for r in results]),
                     _spread([r.get("best_demo_return") for r in results]),
                     _spread([r.get("bc_return") for r in results]),
                     _spread([r.get("policy_return") for r in results])])
    return rows


def noise_curve_of(result: dict, sample: dict | None) -> dict | None:
    """The D-REX noise curve: ``epsilon``, ``mean``, ``std`` (None where not stored) and ``rho``, from
    the result's ``noise_curve`` when the run stored one, else from its older noise-curve sample."""
    curve = result.get("noise_curve")
    if curve:
        eps = [float(c["epsilon"]) for c in curve]
        mean = [float(c["mean_return"]) for c in curve]
        std = [float(c["std_return"]) for c in curve] if all("std_return" in c for c in curve) else None
        rho = result.get("noise_curve_spearman")
    elif sample:
        eps, mean = [float(e) for e in sample["epsilon"]], [float(m) for m in sample["mean_true_return"]]
        std = [float(s) for s in sample["std_true_return"]] if "std_true_return" in sample else None
        rho = None
    else:
        return None
    if rho is None and len(eps) > 1:
        rho = spearman(eps, mean)
    return {"epsilon": eps, "mean": mean, "std": std, "rho": rho}


class ExtrapolationView(QWidget):
    run_requested = Signal(str)  # a job to open in the New Run dialog (the extrapolation demo)
    demo_requested = Signal(str, object)  # the job and the config its New Run dialog opens with

    def __init__(self, parent: QWidget | None = None, settings=None):
        super().__init__(parent)
        self.project: Project | None = None
        self.results = QTableWidget(0, len(RESULT_COLUMNS))
        self.results.setObjectName("extrapolation_results")
        self.results.setHorizontalHeaderLabels(RESULT_COLUMNS)
        self.results.verticalHeader().hide()
        self.results.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.results.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.results.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.results.setToolTip("Mean ± std over the runs of each environment and method (a single run: its value)")
        for col, text in ((3, "The demonstrator's mean true return: D-REX's one demonstrator, T-REX's ranked "
                              "learner episodes"),
                          (5, "Behavioural cloning on the demonstrations (D-REX only)"),
                          (6, "The policy trained on the learned reward, scored on the TRUE return")):
            self.results.horizontalHeaderItem(col).setToolTip(text)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeaderItem(4).setToolTip(self.results.horizontalHeaderItem(3).toolTip())
        self.table.horizontalHeaderItem(6).setToolTip("Mean ± std of the final policy's TRUE return over its "
                                                      "evaluation episodes")
        self.table.horizontalHeaderItem(8).setToolTip("D-REX: Spearman correlation of ε with the mean true return "
                                                      "of its rollouts (near -1: more noise really is worse)")
        self.table.itemSelectionChanged.connect(self._on_table_selection)

        title = QLabel("Extrapolation runs")
        title.setStyleSheet("font-weight: 600;")
        self.run_button = QPushButton("Run the extrapolation demo…")
        self.run_button.setObjectName("run_extrapolation_demo")
        self.run_button.setToolTip("T-REX or D-REX end to end: ranked demonstrations → a learned reward → PPO on "
                                   "it, scored on the true return")
        self.run_button.clicked.connect(lambda: self.run_requested.emit("extrapolation_demo"))
        self.ranking_buttons: dict[str, QPushButton] = {}
        head = QHBoxLayout()
        head.addWidget(title)
        head.addStretch(1)
        head.addWidget(QLabel("Start:"))
        for method, ranking, _, text in RANKINGS:
            button = QPushButton(text)
            button.setObjectName(f"run_{method}_{ranking}")
            button.setToolTip(RANKING_TIPS[ranking])
            button.clicked.connect(lambda _=False, m=method, r=ranking: self.request_demo(m, r))
            head.addWidget(button)
            self.ranking_buttons[ranking] = button
        head.addWidget(self.run_button)

        pg.setConfigOptions(antialias=True, background="w", foreground="k")
        self.graphics = pg.GraphicsLayoutWidget()
        self.scatter_plot = self.graphics.addPlot(row=0, col=0, title="Learned vs true return")
        self.scatter_plot.setLabel("bottom", "true return")
        self.scatter_plot.setLabel("left", "predicted return")
        self.scatter_plot.addLegend(offset=(10, 10), brush=pg.mkBrush(255, 255, 255, 200))
        self.noise_plot = self.graphics.addPlot(row=1, col=0, title=NOISE_TITLE)
        self.noise_plot.setLabel("bottom", "ε (probability of a random action)")
        self.noise_plot.getAxis("bottom").enableAutoSIPrefix(False)  # ε stays 0..1, never "x0.001"
        self.noise_plot.setLabel("left", "true return (mean ± std)")
        self.noise_plot.hide()
        self.noise_errors: pg.ErrorBarItem | None = None
        self.stats = QLabel("Select a run.")
        self.stats.setTextFormat(Qt.TextFormat.PlainText)
        self.stats.setWordWrap(True)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(with_export(self.graphics, "Extrapolation"), 1)
        rl.addWidget(self.stats)

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.results)
        ll.addWidget(self.table, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 0)  # room beyond the runs' columns goes to the plots
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([660, 540])  # the runs' columns in full at 1280 wide; the plots keep the whole height
        runs_tab = QWidget()
        tl = QVBoxLayout(runs_tab)
        tl.addLayout(head)
        tl.addWidget(splitter, 1)
        self.drex_view = DrexView(settings)
        self.reward_check = RewardCheckView()
        self.reward_check.run_requested.connect(self.run_requested)
        self.tabs = QTabWidget()
        self.tabs.addTab(runs_tab, "Extrapolation runs")
        self.tabs.addTab(self.reward_check, "Any reward model")
        self.tabs.addTab(self.drex_view, "D-REX ranking")
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        self._tab_chosen_for: Project | None = None
        self.runs: list[dict] = []

    def request_demo(self, method: str, ranking: str) -> None:
        """Ask for the extrapolation demo's New Run dialog with ``method`` and, for T-REX, ``ranking`` set."""
        import dataclasses

        from rlhf_core.registry import get_job

        config_cls = get_job("extrapolation_demo").config_class()  # start-up: imports the demo (torch)
        changes = {"method": method}
        if method == "trex" and "ranking" in {f.name for f in dataclasses.fields(config_cls)}:
            changes["ranking"] = ranking
        self.demo_requested.emit("extrapolation_demo", dataclasses.replace(config_cls(), **changes))

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.refresh()

    def refresh(self) -> None:
        self.runs = [r for r in (self.project.runs("extrapolation_demo") if self.project else [])
                     if r["status"] == "completed" and r["result"]]
        self._fill_results()
        self.table.setRowCount(len(self.runs))
        for row, run in enumerate(reversed(self.runs)):
            res = run["result"]
            pol = MISSING if res.get("policy_return") is None else \
                f"{_fmt(res.get('policy_return'))} ± {_fmt(res.get('policy_return_std'))}"
            cells = [str(run["id"]), res.get("env_id", ""), method_name(res), _fmt(res.get("best_demo_return")),
                     _fmt(demonstrator_mean(res)), _fmt(res.get("bc_return")), pol,
                     _fmt(res.get("reward_correlation"), 3),
                     _fmt(res.get("noise_curve_spearman"), 2) if res.get("method") == "drex" else ""]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, run["id"])
                if col == 6 and res.get("beats_best_demo"):
                    item.setForeground(Qt.GlobalColor.darkGreen)
                    item.setToolTip("Better than the best demonstration")
                self.table.setItem(row, col, item)
        # one environment: the results table names it, the runs need the width
        self.table.setColumnHidden(1, len({r["result"].get("env_id") for r in self.runs}) <= 1)
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
            self._clear_noise_plot()
            self.stats.setText(EMPTY_TEXT)

    def _fill_results(self) -> None:
        rows = results_rows(self.runs)
        self.results.setRowCount(len(rows))
        for r, cells in enumerate(rows):
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.results.setItem(r, c, item)
        # as tall as its rows (up to six), the runs and the plots get the rest
        shown = max(1, min(len(rows), 6))
        height = self.results.horizontalHeader().height() + shown * self.results.verticalHeader().defaultSectionSize()
        self.results.setFixedHeight(height + 2 * self.results.frameWidth() + 2)

    def _on_table_selection(self) -> None:
        items = self.table.selectedItems()
        if items:
            self.show_run(items[0].data(Qt.ItemDataRole.UserRole))

    def show_run(self, run_id: int) -> None:
        samples = self.project.samples(run_id, kinds.SAMPLE_EXTRAPOLATION)
        self.scatter_plot.clear()
        self._clear_noise_plot()
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
        result = next((r["result"] for r in self.runs if r["id"] == run_id), None) or {}
        noise = self.project.samples(run_id, kinds.SAMPLE_NOISE_CURVE)
        curve = noise_curve_of(result, noise[-1]["payload"] if noise else None)
        if curve is not None:
            self._draw_noise_curve(curve)

    def _clear_noise_plot(self) -> None:
        self.noise_plot.clear()
        self.noise_errors = None
        self.noise_plot.setTitle(NOISE_TITLE)
        self.noise_plot.hide()

    def _draw_noise_curve(self, curve: dict) -> None:
        x, y = np.asarray(curve["epsilon"]), np.asarray(curve["mean"])
        if curve["std"] is not None:
            std = np.asarray(curve["std"])
            self.noise_errors = pg.ErrorBarItem(x=x, y=y, top=std, bottom=std, beam=0.02,
                                                pen=pg.mkPen("#2ca02c", width=1))
            self.noise_plot.addItem(self.noise_errors)
        self.noise_plot.plot(x, y, pen=pg.mkPen("#2ca02c", width=2), symbol="o", symbolSize=6,
                             symbolBrush=pg.mkBrush("#2ca02c"))
        rho = curve["rho"]
        known = rho is not None and np.isfinite(rho)
        self.noise_plot.setTitle(NOISE_TITLE + (f" · Spearman ρ = {rho:.2f}" if known else ""))
        self.noise_plot.show()
