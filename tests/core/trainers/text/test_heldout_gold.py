"""A held-out gold reward model from the project's own labels: the text_reward_model job's disjoint
proxy/gold split (stored with the run), the two checkpoints, and GRPO / PPO runs that measure the held-out
model as their gold (gold/reward equals that model's scores of the run's own samples)."""

from __future__ import annotations

import json

import pytest

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job, resume_run
from rlhf_core.store import Project
from rlhf_core.text.pairs import TextPair, split_for_gold, text_pairs
from tests.conftest import add_marker_pairs, needs_model


def _pair(prompt: str, a: str, b: str, cid: int) -> TextPair:
    return TextPair(prompt, a, b, 1.0, cid)


def test_split_for_gold_is_disjoint_complete_and_keeps_two_labels_of_one_pair_together():
    pairs = [_pair("p", f"a{i}", f"b{i}", i) for i in range(10)]
    pairs += [_pair("p", "b3", "a3", 10), _pair("p", "a3", "b3", 11)]  # the same two responses, labelled again
    pairs += [_pair("q", "a3", "b3", 12)]  # the same texts to another prompt: another pair
    proxy, gold = split_for_gold(pairs, 0.5, seed=4)
    ids = lambda ps: {p.comparison_id for p in ps}  # noqa: E731
    assert ids(proxy) | ids(gold) == set(range(13)) and not ids(proxy) & ids(gold)
    assert len(proxy) + len(gold) == 13
    side = ids(gold) if 3 in ids(gold) else ids(proxy)
    assert {10, 11} <= side  # all three labels of a3/b3 to prompt p on one side
    # 11 groups, half of them (rounded) to the gold side; seeded
    groups_gold = {(p.prompt, frozenset((p.left, p.right))) for p in gold}
    assert len(groups_gold) == round(11 * 0.5)
    assert (ids(proxy), ids(gold)) == tuple(ids(x) for x in split_for_gold(pairs, 0.5, seed=4))
    assert ids(split_for_gold(pairs, 0.5, seed=5)[1]) != ids(gold)
    # at least one group on each side, whatever the fraction
    assert len(split_for_gold(pairs[:2], 0.9, 0)[0]) == 1 and len(split_for_gold(pairs[:2], 0.01, 0)[1]) == 1
    with pytest.raises(ValueError, match="at least two different labelled pairs"):
        split_for_gold([pairs[3], pairs[10]], 0.5, 0)


def _rm_config(tiny_model, **kw):
    from rlhf_core.trainers.text.reward_model import TextRewardModelConfig

    settings = dict(model=str(tiny_model), epochs=1, batch_size=4, max_length=64, learning_rate=1e-3,
                    heldout_fraction=0.25, score_responses=4, gold_fraction=0.5, seed=1)
    return cfg.from_dict(TextRewardModelConfig, {**settings, **kw})


@pytest.fixture(scope="module")
def gold_project(tiny_model, tmp_path_factory):
    """A project with 16 marker comparisons (one labelled twice) and a text_reward_model run with
    gold_fraction 0.5: (project folder, the run's outcome)."""
    folder = tmp_path_factory.mktemp("gold") / "gold.rlhf"
    with Project.create(folder, name="Gold") as project:
        add_marker_pairs(project, 16)
        first = project.comparisons()[0]
        project.add_comparison(first["right_id"], first["left_id"], "right" if first["outcome"] == "left" else "left",
                               source="synthetic")  # the same pair again, sides swapped
    outcome = execute_job(get_job("text_reward_model"), _rm_config(tiny_model), RecordingContext(),
                          project_path=folder)
    assert outcome.status == "completed", outcome.error
    return folder, outcome


@needs_model
def test_the_reward_model_job_trains_a_held_out_gold_model_on_a_disjoint_stored_split(gold_project):
    from rlhf_core.store import artefacts
    from rlhf_core.text.reward_model import resolve_reward_model

    folder, outcome = gold_project
    res = outcome.result
    with Project.open(folder) as project:
        pairs = text_pairs(project)
        checkpoints = project.checkpoints(outcome.run_id)
        split = json.loads((project.run_folder(outcome.run_id) / "pair_split.json").read_text())
        metrics = project.metrics(outcome.run_id)
        # the gold model is registered first: the run's newest reward model (run:N, the latest) is the proxy
        assert [json.loads(c["meta_json"])["role"] for c in checkpoints] == ["gold", "proxy"]
        assert [c["id"] for c in checkpoints] == [res["gold_checkpoint_id"], res["checkpoint_id"]]
        assert resolve_reward_model(f"run:{outcome.run_id}", project)[0] == project.abspath(checkpoints[1]["path"])
        assert resolve_reward_model("", project)[0] == project.abspath(checkpoints[1]["path"])
        named = artefacts.find_by_name(project, f"held-out gold RM, run {outcome.run_id}")
        assert named is not None and named.id == res["gold_checkpoint_id"]
        assert named.headline == ("reward_model/gold_heldout_accuracy", res["gold_heldout_accuracy"])
        by_id = {p.comparison_id: p for p in pairs}
    # disjoint and complete: every usable comparison trained or tested exactly one of the two models
    proxy_ids = split["proxy"]["train"] + split["proxy"]["heldout"]
    gold_ids = split["gold"]["train"] + split["gold"]["heldout"]
    assert sorted(proxy_ids + gold_ids) == sorted(by_id) and len(by_id) == 17
    assert not set(proxy_ids) & set(gold_ids)
    group = lambda cid: (by_id[cid].prompt, frozenset((by_id[cid].left, by_id[cid].right)))  # noqa: E731
    assert not {group(c) for c in proxy_ids} & {group(c) for c in gold_ids}  # no pair of responses on both sides
    # the counts the result and the models' cards report are those of the split
    assert (res["train_pairs"], res["heldout_pairs"]) == (len(split["proxy"]["train"]), len(split["proxy"]["heldout"]))
    assert (res["gold_train_pairs"], res["gold_heldout_pairs"]) == (len(split["gold"]["train"]),
                                                                    len(split["gold"]["heldout"]))
    assert res["pairs"] == len(proxy_ids) and res["gold_pairs"] == len(gold_ids) and res["all_pairs"] == 17
    assert res["gold_heldout_pairs"] >= 1 and 0.0 <= res["gold_heldout_accuracy"] <= 1.0
    # each model trained on its own side only: one batch step per 4 of its training pairs
    assert len(metrics["reward_model/loss"][0]) == -(-len(split["proxy"]["train"]) // 4)
    gold_steps = metrics["reward_model/gold_loss"][0]
    assert len(gold_steps) == -(-len(split["gold"]["train"]) // 4) == res["gold_steps"]
    assert min(gold_steps) > max(metrics["reward_model/loss"][0])  # after the proxy's steps
    assert metrics["reward_model/gold_heldout_accuracy"] == ([gold_steps[-1]], [pytest.approx(
        res["gold_heldout_accuracy"])])
    meta = json.loads((folder / checkpoints[0]["path"] / "reward_model.json").read_text())
    assert meta["role"] == "gold" and meta["train_pairs"] == len(split["gold"]["train"])
    assert "never saw" in (folder / checkpoints[0]["path"] / "README.md").read_text()


@needs_model
def test_grpo_measures_the_held_out_model_as_its_gold(gold_project, tiny_model):
    """gold/reward at every step is the mean score the held-out model gives that step's completions."""
    from rlhf_core.analysis.text_rl_monitor import overoptimisation_curve
    from rlhf_core.text.reward_model import load_text_reward_model, score_responses
    from rlhf_core.trainers.text.grpo import GRPOConfig

    folder, rm = gold_project
    config = cfg.from_dict(GRPOConfig, dict(
        model=str(tiny_model), steps=2, prompts_per_step=1, group_size=2, max_new_tokens=4, train_tasks=2,
        heldout_tasks=0, few_shot=False, save=False, samples_per_step=2, reward="model:1",
        reward_model=f"run:{rm.run_id}", gold_reward_model=str(rm.result["gold_checkpoint_id"])))
    outcome = execute_job(get_job("grpo"), config, RecordingContext(), project_path=folder)
    assert outcome.status == "completed", outcome.error
    with Project.open(folder) as project:
        metrics = project.metrics(outcome.run_id)
        samples = [s["payload"] for s in project.samples(outcome.run_id, "text_rl")]
    gold_rm, gold_tok = load_text_reward_model(rm.result["gold_path"])
    proxy_rm, proxy_tok = load_text_reward_model(rm.result["path"])
    steps, values = metrics["gold/reward"]
    assert steps == [0, 1] and len(samples) == 4  # every completion of both steps is published
    for step, value in zip(steps, values):
        shown = [s for s in samples if s["step"] == step]
        prompts, responses = [s["prompt"] for s in shown], [s["response"] for s in shown]
        gold = score_responses(gold_rm, gold_tok, prompts, responses).tolist()
        assert value == pytest.approx(sum(gold) / len(gold), abs=1e-4)
        assert [s["gold"] for s in shown] == pytest.approx(gold, abs=1e-4)
        proxy = score_responses(proxy_rm, proxy_tok, prompts, responses).tolist()
        assert metrics["reward/model"][1][step] == pytest.approx(sum(proxy) / len(proxy), abs=1e-4)
        assert all("gold_answer" in s for s in shown)
    # the over-optimisation view reads the held-out model as the gold and the optimised one as the proxy
    curve = overoptimisation_curve(metrics)
    assert (curve["proxy_key"], curve["gold_key"]) == ("reward/model", "gold/reward") and len(curve["gold"]) == 2
    assert outcome.result["gold_first"] == values[0] and outcome.result["gold_last"] == values[1]


@needs_model
def test_ppo_measures_the_held_out_model_as_its_gold(gold_project, tiny_model):
    """With raw scores (normalize_reward off), PPO's gold/reward is the held-out model's mean score of the
    rollout's completions."""
    from rlhf_core.text.reward_model import load_text_reward_model, score_responses
    from rlhf_core.trainers.text.ppo import PPOTextConfig

    folder, rm = gold_project
    with Project.open(folder) as project:
        pid = project.add_prompt("Name a colour.")
        pid2 = project.add_prompt("Say something kind.")
    config = PPOTextConfig(model=str(tiny_model), reward_model=str(rm.result["checkpoint_id"]), prompt_set="",
                           prompt_ids=[pid, pid2], gold_reward_model=str(rm.result["gold_checkpoint_id"]), steps=1,
                           batch_size=2, minibatch_size=2, ppo_epochs=1, max_new_tokens=4, normalize_reward=False,
                           reward_baseline="batch", samples_per_step=2)
    outcome = execute_job(get_job("ppo_text"), config, RecordingContext(), project_path=folder)
    assert outcome.status == "completed", outcome.error
    with Project.open(folder) as project:
        metrics = project.metrics(outcome.run_id)
        samples = [s["payload"] for s in project.samples(outcome.run_id, "text_rl")]
    gold_rm, gold_tok = load_text_reward_model(rm.result["gold_path"])
    steps, values = metrics["gold/reward"]
    assert steps == [0, 1]
    for step, value in zip(steps, values):
        shown = [s for s in samples if s["step"] == step]
        gold = score_responses(gold_rm, gold_tok, [s["prompt"] for s in shown], [s["response"] for s in shown])
        assert value == pytest.approx(float(gold.mean()), abs=1e-4)
        assert [s["gold"] for s in shown] == pytest.approx(gold.tolist(), abs=1e-4)


@needs_model
def test_a_run_cancelled_while_training_the_gold_model_resumes_to_the_same_models(tmp_path, tiny_model):
    with Project.create(tmp_path / "r.rlhf", name="R") as project:
        add_marker_pairs(project, 12)
    config = _rm_config(tiny_model, save_steps=1, score_responses=0)
    whole = execute_job(get_job("text_reward_model"), config, RecordingContext(), project_path=project.folder)
    assert whole.status == "completed", whole.error
    # proxy: 5 training pairs -> steps 1-2 (+ held-out accuracy at 2, final train metrics); gold: steps 3-4
    cut = execute_job(get_job("text_reward_model"), config, RecordingContext(cancel_after_metrics=5),
                      project_path=project.folder)
    assert cut.status == "cancelled", cut.error
    with Project.open(project.folder) as p:
        assert p.checkpoints(cut.run_id) == []  # neither model is registered before both are trained
        assert "reward_model/gold_loss" in p.metrics(cut.run_id)
    resumed = resume_run(project.folder, cut.run_id, RecordingContext())
    assert resumed.status == "completed", resumed.error
    with Project.open(project.folder) as p:
        a, b = p.metrics(whole.run_id), p.metrics(cut.run_id)
        assert [json.loads(c["meta_json"])["role"] for c in p.checkpoints(cut.run_id)] == ["gold", "proxy"]
    for key in ("reward_model/loss", "reward_model/gold_loss", "reward_model/gold_heldout_accuracy"):
        assert a[key][0] == b[key][0], key
        assert b[key][1] == pytest.approx(a[key][1], rel=1e-5, abs=1e-6), key
    for key in ("heldout_accuracy", "gold_heldout_accuracy", "gold_train_loss", "train_loss"):
        assert resumed.result[key] == pytest.approx(whole.result[key], rel=1e-5, abs=1e-6), key
    assert json.loads(open(resumed.result["split_path"]).read())["gold"] == \
        json.loads(open(whole.result["split_path"]).read())["gold"]
