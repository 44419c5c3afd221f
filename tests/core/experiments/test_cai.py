"""The Constitutional AI demo: the split of the prompts, and ``python -m rlhf_core demo cai`` end to end on the
tiny model, each stage a child run whose output the next stage picks up."""

from __future__ import annotations

import json
import time

from rlhf_core.analysis.refusal import COMPLY, REFUSE
from rlhf_core.experiments.cai import split_prompts
from tests.conftest import needs_model


def test_the_split_is_per_label_seeded_and_disjoint():
    rows = [{"id": i, "label": REFUSE if i <= 14 else COMPLY} for i in range(1, 27)]
    train, held = split_prompts(rows, 0.5, seed=0)
    assert split_prompts(rows, 0.5, seed=0) == (train, held) and split_prompts(rows, 0.5, seed=1) != (train, held)
    assert sum(r["label"] == REFUSE for r in held) == 7 and sum(r["label"] == COMPLY for r in held) == 6
    assert len(train) == 13 and not {r["id"] for r in train} & {r["id"] for r in held}
    assert [r["id"] for r in held] == sorted(r["id"] for r in held)
    one_each = [{"id": 1, "label": REFUSE}, {"id": 2, "label": REFUSE}, {"id": 3, "label": COMPLY}]
    train, held = split_prompts(one_each, 0.9, seed=0)  # a label keeps one training prompt when it has two
    assert len(train) == 1 and train[0]["label"] == REFUSE and len(held) == 2


@needs_model
def test_demo_cai_end_to_end_from_the_command_line(tiny_model, tmp_path, capsys):
    from rlhf_core.cli import main
    from rlhf_core.store import Project

    folder = tmp_path / "cai.rlhf"
    Project.create(folder).close()
    started = time.monotonic()
    code = main(["demo", "cai", "--project", str(folder), "--model", str(tiny_model), "--max-train-prompts", "3",
                 "--max-eval-per-label", "2", "--max-new-tokens", "6", "--critique-max-new-tokens", "4",
                 "--sft-epochs", "1", "--rl-stage", "dpo", "--device", "cpu"])
    seconds = time.monotonic() - started
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["job"] == "cai_demo" and out["status"] == "completed" and seconds < 60
    for key in ("refusal_on_refuse_before", "refusal_on_refuse_after", "refusal_on_comply_before",
                "refusal_on_comply_after", "refusal_on_refuse_after_dpo", "wall_seconds"):
        assert isinstance(out[key], float), key
    assert out["n_refuse"] == out["n_comply"] == 2 and out["train_prompts"] == 3 and out["eval_prompts"] == 13
    assert out["refusal_before"][REFUSE]["n"] == out["refusal_after"][REFUSE]["n"] == 2
    with Project.open(folder) as project:
        demo = project.get_run(out["run_id"])
        children = [r for r in project.runs() if r["parent_run_id"] == demo["id"]]
        stages = sorted(out["runs"], key=out["runs"].get)  # the JSON line sorts its keys: by run id
        assert stages == ["refusal_before", "critique_revise", "sft", "refusal_after", "generate", "ai_labels", "dpo",
                          "refusal_after_dpo"]
        assert [r["id"] for r in children] == [out["runs"][s] for s in stages]
        assert all(r["status"] == "completed" for r in children) and demo["status"] == "completed"
        # every stage runs on the demo's device
        assert {(r["config"]["device"], r["result"]["device"]) for r in children} == {("cpu", "cpu")}
        assert out["device"] == "cpu"
        revise, sft, dpo = (project.get_run(out["runs"][k]) for k in ("critique_revise", "sft", "dpo"))
        # each stage picks up the one before: SFT on the revisions, the evaluation after on SFT's checkpoint
        assert sft["config"]["data"] == "corrections" and sft["result"]["examples"] == revise["result"]["revisions"]
        assert out["policy"] == f"checkpoint:{sft['result']['checkpoint_id']}"
        assert project.get_run(out["runs"]["refusal_after"])["config"]["model"] == out["policy"]
        assert dpo["config"]["model"] == out["policy"] and dpo["config"]["label_sources"] == "ai"
        evaluated = project.get_run(out["runs"]["refusal_before"])["config"]["prompt_ids"]
        revised = revise["config"]["prompt_ids"]
        assert not set(evaluated) & set(revised)  # measured on prompts the revisions never saw
        steps = project.metrics(demo["id"])["refusal/on_refuse"]
        assert steps[0] == [0, 1, 2] and steps[1][0] == out["refusal_on_refuse_before"]


@needs_model
def test_demo_cai_with_the_ppo_rl_stage_trains_on_a_reward_model_of_the_ai_labels(tiny_model, tmp_path, capsys):
    from rlhf_core.cli import main
    from rlhf_core.store import Project

    folder = tmp_path / "cai.rlhf"
    Project.create(folder).close()
    code = main(["demo", "cai", "--project", str(folder), "--model", str(tiny_model), "--max-train-prompts", "3",
                 "--max-eval-per-label", "2", "--max-new-tokens", "6", "--critique-max-new-tokens", "4",
                 "--sft-epochs", "1", "--rl-stage", "ppo", "--ppo-steps", "2"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(out["refusal_on_refuse_after_ppo"], float) and isinstance(out["refusal_on_comply_after_ppo"], float)
    assert sorted(out["runs"], key=out["runs"].get) == [
        "refusal_before", "critique_revise", "sft", "refusal_after", "generate", "ai_labels", "reward_model", "ppo",
        "refusal_after_ppo"]
    with Project.open(folder) as project:
        reward, ppo = (project.get_run(out["runs"][k]) for k in ("reward_model", "ppo"))
        assert reward["config"]["label_sources"] == "ai" and reward["result"]["pairs"] == out["reward_model_pairs"]
        assert ppo["config"]["model"] == out["policy"] and ppo["config"]["reward_model"] == reward["result"]["path"]
        assert ppo["status"] == "completed" and out["ppo_policy"] == f"checkpoint:{ppo['result']['checkpoint_id']}"
        assert project.get_run(out["runs"]["refusal_after_ppo"])["config"]["model"] == out["ppo_policy"]
