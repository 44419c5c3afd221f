"""The "Agreement" tab of the "Label text" page: how often labellers gave the same answer on the same
pair of responses (% agreement, Cohen's kappa, per pair of labellers), AI-vs-people agreement, and
the disagreements themselves. Prompts and answers are untrusted text: plain-text cells only."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.labeling.text_rank_view import snippet
from app.plain import tip
from rlhf_core.analysis.agreement import AgreementReport, labeller_agreement
from rlhf_core.store import Project
from rlhf_core.labelers.ai_feedback import AIAgreement, ai_human_agreement


class AgreementPanel(QWidget):
    """Labeller agreement on text comparisons: % agreement, Cohen's kappa, the disagreements."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.report: AgreementReport | None = None
        self.source_box = QComboBox()
        self.source_box.addItem("All labellers", None)
        self.source_box.addItem("People only", ("human",))
        self.source_box.currentIndexChanged.connect(lambda _i: self.refresh())
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        head = QHBoxLayout()
        head.addWidget(QLabel("Labels:"))
        head.addWidget(self.source_box)
        head.addWidget(refresh)
        head.addStretch(1)
        self.summary = QLabel()
        self.summary.setObjectName("agreement_summary")
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("font-size: 13px;")
        self.ai_summary = QLabel()
        self.ai_summary.setObjectName("ai_agreement_summary")
        self.ai_summary.setTextFormat(Qt.TextFormat.PlainText)
        self.ai_summary.setWordWrap(True)
        self.ai_summary.setStyleSheet("font-size: 13px;")
        rules = QLabel("Pairs of responses labelled by two or more labellers (either order). Ties count as "
                       "an answer of their own; “skip” and “both bad” are left out. Cohen's kappa corrects "
                       "the agreement for chance (1 = perfect, 0 = chance level); the overall kappa is the "
                       "mean over pairs of labellers. For reference: InstructGPT labellers agreed "
                       "72.6 ± 1.5 %, Stiennon et al. report 73 ± 4 % between researchers.")
        rules.setWordWrap(True)
        rules.setStyleSheet("color: #555;")
        self.table = QTableWidget(0, 5)
        self.table.setObjectName("agreement_table")
        self.table.setHorizontalHeaderLabels(["Labeller", "Labeller", "Shared pairs", "Agreement", "Cohen's κ"])
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMaximumHeight(160)
        self.disagreements = QTableWidget(0, 3)
        self.disagreements.setObjectName("disagreement_table")
        self.disagreements.setHorizontalHeaderLabels(["Responses", "Prompt", "Answers"])
        self.disagreements.verticalHeader().hide()
        hh = self.disagreements.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.disagreements.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.disagreements_title = QLabel("Disagreements")
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.summary)
        layout.addWidget(self.ai_summary)
        layout.addWidget(rules)
        layout.addWidget(QLabel("Between pairs of labellers"))
        layout.addWidget(self.table)
        layout.addWidget(self.disagreements_title)
        layout.addWidget(self.disagreements, 1)

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.refresh()

    def refresh(self) -> None:
        self.table.setRowCount(0)
        self.disagreements.setRowCount(0)
        if self.project is None:
            self.report = None
            self.summary.setText("No project open.")
            self.ai_summary.setText("")
            return
        self.ai_summary.setText(ai_agreement_text(self.project))
        rep = self.report = labeller_agreement(self.project, item_kind="response",
                                               sources=self.source_box.currentData())
        if rep.pairs == 0:
            self.summary.setText("No pair of responses has been labelled by two different labellers yet. Ask a "
                                 "second person to label (choose their name as labeller, tick “also pairs others "
                                 "labelled” and press “Queue pairs”).")
        else:
            text = (f"Agreement {format_percent(rep.agreement)} on {rep.pairs} pair{'s' if rep.pairs != 1 else ''} "
                    f"of responses labelled by two or more of {len(rep.labellers)} labellers "
                    f"({rep.agree} of {rep.comparisons} answer pairs the same) · Cohen's κ {format_kappa(rep.kappa)}")
            if rep.excluded_labels:
                text += f" · {rep.excluded_labels} skip/both-bad labels left out"
            self.summary.setText(text)
        for p in rep.pairwise:
            row = self.table.rowCount()
            self.table.insertRow(row)
            for col, value in enumerate((p.name_a, p.name_b, str(p.n), format_percent(p.agreement),
                                         format_kappa(p.kappa))):
                self.table.setItem(row, col, QTableWidgetItem(value))
        prompts = self._prompt_texts(rep)
        self.disagreements_title.setText(f"Disagreements: {len(rep.disagreements)}")
        for d in rep.disagreements:
            row = self.disagreements.rowCount()
            self.disagreements.insertRow(row)
            answers = " · ".join(f"{name}: {answer_text(o, d.item_a, d.item_b)}" for name, o in d.outcomes.items())
            for col, value in enumerate((f"{d.item_a} vs {d.item_b}", snippet(prompts.get(d.item_a, ""), 120),
                                         answers)):
                cell = QTableWidgetItem(value)  # table cells are drawn as plain text
                cell.setToolTip(tip(value))
                self.disagreements.setItem(row, col, cell)

    def _prompt_texts(self, rep: AgreementReport) -> dict[int, str]:
        return self.project.prompt_texts_of_items(sorted({d.item_a for d in rep.disagreements}))


def format_ai_agreement(a: AIAgreement, *, short: bool = False) -> str:
    """One line on AI-vs-people agreement (from :func:`rlhf_core.labelers.ai_feedback.ai_human_agreement`)."""
    if a.ai_labels == 0:
        return "" if short else "AI vs people: no AI labels yet (Compare pairs → Run AI labeller…)."
    if a.pairs == 0:
        return ("AI vs people: no overlap yet" if short else
                "AI vs people: no pair has both an AI label and a person's label yet (review AI labels in "
                "Compare pairs).")
    core = f"{format_percent(a.agreement)} on {a.pairs} pair{'s' if a.pairs != 1 else ''}, κ {format_kappa(a.kappa)}"
    return f"AI vs people: {core}" if short else f"AI vs people: agreement {core} ({a.agree} the same)"


def ai_agreement_text(project: Project) -> str:
    """The Agreement tab's AI-vs-people line: all human labels, then only independent ones."""
    every = ai_human_agreement(project)
    text = format_ai_agreement(every)
    if every.pairs:
        alone = ai_human_agreement(project, independent_only=True)
        if alone.pairs != every.pairs:
            text += (" · counting only labels given without seeing the AI's answer: "
                     + (f"{format_percent(alone.agreement)} on {alone.pairs} pairs, κ {format_kappa(alone.kappa)}"
                        if alone.pairs else "no pairs yet (use Blind review)"))
    return text


def format_percent(x: float) -> str:
    return "–" if x != x else f"{x * 100:.1f} %"


def format_kappa(k: float | None) -> str:
    return "undefined" if k is None else f"{k:.2f}"


def answer_text(outcome: str, a: int, b: int) -> str:
    return {"left": f"{a} better", "right": f"{b} better", "tie": "tie"}.get(outcome, outcome)
