"""Frame-accurate clip playback: one timer drives any number of frame panels on the same index.

Frames are numpy arrays (decoded by the core) shown through QImage -> QPixmap on a QLabel; the
numpy buffer is referenced while a QImage wraps it. All panels always show the same frame index;
a shorter clip holds its last frame.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QWidget,
)

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0)


def to_pixmap(frame: np.ndarray) -> QPixmap:
    frame = np.ascontiguousarray(frame)
    h, w = frame.shape[:2]
    image = QImage(frame.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(image)  # fromImage copies, so the buffer may go afterwards


class FramePanel(QLabel):
    """Shows one frame scaled to fit, keeping the aspect ratio."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(200, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setStyleSheet("background: #222; color: #ddd;")
        self.frames: np.ndarray | None = None
        self.shown_index = -1
        self._pixmap: QPixmap | None = None

    def set_frames(self, frames: np.ndarray | None) -> None:
        self.frames = frames if frames is not None and len(frames) else None
        self.shown_index = -1
        if self.frames is None:
            self._pixmap = None
            self.setPixmap(QPixmap())
            self.setText("no video")

    def show_index(self, index: int) -> None:
        if self.frames is None:
            return
        i = min(index, len(self.frames) - 1)
        if i == self.shown_index and self._pixmap is not None:
            return
        self.shown_index = i
        self._pixmap = to_pixmap(self.frames[i])
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is not None:
            self.setPixmap(self._pixmap.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation))

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._rescale()


class SyncedPlayback(QObject):
    """The shared clock: frame index, play/pause, loop, speed; panels follow ``index_changed``."""

    index_changed = Signal(int)
    playing_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.panels: list[FramePanel] = []
        self.n_frames = 0
        self.fps = 30
        self.speed = 1.0
        self.loop = True
        self.index = 0
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)

    def set_clips(self, frames: list[np.ndarray | None], fps: int) -> None:
        for panel, f in zip(self.panels, frames):
            panel.set_frames(f)
        self.n_frames = max((len(f) for f in frames if f is not None), default=0)
        self.fps = max(1, int(fps))
        self._update_interval()
        self.seek(0)

    def _update_interval(self) -> None:
        self.timer.setInterval(max(5, int(round(1000.0 / (self.fps * self.speed)))))

    def set_speed(self, speed: float) -> None:
        self.speed = float(speed)
        self._update_interval()

    def play(self) -> None:
        if self.n_frames and not self.timer.isActive():
            if self.index >= self.n_frames - 1:
                self.seek(0)
            self.timer.start()
            self.playing_changed.emit(True)

    def pause(self) -> None:
        if self.timer.isActive():
            self.timer.stop()
            self.playing_changed.emit(False)

    def toggle(self) -> None:
        self.pause() if self.timer.isActive() else self.play()

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def seek(self, index: int) -> None:
        self.index = max(0, min(int(index), max(0, self.n_frames - 1)))
        for panel in self.panels:
            panel.show_index(self.index)
        self.index_changed.emit(self.index)

    def step(self, delta: int) -> None:
        self.pause()
        self.seek(self.index + delta)

    def _tick(self) -> None:
        nxt = self.index + 1
        if nxt >= self.n_frames:
            if self.loop:
                nxt = 0
            else:
                self.pause()
                return
        self.seek(nxt)


class PlaybackControls(QWidget):
    """Play/pause, step, scrub, loop and speed for a :class:`SyncedPlayback`."""

    def __init__(self, playback: SyncedPlayback, parent: QWidget | None = None):
        super().__init__(parent)
        self.playback = playback
        self.play_button = QPushButton("Pause")
        self.play_button.setToolTip("Play / pause (Space)")
        self.play_button.clicked.connect(playback.toggle)
        back = QPushButton("◀ 1")
        back.setToolTip("One frame back (,)")
        back.clicked.connect(lambda: playback.step(-1))
        fwd = QPushButton("1 ▶")
        fwd.setToolTip("One frame forward (.)")
        fwd.clicked.connect(lambda: playback.step(1))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("Scrub (both clips stay on the same frame)")
        self.slider.valueChanged.connect(self._on_slider_value_changed)
        self.frame_label = QLabel("0 / 0")
        self.frame_label.setMinimumWidth(70)
        self.loop_box = QCheckBox("Loop")
        self.loop_box.setChecked(playback.loop)
        self.loop_box.toggled.connect(lambda on: setattr(playback, "loop", on))
        self.speed_box = QComboBox()
        for s in SPEEDS:
            self.speed_box.addItem(f"{s:g}×", s)
        self.speed_box.setCurrentIndex(SPEEDS.index(1.0))
        self.speed_box.setToolTip("Playback speed")
        self.speed_box.currentIndexChanged.connect(lambda i: playback.set_speed(self.speed_box.itemData(i)))
        for w in (self.speed_box, self.loop_box, back, fwd, self.play_button):
            w.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys belong to the labelling view
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for w in (self.play_button, back, fwd):
            row.addWidget(w)
        row.addWidget(self.slider, 1)
        row.addWidget(self.frame_label)
        row.addWidget(self.loop_box)
        row.addWidget(self.speed_box)
        playback.index_changed.connect(self._on_playback_index_changed)
        playback.playing_changed.connect(lambda p: self.play_button.setText("Pause" if p else "Play"))

    def _on_playback_index_changed(self, index: int) -> None:
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, self.playback.n_frames - 1))
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self.frame_label.setText(f"{index + 1} / {self.playback.n_frames}")

    def _on_slider_value_changed(self, value: int) -> None:
        self.playback.pause()
        self.playback.seek(value)
