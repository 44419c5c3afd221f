"""The "Label text" page: compare two responses, correct one, rank K of them, see labeller agreement.

Compare pairs (:class:`TextPairView`): the prompt on top, two responses to it side by side, labelled
with the same keys as the clip view — ←/1 left better · →/2 right better · ↓/= tie · B both bad ·
S skip · Z undo — plus C correct (then ←/→ picks the response to rewrite; Ctrl+Enter saves,
Esc cancels) and D word-difference highlight. Pairs come from the project's pair queue (responses
to the same prompt; "Queue pairs" adds them); each label, undo, change and correction is handed to
the label writer (``app/labeling/writer.py``) with the time since the pair appeared, and the next
pair (prepared in advance) is on screen at once; what the writer could not save (disk full,
read-only, locked too long) is said in the message line and its pair comes back.

Model output is untrusted: every response and prompt is shown as PLAIN text (read-only
``QPlainTextEdit``), never as HTML, and the word-difference highlight is drawn with extra
selections (``QTextCharFormat``) on that plain text.

A correction ("preference with correction") stores the rewrite as a new response preferred over
every sampled response to the prompt (:func:`rlhf_core.labelers.text_labels.add_correction`).

Review AI labels (RLAIF): with "Review AI labels" ticked the view walks the pairs an AI labeller
(the ``ai_labels`` job) labelled and no person has, oldest first, and shows the AI's answer, the
principle it was asked and its confidence (plain text). The same keys label: pressing the AI's
answer (or Enter) accepts it, another key overrides it; either way a HUMAN label is stored
(:func:`rlhf_core.labelers.ai_feedback.record_review`) and the AI's label stays, so AI-human agreement
can be measured. "Blind" hides the AI's answer until the person has answered (their labels then
count as independent). "Constitution…" edits the project's principles for the judge.

Review revisions (Constitutional AI's supervised stage): the AI's critiques and revisions, accepted, edited
or rejected by a person (``app/labeling/revision_review_view.py``).

The labeller chosen in the header labels the pairs they have not answered (a pair of the overlap is shown
to several labellers, each blind to the others' answers); the project's labelling guidelines are beside
the pairs and the rankings (``app/labeling/guidelines.py``) and each label records their version.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QKeyEvent, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from app.labeling.agreement_panel import AgreementPanel, format_ai_agreement
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
from app.labeling.constitution_dialog import ConstitutionDialog
from app.labeling.guidelines import GuidelinesPane, beside
from app.labeling.revision_review_view import RevisionReviewView
from app.labeling.text_rank_view import TextRankView
from app.labeling.writer import writer_for
from rlhf_core.labelers.session import Given, PairSession
from rlhf_core.store import Project
from rlhf_core.labelers.ai_feedback import ai_human_agreement
from rlhf_core.labelers.text_labels import queue_response_pairs, responses_by_prompt, word_diff

REMOVED = QColor("#ffd0cc")  # words of the left response not in the right one
ADDED = QColor("#c8f0cf")  # words of the right response not in the left one
EDITING_STYLE = "QPlainTextEdit { background: #fffbe6; border: 2px solid #d9a400; }"
AI_INFO_STYLE = "QLabel { background: #eaf2fb; border: 1px solid #9bbbe0; padding: 6px; }"
_ACCEPT_KEYS = {Qt.Key.Key_Return, Qt.Key.Key_Enter}
_VIEW_KEYS = set(KEY_OUTCOMES) | {Qt.Key.Key_Z, Qt.Key.Key_C, Qt.Key.Key_D} | _ACCEPT_KEYS
REVIEW_SETTING = "labelling/review_ai_labels"
BLIND_SETTING = "labelling/review_ai_blind"


def utf16_offsets(text: str) -> list[int] | None:
    """Map Python string indices to Qt (UTF-16) positions; ``None`` when they are the same."""
    if all(ord(c) <= 0xFFFF for c in text):
        return None
    out, pos = [], 0
    for c in text:
        out.append(pos)
        pos += 2 if ord(c) > 0xFFFF else 1
    out.append(pos)
    return out


class ResponseText(QPlainTextEdit):
    """A response shown as plain text. Read-only it passes the labelling keys to the view; while
    it is being corrected it is editable and Ctrl+Enter saves, Esc cancels."""

    save_requested = Signal()
    cancel_requested = Signal()
    clicked = Signal()  # read-only: picks this response after "Correct…"

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if self.isReadOnly():
            self.clicked.emit()
        super().mousePressEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if self.isReadOnly():
            if event.key() in _VIEW_KEYS and not event.modifiers() & Qt.KeyboardModifier.ControlModifier:
                event.ignore()  # goes up to the pair view
                return
        else:
            if event.key() == Qt.Key.Key_Escape:
                self.cancel_requested.emit()
                return
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and \
                    event.modifiers() & Qt.KeyboardModifier.ControlModifier:
                self.save_requested.emit()
                return
        super().keyPressEvent(event)

    def highlight(self, spans: list[tuple[int, int]], color: QColor) -> None:
        """Colour character ranges (Python indices into ``toPlainText()``) with extra selections."""
        text = self.toPlainText()
        offsets = utf16_offsets(text)
        fmt = QTextCharFormat()
        fmt.setBackground(color)
        selections = []
        for start, end in spans:
            if offsets is not None:
                start, end = offsets[start], offsets[end]
            sel = QTextEdit.ExtraSelection()
            cursor = QTextCursor(self.document())
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            sel.cursor = cursor
            sel.format = fmt
            selections.append(sel)
        self.setExtraSelections(selections)


class TextPairView(PairView):
    ITEMS = "Responses"
    SAY_UNDONE = True
    correction_saved = Signal(int)  # new response item id
    run_requested = Signal(str)  # a job name (the AI labeller)

    def __init__(self, settings, labeller_box: LabellerBox | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.session: PairSession | None = None  # what is on screen and given, per open project
        self.correcting: str | None = None  # "left" / "right" while a response is being rewritten
        self.choosing_side = False  # after C: waiting for ← or →
        self._cache: dict[int, dict] = {}  # queue id -> prepared pair (items, prompt, diff)
        self.reviewing = False  # walking AI labels (``current`` is then the AI comparison row)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

        own_box = self._own_box = labeller_box is None
        self.labeller_box = labeller_box or LabellerBox(settings)
        self.labeller_box.labeller_changed.connect(self._on_labeller_changed)
        self.guidelines = GuidelinesPane(settings)
        self.guidelines.version_loaded.connect(self._on_guidelines_loaded)
        self.progress_label = QLabel()
        self.progress_label.setObjectName("text_progress")
        self.diff_box = QCheckBox("Highlight word differences  (D)")
        self.diff_box.setToolTip("Colour the words of each response that the other one does not have")
        self.diff_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.diff_box.toggled.connect(self._apply_diff)
        self.per_prompt_box = QSpinBox()
        self.per_prompt_box.setRange(0, 100)
        self.per_prompt_box.setSpecialValueText("all")
        self.per_prompt_box.setPrefix("")
        self.per_prompt_box.setToolTip("Pairs to queue per prompt, chosen at random (all: every pair)")
        self.per_prompt_box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.second_opinion_box = QCheckBox("also pairs others labelled")
        self.second_opinion_box.setToolTip("Queue pairs that other labellers labelled but you did not "
                                           "(a second opinion, for labeller agreement)")
        self.second_opinion_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.queue_button = QPushButton("Queue pairs")
        self.queue_button.setToolTip("Put pairs of responses to the same prompt in the labelling queue")
        self.queue_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.queue_button.clicked.connect(self.queue_pairs)
        head = QHBoxLayout()
        if own_box:
            head.addWidget(QLabel("Labeller:"))
            head.addWidget(self.labeller_box)
            head.addSpacing(12)
        head.addWidget(self.progress_label)
        head.addStretch(1)
        head.addWidget(self.diff_box)
        head.addSpacing(12)
        head.addWidget(QLabel("Per prompt:"))
        head.addWidget(self.per_prompt_box)
        head.addWidget(self.second_opinion_box)
        head.addWidget(self.queue_button)

        # AI feedback: review mode, the constitution, starting the AI labeller, AI-human agreement
        self.review_box = QCheckBox("Review AI labels")
        self.review_box.setObjectName("review_ai_box")
        self.review_box.setToolTip("Walk the pairs an AI labeller labelled and no person has: accept its answer "
                                   "(press the same key, or Enter) or override it (another key)")
        self.review_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.blind_box = QCheckBox("Blind (hide the AI's answer until I label)")
        self.blind_box.setToolTip("Your labels then do not lean on the AI's, and count as independent in the "
                                  "AI-vs-people agreement")
        self.blind_box.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        qs = getattr(settings, "qs", None)
        if qs is not None:
            self.blind_box.setChecked(bool(qs.value(BLIND_SETTING, False, type=bool)))
        self.blind_box.toggled.connect(self._on_blind_toggled)
        self.constitution_button = QPushButton("Constitution…")
        self.constitution_button.setToolTip("Edit the principles the AI judge is asked (saved in the project)")
        self.constitution_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.constitution_button.clicked.connect(self.edit_constitution)
        self.ai_run_button = QPushButton("Run AI labeller…")
        self.ai_run_button.setToolTip("Start an ai_labels run: an AI labels the text pairs waiting in the queue")
        self.ai_run_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.ai_run_button.clicked.connect(lambda: self.run_requested.emit("ai_labels"))
        self.ai_agreement_label = QLabel()
        self.ai_agreement_label.setObjectName("ai_agreement_line")
        self.ai_agreement_label.setTextFormat(Qt.TextFormat.PlainText)
        self.ai_agreement_label.setStyleSheet("color: #333;")
        ai_row = QHBoxLayout()
        ai_row.addWidget(QLabel("AI feedback:"))
        ai_row.addWidget(self.review_box)
        ai_row.addWidget(self.blind_box)
        ai_row.addSpacing(12)
        ai_row.addWidget(self.ai_agreement_label)
        ai_row.addStretch(1)
        ai_row.addWidget(self.constitution_button)
        ai_row.addWidget(self.ai_run_button)

        # prompt and the two responses
        self.prompt_text = QPlainTextEdit()
        self.prompt_text.setObjectName("pair_prompt_text")
        self.prompt_text.setReadOnly(True)
        self.prompt_text.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.prompt_text.setMaximumHeight(64)
        self.left_title, self.right_title = QLabel("Left"), QLabel("Right")
        self.left_text, self.right_text = ResponseText(), ResponseText()
        self.left_text.setObjectName("left_response")
        self.right_text.setObjectName("right_response")
        grid = QGridLayout()
        for col, (side, title, box) in enumerate((("left", self.left_title, self.left_text),
                                                  ("right", self.right_title, self.right_text))):
            title.setAlignment(Qt.AlignmentFlag.AlignCenter)
            title.setStyleSheet("font-weight: 600;")
            title.setTextFormat(Qt.TextFormat.PlainText)
            box.save_requested.connect(self.save_correction)
            box.cancel_requested.connect(self.cancel_correction)
            box.clicked.connect(lambda s=side: self._on_response_clicked(s))
            grid.addWidget(title, 0, col)
            grid.addWidget(box, 1, col)
        grid.setRowStretch(1, 1)

        # correction bar (shown while correcting) and a line for messages
        self.correction_bar = QWidget()
        cb = QHBoxLayout(self.correction_bar)
        cb.setContentsMargins(0, 0, 0, 0)
        self.correction_label = QLabel()
        self.correction_label.setTextFormat(Qt.TextFormat.PlainText)
        self.save_correction_button = QPushButton("Save correction  (Ctrl+Enter)")
        self.save_correction_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.save_correction_button.clicked.connect(self.save_correction)
        cancel = QPushButton("Cancel  (Esc)")
        cancel.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        cancel.clicked.connect(self.cancel_correction)
        cb.addWidget(self.correction_label, 1)
        cb.addWidget(self.save_correction_button)
        cb.addWidget(cancel)
        self.correction_bar.hide()
        self.message = QLabel()
        self.message.setObjectName("text_message")
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setWordWrap(True)

        self.ai_info = QLabel()
        self.ai_info.setObjectName("ai_label_info")
        self.ai_info.setTextFormat(Qt.TextFormat.PlainText)  # the principle is user text
        self.ai_info.setWordWrap(True)
        self.ai_info.setStyleSheet(AI_INFO_STYLE)
        self.ai_info.hide()
        # an active query's reason: each reward model member's P(left better)
        self.why_label = QLabel()
        self.why_label.setObjectName("text_why_label")
        self.why_label.setTextFormat(Qt.TextFormat.PlainText)
        self.why_label.setWordWrap(True)
        self.why_label.setStyleSheet("color: #555;")
        self.why_label.setToolTip("Why this pair was asked: the query selection's reason")
        self.why_label.hide()

        buttons, self.outcome_buttons, self.undo_button = outcome_buttons(self.label, self.undo)
        self.accept_button = QPushButton("Accept AI label  (Enter)")
        self.accept_button.setObjectName("accept_ai_button")
        self.accept_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.accept_button.clicked.connect(self.accept_ai)
        self.accept_button.hide()
        buttons.insertWidget(0, self.accept_button)
        # one Correct button: it asks which side (← / →), as the C key does
        self.correct_button = QPushButton("Correct…  (C)")
        self.correct_button.setToolTip("Rewrite the left or the right response in place (then ← or →); the "
                                       "rewrite is stored as a new response preferred over every sampled "
                                       "response to the prompt")
        self.correct_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.correct_button.clicked.connect(self.choose_side)
        buttons.addWidget(self.correct_button)

        self.empty_label = QLabel()
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setTextFormat(Qt.TextFormat.PlainText)
        self.empty_label.setStyleSheet("color: #555; font-size: 14px;")

        self.recent = RecentLabels()
        self.recent.setMaximumHeight(120)
        self.recent.change_requested.connect(self.change_label)
        self.recent.undo_requested.connect(self.undo)

        self.pair_widget = QWidget()
        pl = QVBoxLayout(self.pair_widget)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(QLabel("Prompt"))
        pl.addWidget(self.prompt_text)
        pl.addLayout(grid, 1)
        pl.addWidget(self.correction_bar)
        pl.addWidget(self.ai_info)
        pl.addWidget(self.why_label)
        pl.addLayout(buttons)
        layout = QVBoxLayout()
        layout.addLayout(head)
        layout.addLayout(ai_row)
        layout.addWidget(self.pair_widget, 1)
        layout.addWidget(self.empty_label, 1)
        layout.addWidget(self.message)
        layout.addWidget(QLabel("Recent labels"))
        layout.addWidget(self.recent)
        beside(self, layout, self.guidelines)
        self.set_project(None)
        self.review_box.toggled.connect(self.set_reviewing)
        if qs is not None and bool(qs.value(REVIEW_SETTING, False, type=bool)):
            self.review_box.setChecked(True)

    # ------------------------------------------------------------------ project
    def set_project(self, project: Project | None) -> None:
        self._end_correction()
        self.project = project
        if self._own_box:
            self.labeller_box.fill(project)
        self.session = (PairSession(project, "response", labeller=self.labeller_box.name())
                        if project is not None else None)
        if self.session is not None:
            self.session.set_reviewing(self.reviewing)
        self.guidelines.set_project(project)
        self._cache.clear()
        self.message.setText("")
        self.show_next()
        self._refresh_recent()

    def queue_pairs(self):
        """Queue pairs of responses (all, or N per prompt at random) that are not labelled yet, in the
        label writer; returns the write (its ``result``: the queue ids), None while reviewing."""
        if self.project is None or self.reviewing:
            return None
        project = self.project
        per = self.per_prompt_box.value() or None
        name = self.labeller_box.take_name() if self.second_opinion_box.isChecked() else None
        seed = int(time.time()) % 1_000_000

        def write(p) -> list[int]:
            who = p.ensure_labeller(name, "human") if name is not None else None
            return queue_response_pairs(p, per_prompt=per, seed=seed, labeller_id=who)

        def done(queued: list[int]) -> None:
            if project is not self.project:
                return
            self.message.setText(f"Queued {len(queued)} pairs of responses." if queued else
                                 "No new pairs to queue: every pair of responses is labelled or waiting.")
            if self.current is None:
                self.show_next()
            else:
                self._update_progress()

        return writer_for(project).submit(write, done, lambda text: project is self.project and
                                          self.message.setText(text))

    # ------------------------------------------------------------------ AI labels
    def set_reviewing(self, on: bool) -> None:
        """Switch between the queue (people label) and reviewing AI labels."""
        on = bool(on)
        if self.review_box.isChecked() != on:
            self.review_box.setChecked(on)  # comes back here through the signal
            return
        qs = getattr(self.settings, "qs", None)
        if qs is not None:
            qs.setValue(REVIEW_SETTING, on)
        if on == self.reviewing:
            return
        self._end_correction()
        self.reviewing = on
        if self.session is not None:
            self.session.set_reviewing(on)
        self._cache.clear()  # queue ids and comparison ids would mix
        self.accept_button.setVisible(on)
        self._set_queue_controls(not on)
        self.message.setText("")
        self.show_next()
        self.setFocus()

    def _set_queue_controls(self, enabled: bool) -> None:
        """Queueing pairs is for people labelling the queue; in review mode it would add pairs the
        review does not show, so its controls are off (with a tooltip that says why)."""
        why = "" if enabled else "Off while reviewing AI labels: untick “Review AI labels” to queue pairs"
        for w in (self.per_prompt_box, self.second_opinion_box, self.queue_button):
            w.setEnabled(enabled)
        self.queue_button.setToolTip(why or "Put pairs of responses to the same prompt in the labelling queue")

    def _on_blind_toggled(self, on: bool) -> None:
        qs = getattr(self.settings, "qs", None)
        if qs is not None:
            qs.setValue(BLIND_SETTING, bool(on))
        if self.reviewing and self.current is not None:
            self._show_pair(self.current)

    def _ai_choice_side(self, pair: dict | None) -> str | None:
        if not self.reviewing or pair is None or self.blind_box.isChecked():
            return None
        return pair.get("outcome") if pair.get("outcome") in ("left", "right") else None

    def _show_ai_info(self, pair: dict | None) -> None:
        if not self.reviewing or pair is None:
            self.ai_info.hide()
            return
        self.accept_button.setEnabled(not self.blind_box.isChecked())
        self.ai_info.setText(ai_label_text(pair, hidden=self.blind_box.isChecked()))
        self.ai_info.show()

    def accept_ai(self) -> int | None:
        """Review mode: store a human label that agrees with the AI's (not in blind mode)."""
        if not self.reviewing or self.current is None or self.blind_box.isChecked():
            return None
        return self.label(self.current["outcome"])

    def edit_constitution(self) -> bool:
        """The Constitution… dialog; True if a new constitution was saved in the project folder."""
        if self.project is None:
            self.message.setText("Open a project first: its constitution is saved in the project folder.")
            return False
        dialog = ConstitutionDialog(self.project.folder, self)
        if dialog.exec() == ConstitutionDialog.DialogCode.Accepted and dialog.saved_path is not None:
            n = len(dialog.principles())
            self.message.setText(f"Constitution saved ({n} principle{'s' if n != 1 else ''}) in "
                                 f"{dialog.saved_path.name}; the next AI labeller run uses it.")
            return True
        return False

    # ------------------------------------------------------------------ pairs
    def _prepare(self, pair: dict) -> dict:
        """Everything needed to show a pair (items, prompt text, word diff); cached per queue entry."""
        if pair["id"] not in self._cache:
            left, right = self.project.get_item(pair["left_id"]), self.project.get_item(pair["right_id"])
            self._cache[pair["id"]] = {"left": left, "right": right,
                                       "prompt": self.project.prompt_text(left["prompt_id"]), "diff": None}
            while len(self._cache) > 8:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[pair["id"]]

    def show_next(self) -> None:
        """Show the first pair of responses waiting in the queue (or the empty state); in review mode
        the oldest AI label that no person has answered."""
        pending = self.session.upcoming(2) if self.session is not None else []
        self._show_pair(pending[0] if pending else None)
        if len(pending) > 1:  # prepare the next pair while this one is read
            nxt = pending[1]
            QTimer.singleShot(0, lambda: self._preload(nxt))

    def _preload(self, pair: dict) -> None:
        if self.project is not None:
            prepared = self._prepare(pair)
            if prepared["diff"] is None:
                prepared["diff"] = word_diff(prepared["left"]["text"] or "", prepared["right"]["text"] or "")

    def _show_pair(self, pair: dict | None) -> None:
        self._end_correction()
        if self.session is not None:
            self.session.current = pair
        self._update_progress()
        if pair is None:
            self._show_ai_info(None)
            self.pair_widget.hide()
            self.empty_label.setText(self._empty_text())
            self.empty_label.show()
            for box in (self.left_text, self.right_text, self.prompt_text):
                box.clear()
            return
        self.empty_label.hide()
        self.pair_widget.show()
        prepared = self._prepare(pair)
        left, right = prepared["left"], prepared["right"]
        self.prompt_text.setPlainText(prepared["prompt"])
        self.left_text.setPlainText(left["text"] or "")
        self.right_text.setPlainText(right["text"] or "")
        ai_side = self._ai_choice_side(pair)
        for title, side, item in ((self.left_title, "Left", left), (self.right_title, "Right", right)):
            words = len((item["text"] or "").split())
            mark = " · the AI prefers this one" if ai_side == side.lower() else ""
            title.setText(f"{side} · response {item['id']} · {words} word{'s' if words != 1 else ''}{mark}")
        self._show_ai_info(pair)
        why = why_text(pair.get("reason_json"))
        self.why_label.setText(why)
        self.why_label.setVisible(bool(why))
        self._apply_diff()
        self.session.show(pair)
        self.pair_shown.emit(pair["id"])

    def _empty_text(self) -> str:
        if self.project is None:
            return "No project open."
        if self.reviewing:
            return ("No AI labels are waiting for review.\n\nAn AI labeller answers the text pairs waiting in the "
                    "queue: press “Run AI labeller…” (or Run → New Run… → “ai_labels”); its labels appear here "
                    "for you to accept or override.")
        groups = responses_by_prompt(self.project)
        possible = sum(len(ids) * (len(ids) - 1) // 2 for ids in groups.values())
        if possible == 0:
            return ("No pairs of responses are waiting for a label.\n\nGenerate responses first: Run → New Run… → "
                    "“generate” (two or more samples per prompt); then press “Queue pairs”.")
        return (f"No pairs of responses are waiting for a label.\n\n{len(groups)} prompts have two or more "
                f"responses ({possible} possible pairs): press “Queue pairs” to queue the ones not labelled yet.")

    def _apply_diff(self) -> None:
        """Word-difference highlight (extra selections on the plain text; no HTML is ever built)."""
        if self.current is None or not self.diff_box.isChecked() or self.correcting:
            self.left_text.setExtraSelections([])
            self.right_text.setExtraSelections([])
            return
        prepared = self._prepare(self.current)
        a, b = self.left_text.toPlainText(), self.right_text.toPlainText()
        if prepared["diff"] is None or (prepared["left"]["text"], prepared["right"]["text"]) != (a, b):
            prepared["diff"] = word_diff(a, b)
        spans_a, spans_b = prepared["diff"]
        self.left_text.highlight(spans_a, REMOVED)
        self.right_text.highlight(spans_b, ADDED)

    def label(self, outcome: str) -> Given | None:
        """Hand the label (or, reviewing, the answer to the AI's label) to the writer; the next pair
        is shown at once."""
        if self.session is None or self.current is None or self.correcting:
            return None
        session, pair, blind = self.session, self.current, self.blind_box.isChecked()
        step = session.label(outcome, self.labeller_box.take_name(), blind=blind)
        if session.reviewing:
            verdict = "agreed with" if outcome == pair["outcome"] else "overrode"
            text = f"You {verdict} the AI on responses {pair['left_id']} vs {pair['right_id']}"
            if blind or outcome != pair["outcome"]:
                text += (f" (you: {OUTCOME_TEXT[outcome]}; AI: {OUTCOME_TEXT[pair['outcome']]})")
            self.message.setText(text + ". Z undoes it.")
        else:
            self.message.setText("")
        given = self._submit_label(step)
        self.show_next()
        return given

    def _may_show_again(self) -> bool:
        return not self.correcting  # a failed label's pair does not replace a correction being typed

    def undo(self, comparison_id: int | None = None) -> None:
        """Undo the latest label or correction given here (or ``comparison_id``; a comparison of a
        correction undoes the whole correction). An undone pair comes back on screen."""
        if self.session is not None:
            self._end_correction()
        super().undo(comparison_id)

    # ------------------------------------------------------------------ corrections
    def choose_side(self) -> None:
        """C: the next ←/1 or →/2 picks the response to correct (Esc cancels)."""
        if self.current is None or self.correcting:
            return
        self.choosing_side = True
        self.message.setText("Correct which response?  Click it, or ← / 1 the left one · → / 2 the right one · "
                             "Esc cancel")
        self.setFocus()

    def _on_response_clicked(self, side: str) -> None:
        if self.choosing_side:
            self.choosing_side = False
            self.message.setText("")
            self.start_correction(side)

    def start_correction(self, side: str) -> None:
        """Make the ``side`` response editable in place; Ctrl+Enter saves, Esc cancels."""
        if self.current is None:
            return
        self._end_correction()
        self.correcting = side
        box = self.left_text if side == "left" else self.right_text
        self._apply_diff()
        box.setReadOnly(False)
        box.setStyleSheet(EDITING_STYLE)
        box.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        box.setFocus()
        box.moveCursor(QTextCursor.MoveOperation.End)
        for b in (*self.outcome_buttons.values(), self.undo_button, self.correct_button):
            b.setEnabled(False)
        item = self._prepare(self.current)[side]
        self.correction_label.setText(f"Correcting the {side} response ({item['id']}): rewrite it as it should "
                                      "be. It will be preferred over every sampled response to this prompt.")
        self.correction_bar.show()
        self.message.setText("")

    def save_correction(self) -> Given | None:
        """Hand the rewrite to the writer; the response stays in editing until it is saved (or refused)."""
        if self.project is None or self.current is None or not self.correcting:
            return None
        if not self.save_correction_button.isEnabled():
            return None  # the previous save is on its way
        session, side = self.session, self.correcting
        box = self.left_text if side == "left" else self.right_text
        step = session.correct(self._prepare(self.current)[side]["id"], box.toPlainText(),
                               self.labeller_box.take_name())
        given = step.given

        def done(result: tuple[int, list[int]]) -> None:
            self.save_correction_button.setEnabled(True)
            if session is not self.session:
                return
            new_id, cids = result
            session.corrected(given)
            if self.correcting == side:
                self._end_correction()
            self.message.setText(f"Correction saved as response {new_id}: preferred over {len(cids)} sampled "
                                 f"response{'s' if len(cids) != 1 else ''} ({len(cids)} labels). Z undoes it.")
            self._update_progress()
            self._refresh_recent()
            self.correction_saved.emit(new_id)

        def failed(message: str) -> None:
            self.save_correction_button.setEnabled(True)
            if session is self.session:
                self.message.setText(message)  # the rewrite is still in the box: nothing is lost
                if self.correcting == side:
                    box.setFocus()

        self.save_correction_button.setEnabled(False)
        writer_for(self.project).submit(step.fn, done, failed)
        return given

    def cancel_correction(self) -> None:
        if self.correcting:
            self._end_correction()
            self.message.setText("Correction cancelled.")

    def _end_correction(self) -> None:
        """Leave correction mode; the response shows its stored text again."""
        self.choosing_side = False
        if not self.correcting:
            return
        side, self.correcting = self.correcting, None
        box = self.left_text if side == "left" else self.right_text
        box.setReadOnly(True)
        box.setStyleSheet("")
        box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        if self.current is not None:
            box.setPlainText(self._prepare(self.current)[side]["text"] or "")
        for b in (*self.outcome_buttons.values(), self.undo_button, self.correct_button):
            b.setEnabled(True)
        self.correction_bar.hide()
        self._apply_diff()
        self.setFocus()

    # ------------------------------------------------------------------ display
    def _update_progress(self) -> None:
        if self.session is None:
            self.progress_label.setText("No project open")
            self.ai_agreement_label.setText("")
            return
        self.ai_agreement_label.setText(format_ai_agreement(ai_human_agreement(self.project), short=True))
        progress = self.session.progress()
        if progress.reviewing:
            self.progress_label.setText(f"Reviewing AI labels · {progress.to_review} to review · "
                                        f"{progress.reviewed} reviewed")
            return
        text = f"Labelled {progress.labelled}" + (f" ({progress.by_ai} by AI)" if progress.by_ai else "")
        text += f" · {progress.waiting} waiting"
        if progress.corrections:
            text += f" · {progress.corrections} correction{'s' if progress.corrections != 1 else ''}"
        self.progress_label.setText(text)

    def _recent_text(self, r: dict) -> str:
        if r["correction"] is not None:
            return label_line(r, f"correction {r['right_id']} preferred to response {r['left_id']}")
        return label_line(r, f"response {r['left_id']} vs {r['right_id']}: {OUTCOME_TEXT[r['outcome']]}")

    # ------------------------------------------------------------------ keys
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        if self.choosing_side:
            self.choosing_side = False
            self.message.setText("")
            if KEY_OUTCOMES.get(key) in ("left", "right"):
                self.start_correction(KEY_OUTCOMES[key])
            return
        if key in KEY_OUTCOMES:
            self.label(KEY_OUTCOMES[key])
        elif key in _ACCEPT_KEYS and self.reviewing:
            self.accept_ai()
        elif key == Qt.Key.Key_Z:
            self.undo()
        elif key == Qt.Key.Key_C:
            self.choose_side()
        elif key == Qt.Key.Key_D:
            self.diff_box.toggle()
        else:
            super().keyPressEvent(event)


def ai_label_text(pair: dict, *, hidden: bool = False) -> str:
    """What the review panel says about an AI label (plain text; the principle is user text)."""
    meta = pair.get("meta") or {}
    who = pair.get("labeller") or "AI"
    if hidden:
        first = (f"AI label #{pair['id']} by {who}: its answer is hidden until you label (blind review). "
                 "Label as usual; afterwards you see whether you agreed.")
    else:
        first = f"AI label #{pair['id']} by {who}: {OUTCOME_TEXT.get(pair['outcome'], pair['outcome'])}"
        p_left = meta.get("p_left")
        if isinstance(p_left, (int, float)):
            first += f" · {max(p_left, 1 - p_left) * 100:.0f} % sure"
            ab, ba = meta.get("p_left_ab"), meta.get("p_left_ba")
            if isinstance(ab, (int, float)) and isinstance(ba, (int, float)):
                first += (f"\nP(left better) = {p_left:.2f}, the mean of {ab:.2f} (left shown as A) and "
                          f"{ba:.2f} (left shown as B)")
            elif isinstance(meta.get("score_left"), (int, float)) and isinstance(meta.get("score_right"), (int, float)):
                first += (f"\nP(left better) = {p_left:.2f} = sigmoid of the rewards {meta['score_left']:.2f} − "
                          f"{meta['score_right']:.2f}")
            else:
                first += f"\nP(left better) = {p_left:.2f}"
    principle = pair.get("principle")
    text = first + (f"\nPrinciple asked: {principle}" if principle else "\nNo principle (a reward model's scores).")
    if not hidden:
        text += "\nThe same key or Enter accepts the AI's answer; another key overrides it."
    return text


class TextLabelPage(QWidget):
    """The "Label text" page: tabs for pairs (with corrections), rankings, the review of AI revisions
    (Constitutional AI) and agreement; one labeller."""

    run_requested = Signal(str)  # a job to open in the New Run dialog (the AI labeller)

    def __init__(self, settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.labeller_box = LabellerBox(settings)
        self.pairs = TextPairView(settings, self.labeller_box)
        self.pairs.run_requested.connect(self.run_requested)
        self.ranking = TextRankView(settings, self.labeller_box)
        self.revisions = RevisionReviewView(settings, self.labeller_box)
        self.revisions.run_requested.connect(self.run_requested)
        self.agreement = AgreementPanel()
        self.tabs = QTabWidget()
        self.tabs.tabBar().setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.tabs.addTab(self.pairs, "Compare pairs")
        self.tabs.addTab(self.ranking, "Rank responses")
        self.tabs.addTab(self.revisions, "Review revisions")
        self.tabs.addTab(self.agreement, "Agreement")
        self.tabs.currentChanged.connect(lambda _i: self._on_tab_shown())
        head = QHBoxLayout()
        head.addWidget(QLabel("Labeller:"))
        head.addWidget(self.labeller_box)
        head.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.tabs, 1)

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.labeller_box.fill(project)
        self.pairs.set_project(project)
        self.ranking.set_project(project)
        self.revisions.set_project(project)
        self.agreement.set_project(project)

    def show_tab(self, name: str) -> None:
        self.tabs.setCurrentWidget({"pairs": self.pairs, "rank": self.ranking, "revisions": self.revisions,
                                    "agreement": self.agreement}[name])

    def label_responses(self):
        """The pairs tab with a pair on screen: when no pair of responses is waiting, the ones not labelled yet
        are queued first (as "Queue pairs" does). Returns the queueing write, or None when pairs were waiting
        (or AI labels are being reviewed)."""
        self.show_tab("pairs")
        pairs = self.pairs
        if pairs.session is None or pairs.reviewing or pairs.session.progress().waiting:
            return None
        return pairs.queue_pairs()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self._on_tab_shown()

    def refresh(self) -> None:
        """Re-read what the visible tab shows (e.g. after a generate run)."""
        self._on_tab_shown()

    def _on_tab_shown(self) -> None:
        """New responses may have been generated meanwhile: refresh what the visible tab shows."""
        if self.project is None:
            return
        page = self.tabs.currentWidget()
        if page is self.pairs:
            if self.pairs.current is None:
                self.pairs.show_next()
            else:
                self.pairs._update_progress()
            QTimer.singleShot(0, self.pairs.setFocus)
        elif page is self.ranking:
            self.ranking.refresh_prompts()
            self.ranking.load_first()
        elif page is self.revisions:  # a critique_revise run may have written revisions meanwhile
            if self.revisions.current is None:
                self.revisions.show_next()
            elif not self.revisions.editing:
                self.revisions._update_progress()
            QTimer.singleShot(0, self.revisions.setFocus)
        else:
            self.agreement.refresh()
