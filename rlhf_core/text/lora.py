"""LoRA settings for any causal-LM family: which layers get adapters, the automatic rank, wrapping.

A trainer's ``lora_rank`` setting: ``0`` full fine-tune, ``N > 0`` LoRA of rank N, ``-1`` (:data:`AUTO`)
chooses from the model's size (:func:`auto_lora_rank`: rank 16 above 500M parameters, where a full
fine-tune's optimiser state no longer fits a laptop comfortably; a full fine-tune below, so the bundled
135M model trains exactly as with ``0``).

Target layers (:func:`lora_target_modules`): a known family's attention and MLP projections
(Llama/Qwen2/Mistral ``q_proj ... down_proj``; GPT-2's ``c_attn``, ``c_proj``, ``c_fc``, which are
``Conv1D`` layers with transposed weights); any other family gets every ``Linear``/``Conv1D`` layer
inside its transformer, never the output head or the embeddings (TRL's ``all-linear``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: the ``lora_rank`` value that chooses the rank from the model's size
AUTO = -1
#: models with more parameters than this get LoRA under ``lora_rank = -1``
AUTO_LORA_MIN_PARAMS = 500_000_000
#: the rank ``lora_rank = -1`` chooses for a large model
AUTO_LORA_RANK = 16
#: the help text of every trainer's ``lora_rank`` setting
LORA_RANK_HELP = ("LoRA rank: -1 auto (rank 16 for models above 500M parameters, else a full fine-tune), "
                  "0 full fine-tune, N > 0 LoRA of rank N.")

_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: attention and MLP projections by ``config.model_type`` (only the names the model has are used)
FAMILY_TARGETS: dict[str, tuple[str, ...]] = {
    **{family: _LLAMA_LIKE for family in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2",
                                          "gemma3_text", "olmo", "olmo2", "granite", "smollm3")},
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
}
#: layer names that are never adapted (output heads)
_HEAD_NAMES = ("lm_head", "score", "embed_out", "output", "v_head")


@dataclasses.dataclass(frozen=True)
class LoraChoice:
    """What LoRA a policy got: ``rank`` 0 means a full fine-tune."""

    rank: int
    alpha: int
    target_modules: tuple[str, ...]
    requested: int  # the setting (-1: auto)
    n_params: int  # the model's parameters before adapters

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    def as_result(self) -> dict[str, Any]:
        """What a run's result records: whether LoRA was used and its rank."""
        return {"lora": self.enabled, "lora_rank": self.rank}


def auto_lora_rank(n_params: int) -> int:
    """The rank ``lora_rank = -1`` chooses: :data:`AUTO_LORA_RANK` above :data:`AUTO_LORA_MIN_PARAMS`, else 0."""
    return AUTO_LORA_RANK if int(n_params) > AUTO_LORA_MIN_PARAMS else 0


def resolve_lora_rank(requested: int, n_params: int) -> int:
    """The rank to use for setting ``requested`` (negative: auto) on a model of ``n_params`` parameters."""
    requested = int(requested)
    return auto_lora_rank(n_params) if requested < 0 else requested


def count_parameters(model: Any) -> int:
    """Parameters of ``model`` (tied weights once)."""
    return sum(p.numel() for p in model.parameters())


def _adaptable_layers(model: Any) -> dict[str, Any]:
    """Full name -> module of every Linear/Conv1D layer that is not an output head or embedding."""
    import torch
    from transformers.pytorch_utils import Conv1D

    heads = {id(m) for m in (_safe(model.get_output_embeddings), _safe(model.get_input_embeddings)) if m is not None}
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, Conv1D)) or id(module) in heads:
            continue
        if name.rsplit(".", 1)[-1] in _HEAD_NAMES:
            continue
        found[name] = module
    return found


def _safe(getter):
    try:
        return getter()
    except (AttributeError, NotImplementedError):
        return None


def lora_target_modules(model: Any) -> list[str]:
    """The layer names (last name part, as peft matches them) that get LoRA adapters in ``model``.

    A known family's projections that the model has; else every Linear/Conv1D layer's name. A
    :class:`ValueError` (a sentence) when the model has no such layer.
    """
    layers = _adaptable_layers(model)
    present = {name.rsplit(".", 1)[-1] for name in layers}
    family = str(getattr(getattr(model, "config", None), "model_type", "") or "")
    known = [n for n in FAMILY_TARGETS.get(family, ()) if n in present]
    names = known or sorted(present)
    if not names:
        raise ValueError(f"The {family or type(model).__name__} model has no Linear layers to put LoRA adapters on; "
                         "set lora_rank to 0 (full fine-tune).")
    return names


def _uses_conv1d(model: Any, names: list[str]) -> bool:
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) and n.rsplit(".", 1)[-1] in names for n, m in _adaptable_layers(model).items())


def choose_lora(model: Any, lora_rank: int, lora_alpha: int = 0) -> LoraChoice:
    """The LoRA a policy gets for setting ``lora_rank`` (-1 auto) and ``lora_alpha`` (0: twice the rank)."""
    n_params = count_parameters(model)
    rank = resolve_lora_rank(lora_rank, n_params)
    if rank <= 0:
        return LoraChoice(0, 0, (), int(lora_rank), n_params)
    return LoraChoice(rank, int(lora_alpha) if lora_alpha and lora_alpha > 0 else 2 * rank,
                      tuple(lora_target_modules(model)), int(lora_rank), n_params)


def apply_lora(model: Any, lora_rank: int, lora_alpha: int = 0, *,
               gradient_checkpointing: bool = False) -> tuple[Any, LoraChoice]:
    """``model`` wrapped with peft LoRA adapters as :func:`choose_lora` decides (unchanged for a full
    fine-tune), and the choice. Adapters start at zero, so the wrapped model equals the original and
    the model with its adapters off is the reference."""
    choice = choose_lora(model, lora_rank, lora_alpha)
    if not choice.enabled:
        return model, choice
    from peft import LoraConfig, get_peft_model

    names = list(choice.target_modules)
    config = LoraConfig(r=choice.rank, lora_alpha=choice.alpha, lora_dropout=0.0, target_modules=names,
                        fan_in_fan_out=_uses_conv1d(model, names), task_type="CAUSAL_LM")
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, config), choice
