"""Rank whole trajectories by dragging: worst at the top, best at the bottom; ties by grouping.

Tick "tied with the one above" on an item to put it in the same group as the item above it.
Selecting an item plays it on the right. "Save ranking" (Ctrl+S) stores one ranking that expands
to every K-choose-2 pair (ties as "tie"). Sources and true returns are hidden unless revealed,
since a checkpoint's step gives its quality away.
"""

from __future__ import annotations

import json
import random
import time

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.labeling.players import FramePanel, PlaybackControls, SyncedPlayback, to_pixmap
from rlhf_core.envs.storage import item_fps, load_frames, read_video
from rlhf_core.store import Project

THUMB = QSize(120, 90)


class RankingView(QWidget):
    ranking_saved = Signal(int)

    def __init__(self, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.loaded_at = 0.0
        self._frames: dict[int, object] = {}

        self.env_box = QComboBox()
        self.env_box.setMinimumWidth(160)
        self.count_box = QSpinBox()
        self.count_box.setRange(2, 30)
        self.count_box.setValue(6)
        load = QPushButton("Load trajectories")
        load.setToolTip("Pick this many trajectories of the environment at random, in random order")
        load.clicked.connect(self.load_random)
        self.reveal_box = QCheckBox("Reveal sources and true returns")
        self.reveal_box.toggled.connect(self._relabel)
        head = QHBoxLayout()
        for w in (QLabel("Environment:"), self.env_box, QLabel("How many:"), self.count_box, load):
            head.addWidget(w)
        head.addStretch(1)
        head.addWidget(self.reveal_box)

        self.list = QListWidget()
        self.list.setObjectName("ranking_list")
        self.list.setIconSize(THUMB)
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.list.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.list.setSpacing(2)
        self.list.currentItemChanged.connect(self._on_list_current_changed)
        hint = QLabel("Worst at the top → best at the bottom. Drag to reorder. A ticked box ties a "
                      "trajectory with the one above it.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #555;")
        self.save_button = QPushButton("Save ranking  (Ctrl+S)")
        self.save_button.clicked.connect(self.save)
        self.status = QLabel()
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(hint)
        ll.addWidget(self.list, 1)
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.status, 1)
        ll.addLayout(row)

        self.playback = SyncedPlayback(self)
        self.preview = FramePanel()
        self.playback.panels = [self.preview]
        self.preview_title = QLabel("Select a trajectory to play it")
        self.preview_title.setTextFormat(Qt.TextFormat.PlainText)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.preview_title)
        rl.addWidget(self.preview, 1)
        rl.addWidget(PlaybackControls(self.playback))

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([480, 700])
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(splitter, 1)
        QShortcut(QKeySequence("Ctrl+S"), self, self.save, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)

    # ------------------------------------------------------------------ data
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.list.clear()
        self._frames.clear()
        self.env_box.clear()
        if project is not None:
            counts: dict[str, int] = {}
            for t in project.items("trajectory"):
                if t["media_path"]:
                    counts[t["env_id"]] = counts.get(t["env_id"], 0) + 1
            self.env_box.addItems(sorted(counts))
            if counts:  # start with the environment that has the most trajectories
                self.env_box.setCurrentText(max(counts, key=counts.get))
        self.status.setText("")

    def load_random(self) -> None:
        if self.project is None:
            return
        env = self.env_box.currentText()
        pool = [t for t in self.project.items("trajectory") if t["env_id"] == env and t["media_path"]]
        random.shuffle(pool)
        self.load_items([t["id"] for t in pool[: self.count_box.value()]])

    def load_items(self, item_ids: list[int]) -> None:
        self.list.clear()
        for iid in item_ids:
            traj = self.project.get_item(iid)
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, iid)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsDragEnabled)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsDropEnabled)
            item.setCheckState(Qt.CheckState.Unchecked)
            item.setToolTip("Tick: tied with the trajectory above")
            mid = max(0, (traj["length"] or 0) // 2)
            thumb = read_video(self.project.abspath(traj["media_path"]), mid, mid + 1)
            if len(thumb):
                item.setIcon(QIcon(to_pixmap(thumb[0]).scaled(THUMB, Qt.AspectRatioMode.KeepAspectRatio)))
            self.list.addItem(item)
        self._relabel()
        self.loaded_at = time.monotonic()
        self.status.setText(f"{len(item_ids)} trajectories to rank")
        if self.list.count():
            self.list.setCurrentRow(0)

    def _relabel(self) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            traj = self.project.get_item(item.data(Qt.ItemDataRole.UserRole))
            text = f"Trajectory {traj['id']} · {traj['length']} steps"
            if self.reveal_box.isChecked():
                src = json.loads(traj["params_json"])
                detail = ", ".join(f"{k} {v}" for k, v in src.items() if v is not None)
                text += f"\n  true return {traj['true_return']:.1f} · {detail}"
            item.setText(text)

    def groups(self) -> list[list[int]]:
        """The ranking on screen: groups worst -> best (an item ticked joins the group above)."""
        groups: list[list[int]] = []
        for i in range(self.list.count()):
            item = self.list.item(i)
            iid = item.data(Qt.ItemDataRole.UserRole)
            if groups and item.checkState() == Qt.CheckState.Checked:
                groups[-1].append(iid)
            else:
                groups.append([iid])
        return groups

    def save(self) -> int | None:
        if self.project is None or self.list.count() < 2:
            self.status.setText("Load at least two trajectories to rank.")
            return None
        groups = self.groups()
        if len(groups) < 2:
            self.status.setText("Everything is tied: a ranking needs at least two groups.")
            return None
        name = self.settings.labeller
        rid = self.project.add_ranking(groups, labeller_id=self.project.ensure_labeller(name, "human"),
                                       source="human", response_ms=int((time.monotonic() - self.loaded_at) * 1000))
        n = sum(len(g) for g in groups)
        self.status.setText(f"Saved ranking {rid}: {n} trajectories, {n * (n - 1) // 2} pairs.")
        self.ranking_saved.emit(rid)
        return rid

    # ------------------------------------------------------------------ preview
    def _on_list_current_changed(self, current: QListWidgetItem | None, _previous) -> None:
        if current is None or self.project is None:
            return
        iid = current.data(Qt.ItemDataRole.UserRole)
        if iid not in self._frames:
            self._frames[iid] = load_frames(self.project, self.project.get_item(iid))
        traj = self.project.get_item(iid)
        self.preview_title.setText(f"Trajectory {iid} · {traj['env_id']} · {traj['length']} steps")
        self.playback.set_clips([self._frames[iid]], item_fps(self.project, traj))
        self.playback.play()
