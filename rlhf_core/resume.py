"""Resumable training state: what a trainer needs to continue a cancelled, failed or killed run.

A state is one folder, ``<run folder>/resume/state``, holding ``tensors.pt`` (the trainable weights,
optimiser and scheduler states, torch's random state; loaded with ``weights_only=True``) and
``state.json`` (the step, the trainer's own counters, Python's and NumPy's random states, the ids of
the run's checkpoint rows) and any files the trainer adds (an SB3 model's zip). It is written beside the
old one and swapped in by two renames, so a kill at any moment leaves a complete
state: the new one, or the previous one (``state.old``, kept until the swap is done).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STATE = "state"
OLD = "state.old"
FORMAT_VERSION = 1


@dataclass
class TrainingState:
    """A loaded state: ``step`` is the last finished step; ``tensors`` maps names to state dicts."""

    step: int
    extra: dict = field(default_factory=dict)
    tensors: dict[str, Any] = field(default_factory=dict)
    python_random: Any = None
    numpy_random: Any = None
    folder: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)  # name -> the file inside ``folder``
    checkpoints: list[int] | None = None  # the run's checkpoint rows when it was saved (None: not recorded)

    def restore_random(self) -> None:
        """Put torch's, Python's and NumPy's global random generators back where they were."""
        import numpy as np
        import torch  # start-up: torch

        if "torch_random" in self.tensors:
            torch.set_rng_state(self.tensors["torch_random"])
        if self.python_random is not None:
            random.setstate(random_state(self.python_random))
        if self.numpy_random is not None:
            np.random.set_state(tuple(self.numpy_random))


def random_state(saved) -> tuple:
    """A ``random.Random.getstate()`` that went through JSON, as ``setstate`` takes it."""
    version, internal, gauss = saved
    return version, tuple(internal), gauss


def trainable_state(model) -> dict:
    """The parameters that train (all of them in a full fine-tune, the adapters with LoRA) and buffers."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def load_trainable_state(model, saved: dict) -> None:
    """Load :func:`trainable_state`'s dict back; refuses a state that does not fit this model."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(saved) != names:
        raise ValueError("The saved training state does not fit this model (different trainable weights); "
                         "start a new run instead.")
    result = model.load_state_dict(saved, strict=False)
    if result.unexpected_keys:
        raise ValueError("The saved training state has weights this model does not have; start a new run.")


def resume_training(state: TrainingState, model, optimizer) -> dict:
    """Continue from ``state``: load the trainable weights and the optimiser, put the random generators
    back; returns the trainer's own counters (``extra``)."""
    load_trainable_state(model, state.tensors["model"])
    optimizer.load_state_dict(state.tensors["optimizer"])
    state.restore_random()
    return state.extra


def save_state(run_folder: str | os.PathLike, step: int, tensors: dict[str, Any], extra: dict | None = None,
               files: Mapping[str, bytes | str | os.PathLike] | None = None,
               checkpoints: list[int] | None = None) -> Path:
    """Write the state of a run after ``step`` atomically; returns its folder. ``files`` (name -> bytes, or
    a path to copy) are part of the state, swapped in with the rest; ``checkpoints``: the ids of the run's
    checkpoint rows now (a resumed run drops those added later: it adds them again)."""
    import numpy as np
    import torch  # start-up: torch

    base = Path(run_folder) / "resume"
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob("state.partial-*"):  # left by a save that was killed (one writer a run: its lease)
        shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix="state.partial-", dir=base))
    try:
        payload = dict(tensors)
        payload["torch_random"] = torch.get_rng_state()
        torch.save(payload, partial / "tensors.pt")
        names = sorted(files or {})
        for name in names:
            if Path(name).name != name or name in ("tensors.pt", "state.json"):
                raise ValueError(f"a state file needs a plain name of its own, not {name!r}")
            content = files[name]
            if isinstance(content, bytes):
                (partial / name).write_bytes(content)
            else:
                shutil.copyfile(content, partial / name)
            with open(partial / name, "rb") as fh:
                os.fsync(fh.fileno())
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        meta = {"format_version": FORMAT_VERSION, "step": int(step), "extra": extra or {}, "files": names,
                "checkpoints": None if checkpoints is None else [int(c) for c in checkpoints],
                "python_random": [version, list(internal), gauss],
                "numpy_random": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
        with open(partial / "state.json", "w") as fh:
            json.dump(meta, fh)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(partial)
        current, old = base / STATE, base / OLD
        if current.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(current, old)
        os.replace(partial, current)
        _fsync_dir(base)
        shutil.rmtree(old, ignore_errors=True)
        return current
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def load_state(run_folder: str | os.PathLike) -> TrainingState | None:
    """The newest complete state of a run (None when it saved none)."""
    import numpy as np
    import torch  # start-up: torch

    base = Path(run_folder) / "resume"
    for name in (STATE, OLD):  # OLD alone: killed between the two renames of a save
        folder = base / name
        if not (folder / "state.json").is_file() or not (folder / "tensors.pt").is_file():
            continue
        meta = json.loads((folder / "state.json").read_text())
        files = {name: folder / name for name in meta.get("files", [])}
        if not all(path.is_file() for path in files.values()):
            continue
        tensors = torch.load(folder / "tensors.pt", map_location="cpu", weights_only=True)
        numpy_random = meta.get("numpy_random")
        if numpy_random is not None:
            kind, keys, pos, has_gauss, cached = numpy_random
            numpy_random = (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
        return TrainingState(step=int(meta["step"]), extra=meta.get("extra", {}), tensors=tensors,
                             python_random=meta.get("python_random"), numpy_random=numpy_random, folder=folder,
                             files=files, checkpoints=meta.get("checkpoints"))
    return None


def has_state(run_folder: str | os.PathLike) -> bool:
    base = Path(run_folder) / "resume"
    return any((base / name / "state.json").is_file() for name in (STATE, OLD))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
