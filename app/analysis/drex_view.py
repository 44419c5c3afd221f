"""D-REX ranking: the noise-degradation curve and a person's corrections of the automatic order.

D-REX ranks rollouts of a cloned policy by their noise ε (less noise = better) and pairs only
levels at least a margin apart. Left: the degradation curve — every trajectory's true return
at its ε, the mean ± std per level — which the method assumes falls. Right: the level pairs
D-REX will train on, in automatic order, with each level's mean true return, whether the means
agree with the automatic verdict, and the person's override. Agree / Reverse / Equal store one
human comparison per trajectory pair across the two levels (one transaction); Clear undoes them
(the rows stay, soft-deleted). Watch plays one trajectory of each level side by side; pressing it
again moves on to the next trajectory of each level (selecting a pair shows their first frames).
The ``reward_model`` job (source ``drex``) uses the overrides instead of ε for those pairs.

Keys (in the table): A agree · R reverse · E equal · Z / Delete clear · W watch.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.labeling.frame_loader import FrameLoader
from app.labeling.players import FramePanel, PlaybackControls, SyncedPlayback
from app.labeling.writer import writer_for
from app.plots.export import with_export
from rlhf_core.envs.storage import item_fps, read_video
from rlhf_core.rewards.drex_overrides import (
    LevelPair,
    clear_level_override,
    drex_auto_pairs,
    drex_envs,
    drex_levels,
    level_override,
    set_level_override,
)
from rlhf_core.store import Project

COLUMNS = ["ε a", "ε b", "Return a", "Return b", "Auto verdict", "True means", "Your override"]
ACTIONS = (("agree", "Agree  (A)", "A", "The less noisy level is better, as D-REX assumes"),
           ("reverse", "Reverse  (R)", "R", "The NOISIER level is better: flip every pair of these two levels"),
           ("equal", "Equal  (E)", "E", "Neither level is better: every pair becomes a tie (0.5)"))


def _eps(e: float) -> str:
    return f"{e:.2f}"


class DrexView(QWidget):
    """The D-REX ranking panel (a tab of the Extrapolation page)."""

    def __init__(self, settings=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.project: Project | None = None
        self.levels = []
        self.pairs: list[LevelPair] = []
        self.states = []  # the override of each pair, same order
        self._watch_turn = 0
        self.frames = FrameLoader(self, capacity=16)  # videos are decoded on a worker thread
        self.frames.loaded.connect(self._on_frames_loaded)
        self.frames.failed.connect(self._on_frames_failed)
        self._watching: tuple[int, int] | None = None  # the pair Watch waits for while it decodes

        self.env_box = QComboBox()
        self.env_box.setMinimumWidth(160)
        self.env_box.setToolTip("Environments with noise-injected rollouts at two or more levels")
        self.env_box.currentTextChanged.connect(lambda _t: self.reload())
        self.gap_box = QDoubleSpinBox()
        self.gap_box.setRange(0.0, 1.0)
        self.gap_box.setSingleStep(0.05)
        self.gap_box.setDecimals(2)
        self.gap_box.setValue(0.3)
        self.gap_box.setToolTip("D-REX pairs only levels at least this far apart (the reward_model job's "
                                "drex_min_gap; 0.3 in the paper)")
        self.gap_box.valueChanged.connect(lambda _v: self.reload())
        head = QHBoxLayout()
        for w in (QLabel("Environment:"), self.env_box, QLabel("Pair levels at least"), self.gap_box,
                  QLabel("apart")):
            head.addWidget(w)
        head.addStretch(1)
        self.labeller_label = QLabel()
        self.labeller_label.setTextFormat(Qt.TextFormat.PlainText)
        head.addWidget(self.labeller_label)

        # ---- left: the degradation curve and the side-by-side player
        self.plot = pg.PlotWidget(background="w")
        self.plot.setTitle("Noise degradation: true return per ε", color="k")
        self.plot.setLabel("bottom", "ε (probability of a random action)")
        self.plot.setLabel("left", "true return")
        self.plot.setMenuEnabled(False)
        self.plot.addLegend(offset=(-10, 10), brush=pg.mkBrush(255, 255, 255, 210))
        self.playback = SyncedPlayback(self)
        self.panel_a, self.panel_b = FramePanel(), FramePanel()
        for p in (self.panel_a, self.panel_b):
            p.setMinimumSize(120, 90)
            p.setText("Watch: select a pair")
        self.playback.panels = [self.panel_a, self.panel_b]
        self.title_a, self.title_b = QLabel(), QLabel()
        self.watch_button = QPushButton("Watch  (W)")
        self.watch_button.setToolTip("Play one trajectory of each level side by side (again: the next ones)")
        self.watch_button.clicked.connect(self.watch)
        watch_box = QWidget()
        wl = QVBoxLayout(watch_box)
        wl.setContentsMargins(0, 0, 0, 0)
        watch_row = QHBoxLayout()
        watch_row.addWidget(self.watch_button)
        watch_hint = QLabel("one trajectory of each level, side by side; again: the next ones")
        watch_hint.setStyleSheet("color: #555;")
        watch_hint.setWordWrap(True)
        watch_row.addWidget(watch_hint, 1)
        wl.addLayout(watch_row)
        panels = QHBoxLayout()
        for title, panel in ((self.title_a, self.panel_a), (self.title_b, self.panel_b)):
            title.setTextFormat(Qt.TextFormat.PlainText)
            col = QVBoxLayout()
            col.addWidget(title)
            col.addWidget(panel, 1)
            panels.addLayout(col, 1)
        wl.addLayout(panels, 1)
        self.controls = PlaybackControls(self.playback)
        self.controls.play_button.setText("Play")
        for b in self.controls.findChildren(QPushButton):  # compact, so the scrub slider keeps its room
            b.setMaximumWidth(64)
        self.controls.slider.setMinimumWidth(80)
        wl.addWidget(self.controls)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(with_export(self.plot, "D-REX noise degradation"))
        left.addWidget(watch_box)
        left.setSizes([330, 270])

        # ---- right: the level pairs and the override buttons
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("drex_pairs")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeaderItem(2).setToolTip("Mean true return of level a (the less noisy one)")
        self.table.horizontalHeaderItem(3).setToolTip("Mean true return of level b")
        self.table.horizontalHeaderItem(5).setToolTip("Whether the levels' mean true returns order them as D-REX does")
        self.table.itemSelectionChanged.connect(self._on_selection_changed)
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for verdict, text, key, tip in ACTIONS:
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False, v=verdict: self.set_override(v))
            row.addWidget(b)
            self.buttons[verdict] = b
            QShortcut(QKeySequence(key), self, lambda v=verdict: self.set_override(v),
                      context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.clear_button = QPushButton("Clear  (Z)")
        self.clear_button.setToolTip("Undo your override of the selected pairs (back to the automatic order)")
        self.clear_button.clicked.connect(self.clear_override)
        row.addWidget(self.clear_button)
        for key in ("Z", "Delete"):
            QShortcut(QKeySequence(key), self, self.clear_override, context=Qt.ShortcutContext.WidgetWithChildrenShortcut
                      ).setWhatsThis(f"{self.clear_button.text().split('  (')[0]}: {self.clear_button.toolTip()}")
        QShortcut(QKeySequence("W"), self, self.watch, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.summary = QLabel()
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.summary.setWordWrap(True)
        self.status = QLabel()
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setWordWrap(True)
        hint = QLabel("Pairs D-REX trains on: automatically the less noisy level (a) is better. Select pairs and "
                      "agree, reverse or call them equal; your answer is stored as your labels of every "
                      "trajectory pair across the two levels and wins over ε in the reward model (source drex).")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #555;")
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(hint)
        rl.addWidget(self.table, 1)
        rl.addLayout(row)
        rl.addWidget(self.status)
        rl.addWidget(self.summary)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([500, 580])
        self.empty = QLabel("No noise-injected rollouts at two or more levels yet. With Run → New Run…, train "
                            "'Behavioural cloning' on your demonstrations, then 'Collect trajectories' from it "
                            "(policy bc, noise schedule drex_continuous or drex_discrete).")
        self.empty.setWordWrap(True)
        self.empty.setTextFormat(Qt.TextFormat.PlainText)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.empty)
        layout.addWidget(splitter, 1)
        self.body = splitter

    # ------------------------------------------------------------------ data
    def labeller_name(self) -> str:
        settings = self.settings or getattr(self.window(), "settings", None)
        return settings.labeller if settings is not None else "you"

    def set_project(self, project: Project | None) -> None:
        """Show ``project`` (also called to refresh: the environment and selection are kept)."""
        if project is not self.project:
            self.frames.clear()
            self._watching = None
            self.playback.set_clips([None, None], 30)
        self.project = project
        envs = drex_envs(project) if project is not None else []
        current = self.env_box.currentText()
        self.env_box.blockSignals(True)
        self.env_box.clear()
        self.env_box.addItems(envs)
        if current in envs:
            self.env_box.setCurrentText(current)
        self.env_box.blockSignals(False)
        self.empty.setVisible(not envs)
        self.body.setVisible(bool(envs))
        self.reload()

    def refresh(self) -> None:
        self.set_project(self.project)

    def env_id(self) -> str:
        return self.env_box.currentText()

    def reload(self) -> None:
        """Re-read the levels, pairs and overrides of the chosen environment; keep the selection."""
        self.labeller_label.setText(f"Labeller: {self.labeller_name()}")
        keep = {(p.better.epsilon, p.worse.epsilon) for p in self.selected_pairs()}
        env = self.env_id()
        self.levels = drex_levels(self.project, env) if self.project is not None and env else []
        self.pairs = drex_auto_pairs(self.levels, self.gap_box.value())
        self.table.blockSignals(True)
        self.table.clearSelection()
        self.table.setRowCount(len(self.pairs))
        self.states = [level_override(self.project, pair) for pair in self.pairs]
        for r, (pair, state) in enumerate(zip(self.pairs, self.states)):
            agree = pair.true_returns_agree
            cells = [_eps(pair.better.epsilon), _eps(pair.worse.epsilon), f"{pair.better.mean_return:.1f}",
                     f"{pair.worse.mean_return:.1f}", f"ε={_eps(pair.better.epsilon)} better",
                     "agree" if agree else "DISAGREE", state.text()]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, r)
                if c in (0, 1, 2, 3):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 5 and not agree:
                    item.setForeground(Qt.GlobalColor.darkRed)
                    item.setToolTip(f"ε={_eps(pair.worse.epsilon)} has the higher mean true return: "
                                    "the automatic label of this pair is probably wrong")
                if c == 6 and state.verdict is not None:
                    item.setForeground(Qt.GlobalColor.darkBlue)
                    item.setToolTip(f"{state.labelled} of {state.total} trajectory pairs carry your label")
                self.table.setItem(r, c, item)
        for r, pair in enumerate(self.pairs):
            if (pair.better.epsilon, pair.worse.epsilon) in keep:
                self._add_row_to_selection(r)
        self.table.blockSignals(False)
        if self.pairs and not self.table.selectedItems():
            self.table.selectRow(0)
        self.summary.setText(self._summary_text())
        self._draw_curve()

    def _add_row_to_selection(self, row: int) -> None:
        model = self.table.model()
        sel = QItemSelection(model.index(row, 0), model.index(row, model.columnCount() - 1))
        self.table.selectionModel().select(sel, QItemSelectionModel.SelectionFlag.Select)

    def _summary_text(self) -> str:
        if not self.levels:
            return ""
        n_traj = sum(len(lv.trajectory_ids) for lv in self.levels)
        means = [lv.mean_return for lv in self.levels]
        rises = sum(b > a for a, b in zip(means, means[1:]))
        wrong = sum(not p.true_returns_agree for p in self.pairs)
        overridden = sum(state.verdict is not None for state in self.states)
        sources = sorted({s for lv in self.levels for s in lv.sources})
        lines = [f"{len(self.levels)} noise levels, {n_traj} trajectories ({', '.join(sources)}). "
                 f"The mean true return {'falls at every step' if not rises else f'rises at {rises} of {len(means) - 1} steps'}"
                 f" of ε; {wrong} of {len(self.pairs)} level pairs are ordered against their mean true returns; "
                 f"{overridden} {'carries' if overridden == 1 else 'carry'} your override."]
        if len(sources) > 1:
            lines.append(f"Warning: the levels mix policies ({', '.join(sources)}); D-REX assumes one cloned policy "
                         "with more or less noise.")
        return "\n".join(lines)

    def _draw_curve(self) -> None:
        self.plot.clear()
        if not self.levels:
            return
        eps = np.array([lv.epsilon for lv in self.levels])
        mean = np.array([lv.mean_return for lv in self.levels])
        std = np.array([lv.std_return for lv in self.levels])
        self.plot.addItem(pg.ErrorBarItem(x=eps, y=mean, top=std, bottom=std, beam=0.012,
                                          pen=pg.mkPen("#2ca02c", width=1)))
        self.plot.plot(eps, mean, pen=pg.mkPen("#2ca02c", width=2), symbol="o", symbolSize=7,
                       symbolBrush=pg.mkBrush("#2ca02c"), name="mean ± std")
        xs = np.concatenate([[lv.epsilon] * len(lv.returns) for lv in self.levels])
        ys = np.concatenate([lv.returns for lv in self.levels])
        self.plot.plot(xs, ys, pen=None, symbol="o", symbolSize=6, symbolPen=None,
                       symbolBrush=pg.mkBrush(31, 119, 180, 170), name="one trajectory")
        for pair in self.selected_pairs()[:1]:
            for e, colour, text in ((pair.better.epsilon, "#1f77b4", "a"), (pair.worse.epsilon, "#d62728", "b")):
                self.plot.addItem(pg.InfiniteLine(pos=e, angle=90, pen=pg.mkPen(colour, style=Qt.PenStyle.DashLine),
                                                  label=f"{text}: ε={_eps(e)}",
                                                  labelOpts={"position": 0.08, "color": colour}))

    # ------------------------------------------------------------------ overrides
    def selected_pairs(self) -> list[LevelPair]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedIndexes()}) if self.pairs else []
        return [self.pairs[r] for r in rows if r < len(self.pairs)]

    def set_override(self, verdict: str):
        """Store ``verdict`` for every selected level pair (one transaction, in the label writer: the
        GUI thread never waits on the project's lock); returns the write (its ``result``: the ids)."""
        pairs = self.selected_pairs()
        if self.project is None or not pairs:
            self.status.setText("Select a pair of noise levels first.")
            return None
        project, name, env_id = self.project, self.labeller_name(), self.env_id()

        def write(p) -> list[int]:
            labeller = p.ensure_labeller(name, "human")
            ids: list[int] = []
            with p.db.atomic():
                for pair in pairs:
                    ids += set_level_override(p, pair, verdict, labeller_id=labeller, env_id=env_id)
            return ids

        def done(ids: list[int]) -> None:
            if project is not self.project:
                return
            what = ", ".join(f"ε={_eps(p.better.epsilon)} vs {_eps(p.worse.epsilon)}" for p in pairs[:3])
            more = f" and {len(pairs) - 3} more" if len(pairs) > 3 else ""
            self.status.setText(f"{verdict.capitalize()}: {what}{more} — {len(ids)} trajectory pairs labelled. "
                                "Clear (Z) undoes it.")
            self.reload()

        self.status.setText("Saving…")
        return writer_for(project).submit(write, done, lambda text: self._on_write_failed(project, text))

    def clear_override(self):
        """Undo the selected pairs' overrides (in the label writer); returns the write (``result``: how many)."""
        pairs = self.selected_pairs()
        if self.project is None or not pairs:
            return None
        project = self.project

        def write(p) -> int:
            with p.db.atomic():
                return sum(clear_level_override(p, pair) for pair in pairs)

        def done(n: int) -> None:
            if project is not self.project:
                return
            self.status.setText(f"Cleared: {n} labels undone (kept as deleted records); "
                                f"{'that pair is' if len(pairs) == 1 else 'those pairs are'} ranked by ε again."
                                if n else "Nothing to clear: the selected pairs follow the automatic order.")
            self.reload()

        return writer_for(project).submit(write, done, lambda text: self._on_write_failed(project, text))

    def _on_write_failed(self, project, text: str) -> None:
        if project is self.project:
            self.status.setText(text)  # nothing was stored: the pair keeps its verdict

    # ------------------------------------------------------------------ watching
    def _on_selection_changed(self) -> None:
        self._watch_turn = 0
        self._draw_curve()
        self._preview()

    def _preview(self) -> None:
        """The first frame of the first trajectory of each level (cheap: one frame decoded)."""
        pairs = self.selected_pairs()
        if self.project is None or not pairs:
            return
        self._watching = None
        self.playback.pause()
        stills = []
        for title, level, side in ((self.title_a, pairs[0].better, "a"), (self.title_b, pairs[0].worse, "b")):
            item = self.project.get_item(level.trajectory_ids[0])
            path = item.get("media_path")
            try:
                stills.append(read_video(self.project.abspath(path), 0, 1) if path else None)
            except Exception as exc:  # a broken video file: no still, and say why
                stills.append(None)
                self.status.setText(f"Could not decode the video of trajectory {item['id']}: "
                                    f"{type(exc).__name__}: {exc}")
            title.setText(f"{side}: ε={_eps(level.epsilon)} · {len(level.trajectory_ids)} trajectories")
        self.playback.set_clips(stills, 30)

    def watch(self) -> tuple[int, int] | None:
        """Play trajectory k of level a next to trajectory k of level b (k advances on each call)."""
        pairs = self.selected_pairs()
        if self.project is None or not pairs:
            return None
        pair = pairs[0]
        k = self._watch_turn
        self._watch_turn += 1
        ids = (pair.better.trajectory_ids[k % len(pair.better.trajectory_ids)],
               pair.worse.trajectory_ids[k % len(pair.worse.trajectory_ids)])
        for title, iid, level, side in ((self.title_a, ids[0], pair.better, "a"),
                                        (self.title_b, ids[1], pair.worse, "b")):
            n = len(level.trajectory_ids)
            title.setText(f"{side}: ε={_eps(level.epsilon)} · trajectory {iid} "
                          f"({level.trajectory_ids.index(iid) + 1} of {n})")
        self._watching = ids
        frames = [self.frames.request(self.project, self.project.get_item(iid)) for iid in ids]
        if any(f is None for f in frames):  # decoding on the worker thread: plays when both are in
            self.playback.pause()
            self.playback.set_clips([None, None], 30)
            for panel in (self.panel_a, self.panel_b):
                panel.setText("decoding…")
            return ids
        self._play(ids, frames)
        return ids

    def _play(self, ids: tuple[int, int], frames: list) -> None:
        self._watching = None
        self.playback.set_clips(frames, item_fps(self.project, self.project.get_item(ids[0])))
        self.playback.play()

    def _on_frames_loaded(self, key, _frames) -> None:
        if self._watching is None or key not in self._watching or self.project is None:
            return
        frames = [self.frames.cached(iid) for iid in self._watching]
        if all(f is not None for f in frames):
            self._play(self._watching, frames)

    def _on_frames_failed(self, key, message: str) -> None:
        if self._watching is not None and key in self._watching:
            self._watching = None
            self.status.setText(f"Could not decode the video of trajectory {key}: {message}")
            for panel in (self.panel_a, self.panel_b):
                panel.setText("could not decode the video")  # not "decoding…" for ever

    def hideEvent(self, event) -> None:  # noqa: N802
        self.playback.pause()
        super().hideEvent(event)
