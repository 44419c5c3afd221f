"""The "Adjudicate" page: settle the pairs labellers disagree on, keyboard only.

Each open dispute (:mod:`rlhf_core.labelers.adjudication`) shows its two items side by side (clips play in
step, texts as plain text, the lower item id on the left) and every label of the pair: who gave it, what it
says for this orientation, how long it took, when, under which guidelines. The adjudicator (the name in the
box) decides with the labelling keys: ←/1 left better · →/2 right better · ↓/= tie · B both bad · S skip
(no preference: training drops the pair) · N next dispute, deciding later · Z undo the last decision ·
Space / , / . playback. A decision is a new comparison with role ``adjudication``, written by the label
writer; training prefers it over the disputed labels. If the pair's labels changed since it was shown
(a label added, undone or relabelled elsewhere) the decision is refused with a sentence, nothing written,
and the pair is shown again as it is now.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.labeling.common import KEY_OUTCOMES, OUTCOME_TEXT, LabellerBox, TimedWhileVisible, outcome_buttons
from app.labeling.pair_preview import PairPreview
from app.labeling.writer import writer_for
from app.plain import plain_label
from rlhf_core.labelers.adjudication import AdjudicationSession, Dispute
from rlhf_core.labelers.browse import KIND_NAMES
from rlhf_core.labelers.session import Given

LABEL_COLUMNS = ("Labeller", "Says", "Time taken", "Source", "Given (UTC)", "Guidelines", "Label")


class AdjudicationView(TimedWhileVisible, QWidget):
    def __init__(self, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project = None
        self.session: AdjudicationSession | None = None
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

        self.adjudicator_box = LabellerBox(settings)
        self.adjudicator_box.setToolTip("Who is adjudicating (type a new name to add one)")
        self.kind_box = QComboBox()
        for text, kind in (("all", None), ("clips", "clip"), ("text", "response"), ("trajectories", "trajectory")):
            self.kind_box.addItem(text, kind)
        self.kind_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.kind_box.currentIndexChanged.connect(lambda _i: self._new_session())
        self.progress_label = plain_label()
        self.progress_label.setObjectName("adjudication_progress")
        head = QHBoxLayout()
        head.addWidget(QLabel("Adjudicator:"))
        head.addWidget(self.adjudicator_box)
        head.addSpacing(16)
        head.addWidget(QLabel("Pairs of:"))
        head.addWidget(self.kind_box)
        head.addSpacing(16)
        head.addWidget(self.progress_label)
        head.addStretch(1)

        self.pair_title = plain_label()
        self.pair_title.setObjectName("adjudication_pair")
        self.pair_title.setStyleSheet("font-weight: 600;")
        self.labels = QTreeWidget()
        self.labels.setObjectName("adjudication_labels")
        self.labels.setColumnCount(len(LABEL_COLUMNS))
        self.labels.setHeaderLabels(list(LABEL_COLUMNS))
        self.labels.setRootIsDecorated(False)
        self.labels.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.labels.setSelectionMode(QTreeWidget.SelectionMode.NoSelection)
        self.labels.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.previous_label = plain_label()
        self.previous_label.setObjectName("adjudication_previous")
        self.previous_label.setStyleSheet("color: #8a5a00;")
        self.preview = PairPreview()
        buttons, self.outcome_buttons, self.undo_button = outcome_buttons(self.decide, self.undo)
        self.next_button = QPushButton("Next  (N)")
        self.next_button.setToolTip("Leave this pair for later")
        self.next_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.next_button.clicked.connect(lambda _=False: self.next_dispute())
        buttons.insertWidget(buttons.count() - 2, self.next_button)
        self.pair_widget = QWidget()
        pl = QVBoxLayout(self.pair_widget)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.pair_title)
        pl.addWidget(self.labels)
        pl.addWidget(self.previous_label)
        pl.addWidget(self.preview, 1)
        pl.addLayout(buttons)

        self.empty_label = plain_label()
        self.empty_label.setObjectName("adjudication_empty")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setStyleSheet("color: #555; font-size: 14px;")
        self.message = plain_label()
        self.message.setObjectName("adjudication_message")
        self.message.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.pair_widget, 1)
        layout.addWidget(self.empty_label, 1)
        layout.addWidget(self.message)
        self.set_project(None)

    # ------------------------------------------------------------------ project
    def set_project(self, project) -> None:
        self.project = project
        self.preview.set_project(project)
        self.adjudicator_box.fill(project)
        self.message.setText("")
        self._new_session()

    def _new_session(self) -> None:
        kind = self.kind_box.currentData()
        self.session = AdjudicationSession(self.project, kind) if self.project is not None else None
        self.show_next()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        if self.session is not None:  # labels may have been given or changed elsewhere meanwhile
            self.refresh()

    def refresh(self) -> None:
        """Read the disputes again; the pair on screen stays if it is still open (as it is now)."""
        if self.session is None:
            return
        key = self.current.key if self.current is not None else None
        self.session.reload()
        again = next((d for d in self.session.disputes if d.key == key), None)
        self._show(again) if again is not None else self.show_next()

    # ------------------------------------------------------------------ disputes
    @property
    def current(self) -> Dispute | None:
        return self.session.current if self.session is not None else None

    def show_next(self) -> None:
        self._show(self.session.upcoming() if self.session is not None else None)

    def _show(self, dispute: Dispute | None) -> None:
        self._update_progress()
        if self.session is None or dispute is None:
            if self.session is not None:
                self.session.show(None)
            self.pair_widget.hide()
            self.empty_label.setText(
                "No project open." if self.session is None else
                "No disagreements to settle.\n\nA pair shows up here when two or more labellers gave it different "
                "answers (Label clips / Label text with several labellers, or the overlap setting).")
            self.empty_label.show()
            self.preview.show_message("")
            return
        self.empty_label.hide()
        self.pair_widget.show()
        self.session.show(dispute)
        self.pair_title.setText(f"{KIND_NAMES.get(dispute.kind, dispute.kind).capitalize()} {dispute.left_id} (left) vs "
                                f"{dispute.right_id} (right): {len(dispute.labels)} labels")
        self.labels.clear()
        for r in dispute.labels:
            item = QTreeWidgetItem([
                r["labeller"] or "—", OUTCOME_TEXT[r["shown"]],
                "" if r["response_ms"] is None else f"{r['response_ms'] / 1000:.1f} s", r["source"],
                r["created_at"][:19].replace("T", " "),
                "" if r["guideline_version"] is None else f"v{r['guideline_version']}", str(r["id"])])
            self.labels.addTopLevelItem(item)
        rows = max(2, min(len(dispute.labels), 6))  # as tall as its labels (up to 6; more scroll)
        self.labels.setFixedHeight(self.labels.header().sizeHint().height() + rows * self.labels.sizeHintForRow(0)
                                   + 2 * self.labels.frameWidth() + 2)
        prev = dispute.previous
        self.previous_label.setText(
            "" if prev is None else f"Adjudicated before as {OUTCOME_TEXT[prev['shown']]} by {prev['labeller'] or '—'} "
            f"(label {prev['id']}); the pair's labels changed since. A new decision replaces it.")
        self.previous_label.setVisible(prev is not None)
        self.preview.show_pair(dispute.left_id, dispute.right_id)

    def _update_progress(self) -> None:
        if self.session is None:
            self.progress_label.setText("No project open")
            return
        n = self.session.open_count()
        self.progress_label.setText(f"{n} dispute{'' if n == 1 else 's'} to settle · {self.session.settled} settled")

    # ------------------------------------------------------------------ decisions
    def decide(self, outcome: str) -> Given | None:
        """Hand the decision on the pair on screen to the writer and show the next dispute at once."""
        if self.session is None or self.current is None:
            return None
        dispute = self.current
        step = self.session.decide(outcome, self.adjudicator_box.take_name())
        session = self.session

        def done(cid: int) -> None:
            session.decided(step.given, cid)
            if session is self.session:
                self.message.setText(f"Pair {dispute.left_id} vs {dispute.right_id} settled: "
                                     f"{OUTCOME_TEXT[outcome]} (label {cid}).")
                self._after_write()

        def failed(text: str) -> None:
            session.failed(step.given)
            if session is self.session:
                self.message.setText(text)
                again = next((d for d in session.disputes if d.key == dispute.key), None)
                self._show(again) if again is not None else self._after_write()

        writer_for(self.project).submit(step.fn, done, failed)
        self.message.setText("")
        self.show_next()
        return step.given

    def _after_write(self) -> None:
        if self.current is None:
            self.show_next()
        else:
            self._update_progress()

    def next_dispute(self) -> None:
        if self.session is not None and self.current is not None:
            self._show(self.session.pass_over())

    def undo(self) -> None:
        """Undo the newest decision given here: its dispute opens again."""
        if self.session is None:
            return
        step = self.session.undo_last()
        if step is None:
            self.message.setText("No decision of this session to undo.")
            return
        session = self.session

        def done(cid: int | None) -> None:
            if session is not self.session:
                return
            session.reload()
            self.message.setText("Nothing to undo: that decision was changed elsewhere." if cid is None else
                                 f"Decision {cid} undone (kept as an undone record); its pair is open again.")
            key = (step.given.pair["left_id"], step.given.pair["right_id"])
            again = next((d for d in session.disputes if d.key == key), None)
            self._show(again) if again is not None else self.show_next()

        def failed(text: str) -> None:
            session.undo_failed(step.given)
            if session is self.session:
                self.message.setText(text)

        writer_for(self.project).submit(step.fn, done, failed)

    # ------------------------------------------------------------------ keys
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt name
        key = event.key()
        if event.modifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier):
            super().keyPressEvent(event)
        elif key in KEY_OUTCOMES:
            self.decide(KEY_OUTCOMES[key])
        elif key == Qt.Key.Key_Z:
            self.undo()
        elif key == Qt.Key.Key_N:
            self.next_dispute()
        elif not self.preview.handle_key(event):
            super().keyPressEvent(event)
