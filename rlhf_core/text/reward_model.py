"""A text reward model: a transformer with a one-output score head; building, saving, loading and
scoring (the training job is :mod:`rlhf_core.trainers.text.reward_model`).

Architecture (Ouyang et al. 2022; what transformers' ``AutoModelForSequenceClassification`` with
``num_labels=1`` builds, e.g. ``LlamaForSequenceClassification``): the transformer WITHOUT its
language-model head (``AutoModel``, e.g. ``LlamaModel``) reads ``chat_template([user: prompt,
assistant: response])``; the final hidden state of the last token goes through the bias-free
``score`` layer ``Linear(hidden, 1)`` and gives the reward r(x, y).

The scored token is transformers' own choice: the rightmost token that is not the pad token
(:meth:`TextRewardModel.last_token_index`), so ``AutoModelForSequenceClassification`` and
``pipeline("text-classification", function_to_apply="none")`` give the same rewards as the workbench.
The chat template ends every turn with ``<|im_end|>\\n`` (SmolLM2's pad token is ``<|im_end|>``), so a
formatted pair is scored on its final newline. Padding is on the RIGHT here (unlike generation).
Inputs longer than ``max_length`` tokens are cut on the right (the end of a long response is lost).
Texts are scored in groups of similar length (:func:`length_groups`), each padded only to its own
longest row: a row's reward does not depend on the rows beside it, and on a CPU the padding of one
batch of mixed lengths is paid for in full (about a third of the work for 16 texts of 40-100 tokens).

Saved result (format version 2): a standard ``AutoModelForSequenceClassification`` folder, safetensors
only (``config.json`` naming e.g. ``LlamaForSequenceClassification`` with ``num_labels`` 1 and
``pad_token_id``; ``model.safetensors`` with the transformer's weights and ``score.weight``), the
tokenizer with its pad token, ``reward_model.json`` (format, base model, max_length, results) and a
model card (``README.md``). Version 1 folders (an ``AutoModel`` backbone + ``reward_head.safetensors``
with a weight and a bias) are converted when loaded: the new files are written in place and the old
ones kept in ``old-format-v1/``. The old head's bias cannot be kept (the architecture's ``score`` has
none); it is 0 unless the model was trained with ``center_rewards_coefficient`` > 0, and dropping it
shifts every reward by the same constant (recorded as ``dropped_head_bias``), so that comparisons,
rankings and accuracies stay the same.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from rlhf_core import devices, kinds
from rlhf_core.store import artefacts
from rlhf_core.store.model_card import ModelCard
from rlhf_core.store.project import utc_now
from rlhf_core.text.model import (
    DEFAULT_MODEL_NAME,
    CorruptModelError,
    ModelNotFoundError,
    base_model_hub_id,
    check_model_folder,
    check_safetensors_file,
    ensure_default_model,
    fit_max_length,
    load_pretrained,
    quiet_transformers,
    read_model_config,
    resolve_model_spec,
)
from rlhf_core.text.prompts import plain_render

FORMAT_NAME = "rlhf-workbench-text-reward-model"
FORMAT_VERSION = 2
META_FILE = "reward_model.json"
HEAD_FILE = "reward_head.safetensors"  # format 1 only: the scalar head (weight [1, hidden], bias [1])
OLD_FORMAT_FOLDER = "old-format-v1"  # where converting a format-1 folder keeps its files
LOCK_FILE = ".convert.lock"  # held while a format-1 folder is converted
CHECKPOINT_KIND = kinds.TEXT_REWARD_MODEL

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- the model
class TextRewardModel(nn.Module):
    """Backbone (``AutoModel``) + one-output ``score`` head on the last non-pad token (right padding).

    ``head`` is the architecture's ``score`` layer (bias-free for every causal LM family transformers
    has); a new one is made when none is given. The tokenizer's pad token is written into the
    backbone's config (``pad_token_id``): it decides which token is scored.
    """

    def __init__(self, backbone: nn.Module, tokenizer: Any = None, *, max_length: int = 512,
                 head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        hidden = int(backbone.config.hidden_size)
        if head is None:
            head = nn.Linear(hidden, 1, bias=False)
            nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden + 1))
        if tuple(head.weight.shape) != (1, hidden):
            raise ValueError(f"the reward head maps {tuple(head.weight.shape)}, not a width-{hidden} state to 1 number")
        self.head = head
        self.tokenizer = tokenizer
        self.max_length = fit_max_length(backbone, int(max_length))[0]  # never beyond the position limit
        #: the autocast precision of its forward passes (:meth:`place`); float32 = plain float32
        self.precision = "float32"
        embedding = backbone.get_input_embeddings()
        embedding_params = embedding.weight.numel() if embedding is not None else 0
        #: multiply-adds per token of one forward pass, roughly (the weights it multiplies by)
        self.flops_per_token = max(1, sum(p.numel() for p in backbone.parameters()) - embedding_params)
        #: see :func:`length_groups`; 0 groups every distinct length on its own, inf never splits
        self.group_overhead_flops = GROUP_OVERHEAD_FLOPS
        if tokenizer is not None:
            prepare_tokenizer(tokenizer)
            backbone.config.pad_token_id = tokenizer.pad_token_id

    def place(self, device, precision: str = "float32", *, frozen: bool = False) -> "TextRewardModel":
        """Move to ``device`` and run forward passes under ``precision``'s autocast (a resolved
        precision: float32, bf16 or fp16). Trained weights stay float32; a ``frozen`` model (one that
        only scores) is cast to :func:`rlhf_core.devices.frozen_dtype` (half on a GPU), put in eval
        mode and has no gradients."""
        if frozen:
            self.to(device=device, dtype=devices.frozen_dtype(device, precision))
            self.eval()
            for p in self.parameters():
                p.requires_grad_(False)
        else:
            self.to(device=device)
        self.precision = precision
        return self

    def autocast(self):
        """The autocast context of this model's forward passes (a no-op for float32)."""
        return devices.autocast(next(self.parameters()).device, self.precision)

    @property
    def pad_token_id(self) -> int | None:
        """The token id that is padding (never scored); transformers reads it from ``config.json``."""
        return getattr(self.backbone.config, "pad_token_id", None)

    def last_token_index(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Index ``[batch]`` of the scored token: the rightmost token inside the mask that is not the pad
        token (transformers' ``...ForSequenceClassification`` rule; 0 for a row of pad tokens only)."""
        keep = attention_mask != 0
        if self.pad_token_id is not None:
            keep = keep & (input_ids != int(self.pad_token_id))
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        return (positions * keep.long()).argmax(-1)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The final hidden state of the scored token ``[batch, hidden]``: what the head reads."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state  # [batch, seq, hidden]
        last = self.last_token_index(input_ids, attention_mask)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rewards ``[batch]`` for right-padded ``input_ids`` ``[batch, seq]``."""
        return self.head(self.features(input_ids, attention_mask)).squeeze(-1)

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
        return self._by_length(rows, pad_token_id, self)

    def features_ids(self, rows: Sequence[Sequence[int]], pad_token_id: int | None = None) -> torch.Tensor:
        """:meth:`features` ``[len(rows), hidden]`` of unpadded token-id rows, grouped as :meth:`score_ids`."""
        return self._by_length(rows, pad_token_id, self.features)

    def _by_length(self, rows: Sequence[Sequence[int]], pad_token_id: int | None, fn) -> torch.Tensor:
        """``fn(ids, mask)`` of rows in groups of similar length, each right-padded to its longest row;
        the results in the order of ``rows``."""
        if not rows:
            raise ValueError("no rows to score")
        lengths = [len(r) for r in rows]
        if min(lengths) == 0:
            raise ValueError("a row of the batch has no tokens")
        if pad_token_id is None:
            pad_token_id = self.pad_token_id
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
            parts.append(fn(ids.to(device), mask.to(device)))
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
    """The model's chat template applied to [user: prompt, assistant: response] (as text); a tokenizer
    without one (GPT-2) gets the plain ``Question: ... Answer:`` prompt its policy samples from, then the response."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    if not getattr(tokenizer, "chat_template", None):
        return f"{plain_render(messages[:1])} {response}"
    return tokenizer.apply_chat_template(messages, tokenize=False)


def score_responses(model: TextRewardModel, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
                    *, batch_size: int = 16) -> torch.Tensor:
    """Rewards ``[n]`` of ``responses[i]`` to ``prompts[i]``: float32 on the CPU, wherever the model runs
    (eval and inference mode, the model's autocast, batches of ``batch_size``)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    texts = [format_pair_text(tokenizer, p, r) for p, r in zip(prompts, responses)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast_of(model):
            parts = [model.score(texts[i:i + batch_size], tokenizer).float().cpu()
                     for i in range(0, len(texts), batch_size)]
            scores = torch.cat(parts) if parts else torch.zeros(0)
    finally:
        model.train(was_training)
    return scores.clone()  # a plain tensor (not an inference tensor) that callers may change in place


def _autocast_of(model: Any):
    """``model.autocast()`` for a :class:`TextRewardModel`; no autocast for another scorer."""
    return model.autocast() if isinstance(model, TextRewardModel) else contextlib.nullcontext()


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
    """A fresh reward model on a causal LM folder ('' = the bundled default), or a saved reward model
    folder to train further: (model, tokenizer, model_id)."""
    folder, model_id = _resolve_base_folder(model_path, ctx)
    if (folder / META_FILE).is_file():
        model, tokenizer = load_text_reward_model(folder)
        model.max_length = fit_max_length(model.backbone, int(max_length))[0]
        return model, tokenizer, model_id
    check_model_folder(folder)  # a causal LM with complete safetensors weights
    backbone, tokenizer = _load_backbone(folder)
    torch.manual_seed(seed)  # the head's initialisation
    return TextRewardModel(backbone, tokenizer, max_length=max_length), tokenizer, model_id


def save_text_reward_model(model: TextRewardModel, folder: str | os.PathLike, meta: dict | None = None, *,
                           card: ModelCard | None = None) -> Path:
    """Write the model as a standard sequence-classification folder (see the module doc) with its
    model card (``card``, else one made from ``meta``); written aside, then moved in."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        _write_model_files(model, partial, meta or {}, card)
        os.chmod(partial, 0o755)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(partial, folder)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def _write_model_files(model: TextRewardModel, target: Path, meta: dict, card: ModelCard | None) -> None:
    shell = classifier_shell(model)
    with quiet_transformers():
        shell.save_pretrained(target, safe_serialization=True)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(target)
    record = {**meta, "format": FORMAT_NAME, "version": FORMAT_VERSION, "max_length": model.max_length,
              "hidden_size": int(model.backbone.config.hidden_size), "padding_side": "right",
              "architecture": type(shell).__name__, "pad_token_id": model.pad_token_id,
              "score_token": "rightmost token that is not the pad token (as transformers)"}
    (target / META_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    (card or reward_model_card(record)).write(target)


def classifier_shell(model: TextRewardModel):
    """transformers' ``...ForSequenceClassification`` (one label, the pad token set) built around the
    model's own backbone and head, for ``save_pretrained``: the weights are shared, not copied."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.backbone.config)
    config.num_labels = 1
    config.pad_token_id = model.pad_token_id
    config.architectures = None
    try:
        with torch.device("meta"):  # the shell's own (empty) layers are replaced below
            shell = AutoModelForSequenceClassification.from_config(config)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"transformers has no sequence-classification model for a {config.model_type!r} "
                         f"transformer, so the reward model cannot be saved in the standard layout ({exc})") from exc
    head = getattr(shell, "score", None)
    if not isinstance(head, nn.Linear) or head.out_features != 1:
        raise ValueError(f"{type(shell).__name__} has no one-output score layer; the reward model cannot be saved")
    if (head.bias is None) != (model.head.bias is None):
        raise ValueError(f"{type(shell).__name__}'s score layer {'has no' if head.bias is None else 'has a'} bias, "
                         "unlike this reward model's head")
    setattr(shell, shell.base_model_prefix, model.backbone)
    shell.score = model.head
    return shell


def reward_model_card(meta: dict, **fields: Any) -> ModelCard:
    """The model card of a text reward model: ``meta`` (``reward_model.json``) names the base model and
    the results; ``fields`` (job, config, run_id, project, training_data, metrics, ...) override."""
    base = str(meta.get("base_model") or "")
    hub = base_model_hub_id(base)
    counts = {k: meta[k] for k in ("pairs", "train_pairs", "heldout_pairs", "scored_responses") if k in meta}
    usage = (
        "```python\n"
        "from transformers import pipeline\n\n"
        "rm = pipeline(\"text-classification\", model=\"PATH/TO/THIS/FOLDER\", function_to_apply=\"none\")\n"
        "chat = [{\"role\": \"user\", \"content\": prompt}, {\"role\": \"assistant\", \"content\": response}]\n"
        "reward = rm(rm.tokenizer.apply_chat_template(chat, tokenize=False))[0][\"score\"]\n"
        "```\n\n"
        "`AutoModelForSequenceClassification.from_pretrained` loads it too (one output, `logits[:, 0]` is the "
        "reward), and TRL's `RewardTrainer` can train it further. The reward is read at the last token that is "
        "not the pad token; texts are the chat template applied to the prompt and the response.")
    values: dict[str, Any] = dict(
        job=str(meta.get("job") or "text_reward_model"), config=meta.get("config") or {},
        title="Reward model" + (f" (run {fields['run_id']})" if fields.get("run_id") is not None else ""),
        base_model=hub,
        base_model_note="" if hub else (f"the local model {base}" if base else ""),
        library_name="transformers", pipeline_tag="text-classification", tags=["reward-model", "rlhf"],
        training_data=counts,
        metrics={k: meta[k] for k in ("heldout_accuracy", "train_accuracy", "train_loss", "length_correlation")
                 if isinstance(meta.get(k), (int, float))},
        usage=usage)
    if meta.get("converted_from_version"):
        values["notes"] = [f"Converted from the workbench's earlier reward model layout; its files are kept in "
                           f"{OLD_FORMAT_FOLDER}/. The old head's bias, {meta.get('dropped_head_bias', 0.0)}, has no place in "
                           "the score layer: every reward is the old one minus it."]
    values.update(fields)
    return ModelCard(**values)


def _read_meta(folder: Path) -> dict:
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ModelNotFoundError(f"{folder} is not a text reward model folder (it has no {META_FILE}).")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptModelError(f"{meta_path} is damaged ({exc}).") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CorruptModelError(f"{meta_path} does not describe a text reward model.")
    version = meta.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CorruptModelError(f"{meta_path} is damaged (format version {version!r}).")
    if version > FORMAT_VERSION:
        raise CorruptModelError(f"{folder} was written by a newer RLHF Workbench (reward model format {version}; "
                                f"this one reads up to {FORMAT_VERSION}): update the workbench to load it.")
    return meta


def _max_length(meta: dict) -> int:
    value = meta.get("max_length")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 512


def load_text_reward_model(folder: str | os.PathLike, *, convert: bool = True, device=None,
                           precision: str = "float32") -> tuple[TextRewardModel, Any]:
    """Load a folder written by :func:`save_text_reward_model` (safetensors only): (model in eval mode, tokenizer).

    A format-1 folder (backbone + ``reward_head.safetensors``) is converted in place when ``convert``
    (the old files are kept in ``old-format-v1/``; a folder that cannot be written is loaded as it is).
    With ``device`` the model is placed there to score only (:meth:`TextRewardModel.place` with
    ``frozen``: half weights on a GPU for a half ``precision``, no gradients); without, float32 on the CPU.
    """
    model, tokenizer = _load_text_reward_model(folder, convert)
    if device is not None:
        model.place(device, precision, frozen=True)
    return model, tokenizer


def _load_text_reward_model(folder: str | os.PathLike, convert: bool) -> tuple[TextRewardModel, Any]:
    folder = Path(folder).expanduser()
    meta = _read_meta(folder)
    if meta.get("version", 1) >= 2:
        return load_classifier_folder(folder, max_length=_max_length(meta))
    if not convert:
        return _load_format_1(folder, meta)[:2]
    with _conversion_lock(folder) as locked:
        meta = _read_meta(folder)  # another process may have converted it while this one waited
        if meta.get("version", 1) >= 2:
            return load_classifier_folder(folder, max_length=_max_length(meta))
        old = folder / OLD_FORMAT_FOLDER
        model, tokenizer, bias = _load_format_1(old if (old / META_FILE).is_file() else folder, meta)
        if locked:
            try:
                _convert_format_1(folder, model, meta, bias)
            except OSError as exc:
                log.warning("could not convert the reward model in %s to the standard layout (%s); "
                            "it was loaded as it is", folder, exc)
            else:  # a process still waiting for the lock finds format 2 and converts nothing
                (folder / LOCK_FILE).unlink(missing_ok=True)
    return model, tokenizer


def load_classifier_folder(folder: str | os.PathLike, *, max_length: int = 512) -> tuple[TextRewardModel, Any]:
    """A one-output ``AutoModelForSequenceClassification`` folder (this format, or TRL's
    ``RewardTrainer`` output) as a :class:`TextRewardModel` in eval mode, with its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    folder = Path(folder).expanduser()
    config = read_model_config(folder)
    archs = [a for a in (config.get("architectures") or []) if isinstance(a, str)]
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise CorruptModelError(
            f"{folder} holds a {', '.join(archs) or config.get('model_type')} model, not a reward model: expected "
            "a ...ForSequenceClassification with one output (a workbench or TRL reward model).")
    id2label = config.get("id2label")
    n_labels = len(id2label) if isinstance(id2label, dict) and id2label else int(config.get("num_labels", 0) or 0)
    if n_labels != 1:
        raise CorruptModelError(f"{folder} is a classifier with {n_labels} outputs; a reward model has exactly one.")
    weights = sorted(folder.glob("model*.safetensors"))
    if not weights:
        raise CorruptModelError(f"{folder} has no safetensors weights (model.safetensors).")
    for path in weights:
        check_safetensors_file(path)
    with quiet_transformers():
        classifier, tokenizer = load_pretrained(folder, AutoModelForSequenceClassification, what="reward model")
    backbone = getattr(classifier, classifier.base_model_prefix, None)
    head = getattr(classifier, "score", None)
    if backbone is None or not isinstance(head, nn.Linear) or head.out_features != 1:
        raise CorruptModelError(f"Cannot read a {type(classifier).__name__} as a reward model: it has no "
                                "one-output score layer on top of its transformer.")
    hidden = int(backbone.config.hidden_size)
    if head.in_features != hidden:
        raise CorruptModelError(f"The reward head reads {head.in_features} features but the transformer has {hidden}.")
    model = TextRewardModel(backbone, tokenizer, max_length=max_length, head=head)
    model.eval()
    return model, tokenizer


def _load_format_1(folder: Path, meta: dict) -> tuple[TextRewardModel, Any, float]:
    """A format-1 folder: (model with a bias-free head, tokenizer, the old head's bias)."""
    from safetensors.torch import load_file

    for name in ("model.safetensors", HEAD_FILE):
        if not (folder / name).is_file():
            raise CorruptModelError(f"{folder} is incomplete: {name} is missing.")
        check_safetensors_file(folder / name)
    backbone, tokenizer = _load_backbone(folder)
    head_state = load_file(str(folder / HEAD_FILE))
    hidden = int(backbone.config.hidden_size)
    if tuple(head_state.get("weight", torch.zeros(0)).shape) != (1, hidden) or "bias" not in head_state:
        raise CorruptModelError(f"{folder / HEAD_FILE} does not fit a backbone of width {hidden}.")
    head = nn.Linear(hidden, 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(head_state["weight"].float())
    model = TextRewardModel(backbone, tokenizer, max_length=_max_length(meta), head=head)
    model.eval()
    return model, tokenizer, float(head_state["bias"].float().reshape(-1)[0])


@contextlib.contextmanager
def _conversion_lock(folder: Path):
    """An exclusive lock on converting ``folder`` (other processes wait); yields False when the folder
    cannot be written (then nothing is converted)."""
    try:
        import fcntl
    except ImportError:  # Windows: one process converts at a time is not guaranteed there
        fcntl = None  # type: ignore[assignment]
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _convert_format_1(folder: Path, model: TextRewardModel, meta: dict, bias: float) -> None:
    """Write the format-2 files into a format-1 folder, keeping the old files in ``old-format-v1/``.

    The old files are linked into the kept folder first (renamed in complete); then each new file
    replaces its old name; ``reward_model.json`` goes last, so a crash at any point leaves a folder
    that still says format 1 and loads from the kept copy.
    """
    old = folder / OLD_FORMAT_FOLDER
    if not (old / META_FILE).is_file():
        if old.exists():
            shutil.rmtree(old)
        staging = Path(tempfile.mkdtemp(prefix=".old-format.partial-", dir=folder))
        try:
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    try:
                        os.link(path, staging / path.name)
                    except OSError:
                        shutil.copy2(path, staging / path.name)
            os.chmod(staging, 0o755)
            os.replace(staging, old)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    record = {k: v for k, v in meta.items() if k not in ("format", "version", "hidden_size", "score_token")}
    record.update(converted_from_version=1, converted_at=utc_now(), dropped_head_bias=bias)
    staging = Path(tempfile.mkdtemp(prefix=".convert.partial-", dir=folder))
    try:
        _write_model_files(model, staging, record, None)
        for path in sorted(staging.iterdir()):
            if path.name != META_FILE:
                os.replace(path, folder / path.name)
        (folder / HEAD_FILE).unlink(missing_ok=True)
        os.replace(staging / META_FILE, folder / META_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("converted the reward model in %s to the standard layout (old files in %s/, head bias %.4g dropped)",
             folder, OLD_FORMAT_FOLDER, bias)


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
