"""Project overview: what the open project holds, at a glance."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.plain import plain_label
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

        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.path_label)
        layout.addWidget(self.empty_box)
        layout.addWidget(self.counts_box)
        layout.addStretch(1)
        self.show_project(None)

    def show_project(self, project: Project | None) -> None:
        if project is None:
            self.title.setText("No project open")
            self.path_label.setText("")
            self.counts_box.hide()
            self.empty_box.show()
            return
        self.title.setText(project.name)
        self.path_label.setText(f"{project.folder}   ·   schema v{project.schema_version}")
        self.empty_box.hide()
        self.counts_box.show()
        self.refresh(project)

    def refresh(self, project: Project) -> None:
        for key, value in project.counts().items():
            if key in self.count_labels:
                self.count_labels[key].setText(f"{value:,}")
