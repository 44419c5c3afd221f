"""The "Labels" page: every label of the project in one table, filtered, sorted, opened and changed by keyboard.

Filters: labeller, source, outcome, kind (clip, text, trajectory), role (label or adjudication), first and
last day (UTC), guideline version and status (live; undone or replaced; all). Click a header to sort.
The table is a :class:`QAbstractTableModel` over the rows of one query (:func:`rlhf_core.labelers.browse.
query_labels`), so 10,000 labels load and scroll at once; only the rows on screen are formatted.

Keys in the table: ↑/↓ move (the pair below follows), Enter opens the label (the pair's pane takes the
keys: ←/→/↓ too), 1 / 2 / = / B / S relabel it (left better, right better, tie, both bad, skip), Z or
Delete undoes it, Z on an undone label restores it (an undo of the undo), Space / , / . play the clips;
Esc goes back from the pane to the table; Ctrl+F goes to the filters; F5 reads the labels again. Every
change is a new fact written by the label writer (``app/labeling/writer.py``) and checked against what was
shown: a label changed meanwhile elsewhere is refused with a sentence, nothing written.
"""

from __future__ import annotations

from datetime import date

from PySide6.QtCore import QAbstractTableModel, QDate, QModelIndex, Qt, QTimer
from PySide6.QtGui import QColor, QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDateEdit,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.labeling.common import BUTTONS, KEY_OUTCOMES, OUTCOME_TEXT
from app.labeling.pair_preview import PLAYBACK_KEYS, PairPreview
from app.labeling.writer import writer_for
from app.plain import plain_label
from rlhf_core.labelers import browse
from rlhf_core.labelers.browse import KIND_NAMES, NO_VERSION, LabelFilter, LabelRow
from rlhf_core.store import OUTCOMES

#: relabel keys in the table (the arrows move between rows there; in the opened pane they relabel too)
TABLE_OUTCOME_KEYS = {Qt.Key.Key_1: "left", Qt.Key.Key_2: "right", Qt.Key.Key_Equal: "tie",
                      Qt.Key.Key_B: "both_bad", Qt.Key.Key_S: "skip"}
UNDO_KEYS = {Qt.Key.Key_Z, Qt.Key.Key_Delete}
OPEN_KEYS = {Qt.Key.Key_Return, Qt.Key.Key_Enter}
ANY_DAY = QDate(2000, 1, 1)  # a date edit at its minimum means "any day"
GREY = QColor("#888")
FOLLOW_MS = 120  # the pair follows the current row once the arrow keys rest this long


def _seconds(ms: int | None) -> str:
    return "" if ms is None else f"{ms / 1000:.1f} s"


COLUMNS: tuple[tuple[str, object, object], ...] = (
    # header, text of a row, sort key of a row
    ("#", lambda r: str(r.id), lambda r: r.id),
    ("Time (UTC)", lambda r: r.created_at[:19].replace("T", " "), lambda r: r.created_at),
    ("Kind", lambda r: KIND_NAMES.get(r.kind, r.kind), lambda r: r.kind),
    ("Pair", lambda r: f"{r.left_id} vs {r.right_id}", lambda r: (r.left_id, r.right_id)),
    ("Outcome", lambda r: OUTCOME_TEXT[r.outcome], lambda r: r.outcome),
    ("Labeller", lambda r: r.labeller, lambda r: r.labeller.lower()),
    ("Source", lambda r: r.source, lambda r: r.source),
    ("Role", lambda r: r.role, lambda r: r.role),
    ("Guidelines", lambda r: "" if r.guideline_version is None else f"v{r.guideline_version}",
     lambda r: -1 if r.guideline_version is None else r.guideline_version),
    ("Time taken", lambda r: _seconds(r.response_ms), lambda r: -1 if r.response_ms is None else r.response_ms),
    ("Status", LabelRow.status_text, lambda r: r.status),
    ("From", lambda r: "" if r.ranking_id is None else f"ranking {r.ranking_id}",
     lambda r: -1 if r.ranking_id is None else r.ranking_id),
    ("Prompt", lambda r: " ".join(r.prompt.split()), lambda r: r.prompt),
)
NUMERIC = {0, 9}


class LabelTableModel(QAbstractTableModel):
    """Rows of :class:`LabelRow`; text is formatted only for the cells Qt asks for (those on screen)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[LabelRow] = []
        self._where: dict[int, int] | None = None  # label id -> row, built when asked
        self.sort_column, self.sort_order = 0, Qt.SortOrder.DescendingOrder

    def set_rows(self, rows: list[LabelRow]) -> None:
        self.beginResetModel()
        self.rows = rows
        self._sort()
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt name
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt name
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[index.column()][1](row)
        if role == Qt.ItemDataRole.ForegroundRole and not row.live:
            return GREY
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in NUMERIC:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section][0]
        return None

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self.sort_column, self.sort_order = column, order
        self._sort()
        self.layoutChanged.emit()

    def _sort(self) -> None:
        key = COLUMNS[self.sort_column][2]
        # ties keep the newest label first either way (a stable sort on id first)
        self.rows.sort(key=lambda r: r.id, reverse=True)
        self.rows.sort(key=key, reverse=self.sort_order == Qt.SortOrder.DescendingOrder)
        self._where = None

    def row_of(self, comparison_id: int) -> int:
        if self._where is None:
            self._where = {r.id: i for i, r in enumerate(self.rows)}
        return self._where.get(comparison_id, -1)


class LabelTable(QTableView):
    """The table: keys that act on a label go to the browser, the others move as usual."""

    def __init__(self, browser: LabelBrowserView):
        super().__init__()
        self.browser = browser

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt name
        if not event.modifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier) \
                and self.browser.table_key(event):
            return
        super().keyPressEvent(event)


class OpenedLabel(QWidget):
    """The opened label's pane (the pair, what it says, its history, the buttons); with the focus it reads
    the labelling keys."""

    def __init__(self, browser: LabelBrowserView):
        super().__init__()
        self.browser = browser
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt name
        if not event.modifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier) \
                and self.browser.pane_key(event):
            return
        super().keyPressEvent(event)


class LabelBrowserView(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project = None

        # filters
        self.labeller_box, self.source_box, self.outcome_box = QComboBox(), QComboBox(), QComboBox()
        self.kind_box, self.role_box, self.guideline_box, self.status_box = (QComboBox(), QComboBox(), QComboBox(),
                                                                             QComboBox())
        self.since_edit, self.until_edit = QDateEdit(), QDateEdit()
        for edit, tip in ((self.since_edit, "First day (UTC); at its lowest: any"),
                          (self.until_edit, "Last day (UTC); at its lowest: any")):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
            edit.setMinimumDate(ANY_DAY)
            edit.setSpecialValueText("any")
            edit.setDate(ANY_DAY)
            edit.setToolTip(tip)
            edit.dateChanged.connect(self._on_filter_changed)
        for value, text in (("live", "Live labels"), ("changed", "Undone or replaced"), ("all", "All (with history)")):
            self.status_box.addItem(text, value)
        for box in (self.labeller_box, self.source_box, self.outcome_box, self.kind_box, self.role_box,
                    self.guideline_box, self.status_box):
            box.currentIndexChanged.connect(self._on_filter_changed)
        self.count_label = plain_label()
        self.count_label.setObjectName("labels_count")
        filters = QGridLayout()
        for at, (text, widget) in enumerate((("Labeller", self.labeller_box), ("Source", self.source_box),
                                             ("Outcome", self.outcome_box), ("Kind", self.kind_box),
                                             ("Role", self.role_box), ("Guidelines", self.guideline_box),
                                             ("From", self.since_edit), ("To", self.until_edit),
                                             ("Show", self.status_box))):
            label = QLabel(text)
            label.setBuddy(widget)
            row, column = divmod(at, 5)
            filters.addWidget(label, row, 2 * column, Qt.AlignmentFlag.AlignRight)
            filters.addWidget(widget, row, 2 * column + 1)
        filters.addWidget(self.count_label, 1, 9)
        filters.setColumnStretch(10, 1)

        # the table
        self.model = LabelTableModel(self)
        self.table = LabelTable(self)
        self.table.setObjectName("labels_table")
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        header = self.table.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column, width in enumerate((60, 140, 70, 90, 90, 90, 70, 90, 75, 80, 110, 85)):
            header.resizeSection(column, width)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_row_changed)
        self._follow = QTimer(self)
        self._follow.setSingleShot(True)
        self._follow.setInterval(FOLLOW_MS)
        self._follow.timeout.connect(self._show_current)

        # the opened label
        self.pane = OpenedLabel(self)
        self.pane.setObjectName("label_pane")
        self.preview = PairPreview()
        self.info = plain_label()
        self.info.setObjectName("label_info")
        self.info.setWordWrap(True)
        self.history_label = plain_label()
        self.history_label.setObjectName("label_history")
        self.history_label.setWordWrap(True)
        self.history_label.setStyleSheet("color: #555;")
        buttons = QHBoxLayout()
        relabel = QLabel("Relabel:")
        relabel.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        buttons.addWidget(relabel)
        self.relabel_buttons: dict[str, QPushButton] = {}
        for outcome, text in BUTTONS:
            b = QPushButton(text)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(lambda _=False, o=outcome: self.relabel_current(o))
            buttons.addWidget(b)
            self.relabel_buttons[outcome] = b
        self.undo_button = QPushButton("Undo / restore  (Z)")
        self.undo_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.undo_button.clicked.connect(lambda _=False: self.undo_or_restore_current())
        buttons.addSpacing(20)
        buttons.addWidget(self.undo_button)
        pl = QVBoxLayout(self.pane)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.info)
        pl.addWidget(self.preview, 1)
        pl.addWidget(self.history_label)
        pl.addLayout(buttons)

        self.message = plain_label()
        self.message.setObjectName("labels_message")
        self.message.setWordWrap(True)
        hint = plain_label("Enter opens a label · 1 / 2 / = / B / S relabel it · Z undoes it (Z on an undone label "
                           "restores it) · Esc back to the table · nothing is ever deleted: every change is a new record")
        hint.setStyleSheet("color: #555;")
        hint.setWordWrap(True)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.pane)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([400, 400])  # scaled to the page's height: as much for the list as for the pair
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(hint)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.message)

        find = QShortcut(QKeySequence("Ctrl+F"), self, lambda: self.labeller_box.setFocus(),
                         context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        find.setWhatsThis("Go to the filters (Tab moves between them; Esc or Enter in the table acts on a label)")
        again = QShortcut(QKeySequence("F5"), self, self.refresh, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        again.setWhatsThis("Read the labels again (other windows and processes may have added some)")
        self._filling = False
        self.set_project(None)

    # ------------------------------------------------------------------ project and filters
    def set_project(self, project) -> None:
        self.project = project
        self.preview.set_project(project)
        self.message.setText("")
        self._fill_choices()
        self.reload()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        if self.project is not None:  # labels may have been given or changed elsewhere meanwhile
            self.refresh()

    def refresh(self) -> None:
        """Read the filters' choices and the labels again, keeping the filters and the current label."""
        self._fill_choices()
        self.reload()

    def _fill_choices(self) -> None:
        """The filters' choices from the project (what each combo box had chosen stays chosen if still there)."""
        self._filling = True
        try:
            choices = browse.choices(self.project) if self.project is not None else None

            def fill(box: QComboBox, entries: list[tuple[str, object]]) -> None:
                kept = box.currentData()
                box.clear()
                box.addItem("any", None)
                for text, value in entries:
                    box.addItem(text, value)
                at = box.findData(kept)
                box.setCurrentIndex(max(at, 0))

            if choices is None:
                for box in (self.labeller_box, self.source_box, self.kind_box, self.guideline_box):
                    fill(box, [])
            else:
                fill(self.labeller_box, [(name, lid) for lid, name in choices.labellers])
                fill(self.source_box, [(s, s) for s in choices.sources])
                fill(self.kind_box, [(KIND_NAMES.get(k, k), k) for k in choices.kinds])
                fill(self.guideline_box, [(f"v{v}", v) for v in choices.guideline_versions]
                     + ([("none", NO_VERSION)] if choices.unversioned else []))
            fill(self.outcome_box, [(OUTCOME_TEXT[o], o) for o in OUTCOMES])
            fill(self.role_box, [("labels", "label"), ("adjudications", "adjudication")])
        finally:
            self._filling = False

    def current_filter(self) -> LabelFilter:
        def day(edit: QDateEdit) -> date | None:
            d = edit.date()
            return None if d == ANY_DAY else date(d.year(), d.month(), d.day())

        return LabelFilter(labeller_id=self.labeller_box.currentData(), source=self.source_box.currentData(),
                           outcome=self.outcome_box.currentData(), kind=self.kind_box.currentData(),
                           role=self.role_box.currentData(), since=day(self.since_edit),
                           until=day(self.until_edit), guideline=self.guideline_box.currentData(),
                           status=self.status_box.currentData() or "live")

    def set_days(self, since: date | None, until: date | None) -> None:
        """Set the date filters (None: any day)."""
        for edit, day in ((self.since_edit, since), (self.until_edit, until)):
            edit.setDate(ANY_DAY if day is None else QDate(day.year, day.month, day.day))

    def _on_filter_changed(self, *_args) -> None:
        if not self._filling:
            self.reload()

    def reload(self, select: int | None = None) -> None:
        """Run the query again; the label ``select`` (else the current one, else the one at its place) stays
        current."""
        before = self.current_row()
        place = max(self.table.currentIndex().row(), 0)
        rows = browse.query_labels(self.project, self.current_filter()) if self.project is not None else []
        self.model.set_rows(rows)
        self.count_label.setText(f"{len(rows):,} label{'' if len(rows) == 1 else 's'} shown")
        wanted = select if select is not None else before.id if before is not None else None
        at = self.model.row_of(wanted) if wanted is not None else -1
        if at < 0 and rows:
            at = min(place, len(rows) - 1)
        if at >= 0:
            self.table.setCurrentIndex(self.model.index(at, 0))
            self.table.scrollTo(self.model.index(at, 0))
            self._show_current()
        else:
            self.preview.show_message("No project open." if self.project is None else
                                      "No labels here: label pairs on Label clips or Label text, or change the filters.")
            self.info.setText("")
            self.history_label.setText("")

    # ------------------------------------------------------------------ the current label
    def current_row(self) -> LabelRow | None:
        index = self.table.currentIndex()
        if not index.isValid() or index.row() >= len(self.model.rows):
            return None
        return self.model.rows[index.row()]

    def _on_current_row_changed(self, *_args) -> None:
        self._follow.start()

    def _show_current(self) -> None:
        self._follow.stop()
        row = self.current_row()
        if row is None or self.project is None:
            return
        if self.preview.pair != (row.left_id, row.right_id):
            self.preview.show_pair(row.left_id, row.right_id)
        who = row.labeller or row.source
        self.info.setText(f"Label {row.id} ({row.role}) · {KIND_NAMES.get(row.kind, row.kind)} {row.left_id} vs "
                          f"{row.right_id}: {OUTCOME_TEXT[row.outcome]} · by {who} ({row.source})"
                          + (f" in {_seconds(row.response_ms)}" if row.response_ms is not None else "")
                          + f" · {row.created_at[:19].replace('T', ' ')} UTC"
                          + (f" · guidelines v{row.guideline_version}" if row.guideline_version else "")
                          + f" · {row.status_text()}")
        self.history_label.setText("History: " + browse.history_text(browse.history(self.project, row.id)))
        self.undo_button.setText("Restore  (Z)" if row.status == "undone" else "Undo  (Z)")
        for b in (*self.relabel_buttons.values(), self.undo_button):
            b.setEnabled(row.live or (b is self.undo_button and row.status == "undone"))

    def open_current(self) -> None:
        """Open the current label: its pair at once, and the keys go to its pane."""
        if self.current_row() is None:
            return
        self._show_current()
        self.pane.setFocus()

    # ------------------------------------------------------------------ keys
    def table_key(self, event: QKeyEvent) -> bool:
        key = event.key()
        if key in OPEN_KEYS:
            self.open_current()
        elif key in TABLE_OUTCOME_KEYS:
            self.relabel_current(TABLE_OUTCOME_KEYS[key])
        elif key in UNDO_KEYS:
            self.undo_or_restore_current()
        elif key in PLAYBACK_KEYS:
            return self.preview.handle_key(event)
        else:
            return False
        return True

    def pane_key(self, event: QKeyEvent) -> bool:
        key = event.key()
        if key in KEY_OUTCOMES:
            self.relabel_current(KEY_OUTCOMES[key])
        elif key in UNDO_KEYS:
            self.undo_or_restore_current()
        elif key == Qt.Key.Key_Escape:
            self.table.setFocus()
        else:
            return self.preview.handle_key(event)
        return True

    # ------------------------------------------------------------------ writes
    def relabel_current(self, outcome: str) -> None:
        row = self.current_row()
        if row is None or self.project is None:
            return
        if not row.live:
            self.message.setText(f"Label {row.id} is {row.status_text()}: only a live label can be relabelled"
                                 + (" (Z restores it first)." if row.status == "undone" else "."))
            return
        if row.outcome == outcome:
            self.message.setText(f"Label {row.id} already says {OUTCOME_TEXT[outcome]}: nothing to change.")
            return
        self.message.setText(f"Relabelling label {row.id}…")
        writer_for(self.project).submit(
            browse.relabel(row.id, outcome),
            lambda new_id: self._written(new_id, f"Label {row.id} relabelled {OUTCOME_TEXT[outcome]}: the new label "
                                                 f"is {new_id}; label {row.id} is kept as replaced."),
            self._write_failed)

    def undo_or_restore_current(self) -> None:
        row = self.current_row()
        if row is None or self.project is None:
            return
        action = browse.undo_or_restore(row)
        if action is None:
            self.message.setText(f"Label {row.id} is {row.status_text()}: change that label instead.")
            return
        what, fn = action
        if what == "undo":
            done = lambda _cid: self._written(row.id, f"Label {row.id} undone (kept as an undone record; Z restores "
                                                      "it).")
        else:
            done = lambda new_id: self._written(new_id, f"Label {row.id} restored as label {new_id}.")
        writer_for(self.project).submit(fn, done, self._write_failed)

    def _written(self, select: int, text: str) -> None:
        if self.project is None:
            return
        self._fill_choices()
        self.reload(select=select)
        self.message.setText(text)

    def _write_failed(self, text: str) -> None:
        self.message.setText(text)
        if self.project is not None:
            self.reload()
