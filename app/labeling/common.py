"""Parts shared by the labelling views (clips and text): keys, labeller box, recent labels, rankings.

Keys (the same in every pair view): ←/1 left better · →/2 right better · ↓/= tie · B both bad ·
S skip · Z undo.

What is on screen and given, and the writes, are decided by the sessions in
``rlhf_core/labelers/session.py``; the views render them and forward keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.labeling.writer import writer_for
from rlhf_core.labelers.session import Given, PairSession, RankingSession, Step

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


def why_text(reason_json: str | None) -> str:
    """One line saying why a queued pair was asked (its query selection and, for an active query, each
    reward model member's P(left better)), for the person labelling it; "" when the entry says nothing."""
    try:
        reason = json.loads(reason_json or "{}")
    except ValueError:
        return ""
    if not isinstance(reason, dict) or not isinstance(reason.get("selection"), str):
        return ""
    selection = reason["selection"]
    probs = [p for p in reason.get("member_p_left") or [] if isinstance(p, (int, float))]
    members = ", ".join(f"{p:.2f}" for p in probs)
    if selection == "disagreement" and probs:
        variance = reason.get("disagreement")
        variance = variance if isinstance(variance, (int, float)) else sum((p - sum(probs) / len(probs)) ** 2
                                                                            for p in probs) / len(probs)
        return f"Why this pair: the reward models disagree most here (variance {variance:.3f}); their P(left better) = {members}"
    if selection == "uncertainty" and probs:
        return (f"Why this pair: the reward models are least sure here (mean P(left better) {sum(probs) / len(probs):.2f}); "
                f"each one's: {members}")
    if selection == "all":
        return "Why this pair: every pair of responses to this prompt was queued"
    if probs:
        return f"Why this pair: {selection} selection; the reward models' P(left better) = {members}"
    return f"Why this pair: {selection} selection"


class LabellerBox(QComboBox):
    """Who is labelling: the project's human labellers; typing a new name adds one on the next label.
    Choosing another name starts labelling as that person (``labeller_changed``): with an overlap
    between labellers each one is shown the pairs they have not answered, blind to the others' answers."""

    labeller_changed = Signal(str)

    def __init__(self, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self._last = ""
        self.setEditable(True)
        self.setToolTip("Who is labelling (type a new name to add a labeller). Each person labels under their own "
                        "name: pairs that go to several labellers are shown to each of them, blind.")
        self.setMinimumWidth(140)
        self.activated.connect(lambda _i: self._changed())
        self.lineEdit().editingFinished.connect(self._changed)

    def _changed(self) -> None:
        name = self.name()
        if name != self._last:
            self._last = name
            self.take_name()
            self.labeller_changed.emit(name)

    def choose(self, name: str) -> None:
        """Label as ``name`` from now on (as picking it in the box does)."""
        self.setCurrentText(name)
        self._changed()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        if self.settings.labeller != self._last and not self.lineEdit().hasFocus():
            self.choose(self.settings.labeller)  # another page's box chose someone else meanwhile

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
        self._last = self.name()

    def name(self) -> str:
        return self.currentText().strip() or "you"

    def take_name(self) -> str:
        """The name to label with (remembered in the settings); the writer adds the labeller if new."""
        name = self.name()
        if name != self.settings.labeller:
            self.settings.labeller = name
        return name


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
            item.setToolTip(f"Stored as comparison {cid} — right-click to change or undo it")
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


class TimedWhileVisible:
    """For a labelling view (before ``QWidget`` in its bases): its session's response time counts only
    while the view is visible and its window has not been left for another one. Any session assigned
    to ``session`` is told at once, then on every show, hide and window (de)activation.

    The window counts as active unless it was deactivated: without a window manager (Xvfb) a window is
    never activated, and its labels would otherwise all take 0 s."""

    _session = None
    _window_active = True

    @property
    def session(self):
        return self._session

    @session.setter
    def session(self, session) -> None:
        self._session = session
        self._sync_visible()

    def _sync_visible(self) -> None:
        if self._session is not None:
            self._session.set_visible(self.isVisible() and self._window_active)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        # (de)activations while hidden did not reach the view: ask now (no active window at all: unknown)
        self._window_active = self.isActiveWindow() or QApplication.activeWindow() is None
        self._sync_visible()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().hideEvent(event)
        self._sync_visible()

    def event(self, event) -> bool:
        # (de)activation reaches a window's visible children as these events (ActivationChange does not)
        handled = super().event(event)
        kind = event.type()
        if kind in (QEvent.Type.WindowActivate, QEvent.Type.WindowDeactivate):
            self._window_active = kind == QEvent.Type.WindowActivate
            self._sync_visible()
        return handled


class PairView(TimedWhileVisible, QWidget):
    """What the clip and text pair views share: their :class:`PairSession`'s writes handed to the
    label writer, and the session and the screen updated when a write is acked or fails.

    A subclass builds ``session`` (None without a project), ``project``, ``message``, ``recent`` and
    shows pairs (``show_next``, ``_show_pair``), counts (``_update_progress``) and recent labels
    (``_recent_text``); ``ITEMS`` names what it compares, in sentences."""

    label_recorded = Signal(int)  # comparison id
    pair_shown = Signal(int)  # queue id
    ITEMS = "Items"
    SAY_UNDONE = False  # say "Label undone" in the message line

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        if self.session is not None:  # pairs may have been queued (or labelled) while it was hidden
            self._update_progress()

    @property
    def current(self) -> dict | None:
        """The pair on screen (a queue row; reviewing AI labels: the AI's comparison row)."""
        return self.session.current if self.session is not None else None

    def _submit_label(self, step: Step) -> Given:
        session, given = self.session, step.given
        writer_for(self.project).submit(step.fn, lambda cid: self._on_labelled(session, given, cid),
                                        lambda text: self._on_label_failed(session, given, text))
        return given

    def _on_labelled(self, session: PairSession, given: Given, cid: int | None) -> None:
        session.labelled(given, cid)
        if session is not self.session:
            return
        if cid is None:
            self.message.setText(f"{self.ITEMS} {given.pair['left_id']} vs {given.pair['right_id']} were labelled "
                                 "elsewhere meanwhile (another labeller or a job): your answer was not stored.")
        self._update_progress()
        self._refresh_recent()
        if cid is not None:
            self.label_recorded.emit(cid)

    def _on_label_failed(self, session: PairSession, given: Given, text: str) -> None:
        """Nothing was saved: say why and put the pair back on screen (it is still waiting)."""
        pair = session.failed(given)
        if session is not self.session:
            return
        if pair is not None and self._may_show_again():
            self._show_pair(pair)
        self.message.setText(text)

    def _may_show_again(self) -> bool:
        return True

    def _on_guidelines_loaded(self, version: int | None) -> None:
        """The guidelines pane shows ``version``: the labels given from now on record it."""
        if self.session is not None:
            self.session.guideline_version = version

    def _on_labeller_changed(self, name: str) -> None:
        """Another person labels from now on: the pairs they have not answered, their recent labels."""
        if self.session is None:
            return
        self.session.set_labeller(name)
        if self._may_show_again():
            self.show_next()
        self._update_progress()
        self._refresh_recent()

    def _on_write_failed(self, session: PairSession, text: str) -> None:
        if session is self.session:
            self.message.setText(text)
            self._update_progress()
            self._refresh_recent()

    def undo(self, comparison_id: int | None = None) -> None:
        """Undo the latest label or correction given here (or ``comparison_id``); an undone pair
        comes back on screen (the latest one at once: the writer reopens it right after the label)."""
        session = self.session
        if session is None:
            return
        step = session.undo_last() if comparison_id is None else session.undo(comparison_id)
        if step is None:
            return
        if step.what == "correction":
            def done(result: tuple[int, int] | None) -> None:
                if session is self.session and result is not None:
                    self.message.setText(f"Correction {result[0]} undone with its {result[1]} labels "
                                         "(kept as deleted records).")
                    self._update_progress()
                    self._refresh_recent()
        else:
            if step.show is not None:
                self._show_pair(step.show)

            def done(cid: int | None) -> None:
                if session is not self.session or cid is None:
                    return
                if comparison_id is not None:
                    pair = session.reopened(cid)
                    if pair is None:
                        self.show_next()
                    else:
                        self._show_pair(pair)
                if self.SAY_UNDONE:
                    self.message.setText("Label undone (kept as a deleted record).")
                self._update_progress()
                self._refresh_recent()
        def failed(text: str) -> None:
            session.undo_failed(step.given)  # still stored: Z can undo it again
            if session is self.session and step.show is not None and self.current is step.show:
                self.show_next()  # it was shown again for labelling, but it is still labelled
            self._on_write_failed(session, text)

        writer_for(self.project).submit(step.fn, done, failed)

    def change_label(self, comparison_id: int, outcome: str):
        """Change a stored label (a new row supersedes it); returns the write (its ``result``: the new id)."""
        session = self.session

        def done(_new_id: int) -> None:
            if session is self.session:
                self._refresh_recent()

        return writer_for(self.project).submit(session.change(comparison_id, outcome).fn, done,
                                               lambda text: self._on_write_failed(session, text))

    def _refresh_recent(self) -> None:
        if self.session is None:
            self.recent.clear()
        else:
            self.recent.set_entries([(r["id"], self._recent_text(r)) for r in self.session.recent(RECENT)])

    def _recent_text(self, row: dict) -> str:
        raise NotImplementedError


def label_line(row: dict, what: str) -> str:
    """One recent label for the list: ``#n  what  · who · seconds`` (shown as plain text), where n is
    the label's place in the header's "Labelled N" (the newest is N; a label that count leaves out,
    e.g. a correction, has no number)."""
    number = row.get("number")
    text = (f"#{number}  " if number is not None else "") + f"{what}  · {row['labeller'] or row['source']}"
    if row["response_ms"] is not None:
        text += f" · {row['response_ms'] / 1000:.1f} s"
    return text


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


# ---------------------------------------------------------------------- ranking views
class RankingBase(TimedWhileVisible, QWidget):
    """What both ranking views (trajectories, responses) share: the ranking column (hint, list,
    save button, status; Ctrl+S saves), entries that drag and tie, and their
    :class:`RankingSession`'s saves and undos handed to the label writer.

    A subclass has ``session`` (None without a project), ``project``, ``recent`` (saved rankings;
    the selected one is undone), ``_labeller()`` and ``_after_write()`` (re-read what it lists);
    ``ONE``/``MANY`` name what it ranks."""

    ranking_saved = Signal(int)
    ONE, MANY = "item", "items"

    def _ranking_column(self, object_name: str) -> tuple[QWidget, QVBoxLayout]:
        """``self.list``, ``self.save_button`` and ``self.status`` in a column under the hint."""
        self.list = QListWidget()
        self.list.setObjectName(object_name)
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.list.setDefaultDropAction(Qt.DropAction.MoveAction)
        hint = QLabel("Worst at the top → best at the bottom. Drag to reorder. A ticked box ties a "
                      f"{self.ONE} with the one above it.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #555;")
        self.save_button = QPushButton("Save ranking  (Ctrl+S)")
        self.save_button.clicked.connect(self.save)
        self.status = QLabel()
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(hint)
        layout.addWidget(self.list, 1)
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.status, 1)
        layout.addLayout(row)
        QShortcut(QKeySequence("Ctrl+S"), self, self.save, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        return column, layout

    def _add_entry(self, iid: int) -> QListWidgetItem:
        """A draggable entry (item id in ``Qt.UserRole``) whose tick box ties it with the one above."""
        item = QListWidgetItem()
        item.setData(Qt.ItemDataRole.UserRole, iid)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsDragEnabled)
        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsDropEnabled)
        item.setCheckState(Qt.CheckState.Unchecked)
        item.setToolTip(f"Tick: tied with the {self.ONE} above")
        self.list.addItem(item)
        return item

    def groups(self) -> list[list[int]]:
        """The ranking on screen: groups worst -> best (an item ticked joins the group above)."""
        return ranked_groups(self.list)

    def save(self):
        """Hand the ranking on screen to the label writer; returns the write (its ``result``: the ranking id)."""
        if self.session is None or self.list.count() < 2:
            self.status.setText(self.TOO_FEW)
            return None
        session, groups = self.session, self.groups()
        try:
            step = session.save(groups, self._labeller())
        except ValueError as exc:
            self.status.setText(str(exc))
            return None
        n = sum(len(g) for g in groups)

        def done(rid: int) -> None:
            if session is self.session:
                self.status.setText(f"Saved ranking {rid}: {n} {self.MANY}, {n * (n - 1) // 2} pairs.")
                self._after_write()
                self.ranking_saved.emit(rid)

        self.status.setText("Saving the ranking…")
        return writer_for(self.project).submit(step.fn, done, lambda text: self._write_failed(session, text))

    def _on_undo_clicked(self) -> None:
        """Undo the saved ranking selected (or the newest one)."""
        item = self.recent.currentItem() or (self.recent.item(0) if self.recent.count() else None)
        if item is None or self.session is None:
            return
        session, rid = self.session, item.data(Qt.ItemDataRole.UserRole)

        def done(_result) -> None:
            if session is self.session:
                self.status.setText(f"Ranking {rid} undone (kept as a deleted record).")
                self._after_write()

        writer_for(self.project).submit(session.undo(rid).fn, done, lambda text: self._write_failed(session, text))

    def _write_failed(self, session: RankingSession, text: str) -> None:
        if session is self.session:
            self.status.setText(text)  # the ranking stays on screen: save it again when the cause is gone

    def _on_guidelines_loaded(self, version: int | None) -> None:
        """The guidelines pane shows ``version``: rankings saved from now on record it."""
        if self.session is not None:
            self.session.guideline_version = version
