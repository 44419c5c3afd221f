"""A stored run with something of everything a report shows: metrics of several namespaces and units (an
ensemble's members, a NaN, a key under its old name), samples with hostile model text, a result, and labelled
data in the project. Made by a real job function through ``execute_job`` into a real project."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core.config import param
from rlhf_core.jobs import RecordingContext, execute_job

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)> & \"quotes\""
STEPS = 30


@dataclass
class ReportedConfig:
    steps: int = param(STEPS, "Steps.", min=1)
    note: str = param("<b>not bold</b>", "A text setting (shown escaped).")
    lr: float = param(3e-4, "A float setting.")


def reported_job(config: ReportedConfig, ctx) -> dict:
    for step in range(config.steps):
        ctx.metrics(step, {
            "reward/mean": 0.1 * step - 1.0, "reward/std": 1.0 / (step + 1),
            "kl/token_mean": 0.002 * step,
            "train/loss": float("nan") if step == 3 else 2.0 / (step + 1),
            "reward_model/m0_loss": 1.0 / (step + 1), "reward_model/m1_loss": 1.5 / (step + 1),
            "length/mean": 12.5 + step,  # an old name: reads as completions/mean_length
        })
        if step % 10 == 0:
            ctx.sample("text_rl", {"step": step, "prompt": f"Question {step} {HOSTILE}",
                                   "response": f"Answer {step}: " + HOSTILE * 3, "reward": 0.1 * step,
                                   "components": {"format": 1.0}, "length": 20 + step, "gold": None}, step=step)
    return {"final_reward": 0.1 * (config.steps - 1) - 1.0, "heldout_pairs": 12, "note": HOSTILE}


def add_data(project) -> None:
    """Prompts, responses and labels of two sources, so the report's data counts are not all zero."""
    pid = project.add_prompt("Say hello.")
    a = project.add_item("response", prompt_id=pid, text="Hello.", model_id="m")
    b = project.add_item("response", prompt_id=pid, text="Hi there.", model_id="m")
    c = project.add_item("response", prompt_id=pid, text="Good day.", model_id="m")
    project.add_comparison(a, b, "left", source="human")
    project.add_comparison(b, c, "right", source="synthetic")
    project.add_comparison(a, c, "tie", source="synthetic")


def make_reported_run(project) -> int:
    add_data(project)
    out = execute_job(reported_job, ReportedConfig(), RecordingContext(), project_path=project.folder, kind="grpo")
    assert out.status == "completed", out.error
    return out.run_id
