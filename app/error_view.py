"""A failed run's error for a person: one sentence of what went wrong and what to do, the traceback
folded away behind "Details". Plain text only (an error message may quote model output or file contents)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSizePolicy, QToolButton, QVBoxLayout, QWidget

from rlhf_core.store import Failure, describe_stored_error


class ErrorView(QWidget):
    """``setPlainText(stored_error)`` shows the run's stored error (a traceback or a message) as
    :func:`rlhf_core.store.describe_stored_error` words it; the full text is under Details."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.failure: Failure | None = None
        self._text = ""
        self.what = QLabel()
        self.todo = QLabel()
        for label in (self.what, self.todo):
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.what.setStyleSheet("font-weight: 600; color: #b00020;")
        self.placeholder = QLabel("No error.")
        self.placeholder.setStyleSheet("color: #777;")
        self.details_button = QToolButton()
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details_button.setArrowType(Qt.ArrowType.RightArrow)
        self.details_button.setToolTip("The full error as stored with the run (the traceback, for a bug report)")
        self.details_button.toggled.connect(self.show_details)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.details.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.placeholder)
        layout.addWidget(self.what)
        layout.addWidget(self.todo)
        layout.addWidget(self.details_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.details, 1)
        layout.addStretch(1)
        self._layout = layout
        self.setPlainText("")

    # the QPlainTextEdit calls the runs page has always made
    def setPlainText(self, text: str) -> None:  # noqa: N802
        self._text = text or ""
        self.failure = describe_stored_error(self._text)
        has = self.failure is not None
        self.placeholder.setVisible(not has)
        self.what.setText(self.failure.what if has else "")
        self.todo.setText(self.failure.todo if has else "")
        for widget in (self.what, self.todo, self.details_button):
            widget.setVisible(has)
        self.details.setPlainText(self._text)
        self.details_button.setChecked(False)
        self.show_details(False)

    def toPlainText(self) -> str:  # noqa: N802
        """The sentence, then the stored text it was made from."""
        if self.failure is None:
            return ""
        return f"{self.failure.sentence}\n\n{self._text}"

    def setPlaceholderText(self, text: str) -> None:  # noqa: N802
        self.placeholder.setText(text)

    def show_details(self, shown: bool) -> None:
        shown = shown and self.failure is not None
        self.details.setVisible(shown)
        self._layout.setStretch(self._layout.count() - 1, 0 if shown else 1)  # the traceback takes the room
        self.details_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
