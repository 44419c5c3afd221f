"""The rollouts job's defaults leave something to label."""

from __future__ import annotations

from rlhf_core.jobs import NullContext, execute_job, get_job
from rlhf_core.sources.rollouts import RolloutConfig


def test_default_rollouts_on_cartpole_cut_clips_and_queue_pairs(project):
    config = RolloutConfig(env_id="CartPole-v1")  # every other setting at its default
    out = execute_job(get_job("rollouts"), config, NullContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    assert len(out.result["trajectories"]) == config.episodes == 4
    assert out.result["clips"] > 0 and out.result["queued_pairs"] > 0
    assert project.counts()["clips"] == out.result["clips"]
    assert project.waiting_count("clip") == out.result["queued_pairs"]


def test_one_clip_queues_no_pair_and_the_run_still_completes(project):
    config = RolloutConfig(env_id="CartPole-v1", episodes=1, max_steps=20)  # one short trajectory: one clip
    out = execute_job(get_job("rollouts"), config, NullContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    assert out.result["clips"] == 1 and out.result["queued_pairs"] == 0
