"""The extrapolation demo fills one progress bar over its four stages: monotone, 1 only at the end."""

from __future__ import annotations

import pytest

from rlhf_core.experiments.extrapolation import EVAL_SHARE, REWARD_SHARE, ExtrapolationDemoConfig, _stage_spans
from rlhf_core.jobs import RecordingContext, execute_job, get_job

# CartPole: its tuned PPO collects 256 steps per update, so tiny budgets are honoured
TINY = dict(env_id="CartPole-v1", learner_steps=1024, checkpoint_every=512, episodes_per_checkpoint=2,
            max_demo_return=1000.0, snippet_pairs=200, members=1, reward_steps=40, snippet_min=5, snippet_max=10,
            ppo_steps=1024, eval_episodes=1, video_of_policy=False, bc_steps=200, drex_rollouts_per_level=2)


def test_stage_spans_cover_the_bar_in_order():
    spans = _stage_spans(ExtrapolationDemoConfig(learner_steps=20_000, ppo_steps=60_000))
    assert list(spans) == ["demonstrations", "reward_model", "ppo", "evaluation"]
    edges = [lo for lo, _ in spans.values()] + [spans["evaluation"][1]]
    assert edges == pytest.approx([0.0, 0.2025, 0.3625, 0.97, 1.0])  # 0.81 split 1:3 by the PPO steps
    assert spans["reward_model"][1] - spans["reward_model"][0] == pytest.approx(REWARD_SHARE)
    assert spans["evaluation"][1] - spans["evaluation"][0] == pytest.approx(EVAL_SHARE)


@pytest.mark.parametrize("method", ["trex", "drex"])
def test_progress_is_monotone_and_reaches_one_only_at_the_end(project, method):
    ctx = RecordingContext()
    config = ExtrapolationDemoConfig(method=method, **TINY)
    out = execute_job(get_job("extrapolation_demo"), config, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    fractions = [f for f, _ in ctx.progress_log]
    assert fractions == sorted(fractions), "the bar went back"
    assert fractions[-1] == 1.0 and all(f < 1.0 for f in fractions[:-1])
    spans = _stage_spans(config)
    messages = [m for _, m in ctx.progress_log]
    first_ppo = next(i for i, m in enumerate(messages) if m.startswith("PPO on learned reward"))
    assert fractions[first_ppo] >= spans["ppo"][0]  # PPO fills its own part, after the learner and the reward
    learner = [f for f, m in ctx.progress_log if m.startswith("learner")]
    assert learner and max(learner) <= spans["demonstrations"][1]
    if method == "drex":
        noise = [f for f, m in ctx.progress_log if m.startswith("D-REX")]
        assert noise and min(noise) >= spans["reward_model"][0] and max(noise) <= sum(spans["reward_model"]) / 2
