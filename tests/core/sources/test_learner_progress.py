"""The learner job fills one progress bar over PPO and its checkpoints' roll-outs."""

from __future__ import annotations

from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.sources.learner import PPO_SHARE, LearnerConfig


def test_the_bar_rises_once_over_training_and_roll_outs(project):
    cfg = LearnerConfig(env_id="CartPole-v1", total_steps=1024, checkpoint_every=512, episodes_per_checkpoint=1,
                        max_steps=20, record_video=False)
    ctx = RecordingContext()
    out = execute_job(get_job("learner"), cfg, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    fractions = [f for f, _ in ctx.progress_log]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    ppo = [f for f, m in ctx.progress_log if m.startswith("PPO step")]
    rolled = [f for f, m in ctx.progress_log if m.startswith("rolled out")]
    assert max(ppo) <= PPO_SHARE <= min(rolled) and len(rolled) == len(out.result["checkpoints"])
