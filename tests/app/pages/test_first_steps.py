"""What a researcher meets first: the Project page's next steps (each a button that goes there), and the
empty states that say what to do — Label these →, the extrapolation demo button, the text reward model's
empty plot, "Show learned reward" with no model, DPO's empty samples, one Correct button."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialog, QPushButton

from tests.app.conftest import wait_saved
from tests.conftest import add_marker_pairs

from rlhf_core import config as cfg
from rlhf_core.jobs import NullContext, execute_job, get_job


def _run_job(project, job: str, **settings) -> dict:
    spec = get_job(job)
    out = execute_job(spec, cfg.from_dict(spec.config_class(), settings), NullContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    return out.result


@pytest.fixture
def dialogs(monkeypatch):
    """RunDialogs the window opens, recorded and cancelled instead of waiting for a person."""
    from app.training import config_form

    opened = []
    monkeypatch.setattr(config_form.RunDialog, "exec", lambda self: opened.append(self) or QDialog.DialogCode.Rejected)
    return opened


def _steps(window):
    page = window.project_page
    return [(label.text(), button.text()) for label, button in zip(page.step_labels, page.step_buttons)]


def test_a_project_opens_on_its_next_steps_and_each_button_goes_there(window, qtbot, dialogs):
    project = window.project
    page = window.project_page
    assert window.stack.currentWidget() is page  # the start page
    assert _steps(window) == [
        ("No trajectories yet: roll out a policy to make clips to compare", "Collect trajectories →"),
        ("No text responses yet: sample several per prompt to compare", "Generate text →")]
    page.step_buttons[0].click()
    assert [d.spec.name for d in dialogs] == ["rollouts"]  # the job, in the New Run dialog
    page.step_buttons[1].click()
    assert window.stack.currentWidget() is window.generate_page

    # collected with the rollouts job's defaults: pairs wait; reopened, the project shows its Project page
    queued = _run_job(project, "rollouts", env_id="CartPole-v1")["queued_pairs"]
    window.show_page("runs")
    assert window.open_project(project.folder)
    assert window.stack.currentWidget() is window.project_page
    assert _steps(window)[0] == (f"{queued} clip pairs waiting for a label", "Label clips →")
    window.project_page.step_buttons[0].click()
    assert window.stack.currentWidget() is window.clip_page and window.clip_page.current is not None

    # labelled: the next step is a reward model
    _run_job(window.project, "label_pairs", teacher="oracle")
    window.project_page.refresh(window.project)
    assert _steps(window)[0] == (f"{queued} clip labels, no reward model yet", "Train a reward model →")
    window.project_page.step_buttons[0].click()
    assert dialogs[-1].spec.name == "reward_model"


def test_responses_to_compare_are_queued_by_the_step_and_by_label_these(window, qtbot):
    project = window.project
    pid = project.add_prompt("Name a colour.")
    for text in ("Red.", "Blue.", "Green."):
        project.add_item("response", prompt_id=pid, text=text, model_id="m")
    window.project_page.refresh(project)
    assert _steps(window)[0] == ("Responses to compare and no text pairs queued (3 pairs possible)",
                                 "Queue and label text →")
    window.project_page.step_buttons[0].click()
    wait_saved(qtbot)
    view = window.text_page.pairs
    assert window.stack.currentWidget() is window.text_page and window.text_page.tabs.currentWidget() is view
    assert project.waiting_count("response") == 3 and view.current is not None and view.pair_widget.isVisible()

    # Generate text's "Label these →": more responses, pairs queued and shown, no "Queue pairs" click needed
    for text in ("Yellow.", "Purple."):
        project.add_item("response", prompt_id=pid, text=text, model_id="m")
    while view.current is not None:  # label what waits
        qtbot.keyClick(view, Qt.Key.Key_Left)
    wait_saved(qtbot)
    assert view.current is None
    window.show_page("generate")
    window.generate_page.label_button.click()
    wait_saved(qtbot)
    assert window.stack.currentWidget() is window.text_page
    assert project.waiting_count("response") == 10 - 3  # the 7 pairs not labelled yet
    assert view.current is not None and not view.empty_label.isVisible()
    # pairs already waiting: nothing is queued twice
    assert window.text_page.label_responses() is None


def test_extrapolation_page_has_a_button_that_opens_the_demo(window, dialogs):
    window.show_page("extrapolation")
    page = window.extrapolation_page
    button = page.findChild(QPushButton, "run_extrapolation_demo")
    assert button.text() == "Run the extrapolation demo…" and button.isVisible()
    assert page.stats.text().startswith("No finished extrapolation runs yet. Press “Run the extrapolation demo…”")
    button.click()
    assert [d.spec.name for d in dialogs] == ["extrapolation_demo"]


def test_text_reward_page_empty_plot_points_at_the_train_button(window):
    from app.pages.text_reward_page import NO_MODEL_TEXT

    window.show_page("text_rm")
    page = window.text_reward_page
    assert page.plot.empty_label.isVisible() and page.plot.empty_label.text() == NO_MODEL_TEXT
    assert "list" not in NO_MODEL_TEXT and "“Train reward model…”" in NO_MODEL_TEXT
    assert page.train_button.text() == "Train reward model…" and page.train_button.isVisible()


def test_show_learned_reward_says_why_no_strip(window, qtbot):
    project = window.project
    _run_job(project, "rollouts", env_id="CartPole-v1")
    assert window.open_project(project.folder)
    project = window.project  # reopened: the pages read the new clips
    window.show_page("clips")
    view = window.clip_page
    assert view.current is not None and view.strip_box.isChecked()
    QApplication.processEvents()
    assert not view.left_strip.isVisible() and view.strip_note.isVisible()
    assert view.strip_note.text() == (
        "Show learned reward: this project has no reward model of CartPole-v1 yet. Train one (Run → New Run… → "
        "“Train a reward model”) to see its reward per step under each clip.")
    view.strip_box.setChecked(False)
    assert not view.strip_note.isVisible()
    # with a reward model of the env: the strips, no note
    _run_job(project, "label_pairs", teacher="oracle")
    _run_job(project, "reward_model", env_id="CartPole-v1", members=1, hidden=8, steps=10, heldout_fraction=0.0)
    _run_job(project, "rollouts", env_id="CartPole-v1", seed=100)  # new pairs to show
    view.set_project(project)
    view.strip_box.setChecked(True)
    QApplication.processEvents()
    assert view.current is not None and view.left_strip.isVisible() and not view.strip_note.isVisible()


def test_dpo_runs_say_they_do_not_sample(window):
    project = window.project
    page = window.text_rl_page
    window.show_page("text_rl")
    assert page.samples_note.isVisible() and page.samples_note.text().startswith("No text-training run yet")
    run_id = project.create_run("dpo", {}, status="running")
    project.log_metrics(run_id, 0, {"dpo/loss": 0.69})
    project.finish_run(run_id, "completed", result={})
    page.set_project(project)
    assert page.current_run == run_id and page.sample_table.rowCount() == 0
    assert page.samples_note.isVisible()
    assert page.samples_note.text().startswith("DPO does not sample: it learns from the project's comparisons")
    grpo = project.create_run("grpo", {}, status="running")
    page.refresh_runs(select=grpo)
    assert page.samples_note.text() == f"Run {grpo} has logged no samples yet: they appear here as it trains."
    page.on_job_queued(grpo, "grpo")
    page.on_sample(grpo, "text_rl", {"step": 0, "prompt": "p", "response": "r", "reward": 1.0, "length": 1}, 0)
    assert page.sample_table.rowCount() == 1 and not page.samples_note.isVisible()


def test_label_text_has_one_correct_button(window, qtbot):
    add_marker_pairs(window.project, n_pairs=2)
    pid = window.project.add_prompt("Name a colour.")
    for text in ("Red.", "Blue."):
        window.project.add_item("response", prompt_id=pid, text=text, model_id="m")
    window.label_text()
    wait_saved(qtbot)
    view = window.text_page.pairs
    assert view.current is not None
    corrects = [b for b in window.text_page.findChildren(QPushButton) if "Correct" in b.text()]
    assert [b.text() for b in corrects] == ["Correct…  (C)"]
    corrects[0].click()
    assert view.choosing_side and view.message.text().startswith("Correct which response?  Click it, or ←")
    qtbot.mouseClick(view.right_text.viewport(), Qt.MouseButton.LeftButton)
    assert view.correcting == "right" and not view.right_text.isReadOnly()
    view.cancel_correction()
    assert view.correcting is None and corrects[0].isEnabled()
