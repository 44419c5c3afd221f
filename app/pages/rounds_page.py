"""Rounds: iterated RLHF round by round (the ``round`` job). Per round: labels added, the reward model's
held-out accuracy, the policy's reward, the gold reward / true return where one exists, and the win rate of
the round's samples against the previous round's (by the reward model, by people, by the round's labeller);
the plots follow the selected round's chain. A round that waits for people's labels continues from here once
they are given."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.jobs import round_why_not
from app.plain import plain_label, tip
from app.plots.export import with_export
from rlhf_core.rounds import WAITING, round_rows
from rlhf_core.store import Project

COLUMNS = ["Round", "Run", "Status", "Labeller", "From → policy", "Labels", "RM held-out acc.", "Policy reward",
           "Gold / true return", "Win rate vs previous"]
_COLOURS = {"completed": "#1b7f3b", "failed": "#b00020", "cancelled": "#8a6d00", "running": "#1f5fbf",
            WAITING: "#b35900", "queued": "#666666"}


def _num(value, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _pct(value, n=None) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return f"{100 * value:.0f}%" + (f" (n={n})" if n else "")


def status_text(row: dict) -> str:
    if row["status"] == WAITING:
        left = row.get("waiting_pairs") or 0
        return f"waiting for {left} label{'s' if left != 1 else ''}" if left else "labelled: continue it"
    return row["status"]


def win_text(row: dict) -> str:
    parts = []
    for key, n_key, who in (("win_by_reward_model", "win_n", "RM"), ("win_by_people", "people_n", "people"),
                            ("win_by_labeller", "labeller_n", "labeller")):
        if isinstance(row.get(key), (int, float)):
            parts.append(f"{who} {_pct(row[key], row.get(n_key))}")
    return " · ".join(parts) or "–"


def cells(row: dict) -> list[str]:
    """The table's texts of one round (see :func:`rlhf_core.rounds.round_rows`)."""
    added, total = row.get("labels_added"), row.get("labels_total")
    labels = f"+{added}" if isinstance(added, int) else "–"
    if isinstance(total, int):
        labels += f" / {total}"
    gold = row.get("gold_reward") if row["track"] == "text" else row.get("true_return")
    policy = row.get("policy_name") or "…"
    start = row.get("from_name") or ("base model" if row["track"] == "text" else "random policy")
    return [str(row.get("round") or "?"), str(row["run_id"]), status_text(row),
            row.get("labeller") or "–", f"{start} → {policy}",
            labels, _pct(row.get("reward_heldout_accuracy"), row.get("heldout_pairs")),
            _num(row.get("policy_reward")), _num(gold), win_text(row)]


class RoundsPage(QWidget):
    start_requested = Signal()  # round 1: the round dialog with no policy
    next_round_requested = Signal(str)  # the policy a round made (checkpoint:ID): the round dialog from it
    continue_requested = Signal(int)  # a round run that waits for labels (or failed): finish it
    label_requested = Signal(str)  # "text" or "control": the page where a waiting round's pairs are labelled

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.rows: list[dict] = []

        self.start_button = QPushButton("Start round 1…")
        self.start_button.setToolTip("A first round, from the base language model (text) or a random policy "
                                     "(control).")
        self.start_button.clicked.connect(self.start_requested)
        self.next_button = QPushButton("Next round…")
        self.next_button.setToolTip("The next round from the policy the selected round made (Ctrl+Shift+N); its "
                                    "settings repeat the selected round's.")
        self.next_button.clicked.connect(self._on_next)
        self.continue_button = QPushButton("Continue round")
        self.continue_button.clicked.connect(self._on_continue)
        self.label_button = QPushButton("Label its pairs")
        self.label_button.setToolTip("Go to the page where the selected round's pairs wait for your labels.")
        self.label_button.clicked.connect(self._on_label)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.next_button, self.continue_button, self.label_button):
            buttons.addWidget(button)
        buttons.addStretch(1)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.doubleClicked.connect(lambda _index: self._on_next())

        self.empty = plain_label("No rounds yet. A round samples from a policy, queues pairs of its samples, has "
                                 "them labelled (by you, a simulated teacher or an AI judge), refits the reward "
                                 "model on every label and trains the next policy. Start round 1, or pick a "
                                 "policy on the Models page and choose Next round.")
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: #555;")
        self.summary = plain_label()
        self.summary.setWordWrap(True)

        self.quality_plot = self._plot("Reward model and win rate", "fraction")
        self.quality_plot.setYRange(0, 1.05)
        self.quality_plot.addItem(pg.InfiniteLine(0.5, angle=0, pen=pg.mkPen("#999999", style=Qt.PenStyle.DashLine)))
        self.accuracy_curve = self._curve(self.quality_plot, "#1f5fbf", "o", "RM held-out accuracy")
        self.win_rm_curve = self._curve(self.quality_plot, "#d66e00", "t", "win rate vs previous (RM)")
        self.win_people_curve = self._curve(self.quality_plot, "#1b7f3b", "s", "win rate vs previous (people)")
        self.reward_plot = self._plot("Policy", "reward / return")
        self.policy_curve = self._curve(self.reward_plot, "#1f5fbf", "o", "policy reward")
        self.gold_curve = self._curve(self.reward_plot, "#d66e00", "t", "gold reward / true return")
        self.sampled_curve = self._curve(self.reward_plot, "#7a3db8", "d", "samples' reward (the round's RM)")
        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(with_export(self.quality_plot, "Rounds reward model and win rate"))
        plots.addWidget(with_export(self.reward_plot, "Rounds policy"))

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(buttons)
        top_layout.addWidget(self.empty)
        top_layout.addWidget(self.table, 1)
        top_layout.addWidget(self.summary)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(plots)
        split.setSizes([330, 300])
        layout = QVBoxLayout(self)
        layout.addWidget(split)
        self._update_buttons()

    @staticmethod
    def _plot(title: str, left: str) -> pg.PlotWidget:
        plot = pg.PlotWidget(background="w")
        plot.setTitle(title, color="#333", size="10pt")
        plot.setLabel("bottom", "round")
        plot.setLabel("left", left)
        plot.showGrid(x=False, y=True, alpha=0.2)
        plot.getAxis("left").enableAutoSIPrefix(False)
        plot.addLegend(offset=(5, 5), brush=pg.mkBrush(255, 255, 255, 170), labelTextSize="8pt")
        plot.setMinimumHeight(180)
        return plot

    @staticmethod
    def _curve(plot: pg.PlotWidget, colour: str, symbol: str, name: str):
        return plot.plot([], [], pen=pg.mkPen(colour, width=2), symbol=symbol, symbolSize=8, symbolBrush=colour,
                         name=name)

    # --- data --------------------------------------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.refresh()

    def refresh(self) -> None:
        keep = self.selected()
        self.rows = round_rows(self.project) if self.project is not None else []
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            for col, text in enumerate(cells(row)):
                item = QTableWidgetItem(text)
                if col == 2:
                    item.setForeground(QColor(_COLOURS.get(row["status"], "#000000")))
                    if row.get("error"):
                        item.setToolTip(tip(str(row["error"]).strip().splitlines()[-1]))
                if col == 4:
                    item.setToolTip(tip(f"{row['track']} round, {row.get('algorithm') or ''}: "
                                        f"from {row.get('from_name') or 'the start'} to {row.get('policy_name') or '…'}"))
                if col in (0, 1, 5, 6, 7, 8):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, col, item)
        self.empty.setVisible(not self.rows)
        if keep is not None and self.select(keep["run_id"]):
            pass
        elif self.rows:
            self.table.selectRow(len(self.rows) - 1)
        self._update_plots()
        self._update_buttons()

    def selected(self) -> dict | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.rows[rows[0].row()] if rows and rows[0].row() < len(self.rows) else None

    def select(self, run_id: int) -> bool:
        for r, row in enumerate(self.rows):
            if row["run_id"] == run_id:
                self.table.selectRow(r)
                return True
        return False

    def chain_rows(self) -> list[dict]:
        """The rounds of the selected round's chain (else the newest chain), in order."""
        chosen = self.selected() or (self.rows[-1] if self.rows else None)
        if chosen is None:
            return []
        return [row for row in self.rows if row["chain"] == chosen["chain"]]

    def _update_plots(self) -> None:
        chain = self.chain_rows()

        def series(key: str) -> tuple[list[float], list[float]]:
            points = [(row["round"], row[key]) for row in chain
                      if isinstance(row.get("round"), int) and isinstance(row.get(key), (int, float))]
            return [p[0] for p in points], [float(p[1]) for p in points]

        gold_key = "gold_reward" if chain and chain[0]["track"] == "text" else "true_return"
        numbers = sorted({row["round"] for row in chain if isinstance(row.get("round"), int)})
        for plot in (self.quality_plot, self.reward_plot):  # whole rounds on the x axis, not 1.5
            plot.getAxis("bottom").setTicks([[(n, str(n)) for n in numbers], []])
            if numbers:
                plot.setXRange(numbers[0] - 0.3, numbers[-1] + 0.3, padding=0)
        for curve, key in ((self.accuracy_curve, "reward_heldout_accuracy"), (self.win_rm_curve, "win_by_reward_model"),
                           (self.win_people_curve, "win_by_people"), (self.policy_curve, "policy_reward"),
                           (self.gold_curve, gold_key), (self.sampled_curve, "sampled_reward")):
            curve.setData(*series(key))
        for plot in (self.quality_plot, self.reward_plot):
            plot.enableAutoRange(axis="y")  # the chain's own values, not an earlier chain's
        self.quality_plot.setYRange(0, 1.05)
        if chain:
            first = chain[0]
            what = "text" if first["track"] == "text" else "control"
            self.summary.setText(f"Plots: the {what} chain that starts at round run {first['run_id']} "
                                 f"({len(chain)} round{'s' if len(chain) != 1 else ''}). "
                                 + ("Policy reward: the trainer's last mean reward on the new reward model (GRPO, "
                                    "PPO; DPO logs none); gold: the teacher's rule reward of the round's samples; "
                                    "samples' reward: those samples scored by the round's new reward model."
                                    if what == "text" else
                                    "Policy reward: the new policy's true return; true return: of the policy the "
                                    "round sampled from."))
        else:
            self.summary.setText("")

    # --- actions ------------------------------------------------------------------------------------
    def _on_selection(self) -> None:
        self._update_plots()
        self._update_buttons()

    def _update_buttons(self) -> None:
        row = self.selected()
        self.next_button.setEnabled(row is not None and bool(row.get("policy")) and row["status"] == "completed")
        why = None
        if row is None or self.project is None:
            why = "Select a round that waits for labels, failed or was cancelled."
        elif row["status"] == "completed":
            why = f"Round run {row['run_id']} is completed."
        else:
            why = round_why_not(self.project, row["run_id"])
        self.continue_button.setEnabled(why is None)
        self.continue_button.setToolTip(tip(why) if why else "Finish the selected round from its first unfinished "
                                        "step (its labels are given), as the same run.")
        self.label_button.setEnabled(row is not None and row["status"] == WAITING and bool(row.get("waiting_pairs")))

    def _on_next(self) -> None:
        row = self.selected()
        if row is not None and row.get("policy") and row["status"] == "completed":
            self.next_round_requested.emit(row["policy"])

    def _on_continue(self) -> None:
        row = self.selected()
        if row is not None:
            self.continue_requested.emit(int(row["run_id"]))

    def _on_label(self) -> None:
        row = self.selected()
        if row is not None:
            self.label_requested.emit(row["track"])
