"""The language model a text benchmark runs on (shared by the benchmarks that compare with TRL)."""

from __future__ import annotations

from pathlib import Path

from rlhf_core.jobs import NullContext
from rlhf_core.text.model import ensure_default_model, make_tiny_model


def pick_model(tiny: bool, model: str, tmp: Path) -> tuple[Path, str]:
    """(folder, name): a 2-layer random Llama with the real tokenizer (``tiny``), the folder
    ``model``, or the bundled SmolLM2-135M (converted on first use)."""
    if tiny:
        folder = make_tiny_model(tmp / "tiny-llama", tokenizer_source=ensure_default_model(NullContext()))
        return folder, "tiny-llama (2 layers, 64 wide, SmolLM2 tokenizer)"
    if model:
        folder = Path(model).expanduser().absolute()
        return folder, str(folder)
    folder = ensure_default_model(NullContext())
    return folder, folder.name
