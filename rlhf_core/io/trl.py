"""Export the project's text preferences as a TRL preference data set, and import such files.

File format: JSON Lines, one row per line, as TRL 1.16 documents its data set types
(``trl.data_utils``; `Dataset formats` in the TRL docs):

- preference, standard: ``{"prompt": "...", "chosen": "...", "rejected": "..."}``
- preference, conversational: ``{"prompt": [{"role": "user", "content": "..."}],
  "chosen": [{"role": "assistant", "content": "..."}], "rejected": [{"role": "assistant", ...}]}``
- preference with an implicit prompt (conversational only here): ``chosen`` and ``rejected`` are
  whole conversations ``[user, assistant]`` and the prompt is their shared first message (what
  ``trl.extract_prompt`` does)
- unpaired preference (KTO): ``{"prompt": ..., "completion": ..., "label": true}``, standard or
  conversational

Export (:func:`export_trl`) writes one row per live comparison of two live ``response`` items of
the same live prompt whose outcome is ``left`` or ``right`` (a comparison that was edited is
replaced by its new row, an undone one is gone, a pair with an adjudication gives its adjudication
only). ``tie``, ``both_bad`` and ``skip`` have no chosen response: they are left out and counted.
Rankings are stored together with their expanded pairs (``comparisons.ranking_id``), so they are
already among the comparisons; a live ranking that has no comparison rows at all (none written, live
or undone) is expanded here instead, so nothing is counted twice. Only the prompt text and the two
response texts are exported (no system prompt, no labeller). The file is written to a temporary file
next to the target and renamed over it, so a reader never sees half a file.

Import (:func:`import_trl`) reads the WHOLE file (a regular file of at most ``MAX_FILE_BYTES``;
JSON as :func:`rlhf_core.input_files.parse_json` reads it) and checks every row first; a file with any
problem imports nothing and the error lists each problem with its line number. A good file is
written in one transaction:

- prompts are matched by exact text to the project's live prompts, else added (``source =
  "import"``);
- each distinct (prompt, text) completion becomes one ``response`` item (``source = "import"``),
  or reuses a live response to the same prompt with exactly that text;
- a preference row becomes one comparison ``left = rejected, right = chosen, outcome = "right"``
  (the workbench's convention: the worse item on the left), labelled by the labeller
  ``import:<file name>`` with the given source (default ``human``). A row equal to a comparison
  this labeller already had before the import (same two items, same outcome) is not added again,
  so importing the same file twice changes nothing;
- unpaired rows: each completion is stored with ``meta.label`` = the row's label. They give
  comparisons only where the file has, for the same prompt, both a ``true`` and a ``false``
  completion: every true one is preferred over every false one (one comparison each, with
  ``meta.from_unpaired``). A prompt whose completions all carry the same label gives no pairs
  (counted as ``unpaired_unmatched``): a label says "good" or "bad", not "better than what".

Any string is a valid answer, as in TRL: an empty or whitespace-only ``chosen``, ``rejected`` or
``completion`` is imported as it is and counted (``empty_responses``); a prompt needs visible text.
Text is kept byte for byte (no stripping or normalisation) through import and export. Extra keys in
a row (ids, scores, ...) are ignored. Not supported (a clear error names the line):
multi-turn conversations, system messages, multimodal content, and the implicit-prompt form with
plain strings (TRL splits those at the first differing character, which is rarely what was meant).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhf_core.input_files import InputFileError, jsonl_values, parse_json, read_data_file
from rlhf_core.rewards.outcomes import prefer_adjudications
from rlhf_core.store.project import SOURCES, Project, write_into
from rlhf_core.store.ranking import expand_ranking

OUTCOMES_WITHOUT_CHOICE = ("tie", "both_bad", "skip")
IMPORT_SOURCE = "import"
MAX_PROMPT_CHARS = 20_000
MAX_RESPONSE_CHARS = 100_000
MAX_ROWS_PER_FILE = 1_000_000
MAX_FILE_BYTES = 512_000_000


# ------------------------------------------------------------------------------- reports & errors
@dataclasses.dataclass
class ExportReport:
    path: Path
    written: int  # rows in the file
    skipped: dict[str, int]  # live text comparisons with no chosen response, by outcome
    from_rankings: int = 0  # rows that came from rankings stored without their pairs
    not_text: int = 0  # live comparisons (of the selected sources) that are not two live responses of one prompt
    conversational: bool = False
    sources: tuple[str, ...] = SOURCES

    def as_dict(self) -> dict:
        return {"written": self.written, "skipped": dict(self.skipped), "path": str(self.path),
                "from_rankings": self.from_rankings, "not_text": self.not_text,
                "conversational": self.conversational, "sources": list(self.sources)}


@dataclasses.dataclass
class ImportReport:
    path: Path
    project: Path
    rows: int = 0  # rows in the file
    preference_rows: int = 0
    unpaired_rows: int = 0
    prompts_added: int = 0
    prompts_reused: int = 0
    responses_added: int = 0
    responses_reused: int = 0
    comparisons_added: int = 0
    already_present: int = 0  # comparisons this labeller already had (a re-import)
    empty_responses: int = 0  # rows with an empty or whitespace-only answer (kept: a model can answer nothing)
    skipped_rows: list[str] = dataclasses.field(default_factory=list)  # "line N: why" for rows holding no preference
    unpaired_pairs: int = 0  # comparisons made from true x false unpaired completions
    unpaired_unmatched: int = 0  # unpaired completions whose prompt has no completion of the other label
    labeller: str = ""
    source: str = "human"
    project_created: bool = False

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"], d["project"] = str(self.path), str(self.project)
        return d


def parse_sources(sources: str | Iterable[str] | None) -> tuple[str, ...]:
    """``None``/empty -> every source; otherwise the named ones (comma-separated text or a list)."""
    if sources is None:
        return SOURCES
    items = sources.split(",") if isinstance(sources, str) else list(sources)
    wanted = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    if not wanted:
        return SOURCES
    unknown = [s for s in wanted if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown label source(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(SOURCES)}")
    return wanted


# ------------------------------------------------------------------------------- export
@dataclasses.dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str


def preference_pairs(project: Project, *, sources: str | Iterable[str] | None = None
                     ) -> tuple[list[PreferencePair], dict[str, int], int, int]:
    """The project's text preferences: ``(pairs, skipped by outcome, from_rankings, not_text)``.

    See the module docstring for which comparisons and rankings count.
    """
    wanted = parse_sources(sources)
    marks = ", ".join("?" for _ in wanted)
    responses = {
        r["id"]: (r["prompt_id"], r["text"]) for r in project.conn.execute(
            "SELECT i.id, i.prompt_id, i.text FROM items i JOIN prompts p ON p.id = i.prompt_id "
            "WHERE i.kind = 'response' AND i.deleted_at IS NULL AND p.deleted_at IS NULL "
            "AND i.text IS NOT NULL")
    }
    prompt_text = {r[0]: r[1] for r in project.conn.execute("SELECT id, text FROM prompts WHERE deleted_at IS NULL")}
    skipped = {o: 0 for o in OUTCOMES_WITHOUT_CHOICE}
    pairs: list[PreferencePair] = []
    not_text = 0

    def take(left: int, right: int, outcome: str) -> int:
        """Add one pair; returns 1 if a row was written."""
        a, b = responses.get(left), responses.get(right)
        if a is None or b is None or a[0] != b[0]:
            return -1
        if outcome in skipped:
            skipped[outcome] += 1
            return 0
        chosen, rejected = (a, b) if outcome == "left" else (b, a)
        pairs.append(PreferencePair(prompt_text[a[0]], chosen[1], rejected[1]))
        return 1

    rows = project.conn.execute(
        f"SELECT c.id, c.left_id, c.right_id, c.outcome, c.role FROM comparisons c "
        f"WHERE c.deleted_at IS NULL AND c.source IN ({marks}) "
        f"AND NOT EXISTS (SELECT 1 FROM comparisons n WHERE n.supersedes_id = c.id AND n.deleted_at IS NULL) "
        f"ORDER BY c.id", list(wanted))
    for row in prefer_adjudications(dict(r) for r in rows):  # an adjudicated pair: its adjudication only
        if take(row["left_id"], row["right_id"], row["outcome"]) < 0:
            not_text += 1
    from_rankings = 0
    lone_rankings = project.conn.execute(
        f"SELECT r.id FROM rankings r WHERE r.deleted_at IS NULL AND r.source IN ({marks}) "
        f"AND NOT EXISTS (SELECT 1 FROM comparisons c WHERE c.ranking_id = r.id) ORDER BY r.id", list(wanted))
    for (ranking_id,) in lone_rankings.fetchall():
        groups = project.ranking_groups(ranking_id)
        if sum(len(g) for g in groups) < 2:
            continue
        for left, right, outcome in expand_ranking(groups):
            got = take(left, right, outcome)
            if got < 0:
                not_text += 1
            from_rankings += max(got, 0)
    return pairs, skipped, from_rankings, not_text


def trl_row(pair: PreferencePair, *, conversational: bool = False) -> dict:
    """One TRL preference row (standard or conversational) for a pair."""
    if conversational:
        return {"prompt": [{"role": "user", "content": pair.prompt}],
                "chosen": [{"role": "assistant", "content": pair.chosen}],
                "rejected": [{"role": "assistant", "content": pair.rejected}]}
    return {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}


def export_trl(project: Project, path: str | os.PathLike, *, conversational: bool = False,
               sources: str | Iterable[str] | None = None) -> ExportReport:
    """Write the project's text preferences to ``path`` as TRL preference JSONL (atomically)."""
    path = Path(path).expanduser().absolute()
    wanted = parse_sources(sources)
    pairs, skipped, from_rankings, not_text = preference_pairs(project, sources=wanted)
    lines = [json.dumps(trl_row(p, conversational=conversational), ensure_ascii=False) + "\n" for p in pairs]
    write_atomically(path, "".join(lines))
    return ExportReport(path=path, written=len(pairs), skipped=skipped, from_rankings=from_rankings,
                        not_text=not_text, conversational=conversational, sources=wanted)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file in ``path``'s folder, then rename it over ``path``."""
    if not path.parent.is_dir():
        raise OSError(f"the folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ------------------------------------------------------------------------------- parsing
@dataclasses.dataclass
class TrlRow:
    line: int
    prompt: str
    chosen: str | None = None  # preference rows
    rejected: str | None = None
    completion: str | None = None  # unpaired rows
    label: bool | None = None

    @property
    def unpaired(self) -> bool:
        return self.completion is not None


class _RowError(Exception):
    pass


class _SkippedRow(_RowError):
    """A row TRL accepts but that holds no preference to store (reported, not refused)."""


def _text(value: Any, what: str, limit: int, *, may_be_empty: bool = False) -> str:
    """A field's text, unchanged; only a prompt must have visible characters."""
    if not isinstance(value, str):
        raise _RowError(f'"{what}" must be a string, got {_type_name(value)}')
    if not may_be_empty and not value.strip():
        raise _RowError(f'"{what}" is empty')
    if len(value) > limit:
        raise _RowError(f'"{what}" is {len(value)} characters long; the limit is {limit}')
    return value


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], Mapping) and "role" in value[0]


def _message(value: Any, what: str, role: str, limit: int) -> str:
    """The content of a one-message conversation with the given role."""
    if not isinstance(value, list) or not value:
        raise _RowError(f'"{what}" must be a string or a non-empty list of messages, got {_type_name(value)}')
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise _RowError(f'"{what}" message {i + 1} must be an object with "role" and "content"')
    if len(value) != 1:
        roles = ", ".join(str(m["role"]) for m in value)
        raise _RowError(f'"{what}" has {len(value)} messages ({roles}); only one {role} message is '
                        "supported (no multi-turn conversations or system messages)")
    if value[0]["role"] != role:
        raise _RowError(f'"{what}" must be a {role} message, found role {value[0]["role"]!r}')
    return _text(value[0]["content"], f"{what}.content", limit, may_be_empty=role != "user")


def _prompt_and_answers(obj: Mapping, answer_keys: Sequence[str]) -> tuple[str, list[str]]:
    """The prompt text and the answers' texts of an explicit-prompt row (standard or conversational)."""
    prompt = obj["prompt"]
    conversational = _is_messages(prompt) or any(_is_messages(obj[k]) for k in answer_keys)
    if conversational:
        if isinstance(prompt, str):
            raise _RowError('"prompt" is a string but the answers are conversations; give the prompt as '
                            '[{"role": "user", "content": ...}] or leave it out (implicit prompt)')
        text = _message(prompt, "prompt", "user", MAX_PROMPT_CHARS)
        answers = []
        for k in answer_keys:
            if isinstance(obj[k], str):
                raise _RowError(f'"{k}" is a string but the prompt is a conversation; use '
                                f'[{{"role": "assistant", "content": ...}}]')
            answers.append(_message(obj[k], k, "assistant", MAX_RESPONSE_CHARS))
        return text, answers
    return (_text(prompt, "prompt", MAX_PROMPT_CHARS),
            [_text(obj[k], k, MAX_RESPONSE_CHARS, may_be_empty=True) for k in answer_keys])


def _implicit_prompt(obj: Mapping) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) from whole conversations sharing their first message."""
    chosen, rejected = obj["chosen"], obj["rejected"]
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise _RowError('missing key "prompt" (the implicit-prompt form is supported only for '
                        'conversations: lists of {"role", "content"} messages)')
    for key, conv in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(conv, list) or not conv:
            raise _RowError(f'"{key}" must be a list of messages, got {_type_name(conv)}')
        for i, m in enumerate(conv):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise _RowError(f'"{key}" message {i + 1} must be an object with "role" and "content"')
    shared = 0
    while shared < min(len(chosen), len(rejected)) and dict(chosen[shared]) == dict(rejected[shared]):
        shared += 1
    if shared == 0:
        raise _RowError('no "prompt" key, and "chosen" and "rejected" do not start with the same message')
    if shared == len(chosen) and shared == len(rejected):
        raise _SkippedRow("chosen and rejected are the same text, so it prefers nothing")
    for key, conv in (("chosen", chosen), ("rejected", rejected)):
        if shared == len(conv):
            raise _RowError(f'"{key}" has no answer after the prompt it shares with the other side')
    return (_message(chosen[:shared], "prompt", "user", MAX_PROMPT_CHARS),
            _message(chosen[shared:], "chosen", "assistant", MAX_RESPONSE_CHARS),
            _message(rejected[shared:], "rejected", "assistant", MAX_RESPONSE_CHARS))


def _row_from(obj: Any, line: int) -> TrlRow:
    if not isinstance(obj, Mapping):
        raise _RowError(f"expected a JSON object, got {_type_name(obj)}")
    if "chosen" in obj or "rejected" in obj:
        for key in ("chosen", "rejected"):
            if key not in obj:
                raise _RowError(f'missing key "{key}"')
        # as trl.maybe_extract_prompt: a prompt of the answers' format is explicit; whole
        # conversations in "chosen"/"rejected" (with no prompt or a plain-text one) carry it implicitly
        whole_conversations = _is_messages(obj["chosen"]) and len(obj["chosen"]) > 1
        explicit = "prompt" in obj and (_is_messages(obj["prompt"]) or not whole_conversations)
        if explicit:
            prompt, (chosen, rejected) = _prompt_and_answers(obj, ("chosen", "rejected"))
        else:
            prompt, chosen, rejected = _implicit_prompt(obj)
        if chosen == rejected or (chosen.strip() == rejected.strip() and chosen.strip()):
            raise _SkippedRow("chosen and rejected are the same text, so it prefers nothing")
        return TrlRow(line, prompt, chosen=chosen, rejected=rejected)
    if "completion" in obj or "label" in obj:
        for key in ("prompt", "completion", "label"):
            if key not in obj:
                raise _RowError(f'missing key "{key}"')
        label = obj["label"]
        if not isinstance(label, bool):
            raise _RowError(f'"label" must be true or false, got {_type_name(label)}')
        prompt, (completion,) = _prompt_and_answers(obj, ("completion",))
        return TrlRow(line, prompt, completion=completion, label=label)
    found = ", ".join(map(repr, list(obj)[:8])) or "none"
    raise _RowError('missing key "chosen" (a preference row has "prompt", "chosen" and "rejected"; an '
                    f'unpaired row has "prompt", "completion" and "label"); keys found: {found}')


def parse_trl_file(path: str | os.PathLike, skipped: list[str] | None = None) -> list[TrlRow]:
    """Read and check a whole TRL JSONL file; raise :class:`InputFileError` listing every problem.
    Rows that are valid but say nothing to store (chosen equal to rejected) are left out and, with
    their line, appended to ``skipped``."""
    path = Path(path)
    raw = read_data_file(path, MAX_FILE_BYTES)
    rows: list[TrlRow] = []
    problems: list[str] = []
    labels: dict[tuple[str, str], tuple[bool, int]] = {}
    for number, obj in jsonl_values(raw, problems):
        try:
            row = _row_from(obj, number)
        except _SkippedRow as exc:
            if skipped is not None:
                skipped.append(f"line {number}: {exc}")
            continue
        except _RowError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if row.unpaired:
            key = (row.prompt, row.completion)
            seen = labels.setdefault(key, (row.label, number))
            if seen[0] != row.label:
                problems.append(f"line {number}: this completion was labelled {str(seen[0]).lower()} on "
                                f"line {seen[1]} and {str(row.label).lower()} here")
                continue
        rows.append(row)
    if not problems and not rows:
        problems.append("the file contains no rows with a preference" if skipped else "the file contains no rows")
    if len(rows) > MAX_ROWS_PER_FILE:
        problems.append(f"the file has {len(rows)} rows; the limit is {MAX_ROWS_PER_FILE}")
    if problems:
        raise InputFileError(path, problems)
    return rows


# ------------------------------------------------------------------------------- import
def import_trl(project_path_or_project: Project | str | os.PathLike, path: str | os.PathLike, *,
               source: str = "human") -> ImportReport:
    """Check the whole file, then add its prompts, responses and comparisons in one transaction.

    ``project_path_or_project``: an open :class:`Project` (left open) or a folder, which is opened,
    or created if it does not exist, only once the file has passed the checks (and closed again).
    Raises :class:`InputFileError` (nothing imported) or ``ValueError`` for a bad ``source``.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
    path = Path(path)
    skipped: list[str] = []
    rows = parse_trl_file(path, skipped)
    report = write_into(project_path_or_project,
                        lambda project, created: _write_rows(project, rows, path, source, created=created))
    report.skipped_rows = skipped
    return report


def _write_rows(project: Project, rows: list[TrlRow], path: Path, source: str, *, created: bool) -> ImportReport:
    labeller_name = f"import:{path.name}"
    report = ImportReport(path=path.absolute(), project=project.folder, rows=len(rows), labeller=labeller_name,
                          source=source, project_created=created)
    report.preference_rows = sum(1 for r in rows if not r.unpaired)
    report.unpaired_rows = len(rows) - report.preference_rows
    report.empty_responses = sum(1 for r in rows if any(t is not None and not t.strip()
                                                        for t in (r.chosen, r.rejected, r.completion)))
    prompt_ids: dict[str, int] = {}
    for pid, text in project.conn.execute("SELECT id, text FROM prompts WHERE deleted_at IS NULL ORDER BY id"):
        prompt_ids.setdefault(text, pid)
    known_prompts = set(prompt_ids.values())
    used_prompts: set[int] = set()
    response_ids: dict[tuple[int, str], int] = {}
    for rid, pid, text in project.conn.execute(
            "SELECT id, prompt_id, text FROM items WHERE kind = 'response' AND deleted_at IS NULL "
            "AND text IS NOT NULL ORDER BY id"):
        response_ids.setdefault((pid, text), rid)
    known_responses = set(response_ids.values())
    used_responses: set[int] = set()

    def prompt_id(text: str) -> int:
        if text not in prompt_ids:
            prompt_ids[text] = project.add_prompt(text, source=IMPORT_SOURCE, meta={"import": path.name})
            report.prompts_added += 1
        pid = prompt_ids[text]
        if pid in known_prompts and pid not in used_prompts:
            report.prompts_reused += 1
        used_prompts.add(pid)
        return pid

    def response_id(pid: int, text: str, row: TrlRow) -> int:
        key = (pid, text)
        if key not in response_ids:
            meta: dict[str, Any] = {"import": path.name, "line": row.line}
            if row.unpaired:
                meta["label"] = row.label
            response_ids[key] = project.add_item("response", prompt_id=pid, text=text, source=IMPORT_SOURCE,
                                                 model_id=None, meta=meta)
            report.responses_added += 1
        rid = response_ids[key]
        if rid in known_responses and rid not in used_responses:
            report.responses_reused += 1
            if row.unpaired:  # an existing response gets the file's label too
                project.conn.execute("UPDATE items SET meta_json = json_set(meta_json, '$.label', json(?)) "
                                     "WHERE id = ?", ["true" if row.label else "false", rid])
        used_responses.add(rid)
        return rid

    with project.db.atomic():
        labeller = project.ensure_labeller(labeller_name, kind=source if source != "auto" else "synthetic",
                                           params={"file": path.name})
        before = {(a, b, o) for a, b, o in project.conn.execute(
            "SELECT left_id, right_id, outcome FROM comparisons WHERE labeller_id = ? AND deleted_at IS NULL",
            [labeller])}

        def compare(worse: int, better: int, meta: dict) -> None:
            if (worse, better, "right") in before:
                report.already_present += 1
                return
            project.add_comparison(worse, better, "right", labeller_id=labeller, source=source, meta=meta)
            report.comparisons_added += 1

        unpaired: dict[int, dict[bool, list[tuple[int, int]]]] = {}
        for row in rows:
            pid = prompt_id(row.prompt)
            if row.unpaired:
                rid = response_id(pid, row.completion, row)
                bucket = unpaired.setdefault(pid, {True: [], False: []})[row.label]
                if rid not in (r for r, _ in bucket):
                    bucket.append((rid, row.line))
                continue
            chosen = response_id(pid, row.chosen, row)
            rejected = response_id(pid, row.rejected, row)
            compare(rejected, chosen, {"import": path.name, "line": row.line})
        for pid, by_label in unpaired.items():
            good, bad = by_label[True], by_label[False]
            if not good or not bad:
                report.unpaired_unmatched += len(good) + len(bad)
                continue
            for g, g_line in good:
                for b, b_line in bad:
                    before_count = report.comparisons_added
                    compare(b, g, {"import": path.name, "from_unpaired": True, "lines": [b_line, g_line]})
                    report.unpaired_pairs += report.comparisons_added - before_count
    return report
