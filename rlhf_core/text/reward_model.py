"""A text reward model: a causal-LM backbone with a scalar head, trained on the project's comparisons.

Architecture (as in Ouyang et al. 2022 / TRL's ``AutoModelForSequenceClassification`` for Llama):
the transformer WITHOUT its language-model head (``AutoModel``, e.g. ``LlamaModel``) reads
``chat_template([user: prompt, assistant: response])``; the final hidden state of the LAST
non-padding token goes through ``Linear(hidden, 1)`` and gives the reward r(x, y).

Padding is on the RIGHT here (unlike generation, which pads on the left), so the last real token
of row ``i`` sits at ``attention_mask[i].sum() - 1``. Inputs longer than ``max_length`` tokens are
cut on the right (the end of a long response is lost; the prompt and template header are kept).

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

from rlhf_core.config import param
from rlhf_core.jobs import JobContext
from rlhf_core.rewards.bradley_terry import bradley_terry_loss, outcome_target, pair_accuracy

FORMAT_NAME = "rlhf-workbench-text-reward-model"
FORMAT_VERSION = 1
HEAD_FILE = "reward_head.safetensors"
META_FILE = "reward_model.json"
CHECKPOINT_KIND = "text_reward_model"


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

    def score(self, texts: Sequence[str], tokenizer: Any = None) -> torch.Tensor:
        """Rewards ``[len(texts)]`` for already-formatted texts (see :func:`format_pair_text`)."""
        enc = self.encode(texts, tokenizer)
        return self(enc["input_ids"], enc["attention_mask"])


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
    """Every live comparison of two live responses to the same prompt, with a preference."""
    wanted = {s.strip() for s in label_sources.split(",") if s.strip()}
    prompts: dict[int, str] = {}
    out = []
    for c in project.comparisons():
        target = outcome_target(c["outcome"])
        if target is None or c["source"] not in wanted:
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


def pair_loss(model: TextRewardModel, batch: Sequence[TextPair], tokenizer: Any):
    """(loss, score_left, score_right, mean_tokens) for a batch of pairs: one forward of 2B rows."""
    texts = [format_pair_text(tokenizer, p.prompt, p.left) for p in batch] + \
            [format_pair_text(tokenizer, p.prompt, p.right) for p in batch]
    enc = model.encode(texts, tokenizer)
    scores = model(enc["input_ids"], enc["attention_mask"])
    n = len(batch)
    left, right = scores[:n], scores[n:]
    target = torch.tensor([p.target for p in batch], dtype=scores.dtype, device=scores.device)
    loss = bradley_terry_loss(left, right, target)
    return loss, left, right, float(enc["attention_mask"].sum(dim=1).float().mean())


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
    model_path: str = param("", "Causal language model folder to start from ('' = the bundled SmolLM2-135M-Instruct).")
    label_sources: str = param("human,synthetic,ai", "Which label sources to use (comma-separated).")
    epochs: int = param(2, "Passes over the training pairs.", min=1)
    batch_size: int = param(4, "Pairs per optimisation step (each pair is two sequences).", min=1)
    lr: float = param(1e-5, "AdamW learning rate (whole backbone and head are trained).", min=0.0,
                      min_inclusive=False)
    max_length: int = param(512, "Longest input in tokens (template + prompt + response); longer ones are "
                                 "cut on the right.", min=8)
    heldout_fraction: float = param(0.1, "Pairs held out to measure accuracy.", min=0.0, max=0.5)
    seed: int = param(0, "Random seed (head initialisation, held-out split, shuffling).", min=0)


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
    model, tokenizer, model_id = load_base_reward_model(config.model_path, max_length=config.max_length,
                                                        seed=config.seed, ctx=ctx)
    ctx.raise_if_cancelled()
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
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
            loss, left, right, mean_len = pair_loss(model, batch, tokenizer)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            last_loss = float(loss.detach())
            target = torch.tensor([p.target for p in batch])
            ctx.metrics(step, {"reward_model/loss": last_loss,
                               "reward_model/train_accuracy": pair_accuracy(left.detach(), right.detach(), target),
                               "reward_model/mean_length": mean_len})
            ctx.progress(step, total, f"epoch {epoch + 1}/{config.epochs}, loss {last_loss:.3f}")
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
    folder = project.run_folder(ctx.run_id) / "text_reward_model"
    save_text_reward_model(model, folder, meta={"base_model": model_id, **result})
    cid = project.add_checkpoint(ctx.run_id, CHECKPOINT_KIND, folder, step=step,
                                 meta={"base_model": model_id, "pairs": len(pairs),
                                       "heldout_accuracy": result["heldout_accuracy"]})
    return {**result, "checkpoint_id": cid, "path": str(folder)}
