"""The New Run dialog and the settings forms: jobs grouped by what they do, a default job, forms that
scroll with Start in view, decimal numbers that show and round-trip exactly, and the pickers."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QScrollArea

from app.training.config_form import ConfigForm, FloatEdit, PromptPickerDialog, RunDialog, format_float, parse_ids
from rlhf_core import config as cfg
from rlhf_core.jobs import list_jobs
from rlhf_core.registry import JOB_GROUPS


def _rows(dialog):
    """(heading or None, job name or None, title, summary) of every row of the job list."""
    from app.training.config_form import _GROUP_ROLE, _SUMMARY_ROLE

    out = []
    for i in range(dialog.job_list.count()):
        item = dialog.job_list.item(i)
        if item.data(_GROUP_ROLE):
            out.append((item.text(), None, None, None))
        else:
            out.append((None, item.data(Qt.ItemDataRole.UserRole), item.text(), item.data(_SUMMARY_ROLE)))
    return out


def test_new_run_lists_jobs_by_group_with_a_summary_each_and_defaults_to_collecting(window):
    dialog = RunDialog(list_jobs(), None, window)
    rows = _rows(dialog)
    headings = [h for h, *_ in rows if h is not None]
    assert headings == list(JOB_GROUPS.values())  # Collect data, Label, Learn a reward, Train a policy, ...
    specs = {s.name: s for s in list_jobs()}
    current = None
    for heading, name, title, summary in rows:
        if heading is not None:
            current = next(g for g, h in JOB_GROUPS.items() if h == heading)
            continue
        assert specs[name].group == current and title == specs[name].title and summary == specs[name].summary
    assert [n for h, n, *_ in rows if n][:3] == ["rollouts", "generate", "learner"]  # Collect data, by title
    # headings are not jobs: they cannot be selected
    head = dialog.job_list.item(0)
    assert not head.flags() & Qt.ItemFlag.ItemIsSelectable
    # a fresh project has nothing: the dialog opens on "Collect trajectories", not on "AI feedback"
    assert dialog.spec.name == "rollouts" and dialog.title.text() == "Collect trajectories"
    assert list(dialog.form.editors)[0] == "env_id"
    # the arrow keys step over the headings
    dialog.job_list.setCurrentItem(dialog._rows["learner"])
    QTest.keyClick(dialog.job_list, Qt.Key.Key_Down)
    assert dialog.spec.name == "active_queries"  # past the "Label" heading
    # picking another job shows its form
    dialog.select_job("label_pairs")
    assert dialog.spec.name == "label_pairs" and "teacher" in dialog.form.editors
    # asked for a job, it shows that one
    assert RunDialog(list_jobs(), "dpo", window).spec.name == "dpo"


def test_new_run_defaults_to_the_projects_next_job(window):
    from tests.conftest import add_marker_pairs

    add_marker_pairs(window.project, n_pairs=4)  # text comparisons and no text reward model
    assert RunDialog(list_jobs(), None, window).spec.name == "text_reward_model"


def _inside(widget, dialog) -> bool:
    top_left = widget.mapTo(dialog, QPoint(0, 0))
    return dialog.rect().contains(top_left) and \
        dialog.rect().contains(top_left + QPoint(widget.width() - 1, widget.height() - 1))


@pytest.mark.parametrize("size", [None, (1280, 720)])
def test_grpo_form_scrolls_and_start_stays_in_view_at_1280x720(window, qtbot, size):
    window.resize(1280, 720)
    dialog = RunDialog(list_jobs(), "grpo", window)
    qtbot.addWidget(dialog)
    if size is not None:
        dialog.resize(*size)
    dialog.show()
    qtbot.waitExposed(dialog)
    QApplication.processEvents()
    assert dialog.width() <= 1280 and dialog.height() <= 720
    scroll = dialog.findChild(QScrollArea, "form_scroll")
    assert scroll.widget() is dialog.form
    # the form is taller than its view: it scrolls, and Start is outside the scroll area, fully in view
    assert dialog.form.height() > scroll.viewport().height()
    assert scroll.verticalScrollBar().maximum() > 0
    start = dialog.start_button
    assert start.text() == "Start" and start.isVisible() and _inside(start, dialog)
    assert not scroll.isAncestorOf(start)
    # scrolled to the end, the last field is reachable and Start is still where it was
    before = start.mapTo(dialog, QPoint(0, 0))
    scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
    QApplication.processEvents()
    last = dialog.form.editors["save"]
    assert last.visibleRegion().boundingRect().height() > 0
    assert start.mapTo(dialog, QPoint(0, 0)) == before


def test_learning_rate_5e_7_shows_as_such_and_round_trips_exactly(qtbot):
    from rlhf_core.trainers.text.dpo import DPOConfig

    form = ConfigForm(DPOConfig, DPOConfig(learning_rate=5e-7))
    qtbot.addWidget(form)
    edit = form.editors["learning_rate"]
    assert isinstance(edit, FloatEdit) and edit.text() == "5e-07"  # not 0.000000
    assert form.config().learning_rate == 5e-7
    # typed by a person: scientific notation, exact
    edit.clear()
    qtbot.keyClicks(edit, "3.5e-9")
    assert edit.text() == "3.5e-9" and form.config().learning_rate == 3.5e-9
    # letters cannot be typed; a number out of range is kept and refused in one sentence
    qtbot.keyClicks(edit, "x")
    assert edit.text() == "3.5e-9"
    edit.clear()
    qtbot.keyClicks(edit, "-1")
    with pytest.raises(cfg.ConfigError, match=r"^learning_rate: must be greater than 0.0, got -1.0$"):
        form.config()
    edit.setText("1e")  # unfinished
    with pytest.raises(cfg.ConfigError, match="learning_rate: expected a number, got '1e'"):
        form.config()
    assert [format_float(v) for v in (0.2, 1e-5, 3.0, 0.1 + 0.2, 1e300)] == \
        ["0.2", "1e-05", "3.0", "0.30000000000000004", "1e+300"]


def test_every_jobs_form_gives_back_its_defaults_exactly(qtbot):
    for spec in list_jobs():
        cls = spec.config_class()
        form = ConfigForm(cls)
        qtbot.addWidget(form)
        assert form.values() == cfg.to_dict(cls()), spec.name  # (some jobs need a choice before they start)


def test_env_id_picker_lists_supported_envs_searches_and_takes_your_own(qtbot):
    from rlhf_core.sources.rollouts import RolloutConfig

    form = ConfigForm(RolloutConfig)
    qtbot.addWidget(form)
    box = form.editors["env_id"]
    assert box.isEditable() and box.text() == "Pendulum-v1"
    ids = box.env_ids
    assert {"CartPole-v1", "Pendulum-v1", "LunarLander-v3", "HalfCheetah-v5", "ALE/Enduro-v5"} <= set(ids)
    assert not {"CartPole-v0", "Hopper-v3", "FrozenLake-v1", "GymV26Environment-v0"} & set(ids)
    completer = box.completer()
    completer.setCompletionPrefix("cheetah")
    matches = [completer.completionModel().index(i, 0).data() for i in range(completer.completionCount())]
    assert matches == ["HalfCheetah-v5"]
    box.setText("CartPole-v1")
    assert form.config().env_id == "CartPole-v1"
    box.setText("my_package.envs:MyEnv-v0")  # not listed: typed, still taken
    assert form.values()["env_id"] == "my_package.envs:MyEnv-v0"


def test_prompt_set_picker_previews_the_set_and_prompt_ids_are_chosen_from_the_project(window, qtbot):
    from rlhf_core.sources.generate import GenerateConfig

    project = window.project
    ids = [project.add_prompt(t) for t in ("Name a fruit.", "Say hello.", "What is 2+3?")]
    form = ConfigForm(GenerateConfig, project=project)
    qtbot.addWidget(form)
    box = form.editors["prompt_set"]
    assert box.text() == "lecture" and box.isEditable()
    assert {box.itemText(i) for i in range(box.count())} == {"lecture", "starter"}
    box.setText("starter")
    assert box.preview.text().startswith("Starter set · 112 prompts\ne.g. “")
    assert "helpfulness 28" in box.preview.toolTip()
    box.setText("nope")
    assert box.preview.text() == "There is no built-in prompt set 'nope' (built in: lecture, starter)."
    with pytest.raises(cfg.ConfigError, match="there is no built-in prompt set 'nope'"):
        form.config()
    box.setText("")
    assert box.preview.text() == "No prompt set: only the prompt ids are used."

    # prompt ids: typed, with ranges, or ticked in the list of the project's prompts
    edit = form.editors["prompt_ids"]
    edit.setText(f"{ids[0]}, {ids[1]}-{ids[2]}")
    assert form.config().prompt_ids == ids
    assert parse_ids("[3, 5]") == [3, 5] and parse_ids("3 x") == [3, "x"]
    edit.setText("3, x")
    with pytest.raises(cfg.ConfigError, match="prompt_ids: 'x' is not an id"):
        form.config()
    picker = PromptPickerDialog(project.prompts(), [ids[1]])
    qtbot.addWidget(picker)
    assert [picker.list.item(i).text() for i in range(3)] == \
        [f"{ids[0]}: Name a fruit.", f"{ids[1]}: Say hello.", f"{ids[2]}: What is 2+3?"]
    assert picker.chosen_ids() == [ids[1]]
    picker.list.item(2).setCheckState(Qt.CheckState.Checked)
    picker.filter.setText("hello")
    assert [picker.list.item(i).isHidden() for i in range(3)] == [True, False, True]
    assert picker.chosen_ids() == [ids[1], ids[2]]
    assert edit.choose_button.isEnabled()
    form.set_project(None)
    assert not edit.choose_button.isEnabled()


def test_dialog_shows_problems_and_stays_open(window, qtbot):
    dialog = RunDialog(list_jobs(), "dpo", window)
    qtbot.addWidget(dialog)
    dialog.form.editors["learning_rate"].setText("0")
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    assert dialog.result_config is None and not dialog.errors.isHidden()
    assert dialog.errors.text() == "Please fix:\nlearning_rate: must be greater than 0.0, got 0.0"


def test_lora_rank_auto_shows_as_auto_and_round_trips(qtbot):
    from rlhf_core.config import to_dict
    from rlhf_core.trainers.text.sft import SFTConfig

    form = ConfigForm(SFTConfig)
    qtbot.addWidget(form)
    spin = form.editors["lora_rank"]
    assert spin.text() == "auto" and form.config().lora_rank == -1
    spin.setValue(8)
    assert spin.text() == "8" and to_dict(form.config())["lora_rank"] == 8


def test_min_demo_return_off_shows_as_words_and_round_trips(qtbot):
    from rlhf_core.config import to_dict
    from rlhf_core.experiments.extrapolation import MIN_DEMO_OFF, ExtrapolationDemoConfig

    form = ConfigForm(ExtrapolationDemoConfig)
    qtbot.addWidget(form)
    edit = form.editors["min_demo_return"]
    assert edit.text() == "" and edit.placeholderText() == "off (keep every demonstration)"  # not -1000000000.0
    assert form.config().min_demo_return == MIN_DEMO_OFF
    edit.setText("50")
    assert to_dict(form.config())["min_demo_return"] == 50.0
    edit.setValue(MIN_DEMO_OFF)
    assert edit.text() == "" and form.config().min_demo_return == MIN_DEMO_OFF
