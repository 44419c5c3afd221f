"""Text from people, models and files, shown as the literal characters it holds.

Qt renders a label's, a message box's and every tooltip's text as HTML when it looks like HTML
(``Qt.mightBeRichText``), and pyqtgraph's titles and legends always do; HTML can load local files
(``<img src="file://...">``). Any text that is not a literal in our code goes through these helpers.
"""

from __future__ import annotations

import html

from PySide6 import QtGui
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget


def escaped(text: str) -> str:
    """``text`` for a place that always renders HTML (pyqtgraph titles, legends and labels)."""
    return html.escape(text, quote=False)


def tip(text: str) -> str:
    """A tooltip that shows ``text`` literally. Tooltips have no plain-text switch: text Qt would take
    for HTML becomes escaped rich text (line breaks and spaces kept); other text is returned as is."""
    if not QtGui.Qt.mightBeRichText(text):
        return text
    return "<p style='white-space:pre-wrap'>" + escaped(text) + "</p>"


def plain_label(text: str = "", parent: QWidget | None = None) -> QLabel:
    """A QLabel whose text is never read as HTML (the format is set before the text)."""
    label = QLabel(parent)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setText(text)
    return label


def message_box(parent: QWidget | None, title: str, text: str,
                icon: QMessageBox.Icon = QMessageBox.Icon.Warning) -> QMessageBox:
    """A message box with an OK button whose text is plain; call ``exec()`` (or ``open()``) on it."""
    box = QMessageBox(parent)
    box.setIcon(icon)
    box.setWindowTitle(title)
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.setText(text)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    return box
