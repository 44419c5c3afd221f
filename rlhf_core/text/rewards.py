"""Reward functions for text RL: rule-based checks, a learned reward model, and their weighted sum.

Every component has a ``name`` and is called as ``component(prompts, completions, metas)`` with
three lists of the same length: the user prompts (plain text, no chat template), the sampled
completions (plain text, untrusted model output) and one dict per completion (``gold_answer``
for tasks with a known answer, ``completion_tokens`` for the length penalty). It returns one
float per completion.

Components (the names are the spec keys, see :func:`parse_reward_spec`):

- ``format`` (:class:`FormatReward`): the R1-Zero layout
  ``<think> ... </think> <answer> ... </answer>`` and nothing else around it (whitespace allowed)
  scores 1. A small model almost never writes that exactly at first, so by default it gets
  PARTIAL credit: 0.2 for each of the four tags that appears exactly once (at most 0.8, so the
  full layout is always strictly better). That gives GRPO's group comparison something to work
  with from the first steps. ``format_strict`` is the 0/1 version.
- ``correctness`` (:class:`CorrectnessReward`): 1 if the final answer equals the gold answer, else
  0. The answer is the LAST ``<answer>...</answer>`` block; inside it, the last number counts
  ("<answer> 7 apples </answer>" and "<answer>3 + 4 = 7</answer>" both answer 7; thousands
  commas are dropped). Numbers compare by value (7 == 7.0; a gold answer may carry thousands commas,
  a leading currency sign or a trailing %); a non-numeric gold answer is compared as text
  (:func:`normalise_text_answer`: case, spacing, and quotes, brackets, ``*`` and end punctuation at
  either end ignored). No answer block (or no gold answer) scores 0;
  ``correctness_any`` falls back to the last number anywhere in the completion when there is no
  answer block (for prompts that do not ask for the tags).
- ``length`` (:class:`LengthPenalty`, logged as ``length_penalty``): minus the number of
  completion tokens (``meta["completion_tokens"]``; whitespace-separated words when absent), beyond
  an optional free allowance. With a weight of 0.001 a 48-token answer costs 0.048.
- ``model`` (:class:`RewardModelReward`): the score of a text reward model trained by the
  ``text_reward_model`` job (:func:`rlhf_core.text.reward_model.load_text_reward_model`), loaded
  once on first use.

:class:`CombinedReward` sums ``weight * component``; it returns the totals and each WEIGHTED
component (so the components of a sample add up to its total), which trainers log as
``reward/<name>`` next to ``reward/mean``, plus the unweighted values.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_STRICT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_TEXT_EDGES = " \"'`*()[]{}.,;:!?"


class RewardComponent(Protocol):
    name: str

    def __call__(self, prompts: Sequence[str], completions: Sequence[str],
                 metas: Sequence[Mapping[str, Any]]) -> list[float]: ...


def _check_lengths(prompts: Sequence[str], completions: Sequence[str], metas: Sequence[Mapping]) -> None:
    if not (len(prompts) == len(completions) == len(metas)):
        raise ValueError(f"{len(prompts)} prompts, {len(completions)} completions and {len(metas)} metas: "
                         "one of each per completion is needed")


# ------------------------------------------------------------------------------- parsing helpers
def format_score(text: str, partial: bool = True) -> float:
    """1.0 for exactly ``<think>..</think><answer>..</answer>``; else the partial credit (or 0)."""
    counts = [text.count(tag) for tag in TAGS]
    if all(c == 1 for c in counts) and _STRICT.fullmatch(text):
        return 1.0
    if not partial:
        return 0.0
    return 0.2 * sum(1 for c in counts if c == 1)


def answer_block(text: str) -> str | None:
    """The content of the last ``<answer>...</answer>`` block (None when there is none)."""
    blocks = _ANSWER.findall(text)
    return blocks[-1] if blocks else None


def parse_number(text: str) -> float | None:
    """The last number in ``text`` ("= 1,234." -> 1234.0), or None."""
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    try:
        return float(numbers[-1].replace(",", ""))
    except ValueError:
        return None


def extract_answer(text: str, fallback_last_number: bool = False) -> str | None:
    """The answer a completion gives: the last answer block's content (or, optionally, the whole text)."""
    block = answer_block(text)
    if block is None:
        return text if fallback_last_number else None
    return block


def normalise_text_answer(text: str) -> str:
    """A text answer as it is compared: lower case, each run of whitespace one space, and quotes, brackets,
    ``*`` (markdown bold) and end punctuation (``. , ; : ! ?``) taken off both ends ("**Paris.**" is
    "paris"); a text made only of those characters is kept whole."""
    spaced = " ".join(text.split()).lower()
    return spaced.strip(_TEXT_EDGES) or spaced


def answers_match(answer: str | None, gold: Any) -> bool:
    """Whether an extracted answer equals the gold answer: when the gold answer is a number, the answer's
    last number by value (within 1e-9); else as text (:func:`normalise_text_answer`)."""
    if answer is None or gold is None:
        return False
    gold_text = str(gold).strip()
    if not gold_text:
        return False
    gold_value = _as_number(gold_text)
    if gold_value is not None:
        value = parse_number(answer)
        return value is not None and math.isclose(value, gold_value, rel_tol=0.0, abs_tol=1e-9)
    return normalise_text_answer(answer) == normalise_text_answer(gold_text)


def _as_number(text: str) -> float | None:
    """A gold answer that is a number ("1,234", "$12", "50%", "-3.5"), else None."""
    cleaned = text.replace(",", "").strip()
    cleaned = cleaned[1:].strip() if cleaned[:1] in "$€£" and cleaned[1:] else cleaned
    cleaned = cleaned[:-1].strip() if cleaned.endswith("%") and cleaned[:-1] else cleaned
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------- components
@dataclasses.dataclass
class FormatReward:
    """The ``<think>..</think><answer>..</answer>`` layout: 1, or partial credit per tag (see module doc)."""

    partial: bool = True
    name: str = "format"

    def __call__(self, prompts, completions, metas) -> list[float]:
        _check_lengths(prompts, completions, metas)
        return [format_score(c, self.partial) for c in completions]


@dataclasses.dataclass
class CorrectnessReward:
    """1 when the completion's final answer equals ``meta["gold_answer"]``, else 0."""

    fallback_last_number: bool = False
    name: str = "correctness"

    def __call__(self, prompts, completions, metas) -> list[float]:
        _check_lengths(prompts, completions, metas)
        return [1.0 if answers_match(extract_answer(c, self.fallback_last_number), m.get("gold_answer")) else 0.0
                for c, m in zip(completions, metas)]


@dataclasses.dataclass
class LengthPenalty:
    """Minus the completion length in tokens beyond ``free_tokens`` (words when the token count is missing)."""

    free_tokens: int = 0
    name: str = "length_penalty"

    def __call__(self, prompts, completions, metas) -> list[float]:
        _check_lengths(prompts, completions, metas)
        out = []
        for c, m in zip(completions, metas):
            n = m.get("completion_tokens")
            n = len(c.split()) if n is None else int(n)
            out.append(-float(max(0, n - self.free_tokens)))
        return out


class RewardModelReward:
    """The score of a learned text reward model (a folder written by the ``text_reward_model`` job)."""

    name = "model"

    def __init__(self, folder: str, batch_size: int = 16, model: Any = None, tokenizer: Any = None, *,
                 device: Any = None, precision: str = "float32"):
        self.folder = str(folder)
        self.batch_size = int(batch_size)
        self._model, self._tokenizer = model, tokenizer
        self.device, self.precision = device, precision  # resolved; None: float32 on the CPU

    def load(self) -> None:
        if self._model is None:
            from rlhf_core.text.reward_model import load_text_reward_model  # start-up: imports torch

            # frozen on the run's device: half weights on a GPU, autocast under ``precision``
            self._model, self._tokenizer = load_text_reward_model(self.folder, device=self.device,
                                                                  precision=self.precision)
            for p in self._model.parameters():
                p.requires_grad_(False)

    def __call__(self, prompts, completions, metas) -> list[float]:
        _check_lengths(prompts, completions, metas)
        from rlhf_core.text.reward_model import score_responses  # start-up: imports torch

        self.load()
        scores = score_responses(self._model, self._tokenizer, list(prompts), list(completions),
                                 batch_size=self.batch_size)
        return [float(s) for s in scores]


# ------------------------------------------------------------------------------- the weighted sum
@dataclasses.dataclass
class RewardResult:
    total: list[float]
    components: dict[str, list[float]]  # weighted: sum over components == total
    raw: dict[str, list[float]]  # unweighted

    def means(self) -> dict[str, float]:
        """``reward/<name>`` means of the weighted components (what trainers log)."""
        return {f"reward/{k}": sum(v) / len(v) for k, v in self.components.items() if v}

    def sample_components(self, i: int) -> dict[str, float]:
        return {k: v[i] for k, v in self.components.items()}


class CombinedReward:
    """``sum_k weight_k * component_k``; also a component itself (named ``total``)."""

    name = "total"

    def __init__(self, parts: Sequence[tuple[RewardComponent, float]]):
        if not parts:
            raise ValueError("a reward needs at least one component")
        names = [c.name for c, _ in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"reward components must have different names, got {names}")
        for _, w in parts:
            if not math.isfinite(float(w)):
                raise ValueError(f"reward weights must be finite numbers, got {w!r}")
        self.parts = [(c, float(w)) for c, w in parts]

    @property
    def names(self) -> list[str]:
        return [c.name for c, _ in self.parts]

    def needs_gold(self) -> bool:
        return any(isinstance(c, CorrectnessReward) for c, _ in self.parts)

    def evaluate(self, prompts: Sequence[str], completions: Sequence[str],
                 metas: Sequence[Mapping[str, Any]] | None = None) -> RewardResult:
        metas = [{} for _ in completions] if metas is None else list(metas)
        _check_lengths(prompts, completions, metas)
        total = [0.0] * len(completions)
        weighted: dict[str, list[float]] = {}
        raw: dict[str, list[float]] = {}
        for component, weight in self.parts:
            values = [float(v) for v in component(prompts, completions, metas)]
            if len(values) != len(completions):
                raise ValueError(f"reward component {component.name!r} returned {len(values)} values "
                                 f"for {len(completions)} completions")
            raw[component.name] = values
            weighted[component.name] = [weight * v for v in values]
            total = [t + weight * v for t, v in zip(total, values)]
        return RewardResult(total, weighted, raw)

    def __call__(self, prompts, completions, metas) -> list[float]:
        return self.evaluate(prompts, completions, metas).total

    def spec(self) -> str:
        return ",".join(f"{c.name}:{w:g}" for c, w in self.parts)


#: spec key -> (component factory, what it is)
SPEC_NAMES = {
    "format": "partial-credit format reward",
    "format_strict": "0/1 format reward",
    "correctness": "exact final answer in <answer> tags",
    "correctness_any": "exact final answer, or the last number when there are no <answer> tags",
    "length": "minus completion tokens (also: length_penalty)",
    "length_penalty": "minus completion tokens",
    "model": "learned text reward model (needs a reward model folder)",
}


def parse_spec_items(spec: str) -> list[tuple[str, float]]:
    """``"format:0.5,correctness:1"`` -> ``[("format", 0.5), ("correctness", 1.0)]`` (weight 1 when left out).

    Raises ``ValueError`` naming the problem (unknown name, bad weight, repeats, empty spec).
    """
    items: list[tuple[str, float]] = []
    for raw in str(spec).split(","):
        part = raw.strip()
        if not part:
            continue
        name, sep, weight_text = part.partition(":")
        name = name.strip().lower()
        if name not in SPEC_NAMES:
            raise ValueError(f"unknown reward {name!r} in {spec!r}; known: {', '.join(SPEC_NAMES)}")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise ValueError(f"the weight of {name!r} in {spec!r} is not a number: {weight_text!r}") from None
        if not math.isfinite(weight):
            raise ValueError(f"the weight of {name!r} in {spec!r} must be finite")
        items.append((name, weight))
    if not items:
        raise ValueError("the reward spec is empty; e.g. 'format:0.5,correctness:1.0'")
    canonical = [_canonical(n) for n, _ in items]
    if len(set(canonical)) != len(canonical):
        raise ValueError(f"a reward component appears twice in {spec!r}")
    return items


def _canonical(name: str) -> str:
    return {"format_strict": "format", "correctness_any": "correctness", "length": "length_penalty"}.get(name, name)


def parse_reward_spec(spec: str, *, reward_model_path: str = "", reward_model: Any = None,
                      reward_tokenizer: Any = None, length_free_tokens: int = 0, device: Any = None,
                      precision: str = "float32") -> CombinedReward:
    """A :class:`CombinedReward` from a spec string such as ``"format:0.5,correctness:1.0,length:0.001"``.

    ``model`` needs ``reward_model_path`` (a folder from the ``text_reward_model`` job) or an
    already loaded ``reward_model`` + ``reward_tokenizer``; the model is loaded on first use, frozen on
    ``device`` under ``precision`` (the run's resolved settings; None: float32 on the CPU).
    """
    parts: list[tuple[RewardComponent, float]] = []
    for name, weight in parse_spec_items(spec):
        if name == "format":
            comp: RewardComponent = FormatReward(partial=True)
        elif name == "format_strict":
            comp = FormatReward(partial=False)
        elif name == "correctness":
            comp = CorrectnessReward()
        elif name == "correctness_any":
            comp = CorrectnessReward(fallback_last_number=True)
        elif name in ("length", "length_penalty"):
            comp = LengthPenalty(free_tokens=length_free_tokens)
        else:  # model
            if reward_model is None and not str(reward_model_path).strip():
                raise ValueError("the 'model' reward needs a text reward model folder (reward_model setting)")
            comp = RewardModelReward(reward_model_path, model=reward_model, tokenizer=reward_tokenizer,
                                     device=device, precision=precision)
        parts.append((comp, weight))
    return CombinedReward(parts)
