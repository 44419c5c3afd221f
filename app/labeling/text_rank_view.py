"""Rank the K responses to one prompt by dragging: worst at the top, best at the bottom; ties by grouping.

The same convention as the trajectory ranking view: tick "tied with the one above" on a response to
put it in the same group as the response above it. "Save ranking" (Ctrl+S) stores ONE ranking
(with the prompt) that expands to all K-choose-2 pairs, kept together by their ranking id
(InstructGPT: K = 4-9 responses per prompt, all pairs in one batch). Responses are shown in a
random order, as plain text (model output is untrusted), without their model or source. The project's
labelling guidelines are beside the ranking and each ranking records their version.
"""

from __future__ import annotations

import random

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
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

from app.labeling.common import LabellerBox, RankingBase
from app.labeling.guidelines import GuidelinesPane, beside
from rlhf_core.labelers.session import RankingSession, order_text
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


class TextRankView(RankingBase):
    ONE, MANY = "response", "responses"
    TOO_FEW = "Choose a prompt with at least two responses to rank."

    def __init__(self, settings, labeller_box: LabellerBox | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.session: RankingSession | None = None
        self.prompt_id: int | None = None
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

        left, _ = self._ranking_column("text_ranking_list")
        self.list.setWordWrap(True)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setSpacing(3)
        self.list.setAlternatingRowColors(True)
        self.list.currentItemChanged.connect(self._on_current_changed)
        self.status.setWordWrap(True)

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
        layout = QVBoxLayout()
        layout.addLayout(head)
        layout.addWidget(QLabel("Prompt"))
        layout.addWidget(self.prompt_text)
        layout.addWidget(splitter, 1)
        self.guidelines = GuidelinesPane(settings)
        self.guidelines.version_loaded.connect(self._on_guidelines_loaded)
        beside(self, layout, self.guidelines)

    # ------------------------------------------------------------------ data
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.session = RankingSession(project) if project is not None else None
        self.guidelines.set_project(project)
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
        ranked = self.project.ranked_prompt_ids()
        for r in self.project.prompts_with_responses(2):
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
        self.prompt_text.setPlainText(self.project.prompt_text(prompt_id))
        ids = self.session.load_prompt(prompt_id, self.rng)
        for iid in ids:
            self._add_entry(iid)
        self._relabel()
        if self.prompt_box.findData(prompt_id) >= 0:
            self.prompt_box.setCurrentIndex(self.prompt_box.findData(prompt_id))
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

    def _labeller(self) -> str:
        return self.labeller_box.take_name()

    def _after_write(self) -> None:
        self.refresh_prompts()
        self.refresh_recent()

    def next_prompt(self) -> None:
        i = self.prompt_box.findData(self.prompt_id)
        if 0 <= i < self.prompt_box.count() - 1:
            self.load_prompt(self.prompt_box.itemData(i + 1))

    def refresh_recent(self) -> None:
        self.recent.clear()
        if self.session is None:
            return
        rows = self.session.recent(20, prompts_only=True)
        for r in rows:
            item = QListWidgetItem(f"#{r['id']} · {r['labeller'] or '?'} · prompt {r['prompt_id']}: "
                                   f"{order_text(r['groups'])}")
            item.setData(Qt.ItemDataRole.UserRole, r["id"])
            self.recent.addItem(item)
        self.recent_title.setText(f"Saved text rankings: {len(rows)}{' (latest 20)' if len(rows) == 20 else ''}"
                                  "  (worst < best, = tied)")

    def _on_current_changed(self, current: QListWidgetItem | None, _previous) -> None:
        if current is None or self.project is None:
            return
        resp = self.project.get_item(current.data(Qt.ItemDataRole.UserRole))
        self.full_title.setText(f"Response {resp['id']} in full")
        self.full_text.setPlainText(resp["text"] or "")
