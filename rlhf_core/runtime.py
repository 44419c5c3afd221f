"""Process-wide runtime settings: offline defaults and the torch thread count.

Why threads matter here: on a 2-core machine torch's default of 2 intra-op threads made small
MLP steps 70-450x slower (see docs/performance.md). Small-network work uses 1 thread; the thread
count is a user setting and is applied in every worker thread before a job starts.
"""

from __future__ import annotations

import os
import sys

DEFAULT_TORCH_THREADS = 1
OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
}


def apply_offline_defaults() -> None:
    """Default to no network: set the hub's offline switches unless the user set them."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def set_torch_threads(n: int | None) -> int:
    """Set torch's intra-op thread count for the calling thread (and the process default).

    Returns the count in force. Does nothing (returns 0) if torch is not imported yet and cannot
    be imported.
    """
    n = DEFAULT_TORCH_THREADS if not n else int(n)
    if n < 1:
        raise ValueError("torch threads must be at least 1")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return 0
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


_NETWORK_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def network_allowed() -> bool:
    """Whether this process may download from the Hugging Face hub right now."""
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:  # pragma: no cover - transformers depends on it
        return os.environ.get("HF_HUB_OFFLINE", "1") in ("0", "false", "False", "")
    return not hub_constants.HF_HUB_OFFLINE


def set_network_allowed(allowed: bool) -> None:
    """The user's network switch: allow or forbid hub downloads for the rest of this process.

    Sets the offline environment variables (for libraries imported later) and the hub's
    already-imported offline flag (read at call time by huggingface_hub and transformers).
    Telemetry stays off either way.
    """
    value = "0" if allowed else "1"
    for key in _NETWORK_SWITCHES:
        os.environ[key] = value
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:  # pragma: no cover
        return
    hub_constants.HF_HUB_OFFLINE = not allowed


#: ``1``: every stored run also writes TensorBoard event files (``rlhf_core.io.tensorboard``); worker
#: processes (sweeps) inherit it
TENSORBOARD_ENV = "RLHF_TENSORBOARD"


def tensorboard_enabled() -> bool:
    """Whether runs started now also write TensorBoard event files (off unless switched on)."""
    return os.environ.get(TENSORBOARD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def set_tensorboard_enabled(enabled: bool) -> None:
    """The TensorBoard switch (the app's setting, the CLI's ``--tensorboard``) for this process and its children."""
    os.environ[TENSORBOARD_ENV] = "1" if enabled else "0"
