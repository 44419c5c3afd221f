"""A model of another family trains from the window: New Run ▸ Supervised fine-tuning, a remembered tiny GPT-2
folder picked in the Model picker, Start; the run completes and saves a GPT-2 policy that loads again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import needs_model

pytest.importorskip("PySide6")

DEMONSTRATIONS = (("Name a fruit.", "An apple."), ("Say hello.", "Hello there!"),
                  ("What colour is the sky?", "Blue, on a clear day."), ("Count to three.", "One, two, three."))


def drive_new_run(qtbot, window, steps) -> list[str]:
    """Open New Run (modal, as the menu does) and run ``steps(dialog)`` inside it; the problems met (a failing
    step rejects the dialog instead of leaving the modal loop waiting)."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.training.config_form import RunDialog

    problems: list[str] = []

    def drive() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, RunDialog):
            QTimer.singleShot(20, drive)
            return
        try:
            steps(dialog)
        except BaseException as exc:  # noqa: BLE001 - reported by the test, after the dialog has closed
            problems.append(repr(exc))
            dialog.reject()

    QTimer.singleShot(0, drive)
    window.new_run_dialog()
    return problems


def click_row(qtbot, view, rect) -> None:
    from PySide6.QtCore import Qt

    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


@needs_model
def test_sft_of_a_remembered_gpt2_folder_runs_from_the_new_run_dialog(qtbot, window, converted_model, tmp_path):
    from PySide6.QtCore import Qt

    from app.settings import Settings
    from app.training.config_form import ArtefactBox
    from rlhf_core.text.model import load_model, load_tokenizer, make_tiny_model

    gpt2 = make_tiny_model(tmp_path / "tiny-gpt2", tokenizer=load_tokenizer(converted_model), family="gpt2")
    Settings().add_model_folder(str(gpt2))  # added with "…" earlier: remembered for this user
    project = window.project
    for prompt, answer in DEMONSTRATIONS:
        project.add_item("response", prompt_id=project.add_prompt(prompt), text=answer, source="demonstration",
                         model_id=None)

    def steps(dialog) -> None:
        row = dialog._rows["sft"]
        dialog.job_list.scrollToItem(row)
        click_row(qtbot, dialog.job_list, dialog.job_list.visualItemRect(row))
        assert dialog.spec.name == "sft"
        box = dialog.form.editors["model"]
        assert isinstance(box, ArtefactBox) and box.text() == ""  # the bundled model until one is picked
        index = box.findData(str(gpt2))
        assert index > 0 and box.itemText(index) == "tiny-gpt2 — your folder · gpt2"
        box.showPopup()
        view = box.view()
        qtbot.waitUntil(view.isVisible)
        click_row(qtbot, view, view.visualRect(box.model().index(index, 0)))
        qtbot.waitUntil(lambda: not view.isVisible())
        assert box.text() == str(gpt2)
        dialog.form.editors["epochs"].setValue(1)
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)

    problems = drive_new_run(qtbot, window, steps)
    assert problems == []
    runs = project.runs("sft")
    assert len(runs) == 1 and runs[0]["config"]["model"] == str(gpt2)
    run_id = runs[0]["id"]
    qtbot.waitUntil(lambda: project.get_run(run_id)["status"] in ("completed", "failed", "cancelled"),
                    timeout=180_000)
    run = project.get_run(run_id)
    assert run["status"] == "completed", run["error"]
    assert window.stack.currentWidget() is window.runs_page  # Start shows the run on the Runs page
    assert run["result"]["device"] == "cpu" and run["result"]["examples"] == len(DEMONSTRATIONS)

    checkpoint = project.checkpoints(run_id)[0]
    saved = Path(project.abspath(checkpoint["path"]))
    config = json.loads((saved / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert json.loads((saved / "workbench_policy.json").read_text())["base_model"] == str(gpt2)
    lm = load_model(str(saved))
    assert type(lm.model).__name__ == "GPT2LMHeadModel" and lm.model.config.n_layer == 2
