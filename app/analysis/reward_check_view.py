"""Any reward model: does it extrapolate? (a tab of the Extrapolation page)

Pick any control reward model of the project (and, optionally, one policy whose rollouts are stored):
every stored trajectory of its environment is scored by the model and drawn as predicted vs true
return — the trajectories it learned from (clips of them labelled, ranked, or its demonstrations) apart
from those it never saw — with a line at the best demonstration and Pearson r / Spearman ρ in words
(:func:`rlhf_core.analysis.reward_check.check_reward`). Scoring reads every trajectory's arrays (about
0.5 ms each here, docs/performance.md), so it runs off the GUI thread, and only while the tab is shown.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.jobs import BackgroundCall, on_own_connection
from app.plain import tip
from app.training.config_form import artefact_label
from app.plots.export import with_export
from rlhf_core import kinds
from rlhf_core.analysis.reward_check import (
    POLICY_KINDS,
    RewardCheck,
    RewardCheckError,
    check_reward,
    policy_trajectory_counts,
    reward_env,
)
from rlhf_core.store import Project
from rlhf_core.store.artefacts import list_artefacts

NO_MODEL_TEXT = ("No control reward model in this project yet. Train one (“Train a reward model…”) from labelled "
                 "clips, rankings or rollouts; every stored trajectory of its environment is then scored here, "
                 "and the plot shows whether its predictions follow the true return beyond what it was shown.")
SEEN_BRUSH, UNSEEN_BRUSH = pg.mkBrush(31, 119, 180, 200), pg.mkBrush(255, 127, 14, 220)


def compute(folder: str, reward_id: int, policy_id: int | None) -> RewardCheck | str:
    """In a worker thread: the check on the worker's own connection, or the sentence saying why not."""
    return on_own_connection(folder, check_reward, reward_id, policy_id, errors=(RewardCheckError,))


class RewardCheckView(QWidget):
    run_requested = Signal(str)  # a job to open in the New Run dialog (reward_model)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.result: RewardCheck | None = None
        self._shown_for: tuple | None = None  # (project folder, reward id, policy id) the plot shows; None: stale
        self._computing: tuple | None = None
        self.worker = BackgroundCall(self)
        self.worker.finished.connect(self._on_computed)

        self.reward_box = QComboBox()
        self.reward_box.setMinimumWidth(320)
        self.reward_box.setToolTip("Any control reward model of the project, newest first")
        self.reward_box.currentIndexChanged.connect(self._on_reward_chosen)
        self.policy_box = QComboBox()
        self.policy_box.setMinimumWidth(260)
        self.policy_box.setToolTip("Only the trajectories one policy rolled out (rollouts of a PPO or BC checkpoint)")
        self.policy_box.currentIndexChanged.connect(lambda _i: self.request())
        self.train_button = QPushButton("Train a reward model…")
        self.train_button.clicked.connect(lambda: self.run_requested.emit("reward_model"))
        top = QHBoxLayout()
        top.addWidget(QLabel("Reward model:"))
        top.addWidget(self.reward_box, 2)
        top.addWidget(QLabel("Trajectories:"))
        top.addWidget(self.policy_box, 1)
        top.addWidget(self.train_button)

        self.plot_widget = pg.PlotWidget(background="w")
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setLabel("bottom", "true return")
        self.plot.setLabel("left", "predicted return")
        self.plot.addLegend(offset=(10, 10), brush=pg.mkBrush(255, 255, 255, 200))
        self.seen_points = pg.PlotDataItem(pen=None, symbol="o", symbolSize=8, symbolBrush=SEEN_BRUSH, symbolPen=None,
                                           name="trained on (its demonstrations)")
        self.unseen_points = pg.PlotDataItem(pen=None, symbol="t", symbolSize=9, symbolBrush=UNSEEN_BRUSH,
                                             symbolPen=None, name="never seen")
        self.plot.addItem(self.seen_points)
        self.plot.addItem(self.unseen_points)
        self.best_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#888", style=Qt.PenStyle.DashLine),
                                         label="best demo", labelOpts={"position": 0.9, "color": "#555"})
        self.plot.addItem(self.best_line)
        self.best_line.hide()
        self.stats = QLabel(NO_MODEL_TEXT)
        self.stats.setTextFormat(Qt.TextFormat.PlainText)
        self.stats.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(with_export(self.plot_widget, "Reward model vs true return"), 1)
        layout.addWidget(self.stats)

    # --- data --------------------------------------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.result = None
        self._shown_for = None
        self.refresh()

    def refresh(self) -> None:
        """Re-list the reward models (keeping the choice); the plot is recomputed when shown."""
        chosen = self.reward_id()
        self.reward_box.blockSignals(True)
        self.reward_box.clear()
        for art in list_artefacts(self.project, (kinds.REWARD_ENSEMBLE,)) if self.project else []:
            self.reward_box.addItem(artefact_label(art), art.id)
            self.reward_box.setItemData(self.reward_box.count() - 1, tip(art.name), Qt.ItemDataRole.ToolTipRole)
        index = self.reward_box.findData(chosen) if chosen is not None else -1
        self.reward_box.setCurrentIndex(max(index, 0) if self.reward_box.count() else -1)
        self.reward_box.blockSignals(False)
        self._shown_for = None  # new trajectories may have come
        self._fill_policies()
        if not self.reward_box.count():
            self._clear(NO_MODEL_TEXT)
        self.request()

    def has_models(self) -> bool:
        return self.reward_box.count() > 0

    def reward_id(self) -> int | None:
        data = self.reward_box.currentData()
        return int(data) if data is not None else None

    def policy_id(self) -> int | None:
        data = self.policy_box.currentData()
        return int(data) if data else None

    def _fill_policies(self) -> None:
        chosen = self.policy_id()
        self.policy_box.blockSignals(True)
        self.policy_box.clear()
        reward = self.reward_id()
        env = None
        if self.project is not None and reward is not None:
            try:
                env = reward_env(self.project, reward)
            except RewardCheckError:
                env = None
        self.policy_box.addItem(f"all of {env}" if env else "all", 0)
        if env is not None:
            counts = policy_trajectory_counts(self.project, env)
            for art in list_artefacts(self.project, POLICY_KINDS):
                if art.id in counts:
                    self.policy_box.addItem(f"{artefact_label(art)} · {counts[art.id]} trajectories", art.id)
                    self.policy_box.setItemData(self.policy_box.count() - 1, tip(art.name),
                                                Qt.ItemDataRole.ToolTipRole)
        self.policy_box.setCurrentIndex(max(self.policy_box.findData(chosen or 0), 0))
        self.policy_box.blockSignals(False)

    def _on_reward_chosen(self, _index: int) -> None:
        self._fill_policies()
        self.request()

    # --- computing ---------------------------------------------------------------------------------
    def wanted(self) -> tuple | None:
        reward = self.reward_id()
        return None if reward is None or self.project is None else (str(self.project.folder), reward,
                                                                     self.policy_id())

    def request(self) -> None:
        """Compute the chosen check in the background when the tab is shown and the plot does not show it."""
        want = self.wanted()
        if want is None or self.project is None or not self.isVisible() or want == self._shown_for:
            return
        if self.worker.busy:  # the newest choice is computed when the running one reports
            return
        self._computing = want
        self.stats.setText("Scoring the trajectories…")
        self.worker.start(compute, *want)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.request()

    def _on_computed(self, result, error) -> None:
        done, self._computing = self._computing, None
        if done != self.wanted():  # the choice changed meanwhile: compute the new one
            self.request()
            return
        self._shown_for = done
        if error is not None or isinstance(result, str):
            self._clear(result if isinstance(result, str) else f"The check failed: {error}")
            return
        self.show_result(result)

    def _clear(self, text: str) -> None:
        self.result = None
        self.seen_points.setData([], [])
        self.unseen_points.setData([], [])
        self.best_line.hide()
        self.stats.setText(text)

    def show_result(self, result: RewardCheck) -> None:
        self.result = result
        seen = result.seen
        self.seen_points.setData(result.true_returns[seen], result.predicted[seen])
        self.unseen_points.setData(result.true_returns[~seen], result.predicted[~seen])
        best = result.best_demo_return
        if best is None:
            self.best_line.hide()
        else:
            self.best_line.setValue(best)
            self.best_line.show()
        self.plot.enableAutoRange()
        self.stats.setText(result.text())
