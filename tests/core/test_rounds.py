"""Rounds (iterated RLHF as one job): two text rounds on the tiny model with a synthetic teacher, two CartPole
rounds with the oracle, the human path (queue, wait, continue as the same run), the CLI, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlhf_core import config as cfg
from rlhf_core import kinds
from rlhf_core.cli import main
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.rounds import (WAITING, RoundConfig, RoundError, continuable_round, continue_round, next_round_config,
                              policy_reference, read_state)
from rlhf_core.store import artefacts
from tests.conftest import needs_model

TINY_TEXT = dict(prompt_set="starter", max_prompts=2, samples_per_prompt=2, max_new_tokens=4, policy_steps=2,
                 reward_epochs=1, batch_size=2, max_length=64, heldout_fraction=0.25)
TINY_CONTROL = dict(track="control", env_id="CartPole-v1", episodes=4, clips_per_trajectory=1, clip_length=500,
                    queue_pairs=6, previous_pairs=4, reward_steps=30, members=1, ppo_steps=1000, eval_episodes=2,
                    heldout_fraction=0.0)


def _round(project, config: RoundConfig):
    out = execute_job(get_job("round"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    return out


def _children(project, round_run: int) -> dict[str, dict]:
    """The round's step runs by job name (each must be a completed child of the round)."""
    rows = [r for r in project.runs() if r["parent_run_id"] == round_run]
    assert all(r["status"] == "completed" for r in rows), [(r["kind"], r["status"]) for r in rows]
    return {r["kind"]: r for r in rows}


def _live_label(project, a: int, b: int) -> dict:
    rows = [c for c in project.comparisons() if {c["left_id"], c["right_id"]} == {a, b}]
    assert len(rows) == 1
    return rows[0]


def _expected_win_rate(project, pairs) -> float:
    """Win rate of the first item of each (new, old) pair from its stored label: 1 new, 0.5 tie, 0 old."""
    wins = []
    for new, old in pairs:
        c = _live_label(project, new, old)
        winner = {"left": c["left_id"], "right": c["right_id"]}.get(c["outcome"])
        wins.append(0.5 if c["outcome"] == "tie" else float(winner == new))
    return sum(wins) / len(wins)


def _label_queue(project, round_run: int, prefer_new_over: set[int] = frozenset()) -> int:
    """Label every open queue entry of ``round_run`` as a person would: the item not in ``prefer_new_over``
    wins (else the left one)."""
    n = 0
    for q in project.pending_pairs(limit=1000):
        if q["run_id"] != round_run:
            continue
        outcome = "right" if q["left_id"] in prefer_new_over else "left"
        project.add_comparison(q["left_id"], q["right_id"], outcome, source="human", queue_id=q["id"])
        n += 1
    return n


# ------------------------------------------------------------------------------------------- text
@needs_model
def test_two_text_rounds_with_a_synthetic_teacher_make_a_chain(project, tiny_model):
    first = _round(project, cfg.from_dict(RoundConfig, {**TINY_TEXT, "model": str(tiny_model), "teacher": "noisy"}))
    r1 = first.result
    assert (r1["round"], r1["status"], r1["from_policy"], r1["previous_round_run"]) == (1, "completed", "", None)
    steps = _children(project, first.run_id)
    assert set(steps) == {"generate", "label_pairs", "text_reward_model", "dpo"}
    assert r1["runs"] == {"generate": steps["generate"]["id"], "label": steps["label_pairs"]["id"],
                          "reward_model": steps["text_reward_model"]["id"], "policy": steps["dpo"]["id"]}
    assert steps["generate"]["config"]["model"] == str(tiny_model) == steps["dpo"]["config"]["model"]
    # 2 prompts x one new-vs-new pair (K=2), no previous round: 2 labels by the teacher, judged by length
    assert r1["queued_pairs"] == r1["labels_added"] == r1["labels_total"] == 2
    labels = project.comparisons()
    assert len(labels) == 2 and {c["source"] for c in labels} == {"synthetic"}
    assert {json.loads(c["meta_json"])["text_reward"] for c in labels} == {"length_penalty:1"}
    responses = project.run_items(steps["generate"]["id"], "response")
    assert r1["gold_reward"] == pytest.approx(-np.mean([r["length"] for r in responses]))
    assert r1["win_rate_vs_previous"]["n"] == 0 and r1["win_rate_vs_previous"]["by_reward_model"] is None
    policy1 = artefacts.resolve(project, r1["policy"], (kinds.TEXT_POLICY,))
    assert policy1.run_id == steps["dpo"]["id"]
    assert artefacts.resolve(project, r1["reward_model"], (kinds.TEXT_REWARD_MODEL,)).run_id == \
        steps["text_reward_model"]["id"]

    # round 2 from round 1's run: its settings carry over, its policy is the start
    config = next_round_config(project, {"from_policy": f"run:{first.run_id}"})
    assert (config.model, config.teacher, config.max_prompts, config.track) == (str(tiny_model), "noisy", 2, "text")
    second = _round(project, config)
    r2 = second.result
    assert (r2["round"], r2["from_policy"], r2["previous_round_run"]) == (2, r1["policy"], first.run_id)
    steps2 = _children(project, second.run_id)
    assert steps2["generate"]["config"]["model"] == r1["policy"] == steps2["dpo"]["config"]["model"]
    assert r2["policy"] not in (None, r1["policy"])
    # 2 new-vs-new pairs + 2 prompts x 2 new-vs-previous pairs; the reward model refits on both rounds' labels
    assert r2["queued_pairs"] == r2["labels_added"] == 6 and r2["labels_total"] == 8 > r1["labels_total"]
    win = r2["win_rate_vs_previous"]
    assert win["n"] == win["labeller_n"] == 4 and win["people_n"] == 0 and win["by_people"] is None
    assert 0.0 <= win["by_reward_model"] <= 1.0
    versus = [tuple(p) for p in read_state(project, second.run_id)["previous_pairs"]]
    old = {r["id"] for r in responses}
    assert len(versus) == 4 and all(n not in old and o in old for n, o in versus)
    assert win["by_labeller"] == pytest.approx(_expected_win_rate(project, versus))
    assert isinstance(r2["sampled_reward"], float) and r2["reward_heldout_accuracy"] in (0.0, 0.5, 1.0)


@needs_model
def test_an_ai_labeller_with_grpo_and_a_teacher_with_ppo(tmp_path, tiny_model):
    from rlhf_core.store import Project

    for name, settings, steps in (
            ("ai", {"labeller": "ai", "judge_model": str(tiny_model), "algorithm": "grpo", "device": "cpu",
                    "precision": "float32"}, {"ai_labels", "grpo"}),
            ("ppo", {"teacher": "noisy", "algorithm": "ppo"}, {"label_pairs", "ppo_text"})):
        with Project.create(tmp_path / f"{name}.rlhf") as project:
            out = _round(project, cfg.from_dict(RoundConfig, {**TINY_TEXT, "model": str(tiny_model), **settings}))
            children = _children(project, out.run_id)
            assert set(children) == {"generate", "text_reward_model"} | steps
            if name == "ai":  # every step that runs a language model gets the round's device and precision
                for kind in ("generate", "ai_labels", "text_reward_model", "grpo"):
                    assert (children[kind]["config"]["device"], children[kind]["result"]["device"]) == ("cpu", "cpu")
            assert artefacts.resolve(project, out.result["policy"], (kinds.TEXT_POLICY,)).run_kind in steps
            assert isinstance(out.result["policy_reward"], float)  # the trainer's last reward/mean
            sources = {c["source"] for c in project.comparisons()}
            assert out.result["labels_added"] == 2 and sources == ({"ai"} if name == "ai" else {"synthetic"})


@needs_model
def test_a_human_round_waits_for_its_labels_and_continues_as_the_same_run(project, tiny_model):
    config = cfg.from_dict(RoundConfig, {**TINY_TEXT, "model": str(tiny_model), "labeller": "human",
                                         "samples_per_prompt": 3})
    waiting = _round(project, config)
    r = waiting.result
    assert (r["status"], r["queued_pairs"], r["waiting_pairs"], r["policy"]) == (WAITING, 6, 6, None)
    assert set(r["runs"]) == {"generate"} and project.get_run(waiting.run_id)["status"] == "completed"
    with pytest.raises(RoundError, match=r"Round 1 \(run \d+\) still waits for 6 of its 6 pairs"):
        continuable_round(project)
    queue = [q for q in project.pending_pairs(limit=100) if q["run_id"] == waiting.run_id]
    for q in queue[:-1]:
        project.add_comparison(q["left_id"], q["right_id"], "left", source="human", queue_id=q["id"])
    with pytest.raises(RoundError, match="still waits for 1 of its 6 pairs"):
        continuable_round(project, waiting.run_id)
    project.add_comparison(queue[-1]["left_id"], queue[-1]["right_id"], "right", source="human",
                           queue_id=queue[-1]["id"])
    assert continuable_round(project) == waiting.run_id

    done = continue_round(project.folder, RecordingContext())
    assert (done.status, done.run_id) == ("completed", waiting.run_id), done.error
    r = done.result
    assert (r["status"], r["labels_added"], r["labels_total"], r["waiting_pairs"]) == ("completed", 6, 6, 0)
    assert set(r["runs"]) == {"generate", "reward_model", "policy"} and r["runs"]["generate"] == waiting.result[
        "runs"]["generate"]  # the responses were not generated again
    assert project.get_run(waiting.run_id)["result"]["policy"] == r["policy"]
    assert {k: v["status"] for k, v in _children(project, waiting.run_id).items()} == {
        "generate": "completed", "text_reward_model": "completed", "dpo": "completed"}
    with pytest.raises(RoundError, match="No round is waiting for labels"):
        continuable_round(project)


@needs_model
def test_round_command_runs_a_round_queues_for_people_and_continues(project, tiny_model, capsys):
    P = str(project.folder)
    flags = ["--model", str(tiny_model), "--max-prompts", "2", "--samples-per-prompt", "2", "--max-new-tokens", "4",
             "--policy-steps", "2", "--reward-epochs", "1", "--batch-size", "2", "--max-length", "64",
             "--teacher", "noisy"]
    assert main(["round", "--project", P, *flags]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (first["status"], first["result"]["round"], first["result"]["status"]) == ("completed", 1, "completed")

    # round 2 from round 1's run, labelled by people: the command queues and stops
    assert main(["round", "--project", P, "--from", f"run:{first['run_id']}", "--labeller", "human"]) == 0
    captured = capsys.readouterr()
    second = json.loads(captured.out.strip().splitlines()[-1])
    r2 = second["result"]
    assert (r2["round"], r2["status"], r2["from_policy"]) == (2, WAITING, first["result"]["policy"])
    assert "queued 6 pairs" in captured.err and "--continue" in captured.err
    assert main(["round", "--project", P, "--continue"]) == 2
    assert "still waits for 6 of its 6 pairs" in capsys.readouterr().err
    # people prefer the new policy's response in every new-vs-previous pair
    old = {r["id"] for r in project.run_items(first["result"]["runs"]["generate"], "response")}
    assert _label_queue(project, second["run_id"], prefer_new_over=old) == 6
    assert main(["round", "--project", P, "--continue"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (done["run_id"], done["status"], done["result"]["status"]) == (second["run_id"], "completed", "completed")
    win = done["result"]["win_rate_vs_previous"]
    assert (win["by_people"], win["people_n"], win["n"], win["labeller_n"]) == (1.0, 4, 4, 0)
    assert done["result"]["labels_total"] == 8


# ------------------------------------------------------------------------------------------- control
def test_two_cartpole_rounds_with_the_oracle_warm_start_ppo(project):
    from stable_baselines3 import PPO

    first = _round(project, cfg.from_dict(RoundConfig, TINY_CONTROL))
    r1 = first.result
    steps = _children(project, first.run_id)
    assert set(steps) == {"rollouts", "label_pairs", "reward_model", "ppo_learned"}
    assert steps["rollouts"]["config"]["policy"] == "random" and steps["ppo_learned"]["config"]["init_policy"] == ""
    assert (r1["round"], r1["queued_pairs"], r1["labels_added"], r1["labels_total"]) == (1, 6, 6, 6)
    clips = project.run_items(steps["rollouts"]["id"], "clip")
    assert len(clips) == 4 and r1["true_return"] == pytest.approx(np.mean([c["true_return"] for c in clips]))
    for c in project.comparisons():  # the oracle: the higher true return wins
        left, right = project.get_item(c["left_id"])["true_return"], project.get_item(c["right_id"])["true_return"]
        assert c["outcome"] == ("tie" if left == right else "left" if left > right else "right")
    assert r1["policy_reward"] == steps["ppo_learned"]["result"]["true_return_mean"] >= 8.0

    # the next round follows the policy's kind: a PPO policy means a control round
    config = next_round_config(project, {"from_policy": r1["policy"]})
    assert (config.track, config.env_id, config.ppo_steps) == ("control", "CartPole-v1", 1000)
    second = _round(project, config)
    r2 = second.result
    steps2 = _children(project, second.run_id)
    policy1 = artefacts.resolve(project, r1["policy"], (kinds.SB3_PPO,))
    assert (r2["round"], r2["from_policy"], r2["previous_round_run"]) == (2, r1["policy"], first.run_id)
    assert steps2["rollouts"]["config"]["policy"] == "checkpoint"
    assert steps2["rollouts"]["config"]["checkpoint_id"] == policy1.id
    assert steps2["ppo_learned"]["config"]["init_policy"] == r1["policy"]
    assert r2["labels_total"] == 16 > r1["labels_total"] and r2["labels_added"] == 10
    win = r2["win_rate_vs_previous"]
    assert win["n"] == win["labeller_n"] == 4 and 0.0 <= win["by_reward_model"] <= 1.0
    versus = [tuple(p) for p in read_state(project, second.run_id)["previous_pairs"]]
    assert win["by_labeller"] == pytest.approx(_expected_win_rate(project, versus))

    # warm start: round 2's PPO carries on from round 1's (its update count continues: 4 updates x 20 epochs each)
    policy2 = artefacts.resolve(project, r2["policy"], (kinds.SB3_PPO,))
    updates1 = PPO.load(policy1.path, device="cpu")._n_updates
    assert updates1 > 0 and PPO.load(policy2.path, device="cpu")._n_updates == 2 * updates1

    # a warm start that names no PPO policy stops the job with a sentence, before any training
    spec = get_job("ppo_learned")
    bad = execute_job(spec, cfg.from_dict(spec.config_class(), {"env_id": "CartPole-v1", "total_steps": 1000,
                                                                "init_policy": r1["reward_model"]}),
                      RecordingContext(), project_path=project.folder)
    assert bad.status == "failed" and "is a control reward model, not a PPO policy" in bad.message


class _CancelAt(RecordingContext):
    """Presses Cancel when the round's bar first reports the named step."""

    def __init__(self, step: str):
        super().__init__()
        self.step = step

    def _on_progress(self, fraction: float, message: str) -> None:
        super()._on_progress(fraction, message)
        if message.startswith(self.step):
            self.cancel()


def test_cancel_stops_the_running_step_and_the_round_continues_from_it(project):
    ctx = _CancelAt("reward_model")
    out = execute_job(get_job("round"), cfg.from_dict(RoundConfig, TINY_CONTROL), ctx, project_path=project.folder)
    assert out.status == "cancelled" and project.get_run(out.run_id)["status"] == "cancelled"
    statuses = {r["kind"]: r["status"] for r in project.runs() if r["parent_run_id"] == out.run_id}
    assert statuses == {"rollouts": "completed", "label_pairs": "completed", "reward_model": "cancelled"}
    fractions = [f for f, _ in ctx.progress_log]
    assert fractions == sorted(fractions) and 0.35 <= fractions[-1] <= 0.5  # the bar rose once, into the step

    done = continue_round(project.folder, RecordingContext(), out.run_id)
    assert (done.status, done.run_id) == ("completed", out.run_id), done.error
    kinds_run = [r["kind"] for r in project.runs() if r["parent_run_id"] == out.run_id]
    assert kinds_run == ["rollouts", "label_pairs", "reward_model", "reward_model", "ppo_learned"]  # done steps kept
    assert done.result["labels_added"] == 6 and done.result["policy"].startswith("checkpoint:")


# ------------------------------------------------------------------------------------------- labelling steps
def test_teacher_labels_text_pairs_by_a_rule_and_only_the_rounds_pairs(project):
    spec = get_job("label_pairs")
    prompt = project.add_prompt("Say hi")
    short, long, other = (project.add_item("response", prompt_id=prompt, text=t, length=n)
                          for t, n in (("hi", 1), ("hello there friend", 3), ("hey you", 2)))
    run = project.create_run("round", {}, status="completed")
    mine = project.enqueue_pair(long, short, run_id=run)
    theirs = project.enqueue_pair(short, other)
    out = execute_job(spec, cfg.from_dict(spec.config_class(), {"text_reward": "length", "queued_by_run": run}),
                      RecordingContext(), project_path=project.folder)
    assert out.status == "completed" and out.result["labelled"] == 1, out.error
    (label,) = project.comparisons()
    assert (label["left_id"], label["outcome"], label["source"]) == (long, "right", "synthetic")  # shorter wins
    assert [q["id"] for q in project.pending_pairs()] == [theirs] and mine != theirs
    with pytest.raises(cfg.ConfigError, match="a rule reward only"):  # a learned reward is the AI labeller's job
        cfg.from_dict(spec.config_class(), {"text_reward": "model"})

    from rlhf_core.labelers.ai_feedback import queued_text_pairs

    assert [r["id"] for r in queued_text_pairs(project)] == [theirs]
    assert queued_text_pairs(project, queued_by_run=run) == []


# ------------------------------------------------------------------------------------------- bad input
def test_bad_rounds_are_refused_with_a_sentence_and_start_nothing(project):
    with pytest.raises(cfg.ConfigError, match="the AI labeller judges text"):
        cfg.from_dict(RoundConfig, {"track": "control", "labeller": "ai"})
    with pytest.raises(cfg.ConfigError, match="oracle_reward: a rule reward only"):
        cfg.from_dict(RoundConfig, {"oracle_reward": "model:1"})
    with pytest.raises(cfg.ConfigError, match="oracle_reward: unknown reward 'kindness'"):
        cfg.from_dict(RoundConfig, {"oracle_reward": "kindness"})
    with pytest.raises(artefacts.ArtefactError, match="Run 42 does not exist"):
        policy_reference(project, "run:42", "text")
    waiting = project.create_run("round", {}, status="completed")
    project.finish_run(waiting, "completed", result={"status": WAITING, "round": 1})
    with pytest.raises(RoundError, match=f"Round run {waiting} has no policy yet: it is waiting for labels"):
        next_round_config(project, {"from_policy": f"run:{waiting}"})
    with pytest.raises(RoundError, match=f"Round run {waiting} has no steps to continue"):
        continuable_round(project, waiting)  # (no state: it stopped before its first step)
    other = project.create_run("rollouts", {}, status="completed")
    with pytest.raises(RoundError, match=f"Run {other} is not a round"):
        continuable_round(project, other)

    runs_before = len(project.runs())
    out = execute_job(get_job("round"), cfg.from_dict(RoundConfig, {"track": "control", "from_policy": "nope"}),
                      RecordingContext(), project_path=project.folder)
    assert out.status == "failed" and "No PPO policy is called 'nope'" in out.message
    assert len(project.runs()) == runs_before + 1  # the round's own run; no step ran
    assert main(["round", "--project", str(project.folder), "--from", "checkpoint:7"]) == 2
    assert main(["round", "--project", str(project.folder), "--continue", "--seed", "3"]) == 2
    assert main(["round", "--project", str(project.folder), "--labeller", "bogus"]) == 2
    assert len(project.runs()) == runs_before + 1
