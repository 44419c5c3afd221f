"""Record a demonstration at the keyboard (classic control and Box2D), saved like any trajectory.

Hold the arrow keys; the environment steps on a timer at its own frame rate times the chosen speed.
The episode is saved when it ends (or on "Stop and save"); "Discard" drops it.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget

from app.labeling.players import FramePanel
from rlhf_core.sources.keyboard import KEYMAPS, HumanDemo, supported_envs
from rlhf_core.envs.storage import save_trajectory
from rlhf_core.store import Project

KEY_NAMES = {Qt.Key.Key_Left: "left", Qt.Key.Key_Right: "right", Qt.Key.Key_Up: "up", Qt.Key.Key_Down: "down"}
SPEEDS = (0.25, 0.5, 1.0, 1.5, 2.0)


class DemoRecorderView(QWidget):
    demo_saved = Signal(int)

    def __init__(self, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.demo: HumanDemo | None = None
        self.held: set[str] = set()
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.env_box = QComboBox()
        self.env_box.addItems(supported_envs())
        self.env_box.setCurrentText("CartPole-v1")
        self.env_box.currentTextChanged.connect(self._on_env_box_changed)
        self.speed_box = QComboBox()
        for s in SPEEDS:
            self.speed_box.addItem(f"{s:g}×", s)
        self.speed_box.setCurrentIndex(SPEEDS.index(0.5))
        self.speed_box.setToolTip("Slower is easier: the env steps at its frame rate × this")
        self.speed_box.currentIndexChanged.connect(self._update_interval)
        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, 1_000_000)
        self.start_button = QPushButton("Start (Enter)")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop and save")
        self.stop_button.clicked.connect(self.stop_and_save)
        self.discard_button = QPushButton("Discard")
        self.discard_button.clicked.connect(self.discard)
        for w in (self.env_box, self.speed_box, self.seed_box, self.start_button, self.stop_button, self.discard_button):
            w.setFocusPolicy(Qt.FocusPolicy.ClickFocus if w in (self.env_box, self.seed_box) else Qt.FocusPolicy.NoFocus)
        head = QHBoxLayout()
        for w in (QLabel("Environment:"), self.env_box, QLabel("Speed:"), self.speed_box, QLabel("Seed:"),
                  self.seed_box, self.start_button, self.stop_button, self.discard_button):
            head.addWidget(w)
        head.addStretch(1)
        self.keys_label = QLabel()
        self.keys_label.setStyleSheet("color: #555;")
        self.status = QLabel("Press Start, then hold the arrow keys.")
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.panel = FramePanel()
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.keys_label)
        layout.addWidget(self.panel, 1)
        layout.addWidget(self.status)
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self.tick)
        self._on_env_box_changed(self.env_box.currentText())
        self._update_buttons()

    def set_project(self, project: Project | None) -> None:
        self.discard()
        self.project = project

    def _on_env_box_changed(self, env_id: str) -> None:
        km = KEYMAPS.get(env_id)
        self.keys_label.setText(f"Keys: {km.help}" if km else "")

    def _update_interval(self) -> None:
        if self.demo is not None:
            speed = self.speed_box.currentData()
            self.timer.setInterval(max(5, int(1000 / (self.demo.fps * speed))))

    def _update_buttons(self) -> None:
        recording = self.demo is not None
        self.start_button.setEnabled(not recording and self.project is not None)
        self.stop_button.setEnabled(recording)
        self.discard_button.setEnabled(recording)
        self.env_box.setEnabled(not recording)

    def start(self) -> None:
        if self.project is None or self.demo is not None:
            return
        self.demo = HumanDemo(self.env_box.currentText(), seed=self.seed_box.value(), labeller=self.settings.labeller)
        self.panel.set_frames(self.demo.frames[-1][None])
        self.panel.show_index(0)
        self._update_interval()
        self.timer.start()
        self.setFocus()
        self.status.setText("Recording… the episode is saved when it ends.")
        self._update_buttons()

    def tick(self) -> None:
        if self.demo is None:
            return
        frame = self.demo.step(set(self.held))
        self.panel.set_frames(frame[None])
        self.panel.show_index(0)
        self.status.setText(f"Recording · step {len(self.demo.rewards)}")
        if self.demo.done:
            self.stop_and_save()

    def stop_and_save(self) -> int | None:
        if self.demo is None:
            return None
        self.timer.stop()
        demo, self.demo = self.demo, None
        item_id = None
        if demo.rewards:
            item_id = save_trajectory(self.project, demo.trajectory())
            self.status.setText(f"Saved demonstration as trajectory {item_id} ({len(demo.rewards)} steps).")
            self.demo_saved.emit(item_id)
            self.seed_box.setValue(self.seed_box.value() + 1)
        else:
            self.status.setText("Nothing recorded.")
        demo.close()
        self._update_buttons()
        return item_id

    def discard(self) -> None:
        self.timer.stop()
        if self.demo is not None:
            self.demo.close()
            self.demo = None
            self.status.setText("Discarded.")
        self._update_buttons()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() in KEY_NAMES and not event.isAutoRepeat():
            self.held.add(KEY_NAMES[event.key()])
        elif event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.start()
        else:
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() in KEY_NAMES and not event.isAutoRepeat():
            self.held.discard(KEY_NAMES[event.key()])
        else:
            super().keyReleaseEvent(event)
