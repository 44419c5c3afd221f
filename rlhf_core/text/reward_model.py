"""A text reward model: a causal-LM backbone with a scalar head, trained on the project's comparisons.

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

Training pairs: every live comparison whose two items are responses to the SAME prompt, from the
chosen label sources; the outcome becomes P(left better) via :func:`outcome_target` (``tie`` ->
0.5, ``both_bad``/``skip`` left out). The loss is :func:`bradley_terry_loss` on
(r(x, y_left), r(x, y_right)), i.e. ``-log sigmoid(r_w - r_l)`` for a decided pair.

Saved result (a Hugging Face folder, safetensors only): the backbone via ``save_pretrained`` (its
``config.json`` + ``model.safetensors``), the tokenizer, ``reward_head.safetensors`` (``weight``
[1, hidden], ``bias`` [1]) and ``reward_model.json`` (format, base model, max_length, results).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from rlhf_core import kinds
from rlhf_core.config import param
from rlhf_core.store import SOURCES
from rlhf_core.jobs import JobContext
from rlhf_core.rewards.bradley_terry import bradley_terry_loss, outcome_target, pair_accuracy

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
    from rlhf_core.text.model import DEFAULT_MODEL_NAME, ModelNotFoundError, ensure_default_model

    spec = (model_path or "").strip()
    if spec in ("", "default", DEFAULT_MODEL_NAME):
        return ensure_default_model(ctx), DEFAULT_MODEL_NAME
    folder = Path(spec).expanduser().absolute()
    if not folder.exists():
        raise ModelNotFoundError(f"No model folder at {folder}: the path does not exist "
                                 "(the reward model is trained from a local folder only).")
    return folder, str(folder)


def _load_backbone(folder: Path):
    from transformers import AutoModel, AutoTokenizer

    from rlhf_core.text.model import CorruptModelError, _first_line, _info_get, _quiet_transformers

    with _quiet_transformers():
        try:
            backbone, info = AutoModel.from_pretrained(folder, dtype=torch.float32, use_safetensors=True,
                                                       local_files_only=True, trust_remote_code=False,
                                                       output_loading_info=True)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise CorruptModelError(f"Could not load the model in {folder}: {_first_line(exc)}") from exc
        missing = sorted(_info_get(info, "missing_keys"))
        if missing:
            raise CorruptModelError(f"The weights in {folder} do not match its config.json "
                                    f"({len(missing)} missing, e.g. {', '.join(map(str, missing[:3]))}).")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - tokenizers raise many kinds of errors
            raise CorruptModelError(f"Could not load the tokenizer in {folder}: {_first_line(exc)}") from exc
    return backbone, prepare_tokenizer(tokenizer)


def load_base_reward_model(model_path: str = "", *, max_length: int = 512, seed: int = 0, ctx=None):
    """A fresh reward model on a causal LM folder ('' = the bundled default): (model, tokenizer, model_id)."""
    from rlhf_core.text.model import check_model_folder

    folder, model_id = _resolve_base_folder(model_path, ctx)
    check_model_folder(folder)  # a causal LM with complete safetensors weights
    backbone, tokenizer = _load_backbone(folder)
    torch.manual_seed(seed)  # the head's initialisation
    return TextRewardModel(backbone, tokenizer, max_length=max_length), tokenizer, model_id


def save_text_reward_model(model: TextRewardModel, folder: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write the model as a Hugging Face folder (see the module doc); written aside, then moved in."""
    from safetensors.torch import save_file

    from rlhf_core.text.model import _quiet_transformers

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        with _quiet_transformers():
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

    from rlhf_core.text.model import CorruptModelError, ModelNotFoundError, check_safetensors_file

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


# ------------------------------------------------------------------------------- pairs
@dataclass
class TextPair:
    prompt: str
    left: str
    right: str
    target: float  # P(left is better): 1, 0 or 0.5
    comparison_id: int | None = None


def text_pairs(project, label_sources: str = "human,synthetic,ai") -> list[TextPair]:
    """Every live comparison of two live responses to the same prompt, with a preference.

    A pair that a person labelled is trained on the person's label(s) only: AI labels of the same
    two responses are dropped (a reviewed or overridden AI label must not count against the
    person's answer).
    """
    wanted = {s.strip() for s in label_sources.split(",") if s.strip()}
    prompts: dict[int, str] = {}
    out = []
    comparisons = project.comparisons()
    human_pairs = {frozenset((c["left_id"], c["right_id"])) for c in comparisons if c["source"] == "human"}
    for c in comparisons:
        target = outcome_target(c["outcome"])
        if target is None or c["source"] not in wanted:
            continue
        if c["source"] == "ai" and frozenset((c["left_id"], c["right_id"])) in human_pairs:
            continue
        left, right = project.get_item(c["left_id"]), project.get_item(c["right_id"])
        if left is None or right is None or any(
                i["kind"] != "response" or i["deleted_at"] is not None or i["text"] is None for i in (left, right)):
            continue
        if left["prompt_id"] is None or left["prompt_id"] != right["prompt_id"]:
            continue
        pid = int(left["prompt_id"])
        if pid not in prompts:
            row = project.conn.execute("SELECT text FROM prompts WHERE id=?", [pid]).fetchone()
            if row is None:
                continue
            prompts[pid] = row[0]
        out.append(TextPair(prompts[pid], left["text"], right["text"], float(target), int(c["id"])))
    return out


def split_pairs(pairs: list, heldout_fraction: float, seed: int) -> tuple[list, list]:
    """(train, heldout): a seeded shuffle; at least one training pair stays."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_held = min(int(round(len(pairs) * heldout_fraction)), len(pairs) - 1) if heldout_fraction > 0 else 0
    held = [pairs[i] for i in order[:n_held]]
    train = [pairs[i] for i in order[n_held:]]
    return train, held


def pair_loss(model: TextRewardModel, batch: Sequence[TextPair], tokenizer: Any, *,
              center_rewards_coefficient: float = 0.0):
    """(loss, score_left, score_right, mean_tokens) for a batch of pairs.

    The 2B texts (lefts, then rights) are scored together by :meth:`TextRewardModel.score_ids`, in
    groups of similar length rather than one batch padded to the longest text.

    ``center_rewards_coefficient`` c > 0 adds ``c * mean((r_left + r_right)^2)`` (Eisenstein et al.
    2023, eq. 2; TRL's ``RewardConfig.center_rewards_coefficient``), which pulls the rewards towards
    mean zero; the Bradley-Terry term alone only sees differences of rewards.
    """
    texts = [format_pair_text(tokenizer, p.prompt, p.left) for p in batch] + \
            [format_pair_text(tokenizer, p.prompt, p.right) for p in batch]
    rows = model.tokenize(texts, tokenizer)
    scores = model.score_ids(rows, tokenizer.pad_token_id)
    n = len(batch)
    left, right = scores[:n], scores[n:]
    target = torch.tensor([p.target for p in batch], dtype=scores.dtype, device=scores.device)
    loss = bradley_terry_loss(left, right, target)
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((left + right) ** 2).mean()
    return loss, left, right, sum(len(r) for r in rows) / len(rows)


def make_optimizer(model: TextRewardModel, lr: float, *, fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW over the whole backbone and the head, no weight decay (the job's optimiser).

    ``fused`` (default: where torch has it, i.e. float weights on CPU or CUDA) updates all tensors
    in one kernel: for SmolLM2-135M on one CPU thread 0.22 s per step instead of 0.72 s. It is
    also TRL's default optimiser (``adamw_torch_fused``).
    """
    params = list(model.parameters())
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=bool(fused))


def set_gradient_checkpointing(model: TextRewardModel, enabled: bool) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them (training only)."""
    backbone = model.backbone
    if enabled:
        enable = getattr(backbone, "activation_checkpointing_enable", None) or backbone.gradient_checkpointing_enable
        enable()
    else:
        disable = getattr(backbone, "activation_checkpointing_disable", None) or backbone.gradient_checkpointing_disable
        disable()


def train_step(model: TextRewardModel, optimiser: torch.optim.Optimizer, batch: Sequence[TextPair],
               tokenizer: Any, *, center_rewards_coefficient: float = 0.0) -> dict[str, float]:
    """One optimisation step on a batch of pairs (what the job does per step): the step's metrics."""
    loss, left, right, mean_len = pair_loss(model, batch, tokenizer,
                                            center_rewards_coefficient=center_rewards_coefficient)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    target = torch.tensor([p.target for p in batch])
    return {"reward_model/loss": float(loss.detach()),
            "reward_model/train_accuracy": pair_accuracy(left.detach(), right.detach(), target),
            "reward_model/mean_length": mean_len}


@torch.no_grad()
def evaluate_pairs(model: TextRewardModel, pairs: Sequence[TextPair], tokenizer: Any,
                   batch_size: int = 8) -> tuple[float, float]:
    """(mean BT loss, accuracy on decided pairs) in eval mode."""
    if not pairs:
        return float("nan"), float("nan")
    was_training = model.training
    model.eval()
    try:
        lefts, rights, losses = [], [], []
        for i in range(0, len(pairs), batch_size):
            batch = pairs[i:i + batch_size]
            loss, left, right, _ = pair_loss(model, batch, tokenizer)
            losses.append(float(loss) * len(batch))
            lefts.append(left)
            rights.append(right)
    finally:
        model.train(was_training)
    target = torch.tensor([p.target for p in pairs])
    return sum(losses) / len(pairs), pair_accuracy(torch.cat(lefts), torch.cat(rights), target)


# ------------------------------------------------------------------------------- the job
@dataclass
class TextRewardModelConfig:
    model: str = param("", "Causal language model folder to start from ('' = the bundled SmolLM2-135M-Instruct).")
    label_sources: str = param("human,synthetic,ai", "Which label sources to use (comma-separated).",
                            subset_of=SOURCES)
    epochs: int = param(2, "Passes over the training pairs.", min=1)
    batch_size: int = param(4, "Pairs per optimisation step (each pair is two sequences).", min=1)
    learning_rate: float = param(1e-5, "AdamW learning rate (whole backbone and head are trained).", min=0.0,
                                 min_inclusive=False)
    max_length: int = param(512, "Longest input in tokens (template + prompt + response); longer ones are "
                                 "cut on the right.", min=8)
    heldout_fraction: float = param(0.1, "Pairs held out to measure accuracy.", min=0.0, max=0.5)
    seed: int = param(0, "Random seed (head initialisation, held-out split, shuffling).", min=0)
    score_responses: int = param(400, "After training, score up to this many of the project's responses "
                                 "(newest first) for the reward-vs-length plot (0 = none).", min=0)
    center_rewards_coefficient: float = param(0.0, "Adds this times mean((r_left + r_right)^2) to the loss, "
                                                   "pulling rewards towards mean zero (as TRL's; 0.01 is usual, 0 = "
                                                   "off). The logged training loss includes it.", min=0.0,
                                              advanced=True)
    gradient_checkpointing: bool = param(False, "Recompute activations during the backward pass: less memory, "
                                                "slower steps on a CPU.", advanced=True)


def train_text_reward_model(config: TextRewardModelConfig, ctx: JobContext) -> dict:
    project = ctx.project()
    pairs = text_pairs(project, config.label_sources)
    if not pairs:
        raise ValueError(
            "No usable text comparisons: the reward model needs labelled pairs of two responses to the "
            f"same prompt (outcome left, right or tie; label sources {config.label_sources!r}). "
            "Generate responses and compare some first.")
    train, held = split_pairs(pairs, config.heldout_fraction, config.seed)
    ctx.progress(0.0, message=f"Loading the model ({len(train)} training pairs, {len(held)} held out)")
    model, tokenizer, model_id = load_base_reward_model(config.model, max_length=config.max_length,
                                                        seed=config.seed, ctx=ctx)
    ctx.raise_if_cancelled()
    set_gradient_checkpointing(model, config.gradient_checkpointing)
    model.train()
    optimiser = make_optimizer(model, config.learning_rate)
    rng = random.Random(config.seed)
    per_epoch = math.ceil(len(train) / config.batch_size)
    total = per_epoch * config.epochs
    step = 0
    started = time.monotonic()
    last_loss = float("nan")
    heldout_acc = float("nan")
    for epoch in range(config.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for b in range(per_epoch):
            ctx.raise_if_cancelled()
            batch = [train[i] for i in order[b * config.batch_size:(b + 1) * config.batch_size]]
            metrics = train_step(model, optimiser, batch, tokenizer, center_rewards_coefficient=config.center_rewards_coefficient)
            step += 1
            last_loss = metrics["reward_model/loss"]
            ctx.metrics(step, metrics)
            ctx.progress(0.95 * step / total, message=f"epoch {epoch + 1}/{config.epochs}, loss {last_loss:.3f}")
        ctx.raise_if_cancelled()
        if held:
            _, heldout_acc = evaluate_pairs(model, held, tokenizer, config.batch_size)
            ctx.metrics(step, {"reward_model/heldout_accuracy": heldout_acc})
    ctx.raise_if_cancelled()
    train_loss, train_acc = evaluate_pairs(model, train, tokenizer, config.batch_size)
    ctx.metrics(step, {"reward_model/final_train_loss": train_loss, "reward_model/final_train_accuracy": train_acc})
    result = {"pairs": len(pairs), "train_pairs": len(train), "heldout_pairs": len(held),
              "heldout_accuracy": None if math.isnan(heldout_acc) else heldout_acc,
              "train_accuracy": None if math.isnan(train_acc) else train_acc,
              "train_loss": train_loss, "steps": step, "train_seconds": round(time.monotonic() - started, 2)}
    ctx.progress(0.96, message="Scoring the project's responses (reward vs length)")
    from rlhf_core.text import rm_analysis

    held_texts = {(p.prompt, t) for p in held for t in (p.left, p.right)}
    train_texts = {(p.prompt, t) for p in train for t in (p.left, p.right)}
    scores = rm_analysis.score_project_responses(model, tokenizer, project, limit=config.score_responses,
                                                 heldout_texts=held_texts - train_texts,
                                                 batch_size=config.batch_size,
                                                 on_batch=lambda done, total: ctx.raise_if_cancelled())
    bias = rm_analysis.length_bias(scores)
    ctx.sample(rm_analysis.SAMPLE_KIND, {"scores": scores, **bias}, step=step)
    if bias["pearson_r"] is not None:
        ctx.metrics(step, {"reward_model/length_correlation": bias["pearson_r"]})
    result["length_correlation"] = bias["pearson_r"]
    result["scored_responses"] = bias["n"]
    folder = project.run_folder(ctx.run_id) / "text_reward_model"
    save_text_reward_model(model, folder, meta={"base_model": model_id, **result})
    cid = project.add_checkpoint(ctx.run_id, CHECKPOINT_KIND, folder, step=step,
                                 meta={"base_model": model_id, "pairs": len(pairs),
                                       "heldout_accuracy": result["heldout_accuracy"]})
    ctx.progress(1.0, message="done")
    return {**result, "checkpoint_id": cid, "path": str(folder)}
