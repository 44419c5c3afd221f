"""What the export and the import share: the export folder's format name, the file a finished
training leaves beside the model, the checkpoint kinds, which files are never copied, and the error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rlhf_core import kinds

FORMAT_NAME = "rlhf-workbench-cluster-export"
FORMAT_VERSION = 1
ALGOS = ("dpo", "grpo", "reward_model")
POLICY_KIND = kinds.TEXT_POLICY
REWARD_MODEL_KIND = kinds.TEXT_REWARD_MODEL
RESULT_FILE = "workbench_result.json"  # written by template/train.py next to the final model
#: files never copied by import or ``include_model``: pickles (can run code) and trainer state
SKIP_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "checkpoint-*", ".*")


class ClusterExportError(ValueError):
    """The export or import cannot be done; ``str(error)`` says why, for a person."""


def copy_model(source: Path, target: Path) -> None:
    """Copy a model folder without pickles, trainer checkpoints or hidden files."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*SKIP_PATTERNS), symlinks=False)


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds a cluster export (its config.json names this format)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False
