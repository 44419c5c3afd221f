"""One vocabulary: every metric key a job logs is declared in rlhf_core.metrics, and runs stored under
the old names (config fields, metric keys) read under the new ones."""

from __future__ import annotations

import json
import sqlite3

import pytest

from rlhf_core import config as cfg
from rlhf_core import kinds
from rlhf_core.jobs import RecordingContext, execute_job, get_job, list_jobs
from rlhf_core.metrics import METRIC_KEYS, RENAMED_KEYS, declared
from rlhf_core.store import Project
from tests.conftest import add_marker_pairs, needs_model


#: every registered job, each run below with tiny settings
CONTROL_JOBS = {"synthetic_preferences", "rollouts", "label_pairs", "reward_model", "ppo_learned", "learner", "bc",
                "preference_rl", "extrapolation_demo", "round", "active_queries"}
TEXT_JOBS = {"generate", "text_reward_model", "sft", "dpo", "grpo", "grpo_demo", "ppo_text", "ppo_demo", "ai_labels",
             "text_eval", "critique_revise", "refusal_eval", "cai_demo"}


def _run(project: Project, job: str, logged: dict[str, set[str]], **settings) -> dict:
    spec = get_job(job)
    ctx = RecordingContext()
    out = execute_job(spec, cfg.from_dict(spec.config_class(), settings), ctx, project_path=project.folder)
    assert out.status == "completed", f"{job}: {out.error}"
    logged.setdefault(job, set()).update(k for _, values in ctx.metric_log for k in values)
    return out.result


def _undeclared(logged: dict[str, set[str]]) -> dict[str, list[str]]:
    return {job: sorted(k for k in keys if declared(k) is None) for job, keys in logged.items()
            if any(declared(k) is None for k in keys)}


def test_declared_keys_are_well_formed():
    for key, meaning in METRIC_KEYS.items():
        assert key.count("/") == 1 and meaning.strip(), key
    for old, new in RENAMED_KEYS.items():
        assert old not in METRIC_KEYS and new in METRIC_KEYS
    from rlhf_core.analysis import text_rl_monitor as mon

    for key in (mon.KL_KEY, mon.KL_SEQ_KEY, mon.LENGTH_KEY, *mon.PROXY_KEYS, *mon.GOLD_KEYS):
        assert key in METRIC_KEYS, key


def test_every_declared_key_has_a_unit():
    """The plots give each unit its own y axis: every declared key names one."""
    from rlhf_core.metrics import METRIC_UNITS, unit

    assert list(METRIC_UNITS) == list(METRIC_KEYS)  # the same keys, in the same order
    assert all(isinstance(u, str) and u.strip() for u in METRIC_UNITS.values())
    assert unit("reward_model/m11_heldout_loss") == "nats" and unit("reward_model/m2_train_accuracy") == "fraction"
    assert unit("length/mean") == unit("completions/mean_length") == "tokens"  # a renamed key keeps its unit
    assert unit("rollout/epsilon") != unit("rollout/true_return") != unit("rollout/episode_length")
    assert unit("kl/beta") != unit("kl/token_mean") and unit("test/step") == ""


def test_control_jobs_log_only_declared_keys(project):
    logged: dict[str, set[str]] = {}
    _run(project, "synthetic_preferences", logged, steps=30, n_pairs=200)
    _run(project, "rollouts", logged, env_id="CartPole-v1", episodes=1, noise_schedule="drex_discrete",
         max_steps=30, clips_per_trajectory=1, clip_length=8, queue_pairs=3, record_video=False)
    _run(project, "label_pairs", logged, teacher="oracle")
    rm = _run(project, "reward_model", logged, env_id="CartPole-v1", source="drex", snippet_pairs=40, snippet_min=3,
              snippet_max=8, members=2, hidden=16, steps=20)
    _run(project, "ppo_learned", logged, env_id="CartPole-v1", reward_checkpoint_id=rm["checkpoint_id"],
         total_steps=1000, eval_episodes=1, record_video=False)
    from rlhf_core.envs.clips import make_clips  # the rollouts above stored no video, so no clips

    make_clips(project, [t["id"] for t in project.items("trajectory")], length=5, per_trajectory=2)
    _run(project, "active_queries", logged, env_id="CartPole-v1", reward_checkpoint_id=rm["checkpoint_id"],
         queue_pairs=2)
    _run(project, "learner", logged, env_id="CartPole-v1", total_steps=2048, checkpoint_every=1024,
         episodes_per_checkpoint=1, max_steps=50, record_video=False)
    _run(project, "bc", logged, env_id="CartPole-v1", epochs=3, eval_episodes=0)
    _run(project, "preference_rl", logged, env_id="CartPole-v1", rounds=2, steps_per_round=256, initial_labels=6,
         labels_per_round=4, clip_length=5, episodes_per_round=2, members=2, reward_steps=20)
    _run(project, "extrapolation_demo", logged, env_id="CartPole-v1", learner_steps=1024, checkpoint_every=512,
         episodes_per_checkpoint=2, max_demo_return=1000.0, snippet_pairs=200, members=1, reward_steps=40,
         snippet_min=5, snippet_max=10, ppo_steps=1024, eval_episodes=1, video_of_policy=False)
    _run(project, "round", logged, track="control", env_id="CartPole-v1", episodes=3, clips_per_trajectory=1,
         clip_length=500, queue_pairs=3, reward_steps=20, members=1, ppo_steps=1000, eval_episodes=1,
         heldout_fraction=0.0)  # its steps log into their own runs
    assert _undeclared(logged) == {} and set(logged) == CONTROL_JOBS
    assert "reward_model/m1_loss" in logged["reward_model"]  # a member's key, declared as reward_model/m{k}_loss


@needs_model
def test_text_jobs_log_only_declared_keys(project, tiny_model):
    from rlhf_core.labelers.text_labels import queue_response_pairs

    tiny = str(tiny_model)
    logged: dict[str, set[str]] = {}
    pids = add_marker_pairs(project, n_pairs=8)
    _run(project, "generate", logged, model=tiny, prompt_set="", prompt_ids=pids[:2], samples_per_prompt=2,
         max_new_tokens=4, batch_size=4)
    rm = _run(project, "text_reward_model", logged, model=tiny, label_sources="synthetic", epochs=1, batch_size=4,
              max_length=64, heldout_fraction=0.25, score_responses=8, gold_fraction=0.5)  # + the gold model's keys
    rm_run = max(r["id"] for r in project.runs("text_reward_model"))
    _run(project, "sft", logged, model=tiny, data="chosen", steps=2, batch_size=2, max_length=64, eval_every=1,
         heldout_fraction=0.25, save=False)
    _run(project, "dpo", logged, model=tiny, label_sources="synthetic", epochs=1, batch_size=4, max_length=64,
         heldout_fraction=0.25, eval_every=1, save=False)
    _run(project, "grpo", logged, model=tiny, steps=2, prompts_per_step=2, group_size=2, max_new_tokens=4,
         train_tasks=4, heldout_tasks=2, eval_every=1, eval_consensus_k=2, few_shot=False, save=False,
         gold_reward_model=str(rm["gold_checkpoint_id"]))
    _run(project, "grpo_demo", logged, model=tiny, steps=1, heldout_tasks=2, max_new_tokens=4)
    _run(project, "ppo_text", logged, model=tiny, reward_model=str(rm["checkpoint_id"]),
         gold_reward_model=str(rm["checkpoint_id"]), reward="model:1,length:0.01,format:0.1,correctness:0.1",
         prompt_set="", prompt_ids=pids[:2], steps=1, batch_size=2, minibatch_size=2, ppo_epochs=1,
         max_new_tokens=4)
    queue_response_pairs(project, seed=0)
    _run(project, "ai_labels", logged, method="judge", judge_model=tiny, max_pairs=2)
    _run(project, "ppo_demo", logged, model=tiny, n_prompts=2, label_samples=2, proxy_epochs=2, proxy_max_length=64,
         steps=2, batch_size=4, minibatch_size=4, ppo_epochs=1, max_new_tokens=4, eval_prompts=2, bon_samples=2,
         paired_eval_samples=2, paired_eval_every=1)
    _run(project, "text_eval", logged, policy_folder=tiny, reward_run=rm_run, heldout_tasks=2, k=2, max_new_tokens=4,
         few_shot=False)
    _run(project, "critique_revise", logged, model=tiny, prompt_set="", category="", prompt_ids=pids[:2],
         max_new_tokens=4, critique_max_new_tokens=4)
    _run(project, "refusal_eval", logged, model=tiny, max_per_label=1, max_new_tokens=4, second_judge="judge",
         judge_model=tiny)  # the second judge's keys too
    _run(project, "cai_demo", logged, model=tiny, max_train_prompts=2, max_eval_per_label=1, max_new_tokens=4,
         critique_max_new_tokens=4, sft_epochs=1)  # its stages log into their own runs
    assert _undeclared(logged) == {} and set(logged) == TEXT_JOBS


def test_every_job_is_run_here():
    assert {j.name for j in list_jobs()} == CONTROL_JOBS | TEXT_JOBS  # a new job: run it in a test above


# ------------------------------------------------------------------------ runs stored under the old names
def test_a_run_stored_with_old_names_reads_with_the_new_ones(project):
    old_config = {"model_path": "/models/base", "lr": 3e-4, "center_rewards": 0.01, "epochs": 1}
    run_id = project.create_run("text_reward_model", old_config, status="running")
    control = project.create_run("synthetic_preferences", {"lr": 0.01, "save_checkpoint": False}, status="running")
    project.log_metrics(run_id, 0, {"length/mean": 12.0, "length/min": 3.0, "length/max": 20.0, "reward/mean": 0.5})
    project.log_metrics(run_id, 1, {"length/mean": 14.0, "reward/mean": 0.6})
    project.finish_run(run_id, "completed")
    project.finish_run(control, "completed")
    # as written by the earlier version
    raw = sqlite3.connect(project.folder / "project.db")
    assert json.loads(raw.execute("SELECT config_json FROM runs WHERE id=?", [run_id]).fetchone()[0]) == old_config
    assert {r[0] for r in raw.execute("SELECT key FROM metrics WHERE run_id=?", [run_id])} >= {"length/mean"}
    raw.close()

    run = project.get_run(run_id)
    assert run["config"] == {"model": "/models/base", "learning_rate": 3e-4, "center_rewards_coefficient": 0.01,
                             "epochs": 1}
    from rlhf_core.trainers.text.reward_model import TextRewardModelConfig

    config = cfg.from_dict(TextRewardModelConfig, run["config"])
    assert (config.model, config.learning_rate) == ("/models/base", 3e-4)
    assert cfg.from_dict(TextRewardModelConfig, old_config).learning_rate == 3e-4  # old keys in a config file too
    assert project.get_run(control)["config"] == {"learning_rate": 0.01, "save": False}
    evaluation = project.create_run("text_eval", {"prompts": 4}, status="completed")
    assert project.get_run(evaluation)["config"] == {"heldout_tasks": 4}
    assert project.create_run("x", {"lr": 0.1}, status="completed")  # other jobs' settings are left as they are
    assert project.runs("x")[0]["config"] == {"lr": 0.1}

    metrics = project.metrics(run_id)
    assert metrics["completions/mean_length"] == ([0, 1], [12.0, 14.0])
    assert metrics["completions/min_length"] == ([0], [3.0]) and "length/mean" not in metrics
    assert project.metric_keys(run_id) == ["completions/max_length", "completions/mean_length",
                                           "completions/min_length", "reward/mean"]
    rows = project.metric_rows_since([run_id])[run_id]
    assert rows[0] == (0, {"completions/mean_length": 12.0, "completions/min_length": 3.0,
                           "completions/max_length": 20.0, "reward/mean": 0.5})
    from rlhf_core.analysis.text_rl_monitor import check_alerts

    collapsed = project.create_run("grpo", {}, status="running")
    project.log_metrics(collapsed, 0, {"length/mean": 40.0})
    project.log_metrics(collapsed, 1, {"length/mean": 3.0})
    assert [a.kind for a in check_alerts(project.metrics(collapsed))] == ["length_collapse"]


def test_the_old_cli_flags_still_work(capsys):
    from rlhf_core.cli import main

    code = main(["run", "synthetic_preferences", "--lr", "0.01", "--steps", "2", "--n-pairs", "50",
                 "--no-save-checkpoint"])
    assert code == 0
    err = capsys.readouterr().err
    assert "--lr is deprecated; use --learning-rate" in err and "--no-save-checkpoint is deprecated" in err
    help_text = _help("synthetic_preferences", capsys)
    assert "--learning-rate" in help_text and "--lr" not in help_text  # old flags are left out of --help


def _help(job: str, capsys) -> str:
    from rlhf_core.cli import main

    main(["run", job, "--help"])
    return capsys.readouterr().out


def test_kinds_are_named_once():
    assert kinds.TEXT_POLICY == "text_policy" and kinds.TEXT_REWARD_MODEL == "text_reward_model"
    assert kinds.SAMPLE_TEXT_RL == "text_rl"
