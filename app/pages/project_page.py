"""Project overview, the page a project opens on: the next useful steps for this project (each a button that
goes there: a page, or a job in the New Run dialog; chosen by :mod:`rlhf_core.analysis.next_steps`) and what the
project holds, at a glance."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.plain import plain_label
from rlhf_core.analysis.next_steps import NextStep, next_steps
from rlhf_core.store import Project

_COUNT_LABELS = [
    ("comparisons", "Pairwise labels"),
    ("rankings", "Rankings"),
    ("queued_pairs", "Pairs waiting for a label"),
    ("trajectories", "Trajectories"),
    ("clips", "Clips"),
    ("prompts", "Prompts"),
    ("responses", "Text responses"),
    ("labellers", "Labellers"),
    ("runs", "Runs"),
    ("checkpoints", "Checkpoints"),
]


class ProjectPage(QWidget):
    new_project_requested = Signal()
    open_project_requested = Signal()
    demo_requested = Signal()
    step_requested = Signal(object)  # a NextStep: go to its page, or open its job in the New Run dialog

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = plain_label("No project open")
        self.title.setStyleSheet("font-size: 20px; font-weight: 600;")
        self.path_label = QLabel()
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.path_label.setStyleSheet("color: #555;")
        self.path_label.setTextFormat(Qt.TextFormat.PlainText)

        self.counts_box = QGroupBox("Contents")
        self.counts_box.setMaximumWidth(420)
        form = QFormLayout(self.counts_box)
        self.count_labels: dict[str, QLabel] = {}
        for key, text in _COUNT_LABELS:
            value = QLabel("–")
            value.setObjectName(f"count_{key}")
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            form.addRow(text, value)
            self.count_labels[key] = value

        self.empty_box = QWidget()
        empty_layout = QVBoxLayout(self.empty_box)
        hint = QLabel("A project is one folder holding every label, run and metric.\n"
                      "Create a new one, open an existing one, or explore the demo project.")
        hint.setStyleSheet("color: #555;")
        buttons = QHBoxLayout()
        for text, signal in (("New project…", self.new_project_requested),
                             ("Open project…", self.open_project_requested),
                             ("Open demo project", self.demo_requested)):
            button = QPushButton(text)
            button.clicked.connect(signal)
            buttons.addWidget(button)
        buttons.addStretch(1)
        empty_layout.addWidget(hint)
        empty_layout.addLayout(buttons)

        self.steps_box = QGroupBox("Next steps")
        self.steps_box.setObjectName("next_steps")
        self.steps_box.setMinimumWidth(460)
        self.steps_grid = QGridLayout(self.steps_box)
        self.steps_grid.setColumnStretch(0, 1)
        self.steps_grid.setHorizontalSpacing(16)
        self.steps: list[NextStep] = []
        self.step_labels: list[QLabel] = []
        self.step_buttons: list[QPushButton] = []

        body = QHBoxLayout()
        body.addWidget(self.steps_box, 3, Qt.AlignmentFlag.AlignTop)
        body.addWidget(self.counts_box, 2, Qt.AlignmentFlag.AlignTop)
        body.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.path_label)
        layout.addWidget(self.empty_box)
        layout.addLayout(body)
        layout.addStretch(1)
        self.show_project(None)

    def show_project(self, project: Project | None) -> None:
        if project is None:
            self.title.setText("No project open")
            self.path_label.setText("")
            self.counts_box.hide()
            self.steps_box.hide()
            self.empty_box.show()
            return
        self.title.setText(project.name)
        self.path_label.setText(f"{project.folder}   ·   schema v{project.schema_version}")
        self.empty_box.hide()
        self.counts_box.show()
        self.steps_box.show()
        self.refresh(project)

    def refresh(self, project: Project) -> None:
        self._show_steps(next_steps(project))
        for key, value in project.counts().items():
            if key in self.count_labels:
                self.count_labels[key].setText(f"{value:,}")
        # the same pairs the labelling pages call "waiting", per page (clips, text)
        waiting = project.waiting_counts()
        if len(waiting) > 1:
            names = {"clip": "clip", "response": "text", "trajectory": "trajectory"}
            parts = ", ".join(f"{n:,} {names.get(kind, kind)}" for kind, n in waiting.items())
            self.count_labels["queued_pairs"].setText(f"{sum(waiting.values()):,} ({parts})")

    def _show_steps(self, steps: list[NextStep]) -> None:
        """One row per step: what the project holds (plain text) and a button that goes there."""
        while self.steps_grid.count():
            widget = self.steps_grid.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        self.steps, self.step_labels, self.step_buttons = list(steps), [], []
        if not steps:
            done = plain_label("Nothing waits for you here: every pair is labelled and every model trained. "
                               "Start something new with Run ▸ New Run….")
            done.setWordWrap(True)
            self.steps_grid.addWidget(done, 0, 0, 1, 2)
            return
        for row, step in enumerate(steps):
            label = plain_label(step.text)
            label.setWordWrap(True)
            button = QPushButton(f"{step.action} →")
            button.setObjectName(f"next_step_{row}")
            button.setToolTip(f"Opens the New Run dialog on this job ({step.job})" if step.job
                              else "Goes to that page")
            button.clicked.connect(lambda _=False, s=step: self.step_requested.emit(s))
            if row == 0:
                button.setDefault(True)
                label.setStyleSheet("font-weight: 600;")
            self.steps_grid.addWidget(label, row, 0)
            self.steps_grid.addWidget(button, row, 1)
            self.step_labels.append(label)
            self.step_buttons.append(button)
