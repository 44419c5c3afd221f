"""The labelling guidelines beside every labelling view: a collapsible pane with the project's guidelines
(Markdown: what "better" means, examples, edge cases) and the dialog that edits them and the overlap.

Saving makes a new version (older ones are kept); each label records the version shown beside it
(the pane tells its view, the view tells its session). The text is project text, so untrusted: it is
rendered by Qt's Markdown reader without HTML, and then defused: links become plain text (nothing to
click, nothing opened) and images become a plain "[image: …]" note (nothing is loaded, local or remote).
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QPainter, QTextCharFormat, QTextCursor, QTextDocument
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.labeling.writer import writer_for
from rlhf_core.store import Project
from rlhf_core.store.project import MAX_OVERLAP_ANSWERS

OPEN_SETTING = "labelling/guidelines_open"
PANE_WIDTH, PANE_MIN_WIDTH = 320, 240  # open: 320 px where the window has room, never under 240
MARKDOWN = QTextDocument.MarkdownFeature.MarkdownDialectGitHub | QTextDocument.MarkdownFeature.MarkdownNoHTML
EMPTY_TEXT = ("No guidelines yet. Press “Edit…” to write what “better” means for this project, with examples "
              "and edge cases; everyone labelling sees them here.")
TEMPLATE = """# What "better" means

- 

## Examples

- 

## Edge cases

- When both are equally good (or bad), choose **tie**; when neither is acceptable, **both bad**.
"""


def defuse(doc: QTextDocument) -> None:
    """Make a rendered document inert: links become their text followed by the target as plain text,
    images a plain ``[image: target]`` note (never loaded)."""
    edits: list[tuple[str, int, int, str, QTextCharFormat]] = []
    block = doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            frag = it.fragment()
            if frag.isValid():
                fmt = frag.charFormat()
                if fmt.isImageFormat():
                    edits.append(("image", frag.position(), frag.length(), fmt.toImageFormat().name(), fmt))
                elif fmt.isAnchor() or fmt.anchorHref():
                    edits.append(("link", frag.position(), frag.length(), fmt.anchorHref(), fmt))
            it += 1
        block = block.next()
    cursor = QTextCursor(doc)
    for kind, pos, length, target, fmt in reversed(edits):
        cursor.setPosition(pos)
        cursor.setPosition(pos + length, QTextCursor.MoveMode.KeepAnchor)
        plain = QTextCharFormat()
        plain.setFont(fmt.font())
        if kind == "image":
            cursor.insertText(f"[image: {target}]", plain)
        else:
            text = cursor.selectedText()
            cursor.insertText(text if not target or target == text else f"{text} ({target})", plain)


class SafeMarkdownView(QTextBrowser):
    """Markdown shown read-only, with nothing to follow or load (see :func:`defuse`)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the labelling keys stay with the view
        self.resources_asked: list[str] = []  # what the document asked to load (never given)

    def set_markdown(self, text: str) -> None:
        self.document().setMarkdown(text or "", MARKDOWN)
        defuse(self.document())

    def loadResource(self, kind: int, name):  # noqa: N802 - Qt name
        self.resources_asked.append(name.toString())
        return None


class VerticalButton(QPushButton):
    """A narrow button whose text runs top to bottom: the collapsed pane."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        size = super().sizeHint()
        return QSize(size.height(), size.width() + 16)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt name
        return self.sizeHint()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        text = self.text()
        self.setText("")
        super().paintEvent(event)  # the button's frame without text
        self.setText(text)
        painter = QPainter(self)
        painter.translate(self.width(), 0)
        painter.rotate(90)
        painter.drawText(0, 0, self.height(), self.width(), Qt.AlignmentFlag.AlignCenter, text)
        painter.end()


class GuidelinesPane(QFrame):
    """The project's labelling guidelines beside a labelling view; ``version_loaded`` tells the view which
    version is shown (None: none), so that the labels given there record it."""

    version_loaded = Signal(object)  # int | None

    def __init__(self, settings=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.version: int | None = None
        self.setObjectName("guidelines_pane")
        self.setFrameShape(QFrame.Shape.StyledPanel)

        self.title = QLabel("Guidelines")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.title.setStyleSheet("font-weight: 600;")
        self.edit_button = QPushButton("Edit…")
        self.edit_button.setToolTip("Edit the guidelines (saving makes a new version) and the overlap between "
                                    "labellers")
        self.edit_button.clicked.connect(self.edit)
        self.hide_button = QPushButton("▸")
        self.hide_button.setToolTip("Hide the guidelines")
        self.hide_button.setFixedWidth(28)
        self.hide_button.clicked.connect(lambda: self.set_open(False))
        self.view = SafeMarkdownView()
        self.view.setObjectName("guidelines_text")
        self.note = QLabel()
        self.note.setTextFormat(Qt.TextFormat.PlainText)
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #555;")
        self.body = QWidget()
        bl = QVBoxLayout(self.body)
        bl.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.edit_button)
        head.addWidget(self.hide_button)
        bl.addLayout(head)
        bl.addWidget(self.view, 1)
        bl.addWidget(self.note)
        self.show_button = VerticalButton("Guidelines  ▾")
        self.show_button.setObjectName("guidelines_show")
        self.show_button.setToolTip("Show the labelling guidelines")
        self.show_button.clicked.connect(lambda: self.set_open(True))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.body, 1)
        layout.addWidget(self.show_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addStretch(0)
        for b in (self.edit_button, self.hide_button, self.show_button):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self._apply_open(self._remembered_open())
        self.set_project(None)

    # ------------------------------------------------------------------ open / collapsed
    def _remembered_open(self) -> bool:
        qs = getattr(self.settings, "qs", None)
        return True if qs is None else bool(qs.value(OPEN_SETTING, True, type=bool))

    def is_open(self) -> bool:
        return not self.body.isHidden()

    def set_open(self, on: bool) -> None:
        """Show the guidelines, or collapse the pane to a narrow strip (remembered for every view)."""
        qs = getattr(self.settings, "qs", None)
        if qs is not None:
            qs.setValue(OPEN_SETTING, bool(on))
        self._apply_open(on)

    def _apply_open(self, on: bool) -> None:
        self.body.setVisible(on)
        self.show_button.setVisible(not on)
        if on:
            self.setMinimumWidth(PANE_MIN_WIDTH)
            self.setMaximumWidth(PANE_WIDTH + 100)
        else:
            self.setFixedWidth(self.show_button.sizeHint().width() + 10)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        size = super().sizeHint()
        return QSize(PANE_WIDTH, size.height()) if self.is_open() else size

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        if self._remembered_open() != self.is_open():
            self._apply_open(self._remembered_open())  # collapsed or opened in another view
        self.refresh()  # edited in another view, window or process meanwhile

    # ------------------------------------------------------------------ content
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.version = None
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Show the newest guidelines (if they changed, or ``force``) and tell the view their version."""
        current = self.project.guidelines() if self.project is not None else None
        version = current["version"] if current else None
        if not force and version == self.version:
            return
        self.version = version
        self.edit_button.setEnabled(self.project is not None)
        if current is None:
            self.title.setText("Guidelines")
            self.view.set_markdown("")
            self.view.setPlaceholderText(EMPTY_TEXT if self.project is not None else "No project open.")
            self.note.setText("")
        else:
            self.title.setText(f"Guidelines · version {version}")
            self.view.set_markdown(current["text"])
            self.note.setText(f"Labels given here record version {version}.")
        self.show_button.setText(f"Guidelines v{version}  ▾" if version else "Guidelines  ▾")  # drawn turned: ◂
        self.version_loaded.emit(version)

    def text(self) -> str:
        """The guidelines as shown (plain text)."""
        return self.view.toPlainText()

    # ------------------------------------------------------------------ editing
    def edit(self) -> bool:
        """The editor dialog; True when something was handed to the writer."""
        if self.project is None:
            return False
        dialog = GuidelinesDialog(self.project, self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return False
        self.save(dialog.text(), dialog.overlap())
        return True

    def save(self, text: str, overlap: tuple[float, int] | None = None):
        """Store ``text`` as the next version (unchanged text: no new version; empty text: only the overlap)
        and the overlap, through the label writer; returns the write (its ``result``: the version)."""
        project = self.project
        if project is None:
            return None

        def write(p: Project) -> int | None:
            if overlap is None:
                return p.save_guidelines(text) if text.strip() else p.guideline_version()
            with p.db.atomic():  # both or nothing; set_overlap checks its values before it writes
                p.set_overlap(*overlap)
                return p.save_guidelines(text) if text.strip() else p.guideline_version()

        def done(_version) -> None:
            if project is self.project:
                self.refresh()

        def failed(message: str) -> None:
            if project is self.project:
                self.note.setText(message)

        return writer_for(project).submit(write, done, failed)


class GuidelinesDialog(QDialog):
    """Edit the guidelines (Markdown, previewed as it will be shown) and the overlap between labellers."""

    def __init__(self, project: Project, parent: QWidget | None = None):
        super().__init__(parent)
        self.project = project
        self.setWindowTitle("Labelling guidelines and overlap")
        self.resize(980, 640)
        current = project.guidelines()
        self.editor = QPlainTextEdit()
        self.editor.setObjectName("guidelines_editor")
        self.editor.setPlainText(current["text"] if current else TEMPLATE)
        self.preview = SafeMarkdownView()
        self.preview.setObjectName("guidelines_preview")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(lambda: self.preview.set_markdown(self.editor.toPlainText()))
        self.editor.textChanged.connect(self._timer.start)
        self.preview.set_markdown(self.editor.toPlainText())
        self.history = QComboBox()
        self.history.setToolTip("Load an earlier version into the editor (saving it makes it the newest version)")
        versions = project.guideline_versions()
        self.history.addItem("Newest version" if versions else "No versions yet", None)
        for v in versions:
            self.history.addItem(f"Version {v['version']} · {v['created_at'][:16].replace('T', ' ')}", v["version"])
        self.history.activated.connect(self._load_version)
        fraction, answers = project.overlap()
        self.overlap_box = QDoubleSpinBox()
        self.overlap_box.setObjectName("overlap_percent")
        self.overlap_box.setRange(0.0, 100.0)
        self.overlap_box.setDecimals(0)
        self.overlap_box.setSuffix(" %")
        self.overlap_box.setValue(round(fraction * 100))
        self.answers_box = QSpinBox()
        self.answers_box.setObjectName("overlap_answers")
        self.answers_box.setRange(2, MAX_OVERLAP_ANSWERS)
        self.answers_box.setValue(answers)
        self.message = QLabel()
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #a33;")
        splitter = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(QLabel("Markdown"))
        ll.addWidget(self.editor, 1)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(QLabel("As labellers see it"))
        rl.addWidget(self.preview, 1)
        splitter.addWidget(left)
        splitter.addWidget(right)
        top = QHBoxLayout()
        top.addWidget(QLabel("Earlier versions:"))
        top.addWidget(self.history)
        top.addStretch(1)
        overlap = QHBoxLayout()
        overlap.addWidget(QLabel("Overlap:"))
        overlap.addWidget(self.overlap_box)
        overlap.addWidget(QLabel("of the pairs queued from now on go to"))
        overlap.addWidget(self.answers_box)
        overlap.addWidget(QLabel("labellers each (blind to each other's answers), to measure agreement."))
        overlap.addStretch(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)
        layout.addLayout(overlap)
        layout.addWidget(self.message)
        layout.addWidget(buttons)
        self._had_guidelines = current is not None

    def _load_version(self, _index: int) -> None:
        version = self.history.currentData()
        row = self.project.guidelines(version)
        if row is not None:
            self.editor.setPlainText(row["text"])

    def text(self) -> str:
        return self.editor.toPlainText()

    def overlap(self) -> tuple[float, int]:
        return self.overlap_box.value() / 100.0, self.answers_box.value()

    def accept(self) -> None:
        """Refuse an empty text once guidelines exist (say so; the dialog stays open)."""
        if self._had_guidelines and not self.text().strip():
            self.message.setText("The guidelines are empty: write what “better” means (or cancel).")
            return
        super().accept()


def beside(view: QWidget, content: QLayout, pane: GuidelinesPane) -> None:
    """Lay out a labelling view: its ``content`` with the guidelines pane on the right."""
    outer = QHBoxLayout(view)
    outer.addLayout(content, 1)
    outer.addWidget(pane)
