"""Model cards: every saved model carries a README.md whose Hugging Face YAML header reads back to the
run's own config, data counts and final metrics; untrusted names and prompts cannot break it."""

from __future__ import annotations

import json
import math
import re

import pytest

from rlhf_core import __version__
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.store import Project
from rlhf_core.store.model_card import ModelCard, plain, read_card_header
from tests.conftest import add_marker_pairs, needs_model

EVIL = "lab: one\n---\nlicense: stolen\n# not a heading ```\x85\u2028 \"quoted\" 'single' naïve ☃ 😀"


def _check_values(header: dict, run: dict, counts: dict, metrics: dict) -> None:
    """The card's header against the stored run: full config, counts, final metrics (also in model-index)."""
    block = header["rlhf_workbench"]
    assert block["version"] == __version__ and block["job"] == run["kind"] and block["run_id"] == run["id"]
    assert block["config"] == run["config"]
    assert block["training_data"] == counts
    assert block["final_metrics"] == plain(metrics)
    finite = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    assert sorted(header["metrics"]) == sorted(finite)
    indexed = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    assert indexed == finite


def test_untrusted_text_cannot_break_the_header_or_the_body(tmp_path):
    config = {"prompt": EVIL, "nested": {"key: x": [1, 2.5, None, True]}, "lost": float("nan"), "fence": "```"}
    card = ModelCard(job="sft", config=config, title=EVIL, project=EVIL, base_model="/home/someone/model",
                     training_data={"pairs": 3, EVIL: 1}, metrics={"accuracy": 0.5, "diverged": float("inf"), "n": 4},
                     run_id=7, tags=["text-generation", EVIL], notes=[EVIL])
    path = card.write(tmp_path)
    assert path == tmp_path / "README.md" and not [p for p in tmp_path.iterdir() if p.name != "README.md"]
    header = read_card_header(tmp_path)
    assert "license" not in header and "base_model" not in header  # a local path is not a hub id
    block = header["rlhf_workbench"]
    assert block["project"] == EVIL and block["run_id"] == 7
    assert block["config"] == {"prompt": EVIL, "nested": {"key: x": [1, 2.5, None, True]}, "lost": None,
                               "fence": "```"}
    assert block["training_data"] == {"pairs": 3, EVIL: 1}
    assert block["final_metrics"] == {"accuracy": 0.5, "diverged": None, "n": 4}
    assert header["metrics"] == ["accuracy", "n"] and EVIL in header["tags"]
    assert header["model-index"][0]["name"] == EVIL
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[0] == "---" and lines.count("---") == 2  # the header's own two fences, nothing else
    headings = [line for line in lines if line.startswith("#")]
    assert headings == [headings[0], "## Trained on", "## Final metrics", "## Config"]
    assert headings[0].startswith("# lab: one --- license: stolen \\# not a heading \\`")  # one escaped line
    body = text.split("\n---\n", 1)[1]
    assert body.count("```") % 2 == 0 and "```json" in body
    config_block = body.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(config_block) == block["config"]
    hub = ModelCard(job="dpo", config={}, base_model="HuggingFaceTB/SmolLM2-135M-Instruct").header()
    assert hub["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_base_model_hub_ids_follow_workbench_folders(tmp_path):
    from rlhf_core.text.model import DEFAULT_MODEL_HUB_ID, DEFAULT_MODEL_NAME, base_model_hub_id

    assert base_model_hub_id("") == base_model_hub_id(DEFAULT_MODEL_NAME) == DEFAULT_MODEL_HUB_ID
    assert base_model_hub_id("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "workbench_policy.json").write_text(json.dumps({"base_model": DEFAULT_MODEL_NAME}))
    reward = tmp_path / "rm"
    reward.mkdir()
    (reward / "reward_model.json").write_text(json.dumps({"base_model": str(policy)}))
    assert base_model_hub_id(str(reward)) == DEFAULT_MODEL_HUB_ID  # reward model -> policy -> bundled model
    assert base_model_hub_id(str(tmp_path)) == "" and base_model_hub_id("./not/here") == ""


@needs_model
def test_text_reward_model_and_sft_runs_leave_cards_of_their_runs(tmp_path, tiny_model):
    from rlhf_core.trainers.text.reward_model import TextRewardModelConfig
    from rlhf_core.trainers.text.sft import SFTConfig

    project = Project.create(tmp_path / "p.rlhf", name=EVIL)
    try:
        add_marker_pairs(project, 8)
        config = TextRewardModelConfig(model=str(tiny_model), epochs=1, batch_size=4, max_length=64,
                                       heldout_fraction=0.25, score_responses=4)
        out = execute_job(get_job("text_reward_model"), config, RecordingContext(), project_path=project.folder)
        assert out.status == "completed", out.error
        run = project.get_run(out.run_id)
        res = run["result"]  # the numbers as stored with the run
        header = read_card_header(res["path"])
        assert header["library_name"] == "transformers" and header["pipeline_tag"] == "text-classification"
        assert "base_model" not in header and "reward-model" in header["tags"]  # trained from a local folder
        assert header["rlhf_workbench"]["project"] == EVIL
        counts = {k: res[k] for k in ("pairs", "train_pairs", "heldout_pairs", "scored_responses", "steps")}
        assert counts["pairs"] == 8 and counts["heldout_pairs"] == 2
        _check_values(header, run, counts, {k: res[k] for k in ("heldout_accuracy", "train_accuracy", "train_loss",
                                                                "length_correlation") if res.get(k) is not None})

        for i in range(4):
            pid = project.add_prompt(f"Name fruit number {i}.")
            project.add_item("response", prompt_id=pid, text=f"Fruit {i} is a pear.", source="demonstration")
        sft = SFTConfig(model=str(tiny_model), data="demonstrations", steps=2, batch_size=2, max_length=48,
                        heldout_fraction=0.25, save=True, seed=1)
        out = execute_job(get_job("sft"), sft, RecordingContext(), project_path=project.folder)
        assert out.status == "completed", out.error
        run = project.get_run(out.run_id)
        res = run["result"]  # the numbers as stored with the run
        header = read_card_header(res["path"])
        assert header["pipeline_tag"] == "text-generation" and header["library_name"] == "transformers"
        counts = {k: res[k] for k in ("examples", "by_source", "train_examples", "heldout_examples", "steps")}
        assert counts["examples"] == 4
        metrics = {k: v for k, v in res.items() if k in ("loss_first", "loss_last", "heldout_loss_first",
                                                         "heldout_loss_last")}
        _check_values(header, run, counts, metrics)
    finally:
        project.close()


def test_control_runs_leave_a_card_in_their_run_folder(project):
    from rlhf_core.sources.learner import LearnerConfig
    from rlhf_core.trainers.control.bc import BCConfig

    config = LearnerConfig(env_id="CartPole-v1", total_steps=1024, checkpoint_every=1024, episodes_per_checkpoint=1,
                           max_steps=30, record_video=False, seed=1)
    out = execute_job(get_job("learner"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    folder = project.run_folder(out.run_id, create=False)
    header = read_card_header(folder / "README.md")
    zips = sorted(p.name for p in folder.glob("*.zip"))
    assert header["library_name"] == "stable-baselines3" and header["pipeline_tag"] == "reinforcement-learning"
    assert header["rlhf_workbench"]["files"] == zips and len(zips) == 2
    assert header["model-index"][0]["results"][0]["dataset"]["name"] == "CartPole-v1"
    _check_values(header, project.get_run(out.run_id), {"timesteps": 1024, "checkpoints": 2, "rollouts": 2},
                  {"final_true_return": out.result["final_true_return"]})
    assert f'PPO.load("{zips[-1]}")' in (folder / "README.md").read_text()

    bc = BCConfig(env_id="CartPole-v1", epochs=2, batch_size=16, eval_episodes=1, seed=0)
    out = execute_job(get_job("bc"), bc, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    folder = project.run_folder(out.run_id, create=False)
    header = read_card_header(folder)
    assert header["library_name"] == "pytorch" and header["rlhf_workbench"]["files"] == ["bc_policy.pt"]
    res = project.get_run(out.run_id)["result"]
    _check_values(header, project.get_run(out.run_id),
                  {"demos": res["demos"], "state_action_pairs": res["pairs"], "epochs": 2},
                  {"final_loss": res["final_loss"], "mean_eval_return": res["mean_eval_return"]})
    assert res["demos"] == 2


def test_a_card_never_names_a_path_as_its_hub_base_model():
    for bad in ("/abs/path", "../up/x", "a/b/c", "~/model", "org/../x", "with space/x"):
        assert "base_model" not in ModelCard(job="x", config={}, base_model=bad).header(), bad
    assert re.search(r"base_model: org/name", ModelCard(job="x", config={}, base_model="org/name").render())


@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_non_finite_metrics_are_left_out_of_the_hub_keys(value):
    header = ModelCard(job="x", config={}, metrics={"m": value}).header()
    assert "metrics" not in header and "model-index" not in header
    assert header["rlhf_workbench"]["final_metrics"] == {"m": None}
