"""Parts shared by the pair-labelling views (clips and text): keys, labeller box, recent labels, queue.

Keys (the same in every pair view): ←/1 left better · →/2 right better · ↓/= tie · B both bad ·
S skip · Z undo.

The pair queue is shared by every kind of item, so each view reads only the pairs of its own kind
(``clip`` or ``response``) and skips pairs whose items were deleted.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QListWidget, QListWidgetItem, QMenu, QPushButton, QWidget

KEY_OUTCOMES = {
    Qt.Key.Key_Left: "left", Qt.Key.Key_1: "left",
    Qt.Key.Key_Right: "right", Qt.Key.Key_2: "right",
    Qt.Key.Key_Down: "tie", Qt.Key.Key_Equal: "tie",
    Qt.Key.Key_B: "both_bad", Qt.Key.Key_S: "skip",
}
OUTCOME_TEXT = {"left": "left better", "right": "right better", "tie": "tie", "both_bad": "both bad", "skip": "skipped"}
BUTTONS = (("left", "◀ Left better  (← / 1)"), ("tie", "Tie  (↓ / =)"), ("both_bad", "Both bad  (B)"),
           ("skip", "Skip  (S)"), ("right", "Right better  (→ / 2) ▶"))
RECENT = 12


class LabellerBox(QComboBox):
    """Who is labelling: the project's human labellers; typing a new name adds one on the next label."""

    def __init__(self, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.setEditable(True)
        self.setToolTip("Who is labelling (type a new name to add a labeller)")
        self.setMinimumWidth(140)

    def fill(self, project) -> None:
        self.clear()
        if project is None:
            return
        names = [l["name"] for l in project.labellers() if l["kind"] == "human"]
        wanted = self.settings.labeller
        if wanted not in names:
            names.insert(0, wanted)
        self.addItems(names)
        self.setCurrentText(wanted)

    def name(self) -> str:
        return self.currentText().strip() or "you"

    def take_name(self) -> str:
        """The name to label with (remembered in the settings); the writer adds the labeller if new."""
        name = self.name()
        if name != self.settings.labeller:
            self.settings.labeller = name
        return name

    def labeller_id(self, project) -> int:
        return project.ensure_labeller(self.take_name(), "human")


class RecentLabels(QListWidget):
    """Recent labels, newest first; right-click one to change or undo it."""

    change_requested = Signal(int, str)  # comparison id, new outcome
    undo_requested = Signal(int)  # comparison id

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMaximumHeight(150)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)
        self.setToolTip("Recent labels — right-click to change or undo one")
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)

    def set_entries(self, entries: list[tuple[int, str]]) -> None:
        """``(comparison id, text)`` rows; the text is shown as plain text."""
        self.clear()
        for cid, text in entries:
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, cid)
            self.addItem(item)

    def menu_for(self, cid: int) -> QMenu:
        menu = QMenu(self)
        for outcome, text in OUTCOME_TEXT.items():
            action = QAction(f"Change to: {text}", menu)
            action.triggered.connect(lambda _=False, o=outcome: self.change_requested.emit(cid, o))
            menu.addAction(action)
        menu.addSeparator()
        undo = QAction("Undo this label", menu)
        undo.triggered.connect(lambda: self.undo_requested.emit(cid))
        menu.addAction(undo)
        return menu

    def _menu(self, pos) -> None:
        item = self.itemAt(pos)
        if item is not None:
            self.menu_for(item.data(Qt.ItemDataRole.UserRole)).exec(self.mapToGlobal(pos))


def outcome_buttons(on_label: Callable[[str], object], on_undo: Callable[[], object]
                    ) -> tuple[QHBoxLayout, dict[str, QPushButton], QPushButton]:
    """The row of outcome buttons (they never take the keyboard focus from the view) and Undo."""
    row = QHBoxLayout()
    buttons = {}
    for outcome, text in BUTTONS:
        b = QPushButton(text)
        b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        b.clicked.connect(lambda _=False, o=outcome: on_label(o))
        row.addWidget(b)
        buttons[outcome] = b
    undo = QPushButton("Undo  (Z)")
    undo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    undo.clicked.connect(lambda _=False: on_undo())
    row.addSpacing(20)
    row.addWidget(undo)
    return row, buttons, undo


# ---------------------------------------------------------------------- the pair queue, by item kind
_OPEN = ("FROM pair_queue q JOIN items a ON a.id = q.left_id JOIN items b ON b.id = q.right_id "
         "WHERE q.comparison_id IS NULL AND a.kind = ? AND b.kind = ? AND a.deleted_at IS NULL "
         "AND b.deleted_at IS NULL")


def pending_pairs(project, kind: str, limit: int = 2, exclude=()) -> list[dict]:
    """Open queue entries whose two items are of ``kind``, in queue order (priority, then id),
    leaving out the ids in ``exclude`` (labels on their way to the database)."""
    rows = project.conn.execute(f"SELECT q.* {_OPEN} ORDER BY q.priority DESC, q.id LIMIT ?",
                                [kind, kind, limit + len(exclude)])
    return [dict(r) for r in rows if r["id"] not in exclude][:limit]


def waiting_count(project, kind: str) -> int:
    return project.conn.execute(f"SELECT count(*) {_OPEN}", [kind, kind]).fetchone()[0]


def reopened_pair(project, comparison_id: int) -> dict | None:
    """The queue entry an undone label came from (open again), if any."""
    row = project.conn.execute(
        "SELECT q.* FROM pair_queue q JOIN comparisons c ON c.left_id = q.left_id AND c.right_id = q.right_id "
        "WHERE c.id = ? AND q.comparison_id IS NULL ORDER BY q.id DESC LIMIT 1", [comparison_id]).fetchone()
    return dict(row) if row else None


def is_live(project, comparison_id: int) -> bool:
    row = project.conn.execute("SELECT deleted_at FROM comparisons WHERE id=?", [comparison_id]).fetchone()
    return row is not None and row[0] is None


def ranked_groups(list_widget) -> list[list[int]]:
    """A drag-ranking list as groups worst -> best: an item whose box is ticked joins the group
    above it (ties). Item ids are in ``Qt.UserRole``."""
    groups: list[list[int]] = []
    for i in range(list_widget.count()):
        item = list_widget.item(i)
        iid = item.data(Qt.ItemDataRole.UserRole)
        if groups and item.checkState() == Qt.CheckState.Checked:
            groups[-1].append(iid)
        else:
            groups.append([iid])
    return groups
