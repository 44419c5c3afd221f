"""Shared test set-up: offscreen Qt, a private per-user folder, one torch thread."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("RLHF_WORKBENCH_HOME", str(ROOT / ".pytest_cache" / "workbench-home"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One torch thread, as the app's default: two threads make small-network steps 70-450x slower on a
# busy 2-core machine (shared/STACK.md), and CI is such a machine.
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Every test gets its own per-user folder (settings, logs, demo project)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("RLHF_WORKBENCH_HOME", str(home))
    return home


@pytest.fixture
def project(tmp_path):
    from rlhf_core.store import Project

    p = Project.create(tmp_path / "test.rlhf", name="Test")
    yield p
    p.close()
