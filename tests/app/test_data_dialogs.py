"""File ▸ Minari and clip-label transfers in the real window: the four menu entries, the export dialog's
live id check, an export minari reads, an import with a ranking, a refused import in the error panel."""

from __future__ import annotations

import minari
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from app import data_dialogs

ENV = "CartPole-v1"
DATASET = "workbench/app-cartpole-v0"


@pytest.fixture
def with_trajectories(window, tmp_path, monkeypatch):
    from rlhf_core.envs.make import close_env, make_env
    from rlhf_core.envs.policies import RandomPolicy
    from rlhf_core.envs.rollout import rollout
    from rlhf_core.envs.storage import save_trajectory

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env = make_env(ENV, render=False)
    ids = [save_trajectory(window.project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=20,
                                                   render=False, source={"kind": "random"})) for s in range(3)]
    close_env(env)
    return window, ids


def test_file_menu_has_the_transfers(window):
    file_menu = window.menuBar().actions()[0].menu()
    texts = [a.text() for a in file_menu.actions()]
    for text in ("Export &Trajectories (Minari)…", "Import Demonstrations (&Minari)…",
                 "Export Clip &Labels (JSONL)…", "Import Clip La&bels (JSONL)…"):
        assert text in texts


def test_export_dialog_checks_the_id_as_it_is_typed(qtbot, tmp_path):
    dialog = data_dialogs.MinariExportDialog({ENV: 3, "Pendulum-v1": 1}, "My <b>project</b>", tmp_path)
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert dialog.env_id() == ENV and dialog.dataset_id.text() == "workbench/my-b-project-b-cartpole-v1-v0"
    assert ok.isEnabled() and dialog.problem.text() == ""
    dialog.env.setCurrentIndex(1)  # an untouched id follows the environment
    assert dialog.dataset_id.text().endswith("-pendulum-v1-v0")
    qtbot.keyClicks(dialog.dataset_id, " x")
    assert not ok.isEnabled() and "is not a Minari dataset id" in dialog.problem.text()
    assert dialog.problem.textFormat() == Qt.TextFormat.PlainText
    dialog.env.setCurrentIndex(0)  # a typed id is kept
    assert dialog.dataset_id.text().endswith(" x")


def test_export_then_import_with_a_ranking(qtbot, with_trajectories, tmp_path):
    window, ids = with_trajectories
    report = data_dialogs.export_minari(window, ENV, DATASET)
    assert report["trajectory_ids"] == ids
    assert minari.load_dataset(DATASET).total_episodes == 3

    dialog = data_dialogs.MinariImportDialog([DATASET], tmp_path / "minari")
    qtbot.addWidget(dialog)
    dialog.ranking.setCurrentIndex(1)
    assert dialog.values() == (DATASET, "return")

    got = data_dialogs.import_minari(window, DATASET, "return")
    assert len(got["trajectory_ids"]) == 3 and got["ranking_id"] is not None
    assert window.project.counts()["trajectories"] == 6
    assert data_dialogs.import_minari(window, DATASET) is None  # a second time: refused, said in words
    assert "already in this project" in window.error_panel.text.toPlainText()
    assert window.project.counts()["trajectories"] == 6

    labels = tmp_path / "labels.jsonl"
    assert data_dialogs.export_comparisons(window, labels)["rankings"] == 1
    again = data_dialogs.import_comparisons(window, labels)
    assert again["already_present"] == 1 and again["rankings_added"] == 0
