"""Rank whole trajectories by dragging: worst at the top, best at the bottom; ties by grouping.

Tick "tied with the one above" on an item to put it in the same group as the item above it.
Selecting an item plays it on the right. "Save ranking" (Ctrl+S) stores one ranking that expands
to every K-choose-2 pair (ties as "tie"). Sources and true returns are hidden unless revealed,
since a checkpoint's step gives its quality away. The labeller is chosen above the list; the project's
labelling guidelines are beside the ranking and each ranking records their version.
"""

from __future__ import annotations

import json
import random

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
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

from app.labeling.common import LabellerBox, RankingBase
from app.labeling.frame_loader import FrameLoader
from app.labeling.guidelines import GuidelinesPane, beside
from app.labeling.players import FramePanel, PlaybackControls, SyncedPlayback, to_pixmap
from rlhf_core.envs.storage import item_fps
from rlhf_core.labelers.session import RankingSession, order_text
from rlhf_core.store import Project

THUMB = QSize(120, 90)


class RankingView(RankingBase):
    ONE, MANY = "trajectory", "trajectories"
    TOO_FEW = "Load at least two trajectories to rank."

    def __init__(self, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.session: RankingSession | None = None
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
        self.labeller_box = LabellerBox(settings)
        for w in (QLabel("Environment:"), self.env_box, QLabel("How many:"), self.count_box, load):
            head.addWidget(w)
        head.addStretch(1)
        head.addWidget(self.reveal_box)
        self.guidelines = GuidelinesPane(settings)
        self.guidelines.version_loaded.connect(self._on_guidelines_loaded)

        left, ll = self._ranking_column("ranking_list")
        who = QHBoxLayout()
        who.addWidget(QLabel("Labeller:"))
        who.addWidget(self.labeller_box, 1)
        ll.insertLayout(0, who)
        self.list.setIconSize(THUMB)
        self.list.setSpacing(2)
        self.list.currentItemChanged.connect(self._on_list_current_changed)
        self.recent = QListWidget()
        self.recent.setMaximumHeight(110)
        self.recent.setToolTip("Rankings saved in this project, newest first")
        undo = QPushButton("Undo selected ranking")
        undo.clicked.connect(self._on_undo_clicked)
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
        layout = QVBoxLayout()
        layout.addLayout(head)
        layout.addWidget(splitter, 1)
        beside(self, layout, self.guidelines)

    # ------------------------------------------------------------------ data
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.session = RankingSession(project) if project is not None else None
        self.labeller_box.fill(project)
        self.guidelines.set_project(project)
        self.list.blockSignals(True)  # clearing moves the current row: no item of the other project is played
        self.list.clear()
        self.list.blockSignals(False)
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
        if self.session is None:
            return
        rows = self.session.recent(20)
        for r in rows:
            item = QListWidgetItem(f"#{r['id']} · {r['labeller'] or '?'} · {r['k']} trajectories: "
                                   f"{order_text(r['groups'])}")
            item.setData(Qt.ItemDataRole.UserRole, r["id"])
            self.recent.addItem(item)
        waiting = sum(1 for _ in range(self.list.count()))
        self.recent_title.setText(f"Saved rankings: {len(rows)}{' (latest 20)' if len(rows) == 20 else ''}"
                                  f" · {waiting} on screen")

    def _labeller(self) -> str:
        return self.labeller_box.take_name()

    def _after_write(self) -> None:
        self.refresh_recent()

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
            self._add_entry(iid)
            mid = max(0, (traj["length"] or 0) // 2)  # the thumbnail: the middle frame, decoded in the background
            thumb = self.frames.request(self.project, traj, key=("thumb", iid), start=mid, end=mid + 1)
            if thumb is not None:
                self._set_thumb(iid, thumb)
        self._relabel()
        self.session.load(item_ids)
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
