"""Rank the K responses to one prompt by dragging: worst at the top, best at the bottom; ties by grouping.

The same convention as the trajectory ranking view: tick "tied with the one above" on a response to
put it in the same group as the response above it. "Save ranking" (Ctrl+S) stores ONE ranking
(with the prompt) that expands to all K-choose-2 pairs, kept together by their ranking id
(InstructGPT: K = 4-9 responses per prompt, all pairs in one batch). Responses are shown in a
random order, as plain text (model output is untrusted), without their model or source.
"""

from __future__ import annotations

import random
import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.labeling.common import LabellerBox, ranked_groups
from app.labeling.writer import writer_for
from rlhf_core.store import Project

SNIPPET = 260  # characters of a response shown in the list (the full text is on the right)


def snippet(text: str, n: int = SNIPPET) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def plain_viewer(max_height: int | None = None) -> QPlainTextEdit:
    """A read-only plain-text box (never interprets markup)."""
    box = QPlainTextEdit()
    box.setReadOnly(True)
    box.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
    if max_height:
        box.setMaximumHeight(max_height)
    return box


class TextRankView(QWidget):
    ranking_saved = Signal(int)

    def __init__(self, settings, labeller_box: LabellerBox | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.prompt_id: int | None = None
        self.loaded_at = 0.0
        self.rng = random.Random()
        own_box = self._own_box = labeller_box is None
        self.labeller_box = labeller_box or LabellerBox(settings)

        self.prompt_box = QComboBox()
        self.prompt_box.setMinimumWidth(360)
        self.prompt_box.setMaxVisibleItems(20)
        self.prompt_box.setToolTip("Prompts with at least two responses (the number of responses, "
                                   "and ✓ when you ranked it already)")
        self.prompt_box.activated.connect(lambda _i: self._on_prompt_chosen())
        shuffle = QPushButton("Shuffle")
        shuffle.setToolTip("Show the responses again in a new random order")
        shuffle.clicked.connect(lambda: self.load_prompt(self.prompt_id))
        next_button = QPushButton("Next prompt ▶")
        next_button.clicked.connect(self.next_prompt)
        self.reveal_box = QCheckBox("Reveal sources")
        self.reveal_box.setToolTip("Show which model (or correction) wrote each response")
        self.reveal_box.toggled.connect(self._relabel)
        head = QHBoxLayout()
        if own_box:
            head.addWidget(QLabel("Labeller:"))
            head.addWidget(self.labeller_box)
            head.addSpacing(12)
        head.addWidget(QLabel("Prompt:"))
        head.addWidget(self.prompt_box, 1)
        head.addWidget(shuffle)
        head.addWidget(next_button)
        head.addWidget(self.reveal_box)

        self.prompt_text = plain_viewer(72)
        self.prompt_text.setObjectName("rank_prompt_text")

        self.list = QListWidget()
        self.list.setObjectName("text_ranking_list")
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.list.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.list.setWordWrap(True)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setSpacing(3)
        self.list.setAlternatingRowColors(True)
        self.list.currentItemChanged.connect(self._on_current_changed)
        hint = QLabel("Worst at the top → best at the bottom. Drag to reorder. A ticked box ties a "
                      "response with the one above it.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #555;")
        self.save_button = QPushButton("Save ranking  (Ctrl+S)")
        self.save_button.clicked.connect(self.save)
        self.status = QLabel()
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setWordWrap(True)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(hint)
        ll.addWidget(self.list, 1)
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.status, 1)
        ll.addLayout(row)

        self.full_title = QLabel("Select a response to read it in full")
        self.full_title.setTextFormat(Qt.TextFormat.PlainText)
        self.full_text = plain_viewer()
        self.full_text.setObjectName("rank_full_text")
        self.recent_title = QLabel("Saved text rankings")
        self.recent = QListWidget()
        self.recent.setMaximumHeight(120)
        self.recent.setToolTip("Rankings of responses saved in this project, newest first")
        undo = QPushButton("Undo selected ranking")
        undo.clicked.connect(self._on_undo_clicked)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.full_title)
        rl.addWidget(self.full_text, 1)
        rl.addWidget(self.recent_title)
        rl.addWidget(self.recent)
        rl.addWidget(undo)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([560, 480])
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(QLabel("Prompt"))
        layout.addWidget(self.prompt_text)
        layout.addWidget(splitter, 1)
        QShortcut(QKeySequence("Ctrl+S"), self, self.save, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)

    # ------------------------------------------------------------------ data
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.prompt_id = None
        if self._own_box:
            self.labeller_box.fill(project)
        self.list.clear()
        self.full_text.clear()
        self.prompt_text.clear()
        self.status.setText("")
        self.refresh_prompts()
        self.refresh_recent()

    def refresh_prompts(self) -> None:
        """Fill the prompt list: prompts with >= 2 live responses; keep the current choice."""
        keep = self.prompt_id
        self.prompt_box.clear()
        if self.project is None:
            return
        ranked = {r[0] for r in self.project.conn.execute(
            "SELECT DISTINCT prompt_id FROM rankings WHERE deleted_at IS NULL AND prompt_id IS NOT NULL")}
        rows = self.project.conn.execute(
            "SELECT p.id, p.text, count(i.id) AS k FROM prompts p JOIN items i ON i.prompt_id = p.id "
            "WHERE i.kind = 'response' AND i.deleted_at IS NULL AND p.deleted_at IS NULL "
            "GROUP BY p.id HAVING k >= 2 ORDER BY p.id").fetchall()
        for r in rows:
            mark = "✓ " if r["id"] in ranked else ""
            self.prompt_box.addItem(f"{mark}#{r['id']} · {r['k']} responses · {snippet(r['text'], 70)}", r["id"])
        if keep is not None and self.prompt_box.findData(keep) >= 0:
            self.prompt_box.setCurrentIndex(self.prompt_box.findData(keep))

    def prompt_ids(self) -> list[int]:
        return [self.prompt_box.itemData(i) for i in range(self.prompt_box.count())]

    def _on_prompt_chosen(self) -> None:
        pid = self.prompt_box.currentData()
        if pid is not None:
            self.load_prompt(pid)

    def load_first(self) -> None:
        """Show the first prompt nobody ranked yet (or the first one) if nothing is on screen."""
        if self.project is None or self.list.count():
            return
        self.refresh_prompts()
        if not self.prompt_box.count():
            self.status.setText("No prompt has two or more responses yet: generate some "
                                "(Run → New Run… → “generate”).")
            return
        for i in range(self.prompt_box.count()):
            if not self.prompt_box.itemText(i).startswith("✓"):
                break
        else:
            i = 0
        self.prompt_box.setCurrentIndex(i)
        self.load_prompt(self.prompt_box.itemData(i))

    def load_prompt(self, prompt_id: int | None) -> None:
        self.list.clear()
        self.full_text.clear()
        self.prompt_id = prompt_id
        if self.project is None or prompt_id is None:
            return
        prompt = self.project.conn.execute("SELECT text FROM prompts WHERE id=?", [prompt_id]).fetchone()
        self.prompt_text.setPlainText(prompt[0] if prompt else "")
        ids = [r[0] for r in self.project.conn.execute(
            "SELECT id FROM items WHERE kind='response' AND prompt_id=? AND deleted_at IS NULL ORDER BY id",
            [prompt_id])]
        self.rng.shuffle(ids)
        for iid in ids:
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, iid)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsDragEnabled)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsDropEnabled)
            item.setCheckState(Qt.CheckState.Unchecked)
            item.setToolTip("Tick: tied with the response above")
            self.list.addItem(item)
        self._relabel()
        if self.prompt_box.findData(prompt_id) >= 0:
            self.prompt_box.setCurrentIndex(self.prompt_box.findData(prompt_id))
        self.loaded_at = time.monotonic()
        self.status.setText(f"{len(ids)} responses to rank")
        if self.list.count():
            self.list.setCurrentRow(0)
            self.list.setFocus()

    def _relabel(self) -> None:
        if self.project is None:
            return
        for i in range(self.list.count()):
            item = self.list.item(i)
            resp = self.project.get_item(item.data(Qt.ItemDataRole.UserRole))
            head = f"Response {resp['id']}"
            if self.reveal_box.isChecked():
                head += f" · {resp['source']}" + (f" · {resp['model_id']}" if resp["model_id"] else "")
            item.setText(f"{head}\n{snippet(resp['text'])}")  # list items are drawn as plain text

    def groups(self) -> list[list[int]]:
        """The ranking on screen: groups worst -> best (an item ticked joins the group above)."""
        return ranked_groups(self.list)

    def save(self):
        """Hand the ranking on screen to the label writer; returns the write (its ``result``: the ranking id)."""
        if self.project is None or self.list.count() < 2:
            self.status.setText("Choose a prompt with at least two responses to rank.")
            return None
        groups = self.groups()
        if len(groups) < 2:
            self.status.setText("Everything is tied: a ranking needs at least two groups.")
            return None
        project, name = self.project, self.labeller_box.take_name()
        prompt_id = self.prompt_id
        response_ms = int((time.monotonic() - self.loaded_at) * 1000)
        n = sum(len(g) for g in groups)

        def write(p: Project) -> int:
            return p.add_ranking(groups, labeller_id=p.ensure_labeller(name, "human"), source="human",
                                 prompt_id=prompt_id, response_ms=response_ms)

        def done(rid: int) -> None:
            if project is not self.project:
                return
            self.status.setText(f"Saved ranking {rid}: {n} responses, {n * (n - 1) // 2} pairs.")
            self.refresh_prompts()
            self.refresh_recent()
            self.ranking_saved.emit(rid)

        self.status.setText("Saving the ranking…")
        return writer_for(project).submit(write, done, lambda text: self._on_write_failed(project, text))

    def _on_write_failed(self, project: Project, text: str) -> None:
        if project is self.project:
            self.status.setText(text)  # the ranking stays on screen: save it again when the cause is gone

    def next_prompt(self) -> None:
        i = self.prompt_box.findData(self.prompt_id)
        if 0 <= i < self.prompt_box.count() - 1:
            self.load_prompt(self.prompt_box.itemData(i + 1))

    def refresh_recent(self) -> None:
        self.recent.clear()
        if self.project is None:
            return
        rows = self.project.conn.execute(
            "SELECT r.id, r.prompt_id, l.name FROM rankings r LEFT JOIN labellers l ON l.id = r.labeller_id "
            "WHERE r.deleted_at IS NULL AND r.prompt_id IS NOT NULL ORDER BY r.id DESC LIMIT 20").fetchall()
        for r in rows:
            groups = self.project.ranking_groups(r["id"])
            order = " < ".join("=".join(str(i) for i in g) for g in groups)
            item = QListWidgetItem(f"#{r['id']} · {r['name'] or '?'} · prompt {r['prompt_id']}: {order}")
            item.setData(Qt.ItemDataRole.UserRole, r["id"])
            self.recent.addItem(item)
        self.recent_title.setText(f"Saved text rankings: {len(rows)}{' (latest 20)' if len(rows) == 20 else ''}"
                                  "  (worst < best, = tied)")

    def _on_undo_clicked(self) -> None:
        item = self.recent.currentItem() or (self.recent.item(0) if self.recent.count() else None)
        if item is None or self.project is None:
            return
        project, rid = self.project, item.data(Qt.ItemDataRole.UserRole)

        def done(_result) -> None:
            if project is not self.project:
                return
            self.status.setText(f"Ranking {rid} undone (kept as a deleted record).")
            self.refresh_prompts()
            self.refresh_recent()

        writer_for(project).submit(lambda p: p.undo_ranking(rid), done,
                                   lambda text: self._on_write_failed(project, text))

    def _on_current_changed(self, current: QListWidgetItem | None, _previous) -> None:
        if current is None or self.project is None:
            return
        resp = self.project.get_item(current.data(Qt.ItemDataRole.UserRole))
        self.full_title.setText(f"Response {resp['id']} in full")
        self.full_text.setPlainText(resp["text"] or "")
