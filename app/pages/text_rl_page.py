"""Text RL: train a language model (SFT, DPO, GRPO, PPO with a KL penalty) and watch it.

Left: the project's text-training runs (tick several to overlay them) and buttons that open the
run dialog for each algorithm and the two demos. Middle: live plots grouped by namespace —
reward (total and per component), KL, length, train (loss, entropy, clip fraction, value loss),
gold, DPO. Right: the latest samples with their rewards (plain text), alerts (negative or spiking
KL, collapsing or exploding length, reward rising while the gold metric falls) and the
over-optimisation view (proxy and gold reward against sqrt(KL), as in Gao et al. 2022).
"Evaluate…" opens the run dialog of the ``text_eval`` job with the selected run as the policy (and
the project's latest text reward model as the judge); the Evaluations tab lists the project's
finished evaluations (policy, pass@1, cons@k, pass@k, win rate), read-only. "Refusal evaluation…" opens
the ``refusal_eval`` job's dialog with the selected run's policy; its runs are in Evaluations ▸ Refusal
(``app/analysis/refusal_view.py``: over- and under-refusal per run, plotted round by round).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QDialog,
    QGridLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.analysis.refusal_view import RefusalView
from app.plain import tip
from app.plots.after_release import AfterRelease
from app.plots.metric_plot import MetricPlotView
from app.training.config_form import RunDialog
from app.plots.export import with_export
from rlhf_core import kinds
from rlhf_core.analysis.text_rl_monitor import check_alerts, overoptimisation_curve
from rlhf_core.jobs import Timing, list_jobs
from rlhf_core.store import Project, artefacts

#: job name -> button text; the runs of these jobs are listed on the page
TEXT_RL_JOBS = {
    "sft": "SFT…",
    "dpo": "DPO…",
    "grpo": "GRPO…",
    "ppo_text": "PPO (KL penalty)…",
    "grpo_demo": "GRPO demo…",
    "ppo_demo": "Over-optimisation demo…",
}
SAMPLE_KIND = kinds.SAMPLE_TEXT_RL
SAMPLE_COLUMNS = ["Step", "Reward", "Length", "Prompt", "Response"]
MAX_SAMPLE_ROWS = 200
EVAL_JOB = "text_eval"
REFUSAL_JOB = "refusal_eval"
#: jobs whose end can add rows to the Evaluations tab (the CAI demo runs refusal evaluations as its stages)
EVALUATING_JOBS = (EVAL_JOB, REFUSAL_JOB, "cai_demo")
EVAL_COLUMNS = ["Run", "Policy", "Prompts", "pass@1", "cons@k", "pass@k", "Win rate"]
_KIND_ROLE = Qt.ItemDataRole.UserRole + 1  # a run line's job name


#: jobs that never sample: they learn from stored text, so their Samples tab stays empty
NOT_SAMPLING = {
    "dpo": "DPO does not sample: it learns from the project's comparisons directly (chosen against rejected "
           "response), so this run has no samples to show. Its implicit rewards, margins and accuracy are in the "
           "dpo plots.",
    "sft": "SFT does not sample: it learns the project's demonstrations token by token, so this run has no "
           "samples to show. Its training and held-out loss are in the plots.",
}


def samples_note_text(run: dict | None, n_samples: int) -> str:
    """What the Samples tab says above an empty table (empty when samples are shown)."""
    if n_samples:
        return ""
    if run is None:
        return "No text-training run yet: start one with the buttons on the left; its samples appear here."
    if run["kind"] in NOT_SAMPLING:
        return NOT_SAMPLING[run["kind"]]
    if run["status"] in ("queued", "running"):
        return f"Run {run['id']} has logged no samples yet: they appear here as it trains."
    return f"Run {run['id']} ({run['status']}) logged no samples."


def _prompts_cell(result: dict) -> str:
    """What an evaluation was measured on: "16 tasks (level 1)", "4 project prompts", "8 of starter · reasoning"."""
    n = result.get("prompts")
    if not isinstance(n, int):
        return "–"
    if result.get("prompt_source") == "project":
        text = f"{n} of {result['prompt_set']}" if result.get("prompt_set") and not result.get("prompt_ids") \
            else f"{n} project prompts"
        return text + (f" · {result['category']}" if result.get("category") else "")
    level = result.get("task_level")
    return f"{n} tasks" + (f" (level {level})" if level else "")


def _one_line(text: str, limit: int = 140) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class TextRLPage(QWidget):
    run_requested = Signal(str)  # job name: open the run dialog for it
    start_requested = Signal(str, object)  # job name, config: start it (the evaluation dialog was accepted)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.current_run: int | None = None  # the run whose samples/alerts/curve are shown
        self.samples: list[dict] = []
        self._metrics_cache: dict[int, dict] = {}
        self._analysis_timer = QTimer(self)
        self._analysis_timer.setSingleShot(True)
        self._analysis_timer.setInterval(1000)
        self._analysis_timer.timeout.connect(self._update_analysis)
        self._live: dict[int, dict[str, tuple[list, list]]] = {}
        self._live_evals: set[int] = set()
        # finished runs shown beside the selected one in the over-optimisation view: their curve and legend
        # label, read from the project once (the live analysis refresh would otherwise re-read them each time)
        self._finished_over: dict[int, tuple[dict, str]] = {}
        self._gold_notes: dict[int, str] = {}  # run -> what measured its gold (read once)
        # runs the page ticked because they were selected or new (not the user): the next one replaces them
        self._auto_checked: set[int] = set()

        buttons = QWidget()
        grid = QGridLayout(buttons)
        grid.setContentsMargins(0, 0, 0, 0)
        self.job_buttons: dict[str, QPushButton] = {}
        for i, (job, text) in enumerate(TEXT_RL_JOBS.items()):
            b = QPushButton(text)
            b.clicked.connect(lambda _=False, j=job: self.run_requested.emit(j))
            grid.addWidget(b, i // 2, i % 2)
            self.job_buttons[job] = b
        self.run_list = QListWidget()
        self.run_list.setToolTip("Tick runs to overlay them; the selected run's samples and alerts are shown.")
        self.run_list.itemChanged.connect(self._on_item_changed)
        self.run_list.currentItemChanged.connect(self._on_current_changed)
        self._after_click = AfterRelease(self.run_list)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Train a language model")
        title.setStyleSheet("font-weight: 600;")
        left_layout.addWidget(title)
        left_layout.addWidget(buttons)
        self.eval_button = QPushButton("Evaluate…")
        self.eval_button.setToolTip("Evaluate the selected run's policy: pass@1, cons@k and pass@k on held-out "
                                    "arithmetic tasks or on the project's prompts with gold answers, and the win "
                                    "rate against the reference judged by a text reward model (the run's held-out "
                                    "gold one when it has one).")
        self.eval_button.clicked.connect(self.request_evaluation)
        left_layout.addWidget(self.eval_button)
        self.refusal_button = QPushButton("Refusal evaluation…")
        self.refusal_button.setToolTip("Evaluate the selected run's policy on prompts it should refuse and benign "
                                       "ones it should answer: under- and over-refusal (Evaluations ▸ Refusal).")
        self.refusal_button.clicked.connect(self.request_refusal_evaluation)
        left_layout.addWidget(self.refusal_button)
        left_layout.addWidget(QLabel("Runs"))
        left_layout.addWidget(self.run_list, 1)

        self.plot = MetricPlotView()
        # what the page is for first: reward, KL per token, completion length; then the rest
        self.plot.group_order = ["reward", "kl:KL/token", "completions:tokens", "gold", "kl", "completions", "train",
                                 "dpo", "sft"]

        self.sample_table = QTableWidget(0, len(SAMPLE_COLUMNS))
        self.sample_table.setHorizontalHeaderLabels(SAMPLE_COLUMNS)
        self.sample_table.verticalHeader().hide()
        self.sample_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.sample_table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.sample_table.setWordWrap(False)
        header = self.sample_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.sample_table.setColumnWidth(3, 150)
        self.sample_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.sample_table.itemSelectionChanged.connect(self._show_sample)
        self.sample_detail = QPlainTextEdit()
        self.sample_detail.setReadOnly(True)
        self.sample_detail.setPlaceholderText("Select a sample to read it in full, with its reward components.")
        # an empty table says why: no run, a job that does not sample (SFT, DPO), or none logged yet
        self.samples_note = QLabel()
        self.samples_note.setObjectName("samples_note")
        self.samples_note.setTextFormat(Qt.TextFormat.PlainText)
        self.samples_note.setWordWrap(True)
        self.samples_note.setStyleSheet("color: #555; padding: 4px;")
        table_box = QWidget()
        table_layout = QVBoxLayout(table_box)
        table_layout.setContentsMargins(0, 0, 0, 0)
        table_layout.addWidget(self.samples_note)
        table_layout.addWidget(self.sample_table, 1)
        samples_split = QSplitter(Qt.Orientation.Vertical)
        samples_split.addWidget(table_box)
        samples_split.addWidget(self.sample_detail)
        samples_split.setSizes([380, 200])

        self.alert_list = QListWidget()
        self.alert_list.setWordWrap(True)
        self.alert_summary = QLabel("")

        self.over_plot = pg.PlotWidget()
        self.over_plot.setBackground("w")
        self.over_plot.setLabel("bottom", "√KL(π‖π_ref) per sequence")
        self.over_plot.setLabel("left", "reward")
        # translucent and small: the legend shares the upper left with the steep best-of-n proxy curve
        self.over_plot.addLegend(offset=(5, 5), brush=pg.mkBrush(255, 255, 255, 170), labelTextSize="8pt",
                                 verSpacing=-4)
        self.over_plot.getAxis("left").enableAutoSIPrefix(False)
        # points, not lines: sqrt(KL) does not grow monotonically from step to step
        self.proxy_curve = self.over_plot.plot([], [], pen=None, symbol="o", symbolSize=6,
                                               symbolBrush="#1f5fbf", name="proxy reward (optimised)")
        self.gold_curve = self.over_plot.plot([], [], pen=None, symbol="t", symbolSize=7,
                                              symbolBrush="#d66e00", name="gold reward (the real goal)")
        # the other ticked runs, in hollow markers; the four legend rows are made once and only relabelled
        # (re-adding legend rows makes and drops LabelItems, which Qt may still lay out after Python has
        # collected them)
        self.other_proxy_curve = self.over_plot.plot([], [], pen=None, symbol="o", symbolSize=7, symbolBrush=None,
                                                     symbolPen=pg.mkPen("#1f5fbf", width=1.5),
                                                     name="proxy, other ticked runs")
        self.other_gold_curve = self.over_plot.plot([], [], pen=None, symbol="t", symbolSize=8, symbolBrush=None,
                                                    symbolPen=pg.mkPen("#d66e00", width=1.5),
                                                    name="gold, other ticked runs")
        # the PPO demo's paired checks (policy minus reference, same random numbers): lines from the origin
        self.paired_proxy_curve = self.over_plot.plot([], [], pen=pg.mkPen("#1f5fbf", width=2), symbol="s",
                                                      symbolSize=9, symbolBrush="#1f5fbf",
                                                      name="proxy gain, paired check")
        self.paired_gold_curve = self.over_plot.plot([], [], pen=pg.mkPen("#d66e00", width=2), symbol="s",
                                                     symbolSize=9, symbolBrush="#d66e00",
                                                     name="gold gain, paired check")
        # +-1 standard error of each paired gold gain (over the check's pairs): is a downturn beyond noise?
        self.paired_gold_err = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), height=np.zeros(0), beam=0.08,
                                               pen=pg.mkPen("#d66e00", width=1.5))
        self.over_plot.addItem(self.paired_gold_err)
        # its best-of-n curve: the proxy's pick among n reference responses, no training (dashed)
        dash = Qt.PenStyle.DashLine
        self.bon_proxy_curve = self.over_plot.plot([], [], pen=pg.mkPen("#1f5fbf", width=2, style=dash), symbol="d",
                                                   symbolSize=9, symbolBrush="#1f5fbf", name="proxy, best-of-n")
        self.bon_gold_curve = self.over_plot.plot([], [], pen=pg.mkPen("#d66e00", width=2, style=dash), symbol="d",
                                                  symbolSize=9, symbolBrush="#d66e00", name="gold, best-of-n")
        self.over_note = QLabel("")
        self.over_note.setWordWrap(True)
        self.over_note.setTextFormat(Qt.TextFormat.PlainText)
        over = QWidget()
        over_layout = QVBoxLayout(over)
        over_layout.setContentsMargins(0, 0, 0, 0)
        over_layout.addWidget(with_export(self.over_plot, "Over-optimisation"), 1)
        over_layout.addWidget(self.over_note)

        alerts = QWidget()
        alerts_layout = QVBoxLayout(alerts)
        alerts_layout.setContentsMargins(0, 0, 0, 0)
        alerts_layout.addWidget(self.alert_summary)
        alerts_layout.addWidget(self.alert_list, 1)

        self.tabs = QTabWidget()
        self.tabs.addTab(samples_split, "Samples")
        self.tabs.addTab(alerts, "Alerts")
        self.tabs.addTab(over, "Over-optimisation")
        self.eval_table = QTableWidget(0, len(EVAL_COLUMNS))
        self.eval_table.setHorizontalHeaderLabels(EVAL_COLUMNS)
        self.eval_table.verticalHeader().hide()
        self.eval_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.eval_table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.eval_table.setWordWrap(False)
        self.eval_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.eval_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        # what it was measured on: a fixed width (elided; the whole text in the cell's tooltip)
        self.eval_table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Interactive)
        self.eval_table.setColumnWidth(2, 170)
        self.refusal_view = RefusalView()
        self.eval_tabs = QTabWidget()
        self.eval_tabs.setDocumentMode(True)
        self.eval_tabs.addTab(self.eval_table, "Tasks and win rate")
        self.eval_tabs.addTab(self.refusal_view, "Refusal")
        self.tabs.addTab(self.eval_tabs, "Evaluations")

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(self.plot)
        splitter.addWidget(self.tabs)
        splitter.setSizes([250, 560, 470])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    # --- project and runs ----------------------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.current_run = None
        self._live.clear()
        self._live_evals.clear()
        self._finished_over.clear()
        self._gold_notes.clear()
        self._auto_checked.clear()
        self.run_list.clear()  # no ticks carried over from the previous project
        self.plot.clear()
        self.refresh_runs()
        self.refresh_evaluations()

    def _runs(self) -> list[dict]:
        if self.project is None:
            return []
        return [r for r in self.project.runs() if r["kind"] in TEXT_RL_JOBS]

    def refresh_runs(self, select: int | None = None) -> None:
        checked = set(self.checked_runs())
        runs = self._runs()
        select = select if select is not None else self.current_run
        if select is None and runs:
            select = runs[-1]["id"]
        if select is not None and select not in checked:
            checked.add(select)
            self._auto_checked.add(select)
        self.run_list.blockSignals(True)
        self.run_list.clear()
        for run in reversed(runs):
            item = QListWidgetItem(self._run_text(run))
            item.setData(Qt.ItemDataRole.UserRole, run["id"])
            item.setData(_KIND_ROLE, run["kind"])
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if run["id"] in checked else Qt.CheckState.Unchecked)
            if run["status"] == "failed":
                item.setForeground(QColor("#b00020"))
            self.run_list.addItem(item)
            if run["id"] == select:
                self.run_list.setCurrentItem(item)
        self.run_list.blockSignals(False)
        self._sync_plot_runs()
        if select is not None:
            self._show_run(select)
        else:
            self._clear_run_views()

    def checked_runs(self) -> list[int]:
        out = []
        for i in range(self.run_list.count()):
            item = self.run_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(int(item.data(Qt.ItemDataRole.UserRole)))
        return sorted(out)

    def _sync_plot_runs(self) -> None:
        if self.project is None:
            return
        for run_id in self.checked_runs():
            if run_id not in self._live and not any(r == run_id for r, _ in self.plot.store.series):
                self.plot.load_run(run_id, self.project.metrics(run_id), label=f"run {run_id}")
        self.plot.set_visible_runs(self.checked_runs())
        self.plot.redraw()

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        self._auto_checked.discard(int(item.data(Qt.ItemDataRole.UserRole)))  # the user's tick (or untick)
        self._sync_plot_runs()
        self._update_other_over_curves()

    def _on_current_changed(self, current: QListWidgetItem | None, _previous) -> None:
        if current is not None:
            run_id = int(current.data(Qt.ItemDataRole.UserRole))
            self._show_run(run_id)
            self._after_click.call(lambda: self._plot_selected(run_id))

    def _plot_selected(self, run_id: int) -> None:
        """Tick the selected run in place of the run ticked for the last selection (the user's ticks stay)."""
        item = next((self.run_list.item(i) for i in range(self.run_list.count())
                     if int(self.run_list.item(i).data(Qt.ItemDataRole.UserRole)) == run_id), None)
        if item is None or item.checkState() == Qt.CheckState.Checked:
            return
        self._drop_auto_checked()
        self.run_list.blockSignals(True)
        item.setCheckState(Qt.CheckState.Checked)
        self.run_list.blockSignals(False)
        self._auto_checked.add(run_id)
        self._sync_plot_runs()
        self._update_other_over_curves()

    def _drop_auto_checked(self) -> None:
        """Untick the runs the page ticked itself: a new or selected run takes their place in the plots,
        the user's ticks stay."""
        self.run_list.blockSignals(True)
        for i in range(self.run_list.count()):
            item = self.run_list.item(i)
            if int(item.data(Qt.ItemDataRole.UserRole)) in self._auto_checked:
                item.setCheckState(Qt.CheckState.Unchecked)
        self.run_list.blockSignals(False)
        self._auto_checked.clear()

    def _clear_run_views(self) -> None:
        self.samples = []
        self.sample_table.setRowCount(0)
        self.sample_detail.clear()
        self.alert_list.clear()
        self.alert_summary.setText("No text-training run yet.")
        self._update_samples_note()
        self.proxy_curve.setData([], [])
        self.gold_curve.setData([], [])
        self._set_paired_curves({})
        self._update_other_over_curves()
        self.over_note.setText("")

    def _show_run(self, run_id: int) -> None:
        if self.project is None:
            return
        self.current_run = run_id
        self.samples = []
        self.sample_table.setRowCount(0)
        self.sample_detail.clear()
        rows = self.project.samples(run_id, SAMPLE_KIND)[-MAX_SAMPLE_ROWS:]
        self._add_samples([r["payload"] for r in rows])
        self._update_samples_note()
        self._update_analysis()

    # --- live updates --------------------------------------------------------------------------
    def on_job_queued(self, run_id: int, kind: str) -> None:
        if kind in EVALUATING_JOBS:
            self._live_evals.add(run_id)
        if kind in TEXT_RL_JOBS:
            self._live[run_id] = {}
            self._drop_auto_checked()
            self.refresh_runs(select=run_id)

    def follow_external(self, run_id: int, kind: str) -> None:
        """A run another process trains in this project (``python -m rlhf_core ...``): its history from the
        project now, its new metrics and samples through :meth:`on_metrics` / :meth:`on_sample`."""
        if kind not in TEXT_RL_JOBS or self.project is None:
            return
        metrics = self.project.metrics(run_id)
        self._live[run_id] = {k: (list(s), list(v)) for k, (s, v) in metrics.items()}
        self.plot.load_run(run_id, metrics, label=f"run {run_id}")
        self.plot.live_runs.add(run_id)
        self._drop_auto_checked()
        self.refresh_runs(select=run_id)

    def on_metrics(self, run_id: int, batch) -> None:
        if run_id not in self._live:
            return
        self.plot.append(run_id, batch)
        store = self._live[run_id]
        for step, values in batch:
            for key, value in values.items():
                steps, vals = store.setdefault(key, ([], []))
                steps.append(int(step))
                vals.append(float(value))
        if run_id == self.current_run and not self._analysis_timer.isActive():
            self._analysis_timer.start()

    def on_sample(self, run_id: int, kind: str, payload, step) -> None:
        if run_id == self.current_run and kind == SAMPLE_KIND and isinstance(payload, dict):
            self._add_samples([payload])

    # --- run status and time left ----------------------------------------------------------------
    def _run_text(self, run: dict, timing: Timing | None = None) -> str:
        """``Run 3 · grpo · running``, and while it runs a second line: ``2 m 05 s · 40.1 s/step · ~31 m left``."""
        text = f"Run {run['id']} · {run['kind']} · {run['status']}"
        return text + (f"\n{timing.short_text(rate=True)}" if timing is not None and run["status"] == "running" else "")

    def _run_item(self, run_id: int) -> QListWidgetItem | None:
        for i in range(self.run_list.count()):
            if int(self.run_list.item(i).data(Qt.ItemDataRole.UserRole)) == run_id:
                return self.run_list.item(i)
        return None

    def on_status_changed(self, run_id: int, status: str) -> None:
        """A run's stored status changed (queued -> running): its line says so."""
        item = self._run_item(run_id)
        run = self.project.get_run(run_id) if item is not None and self.project is not None else None
        if run is not None:
            item.setText(self._run_text(run))

    def on_timing(self, run_id: int, timing: Timing) -> None:
        """The running job's elapsed time, speed and time left, on its line."""
        item = self._run_item(run_id)
        if item is not None:
            item.setText(self._run_text({"id": run_id, "kind": item.data(_KIND_ROLE), "status": "running"}, timing))
            item.setToolTip(f"Run {run_id}: {timing.text()}")

    def on_job_finished(self, run_id: int, status: str, error: str) -> None:
        run = self.project.get_run(run_id) if run_id not in self._live_evals and self.project is not None else None
        if run_id in self._live_evals or (run is not None and run["kind"] in EVALUATING_JOBS):  # ours or the CLI's
            self._live_evals.discard(run_id)
            self.refresh_evaluations()
        if run_id in self._live:
            self.plot.mark_finished(run_id)
            self._live.pop(run_id, None)
            self.refresh_runs(select=self.current_run)

    # --- samples -------------------------------------------------------------------------------
    def _add_samples(self, payloads: list[dict]) -> None:
        at_bottom = self.sample_table.verticalScrollBar().value() >= self.sample_table.verticalScrollBar().maximum() - 2
        for p in payloads:
            self.samples.append(p)
            row = self.sample_table.rowCount()
            self.sample_table.insertRow(row)
            reward = p.get("reward")
            cells = [str(p.get("step", "")), f"{reward:+.3f}" if isinstance(reward, (int, float)) else "",
                     str(p.get("length", "")), _one_line(p.get("prompt", ""), 60), _one_line(p.get("response", ""))]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col < 3:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.sample_table.setItem(row, col, item)
        while self.sample_table.rowCount() > MAX_SAMPLE_ROWS:
            self.sample_table.removeRow(0)
            self.samples.pop(0)
        if at_bottom:
            self.sample_table.scrollToBottom()
        if payloads:
            self.samples_note.hide()

    def _update_samples_note(self) -> None:
        run = self.project.get_run(self.current_run) if self.project is not None and self.current_run else None
        text = samples_note_text(run, len(self.samples))
        self.samples_note.setText(text)
        self.samples_note.setVisible(bool(text))

    def _show_sample(self) -> None:
        rows = self.sample_table.selectionModel().selectedRows()
        if not rows:
            return
        p = self.samples[rows[0].row()]
        comps = p.get("components") or {}
        parts = ", ".join(f"{k} {v:+.3f}" for k, v in comps.items() if isinstance(v, (int, float)))
        gold, reward = p.get("gold"), p.get("reward")
        text = (f"STEP {p.get('step', '?')}  reward "
                + (f"{reward:+.3f}" if isinstance(reward, (int, float)) else "?")
                + (f"  ({parts})" if parts else "")
                + (f"  gold {gold:+.3f}" if isinstance(gold, (int, float)) else f"  gold {gold}" if gold is not None else "")
                + f"\n\nPROMPT\n{p.get('prompt', '')}\n\nRESPONSE ({p.get('length', '?')} tokens)\n{p.get('response', '')}")
        self.sample_detail.setPlainText(text)  # model output: plain text only

    # --- alerts and over-optimisation ------------------------------------------------------------
    def current_metrics(self) -> dict:
        if self.current_run is None or self.project is None:
            return {}
        if self.current_run in self._live:
            return {k: (list(s), list(v)) for k, (s, v) in self._live[self.current_run].items()}
        return self.project.metrics(self.current_run)

    def _update_analysis(self) -> None:
        metrics = self.current_metrics()
        alerts = check_alerts(metrics)
        self.alert_list.clear()
        for a in alerts:
            item = QListWidgetItem(f"⚠ step {a.step}: {a.message}")
            item.setForeground(QColor("#8a4b00"))
            item.setData(Qt.ItemDataRole.UserRole, a.kind)
            self.alert_list.addItem(item)
        self.alert_summary.setText(f"{len(alerts)} alert(s) for run {self.current_run}" if alerts else
                                   f"No alerts for run {self.current_run}: KL, length and gold metric look healthy.")
        self.tabs.setTabText(1, f"Alerts ({len(alerts)})" if alerts else "Alerts")
        curve = overoptimisation_curve(metrics)
        self.proxy_curve.setData(curve["sqrt_kl"], curve["proxy"])
        self.gold_curve.setData(curve["gold_sqrt_kl"], curve["gold"])
        self._set_paired_curves(curve)
        self._update_other_over_curves()
        if not curve["sqrt_kl"]:
            self.over_note.setText("This run logs no KL yet (SFT and DPO have no sampled KL): nothing to plot.")
        elif curve["gold_key"] is None:
            self.over_note.setText(f"Proxy = {curve['proxy_key']}. Give the run a gold metric (rule-based task or a "
                                   "held-out reward model) to see where optimising the proxy stops helping.")
        else:
            self.over_note.setText(f"Proxy = {curve['proxy_key']}, gold = {curve['gold_key']}"
                                   f"{self._gold_model_note(self.current_run)}. When the gold curve "
                                   "bends down while the proxy keeps rising, the policy is over-optimising the "
                                   "reward model (Gao et al. 2022)." + self._win_rate_note(self.current_run))

    def _gold_model_note(self, run_id: int | None) -> str:
        """" (the held-out reward model NAME)" for a run measured by a gold reward model, else ""."""
        if self.project is None or run_id is None:
            return ""
        if run_id not in self._gold_notes:
            ref = str(((self.project.get_run(run_id) or {}).get("config") or {}).get("gold_reward_model") or "").strip()
            name = ref
            if ref:
                try:
                    name = artefacts.resolve(self.project, ref, (kinds.TEXT_REWARD_MODEL,)).name  # or a folder's
                except ValueError:
                    pass
            self._gold_notes[run_id] = f" (the held-out reward model {name!r})" if name else ""
        return self._gold_notes[run_id]

    def _run_label(self, run_id: int) -> str:
        run = self.project.get_run(run_id) if self.project is not None else None
        beta = (run or {}).get("config", {}).get("beta")
        return f"run {run_id}" + (f", β = {beta:g}" if isinstance(beta, (int, float)) else "")

    def _win_rate_note(self, run_id: int | None) -> str:
        """The PPO demo's final held-out comparison with the reference, when the run has one."""
        run = self.project.get_run(run_id) if self.project is not None and run_id is not None else None
        res = (run or {}).get("result") or {}
        out = ""
        if res.get("goodhart_gap") is not None and res.get("gold_centred_window_last") is not None:
            out += (f"\nLast 3 rollouts, in the reference's spread (0 = the reference): the proxy says "
                    f"{res['reward_window_last']:+.2f}, the gold reward {res['gold_centred_window_last']:+.2f}; "
                    f"Goodhart gap {res['goodhart_gap']:+.2f}.")
        if res.get("paired_goodhart_gap") is not None:
            out += (f"\nPaired check, {res.get('paired_n', '?')} responses drawn by the policy and the reference with "
                    f"the same random numbers: proxy gain {res['paired_proxy_gain']:+.2f}, gold gain "
                    f"{res['paired_gold_gain']:+.2f}; Goodhart gap {res['paired_goodhart_gap']:+.2f} "
                    f"± {res['paired_goodhart_gap_se']:.2f} (1 SE).")
        if res.get("paired_gold_drop") is not None and res.get("paired_gold_peak_step") is not None:
            peak, drop, se = res["paired_gold_peak_step"], res["paired_gold_drop"], res["paired_gold_drop_se"]
            where = "at the reference (step 0)" if peak == 0 else f"at step {peak} ({res['paired_gold_peak']:+.2f})"
            if res.get("paired_overoptimised"):
                out += (f"\nOver-optimised: the paired gold gain peaked {where} and then fell {drop:.2f} ± {se:.2f} "
                        "while the proxy kept rising.")
            elif drop > 2.0 * se:
                out += (f"\nThe paired gold gain peaked {where} and fell {drop:.2f} ± {se:.2f}, but the proxy did not "
                        "keep rising: a worse policy by both judges, not over-optimisation.")
            elif drop > 0:
                out += f"\nThe paired gold gain peaked {where}; its fall since, {drop:.2f} ± {se:.2f}, is within 2 SE."
            else:
                out += "\nThe paired gold gain was still at its highest at the last check."
        if res.get("win_rate_proxy") is not None and res.get("win_rate_gold") is not None:
            out += (f"\nFinal policy vs the reference on {res.get('eval_prompts', '?')} held-out prompts: win rate "
                    f"{res['win_rate_proxy']:.2f} judged by the proxy, {res['win_rate_gold']:.2f} by the gold reward.")
        return out

    def _set_paired_curves(self, curve: dict) -> None:
        """The selected run's paired checks and best-of-n curve, or nothing (and no legend rows) without them."""
        for kind, proxy_item, gold_item, names in (
                ("paired", self.paired_proxy_curve, self.paired_gold_curve,
                 ("proxy gain, paired check", "gold gain, paired check")),
                ("bon", self.bon_proxy_curve, self.bon_gold_curve, ("proxy, best-of-n", "gold, best-of-n"))):
            xs = curve.get(f"{kind}_sqrt_kl") or []
            proxy_item.setData(xs, curve.get(f"{kind}_proxy") or [])
            gold_item.setData(xs, curve.get(f"{kind}_gold") or [])
            self._set_legend_row(proxy_item, names[0] if xs else "")
            self._set_legend_row(gold_item, names[1] if xs else "")
        se = np.asarray(curve.get("paired_gold_se") or [], dtype=float)
        shown = np.isfinite(se) & (se > 0)  # the origin (SE 0) and runs that logged no SE get no bar
        self.paired_gold_err.setData(x=np.asarray(curve.get("paired_sqrt_kl") or [], dtype=float)[shown],
                                     y=np.asarray(curve.get("paired_gold") or [], dtype=float)[shown],
                                     height=2.0 * se[shown])

    def _set_legend_row(self, item, text: str) -> None:
        """Relabel ``item``'s legend row in place; an empty text hides the row, and the box holds only the
        rows shown."""
        legend = self.over_plot.plotItem.legend
        for sample, label in legend.items:
            if sample.item is item:
                if label.text == text and label.isVisibleTo(legend) == bool(text):
                    return
                label.setText(text)
                sample.setVisible(bool(text))
                label.setVisible(bool(text))
        # the box from the grid's preferred size, which leaves hidden rows out (pyqtgraph's updateSize adds up
        # every row's current height, hidden or not, so the box kept the height of all rows). The items stay in
        # the grid: taking them out of it (removeAt) made the app segfault on exit.
        grid = legend.layout
        grid.invalidate()
        hint = grid.effectiveSizeHint(Qt.SizeHint.PreferredSize)
        legend.resize(hint.width(), hint.height())

    def _update_other_over_curves(self) -> None:
        """Hollow markers for every other ticked run, so a β = 0 run can be read against a β > 0 run."""
        others = [r for r in self.checked_runs() if r != self.current_run] if self.project is not None else []
        proxy_x: list[float] = []
        proxy_y: list[float] = []
        gold_x: list[float] = []
        gold_y: list[float] = []
        shown: list[str] = []  # legend labels of the runs drawn
        for run_id in others:
            if run_id in self._live:  # still growing, in memory
                curve = overoptimisation_curve({k: (list(s), list(v)) for k, (s, v) in self._live[run_id].items()})
                label = self._run_label(run_id)
            else:
                if run_id not in self._finished_over:
                    self._finished_over[run_id] = (overoptimisation_curve(self.project.metrics(run_id)),
                                                   self._run_label(run_id))
                curve, label = self._finished_over[run_id]
            if not curve["sqrt_kl"]:
                continue
            shown.append(label)
            proxy_x += list(curve["sqrt_kl"])
            proxy_y += list(curve["proxy"])
            if curve["gold_key"] is not None:
                gold_x += list(curve["gold_sqrt_kl"])
                gold_y += list(curve["gold"])
        self.other_proxy_curve.setData(proxy_x, proxy_y)
        self.other_gold_curve.setData(gold_x, gold_y)
        names = "; ".join(shown)
        if shown and self.current_run is not None:  # short names: the legend shares the plot with the points
            own = f"{self._run_label(self.current_run)} (selected)"
            self._set_legend_row(self.proxy_curve, f"proxy, {own}")
            self._set_legend_row(self.gold_curve, f"gold, {own}")
        else:
            self._set_legend_row(self.proxy_curve, "proxy reward (optimised)")
            self._set_legend_row(self.gold_curve, "gold reward (the real goal)")
        self._set_legend_row(self.other_proxy_curve, f"proxy, {names}" if shown else "")
        self._set_legend_row(self.other_gold_curve, f"gold, {names}" if gold_x else "")

    def alert_kinds(self) -> list[str]:
        return [self.alert_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.alert_list.count())]

    # --- evaluations (the text_eval job) ---------------------------------------------------------
    def _checkpoint_runs(self, kind: str) -> list[int]:
        """Ids of the project's runs that saved a checkpoint of ``kind``, oldest first."""
        if self.project is None:
            return []
        return sorted({int(c["run_id"]) for c in self.project.checkpoints()
                       if c["kind"] == kind and c["run_id"] is not None})

    def eval_dialog(self) -> RunDialog:
        """The run dialog of the evaluation job, prefilled: the selected run's policy (when it saved one)
        and the project's latest text reward model as the judge of the win rate."""
        dialog = RunDialog(list_jobs(), EVAL_JOB, self)
        if self.current_run is not None and self.current_run in self._checkpoint_runs(kinds.TEXT_POLICY):
            dialog.form.set_value("policy_run", int(self.current_run))
        judges = self._checkpoint_runs(kinds.TEXT_REWARD_MODEL)
        settings = (self.project.get_run(self.current_run) or {}).get("config", {}) \
            if self.current_run is not None else {}
        gold = str(settings.get("gold_reward_model") or "").strip()
        if gold:  # a run with a held-out gold reward model: the win rate judged by it, not by what it optimised
            dialog.form.set_value("reward_model", gold if not gold.isdigit() else f"checkpoint:{gold}")
        elif judges:
            dialog.form.set_value("reward_run", judges[-1])
        if settings.get("prompt_source") == "project":  # trained on the project's prompts: evaluated on them
            dialog.form.set_value("prompt_source", "project")
        return dialog

    def request_evaluation(self) -> None:
        if self.project is None:
            return
        dialog = self.eval_dialog()
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.start_requested.emit(EVAL_JOB, dialog.result_config)

    def policy_reference(self, run_id: int | None) -> str:
        """``checkpoint:ID`` of the newest text policy run ``run_id`` saved ('' when it saved none)."""
        if self.project is None or run_id is None:
            return ""
        saved = [c for c in self.project.checkpoints(run_id) if c["kind"] == kinds.TEXT_POLICY]
        return f"checkpoint:{saved[-1]['id']}" if saved else ""

    def refusal_dialog(self) -> RunDialog:
        """The run dialog of the refusal evaluation, prefilled with the selected run's policy (when it saved
        one; otherwise the job's default, the bundled model)."""
        dialog = RunDialog(list_jobs(), REFUSAL_JOB, self)
        policy = self.policy_reference(self.current_run)
        if policy:
            dialog.form.set_value("model", policy)
        return dialog

    def request_refusal_evaluation(self) -> None:
        if self.project is None:
            return
        dialog = self.refusal_dialog()
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.start_requested.emit(REFUSAL_JOB, dialog.result_config)

    def refresh_evaluations(self) -> None:
        """The project's finished evaluations: text_eval newest first (plain text cells), and the refusal
        evaluations."""
        runs = [] if self.project is None else [r for r in self.project.runs(EVAL_JOB) if r["status"] == "completed"]
        self.eval_table.setRowCount(0)

        def number(value) -> str:
            return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"

        for run in reversed(runs):
            res = run.get("result") or {}
            k = res.get("k")
            cells = [str(run["id"]), _one_line(str(res.get("policy", "?")), 60), _prompts_cell(res),
                     number(res.get("pass_at_1")),
                     number(res.get("cons_at_k")) + (f" (k={k})" if k else ""), number(res.get("pass_at_k")),
                     number(res.get("win_rate"))]
            row = self.eval_table.rowCount()
            self.eval_table.insertRow(row)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col not in (1, 2):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if col == 2:
                    item.setToolTip(tip(text))
                if col == 6 and res.get("win_rate") is None and res.get("win_rate_skipped"):
                    item.setToolTip(tip(str(res["win_rate_skipped"])))
                self.eval_table.setItem(row, col, item)
        self.refusal_view.set_project(self.project)
        refusals = len(self.refusal_view.rows)
        self.eval_tabs.setTabText(0, f"Tasks and win rate ({len(runs)})" if runs else "Tasks and win rate")
        self.eval_tabs.setTabText(1, f"Refusal ({refusals})" if refusals else "Refusal")
        total = len(runs) + refusals
        self.tabs.setTabText(3, f"Evaluations ({total})" if total else "Evaluations")
