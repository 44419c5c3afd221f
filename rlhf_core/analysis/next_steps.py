"""The next useful steps for a project, read from what it holds: labels waiting → label them; labels and no
reward model → train one; a reward model and no policy on it → train one; nothing yet → collect.

The Project page shows them as buttons (a page to go to, or a job to open in the New Run dialog) and the New
Run dialog preselects the first step's job. Qt-free; the rules read the store only.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_core import kinds
from rlhf_core.store import Project

#: runs that train a control policy on a learned reward
_CONTROL_POLICY_JOBS = ("ppo_learned", "preference_rl")


@dataclass(frozen=True)
class NextStep:
    """``text`` says what the project holds; the button reads ``action`` and goes to ``page`` (a name of
    ``app.pages.PAGES``) or opens ``job`` in the New Run dialog. ``queue``: queue pairs on that page first."""

    text: str
    action: str
    page: str | None = None
    job: str | None = None
    queue: bool = False


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def next_steps(project: Project, limit: int = 4) -> list[NextStep]:
    """Up to ``limit`` steps, most useful first: labelling what waits, then training on the labels, then
    collecting more."""
    counts = project.counts()
    ckpt_kinds = {c["kind"] for c in project.checkpoints()}
    done_jobs = {r["kind"] for r in project.runs() if r["status"] == "completed"}
    clip_waiting, text_waiting = project.waiting_count("clip"), project.waiting_count("response")
    clip_labels, text_labels = project.comparison_count("clip"), project.comparison_count("response")
    steps: list[NextStep] = []

    # labels waiting for a person
    if clip_waiting:
        steps.append(NextStep(f"{_plural(clip_waiting, 'clip pair')} waiting for a label", "Label clips",
                              page="clips"))
    if text_waiting:
        steps.append(NextStep(f"{_plural(text_waiting, 'text pair')} waiting for a label", "Label text",
                              page="text"))
    elif project.prompts_with_responses(2):
        possible = sum(p["k"] * (p["k"] - 1) // 2 for p in project.prompts_with_responses(2))
        if possible > text_labels:
            steps.append(NextStep(f"Responses to compare and no text pairs queued ({_plural(possible, 'pair')} "
                                  "possible)", "Queue and label text", page="text", queue=True))

    # control: labels → reward model → policy
    has_reward = kinds.REWARD_ENSEMBLE in ckpt_kinds
    if (clip_labels or counts["rankings"]) and not has_reward:
        steps.append(NextStep(f"{_plural(clip_labels, 'clip label')}, no reward model yet", "Train a reward model",
                              job="reward_model"))
    elif has_reward and not done_jobs & set(_CONTROL_POLICY_JOBS):
        steps.append(NextStep("A reward model, no policy trained on it yet", "Train PPO on it", job="ppo_learned"))

    # text: comparisons → reward model or DPO → policy → evaluation
    has_text_rm = kinds.TEXT_REWARD_MODEL in ckpt_kinds
    has_text_policy = kinds.TEXT_POLICY in ckpt_kinds
    if text_labels and not has_text_rm:
        steps.append(NextStep(f"{_plural(text_labels, 'text comparison')}, no text reward model yet",
                              "Train a text reward model", job="text_reward_model"))
    if text_labels and not has_text_policy:
        steps.append(NextStep("Train a policy on the comparisons directly, without a reward model", "DPO",
                              job="dpo"))
    elif has_text_rm and not has_text_policy:
        steps.append(NextStep("A text reward model, no policy trained on it yet", "PPO on it", job="ppo_text"))
    if has_text_policy and "text_eval" not in done_jobs:
        steps.append(NextStep("A trained text policy, not evaluated yet", "Evaluate it", job="text_eval"))

    # collect when there is little or nothing to label
    if not clip_waiting and not counts["clips"]:
        what = "No clips yet" if counts["trajectories"] else "No trajectories yet"
        steps.append(NextStep(f"{what}: roll out a policy to make clips to compare", "Collect trajectories",
                              job="rollouts"))
    if not text_waiting and not counts["responses"]:
        steps.append(NextStep("No text responses yet: sample several per prompt to compare", "Generate text",
                              page="generate"))
    return steps[:limit]


def suggested_job(project: Project | None) -> str | None:
    """The job of the most useful next step that is a job (what the New Run dialog preselects), or None."""
    if project is None:
        return None
    return next((s.job for s in next_steps(project, limit=99) if s.job), None)
