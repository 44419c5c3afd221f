"""Generate text: sample K responses per prompt and watch them arrive, batch by batch.

The form is built from :class:`GenerateConfig` (the same settings as ``python -m rlhf_core run
generate``). Responses stream into the table as each batch finishes (the job publishes a
``generation`` sample per batch); selecting a row shows the prompt and the full response as plain
text. When a project opens, the latest generation run's responses are shown again.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.training.config_form import ConfigForm
from rlhf_core import kinds
from rlhf_core import config as cfg
from rlhf_core.store import Project
from rlhf_core.sources.generate import GenerateConfig

COLUMNS = ["Prompt", "#", "Response", "Tokens", "Ended"]
JOB = "generate"


def _first_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class GeneratePage(QWidget):
    run_requested = Signal(str, object)  # job name, config
    cancel_requested = Signal(int)
    label_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.run_id: int | None = None  # the run whose responses are shown
        self.rows: list[dict] = []
        self._running = False

        self.form = ConfigForm(GenerateConfig, GenerateConfig(prompt_set="lecture", max_prompts=10,
                                                              samples_per_prompt=4, max_new_tokens=96))
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Sample responses with these settings (Ctrl+Return)")
        self.generate_button.clicked.connect(self.request_generation)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(lambda: self.run_id is not None and self.cancel_requested.emit(self.run_id))
        self.label_button = QPushButton("Label these →")
        self.label_button.setToolTip("Compare the responses side by side in Label text")
        self.label_button.clicked.connect(self.label_requested)
        buttons = QHBoxLayout()
        for b in (self.generate_button, self.cancel_button, self.label_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Settings")
        title.setStyleSheet("font-weight: 600;")
        left_layout.addWidget(title)
        left_layout.addWidget(scroll, 1)
        left_layout.addLayout(buttons)

        self.status = QLabel("No responses yet: choose settings and press Generate.")
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(0, 260)
        self.table.setColumnWidth(1, 30)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText("Select a response to read it in full.")
        right_split = QSplitter(Qt.Orientation.Vertical)
        right_split.addWidget(self.table)
        right_split.addWidget(self.detail)
        right_split.setSizes([480, 220])
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.status)
        right_layout.addWidget(right_split, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([420, 860])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        QShortcut(QKeySequence("Ctrl+Return"), self, activated=self.request_generation)

    # --- project -------------------------------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.form.set_project(project)  # the prompt-ids picker lists its prompts
        self.run_id = None
        self._clear()
        if project is None:
            return
        runs = [r for r in project.runs(JOB) if r["status"] in ("completed", "running", "cancelled", "failed")]
        if runs:
            self.show_run(runs[-1]["id"])

    def show_run(self, run_id: int) -> None:
        """Show the responses a (finished or running) generation run has published so far."""
        self._clear()
        self.run_id = run_id
        if self.project is None:
            return
        for sample in self.project.samples(run_id, kinds.SAMPLE_GENERATION):
            self._add_completions(sample["payload"].get("completions", []))
        run = self.project.get_run(run_id)
        status = run["status"] if run else "?"
        self.status.setText(f"Run {run_id} ({status}): {len(self.rows)} responses.")

    def _clear(self) -> None:
        self.rows = []
        self.table.setRowCount(0)
        self.detail.clear()

    # --- generation ----------------------------------------------------------------------------
    def request_generation(self) -> None:
        if self._running:
            return
        try:
            config = self.form.config()
            cfg.validate(config)
        except (cfg.ConfigError, ValueError) as exc:
            self.status.setText(f"Cannot generate: {exc}")
            return
        self.run_requested.emit(JOB, config)

    def on_job_queued(self, run_id: int, kind: str) -> None:
        if kind != JOB:
            return
        self._clear()
        self.run_id = run_id
        self._running = True
        self.generate_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Run {run_id}: waiting for the model…")
        self._progress_text = self.status.text()

    def on_progress(self, run_id: int, fraction: float, message: str) -> None:
        if run_id == self.run_id and self._running:
            self._progress_text = f"Run {run_id}: {message or f'{fraction * 100:.0f} %'}"
            self.status.setText(self._progress_text)

    def on_timing(self, run_id: int, timing) -> None:
        """Elapsed time, speed and time left (``rlhf_core.jobs.Timing``) after the progress message."""
        if run_id == self.run_id and self._running:
            self.status.setText(f"{self._progress_text} · {timing.text()}")

    def on_sample(self, run_id: int, kind: str, payload, step) -> None:
        if run_id != self.run_id or kind != kinds.SAMPLE_GENERATION or not isinstance(payload, dict):
            return
        self._add_completions(payload.get("completions", []))

    def on_job_finished(self, run_id: int, status: str, error: str) -> None:
        if run_id != self.run_id:
            return
        self._running = False
        self.generate_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        message = f"Run {run_id} {status}: {len(self.rows)} responses."
        if status == "failed" and error:
            message += " " + error.strip().splitlines()[-1]
        self.status.setText(message)

    def _add_completions(self, completions: list[dict]) -> None:
        follow = self.table.rowCount() == 0 or self.table.verticalScrollBar().value() == self.table.verticalScrollBar().maximum()
        for c in completions:
            row = self.table.rowCount()
            self.table.insertRow(row)
            self.rows.append(c)
            cells = [_first_line(str(c.get("prompt", "")), 80), str(int(c.get("sample_index", 0)) + 1),
                     _first_line(str(c.get("text", ""))), str(c.get("n_tokens", "")),
                     "stop" if c.get("finish_reason") == "stop" else "length"]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)  # QTableWidgetItem shows plain text
                if col in (1, 3):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if col == 4 and text == "length":
                    item.setToolTip("Cut at the token limit (did not finish)")
                self.table.setItem(row, col, item)
        if follow:
            self.table.scrollToBottom()

    def _show_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        c = self.rows[rows[0].row()]
        self.detail.setPlainText(f"PROMPT\n{c.get('prompt', '')}\n\nRESPONSE {int(c.get('sample_index', 0)) + 1} "
                                 f"({c.get('n_tokens', '?')} tokens, {c.get('finish_reason', '?')})\n{c.get('text', '')}")
