"""Two labelled items side by side, read-only, for the label browser and the adjudication view: clips (and
trajectories) play in step on the labelling view's players, responses show as PLAIN text under their prompt.

Videos are decoded on the frame loader's worker thread (a browser row followed with the arrow keys never
waits on a decode in the GUI thread); the pair plays once both are in. The panels never take the keyboard
focus: the owning view reads the keys and calls :meth:`PairPreview.handle_key` for playback keys.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QGridLayout,
    QLabel,
    QPlainTextEdit,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.labeling.frame_loader import FrameLoader
from app.labeling.players import FramePanel, PlaybackControls, SyncedPlayback
from app.plain import plain_label
from rlhf_core.envs.storage import item_fps

PLAYBACK_KEYS = {Qt.Key.Key_Space, Qt.Key.Key_Comma, Qt.Key.Key_Period}


def _read_only_text() -> QPlainTextEdit:
    box = QPlainTextEdit()
    box.setReadOnly(True)
    box.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the view keeps the keys; the wheel still scrolls
    box.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
    return box


class PairPreview(QWidget):
    """Shows one pair of items (``show_pair``) or a sentence (``show_message``)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project = None
        self.pair: tuple[int, int] | None = None
        self.frames = FrameLoader(self, capacity=8)
        self.frames.loaded.connect(self._on_frames_loaded)
        self.frames.failed.connect(self._on_frames_failed)
        self._waiting: tuple[int, int] | None = None  # item ids whose frames are being decoded
        self._fps = 30

        self.message = QLabel()
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #555;")

        clips = QWidget()
        self.playback = SyncedPlayback(self)
        self.left_panel, self.right_panel = FramePanel(), FramePanel()
        self.playback.panels = [self.left_panel, self.right_panel]
        self.left_title, self.right_title = plain_label("Left"), plain_label("Right")
        for t in (self.left_title, self.right_title):
            t.setAlignment(Qt.AlignmentFlag.AlignCenter)
            t.setStyleSheet("font-weight: 600;")
        grid = QGridLayout()
        grid.addWidget(self.left_title, 0, 0)
        grid.addWidget(self.right_title, 0, 1)
        grid.addWidget(self.left_panel, 1, 0)
        grid.addWidget(self.right_panel, 1, 1)
        self.controls = PlaybackControls(self.playback)
        cl = QVBoxLayout(clips)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addLayout(grid, 1)
        cl.addWidget(self.controls)

        texts = QWidget()
        self.prompt = _read_only_text()
        self.prompt.setMaximumHeight(80)
        self.left_text, self.right_text = _read_only_text(), _read_only_text()
        self.left_text_title, self.right_text_title = plain_label("Left"), plain_label("Right")
        for t in (self.left_text_title, self.right_text_title):
            t.setStyleSheet("font-weight: 600;")
        tg = QGridLayout(texts)
        tg.setContentsMargins(0, 0, 0, 0)
        tg.addWidget(plain_label("Prompt"), 0, 0, 1, 2)
        tg.addWidget(self.prompt, 1, 0, 1, 2)
        tg.addWidget(self.left_text_title, 2, 0)
        tg.addWidget(self.right_text_title, 2, 1)
        tg.addWidget(self.left_text, 3, 0)
        tg.addWidget(self.right_text, 3, 1)
        tg.setRowStretch(3, 1)

        self.stack = QStackedWidget()
        self.stack.addWidget(self.message)
        self.stack.addWidget(clips)
        self.stack.addWidget(texts)
        self.clips_widget, self.texts_widget = clips, texts
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)
        self.show_message("")

    def set_project(self, project) -> None:
        self.project = project
        self.frames.clear()
        self.show_message("")

    def show_message(self, text: str) -> None:
        self.pair = None
        self._waiting = None
        self.playback.pause()
        self.playback.set_clips([None, None], 30)
        self.message.setText(text)
        self.stack.setCurrentWidget(self.message)

    def show_pair(self, left_id: int, right_id: int, titles: tuple[str, str] = ("Left", "Right")) -> None:
        """Show items ``left_id`` and ``right_id`` (their kind decides how) under ``titles``."""
        if self.project is None:
            return
        left, right = self.project.get_item(left_id), self.project.get_item(right_id)
        if left is None or right is None:
            self.show_message(f"Item {left_id if left is None else right_id} is not in this project.")
            return
        self.pair = (left_id, right_id)
        if left["kind"] == "response":
            self._waiting = None
            self.playback.pause()
            self.prompt.setPlainText(self.project.prompt_text(left["prompt_id"]))
            self.left_text_title.setText(f"{titles[0]} · response {left_id}")
            self.right_text_title.setText(f"{titles[1]} · response {right_id}")
            self.left_text.setPlainText(left["text"] or "")
            self.right_text.setPlainText(right["text"] or "")
            self.stack.setCurrentWidget(self.texts_widget)
            return
        self.left_title.setText(f"{titles[0]} · {left['env_id']} · {left['kind']} {left_id}")
        self.right_title.setText(f"{titles[1]} · {right['env_id']} · {right['kind']} {right_id}")
        self._fps = item_fps(self.project, left)
        self.stack.setCurrentWidget(self.clips_widget)
        got = [self.frames.request(self.project, item) for item in (left, right)]
        if all(f is not None for f in got):
            self._play(got)
        else:
            self._waiting = (left_id, right_id)
            self.playback.pause()
            self.playback.set_clips([None, None], self._fps)
            for panel in (self.left_panel, self.right_panel):
                panel.setText("loading…")

    def _play(self, frames) -> None:
        self._waiting = None
        self.playback.set_clips(list(frames), self._fps)
        self.playback.play()

    def _on_frames_loaded(self, key, _frames) -> None:
        if self._waiting is None or key not in self._waiting:
            return
        got = [self.frames.cached(i) for i in self._waiting]
        if all(f is not None for f in got):
            self._play(got)

    def _on_frames_failed(self, key, message: str) -> None:
        if self._waiting is not None and key in self._waiting:
            self.show_message(f"The video of item {key} could not be read: {message}")

    @property
    def playing(self) -> bool:
        return self.playback.playing

    def handle_key(self, event: QKeyEvent) -> bool:
        """Space plays or pauses, ``,`` and ``.`` step one frame; True if the key was one of them."""
        key = event.key()
        if key not in PLAYBACK_KEYS or self.stack.currentWidget() is not self.clips_widget:
            return False
        if key == Qt.Key.Key_Space:
            self.playback.toggle()
        else:
            self.playback.step(-1 if key == Qt.Key.Key_Comma else 1)
        return True
