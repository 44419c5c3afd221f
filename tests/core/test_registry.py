"""The job registry: every built-in job is listed under a known group with a one-line summary."""

from __future__ import annotations

from rlhf_core.registry import JOB_GROUPS, list_jobs


def builtin_jobs():
    return [spec for spec in list_jobs() if spec.target.startswith("rlhf_core.")]


def test_every_builtin_job_has_a_known_group_and_a_one_line_summary():
    jobs = builtin_jobs()
    assert jobs
    for spec in jobs:
        assert spec.group in JOB_GROUPS, f"{spec.name}: group {spec.group!r} is not one of {list(JOB_GROUPS)}"
        assert spec.summary and "\n" not in spec.summary and len(spec.summary) <= 64, spec.name
    by_group = {g: sorted(s.name for s in jobs if s.group == g) for g in JOB_GROUPS}
    assert by_group["collect"] == ["generate", "learner", "rollouts"]
    assert by_group["label"] == ["active_queries", "ai_labels", "critique_revise", "label_pairs"]
    assert by_group["reward"] == ["reward_model", "text_reward_model"]
    assert by_group["evaluate"] == ["refusal_eval", "text_eval"]
    assert all(by_group.values()), "every group lists at least one job"
