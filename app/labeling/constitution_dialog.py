"""The "Constitution…" dialog: edit the principles the AI labeller's judge is asked (one per line).

The edited list is saved in the project folder (``constitution.txt``); the next ``ai_labels`` run
with the judge method uses it. Until a project has its own copy, the bundled default is shown.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from rlhf_core.labelers.ai_feedback import (
    default_constitution,
    parse_constitution,
    project_constitution,
    project_constitution_path,
    save_project_constitution,
)


class ConstitutionDialog(QDialog):
    def __init__(self, project_folder, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Constitution for the AI labeller")
        self.resize(760, 420)
        self.folder = project_folder
        self.saved_path = None
        try:
            principles, source = project_constitution(project_folder)
            origin = ("this project's own copy" if source == project_constitution_path(project_folder)
                      else "the default (not changed for this project yet)")
        except ValueError as exc:  # a damaged project copy: start from the default, say why
            principles, origin = default_constitution(), f"the default ({exc})"
        intro = QLabel("One principle per line, each a question comparing two responses (for example "
                       "“Which response is less harmful?”). For every pair, the AI judge is asked one of "
                       "them, picked at random. Saved in the project folder and used by the next "
                       f"“ai_labels” run.\nShowing {origin}.")
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.TextFormat.PlainText)
        self.editor = QPlainTextEdit()
        self.editor.setObjectName("constitution_editor")
        self.editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.editor.setPlainText("\n".join(principles))
        self.count_label = QLabel()
        self.count_label.setTextFormat(Qt.TextFormat.PlainText)
        self.editor.textChanged.connect(self._update_count)
        self.error = QLabel()
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.setStyleSheet("color: #b00020;")
        reset = QPushButton("Reset to default")
        reset.clicked.connect(lambda: self.editor.setPlainText("\n".join(default_constitution())))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.addButton(reset, QDialogButtonBox.ButtonRole.ResetRole)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.editor, 1)
        layout.addWidget(self.count_label)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self._update_count()

    def principles(self) -> list[str]:
        return parse_constitution(self.editor.toPlainText())

    def _update_count(self) -> None:
        n = len(self.principles())
        self.count_label.setText(f"{n} principle{'s' if n != 1 else ''}")

    def save(self) -> None:
        try:
            self.saved_path = save_project_constitution(self.folder, self.principles())
        except (ValueError, OSError) as exc:
            self.error.setText(str(exc))
            return
        self.accept()
