"""Labeller agreement, for pairs of responses (the "Agreement" tab of "Label text"), of clips (Label clips ▸
Agreement…) or of trajectories (rankings): how often labellers gave the same answer on the same pair (%
agreement, Cohen's kappa per pair of labellers, Fleiss' kappa and Krippendorff's alpha over all of them),
overall and per version of the labelling guidelines, AI-vs-people agreement (responses), and the
disagreements themselves. Prompts and answers are untrusted text: plain-text cells only."""

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
from rlhf_core.analysis.agreement import (
    ALL_VERSIONS,
    AgreementReport,
    labeller_agreement,
    labeller_agreement_by_guideline,
)
from rlhf_core.store import Project
from rlhf_core.labelers.ai_feedback import AIAgreement, ai_human_agreement

#: (item kind, what the kind box says, the items in sentences)
KINDS = (("response", "Text responses", "responses"), ("clip", "Clips", "clips"),
         ("trajectory", "Trajectories (rankings)", "trajectories"))
NO_GUIDELINES = -1  # the guideline box's data for labels given with no guidelines


class AgreementPanel(QWidget):
    """Labeller agreement on one kind of pairs: % agreement, Cohen's, Fleiss' kappa, Krippendorff's alpha
    (overall, per pair of labellers, per guidelines version) and the disagreements."""

    def __init__(self, parent: QWidget | None = None, *, kind: str = "response"):
        super().__init__(parent)
        self.project: Project | None = None
        self.report: AgreementReport | None = None
        self.by_version: dict[int | None, AgreementReport] = {}
        self.kind_box = QComboBox()
        self.kind_box.setObjectName("agreement_kind")
        for value, text, _ in KINDS:
            self.kind_box.addItem(text, value)
        self.kind_box.setCurrentIndex(self.kind_box.findData(kind))
        self.kind_box.currentIndexChanged.connect(lambda _i: self.refresh())
        self.source_box = QComboBox()
        self.source_box.addItem("All labellers", None)
        self.source_box.addItem("People only", ("human",))
        self.source_box.currentIndexChanged.connect(lambda _i: self.refresh())
        self.version_box = QComboBox()
        self.version_box.setObjectName("agreement_guidelines")
        self.version_box.setToolTip("Count only the labels given under one version of the labelling guidelines")
        self.version_box.currentIndexChanged.connect(lambda _i: self.refresh(keep_versions=True))
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(lambda: self.refresh())
        head = QHBoxLayout()
        for w in (QLabel("Pairs of:"), self.kind_box, QLabel("Labels:"), self.source_box, QLabel("Guidelines:"),
                  self.version_box, refresh):
            head.addWidget(w)
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
        rules = QLabel("Pairs labelled by two or more labellers (either order). Ties count as an answer of their "
                       "own; “skip” and “both bad” are left out, and so are adjudications. Cohen's kappa corrects "
                       "the agreement of two labellers for chance (1 = perfect, 0 = chance level); the overall "
                       "Cohen's κ is their mean. Fleiss' κ and Krippendorff's α (nominal) take every labeller at "
                       "once, also where labellers answered different pairs. For reference: InstructGPT labellers "
                       "agreed 72.6 ± 1.5 %, Stiennon et al. report 73 ± 4 % between researchers.")
        rules.setWordWrap(True)
        rules.setStyleSheet("color: #555;")
        self.versions = QTableWidget(0, 6)
        self.versions.setObjectName("agreement_versions")
        self.versions.setHorizontalHeaderLabels(["Guidelines", "Pairs", "Agreement", "Cohen's κ (mean)",
                                                 "Fleiss' κ", "Krippendorff's α"])
        self.versions.verticalHeader().hide()
        self.versions.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.versions.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.versions.setMaximumHeight(120)
        self.table = QTableWidget(0, 5)
        self.table.setObjectName("agreement_table")
        self.table.setHorizontalHeaderLabels(["Labeller", "Labeller", "Shared pairs", "Agreement", "Cohen's κ"])
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMaximumHeight(160)
        self.disagreements = QTableWidget(0, 3)
        self.disagreements.setObjectName("disagreement_table")
        self.disagreements.setHorizontalHeaderLabels(["Items", "Prompt", "Answers"])
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
        layout.addWidget(QLabel("By version of the labelling guidelines"))
        layout.addWidget(self.versions)
        layout.addWidget(QLabel("Between pairs of labellers"))
        layout.addWidget(self.table)
        layout.addWidget(self.disagreements_title)
        layout.addWidget(self.disagreements, 1)

    @property
    def kind(self) -> str:
        return self.kind_box.currentData()

    def set_kind(self, kind: str) -> None:
        self.kind_box.setCurrentIndex(self.kind_box.findData(kind))

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.refresh()

    def guideline_version(self) -> int | None | str:
        """The guidelines version chosen (:data:`ALL_VERSIONS`, a version, or None: labels with no guidelines)."""
        data = self.version_box.currentData()
        return ALL_VERSIONS if data is None else None if data == NO_GUIDELINES else data

    def _fill_versions(self) -> None:
        """The guideline box: all versions, each stored version, and labels given with no guidelines."""
        keep = self.version_box.currentData()
        self.version_box.blockSignals(True)
        self.version_box.clear()
        self.version_box.addItem("All versions", None)
        if self.project is not None:
            for v in self.project.guideline_versions():
                self.version_box.addItem(f"Version {v['version']}", v["version"])
        self.version_box.addItem("No guidelines", NO_GUIDELINES)
        index = self.version_box.findData(keep) if keep is not None else 0
        self.version_box.setCurrentIndex(max(index, 0))
        self.version_box.blockSignals(False)

    def refresh(self, keep_versions: bool = False) -> None:
        self.table.setRowCount(0)
        self.versions.setRowCount(0)
        self.disagreements.setRowCount(0)
        if not keep_versions:
            self._fill_versions()
        if self.project is None:
            self.report, self.by_version = None, {}
            self.summary.setText("No project open.")
            self.ai_summary.setText("")
            return
        kind, sources = self.kind, self.source_box.currentData()
        what = next(w for k, _, w in KINDS if k == kind)
        self.ai_summary.setVisible(kind == "response")
        self.ai_summary.setText(ai_agreement_text(self.project) if kind == "response" else "")
        self.by_version = labeller_agreement_by_guideline(self.project, item_kind=kind, sources=sources)
        rep = self.report = labeller_agreement(self.project, item_kind=kind, sources=sources,
                                               guideline_version=self.guideline_version())
        if rep.pairs == 0:
            self.summary.setText(f"No pair of {what} has been labelled by two different labellers yet"
                                 + ("" if self.guideline_version() == ALL_VERSIONS else " under these guidelines")
                                 + ". " + _how_to_overlap(kind))
        else:
            self.summary.setText(summary_text(rep, what))
        for version, r in self.by_version.items():
            if r.pairs == 0:
                continue
            row = self.versions.rowCount()
            self.versions.insertRow(row)
            name = "no guidelines" if version is None else f"version {version}"
            for col, value in enumerate((name, str(r.pairs), format_percent(r.agreement), format_kappa(r.kappa),
                                         format_kappa(r.fleiss_kappa), format_kappa(r.krippendorff_alpha))):
                self.versions.setItem(row, col, QTableWidgetItem(value))
        for p in rep.pairwise:
            row = self.table.rowCount()
            self.table.insertRow(row)
            for col, value in enumerate((p.name_a, p.name_b, str(p.n), format_percent(p.agreement),
                                         format_kappa(p.kappa))):
                self.table.setItem(row, col, QTableWidgetItem(value))
        self.disagreements.setHorizontalHeaderItem(1, QTableWidgetItem("Prompt" if kind == "response"
                                                                       else "Environment"))
        context = self._contexts(rep)
        self.disagreements_title.setText(f"Disagreements: {len(rep.disagreements)}")
        for d in rep.disagreements:
            row = self.disagreements.rowCount()
            self.disagreements.insertRow(row)
            answers = " · ".join(f"{name}: {answer_text(o, d.item_a, d.item_b)}" for name, o in d.outcomes.items())
            for col, value in enumerate((f"{d.item_a} vs {d.item_b}", snippet(context.get(d.item_a, ""), 120),
                                         answers)):
                cell = QTableWidgetItem(value)  # table cells are drawn as plain text
                cell.setToolTip(tip(value))
                self.disagreements.setItem(row, col, cell)

    def _contexts(self, rep: AgreementReport) -> dict[int, str]:
        """What each disagreement is about: the prompt (responses) or the environment (clips, trajectories)."""
        firsts = sorted({d.item_a for d in rep.disagreements})
        if self.kind == "response":
            return self.project.prompt_texts_of_items(firsts)
        items = {i: self.project.get_item(i) for i in firsts}
        return {i: str(item["env_id"] or "") for i, item in items.items() if item is not None}


def summary_text(rep: AgreementReport, what: str) -> str:
    """The panel's headline: agreement, Cohen's (mean), Fleiss' kappa and Krippendorff's alpha."""
    text = (f"Agreement {format_percent(rep.agreement)} on {rep.pairs} pair{'s' if rep.pairs != 1 else ''} of {what} "
            f"labelled by two or more of {len(rep.labellers)} labellers "
            f"({rep.agree} of {rep.comparisons} answer pairs the same) · Cohen's κ {format_kappa(rep.kappa)}"
            f" · Fleiss' κ {format_kappa(rep.fleiss_kappa)} · Krippendorff's α {format_kappa(rep.krippendorff_alpha)}")
    if rep.excluded_labels:
        text += f" · {rep.excluded_labels} skip/both-bad labels left out"
    return text


def _how_to_overlap(kind: str) -> str:
    if kind == "response":
        return ("Ask a second person to label: set an overlap (Guidelines ▸ Edit…) before queueing pairs, or choose "
                "their name as labeller, tick “also pairs others labelled” and press “Queue pairs”.")
    if kind == "clip":
        return ("Set an overlap (Guidelines ▸ Edit…) before pairs are queued: that share of the new pairs goes to "
                "two or more labellers, each choosing their name as labeller.")
    return "Ask two people to rank the same trajectories, each choosing their name as labeller."


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
