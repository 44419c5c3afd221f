"""Batched sampling of completions, with per-sample seeds and early exit of finished rows.

:func:`generate_batch` is a plain decoding loop over a transformers causal LM (prefill the
left-padded prompts once, then one token per step through the model's KV cache). Compared with
``model.generate`` it

- drops a row from the batch (and from the KV cache) as soon as it ends, instead of computing
  padding for it until the longest row is done;
- gives every sample its own random generator, seeded by the caller, so a sample's randomness
  does not depend on which other samples share its batch (``same seed -> same text``);
- restricts top-p to the top-k candidates when both are on (the same result as filtering the whole
  vocabulary in HF's order, for a fraction of the sorting);
- applies the repetition penalty only to real tokens (HF's also penalises the left padding, which
  for SmolLM2 is the end-of-turn token);
- checks a callback at every step, so a cancel request is seen within one forward pass;
- runs on the model's device (inputs follow the weights); the per-row generators stay on the CPU and
  only their uniform draws (one number per row and step) go to the device, so a seed draws the same
  numbers wherever the model runs and the CPU path is what it always was.

Sampling follows HF's order: repetition penalty, temperature, top-k, top-p. ``temperature == 0``
means greedy decoding, which reproduces ``model.generate(do_sample=False)`` token for token.
The text that comes back is untrusted model output.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rlhf_core.text.model import check_positions, eos_token_ids


def model_device(model: Any) -> torch.device:
    """The device a model's weights are on (the CPU for a model without parameters)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """How to pick each next token."""

    max_new_tokens: int = 128
    temperature: float = 0.8  # 0 = greedy
    top_p: float = 1.0  # 1 = off
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    ignore_eos: bool = False  # keep going to max_new_tokens (benchmarks)

    def as_params(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "ignore_eos"}


@dataclasses.dataclass
class Completion:
    """One sampled completion: its text (special tokens removed) and how it ended."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (end-of-turn token) or "length" (max_new_tokens)
    prompt_tokens: int
    seed: int

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@dataclasses.dataclass
class BatchStats:
    seconds: float
    new_tokens: int  # tokens kept in completions (up to and excluding the end token)
    forward_passes: int

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: SamplingSettings,
    seeds: Sequence[int],
    *,
    eos_token_ids: Sequence[int] | None = None,
    on_step: Callable[[], None] | None = None,
) -> tuple[list[Completion], BatchStats]:
    """Sample one completion per prompt string (already rendered with the chat template).

    ``seeds[i]`` seeds row i's own generator. ``on_step`` is called before every forward pass and
    may raise (e.g. :meth:`JobContext.raise_if_cancelled`) to abandon the batch.
    """
    if len(prompts) != len(seeds):
        raise ValueError("one seed per prompt is needed")
    if not prompts:
        return [], BatchStats(0.0, 0, 0)
    started = time.perf_counter()
    eos = [] if settings.ignore_eos else list(eos_token_ids if eos_token_ids is not None
                                              else _default_eos(model, tokenizer))
    device = model_device(model)
    enc = left_padded(tokenizer, prompts)
    input_ids, attention = enc["input_ids"].to(device), enc["attention_mask"].long().to(device)
    batch, _ = input_ids.shape
    prompt_lengths = attention.sum(-1).tolist()
    longest = max(prompt_lengths)
    check_positions(model, longest + settings.max_new_tokens,
                    f"A prompt of {longest} tokens plus {settings.max_new_tokens} new tokens (max_new_tokens)")
    gens = [torch.Generator().manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF) for s in seeds]
    out_tokens: list[list[int]] = [[] for _ in range(batch)]
    finish = ["length"] * batch
    rows = list(range(batch))  # original row of each active row
    eos_t = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
    vocab = model.config.vocab_size
    seen = None  # [rows, vocab]: which tokens each row has used so far (prompt included, padding not)
    if settings.repetition_penalty != 1.0:
        counts = torch.zeros(batch, vocab, dtype=torch.long, device=device)
        counts.scatter_add_(1, input_ids, attention)
        seen = counts > 0
    position = attention.cumsum(-1) - 1
    position = position.masked_fill(attention == 0, 0)
    passes = 0
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        if on_step is not None:
            on_step()
        logits = model(input_ids=input_ids, attention_mask=attention, position_ids=position, cache=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
        passes += 1
        next_pos = position[:, -1:] + 1
        for step in range(settings.max_new_tokens):
            token = _pick(logits, settings, seen, [gens[r] for r in rows])
            token_list = token.tolist()
            for i, r in enumerate(rows):
                out_tokens[r].append(token_list[i])
            done = torch.zeros(len(rows), dtype=torch.bool, device=device)
            if eos_t is not None:
                done = torch.isin(token, eos_t)
                for i in done.nonzero().flatten().tolist():
                    finish[rows[i]] = "stop"
                    out_tokens[rows[i]].pop()  # the end token is not part of the text
            if step + 1 >= settings.max_new_tokens:
                break
            if bool(done.any()):
                keep = (~done).nonzero().flatten()
                if keep.numel() == 0:
                    break
                rows = [rows[i] for i in keep.tolist()]
                cache.batch_select_indices(keep)
                attention, token, next_pos = attention[keep], token[keep], next_pos[keep]
                if seen is not None:
                    seen = seen[keep]
            if seen is not None:
                seen.scatter_(1, token[:, None], True)
            attention = torch.cat([attention, attention.new_ones(len(rows), 1)], dim=1)
            if on_step is not None:
                on_step()
            logits = model(input_ids=token[:, None], attention_mask=attention, position_ids=next_pos,
                           cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
            passes += 1
            next_pos = next_pos + 1
    completions = [
        Completion(
            text=tokenizer.decode(out_tokens[r], skip_special_tokens=True),
            token_ids=out_tokens[r], finish_reason=finish[r], prompt_tokens=int(prompt_lengths[r]),
            seed=int(seeds[r]),
        )
        for r in range(batch)
    ]
    stats = BatchStats(seconds=time.perf_counter() - started,
                       new_tokens=sum(len(t) for t in out_tokens), forward_passes=passes)
    return completions, stats


def _pick(logits: torch.Tensor, s: SamplingSettings, seen: torch.Tensor | None,
          gens: list[torch.Generator]) -> torch.Tensor:
    """The next token of every active row, from its last-position logits ``[rows, vocab]``."""
    vocab = logits.shape[-1]
    if seen is not None:
        penalised = torch.where(logits > 0, logits / s.repetition_penalty, logits * s.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if s.temperature == 0:
        return logits.argmax(-1)
    logits = logits / s.temperature
    candidates = None  # vocabulary ids of the columns in `logits` (None: all of them, in order)
    if 0 < s.top_k < vocab:
        logits, candidates = torch.topk(logits, s.top_k, dim=-1)  # sorted, largest first
        ordered = True
    else:
        ordered = False
    if s.top_p < 1.0:
        if not ordered:
            logits, candidates = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(logits, dim=-1)
        before = probs.cumsum(-1) - probs  # probability mass strictly above each candidate
        drop = before >= s.top_p  # keep the smallest prefix reaching top_p (always the first)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    cdf = probs.cumsum(-1)
    u = torch.stack([torch.rand((), generator=g) for g in gens]).to(cdf.device) * cdf[:, -1]  # CPU generators
    col = torch.searchsorted(cdf, u[:, None], right=True).clamp_(max=logits.shape[-1] - 1)
    if candidates is None:
        return col.squeeze(-1)
    return candidates.gather(-1, col).squeeze(-1)


def left_padded(tokenizer: Any, prompts: Sequence[str]):
    """Tokenise a batch with LEFT padding (decoder-only generation), leaving the tokenizer as it was."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side


def single_token_id(tokenizer: Any, text: str) -> int:
    """The id of ``text`` as ONE token of the tokenizer; ``ValueError`` when it splits it."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"the model's tokenizer splits {text!r} into {len(ids)} tokens; reading a judge's answer "
                         "needs it as a single token")
    return int(ids[0])


@torch.inference_mode()
def next_token_probs(model: Any, tokenizer: Any, texts: Sequence[str], token_ids: Sequence[int], *,
                     batch_size: int = 8) -> torch.Tensor:
    """P(each of ``token_ids``) as the next token after each text: a float tensor ``[n, len(token_ids)]``.

    Full-vocabulary softmax of the last position's logits (float32), batches of ``batch_size`` with left
    padding and position ids that skip the padding (so a padded row gives the same numbers as the text alone).
    An AI judge's answer is read this way rather than from sampled text.
    """
    out = []
    device = model_device(model)
    for i in range(0, len(texts), batch_size):
        enc = left_padded(tokenizer, texts[i:i + batch_size])
        check_positions(model, int(enc["attention_mask"].sum(-1).max()), "A text read by the model")
        attention = enc["attention_mask"].long().to(device)
        position = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 0)
        logits = model(input_ids=enc["input_ids"].to(device), attention_mask=attention, position_ids=position,
                       use_cache=False, logits_to_keep=1).logits[:, -1, :].float()
        out.append(torch.softmax(logits, dim=-1)[:, list(token_ids)].cpu())
    return torch.cat(out) if out else torch.zeros(0, len(token_ids))


def _default_eos(model: Any, tokenizer: Any) -> list[int]:
    return eos_token_ids(model, tokenizer)


def hf_generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: SamplingSettings,
    seed: int,
    *,
    eos_token_ids: Sequence[int] | None = None,
) -> tuple[list[Completion], BatchStats]:
    """The same batch through plain ``model.generate`` (the benchmark's baseline and a test oracle)."""
    started = time.perf_counter()
    enc = left_padded(tokenizer, prompts).to(model_device(model))
    eos = list(eos_token_ids if eos_token_ids is not None else _default_eos(model, tokenizer))
    kwargs: dict[str, Any] = dict(max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=eos, repetition_penalty=settings.repetition_penalty)
    if settings.ignore_eos:
        kwargs["min_new_tokens"] = settings.max_new_tokens
    if settings.temperature == 0:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=settings.temperature,
                      top_p=settings.top_p, top_k=settings.top_k if settings.top_k > 0 else None)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    completions, total = [], 0
    for i, ids in enumerate(new):
        reason = "length"
        for j, t in enumerate(ids):
            if t in eos and not settings.ignore_eos:
                ids, reason = ids[:j], "stop"
                break
        total += len(ids)
        completions.append(Completion(text=tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids,
                                      finish_reason=reason, prompt_tokens=int(enc["attention_mask"][i].sum()),
                                      seed=seed))
    return completions, BatchStats(time.perf_counter() - started, total, out.shape[1] - enc["input_ids"].shape[1])
