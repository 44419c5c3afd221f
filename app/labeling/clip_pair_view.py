"""Clip-pair labelling: two clips side by side in synchronised playback, labelled by keyboard.

(Keys, labeller box and recent-labels list are shared with the text pair view:
``app/labeling/common.py``; the pair on screen, undo, progress and the writes are decided by a
:class:`rlhf_core.labelers.session.PairSession`.)

Keys: ←/1 left better · →/2 right better · ↓/= tie · B both bad · S skip · Z undo ·
Space play/pause · , and . one frame back/forward.

The pair comes from the project's queue (``pair_queue``); each label is handed to the label writer
(``app/labeling/writer.py``) the moment the key is pressed, with the time since the pair appeared,
and the next pair is shown at once; the recent-labels list and the counts show what the writer
committed. A label the writer could not save (disk full, read-only, locked too long) puts its pair
back on screen with a sentence saying why. A running online preference RL job that waits for labels
is named above the clips, with how many it waits for. The following pair is
decoded in advance, so the next one is on screen at once. True returns stay hidden (blind
labelling) unless "Reveal true returns after each choice" is ticked; then the recent-labels list
shows them for pairs already labelled, never for the pair on screen.

The labeller chosen in the header labels the pairs they have not answered (a pair of the overlap is
shown to several labellers, each blind to the others' answers); the project's labelling guidelines
are beside the clips (``app/labeling/guidelines.py``) and each label records their version.
"Agreement…" opens the labeller agreement on pairs of clips.
"""

from __future__ import annotations

import json

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.labeling.agreement_panel import AgreementPanel
from app.labeling.common import (
    KEY_OUTCOMES,
    OUTCOME_TEXT,
    LabellerBox,
    PairView,
    RecentLabels,
    label_line,
    outcome_buttons,
    why_text,
)
from app.labeling.frame_loader import FrameLoader
from app.labeling.guidelines import GuidelinesPane, beside
from app.labeling.players import FramePanel, PlaybackControls, SyncedPlayback
from app.labeling.reward_strip import RewardStrip
from rlhf_core import kinds
from rlhf_core.envs.storage import item_fps
from rlhf_core.labelers.session import Given, PairSession
from rlhf_core.store import Project


class ClipPairView(PairView):
    ITEMS = "Clips"

    def __init__(self, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.session: PairSession | None = None  # what is on screen and given, per open project
        self.frames = FrameLoader(self, capacity=8)  # the next pair is decoded on a worker thread
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

        # header
        self.labeller_box = LabellerBox(settings)
        self.progress_label = QLabel()
        self.progress_label.setObjectName("clip_progress")
        self.reveal_box = QCheckBox("Reveal true returns after each choice")
        self.reveal_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.reveal_box.toggled.connect(self._refresh_recent)
        head = QHBoxLayout()
        head.addWidget(QLabel("Labeller:"))
        head.addWidget(self.labeller_box)
        head.addSpacing(16)
        head.addWidget(self.progress_label)
        head.addStretch(1)
        head.addWidget(self.reveal_box)
        self.strip_box = QCheckBox("Show learned reward")
        self.strip_box.setToolTip("A strip under each clip with the newest reward model's reward per step")
        self.strip_box.setChecked(True)
        self.strip_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        head.addWidget(self.strip_box)
        self.agreement_button = QPushButton("Agreement…")
        self.agreement_button.setToolTip("How often labellers gave the same answer on the same pair of clips")
        self.agreement_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.agreement_button.clicked.connect(self.show_agreement)
        self.agreement_dialog: QDialog | None = None
        self.labeller_box.labeller_changed.connect(self._on_labeller_changed)
        self.guidelines = GuidelinesPane(settings)
        self.guidelines.version_loaded.connect(self._on_guidelines_loaded)
        # a running online preference RL job waiting for these labels (it trains on meanwhile)
        self.runs_label = QLabel()
        self.runs_label.setObjectName("clip_runs_waiting")
        self.runs_label.setTextFormat(Qt.TextFormat.PlainText)
        self.runs_label.setStyleSheet("color: #1c5d99;")
        self.runs_label.hide()

        # the two clips
        self.playback = SyncedPlayback(self)
        self.left_panel, self.right_panel = FramePanel(), FramePanel()
        self.playback.panels = [self.left_panel, self.right_panel]
        self.left_title, self.right_title = QLabel("Left"), QLabel("Right")
        for t in (self.left_title, self.right_title):
            t.setAlignment(Qt.AlignmentFlag.AlignCenter)
            t.setStyleSheet("font-weight: 600;")
            t.setTextFormat(Qt.TextFormat.PlainText)
        grid = QGridLayout()
        grid.addWidget(self.left_title, 0, 0)
        grid.addWidget(self.right_title, 0, 1)
        grid.addWidget(self.left_panel, 1, 0)
        grid.addWidget(self.right_panel, 1, 1)
        # learned reward per step under each clip (when the project has a reward model for the env)
        self.left_strip, self.right_strip = RewardStrip(), RewardStrip()
        grid.addWidget(self.left_strip, 2, 0)
        grid.addWidget(self.right_strip, 2, 1)
        # ... or, ticked with no reward model to show, a line that says why
        self.strip_note = QLabel()
        self.strip_note.setObjectName("strip_note")
        self.strip_note.setTextFormat(Qt.TextFormat.PlainText)
        self.strip_note.setWordWrap(True)
        self.strip_note.setStyleSheet("color: #555;")
        self.strip_note.hide()
        grid.addWidget(self.strip_note, 3, 0, 1, 2)
        self.strip_box.toggled.connect(self._update_strips)
        self.playback.index_changed.connect(self._on_playback_index_changed)
        self.controls = PlaybackControls(self.playback)
        self.why_label = QLabel()
        self.why_label.setTextFormat(Qt.TextFormat.PlainText)
        self.why_label.setStyleSheet("color: #555;")
        self.why_label.setToolTip("Why this pair was asked: the query selection's reason")
        self.message = QLabel()
        self.message.setObjectName("clip_message")
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setWordWrap(True)

        # outcome buttons
        buttons, self.outcome_buttons, self.undo_button = outcome_buttons(self.label, self.undo)

        self.empty_label = QLabel(
            "No clip pairs are waiting for a label.\n\nMake some with Run → New Run… → “Collect trajectories” "
            "(it cuts clips and queues pairs of them), or with “Learner checkpoints”.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)  # the guidelines pane takes room beside it
        self.empty_label.setStyleSheet("color: #555; font-size: 14px;")

        self.recent = RecentLabels()
        self.recent.change_requested.connect(self.change_label)
        self.recent.undo_requested.connect(self.undo)

        self.pair_widget = QWidget()
        pl = QVBoxLayout(self.pair_widget)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addLayout(grid, 1)
        pl.addWidget(self.why_label)
        pl.addWidget(self.controls)
        pl.addLayout(buttons)
        layout = QVBoxLayout()
        layout.addLayout(head)
        layout.addWidget(self.runs_label)
        layout.addWidget(self.pair_widget, 1)
        layout.addWidget(self.empty_label, 1)
        layout.addWidget(self.message)
        recent_head = QHBoxLayout()
        recent_head.addWidget(QLabel("Recent labels"))
        recent_head.addStretch(1)
        recent_head.addWidget(self.agreement_button)
        layout.addLayout(recent_head)
        layout.addWidget(self.recent)
        beside(self, layout, self.guidelines)
        # a running job (online preference RL) may queue pairs at any time: look while idle (the counts
        # and the line of runs waiting for labels follow the queue)
        self.poll_timer = QTimer(self)
        self.poll_timer.setInterval(1500)
        self.poll_timer.timeout.connect(self._on_poll_timer)
        self.poll_timer.start()
        self.set_project(None)

    # ------------------------------------------------------------------ project
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.labeller_box.fill(project)
        self.session = PairSession(project, "clip", labeller=self.labeller_box.name()) if project is not None else None
        self.guidelines.set_project(project)
        self.frames.clear()
        self.message.setText("")
        if self.agreement_dialog is not None:
            self.agreement_dialog.panel.set_project(project)
        self.show_next()
        self._refresh_recent()

    # ------------------------------------------------------------------ pairs
    def _frames_for(self, item_id: int):
        """The clip's frames: from the cache (preloaded), else decoded now (the pair is about to be shown)."""
        return self.frames.frames_now(self.project, self.project.get_item(item_id))

    def show_next(self) -> None:
        """Show the first pair waiting in the queue (or the empty state)."""
        pending = self.session.upcoming(2) if self.session is not None else []
        self._show_pair(pending[0] if pending else None)
        if len(pending) > 1:  # decode the next pair while this one plays
            nxt = pending[1]
            QTimer.singleShot(0, lambda: self._preload(nxt))

    def _show_pair(self, pair: dict | None) -> None:
        self.playback.pause()
        self._update_progress()
        if self.session is not None:
            self.session.current = pair
        if pair is None:
            self.pair_widget.hide()
            self.empty_label.show()
            self.playback.set_clips([None, None], 30)
            return
        self.empty_label.hide()
        self.pair_widget.show()
        left, right = self.project.get_item(pair["left_id"]), self.project.get_item(pair["right_id"])
        self.left_title.setText(f"Left · {left['env_id']} · clip {left['id']}")
        self.right_title.setText(f"Right · {right['env_id']} · clip {right['id']}")
        self.why_label.setText(why_text(pair.get("reason_json")))
        self.playback.set_clips([self._frames_for(left["id"]), self._frames_for(right["id"])],
                                item_fps(self.project, left))
        self._update_strips()
        self.playback.play()
        self.session.show(pair)
        self.pair_shown.emit(pair["id"])

    def _on_poll_timer(self) -> None:
        if self.project is None or not self.isVisible():
            return
        if self.current is None:
            self.show_next()
        else:  # a job may have queued pairs meanwhile: the count follows the queue
            self._update_progress()

    def _update_strips(self) -> None:
        """Learned reward of the pair on screen (newest reward model of the env), or hidden."""
        shown, note = False, ""
        if self.strip_box.isChecked() and self.project is not None and self.current is not None:
            from rlhf_core.rewards.scoring import item_reward_curve  # torch: not while the window is built

            curves = [item_reward_curve(self.project, self.project.get_item(self.current[k]))
                      for k in ("left_id", "right_id")]
            if all(c is not None for c in curves):
                lo = min(float(c[1].min()) for c in curves if len(c[1]))
                hi = max(float(c[1].max()) for c in curves if len(c[1]))
                for strip, (cid, values) in zip((self.left_strip, self.right_strip), curves):
                    strip.set_values(values)
                    strip.setYRange(lo, hi, padding=0.05)  # one scale for both, so they compare
                    strip.setToolTip(f"Learned reward per step (reward model checkpoint {cid}), standardised")
                shown = True
            else:
                note = no_reward_model_text(self.project, {self.project.get_item(self.current[k])["env_id"]
                                                           for k in ("left_id", "right_id")})
        self.left_strip.setVisible(shown)
        self.right_strip.setVisible(shown)
        self.strip_note.setText(note)
        self.strip_note.setVisible(bool(note))

    def _on_playback_index_changed(self, index: int) -> None:
        if not self.left_strip.isHidden():
            self.left_strip.set_index(index)
            self.right_strip.set_index(index)

    def _preload(self, pair: dict) -> None:
        """Start decoding the next pair on the worker thread, so it is ready when this one is labelled."""
        if self.project is not None:
            for key in ("left_id", "right_id"):
                self.frames.request(self.project, self.project.get_item(pair[key]))

    def label(self, outcome: str) -> Given | None:
        """Hand the label of the pair on screen to the writer and show the next pair at once."""
        if self.session is None or self.current is None:
            return None
        given = self._submit_label(self.session.label(outcome, self.labeller_box.take_name()))
        self.message.setText("")
        self.show_next()
        return given

    def show_agreement(self) -> QDialog:
        """Labeller agreement on pairs of clips, in a window of its own (refreshed each time it is opened)."""
        if self.agreement_dialog is None:
            dialog = self.agreement_dialog = QDialog(self)
            dialog.setWindowTitle("Labeller agreement")
            dialog.resize(980, 620)
            dialog.panel = AgreementPanel(dialog, kind="clip")
            QVBoxLayout(dialog).addWidget(dialog.panel)
        self.agreement_dialog.panel.set_project(self.project)
        self.agreement_dialog.show()
        self.agreement_dialog.raise_()
        return self.agreement_dialog

    # ------------------------------------------------------------------ display
    def _update_progress(self) -> None:
        if self.session is None:
            self.progress_label.setText("No project open")
            self.runs_label.hide()
            return
        progress = self.session.progress()
        self.progress_label.setText(f"Labelled {progress.labelled} · {progress.waiting} waiting")
        runs = progress.runs_waiting_text()
        self.runs_label.setText(runs)
        self.runs_label.setVisible(bool(runs))

    def _recent_text(self, r: dict) -> str:
        text = label_line(r, f"clip {r['left_id']} vs {r['right_id']}: {OUTCOME_TEXT[r['outcome']]}")
        if self.reveal_box.isChecked() and r["ra"] is not None:
            text += f"  · true returns {r['ra']:.1f} vs {r['rb']:.1f}"
        return text

    # ------------------------------------------------------------------ keys
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        if key in KEY_OUTCOMES:
            self.label(KEY_OUTCOMES[key])
        elif key == Qt.Key.Key_Z:
            self.undo()
        elif key == Qt.Key.Key_Space:
            self.playback.toggle()
        elif key == Qt.Key.Key_Comma:
            self.playback.step(-1)
        elif key == Qt.Key.Key_Period:
            self.playback.step(1)
        else:
            super().keyPressEvent(event)


def no_reward_model_text(project, env_ids: set) -> str:
    """Why "Show learned reward" shows no strip: no reward model of these clips' environment (and which
    environments the project's reward models are of, if any)."""
    envs = " or ".join(sorted(str(e) for e in env_ids))
    others = sorted({json.loads(c["meta_json"] or "{}").get("env_id") or "?" for c in project.checkpoints()
                     if c["kind"] == kinds.REWARD_ENSEMBLE})
    text = f"Show learned reward: this project has no reward model of {envs} yet"
    text += f" (its reward models are of {', '.join(others)})." if others else "."
    return text + " Train one (Run → New Run… → “Train a reward model”) to see its reward per step under each clip."
