"""Where things live: bundled resources (source checkout or frozen app) and per-user folders.

``resource_path`` is the ONE way code finds files under ``resources/``; it works from a source
checkout and from a PyInstaller bundle (``sys._MEIPASS``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_DIR_NAME = "rlhf-workbench"


def repo_root() -> Path:
    """The folder that holds ``resources/`` (the source checkout, or the bundle's data root)."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root)
    return Path(__file__).resolve().parent.parent


def resource_path(*parts: str) -> Path:
    """Absolute path of a bundled resource, e.g. ``resource_path("icons", "app.png")``."""
    return repo_root().joinpath("resources", *parts)


def user_data_dir() -> Path:
    """Per-user folder for settings, logs, caches and the demo project.

    ``RLHF_WORKBENCH_HOME`` overrides it (tests point it at a temporary folder).
    """
    override = os.environ.get("RLHF_WORKBENCH_HOME")
    if override:
        base = Path(override)
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = Path(xdg) / APP_DIR_NAME if xdg else Path.home() / ".local" / "share" / APP_DIR_NAME
    base.mkdir(parents=True, exist_ok=True)
    return base


def logs_dir() -> Path:
    p = user_data_dir() / "logs"
    p.mkdir(parents=True, exist_ok=True)
    return p


def cache_dir() -> Path:
    p = user_data_dir() / "cache"
    p.mkdir(parents=True, exist_ok=True)
    return p


def demo_project_path() -> Path:
    return user_data_dir() / "projects" / "demo.rlhf"
