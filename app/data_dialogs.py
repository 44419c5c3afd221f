"""File-menu transfers of control data: trajectories to and from Minari datasets (a small dialog each)
and clip labels as JSON Lines (a file dialog). The work is ``rlhf_core.io``'s (``minari_io``,
``comparisons``), imported on first use: showing the window needs neither minari nor gymnasium.

Each ``export_*``/``import_*`` takes the main window and, for tests and scripts, the answers its dialog
would ask for; a failure is one sentence in the window's error panel and nothing is written.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from pathlib import Path

from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QLineEdit, QWidget

from app.errors import file_error_text
from app.plain import plain_label

RANKING_CHOICES = (
    ("none", "No ranking: demonstrations (bc takes them)"),
    ("return", "Rank by return (T-REX: reward_model from rankings)"),
    ("order", "Rank in the dataset's order, first = worst (T-REX)"),
)
_ERRORS = (ValueError, OSError, sqlite3.Error)


def default_dataset_id(project_name: str, env_id: str) -> str:
    """``workbench/<project>-<env>-v0`` in the characters Minari allows."""
    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "data"

    return f"workbench/{slug(project_name)}-{slug(env_id)}-v0"


class MinariExportDialog(QDialog):
    """Which environment's trajectories, under which dataset id; the id is checked as it is typed."""

    def __init__(self, envs: dict[str, int], project_name: str, folder: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export trajectories as a Minari dataset")
        self.project_name = project_name
        self.env = QComboBox()
        for env_id, n in sorted(envs.items()):
            self.env.addItem(f"{env_id} ({n} trajectories)", env_id)
        self.dataset_id = QLineEdit(default_dataset_id(project_name, self.env_id()))
        self.dataset_id.setToolTip("Minari's naming rule: namespace/name-vN (letters, digits, '-' and '_').")
        self._typed = False
        self.dataset_id.textEdited.connect(lambda _: setattr(self, "_typed", True))
        self.env.currentIndexChanged.connect(self._env_changed)
        self.problem = plain_label("")
        self.problem.setStyleSheet("color: #b00020")
        self.problem.setWordWrap(True)
        note = plain_label(f"Written into Minari's data folder {folder} (MINARI_DATASETS_PATH); "
                           "minari.load_dataset(ID) finds it there. Observations, actions, rewards, "
                           "terminations and truncations of every trajectory; no video.")
        note.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Environment", self.env)
        form.addRow("Dataset id", self.dataset_id)
        form.addRow("", self.problem)
        form.addRow(note)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self.dataset_id.textChanged.connect(self._check)
        self.setMinimumWidth(560)
        self._check()

    def env_id(self) -> str:
        return self.env.currentData() or ""

    def _env_changed(self) -> None:
        if not self._typed:
            self.dataset_id.setText(default_dataset_id(self.project_name, self.env_id()))

    def _check(self) -> None:
        from rlhf_core.io.minari_io import MinariError, check_dataset_id

        try:
            check_dataset_id(self.dataset_id.text())
            problem = ""
        except MinariError as exc:
            problem = str(exc)
        self.problem.setText(problem)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not problem and bool(self.env_id()))


class MinariImportDialog(QDialog):
    """A dataset of Minari's data folder, and whether to rank its episodes for T-REX."""

    def __init__(self, datasets: list[str], folder: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Import a Minari dataset as demonstrations")
        self.dataset = QComboBox()
        self.dataset.setEditable(True)
        self.dataset.addItems(datasets)
        self.dataset.setToolTip("A dataset id (namespace/name-vN) of Minari's data folder.")
        self.ranking = QComboBox()
        for key, text in RANKING_CHOICES:
            self.ranking.addItem(text, key)
        note = plain_label(f"Read from Minari's data folder {folder} (MINARI_DATASETS_PATH); never downloaded "
                           "(`minari download ID` fetches one from the hub). Each episode becomes a trajectory "
                           "of source 'import'; a dataset of an environment the workbench cannot make, or with "
                           "missing fields, imports nothing.")
        note.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Dataset", self.dataset)
        form.addRow("Ranking", self.ranking)
        form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Import")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.setMinimumWidth(560)

    def values(self) -> tuple[str, str]:
        return self.dataset.currentText().strip(), self.ranking.currentData()


def _project(window, what: str):
    if window.project is None:
        window.show_error("No project open", f"Open a project to {what}.")
    return window.project


def export_minari(window, env_id: str | None = None, dataset_id: str | None = None) -> dict | None:
    """Export the open project's trajectories of one environment as a Minari dataset (the dialog asks
    which, unless both are given); the report, or None when nothing was written."""
    from rlhf_core.io import minari_io

    project = _project(window, "export its trajectories")
    if project is None:
        return None
    if env_id is None or dataset_id is None:
        envs = Counter(t["env_id"] for t in project.items("trajectory") if t["env_id"])
        if not envs:
            window.show_error("Nothing to export", "The project has no trajectories yet: roll some out (Run ▸ New "
                              "Run ▸ rollouts) or record keyboard demonstrations first.")
            return None
        dialog = MinariExportDialog(dict(envs), project.name, minari_io.datasets_folder(), window)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        env_id, dataset_id = dialog.env_id(), dialog.dataset_id.text()
    try:
        report = minari_io.export_minari(project, env_id, dataset_id)
    except _ERRORS as exc:
        window.show_error("Nothing was exported", str(exc))
        return None
    window.statusBar().showMessage(f"Exported {report.episodes} trajectories of {report.env_id} as the Minari dataset "
                                   f"{report.dataset_id} ({report.path}).", 10000)
    return report.as_dict()


def import_minari(window, dataset_id: str | None = None, ranking: str = "none") -> dict | None:
    """Import a Minari dataset of Minari's data folder into the open project (the dialog asks which,
    unless given); the report, or None when nothing was written."""
    from rlhf_core.io import minari_io

    project = _project(window, "import a Minari dataset into")
    if project is None:
        return None
    if dataset_id is None:
        dialog = MinariImportDialog(minari_io.local_datasets(), minari_io.datasets_folder(), window)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        dataset_id, ranking = dialog.values()
    try:
        report = minari_io.import_minari(project, dataset_id, ranking=ranking)
    except _ERRORS as exc:
        project.rollback()
        window.show_error("Nothing was imported", str(exc))
        return None
    window.project_page.refresh(project)
    ranked = f" and ranked them ({report.ranking})" if report.ranking_id else ""
    window.statusBar().showMessage(f"Imported {len(report.trajectory_ids)} episodes of {report.env_id} from "
                                   f"{report.dataset_id}{ranked}.", 10000)
    return report.as_dict()


def export_comparisons(window, path: str | Path | None = None) -> dict | None:
    """Write the open project's clip and trajectory labels as JSON Lines (a save dialog unless ``path``)."""
    from rlhf_core.io.comparisons import export_comparisons as export

    project = _project(window, "export its labels")
    if project is None:
        return None
    if path is None:
        path, _ = QFileDialog.getSaveFileName(window, "Export clip labels", str(Path.home() / "clip-labels.jsonl"),
                                              "JSON Lines (*.jsonl)")
        if not path:
            return None
    try:
        report = export(project, path)
    except OSError as exc:
        window.show_error("Export failed", f"Could not write {path}: {exc.strerror or exc}")
        return None
    window.statusBar().showMessage(f"Exported {report.comparisons} comparisons and {report.rankings} rankings of clips "
                                   f"to {report.path.name}.", 10000)
    return report.as_dict()


def import_comparisons(window, path: str | Path | None = None) -> dict | None:
    """Import clip labels written by :func:`export_comparisons` into the open project, which must hold
    their trajectories (an open dialog unless ``path``)."""
    from rlhf_core.io.comparisons import import_comparisons as load

    project = _project(window, "import clip labels into")
    if project is None:
        return None
    if path is None:
        path, _ = QFileDialog.getOpenFileName(window, "Import clip labels", str(Path.home()),
                                              "JSON Lines (*.jsonl *.json);;All files (*)")
        if not path:
            return None
    try:
        report = load(project, path)
    except (*_ERRORS, RecursionError, MemoryError) as exc:
        project.rollback()
        window.show_error("Nothing was imported", file_error_text(exc, path, project.folder))
        return None
    window.project_page.refresh(project)
    window.statusBar().showMessage(f"Imported {report.comparisons_added} comparisons and {report.rankings_added} "
                                   f"rankings ({report.already_present} already present) from {Path(path).name}.",
                                   10000)
    return report.as_dict()
