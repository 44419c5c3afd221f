"""Models: every artefact of the project (text policies and reward models, control reward ensembles, SB3 and
BC policies) by name, with the run that made it, what it was trained on and its headline metric. Names are
edited in place (F2); a policy starts the next round of iterated RLHF from here."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.plain import plain_label, tip
from rlhf_core import kinds
from rlhf_core.store import Project, artefacts

COLUMNS = ["Name", "Kind", "Made by", "Created (UTC)", "Trained on", "Headline"]
POLICY_KINDS = (kinds.TEXT_POLICY, kinds.SB3_PPO)  # what a round starts from
_ID_ROLE = Qt.ItemDataRole.UserRole


def trained_on_text(trained_on: dict) -> str:
    """``24 train pairs, 6 held-out pairs`` (the total is left out when the split says it)."""
    shown = {k: v for k, v in trained_on.items() if not (k == "pairs" and "train_pairs" in trained_on)}
    return ", ".join(f"{value:,} {key.replace('heldout', 'held-out').replace('_', ' ')}" for key, value in shown.items())


def headline_text(headline: tuple[str, float] | None) -> str:
    return "" if headline is None else f"{headline[0]} {headline[1]:.3g}"


class ModelsPage(QWidget):
    next_round_requested = Signal(str)  # an artefact reference (checkpoint:ID): open the round dialog from it
    show_run_requested = Signal(int)  # the run that made the selected artefact: show it on Runs & plots

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.items: list[artefacts.Artefact] = []
        self._filling = False

        self.kind_box = QComboBox()
        self.kind_box.addItem("All kinds", "")
        for kind, word in artefacts.KIND_WORDS.items():
            self.kind_box.addItem(word[:1].upper() + word[1:], kind)
        self.kind_box.currentIndexChanged.connect(self.refresh)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter by name or run…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.refresh)
        self.rename_button = QPushButton("Rename")
        self.rename_button.setToolTip("Give the selected model a name of your own (F2); pickers and the command "
                                      "line find it by that name.")
        self.rename_button.clicked.connect(self.start_rename)
        self.round_button = QPushButton("Next round…")
        self.round_button.setToolTip("Start the next round of iterated RLHF from the selected policy: sample, "
                                     "label, refit the reward model, train the next policy (Ctrl+Shift+N).")
        self.round_button.clicked.connect(self._on_next_round)
        self.run_button = QPushButton("Show run")
        self.run_button.setToolTip("The run that made the selected model, on Runs & plots.")
        self.run_button.clicked.connect(self._on_show_run)
        top = QHBoxLayout()
        top.addWidget(QLabel("Kind"))
        top.addWidget(self.kind_box)
        top.addWidget(self.search, 1)
        top.addWidget(self.rename_button)
        top.addWidget(self.round_button)
        top.addWidget(self.run_button)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.DoubleClicked | QTableWidget.EditTrigger.EditKeyPressed)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.doubleClicked.connect(lambda index: index.column() != 0 and self._on_next_round())

        self.message = plain_label()
        self.message.setWordWrap(True)
        self.empty = plain_label("No models yet. Every job that trains one (a reward model, a policy, a learner's "
                                 "checkpoints) lists it here, by a name you can change.")
        self.empty.setStyleSheet("color: #555;")
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.empty)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.message)
        QShortcut(QKeySequence(Qt.Key.Key_F2), self.table, self.start_rename)
        self._update_buttons()

    # --- data --------------------------------------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.message.setText("")
        self.refresh()

    def refresh(self, *_args) -> None:
        """Reload the artefacts (after a job finished, a rename, a filter change), keeping the selection."""
        keep = self.selected()
        kind = self.kind_box.currentData()
        words = self.search.text().strip().lower()
        everything = artefacts.list_artefacts(self.project) if self.project is not None else []
        self.items = [a for a in everything if (not kind or a.kind == kind) and (
            not words or words in a.name.lower() or words in f"run {a.run_id}" or words in a.run_kind.lower())]
        self._filling = True
        self.table.setRowCount(len(self.items))
        for row, a in enumerate(self.items):
            made_by = f"run {a.run_id} ({a.run_kind})" if a.run_id is not None else "imported"
            if a.step is not None and a.kind in (kinds.SB3_PPO, kinds.TEXT_POLICY) and a.run_kind == "learner":
                made_by += f", step {a.step:,}"
            cells = [a.name, a.kind_word, made_by, (a.created_at or "")[:16].replace("T", " "),
                     trained_on_text(a.trained_on), headline_text(a.headline)]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(_ID_ROLE, a.id)
                if col == 0:
                    item.setToolTip(tip(f"{a.name}\n{a.reference} · {a.path}\nDouble-click or F2 to rename."))
                else:
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(row, col, item)
        self._filling = False
        self.empty.setVisible(not everything)
        if keep is not None:
            self.select(keep.id)
        self._update_buttons()

    def selected(self) -> artefacts.Artefact | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.items[rows[0].row()] if rows and rows[0].row() < len(self.items) else None

    def select(self, checkpoint_id: int) -> bool:
        for row, a in enumerate(self.items):
            if a.id == checkpoint_id:
                self.table.selectRow(row)
                return True
        return False

    # --- actions ------------------------------------------------------------------------------------
    def start_rename(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.table.editItem(self.table.item(rows[0].row(), 0))

    def rename(self, checkpoint_id: int, name: str) -> bool:
        """Name the artefact ``name``; a name in use or empty is refused, in words, and nothing changes."""
        if self.project is None:
            return False
        try:
            given = artefacts.rename_artefact(self.project, checkpoint_id, name)
        except artefacts.ArtefactError as exc:
            self.message.setStyleSheet("color: #b00020;")
            self.message.setText(str(exc))
            self.refresh()
            return False
        self.message.setStyleSheet("color: #1b7f3b;")
        self.message.setText(f"Renamed to “{given}”.")
        self.refresh()
        self.select(checkpoint_id)
        return True

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 0:
            return
        checkpoint_id = int(item.data(_ID_ROLE))
        current = next((a for a in self.items if a.id == checkpoint_id), None)
        if current is not None and item.text() != current.name:
            self.rename(checkpoint_id, item.text())

    def _update_buttons(self) -> None:
        a = self.selected()
        self.rename_button.setEnabled(a is not None)
        self.round_button.setEnabled(a is not None and a.kind in POLICY_KINDS)
        self.run_button.setEnabled(a is not None and a.run_id is not None)

    def _on_next_round(self) -> None:
        a = self.selected()
        if a is not None and a.kind in POLICY_KINDS:
            self.next_round_requested.emit(a.reference)

    def _on_show_run(self) -> None:
        a = self.selected()
        if a is not None and a.run_id is not None:
            self.show_run_requested.emit(int(a.run_id))
