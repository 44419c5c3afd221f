"""Refusal evaluations (the ``refusal_eval`` job): where each evaluated policy stands between refusing too
much and refusing too little, run after run (the "Refusal" tab of the Text RL page's Evaluations).

On top, a small plot of the two refusal rates per run, oldest left (with Wilson 95 % intervals): on prompts a
good assistant refuses (higher = more harmless; under-refusal is 1 minus it) and on benign prompts it should
answer (higher = less helpful: over-refusal). A policy moving along the helpful-harmless line moves these two
points between rounds. Below, the table of the same numbers read from each run's stored result
(:func:`rlhf_core.analysis.refusal.refusal_history`), with the second judge's agreement when the run had one,
and for the selected run its summary and the example responses of each cell (plain text: model output).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHeaderView,
    QPlainTextEdit,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.plain import escaped, plain_label, tip
from app.plots.export import with_export
from rlhf_core import kinds
from rlhf_core.analysis.refusal import COMPLY, REFUSE, RULE, refusal_history
from rlhf_core.store import Project

COLUMNS = ["Run", "Policy", "Refused harmful", "Under-refusal", "Over-refusal", "Judge agrees"]
HEADER_TIPS = ["The refusal_eval run", "The evaluated policy (the run's model setting)",
               "Refusal rate on the prompts a good assistant refuses (refusals / prompts)",
               "1 − that: harmful requests the policy went along with",
               "Refusal rate on the benign prompts a good assistant answers (refusals / prompts)",
               "With a second judge: on how many responses it and the phrase rule agree"]
DODGE = 0.06  # the two curves' points side by side at each run, so that equal rates stay visible
#: the cells of an evaluation, the two mistakes first: (cell, title)
CELLS = (("refuse/complied", "UNDER-REFUSAL: prompts to refuse that the policy answered"),
         ("comply/refused", "OVER-REFUSAL: benign prompts the policy refused"),
         ("refuse/refused", "Prompts to refuse, refused"),
         ("comply/complied", "Benign prompts, answered"))
REFUSE_COLOUR, COMPLY_COLOUR = "#1f5fbf", "#d66e00"
JUDGE_WORDS = {"reward_model": "reward model", "judge": "judge model"}


def _rate(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _ci(ci) -> str:
    return f"95 % CI {ci[0]:.2f}–{ci[1]:.2f}" if ci else "no prompts"


def _counted(stats: dict | None) -> str:
    """``0.57 (4/7)``: a label's refusal rate with its refusals and prompts."""
    if not stats or stats.get("rate") is None:
        return "–"
    return f"{stats['rate']:.2f} ({stats['refusals']}/{stats['n']})"


def policy_text(row: dict) -> str:
    """What the table calls the evaluated policy: the run's model setting (a folder by its name), else the
    loaded model's name."""
    name = str(row.get("model_setting") or "").strip() or str(row.get("model") or "?")
    return Path(name).name if "/" in name else name


def judge_text(second: dict | None) -> str:
    if not second:
        return "–"
    agreement = second.get("agreement") or {}
    return f"{agreement.get('agree', '?')}/{agreement.get('n', '?')}"


def judge_tip(second: dict | None) -> str | None:
    if not second:
        return None
    word = JUDGE_WORDS.get(second.get("method"), str(second.get("method")))
    return (f"Second judge: {word} {second.get('name') or Path(str(second.get('model', '?'))).name}; it refused "
            f"{_counted(second.get(REFUSE))} of the prompts to refuse and {_counted(second.get(COMPLY))} of the "
            "benign ones")


def summary_text(row: dict) -> str:
    """The selected run in words (plain text)."""
    ref, com = row.get(REFUSE) or {}, row.get(COMPLY) or {}
    lines = [f"Run {row['run_id']} · policy {policy_text(row)} · {row.get('n', '?')} prompts · judged by the rule "
             f"{row.get('rule') or RULE}"]
    if ref.get("n"):
        lines.append(f"Prompts to refuse: {ref['refusals']} of {ref['n']} refused ({ref['rate']:.2f}, {_ci(ref['ci95'])});"
                     f" under-refusal {1 - ref['rate']:.2f}")
    if com.get("n"):
        lines.append(f"Benign prompts: {com['refusals']} of {com['n']} refused = over-refusal {com['rate']:.2f} "
                     f"({_ci(com['ci95'])})")
    second = row.get("second_judge")
    if second:
        agreement = second.get("agreement") or {}
        word = JUDGE_WORDS.get(second.get("method"), str(second.get("method")))
        kappa = agreement.get("kappa")
        sref, scom = second.get(REFUSE) or {}, second.get(COMPLY) or {}
        lines.append(f"Second judge ({word} {second.get('name') or Path(str(second.get('model', '?'))).name}): "
                     f"refused {sref.get('refusals', '?')} of {sref.get('n', '?')} prompts to refuse and "
                     f"{scom.get('refusals', '?')} of {scom.get('n', '?')} benign ones; agrees with the rule on "
                     f"{agreement.get('agree', '?')} of {agreement.get('n', '?')} responses"
                     + (f" (κ {kappa:.2f})" if isinstance(kappa, (int, float)) else "") + ".")
    return "\n".join(lines)


def example_text(sample: dict) -> str:
    """One example response (plain text; the prompt and the response are untrusted)."""
    why = f"rule: {sample['matched']}" if sample.get("matched") else "rule: no refusal phrase"
    if "judge_refused" in sample:
        why += f" · second judge: {'refusal' if sample['judge_refused'] else 'not a refusal'}"
        if isinstance(sample.get("p_refusal"), (int, float)):
            why += f" (P = {sample['p_refusal']:.2f})"
        elif isinstance(sample.get("score"), (int, float)) and isinstance(sample.get("refusal_score"), (int, float)):
            why += f" (score {sample['score']:.2f} vs canned refusal {sample['refusal_score']:.2f})"
    return f"  PROMPT    {sample.get('prompt', '')}\n  RESPONSE  {sample.get('response', '')}\n  ({why})"


class RefusalView(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.rows: list[dict] = []  # refusal_history, oldest first (the table's and the plot's order)

        self.note = plain_label()
        self.note.setObjectName("refusal_note")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #555;")

        self.plot = pg.PlotWidget()
        self.plot.setObjectName("refusal_plot")
        self.plot.setBackground("w")
        self.plot.setMinimumHeight(150)
        self.plot.setLabel("left", "refusal rate")
        self.plot.setLabel("bottom", "refusal_eval run")
        self.plot.setYRange(-0.05, 1.05, padding=0)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.addLegend(offset=(5, 5), brush=pg.mkBrush(255, 255, 255, 170), labelTextSize="8pt", verSpacing=-4)
        self.refuse_curve = self.plot.plot([], [], pen=pg.mkPen(REFUSE_COLOUR, width=1), symbol="o", symbolSize=7,
                                           symbolBrush=REFUSE_COLOUR,
                                           name=escaped("prompts to refuse (higher: more harmless)"))
        self.comply_curve = self.plot.plot([], [], pen=pg.mkPen(COMPLY_COLOUR, width=1), symbol="t", symbolSize=8,
                                           symbolBrush=COMPLY_COLOUR,
                                           name=escaped("benign prompts = over-refusal (lower: more helpful)"))
        self.refuse_err = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), top=np.zeros(0), bottom=np.zeros(0),
                                          beam=0.1, pen=pg.mkPen(REFUSE_COLOUR, width=1))
        self.comply_err = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), top=np.zeros(0), bottom=np.zeros(0),
                                          beam=0.1, pen=pg.mkPen(COMPLY_COLOUR, width=1))
        self.plot.addItem(self.refuse_err)
        self.plot.addItem(self.comply_err)
        self.selected_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#999", width=1, style=Qt.PenStyle.DashLine))
        self.selected_line.hide()
        self.plot.addItem(self.selected_line)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("refusal_table")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for col, text in enumerate(HEADER_TIPS):
            self.table.horizontalHeaderItem(col).setToolTip(text)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_selection)

        self.details = QPlainTextEdit()
        self.details.setObjectName("refusal_details")
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("Select an evaluation to read its numbers and the example responses of each "
                                        "cell.")

        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(with_export(self.plot, "Refusal rates"))
        split.addWidget(self.table)
        split.addWidget(self.details)
        split.setSizes([190, 150, 260])
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note)
        layout.addWidget(split, 1)

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.refresh()

    def refresh(self) -> int:
        """Re-read the project's completed refusal evaluations; a new one is selected, else the selected run stays
        selected. Returns how many."""
        selected, before = self.selected_run(), {row["run_id"] for row in self.rows}
        self.rows = refusal_history(self.project) if self.project is not None else []
        self.table.blockSignals(True)
        self.table.setRowCount(0)
        for row in self.rows:
            ref, com = row.get(REFUSE) or {}, row.get(COMPLY) or {}
            under = row.get("under_refusal") or {}
            cells = [(str(row["run_id"]), None), (policy_text(row), str(row.get("model") or "")),
                     (_counted(ref), _ci(ref.get("ci95"))), (_rate(under.get("rate")), _ci(under.get("ci95"))),
                     (_counted(com), _ci(com.get("ci95"))), (judge_text(row.get("second_judge")), judge_tip(row.get("second_judge")))]
            r = self.table.rowCount()
            self.table.insertRow(r)
            for col, (text, tooltip) in enumerate(cells):
                item = QTableWidgetItem(text)  # a table item is plain text
                if col != 1:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if tooltip:
                    item.setToolTip(tip(tooltip))
                self.table.setItem(r, col, item)
        self.table.blockSignals(False)
        self._draw()
        if self.rows:
            self.note.setText(f"Refusal rate on prompts a good assistant refuses and on benign prompts it should "
                              f"answer, judged by the phrase rule ({RULE}); oldest run first. Select a run for its "
                              "example responses.")
        else:
            self.note.setText("No refusal evaluation yet. Select a policy run on the left and press “Refusal "
                              "evaluation…” (or Run → New Run… → “refusal_eval”); the Constitutional AI demo runs "
                              "them before and after training.")
        ids = [row["run_id"] for row in self.rows]
        new = [i for i in ids if i not in before]
        self.select_run(new[-1] if new else selected if selected in ids else (ids[-1] if ids else None))
        return len(self.rows)

    def _draw(self) -> None:
        xs = np.arange(len(self.rows), dtype=float)
        for key, curve, err, dodge in ((REFUSE, self.refuse_curve, self.refuse_err, -DODGE),
                                       (COMPLY, self.comply_curve, self.comply_err, DODGE)):
            stats = [row.get(key) or {} for row in self.rows]
            shown = np.array([s.get("rate") is not None for s in stats], dtype=bool)
            y = np.array([s["rate"] if s.get("rate") is not None else np.nan for s in stats], dtype=float)
            lo = np.array([s["ci95"][0] if s.get("ci95") else np.nan for s in stats], dtype=float)
            hi = np.array([s["ci95"][1] if s.get("ci95") else np.nan for s in stats], dtype=float)
            curve.setData(xs[shown] + dodge, y[shown])
            err.setData(x=xs[shown] + dodge, y=y[shown], top=(hi - y)[shown], bottom=(y - lo)[shown])
        self.plot.getAxis("bottom").setTicks([[(float(i), str(row["run_id"])) for i, row in enumerate(self.rows)]])
        self.plot.setXRange(-0.5, max(0.5, len(self.rows) - 0.5), padding=0)

    # --- selection ------------------------------------------------------------------------------
    def selected_run(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return self.rows[rows[0].row()]["run_id"] if rows and rows[0].row() < len(self.rows) else None

    def select_run(self, run_id: int | None) -> None:
        index = next((i for i, row in enumerate(self.rows) if row["run_id"] == run_id), None)
        if index is None:
            self.table.clearSelection()
            self._show_details(None)
            return
        self.table.selectRow(index)
        self._show_details(index)  # also when the row was selected already

    def _on_selection(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        self._show_details(rows[0].row() if rows else None)

    def _show_details(self, index: int | None) -> None:
        if index is None or index >= len(self.rows):
            self.selected_line.hide()
            self.details.clear()
            return
        row = self.rows[index]
        self.selected_line.setValue(float(index))
        self.selected_line.show()
        samples = [s["payload"] for s in self.project.samples(row["run_id"], kinds.SAMPLE_REFUSAL)] \
            if self.project is not None else []
        counts = row.get("cells") or {}
        parts = [summary_text(row)]
        for cell, title in CELLS:
            shown = [s for s in samples if isinstance(s, dict) and s.get("cell") == cell]
            parts.append(f"\n{title}: {counts.get(cell, len(shown))}" + (f", {len(shown)} shown" if shown else ""))
            parts.extend(example_text(s) for s in shown)
        self.details.setPlainText("\n".join(parts))  # model output: plain text only
