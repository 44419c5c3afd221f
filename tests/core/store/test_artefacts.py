"""Artefacts: listed with a name, a headline metric and what they were trained on; renamed; resolved from
``run:ID`` / ``checkpoint:ID`` / a name / a folder, refusing the wrong kind in words."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from rlhf_core import kinds
from rlhf_core.cli import main
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.sources.generate import GenerateConfig
from rlhf_core.store import Project, artefacts
from rlhf_core.store.artefacts import ArtefactError, resolve, resolve_path
from rlhf_core.text.model import resolve_model_spec
from tests.conftest import needs_model
from tests.fixtures.make_fixtures import HERE


def _run(project, job, result, metrics=()):
    run = project.create_run(job, {})
    project.start_run(run)
    for step, values in metrics:
        project.log_metrics(run, step, values)
    project.finish_run(run, "completed", result=result)
    return run


@pytest.fixture
def filled(project, tmp_path):
    rm_run = _run(project, "text_reward_model", {"train_pairs": 40, "heldout_pairs": 10, "heldout_accuracy": 0.8},
                  [(0, {"reward_model/heldout_accuracy": 0.6}), (5, {"reward_model/heldout_accuracy": 0.7})])
    rm = project.add_checkpoint(rm_run, kinds.TEXT_REWARD_MODEL, project.run_folder(rm_run) / "rm", step=5)
    learner = _run(project, "learner", {"steps": 8000}, [(4000, {"demos/true_return": -900.0})])
    early = project.add_checkpoint(learner, kinds.SB3_PPO, project.run_folder(learner) / "a.zip", step=4000)
    late = project.add_checkpoint(learner, kinds.SB3_PPO, project.run_folder(learner) / "b.zip", step=8000)
    policy_run = _run(project, "dpo", {"pairs": 40}, [(3, {"reward/mean": 0.25})])
    policy = project.add_checkpoint(policy_run, kinds.TEXT_POLICY, project.run_folder(policy_run) / "policy")
    return {"rm_run": rm_run, "rm": rm, "learner": learner, "early": early, "late": late,
            "policy_run": policy_run, "policy": policy}


def test_artefacts_are_listed_newest_first_with_names_headlines_and_data(project, filled):
    listed = artefacts.list_artefacts(project)
    assert [a.id for a in listed] == [filled["policy"], filled["late"], filled["early"], filled["rm"]]
    by_id = {a.id: a for a in listed}
    rm = by_id[filled["rm"]]
    assert rm.name == f"text_reward_model run {filled['rm_run']}"
    assert rm.kind_word == "text reward model"
    assert rm.headline == ("reward_model/heldout_accuracy", 0.7)  # the last logged value, not the first
    assert rm.trained_on == {"train_pairs": 40, "heldout_pairs": 10}
    assert rm.path == project.folder / "checkpoints" / f"run-{filled['rm_run']:05d}" / "rm"
    # a run that saved several of one kind names each by its step
    assert by_id[filled["late"]].name == f"learner run {filled['learner']} step 8000"
    assert by_id[filled["early"]].name == f"learner run {filled['learner']} step 4000"
    assert by_id[filled["policy"]].headline == ("reward/mean", 0.25)
    assert [a.id for a in artefacts.list_artefacts(project, [kinds.SB3_PPO])] == [filled["late"], filled["early"]]


def test_a_name_is_checked_unique_and_kept(project, filled, tmp_path):
    assert artefacts.rename_artefact(project, filled["rm"], "  helpful   RM ") == "helpful RM"
    for bad, says in [("", "cannot be empty"), ("123", "reads as an id"), ("run:4", "reads as an id"),
                      ("a/b", "slashes"), ("x" * 81, "at most 80"), ("HELPFUL rm", "Another artefact"),
                      (f"dpo run {filled['policy_run']}", "Another artefact")]:
        with pytest.raises(ArtefactError, match=says):
            artefacts.rename_artefact(project, filled["late"], bad)
    with pytest.raises(ArtefactError, match="no artefact 999"):
        artefacts.rename_artefact(project, 999, "ok")
    project.close()
    with Project.open(tmp_path / "test.rlhf") as again:
        assert artefacts.find_by_name(again, "helpful rm").id == filled["rm"]


def test_references_resolve_to_the_right_kind_or_say_why_not(project, filled, tmp_path):
    ppo = (kinds.SB3_PPO,)
    assert resolve(project, f"run:{filled['learner']}", ppo).id == filled["late"]  # the newest of that run
    assert resolve(project, f"checkpoint:{filled['early']}", ppo).id == filled["early"]
    assert resolve(project, str(filled["early"]), ppo).id == filled["early"]  # stored configs hold bare ids
    artefacts.rename_artefact(project, filled["rm"], "first rm")
    assert resolve(project, "First RM", (kinds.TEXT_REWARD_MODEL,)).id == filled["rm"]
    folder = tmp_path / "outside"
    folder.mkdir()
    assert resolve_path(project, str(folder), (kinds.TEXT_POLICY,)) == folder
    cases = [
        (f"run:{filled['rm_run']}", ppo, f"Run {filled['rm_run']} made a text reward model, not a PPO policy."),
        ("first rm", (kinds.TEXT_POLICY,), "'first rm' is a text reward model, not a text policy."),
        ("run:999", ppo, "Run 999 does not exist."),
        ("checkpoint:999", ppo, "The project has no checkpoint 999."),
        ("nothing like it", ppo, "No PPO policy is called 'nothing like it' (nor a folder)"),
    ]
    for ref, wanted, says in cases:
        with pytest.raises(ArtefactError) as info:
            resolve(project, ref, wanted)
        assert str(info.value).startswith(says), str(info.value)
    empty_run = _run(project, "label_pairs", {})
    with pytest.raises(ArtefactError, match=f"Run {empty_run} \\(label_pairs\\) saved no model."):
        resolve(project, f"run:{empty_run}", ppo)
    with pytest.raises(ArtefactError, match="no project is open"):
        resolve(None, "run:1", ppo)


def test_model_settings_take_references_and_keep_folders_and_the_default(project, filled, tmp_path):
    policy_folder = project.folder / "checkpoints" / f"run-{filled['policy_run']:05d}" / "policy"
    assert resolve_model_spec(f"run:{filled['policy_run']}", project) == str(policy_folder)
    artefacts.rename_artefact(project, filled["policy"], "round one")
    assert resolve_model_spec("round one", project) == str(policy_folder)
    assert resolve_model_spec("", project) == ""
    assert resolve_model_spec(str(tmp_path), project) == str(tmp_path)
    assert resolve_model_spec("HuggingFaceTB/SmolLM2-135M-Instruct", project) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ArtefactError, match="is a text reward model, not a text policy"):
        resolve_model_spec(f"checkpoint:{filled['rm']}", project)


def test_a_project_of_the_first_schema_lists_its_checkpoints_as_artefacts(tmp_path):
    folder = tmp_path / "old.rlhf"
    shutil.copytree(HERE / "projects" / "schema-v1.rlhf", folder)
    conn = sqlite3.connect(folder / "project.db")
    conn.execute("INSERT INTO checkpoints (run_id, step, kind, path, meta_json, created_at) "
                 "VALUES (1, 1, 'reward_mlp', 'checkpoints/run-00001/reward.pt', '{}', '2026-01-01T00:00:00Z')")
    conn.commit()
    conn.close()
    with Project.open(folder) as project:
        (only,) = artefacts.list_artefacts(project)
        assert (only.name, only.kind_word, only.run_kind) == (
            "synthetic_preferences run 1", "synthetic-task reward model", "synthetic_preferences")
        assert artefacts.rename_artefact(project, only.id, "old model") == "old model"


def test_cli_lists_and_renames(project, filled, capsys):
    path = str(project.folder)
    assert main(["artefacts", "--project", path, "--kind", "sb3_ppo"]) == 0
    listed = json.loads(capsys.readouterr().out)["artefacts"]
    assert [(a["id"], a["reference"], a["step"]) for a in listed] == [
        (filled["late"], f"checkpoint:{filled['late']}", 8000), (filled["early"], f"checkpoint:{filled['early']}", 4000)]
    assert main(["artefacts", "--project", path, "--rename", str(filled["rm"]), "helpful rm"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": filled["rm"], "name": "helpful rm"}
    assert main(["artifacts", "--project", path, "--rename", str(filled["late"]), "Helpful RM"]) == 2
    assert "Another artefact is called 'helpful rm'" in capsys.readouterr().err
    assert main(["artefacts", "--project", path, "--rename", "x", "name"]) == 2
    assert "'x' is not an artefact id" in capsys.readouterr().err


@needs_model
def test_a_job_loads_a_policy_picked_by_name(project, tiny_model):
    run = _run(project, "sft", {"pairs": 3})
    folder = project.run_folder(run) / "policy"
    shutil.copytree(tiny_model, folder)
    artefacts.rename_artefact(project, project.add_checkpoint(run, kinds.TEXT_POLICY, folder), "my sft policy")
    config = GenerateConfig(model="My SFT policy", prompt_set="lecture", max_prompts=1, samples_per_prompt=1,
                            max_new_tokens=2)
    outcome = execute_job(get_job("generate"), config, RecordingContext(), project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    (response,) = [r for r in project.conn.execute("SELECT model_id FROM items WHERE kind = 'response'")]
    assert response["model_id"] == str(folder)
    wrong = GenerateConfig(model=f"run:{_run(project, 'label_pairs', {})}", prompt_set="lecture", max_prompts=1)
    failed = execute_job(get_job("generate"), wrong, RecordingContext(), project_path=project.folder)
    assert failed.status == "failed" and "saved no model" in failed.error
