"""The built-in demo project: what the app opens on first start and in ``--demo`` mode."""

from __future__ import annotations

from pathlib import Path

from rlhf_core.jobs import JobContext, NullContext, execute_job, get_job
from rlhf_core.paths import demo_project_path
from rlhf_core.store import Project, ProjectError


def ensure_demo_project(path: str | Path | None = None, ctx: JobContext | None = None) -> Path:
    """Open the demo project at ``path`` (default: per-user folder), creating it if missing.

    A new demo project gets the two standard labellers and one finished reward-model run so
    the run and plot views have something to show.
    """
    folder = Path(path) if path is not None else demo_project_path()
    if (folder / "project.db").exists():
        Project.open(folder).close()  # validates; raises ProjectError with a message
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with Project.create(folder, name="Demo") as project:
        project.ensure_labeller("you", "human")
        project.ensure_labeller("oracle", "synthetic", {"teacher": "oracle"})
    spec = get_job("synthetic_preferences")
    config_cls = spec.config_class()
    outcome = execute_job(spec, config_cls(steps=150, n_pairs=1000), ctx or NullContext(),
                          project_path=folder)
    if outcome.status != "completed":
        raise ProjectError(f"Could not prepare the demo project: {outcome.error}")
    return folder
