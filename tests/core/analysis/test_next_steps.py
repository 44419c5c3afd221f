"""Next steps on real projects: each one follows from what the project holds after real jobs."""

from __future__ import annotations

from rlhf_core import config as cfg
from rlhf_core import kinds
from rlhf_core.analysis.next_steps import next_steps, suggested_job
from rlhf_core.jobs import NullContext, execute_job, get_job
from tests.conftest import add_marker_pairs


def _run(project, job: str, **settings) -> dict:
    spec = get_job(job)
    out = execute_job(spec, cfg.from_dict(spec.config_class(), settings), NullContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    return out.result


def _summary(project):
    return [(s.action, s.page, s.job) for s in next_steps(project)]


def test_control_track_collect_then_label_then_reward_model_then_policy(project):
    # empty: collect something first
    assert _summary(project) == [("Collect trajectories", None, "rollouts"), ("Generate text", "generate", None)]
    assert next_steps(project)[0].text.startswith("No trajectories yet")
    assert suggested_job(project) == "rollouts"

    # the rollouts job at its defaults queues clip pairs: label them
    queued = _run(project, "rollouts", env_id="CartPole-v1")["queued_pairs"]
    first = next_steps(project)[0]
    assert (first.text, first.action, first.page) == (f"{queued} clip pairs waiting for a label", "Label clips",
                                                      "clips")
    assert "rollouts" not in [s.job for s in next_steps(project)]  # clips exist now

    # labelled (by the simulated teacher): train a reward model
    _run(project, "label_pairs", teacher="oracle")
    assert project.waiting_count("clip") == 0
    first = next_steps(project)[0]
    assert (first.text, first.job) == (f"{queued} clip labels, no reward model yet", "reward_model")
    assert suggested_job(project) == "reward_model"

    # a reward model: train a policy on it
    _run(project, "reward_model", env_id="CartPole-v1", members=1, hidden=8, steps=10, heldout_fraction=0.0)
    assert any(c["kind"] == kinds.REWARD_ENSEMBLE for c in project.checkpoints())
    first = next_steps(project)[0]
    assert (first.text, first.action, first.job) == ("A reward model, no policy trained on it yet", "Train PPO on it",
                                                     "ppo_learned")
    assert suggested_job(project) == "ppo_learned"

    # PPO at its default reward_checkpoint_id (0) trains on that newest reward model of the env
    rm = next(c for c in project.checkpoints() if c["kind"] == kinds.REWARD_ENSEMBLE)
    result = _run(project, "ppo_learned", env_id="CartPole-v1", total_steps=1000, eval_episodes=1, record_video=False)
    assert result["reward_checkpoint_id"] == rm["id"]
    assert "ppo_learned" not in [s.job for s in next_steps(project)]


def test_ppo_on_a_learned_reward_without_one_says_so(project):
    spec = get_job("ppo_learned")
    out = execute_job(spec, cfg.from_dict(spec.config_class(), {"env_id": "CartPole-v1"}), NullContext(),
                      project_path=project.folder)
    assert out.status == "failed"
    assert "this project has no reward model of CartPole-v1 yet: train one first (job reward_model)" in out.error


def test_text_track_queue_label_then_reward_model_or_dpo(project):
    pids = [project.add_prompt("Name a colour.")]
    for text in ("Red.", "Blue.", "Green, I think."):
        project.add_item("response", prompt_id=pids[0], text=text, model_id="m")
    steps = next_steps(project)
    assert (steps[0].action, steps[0].page, steps[0].queue) == ("Queue and label text", "text", True)
    assert "3 pairs possible" in steps[0].text

    add_marker_pairs(project, n_pairs=6)  # six decided text comparisons
    summary = _summary(project)
    assert ("Train a text reward model", None, "text_reward_model") in summary
    assert ("DPO", None, "dpo") in summary
    assert next(s for s in next_steps(project) if s.job == "text_reward_model").text == \
        "6 text comparisons, no text reward model yet"
    # collecting trajectories is a job too (the project has none), but training on the labels comes first
    assert suggested_job(project) == "text_reward_model"


def test_no_project_suggests_nothing():
    assert suggested_job(None) is None
