"""Prompts: the built-in prompt sets, importing prompt files, and prompt templates.

Built-in sets live in ``resources/prompts/<name>.jsonl`` (written for this project; no public data
set is bundled). Each line is one JSON object::

    {"key": "lecture/limerick", "text": "...", "category": "style", "tags": ["lecture"],
     "gold_answer": null, "meta": {}}

``category`` is one of helpfulness, harmlessness, reasoning, style for the built-in sets (any short
label for imported files); ``gold_answer`` holds the expected final answer where there is one.

Import (:func:`import_prompts`) reads JSONL or CSV (a header row naming the same fields; ``tags``
separated by ``;``), validates the WHOLE file first and reports every bad line by number; only a
file without problems is written, in one transaction, so a bad file adds nothing. Files are read
and JSON is parsed as :mod:`rlhf_core.input_files` does (regular files up to ``MAX_FILE_BYTES``, no
lone surrogates, nesting or numbers that cannot be stored).

Templates (:class:`PromptTemplate`) turn a prompt into chat messages: zero-shot, few-shot (editable
question/answer exemplars given as earlier chat turns) or zero-shot chain-of-thought ("Let's think
step by step."), with an optional system prompt; the model's own chat template then renders them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhf_core.input_files import InputFileError, InputProblem, jsonl_values, parse_json, read_data_file
from rlhf_core.paths import resource_path

CATEGORIES = ("helpfulness", "harmlessness", "reasoning", "style")
FIELDS = ("text", "category", "tags", "gold_answer", "meta", "key")
MAX_TEXT_CHARS = 20_000
MAX_PROMPTS_PER_FILE = 100_000
MAX_FILE_BYTES = 256_000_000

BUILTIN_SETS: dict[str, tuple[str, str]] = {
    "lecture": (
        "Lecture examples",
        "The examples from the RLHF lecture: a limerick, explaining RL to a six-year-old, defining "
        "behavioural cloning, the tennis-ball and cafeteria chain-of-thought problems, and a harmful "
        "request that should be refused.",
    ),
    "starter": (
        "Starter set",
        "About 120 prompts written for the workbench across helpfulness, harmlessness (requests to "
        "refuse and look-alike requests to answer), reasoning (with gold answers) and style.",
    ),
}


# ------------------------------------------------------------------------------- records & errors
@dataclasses.dataclass
class PromptRecord:
    text: str
    category: str = ""
    tags: list[str] = dataclasses.field(default_factory=list)
    gold_answer: str | None = None
    meta: dict = dataclasses.field(default_factory=dict)
    key: str = ""
    line: int = 0  # where it came from in its file (1-based)


@dataclasses.dataclass
class ImportResult:
    added_ids: list[int]  # prompts written by this import
    existing_ids: list[int]  # prompts already in the project (skipped as duplicates)
    prompt_ids: list[int]  # every prompt of the file, new or existing, in file order
    total: int  # records in the file

    def as_dict(self) -> dict:
        return {"added": len(self.added_ids), "already_present": len(self.existing_ids),
                "total": self.total, "prompt_ids": self.prompt_ids}


# ------------------------------------------------------------------------------- parsing
def parse_prompt_file(path: str | os.PathLike, fmt: str | None = None) -> list[PromptRecord]:
    """Read and validate a JSONL or CSV prompt file; raise :class:`InputFileError` listing problems."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in ("jsonl", "csv", "json"):
        raise InputFileError(path, [f"unsupported file type {path.suffix or '(none)'!r}: use .jsonl or .csv"])
    raw = read_data_file(path, MAX_FILE_BYTES)
    if fmt == "csv":
        records, problems = _parse_csv(raw)
    else:
        records, problems = _parse_jsonl(raw)
    if not problems and not records:
        problems.append("the file contains no prompts")
    if len(records) > MAX_PROMPTS_PER_FILE:
        problems.append(f"the file has {len(records)} prompts; the limit is {MAX_PROMPTS_PER_FILE}")
    if problems:
        raise InputFileError(path, problems)
    return records


def _parse_jsonl(raw: bytes) -> tuple[list[PromptRecord], list[str]]:
    records, problems = [], []
    for number, obj in jsonl_values(raw, problems):
        if isinstance(obj, str):
            obj = {"text": obj}
        rec, errs = _record_from(obj, number)
        problems.extend(errs)
        if rec is not None:
            records.append(rec)
    return records, problems


def _parse_csv(raw: bytes) -> tuple[list[PromptRecord], list[str]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return [], [f"line {line}: not valid UTF-8 text"]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as exc:
        return [], [f"line 1: {exc}"]
    names = [h.strip().lower() for h in header]
    problems = []
    unknown = [h for h in names if h not in FIELDS]
    if unknown:
        problems.append(f"line 1: unknown column(s) {', '.join(map(repr, unknown))} "
                        f"(allowed: {', '.join(FIELDS)})")
    if "text" not in names:
        problems.append("line 1: the header has no 'text' column")
    if problems:
        return [], problems
    records = []
    end = reader.line_num
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"line {start}: {exc}")
            break
        end = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            problems.append(f"line {start}: expected {len(names)} columns, found {len(row)}")
            continue
        obj: dict[str, Any] = {}
        for name, cell in zip(names, row):
            if name == "tags":
                obj["tags"] = [t.strip() for t in re.split(r"[;|]", cell) if t.strip()]
            elif name == "meta":
                if cell.strip():
                    try:
                        obj["meta"] = parse_json(cell)
                    except InputProblem as exc:
                        problems.append(f"line {start}: the meta column: {exc}")
                        obj["meta"] = {}
            elif name == "gold_answer":
                obj[name] = cell if cell.strip() else None
            else:
                obj[name] = cell
        rec, errs = _record_from(obj, start)
        problems.extend(errs)
        if rec is not None:
            records.append(rec)
    return records, problems


def _record_from(obj: Any, number: int) -> tuple[PromptRecord | None, list[str]]:
    where = f"line {number}"
    if not isinstance(obj, Mapping):
        return None, [f"{where}: expected a JSON object with a \"text\" field, got {type(obj).__name__}"]
    problems = []
    unknown = [k for k in obj if k not in FIELDS]
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(FIELDS)})")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: \"text\" must be a non-empty string")
    elif len(text) > MAX_TEXT_CHARS:
        problems.append(f"{where}: the prompt is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}")
    category = obj.get("category", "") or ""
    if not isinstance(category, str) or len(category) > 64:
        problems.append(f"{where}: \"category\" must be a short string")
    tags = obj.get("tags", []) or []
    if isinstance(tags, str):
        tags = [t.strip() for t in re.split(r"[;,|]", tags) if t.strip()]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append(f"{where}: \"tags\" must be a list of strings")
    gold = obj.get("gold_answer")
    if isinstance(gold, bool) or not (gold is None or isinstance(gold, (str, int, float))):
        problems.append(f"{where}: \"gold_answer\" must be a string or a number")
    meta = obj.get("meta", {}) or {}
    if not isinstance(meta, Mapping):
        problems.append(f"{where}: \"meta\" must be a JSON object")
    key = obj.get("key", "") or ""
    if not isinstance(key, str):
        problems.append(f"{where}: \"key\" must be a string")
    if problems:
        return None, problems
    return PromptRecord(
        text=text, category=category.strip().lower(), tags=list(tags),
        gold_answer=None if gold is None else _gold_str(gold), meta=dict(meta), key=key, line=number,
    ), []


def _gold_str(value: str | int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# ------------------------------------------------------------------------------- into a project
def import_prompts(
    project,
    path: str | os.PathLike,
    *,
    source: str | None = None,
    skip_duplicates: bool = True,
) -> ImportResult:
    """Validate ``path`` completely, then add its prompts to ``project`` in one transaction.

    With ``skip_duplicates`` a prompt whose exact text and category are already in the project
    (not deleted) is not added again; its existing id is reported instead.
    """
    path = Path(path)
    records = parse_prompt_file(path)
    return add_records(project, records, source=source or f"import:{path.name}", skip_duplicates=skip_duplicates)


def add_records(project, records: Iterable[PromptRecord], *, source: str,
                skip_duplicates: bool = True) -> ImportResult:
    """Add parsed prompts to a project in one transaction (see :func:`import_prompts`)."""
    records = list(records)
    existing: dict[tuple[str, str], int] = {}
    if skip_duplicates:
        for row in project.conn.execute(
            "SELECT id, text, category FROM prompts WHERE deleted_at IS NULL ORDER BY id"
        ):
            existing.setdefault((row["text"], row["category"]), row["id"])
    added, already, order = [], [], []
    with project.db.atomic():
        for rec in records:
            k = (rec.text, rec.category)
            if skip_duplicates and k in existing:
                pid = existing[k]
                if pid not in added and pid not in already:
                    already.append(pid)
            else:
                meta = dict(rec.meta)
                if rec.key:
                    meta.setdefault("key", rec.key)
                pid = project.add_prompt(rec.text, category=rec.category, tags=rec.tags, source=source,
                                         gold_answer=rec.gold_answer, meta=meta)
                added.append(pid)
                existing[k] = pid
            if pid not in order:
                order.append(pid)
    return ImportResult(added_ids=added, existing_ids=already, prompt_ids=order, total=len(records))


# ------------------------------------------------------------------------------- built-in sets
@dataclasses.dataclass(frozen=True)
class PromptSetInfo:
    name: str
    title: str
    description: str
    count: int
    categories: dict[str, int]
    path: Path


def builtin_set_path(name: str) -> Path:
    return resource_path("prompts", f"{name}.jsonl")


def builtin_sets() -> list[PromptSetInfo]:
    """The prompt sets shipped in ``resources/prompts`` (with per-category counts)."""
    out = []
    folder = resource_path("prompts")
    for path in sorted(folder.glob("*.jsonl")):
        records = parse_prompt_file(path)
        cats: dict[str, int] = {}
        for r in records:
            cats[r.category] = cats.get(r.category, 0) + 1
        title, description = BUILTIN_SETS.get(path.stem, (path.stem, ""))
        out.append(PromptSetInfo(path.stem, title, description, len(records), cats, path))
    return out


def load_builtin_set(name: str, category: str | Sequence[str] | None = None) -> list[PromptRecord]:
    """The records of a built-in set, optionally only those of ``category`` (one or several)."""
    path = builtin_set_path(name)
    if not path.is_file():
        known = ", ".join(s.name for s in builtin_sets()) or "none"
        raise KeyError(f"no built-in prompt set {name!r}; known sets: {known}")
    records = parse_prompt_file(path)
    wanted = _categories(category)
    if wanted:
        records = [r for r in records if r.category in wanted]
        if not records:
            raise KeyError(f"the prompt set {name!r} has no prompts in category {', '.join(sorted(wanted))}")
    return records


def add_builtin_prompts(project, name: str, category: str | Sequence[str] | None = None) -> list[int]:
    """Make sure a built-in set (or some of its categories) is in ``project``; returns the prompt ids."""
    result = add_records(project, load_builtin_set(name, category), source=f"builtin:{name}")
    return result.prompt_ids


def _categories(category: str | Sequence[str] | None) -> set[str]:
    if category is None:
        return set()
    items = [category] if isinstance(category, str) else list(category)
    return {c.strip().lower() for item in items for c in item.split(",") if c.strip()}


# ------------------------------------------------------------------------------- templates
TEMPLATE_STYLES = ("zero_shot", "few_shot", "chain_of_thought")
COT_TRIGGER = "Let's think step by step."


@dataclasses.dataclass(frozen=True)
class Exemplar:
    question: str
    answer: str


# Worked examples in the style of Wei et al. (2022): the answer shows its reasoning and ends with
# "The answer is N." The tennis-ball problem is the lecture's exemplar; the other two are ours.
DEFAULT_EXEMPLARS: tuple[Exemplar, ...] = (
    Exemplar(
        "Roger has 5 tennis balls. He buys 2 more cans of tennis balls. Each can has 3 tennis balls. "
        "How many tennis balls does he have now?",
        "Roger started with 5 balls. 2 cans of 3 tennis balls each is 6 tennis balls. 5 + 6 = 11. "
        "The answer is 11.",
    ),
    Exemplar(
        "A baker fills 4 trays with 6 muffins each and sells 17 muffins. How many muffins are left?",
        "4 trays of 6 muffins is 24 muffins. After selling 17 there are 24 - 17 = 7 left. The answer is 7.",
    ),
    Exemplar(
        "Mia reads 12 pages on Monday and twice as many on Tuesday. How many pages did she read in total?",
        "On Tuesday she read 2 x 12 = 24 pages. In total 12 + 24 = 36 pages. The answer is 36.",
    ),
)


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """How a prompt becomes chat messages. ``system_prompt=""`` keeps the model's own default."""

    style: str = "zero_shot"
    system_prompt: str = ""
    exemplars: tuple[Exemplar, ...] = DEFAULT_EXEMPLARS
    cot_trigger: str = COT_TRIGGER

    def __post_init__(self):
        if self.style not in TEMPLATE_STYLES:
            raise ValueError(f"template style must be one of {', '.join(TEMPLATE_STYLES)}; got {self.style!r}")

    def messages(self, prompt: str) -> list[dict[str, str]]:
        msgs: list[dict[str, str]] = []
        if self.system_prompt.strip():
            msgs.append({"role": "system", "content": self.system_prompt.strip()})
        if self.style == "few_shot":
            own = _norm(prompt)
            for ex in self.exemplars:
                if _norm(ex.question) == own:
                    continue  # never show the model the answer to the question it is asked
                msgs.append({"role": "user", "content": ex.question})
                msgs.append({"role": "assistant", "content": ex.answer})
        content = prompt
        if self.style == "chain_of_thought":
            content = f"{prompt.rstrip()}\n\n{self.cot_trigger}"
        msgs.append({"role": "user", "content": content})
        return msgs

    def render(self, tokenizer: Any, prompt: str) -> str:
        """The full model input for ``prompt``: the chat template applied, ready for the answer."""
        msgs = self.messages(prompt)
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return plain_render(msgs)

    def describe(self) -> dict[str, Any]:
        """The template's settings as stored with every generated response."""
        d: dict[str, Any] = {"template": self.style, "system_prompt": self.system_prompt}
        if self.style == "few_shot":
            d["exemplars"] = [dataclasses.asdict(e) for e in self.exemplars]
        if self.style == "chain_of_thought":
            d["cot_trigger"] = self.cot_trigger
        return d


def plain_render(messages: Sequence[Mapping[str, str]]) -> str:
    """A fallback for tokenizers without a chat template: ``Question:``/``Answer:`` blocks."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"])
        elif m["role"] == "user":
            parts.append(f"Question: {m['content']}")
        else:
            parts.append(f"Answer: {m['content']}")
    parts.append("Answer:")
    return "\n\n".join(parts)


def parse_exemplars(text: str) -> tuple[Exemplar, ...]:
    """Exemplars from JSON: ``[{"question": ..., "answer": ...}, ...]`` or ``[[q, a], ...]``.

    An empty string gives :data:`DEFAULT_EXEMPLARS`. Raises ``ValueError`` with a readable message.
    """
    if not text or not text.strip():
        return DEFAULT_EXEMPLARS
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"few-shot exemplars are not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(data, list):
        raise ValueError("few-shot exemplars must be a JSON list of {\"question\", \"answer\"} objects")
    out = []
    for i, item in enumerate(data, start=1):
        if isinstance(item, Mapping):
            q, a = item.get("question"), item.get("answer")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            q, a = item
        else:
            q = a = None
        if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
            raise ValueError(f"few-shot exemplar {i} needs a non-empty question and answer")
        out.append(Exemplar(q.strip(), a.strip()))
    return tuple(out)


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def extract_final_answer(text: str) -> str | None:
    """The final number in a completion ("The answer is 11." -> "11"), for checking gold answers."""
    m = re.search(r"answer is[^0-9\-]*(-?\d[\d,]*(?:\.\d+)?)", text, flags=re.IGNORECASE)
    if m is None:
        numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
        if not numbers:
            return None
        value = numbers[-1]
    else:
        value = m.group(1)
    value = value.replace(",", "").rstrip(".")
    return value
