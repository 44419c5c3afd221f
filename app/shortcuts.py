"""Every key of the app in one list (Help ▸ Keyboard Shortcuts, F1 or ?).

The list is read from the window itself, so it cannot go stale: every ``QAction`` with a shortcut (menus),
every ``QShortcut`` (each listed under the page that holds it, described by its ``whatsThis`` or by the
button on that page that names the key) and the keys the labelling views read in ``keyPressEvent``
(:data:`VIEW_KEYS`; the labelling outcomes come from ``app.labeling.common.KEY_OUTCOMES``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractButton,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMenu,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.labeling.common import KEY_OUTCOMES, OUTCOME_TEXT
from app.labeling.demo_recorder import KEY_NAMES as DEMO_KEYS

#: keys the views handle in keyPressEvent (no QShortcut to read them from), by page name: (keys, what)
VIEW_KEYS: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    "clips": ((("Z",), "Undo the last label"), (("Space",), "Play / pause both clips"),
              ((",",), "One frame back"), ((".",), "One frame on")),
    "demo": ((tuple(QKeySequence(k).toString() for k in DEMO_KEYS), "Act: hold the keys (the environment's key map "
              "is shown on the page)"), (("Return", "Enter"), "Start recording")),
    "text": ((("Z",), "Undo the last label (or review)"),
             (("C",), "Correct a response (then ← or → picks which); Review revisions: edit the revision"),
             (("D",), "Highlight word differences on / off"),
             (("Return", "Enter"), "Accept the AI's label (when reviewing AI labels) or its revision (Review "
              "revisions)"),
             (("R",), "Review revisions: reject the AI's revision"),
             (("Ctrl+Return",), "Save the correction or the edit"), (("Esc",), "Cancel the correction or the edit")),
    "labels": ((("Return", "Enter"), "Open the selected label (its pair; the pane then takes ← → ↓ too)"),
               (("1", "2", "=", "B", "S"), "Relabel the selected label: left better, right better, tie, both bad, "
                "skip (a new label replaces it)"),
               (("Left", "Right", "Down"), "In the opened label: relabel left better, right better, tie"),
               (("Z", "Del"), "Undo the selected label; on an undone label: restore it"),
               (("Esc",), "Back from the opened label to the table"),
               (("Space", ",", "."), "Play / pause the clips, one frame back, one frame on")),
    "adjudicate": ((("N",), "Next disagreement (decide this one later)"),
                   (("Z",), "Undo the last decision"), (("Space", ",", "."), "Play / pause, one frame back, one on")),
}
ANYWHERE = "Anywhere"  # the section of the window's own shortcuts (not on a page)
#: pages whose views label pairs with the KEY_OUTCOMES keys
LABELLING_PAGES = ("clips", "text", "adjudicate")


@dataclass(frozen=True)
class KeyRow:
    section: str  # a menu's or a page's title
    keys: str  # as a person reads them ("Ctrl+Q", "← / 1")
    what: str
    sequences: tuple[str, ...] = ()  # the QKeySequences, PortableText (what the tests compare)


def _native(seq: QKeySequence) -> str:
    return seq.toString(QKeySequence.SequenceFormat.NativeText)


def _plain(text: str) -> str:
    """A menu text without its mnemonic and ellipsis."""
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").replace("…", "").strip()


def _key_name(key: Qt.Key) -> str:
    return QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText)


def _owner(obj) -> QWidget | None:
    parent = obj.parent()
    return parent if isinstance(parent, QWidget) else None


def in_dialog(widget: QWidget | None) -> bool:
    """True inside a dialog (its keys are its own, not the window's)."""
    while widget is not None:
        if isinstance(widget, QDialog):
            return True
        widget = widget.parentWidget()
    return False


def _page_of(widget: QWidget | None, pages: dict[str, QWidget]) -> str | None:
    by_widget = {id(w): name for name, w in pages.items()}
    while widget is not None:
        if id(widget) in by_widget:
            return by_widget[id(widget)]
        widget = widget.parentWidget()
    return None


def _described_by_button(shortcut: QShortcut, key: str) -> str:
    """The text of the button beside ``shortcut`` that names its key ("Clear  (Z)" -> "Clear")."""
    parent = _owner(shortcut)
    if parent is None:
        return ""
    mark = re.compile(r"\s*\(\s*" + re.escape(key) + r"\s*\)")
    for button in parent.findChildren(QAbstractButton):
        for text in (button.text(), button.toolTip()):
            if text and mark.search(text):
                name = mark.sub("", _plain(button.text())).strip(" ▶◀")
                tip = mark.sub("", button.toolTip()).strip()
                return f"{name}: {tip}" if name and tip else (name or tip)
    return ""


def collect(window, pages: dict[str, QWidget], titles: dict[str, str]) -> list[KeyRow]:
    """Every key of ``window``: menus first (in menu order), then each page's keys (in page order)."""
    rows: list[KeyRow] = []
    seen: set[int] = set()

    def add_menu(menu: QMenu, title: str) -> None:
        for action in menu.actions():
            if action.menu() is not None:
                add_menu(action.menu(), title)
            elif action.shortcuts():
                seen.add(id(action))
                rows.append(_action_row(action, title))

    for top in window.menuBar().actions():
        if top.menu() is not None:
            add_menu(top.menu(), _plain(top.text()))
    for action in window.findChildren(QAction):  # shortcuts on actions outside the menus
        owner = action.parent() if isinstance(action.parent(), QWidget) else None
        if action.shortcuts() and id(action) not in seen and not in_dialog(owner):
            page = _page_of(owner, pages)
            rows.append(_action_row(action, titles.get(page, ANYWHERE)))

    by_page: dict[str, list[KeyRow]] = {}
    for shortcut in window.findChildren(QShortcut):
        if shortcut.key().isEmpty() or in_dialog(_owner(shortcut)):
            continue
        page = _page_of(_owner(shortcut), pages)
        key = _native(shortcut.key())
        what = shortcut.whatsThis() or _described_by_button(shortcut, key) or "(a shortcut of this page)"
        by_page.setdefault(page or "", []).append(
            KeyRow(titles.get(page, ANYWHERE), key, what, (shortcut.key().toString(),)))
    for page, keys in VIEW_KEYS.items():
        extra = by_page.setdefault(page, [])
        if page in LABELLING_PAGES:
            extra[:0] = _outcome_rows(titles.get(page, page))
        extra.extend(KeyRow(titles.get(page, page), " / ".join(_native(QKeySequence(k)) for k in seq), what, seq)
                     for seq, what in keys)
    rows.extend(_merge(by_page.pop("", [])))
    for page in pages:  # in the pages' order
        rows.extend(_merge(by_page.get(page, [])))
    return rows


def _action_row(action: QAction, section: str) -> KeyRow:
    sequences = action.shortcuts()
    return KeyRow(section, " / ".join(_native(s) for s in sequences), _plain(action.text()),
                  tuple(s.toString() for s in sequences))


def _outcome_rows(section: str) -> list[KeyRow]:
    keys: dict[str, list[str]] = {}
    for key, outcome in KEY_OUTCOMES.items():
        keys.setdefault(outcome, []).append(_key_name(key))
    return [KeyRow(section, " / ".join(names), f"Label: {OUTCOME_TEXT[outcome]}", tuple(names))
            for outcome, names in keys.items()]


def _merge(rows: list[KeyRow]) -> list[KeyRow]:
    """Keys of one page that do the same thing share a row ("Z / Delete")."""
    out: list[KeyRow] = []
    for row in rows:
        same = next((i for i, r in enumerate(out) if r.what == row.what and r.section == row.section), None)
        if same is None:
            out.append(row)
        else:
            r = out[same]
            out[same] = KeyRow(r.section, f"{r.keys} / {row.keys}", r.what, r.sequences + row.sequences)
    return out


class ShortcutOverlay(QDialog):
    """The list of keys, grouped by menu and page; Esc, F1 or ? closes it."""

    def __init__(self, rows: list[KeyRow], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.rows = rows
        self.tree = QTreeWidget()
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Keys", "What it does"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setSelectionMode(QTreeWidget.SelectionMode.NoSelection)
        self.tree.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(True)
        sections: dict[str, QTreeWidgetItem] = {}
        for row in rows:
            if row.section not in sections:
                head = QTreeWidgetItem([row.section, ""])
                font = head.font(0)
                font.setBold(True)
                head.setFont(0, font)
                head.setFirstColumnSpanned(True)
                head.setFlags(Qt.ItemFlag.ItemIsEnabled)
                self.tree.addTopLevelItem(head)
                head.setFirstColumnSpanned(True)
                sections[row.section] = head
            item = QTreeWidgetItem(["    " + row.keys, row.what])  # plain text: QTreeWidgetItem never renders rich text
            self.tree.addTopLevelItem(item)
        note = QLabel("Page keys work while that page is shown; the labelling keys while the pair has the focus "
                      "(click it once).")
        note.setWordWrap(True)
        note.setStyleSheet("color: #555;")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree, 1)
        layout.addWidget(note)
        layout.addWidget(buttons)
        for key in ("F1", "?"):
            QShortcut(QKeySequence(key), self, self.reject)
        self.resize(720, 620)

    def listed(self) -> set[str]:
        """Every key sequence listed (PortableText), for the tests."""
        return {s for row in self.rows for s in row.sequences}
