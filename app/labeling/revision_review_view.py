"""The "Review revisions" tab of Label text: a person accepts, edits or rejects the AI's revisions
(Constitutional AI's supervised stage, the ``critique_revise`` job).

The prompt on top; under it, side by side, the text the AI revised (the policy's response, or the previous
round's revision), the critique with the principle it was asked, and the revision. Keys as on the pair view:
Enter accepts (as it accepts an AI label there), C edits (as C corrects a response there: an edit box opens
with the revision, Ctrl+Enter saves, Esc cancels), R rejects, S skips for now, Z undoes the last review.

What is on screen and what to write are decided by :class:`rlhf_core.labelers.session.RevisionSession`; the
writes (:func:`rlhf_core.labelers.critique_revise.review_revision`) go through the label writer. Accept and
reject show the next revision at once; an edit stays in its box until it is saved. Prompts, responses,
critiques and principles are untrusted text: plain text only.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent, QTextCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.labeling.common import LabellerBox, TimedWhileVisible
from app.labeling.writer import writer_for
from app.plain import plain_label
from rlhf_core.labelers.session import Review, RevisionSession
from rlhf_core.store import Project

ACCEPT_KEYS = {Qt.Key.Key_Return, Qt.Key.Key_Enter}
#: the keys this view reads (listed in app/shortcuts.py VIEW_KEYS["text"])
VIEW_KEYS = ACCEPT_KEYS | {Qt.Key.Key_C, Qt.Key.Key_R, Qt.Key.Key_S, Qt.Key.Key_Z}
EDITING_STYLE = "QPlainTextEdit { background: #fffbe6; border: 2px solid #d9a400; }"
PRINCIPLE_STYLE = "QLabel { background: #eaf2fb; border: 1px solid #9bbbe0; padding: 4px; }"


class ReadOnlyText(QPlainTextEdit):
    """Plain text to read (and select with the mouse); the view's keys go up to the view."""

    def __init__(self, max_height: int | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        if max_height:
            self.setMaximumHeight(max_height)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() in VIEW_KEYS and not event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            event.ignore()  # goes up to the review view
            return
        super().keyPressEvent(event)


class EditBox(QPlainTextEdit):
    """The person's version of the revision: Ctrl+Enter saves, Esc cancels."""

    save_requested = Signal()
    cancel_requested = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Escape:
            self.cancel_requested.emit()
            return
        if event.key() in ACCEPT_KEYS and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.save_requested.emit()
            return
        super().keyPressEvent(event)


def _column(title, *widgets) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(title)
    for w in widgets:
        layout.addWidget(w, 1 if isinstance(w, QPlainTextEdit) else 0)
    return box


def _model_name(model_id) -> str:
    return Path(str(model_id)).name if model_id else "?"


class RevisionReviewView(TimedWhileVisible, QWidget):
    run_requested = Signal(str)  # a job to open in the New Run dialog (critique_revise)
    review_saved = Signal(int)  # the revision id

    def __init__(self, settings, labeller_box: LabellerBox | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.session: RevisionSession | None = None
        self.editing = False
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.labeller_box = labeller_box or LabellerBox(settings)

        self.progress_label = plain_label()
        self.progress_label.setObjectName("revision_progress")
        self.run_button = QPushButton("Run critique and revise…")
        self.run_button.setToolTip("Start a critique_revise run: the model critiques its responses under a principle "
                                   "of the constitution and revises them; the revisions appear here")
        self.run_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.run_button.clicked.connect(lambda: self.run_requested.emit("critique_revise"))
        head = QHBoxLayout()
        head.addWidget(self.progress_label)
        head.addStretch(1)
        head.addWidget(self.run_button)

        self.prompt_text = ReadOnlyText(64)
        self.prompt_text.setObjectName("revision_prompt_text")
        self.before_title = plain_label("Before")
        self.before_text = ReadOnlyText()
        self.before_text.setObjectName("revision_before_text")
        self.critique_title = plain_label("Critique")
        self.principle_label = plain_label()
        self.principle_label.setObjectName("revision_principle")
        self.principle_label.setWordWrap(True)
        self.principle_label.setStyleSheet(PRINCIPLE_STYLE)
        self.critique_text = ReadOnlyText()
        self.critique_text.setObjectName("revision_critique_text")
        self.revision_title = plain_label("Revision")
        self.revision_text = ReadOnlyText()
        self.revision_text.setObjectName("revision_text")
        self.edit_title = plain_label("Your edit of the revision (Ctrl+Enter saves, Esc cancels): it is stored as "
                                      "your correction of the text before, and the AI's revision is set aside.")
        self.edit_title.setWordWrap(True)
        self.edit_box = EditBox()
        self.edit_box.setObjectName("revision_edit_box")
        self.edit_box.setStyleSheet(EDITING_STYLE)
        self.edit_box.save_requested.connect(self.save_edit)
        self.edit_box.cancel_requested.connect(self.cancel_edit)
        self.save_edit_button = QPushButton("Save edit  (Ctrl+Enter)")
        self.save_edit_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.save_edit_button.clicked.connect(self.save_edit)
        cancel = QPushButton("Cancel  (Esc)")
        cancel.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        cancel.clicked.connect(self.cancel_edit)
        self.edit_bar = QWidget()
        eb = QHBoxLayout(self.edit_bar)
        eb.setContentsMargins(0, 0, 0, 0)
        eb.addStretch(1)
        eb.addWidget(self.save_edit_button)
        eb.addWidget(cancel)
        for w in (self.before_title, self.critique_title, self.revision_title):
            w.setStyleSheet("font-weight: 600;")
        columns = QSplitter(Qt.Orientation.Horizontal)
        columns.setChildrenCollapsible(False)
        columns.addWidget(_column(self.before_title, self.before_text))
        columns.addWidget(_column(self.critique_title, self.principle_label, self.critique_text))
        columns.addWidget(_column(self.revision_title, self.revision_text, self.edit_title, self.edit_box,
                                  self.edit_bar))
        columns.setSizes([400, 400, 400])
        self._set_editing_widgets(False)

        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for name, text, slot, tip in (
                ("accept", "✓ Accept revision  (Enter)", self.accept, "The revision is better than the text before: "
                 "your label says so (the AI's pairs stay)"),
                ("edit", "Edit…  (C)", self.start_edit, "Rewrite the revision; yours is stored as a correction and "
                 "the AI's is set aside"),
                ("reject", "✗ Reject  (R)", self.reject, "The revision is no better: it and its pairs are set aside "
                 "(kept as deleted records)"),
                ("skip", "Skip  (S)", self.skip, "Decide later: it comes back when nothing else is waiting"),
                ("undo", "Undo  (Z)", self.undo, "Take back the last review: that revision waits again")):
            b = QPushButton(text)
            b.setObjectName(f"revision_{name}_button")
            b.setToolTip(tip)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(lambda _=False, f=slot: f())
            if name == "undo":
                row.addSpacing(20)
            row.addWidget(b)
            self.buttons[name] = b

        self.message = plain_label()
        self.message.setObjectName("revision_message")
        self.message.setWordWrap(True)
        self.empty_label = plain_label()
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setStyleSheet("color: #555; font-size: 14px;")

        self.content = QWidget()
        cl = QVBoxLayout(self.content)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(plain_label("Prompt"))
        cl.addWidget(self.prompt_text)
        cl.addWidget(columns, 1)
        cl.addLayout(row)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.content, 1)
        layout.addWidget(self.empty_label, 1)
        layout.addWidget(self.message)
        self.set_project(None)

    # ------------------------------------------------------------------ project
    @property
    def current(self) -> dict | None:
        return self.session.current if self.session is not None else None

    def set_project(self, project: Project | None) -> None:
        self._end_edit()
        self.project = project
        self.session = RevisionSession(project) if project is not None else None
        self.message.setText("")
        self.show_next()

    def show_next(self) -> None:
        """Show the oldest revision waiting (skipped ones last), or say that none is."""
        pending = self.session.upcoming(1) if self.session is not None else []
        self._show(pending[0] if pending else None)

    def _show(self, rev: dict | None) -> None:
        self._end_edit()
        if self.session is not None:
            self.session.show(rev)
        self._update_progress()
        if rev is None:
            self.content.hide()
            self.empty_label.setText(self._empty_text())
            self.empty_label.show()
            for box in (self.prompt_text, self.before_text, self.critique_text, self.revision_text):
                box.clear()
            return
        self.empty_label.hide()
        self.content.show()
        round_ = rev.get("round") or 1
        self.prompt_text.setPlainText(rev["prompt"] or "")
        self.before_text.setPlainText(rev["revised"] or "")
        self.critique_text.setPlainText(rev.get("critique") or "")
        self.revision_text.setPlainText(rev["revision"] or "")
        what = "the policy's response" if round_ <= 1 else f"the round {round_ - 1} revision"
        self.before_title.setText(f"Before · response {rev['revised_id']} ({what})")
        self.critique_title.setText(f"Critique · round {round_} · by {_model_name(rev.get('critic_model'))}")
        self.principle_label.setText(f"Principle asked: {rev.get('principle') or '(none recorded)'}")
        self.revision_title.setText(f"Revision · response {rev['id']}")

    def _empty_text(self) -> str:
        if self.project is None:
            return "No project open."
        return ("No AI revisions are waiting for review.\n\nConstitutional AI's supervised stage writes them: the "
                "model critiques its own responses under a principle of the constitution and revises them. Press "
                "“Run critique and revise…” (or Run → New Run… → “critique_revise”); its revisions appear here "
                "for you to accept, edit or reject.")

    def _update_progress(self) -> None:
        if self.session is None:
            self.progress_label.setText("No project open")
            return
        p = self.session.progress()
        head = f"{p.position} of {p.total} to review" if p.position else "Nothing to review"
        self.progress_label.setText(f"{head} · {p.accepted} accepted · {p.edited} edited · {p.rejected} rejected")

    # ------------------------------------------------------------------ reviews
    def accept(self) -> Review | None:
        return self._decide("accept")

    def reject(self) -> Review | None:
        return self._decide("reject")

    def _decide(self, decision: str) -> Review | None:
        """Hand the review to the writer; the next revision is shown at once."""
        session, rev = self.session, self.current
        if session is None or rev is None or self.editing:
            return None
        step = session.decide(decision, self.labeller_box.take_name())
        self._submit(session, step.given, step)
        word = "Accepted" if decision == "accept" else "Rejected"
        self.message.setText(f"{word} revision {rev['id']}. Z undoes it.")
        self.show_next()
        return step.given

    def _submit(self, session: RevisionSession, review: Review, step, on_done=None, on_failed=None) -> None:
        def done(result) -> None:
            session.reviewed(review)
            if session is self.session:
                self._update_progress()
                if on_done is not None:
                    on_done(result)
                self.review_saved.emit(review.revision["id"])

        def failed(text: str) -> None:
            rev = session.failed(review)
            if session is not self.session:
                return
            if on_failed is not None:
                on_failed(text)
                return
            if not self.editing and self.project.item_is_live(rev["id"]):
                self._show(rev)  # nothing was stored: it is waiting again
            else:
                self._update_progress()
            self.message.setText(text)

        writer_for(self.project).submit(step.fn, done, failed)

    def skip(self) -> None:
        if self.session is None or self.current is None or self.editing:
            return
        rev_id = self.current["id"]
        self.session.skip()
        self.show_next()
        self.message.setText(f"Skipped revision {rev_id}: it comes back when nothing else is waiting.")

    # ------------------------------------------------------------------ editing
    def _set_editing_widgets(self, on: bool) -> None:
        for w in (self.edit_title, self.edit_box, self.edit_bar):
            w.setVisible(on)

    def start_edit(self) -> None:
        """C: the edit box opens with the AI's revision in it."""
        if self.current is None or self.editing:
            return
        self.editing = True
        self.edit_box.setPlainText(self.current["revision"] or "")
        self._set_editing_widgets(True)
        for name in ("accept", "edit", "reject", "skip", "undo"):
            self.buttons[name].setEnabled(False)
        self.message.setText("")
        self.edit_box.setFocus()
        self.edit_box.moveCursor(QTextCursor.MoveOperation.End)

    def save_edit(self) -> Review | None:
        """Hand the edit to the writer (checked first); the box stays open until it is saved or refused."""
        session, rev = self.session, self.current
        if session is None or rev is None or not self.editing or not self.save_edit_button.isEnabled():
            return None
        try:
            step = session.decide("edit", self.labeller_box.take_name(), self.edit_box.toPlainText())
        except ValueError as exc:
            self.message.setText(str(exc))  # nothing written; the text stays in the box
            return None
        review = step.given
        self.save_edit_button.setEnabled(False)

        def done(result: dict) -> None:
            self.save_edit_button.setEnabled(True)
            self._end_edit()
            self.show_next()
            self.message.setText(f"Your edit of revision {rev['id']} is saved as response {result['correction_id']}, "
                                 f"preferred over {len(result['comparison_ids'])} response"
                                 f"{'s' if len(result['comparison_ids']) != 1 else ''}. Z undoes it.")

        def failed(text: str) -> None:
            self.save_edit_button.setEnabled(True)
            self.message.setText(text)  # the edit is still in the box: nothing is lost
            if self.editing:
                self.edit_box.setFocus()

        self._submit(session, review, step, done, failed)
        return review

    def cancel_edit(self) -> None:
        if self.editing:
            self._end_edit()
            self.message.setText("Edit cancelled.")

    def _end_edit(self) -> None:
        if not self.editing:
            return
        self.editing = False
        self.save_edit_button.setEnabled(True)
        self._set_editing_widgets(False)
        for b in self.buttons.values():
            b.setEnabled(True)
        self.setFocus()

    # ------------------------------------------------------------------ undo
    def undo(self) -> None:
        """Take back the last review given here: its revision is on screen again at once."""
        session = self.session
        if session is None or self.editing:
            return
        step = session.undo_last()
        if step is None:
            self.message.setText("Nothing to undo here.")
            return
        review = step.given
        self._show(step.show)

        def done(rev_id: int | None) -> None:
            if session is self.session:
                self._update_progress()
                if rev_id is not None:
                    self.message.setText(f"Review of revision {rev_id} undone: it is waiting again.")

        def failed(text: str) -> None:
            session.undo_failed(review)  # still stored: Z can undo it again
            if session is self.session:
                if self.current is step.show:
                    self.show_next()  # it was shown again, but its review still stands
                self.message.setText(text)

        writer_for(self.project).submit(step.fn, done, failed)

    # ------------------------------------------------------------------ keys
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        if self.editing or event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().keyPressEvent(event)
        elif key in ACCEPT_KEYS:
            self.accept()
        elif key == Qt.Key.Key_C:
            self.start_edit()
        elif key == Qt.Key.Key_R:
            self.reject()
        elif key == Qt.Key.Key_S:
            self.skip()
        elif key == Qt.Key.Key_Z:
            self.undo()
        else:
            super().keyPressEvent(event)
