"""Settings that take a model are pickers of the project's artefacts by name; what a run stores is the
artefact's stable reference, and typed references and folders still work."""

from __future__ import annotations

import pytest

from rlhf_core import kinds
from rlhf_core.store import artefacts

pytest.importorskip("PySide6")


def _run_with(project, job, kind, result=None):
    run = project.create_run(job, {})
    project.start_run(run)
    project.finish_run(run, "completed", result=result or {})
    return run, project.add_checkpoint(run, kind, project.run_folder(run) / "model")


def test_model_settings_list_the_artefacts_of_their_kind(qtbot, project, tmp_path):
    from app.training.config_form import ArtefactBox, ArtefactIdBox, ConfigForm
    from rlhf_core.sources.rollouts import RolloutConfig
    from rlhf_core.trainers.control.ppo_learned import PPOLearnedConfig
    from rlhf_core.trainers.text.ppo import PPOTextConfig

    sft_run, policy = _run_with(project, "sft", kinds.TEXT_POLICY)
    artefacts.rename_artefact(project, policy, "polite v1")
    _, rm = _run_with(project, "text_reward_model", kinds.TEXT_REWARD_MODEL)
    _, ensemble = _run_with(project, "reward_model", kinds.REWARD_ENSEMBLE)
    _, sb3 = _run_with(project, "learner", kinds.SB3_PPO)

    form = ConfigForm(PPOTextConfig, project=project)
    qtbot.addWidget(form)
    model, reward = form.editors["model"], form.editors["reward_model"]
    assert isinstance(model, ArtefactBox) and isinstance(reward, ArtefactBox)
    assert [model.itemText(i) for i in range(model.count())] == [
        "(the bundled SmolLM2-135M-Instruct)", f"polite v1 — text policy · run {sft_run}"]
    assert [reward.itemData(i) for i in range(reward.count())] == ["", f"checkpoint:{rm}"]
    form.set_value("reward_model", f"checkpoint:{rm}")
    assert reward.currentIndex() == 1 and form.config().reward_model == f"checkpoint:{rm}"
    model.setCurrentIndex(1)
    assert form.config().model == f"checkpoint:{policy}"  # stable when the artefact is renamed
    model.setEditText("run:3")
    assert form.config().model == "run:3"
    model.setEditText(str(tmp_path))
    assert form.config().model == str(tmp_path)
    model.setCurrentIndex(0)
    assert form.config().model == ""

    ppo = ConfigForm(PPOLearnedConfig, project=project)
    qtbot.addWidget(ppo)
    box = ppo.editors["reward_checkpoint_id"]
    assert isinstance(box, ArtefactIdBox)
    assert [box.itemData(i) for i in range(box.count())] == [0, ensemble]
    box.setCurrentIndex(1)
    assert ppo.config().reward_checkpoint_id == ensemble

    rollouts = ConfigForm(RolloutConfig, project=project)
    qtbot.addWidget(rollouts)
    ids = rollouts.editors["checkpoint_id"]
    assert [ids.itemData(i) for i in range(ids.count())] == [0, sb3]
    rollouts.set_value("checkpoint_id", 999)  # a stored run's id that this project lacks is kept and said
    assert rollouts.config().checkpoint_id == 999 and "not in this project" in ids.currentText()


def test_without_a_project_the_pickers_offer_the_default_and_typing(qtbot):
    from app.training.config_form import ConfigForm
    from rlhf_core.trainers.text.sft import SFTConfig

    form = ConfigForm(SFTConfig, SFTConfig(model="/some/folder"))
    qtbot.addWidget(form)
    assert form.editors["model"].count() == 1
    assert form.config().model == "/some/folder"
