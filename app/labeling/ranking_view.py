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

from app.labeling.common import ranked_groups
from app.labeling.frame_loader import FrameLoader
from app.labeling.players import FramePanel, PlaybackControls, SyncedPlayback, to_pixmap
from app.labeling.writer import writer_for
from rlhf_core.envs.storage import item_fps
from rlhf_core.store import Project

THUMB = QSize(120, 90)


class RankingView(QWidget):
    ranking_saved = Signal(int)

    def __init__(self, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.loaded_at = 0.0
        self.frames = FrameLoader(self)  # videos are decoded on a worker thread
        self.frames.loaded.connect(self._on_frames_loaded)
        self.frames.failed.connect(self._on_frames_failed)

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
        self.labeller_label = QLabel()
        self.labeller_label.setTextFormat(Qt.TextFormat.PlainText)
        for w in (QLabel("Environment:"), self.env_box, QLabel("How many:"), self.count_box, load):
            head.addWidget(w)
        head.addStretch(1)
        head.addWidget(self.labeller_label)
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
        self.recent = QListWidget()
        self.recent.setMaximumHeight(110)
        self.recent.setToolTip("Rankings saved in this project, newest first")
        undo = QPushButton("Undo selected ranking")
        undo.clicked.connect(self._on_undo_clicked)
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
        self.recent_title = QLabel("Saved rankings")
        ll.addWidget(self.recent_title)
        ll.addWidget(self.recent)
        ll.addWidget(undo)

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
        self.frames.clear()
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
        self.refresh_recent()

    def refresh_recent(self) -> None:
        self.recent.clear()
        self.labeller_label.setText(f"Labeller: {self.settings.labeller}")
        if self.project is None:
            return
        rows = self.project.conn.execute(
            "SELECT r.id, r.created_at, l.name, count(e.item_id) AS k FROM rankings r "
            "LEFT JOIN labellers l ON l.id = r.labeller_id JOIN ranking_entries e ON e.ranking_id = r.id "
            "WHERE r.deleted_at IS NULL GROUP BY r.id ORDER BY r.id DESC LIMIT 20").fetchall()
        for r in rows:
            groups = self.project.ranking_groups(r["id"])
            order = " < ".join("=".join(str(i) for i in g) for g in groups)
            item = QListWidgetItem(f"#{r['id']} · {r['name'] or '?'} · {r['k']} trajectories: {order}")
            item.setData(Qt.ItemDataRole.UserRole, r["id"])
            self.recent.addItem(item)
        waiting = sum(1 for _ in range(self.list.count()))
        self.recent_title.setText(f"Saved rankings: {len(rows)}{' (latest 20)' if len(rows) == 20 else ''}"
                                  f" · {waiting} on screen")

    def _on_undo_clicked(self) -> None:
        item = self.recent.currentItem() or (self.recent.item(0) if self.recent.count() else None)
        if item is None or self.project is None:
            return
        project, rid = self.project, item.data(Qt.ItemDataRole.UserRole)

        def done(_result) -> None:
            if project is not self.project:
                return
            self.status.setText(f"Ranking {rid} undone (kept as a deleted record).")
            self.refresh_recent()

        writer_for(project).submit(lambda p: p.undo_ranking(rid), done,
                                   lambda text: self._on_write_failed(project, text))

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
            self.list.addItem(item)
            mid = max(0, (traj["length"] or 0) // 2)  # the thumbnail: the middle frame, decoded in the background
            thumb = self.frames.request(self.project, traj, key=("thumb", iid), start=mid, end=mid + 1)
            if thumb is not None:
                self._set_thumb(iid, thumb)
        self._relabel()
        self.loaded_at = time.monotonic()
        self.status.setText(f"{len(item_ids)} trajectories to rank")
        self.refresh_recent()  # its title counts the trajectories on screen
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
        return ranked_groups(self.list)

    def save(self):
        """Hand the ranking on screen to the label writer; returns the write (its ``result``: the ranking id)."""
        if self.project is None or self.list.count() < 2:
            self.status.setText("Load at least two trajectories to rank.")
            return None
        groups = self.groups()
        if len(groups) < 2:
            self.status.setText("Everything is tied: a ranking needs at least two groups.")
            return None
        project, name = self.project, self.settings.labeller
        response_ms = int((time.monotonic() - self.loaded_at) * 1000)
        n = sum(len(g) for g in groups)

        def write(p: Project) -> int:
            return p.add_ranking(groups, labeller_id=p.ensure_labeller(name, "human"), source="human",
                                 response_ms=response_ms)

        def done(rid: int) -> None:
            if project is not self.project:
                return
            self.status.setText(f"Saved ranking {rid}: {n} trajectories, {n * (n - 1) // 2} pairs.")
            self.refresh_recent()
            self.ranking_saved.emit(rid)

        self.status.setText("Saving the ranking…")
        return writer_for(project).submit(write, done, lambda text: self._on_write_failed(project, text))

    def _on_write_failed(self, project: Project, text: str) -> None:
        if project is self.project:
            self.status.setText(text)  # the ranking stays on screen: save it again when the cause is gone

    def _on_list_current_changed(self, current: QListWidgetItem | None, _previous) -> None:
        if current is None or self.project is None:
            return
        iid = current.data(Qt.ItemDataRole.UserRole)
        traj = self.project.get_item(iid)
        frames = self.frames.request(self.project, traj)
        if frames is None:  # decoding: the panel shows it when it arrives (if still selected)
            self.playback.pause()
            self.playback.set_clips([None], 30)
            self.preview.setText("decoding…")
            self.preview_title.setText(f"Trajectory {iid} · decoding the video…")
            return
        self._play(traj, frames)

    def _play(self, traj: dict, frames) -> None:
        self.preview_title.setText(f"Trajectory {traj['id']} · {traj['env_id']} · {traj['length']} steps")
        self.playback.set_clips([frames], item_fps(self.project, traj))
        self.playback.play()

    def _list_item(self, iid: int) -> QListWidgetItem | None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == iid:
                return self.list.item(i)
        return None

    def _set_thumb(self, iid: int, thumb) -> None:
        item = self._list_item(iid)
        if item is not None and len(thumb):
            item.setIcon(QIcon(to_pixmap(thumb[0]).scaled(THUMB, Qt.AspectRatioMode.KeepAspectRatio)))

    def _on_frames_loaded(self, key, frames) -> None:
        if self.project is None:
            return
        if isinstance(key, tuple):  # ("thumb", item id)
            self._set_thumb(key[1], frames)
            return
        current = self.list.currentItem()
        if current is not None and current.data(Qt.ItemDataRole.UserRole) == key:
            self._play(self.project.get_item(key), frames)

    def _on_frames_failed(self, key, message: str) -> None:
        iid = key[1] if isinstance(key, tuple) else key
        self.status.setText(f"Could not decode the video of trajectory {iid}: {message}")
        current = self.list.currentItem()
        if key == iid and current is not None and current.data(Qt.ItemDataRole.UserRole) == iid:
            self.preview.setText("could not decode the video")  # not "decoding…" for ever
            self.preview_title.setText(f"Trajectory {iid} · the video could not be decoded")
