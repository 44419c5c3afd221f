"""Run something after the click that selected a row has finished.

The run lists tick the selected run so the plots show it. A click on an unticked row's check box
selects the row on the press and toggles the box on the release: ticking on the press would be
undone by the release. :class:`AfterRelease` defers the call until the view has handled the
release (a keyboard or programmatic selection runs it at once).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QAbstractItemView, QApplication


class AfterRelease(QObject):
    def __init__(self, view: QAbstractItemView):
        super().__init__(view)
        self._pending: Callable[[], None] | None = None
        view.viewport().installEventFilter(self)

    def call(self, fn: Callable[[], None]) -> None:
        """``fn()`` now, or after the mouse button that is down is released over the view."""
        if QApplication.mouseButtons() == Qt.MouseButton.NoButton:
            self._pending = None
            fn()
        else:
            self._pending = fn

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt name)
        if event.type() == QEvent.Type.MouseButtonRelease and self._pending is not None:
            fn, self._pending = self._pending, None
            QTimer.singleShot(0, self, fn)  # after the view's own handling of the release
        return False
