"""A text reward model: a causal-LM backbone with a scalar head; building, saving, loading and scoring
(the training job is :mod:`rlhf_core.trainers.text.reward_model`).

Architecture (as in Ouyang et al. 2022 / TRL's ``AutoModelForSequenceClassification`` for Llama):
the transformer WITHOUT its language-model head (``AutoModel``, e.g. ``LlamaModel``) reads
``chat_template([user: prompt, assistant: response])``; the final hidden state of the LAST
non-padding token goes through ``Linear(hidden, 1)`` and gives the reward r(x, y).

Padding is on the RIGHT here (unlike generation, which pads on the left), so the last real token
of row ``i`` sits at ``attention_mask[i].sum() - 1``. Inputs longer than ``max_length`` tokens are
cut on the right (the end of a long response is lost; the prompt and template header are kept).
Texts are scored in groups of similar length (:func:`length_groups`), each padded only to its own
longest row: a row's reward does not depend on the rows beside it, and on a CPU the padding of one
batch of mixed lengths is paid for in full (about a third of the work for 16 texts of 40-100 tokens).

Saved result (a Hugging Face folder, safetensors only): the backbone via ``save_pretrained`` (its
``config.json`` + ``model.safetensors``), the tokenizer, ``reward_head.safetensors`` (``weight``
[1, hidden], ``bias`` [1]) and ``reward_model.json`` (format, base model, max_length, results).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from rlhf_core import kinds
from rlhf_core.text.model import (
    DEFAULT_MODEL_NAME,
    CorruptModelError,
    ModelNotFoundError,
    check_model_folder,
    check_safetensors_file,
    ensure_default_model,
    load_pretrained,
    quiet_transformers,
    resolve_model_spec,
)
from rlhf_core.store import artefacts

FORMAT_NAME = "rlhf-workbench-text-reward-model"
FORMAT_VERSION = 1
HEAD_FILE = "reward_head.safetensors"
META_FILE = "reward_model.json"
CHECKPOINT_KIND = kinds.TEXT_REWARD_MODEL


# ------------------------------------------------------------------------------- the model
class TextRewardModel(nn.Module):
    """Backbone (``AutoModel``) + scalar head on the last non-padding token (right padding)."""

    def __init__(self, backbone: nn.Module, tokenizer: Any = None, *, max_length: int = 512,
                 head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        hidden = int(backbone.config.hidden_size)
        if head is None:
            head = nn.Linear(hidden, 1)
            nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden + 1))
            nn.init.zeros_(head.bias)
        self.head = head
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        embedding = backbone.get_input_embeddings()
        embedding_params = embedding.weight.numel() if embedding is not None else 0
        #: multiply-adds per token of one forward pass, roughly (the weights it multiplies by)
        self.flops_per_token = max(1, sum(p.numel() for p in backbone.parameters()) - embedding_params)
        #: see :func:`length_groups`; 0 groups every distinct length on its own, inf never splits
        self.group_overhead_flops = GROUP_OVERHEAD_FLOPS
        if tokenizer is not None:
            prepare_tokenizer(tokenizer)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rewards ``[batch]`` for right-padded ``input_ids`` ``[batch, seq]``."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state  # [batch, seq, hidden]
        last = attention_mask.long().sum(dim=1) - 1  # right padding: index of the last real token
        if bool((last < 0).any()):
            raise ValueError("a row of the batch has no tokens")
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(picked).squeeze(-1)

    def encode(self, texts: Sequence[str], tokenizer: Any = None) -> dict[str, torch.Tensor]:
        """Tokenise already-formatted texts: right padding, cut to ``max_length`` tokens."""
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError("this reward model has no tokenizer")
        prepare_tokenizer(tokenizer)
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             add_special_tokens=False, return_tensors="pt")
        device = next(self.parameters()).device
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def tokenize(self, texts: Sequence[str], tokenizer: Any = None) -> list[list[int]]:
        """Token ids of already-formatted texts, unpadded, each cut to ``max_length`` tokens."""
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            raise ValueError("this reward model has no tokenizer")
        return tokenizer(list(texts), truncation=True, max_length=self.max_length,
                         add_special_tokens=False)["input_ids"]

    def score_ids(self, rows: Sequence[Sequence[int]], pad_token_id: int | None = None) -> torch.Tensor:
        """Rewards ``[len(rows)]`` for unpadded token-id rows, in groups of similar length.

        Each group is right-padded to its own longest row and goes through :meth:`forward`; the
        rewards come back in the order of ``rows`` (the same values as one padded batch, up to
        float rounding).
        """
        if not rows:
            raise ValueError("no rows to score")
        lengths = [len(r) for r in rows]
        if min(lengths) == 0:
            raise ValueError("a row of the batch has no tokens")
        if pad_token_id is None:
            pad_token_id = getattr(self.tokenizer, "pad_token_id", None) or 0
        device = next(self.parameters()).device
        order: list[int] = []
        parts = []
        for group in length_groups(lengths, self.flops_per_token, self.group_overhead_flops):
            width = max(lengths[i] for i in group)
            ids = torch.full((len(group), width), int(pad_token_id), dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, i in enumerate(group):
                ids[row, :lengths[i]] = torch.as_tensor(rows[i], dtype=torch.long)
                mask[row, :lengths[i]] = 1
            parts.append(self(ids.to(device), mask.to(device)))
            order.extend(group)
        scores = torch.cat(parts)
        if order == list(range(len(rows))):
            return scores
        where = torch.empty(len(order), dtype=torch.long, device=scores.device)
        where[torch.as_tensor(order, device=scores.device)] = torch.arange(len(order), device=scores.device)
        return scores[where]

    def score(self, texts: Sequence[str], tokenizer: Any = None) -> torch.Tensor:
        """Rewards ``[len(texts)]`` for already-formatted texts (see :func:`format_pair_text`)."""
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        return self.score_ids(self.tokenize(texts, tokenizer), getattr(tokenizer, "pad_token_id", None))


#: Fixed cost of one more forward + backward pass, counted in multiply-adds, for :func:`length_groups`
#: (a rough CPU figure: per-operation overhead of every layer, the embedding gradient). With it
#: SmolLM2-135M (about 1e8 multiply-adds per token) splits a batch wherever that saves more than
#: ~10 padding tokens, and a tiny test model never splits.
GROUP_OVERHEAD_FLOPS = 1e9


def length_groups(lengths: Sequence[int], flops_per_token: float,
                  overhead_flops: float = GROUP_OVERHEAD_FLOPS) -> list[list[int]]:
    """Indices of rows grouped by length, the cheapest way to pad them (exact, by dynamic programming).

    Rows are sorted by length and cut into consecutive groups; a group costs
    ``rows * longest * flops_per_token + overhead_flops``. Groups come shortest first.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    sorted_lengths = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cheapest cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = sorted_lengths[j - 1]
        for i in range(j):
            cost = best[i] + (j - i) * longest * flops_per_token + overhead_flops
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups = []
    j = n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Right padding and a pad token (the EOS token when the tokenizer has none)."""
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "right"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def format_pair_text(tokenizer: Any, prompt: str, response: str) -> str:
    """The model's chat template applied to [user: prompt, assistant: response] (as text)."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


@torch.no_grad()
def score_responses(model: TextRewardModel, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
                    *, batch_size: int = 16) -> torch.Tensor:
    """Rewards ``[n]`` of ``responses[i]`` to ``prompts[i]`` (eval mode, batches of ``batch_size``)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    texts = [format_pair_text(tokenizer, p, r) for p, r in zip(prompts, responses)]
    was_training = model.training
    model.eval()
    try:
        parts = [model.score(texts[i:i + batch_size], tokenizer) for i in range(0, len(texts), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0)


# ------------------------------------------------------------------------------- loading & saving
def _resolve_base_folder(model_path: str, ctx=None) -> tuple[Path, str]:
    spec = resolve_model_spec(model_path, ctx)
    if spec in ("", "default", DEFAULT_MODEL_NAME):
        return ensure_default_model(ctx), DEFAULT_MODEL_NAME
    folder = Path(spec).expanduser().absolute()
    if not folder.exists():
        raise ModelNotFoundError(f"No model folder at {folder}: the path does not exist "
                                 "(the reward model is trained from a local folder only).")
    return folder, str(folder)


def _load_backbone(folder: Path):
    from transformers import AutoModel

    with quiet_transformers():
        backbone, tokenizer = load_pretrained(folder, AutoModel)
    return backbone, prepare_tokenizer(tokenizer)


def load_base_reward_model(model_path: str = "", *, max_length: int = 512, seed: int = 0, ctx=None):
    """A fresh reward model on a causal LM folder ('' = the bundled default): (model, tokenizer, model_id)."""
    folder, model_id = _resolve_base_folder(model_path, ctx)
    check_model_folder(folder)  # a causal LM with complete safetensors weights
    backbone, tokenizer = _load_backbone(folder)
    torch.manual_seed(seed)  # the head's initialisation
    return TextRewardModel(backbone, tokenizer, max_length=max_length), tokenizer, model_id


def save_text_reward_model(model: TextRewardModel, folder: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write the model as a Hugging Face folder (see the module doc); written aside, then moved in."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        with quiet_transformers():
            model.backbone.save_pretrained(partial, safe_serialization=True)
            if model.tokenizer is not None:
                model.tokenizer.save_pretrained(partial)
        save_file({"weight": model.head.weight.detach().cpu().contiguous(),
                   "bias": model.head.bias.detach().cpu().contiguous()}, str(partial / HEAD_FILE))
        record = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "max_length": model.max_length,
                  "hidden_size": int(model.backbone.config.hidden_size), "padding_side": "right",
                  "score_token": "last non-padding token", **(meta or {})}
        (partial / META_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.chmod(partial, 0o755)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(partial, folder)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def load_text_reward_model(folder: str | os.PathLike) -> tuple[TextRewardModel, Any]:
    """Load a folder written by :func:`save_text_reward_model` (safetensors only): (model in eval mode, tokenizer)."""
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ModelNotFoundError(f"{folder} is not a text reward model folder (it has no {META_FILE}).")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptModelError(f"{meta_path} is damaged ({exc}).") from exc
    if meta.get("format") != FORMAT_NAME:
        raise CorruptModelError(f"{meta_path} does not describe a text reward model.")
    for name in ("model.safetensors", HEAD_FILE):
        if not (folder / name).is_file():
            raise CorruptModelError(f"{folder} is incomplete: {name} is missing.")
        check_safetensors_file(folder / name)
    backbone, tokenizer = _load_backbone(folder)
    head_state = load_file(str(folder / HEAD_FILE))
    hidden = int(backbone.config.hidden_size)
    if tuple(head_state.get("weight", torch.zeros(0)).shape) != (1, hidden) or "bias" not in head_state:
        raise CorruptModelError(f"{folder / HEAD_FILE} does not fit a backbone of width {hidden}.")
    head = nn.Linear(hidden, 1)
    head.load_state_dict({"weight": head_state["weight"].float(), "bias": head_state["bias"].float()})
    model = TextRewardModel(backbone, tokenizer, max_length=int(meta.get("max_length", 512)), head=head)
    model.eval()
    return model, tokenizer


def resolve_reward_model(spec: str, project=None) -> tuple[Path, str]:
    """(folder, short id) of a text reward model: '' = the project's latest, an artefact reference
    (``run:7``, ``checkpoint:12``, ``12``, a name) or a folder. The short id (``run7``) does not change when
    the artefact is renamed: AI labellers are named after it."""
    spec = (spec or "").strip()
    if not spec:
        latest = artefacts.list_artefacts(project, (CHECKPOINT_KIND,)) if project is not None else []
        if not latest:
            raise ValueError("The project has no text reward model yet: train one first (job text_reward_model), "
                             "or give a reward model folder, or use the judge method.")
        return latest[0].path, _short_id(latest[0])
    found = artefacts.resolve(project, spec, (CHECKPOINT_KIND,))
    if isinstance(found, artefacts.Artefact):
        return found.path, _short_id(found)
    return found, found.name


def _short_id(artefact: artefacts.Artefact) -> str:
    return f"run{artefact.run_id}" if artefact.run_id is not None else f"checkpoint{artefact.id}"
