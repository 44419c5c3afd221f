"""The built-in demo project: what the app opens on first start and in ``--demo`` mode.

Its content is defined once, here: two labellers and the runs that fill a new demo project (a
reward model on synthetic preferences, so the plots have something to show; Pendulum
trajectories with clips and queued pairs, so the labelling pages do). The app submits the runs to
its job runner (they fill in live); ``python -m rlhf_core demo-project`` runs them in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_core import config as cfg
from rlhf_core.jobs import JobContext, JobSpec, NullContext, execute_job, get_job
from rlhf_core.paths import demo_project_path
from rlhf_core.store import Project, ProjectError

DEMO_NAME = "Demo project"
DEMO_LABELLERS = (("you", "human", None), ("oracle", "synthetic", {"teacher": "oracle"}))
DEMO_RUNS = (
    ("synthetic_preferences", {"steps": 150, "n_pairs": 1000}),
    ("rollouts", {"env_id": "Pendulum-v1", "episodes": 6, "clips_per_trajectory": 3, "queue_pairs": 12}),
)


def add_demo_labellers(project: Project) -> None:
    for name, kind, params in DEMO_LABELLERS:
        project.ensure_labeller(name, kind, params)


def demo_runs() -> list[tuple[JobSpec, Any]]:
    """The (job, validated config) pairs that fill a new demo project, in order."""
    out = []
    for name, settings in DEMO_RUNS:
        spec = get_job(name)
        out.append((spec, cfg.from_dict(spec.config_class(), settings)))
    return out


def ensure_demo_project(path: str | Path | None = None, ctx: JobContext | None = None) -> Path:
    """Open the demo project at ``path`` (default: per-user folder), creating and filling it if missing."""
    folder = Path(path) if path is not None else demo_project_path()
    if (folder / "project.db").exists():
        Project.open(folder).close()  # validates; raises ProjectError with a message
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with Project.create(folder, name=DEMO_NAME) as project:
        add_demo_labellers(project)
    for spec, config in demo_runs():
        outcome = execute_job(spec, config, ctx or NullContext(), project_path=folder)
        if outcome.status != "completed":
            raise ProjectError(f"Could not prepare the demo project ({spec.name}): {outcome.error}")
    return folder
