"""Text reward model: train one, watch its loss and accuracy, check its length bias, try it out.

- A run chooser lists the project's ``text_reward_model`` runs (newest first); "Train…" opens the
  run dialog for a new one. The chosen run's metrics (loss, train and held-out accuracy) are plotted
  and follow the run live while it trains.
- Reward vs length: every project response scored by the finished model (the job publishes them
  as a ``response_scores`` sample), with the Pearson correlation. A strong positive correlation
  says "this model mostly rewards length".
- Score this response: type or paste a prompt and a response; the chosen model scores it off the
  GUI thread, and the score is placed among the project's responses (percentile).
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.jobs import BackgroundCall
from app.plots.metric_plot import MetricPlotView
from app.plots.export import with_export
from rlhf_core import kinds
from rlhf_core.analysis.intervals import heldout_of_result
from rlhf_core.jobs import Timing
from rlhf_core.store import Project
from rlhf_core.analysis.length_bias import SAMPLE_KIND, percentile

JOB = "text_reward_model"
#: the training curves worth a plot (mean input length would squash them: it is in tokens)
PLOTTED = ("reward_model/loss", "reward_model/train_accuracy", "reward_model/heldout_accuracy",
           "reward_model/heldout_loss")
_TRAIN_BRUSH = pg.mkBrush(31, 95, 191, 150)
_HELD_BRUSH = pg.mkBrush(214, 110, 0, 200)


#: the empty plot of a project with no text reward model (this page lists runs in the box above, not a list)
NO_MODEL_TEXT = ("No text reward model yet. Press “Train reward model…” above: it learns from this project's "
                 "comparisons of responses (label them in Label text). Its loss and accuracy are plotted here.")


class TextRewardPage(QWidget):
    train_requested = Signal()

    def __init__(self, parent: QWidget | None = None, torch_threads: int = 1):
        super().__init__(parent)
        self.project: Project | None = None
        self.run_id: int | None = None
        self.scores: list[dict] = []
        self._model_cache: tuple[str, object, object] | None = None  # (folder, model, tokenizer)
        self.scorer = BackgroundCall(self, torch_threads=torch_threads)
        self.scorer.finished.connect(self._on_scored)

        self.run_box = QComboBox()
        self.run_box.setMinimumWidth(360)
        self.run_box.currentIndexChanged.connect(self._on_run_chosen)
        self.train_button = QPushButton("Train reward model…")
        self.train_button.clicked.connect(self.train_requested)
        self.summary = QLabel("")
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.summary.setWordWrap(True)  # a held-out accuracy with its interval and warning is a long line
        top = QHBoxLayout()
        top.addWidget(QLabel("Reward model run:"))
        top.addWidget(self.run_box)
        top.addWidget(self.train_button)
        top.addWidget(self.summary, 1)

        self.plot = MetricPlotView()
        self.plot.empty_label.setWordWrap(True)  # this page's own empty text (NO_MODEL_TEXT) is a sentence or two
        self.plot.empty_label.setText(NO_MODEL_TEXT)
        plots_box = QGroupBox("Training: loss and accuracy")
        QVBoxLayout(plots_box).addWidget(self.plot)

        self.scatter_widget = pg.PlotWidget()
        self.scatter_widget.setBackground("w")
        self.scatter_widget.setLabel("bottom", "response length (tokens)")
        self.scatter_widget.setLabel("left", "reward")
        self.scatter_train = pg.ScatterPlotItem(size=7, pen=None, brush=_TRAIN_BRUSH, name="responses")
        self.scatter_held = pg.ScatterPlotItem(size=8, pen=None, brush=_HELD_BRUSH, symbol="t",
                                               name="in held-out pairs")
        self.scatter_widget.addItem(self.scatter_train)
        self.scatter_widget.addItem(self.scatter_held)
        # the legend under the x axis, in one row: inside the plot it covered short, high-reward responses
        self.scatter_legend = pg.LegendItem(labelTextSize="8pt", colCount=2, frame=False)
        self.scatter_widget.getPlotItem().layout.addItem(self.scatter_legend, 4, 1)
        self.scatter_legend.addItem(self.scatter_train, "responses")
        self.scatter_legend.addItem(self.scatter_held, "in held-out pairs")
        self.fit_line = pg.PlotDataItem(pen=pg.mkPen("#444", width=1, style=Qt.PenStyle.DashLine))
        self.scatter_widget.addItem(self.fit_line)
        self.bias_label = QLabel("Train a reward model to see whether it rewards length.")
        self.bias_label.setTextFormat(Qt.TextFormat.PlainText)
        self.bias_label.setWordWrap(True)
        scatter_box = QGroupBox("Reward vs length (length bias)")
        scatter_layout = QVBoxLayout(scatter_box)
        scatter_layout.addWidget(with_export(self.scatter_widget, "Reward vs length"), 1)
        scatter_layout.addWidget(self.bias_label)

        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("Prompt")
        self.prompt_edit.setMaximumHeight(70)
        self.response_edit = QPlainTextEdit()
        self.response_edit.setPlaceholderText("Response to score")
        self.score_button = QPushButton("Score")
        self.score_button.setToolTip("Score the response with the chosen reward model (Ctrl+Return in the boxes)")
        self.score_button.clicked.connect(self.score_current)
        self.score_label = QLabel("")
        self.score_label.setTextFormat(Qt.TextFormat.PlainText)
        self.score_label.setWordWrap(True)
        score_box = QGroupBox("Score this response")
        form = QFormLayout(score_box)
        form.addRow("Prompt", self.prompt_edit)
        form.addRow("Response", self.response_edit)
        row = QHBoxLayout()
        row.addWidget(self.score_button)
        row.addWidget(self.score_label, 1)
        form.addRow(row)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(scatter_box)
        right.addWidget(score_box)
        right.setSizes([460, 260])
        body = QSplitter(Qt.Orientation.Horizontal)
        body.addWidget(plots_box)
        body.addWidget(right)
        body.setSizes([560, 700])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(body, 1)
        for edit in (self.prompt_edit, self.response_edit):
            edit.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt name
        from PySide6.QtCore import QEvent

        if (event.type() == QEvent.Type.KeyPress and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
                and event.modifiers() & Qt.KeyboardModifier.ControlModifier):
            self.score_current()
            return True
        return super().eventFilter(obj, event)

    # --- project and runs ----------------------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self._model_cache = None
        self.run_id = None
        self.refresh_runs()

    def refresh_runs(self, select: int | None = None) -> None:
        current = select if select is not None else self.run_id
        self.run_box.blockSignals(True)
        self.run_box.clear()
        runs = []
        if self.project is not None:  # trained here, or imported (e.g. from a cluster run)
            with_rm = {c["run_id"] for c in self.project.checkpoints() if c["kind"] == kinds.TEXT_REWARD_MODEL}
            runs = [r for r in reversed(self.project.runs()) if r["kind"] == JOB or r["id"] in with_rm]
        for run in runs:
            held = heldout_of_result(run.get("result"))  # with its n (the summary adds the 95 % interval)
            extra = "" if held is None else (f", held-out accuracy {held.accuracy:.2f} (n = {held.n}"
                                             + (", too few to tell)" if held.too_few else ")"))
            self.run_box.addItem(f"Run {run['id']} — {run['status']}{extra}", run["id"])
        self.run_box.blockSignals(False)
        if not runs:
            self.run_id = None
            self.plot.clear()
            self._set_scores([])
            self.summary.setText("No reward model yet.")
            self.plot.empty_label.setText(NO_MODEL_TEXT)
            return
        index = max(0, self.run_box.findData(current)) if current is not None else 0
        self.run_box.setCurrentIndex(index)
        self._on_run_chosen(index)

    def _on_run_chosen(self, index: int) -> None:
        run_id = self.run_box.itemData(index)
        if run_id is None or self.project is None:
            return
        self.run_id = int(run_id)
        self.plot.clear()
        self.plot.empty_label.setText(f"Run {self.run_id} has no training metrics yet: they appear here while it "
                                      "trains.")
        metrics = {k: v for k, v in self.project.metrics(self.run_id).items() if k in PLOTTED}
        self.plot.load_run(self.run_id, metrics, label=f"run {self.run_id}")
        self.plot.set_visible_runs([self.run_id])
        self.plot.redraw()
        samples = self.project.samples(self.run_id, SAMPLE_KIND)
        self._set_scores(samples[-1]["payload"].get("scores", []) if samples else [])
        self._show_summary()

    def _show_summary(self, timing: Timing | None = None) -> None:
        """The chosen run in one line: its pairs and held-out accuracy (with n and its 95 % interval, and a
        warning when too few pairs were held out), or its status (and time left while it trains)."""
        run = (self.project.get_run(self.run_id) if self.project is not None and self.run_id is not None
               else None) or {}
        result = run.get("result") or {}
        held = heldout_of_result(result)
        self.summary.setStyleSheet("color: #8a4b00;" if held is not None and held.too_few else "")
        if run.get("status") == "completed" and isinstance(result, dict):
            self.summary.setText(f"{result.get('pairs', '?')} pairs ({result.get('heldout_pairs', 0)} held out); "
                                 + (held.text() if held is not None else "no held-out pairs"))
        elif run.get("status") == "running" and timing is not None:
            self.summary.setText(f"Run {self.run_id} running · {timing.text()}")
        else:
            self.summary.setText(f"Run {self.run_id} {run.get('status', '')}")

    # --- live updates --------------------------------------------------------------------------
    def on_job_queued(self, run_id: int, kind: str) -> None:
        if kind == JOB:
            self.refresh_runs(select=run_id)

    def on_status_changed(self, run_id: int, status: str) -> None:
        """A run's stored status changed (queued -> running): the picker and the summary say so."""
        index = self.run_box.findData(run_id)
        if index < 0 or self.project is None:
            return
        run = self.project.get_run(run_id) or {}
        self.run_box.setItemText(index, f"Run {run_id} — {run.get('status', status)}")
        if run_id == self.run_id:
            self._show_summary()

    def on_timing(self, run_id: int, timing: Timing) -> None:
        if run_id == self.run_id:
            self._show_summary(timing)

    def on_metrics(self, run_id: int, batch) -> None:
        if run_id == self.run_id:
            batch = [(step, {k: v for k, v in values.items() if k in PLOTTED}) for step, values in batch]
            self.plot.append(run_id, [(step, values) for step, values in batch if values])

    def on_sample(self, run_id: int, kind: str, payload, step) -> None:
        if run_id == self.run_id and kind == SAMPLE_KIND and isinstance(payload, dict):
            self._set_scores(payload.get("scores", []))

    def on_job_finished(self, run_id: int, status: str, error: str) -> None:
        if self.project is not None and run_id == self.run_id:
            self.plot.mark_finished(run_id)
            self.refresh_runs(select=run_id)

    # --- scatter -------------------------------------------------------------------------------
    def _set_scores(self, scores: list[dict]) -> None:
        self.scores = list(scores)
        train = [s for s in self.scores if not s.get("heldout")]
        held = [s for s in self.scores if s.get("heldout")]
        self.scatter_train.setData([s["tokens"] for s in train], [s["reward"] for s in train])
        self.scatter_held.setData([s["tokens"] for s in held], [s["reward"] for s in held])
        if len(self.scores) < 2:
            self.fit_line.setData([], [])
            if self.run_id is not None:
                self.bias_label.setText("No scored responses for this run yet (they appear when training ends).")
            return
        x = np.array([s["tokens"] for s in self.scores], dtype=float)
        y = np.array([s["reward"] for s in self.scores], dtype=float)
        r = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else math.nan
        if x.std() > 0:
            slope, intercept = np.polyfit(x, y, 1)
            xs = np.array([x.min(), x.max()])
            self.fit_line.setData(xs, slope * xs + intercept)
        verdict = ("strong length bias: longer answers score higher regardless of content" if r >= 0.6 else
                   "some length bias" if r >= 0.3 else
                   "prefers shorter answers" if r <= -0.3 else "little length bias")
        self.bias_label.setText(
            f"{len(self.scores)} responses scored; Pearson r(reward, length) = {r:+.2f} — {verdict}."
            if not math.isnan(r) else f"{len(self.scores)} responses scored; correlation undefined (constant series).")

    def length_correlation(self) -> float:
        if len(self.scores) < 2:
            return math.nan
        x = np.array([s["tokens"] for s in self.scores], dtype=float)
        y = np.array([s["reward"] for s in self.scores], dtype=float)
        return float(np.corrcoef(x, y)[0, 1])

    # --- scoring -------------------------------------------------------------------------------
    def checkpoint_folder(self) -> str | None:
        if self.project is None or self.run_id is None:
            return None
        cps = [c for c in self.project.checkpoints(self.run_id) if c["kind"] == kinds.TEXT_REWARD_MODEL]
        return str(self.project.abspath(cps[-1]["path"])) if cps else None

    def score_current(self) -> None:
        prompt, response = self.prompt_edit.toPlainText().strip(), self.response_edit.toPlainText().strip()
        folder = self.checkpoint_folder()
        if folder is None:
            self.score_label.setText("Choose a finished reward model run first.")
            return
        if not prompt or not response:
            self.score_label.setText("Write a prompt and a response to score.")
            return
        if self.scorer.busy:
            return
        self.score_button.setEnabled(False)
        self.score_label.setText("Scoring…" if self._model_cache and self._model_cache[0] == folder
                                 else "Loading the reward model…")
        self.scorer.start(self._score, folder, prompt, response)

    def _score(self, folder: str, prompt: str, response: str) -> dict:
        """Runs in the background thread."""
        from rlhf_core.text.reward_model import load_text_reward_model, score_responses

        cache = self._model_cache
        if cache is None or cache[0] != folder:
            model, tokenizer = load_text_reward_model(folder)
            cache = (folder, model, tokenizer)
            self._model_cache = cache
        _, model, tokenizer = cache
        reward = float(score_responses(model, tokenizer, [prompt], [response])[0])
        return {"reward": reward, "tokens": len(tokenizer(response, add_special_tokens=False)["input_ids"])}

    def _on_scored(self, result, error) -> None:
        self.score_button.setEnabled(True)
        if error:
            self.score_label.setText(f"Could not score: {error}")
            return
        self.last_score = result
        pct = percentile(result["reward"], [s["reward"] for s in self.scores])
        where = f"; higher than {pct:.0f} % of the project's {len(self.scores)} scored responses" if pct is not None else ""
        self.score_label.setText(f"reward {result['reward']:+.3f} ({result['tokens']} tokens){where}")

    def shutdown(self) -> None:
        self.scorer.wait(10.0)
