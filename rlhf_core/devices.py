"""Where text models run and in what precision: one ``device`` and one ``precision`` setting per job.

``device``: ``auto`` (the user's default from Settings, ``RLHF_DEVICE``; else CUDA when torch sees a
GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. A run that names CUDA on a machine without one is
refused with a sentence; nothing falls back silently.

``precision``: ``auto`` (float32 on the CPU; bf16 autocast on a GPU that has bf16, fp16 with a grad
scaler otherwise), ``float32``, ``bf16`` or ``fp16``. The CPU path stays float32 unless bf16 is asked
for explicitly (autocast works on the CPU too, which is how the suite checks the bf16 path).
Trainable weights stay float32 under autocast; frozen models (reference, reward models) are cast to
the half type on a GPU, where they only run forward.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import sys
from typing import Any

from rlhf_core.config import param

DEVICE_ENV = "RLHF_DEVICE"
PRECISIONS = ("auto", "float32", "bf16", "fp16")
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")


class DeviceError(ValueError):
    """A device or precision that cannot be used here; ``str(error)`` is a sentence for a person."""


def device_param(default: str = "auto"):
    """The ``device`` field every text job declares (same help everywhere)."""
    return param(default, "Where the model runs: auto (a GPU when there is one, else the CPU; the default "
                 "can be set in Settings), cpu, cuda or cuda:N.", label="Device", advanced=True)


def precision_param(default: str = "auto"):
    """The ``precision`` field every text job declares."""
    return param(default, "Arithmetic precision: auto (float32 on the CPU; bf16 on a GPU that supports it, "
                 "else fp16), float32, bf16 or fp16.", choices=PRECISIONS, label="Precision", advanced=True)


def spec_problem(spec: Any) -> str | None:
    """Why ``spec`` is not a device setting, or ``None`` (syntax only; availability is checked at start)."""
    if not isinstance(spec, str) or not _SPEC.match(spec.strip().lower()):
        return f"device: must be auto, cpu, cuda or cuda:N (N a GPU number), got {spec!r}"
    return None


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def default_device_spec() -> str:
    """The user's default for ``auto`` (Settings ▸ Device, carried to workers by ``RLHF_DEVICE``)."""
    value = os.environ.get(DEVICE_ENV, "").strip().lower()
    return value if value and spec_problem(value) is None else "auto"


def set_default_device(spec: str) -> None:
    """The app's setting: what ``auto`` means for jobs started from now on (and their worker processes)."""
    problem = spec_problem(spec)
    if problem:
        raise DeviceError(problem)
    os.environ[DEVICE_ENV] = spec.strip().lower()


def resolve_device(spec: str | None = "auto"):
    """The ``torch.device`` a job with setting ``spec`` runs on; :class:`DeviceError` when it cannot."""
    import torch

    problem = spec_problem(spec or "auto")
    if problem:
        raise DeviceError(problem)
    text = (spec or "auto").strip().lower()
    problem = spec_problem(text)
    if problem:
        raise DeviceError(problem)
    if text == "auto":
        text = default_device_spec()
        if text == "auto":
            return torch.device("cuda:0" if cuda_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not cuda_available():
        build = torch_build()["build"]
        raise DeviceError(
            f"This run asks for the GPU ({text}), but torch sees none here (torch build: {build}). "
            "Choose device cpu or auto, or install the CUDA build of torch (README: which torch you get)."
        )
    index = int(text.split(":")[1]) if ":" in text else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"This run asks for GPU {index}, but there {'is' if count == 1 else 'are'} only "
                          f"{count} (numbered from 0).")
    return torch.device(f"cuda:{index}")


def resolve_precision(precision: str | None, device) -> str:
    """``float32``, ``bf16`` or ``fp16`` for ``precision`` on ``device``; :class:`DeviceError` when impossible."""
    import torch

    text = (precision or "auto").strip().lower()
    if text not in PRECISIONS:
        raise DeviceError(f"precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    on_gpu = torch.device(device).type == "cuda"
    if text == "auto":
        if not on_gpu:
            return "float32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if text == "fp16" and not on_gpu:
        raise DeviceError("fp16 needs a GPU; on the CPU use float32 or bf16.")
    if text == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"{torch.cuda.get_device_name(device)} has no bf16 arithmetic; use fp16 or auto.")
    return text


def torch_dtype(precision: str):
    import torch

    return {"float32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device, precision: str):
    """The autocast context for forward passes (a no-op for float32)."""
    import torch

    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch_dtype(precision))


def grad_scaler(device, precision: str):
    """A gradient scaler for fp16 training (``None`` otherwise: bf16 and float32 need none)."""
    import torch

    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def frozen_dtype(device, precision: str):
    """The dtype of models that only run forward (reference, reward models): half on a GPU, float32 on the CPU."""
    import torch

    if torch.device(device).type == "cuda" and precision != "float32":
        return torch_dtype(precision)
    return torch.float32


def reset_peak_memory(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device) -> float:
    """Peak GPU memory allocated on ``device`` (CUDA), else the process's peak resident memory, in MB."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine() or "CPU"


def device_record(device, precision: str) -> dict:
    """What every text run's result records about where it ran."""
    import torch

    device = torch.device(device)
    return {"device": str(device), "device_name": device_name(device), "dtype": precision,
            "peak_memory_mb": round(peak_memory_mb(device), 1),
            "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss"}


def training_memory_mb(total_params: int, trainable_params: int, precision: str, *,
                       frozen_copies: int = 1, activations_mb: float = 0.0) -> float:
    """A rough estimate of the memory a training run needs: float32 weights, gradients and two AdamW
    moments for the trainable part, the rest of the weights, ``frozen_copies`` frozen models (reference,
    reward) in the forward dtype, plus ``activations_mb``."""
    frozen_bytes = 4 if precision == "float32" else 2
    weights = total_params * 4 + trainable_params * (4 + 8)
    frozen = frozen_copies * total_params * frozen_bytes
    return (weights + frozen) / 2**20 + activations_mb


def check_fits(device, needed_mb: float, what: str = "This run") -> None:
    """Refuse, in words, a run whose estimate exceeds the GPU's free memory (CPU runs are not checked)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return
    free, total = torch.cuda.mem_get_info(device)
    free_mb = free / 2**20
    if needed_mb > free_mb:
        raise DeviceError(
            f"{what} needs about {needed_mb / 1024:.1f} GB of GPU memory, but {device_name(device)} has "
            f"{free_mb / 1024:.1f} GB free of {total / 2**30:.1f} GB. Turn on LoRA or gradient checkpointing, "
            "use a smaller batch or model, or run on the CPU."
        )


def torch_build() -> dict:
    """Which torch this is and what it can see: shown in Help ▸ About and recorded by benchmarks."""
    import torch

    cuda = getattr(torch.version, "cuda", None)
    available = cuda_available()
    return {
        "torch": torch.__version__,
        "build": f"CUDA {cuda}" if cuda else "CPU only",
        "cuda_available": available,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available else [],
        "threads": torch.get_num_threads(),
    }


def for_switch(field, prefix: str):
    """:func:`device_param` / :func:`precision_param` of a config with a form switch (``FORM_SWITCH``): the
    help starts with ``prefix`` (``"text: "``) so that the app shows the setting only where it applies."""
    import dataclasses

    meta = {**field.metadata, "help": prefix + field.metadata["help"]}
    return dataclasses.field(default=field.default, metadata=meta)
