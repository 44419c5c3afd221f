"""The label browser's data, without Qt: every label of a project as rows to filter and sort, one label's
pair and history, and the writes that change a label (relabel, undo, restore), each checked against
what the person saw.

Every change is a new fact: a relabel is a new comparison superseding the old (``supersedes_id``), an
undo sets ``deleted_at``, and undoing an undo (a restore) is a copy of the undone label superseding it
(``meta.restores``). Nothing is deleted, so the whole history of a label stays readable.

Rows come from one query (filters in SQL, the rows' statuses from one more): 10,000 labels load in
tens of milliseconds (docs/performance.md). Times are the stored UTC times.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from rlhf_core.store import Project
from rlhf_core.store.project import LabelChangedError

#: item kind -> the word the browser shows for a label of such items
KIND_NAMES = {"clip": "clip", "response": "text", "trajectory": "trajectory"}
#: what ``LabelFilter.status`` may be: live labels, changed ones (undone or replaced), or all
STATUS_FILTERS = ("live", "changed", "all")
NO_VERSION = 0  # LabelFilter.guideline for labels given without guidelines (versions start at 1)


@dataclass(frozen=True)
class LabelFilter:
    """Which labels to list; None (or the default) means any."""

    labeller_id: int | None = None
    source: str | None = None
    outcome: str | None = None
    kind: str | None = None  # item kind: "clip", "response" or "trajectory"
    role: str | None = None  # "label" or "adjudication"
    since: date | None = None  # first day (UTC), inclusive
    until: date | None = None  # last day (UTC), inclusive
    guideline: int | None = None  # a version, or NO_VERSION for labels given without guidelines
    status: str = "live"


@dataclass(slots=True)
class LabelRow:
    """One label as the browser lists it. ``status``: ``live``, ``undone``, ``replaced`` (relabelled or
    re-adjudicated: by ``successor``) or ``restored`` (undone, then restored as ``successor``)."""

    id: int
    created_at: str
    kind: str
    left_id: int
    right_id: int
    outcome: str
    labeller_id: int | None
    labeller: str
    source: str
    role: str
    guideline_version: int | None
    response_ms: int | None
    ranking_id: int | None
    supersedes_id: int | None
    prompt: str
    status: str = "live"
    successor: int | None = None

    @property
    def live(self) -> bool:
        return self.status == "live"

    def status_text(self) -> str:
        if self.status == "replaced":
            return f"replaced by {self.successor}"
        if self.status == "restored":
            return f"restored as {self.successor}"
        return self.status


def query_labels(project: Project, flt: LabelFilter = LabelFilter()) -> list[LabelRow]:
    """Every comparison (labels of clips, trajectories and texts, those of rankings included, and
    adjudications) that ``flt`` lets through, oldest first."""
    if flt.status not in STATUS_FILTERS:
        raise ValueError(f"status must be one of {', '.join(STATUS_FILTERS)}; got {flt.status!r}")
    where, args = [], []
    for column, value in (("c.labeller_id", flt.labeller_id), ("c.source", flt.source), ("c.outcome", flt.outcome),
                          ("a.kind", flt.kind), ("c.role", flt.role)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if flt.since is not None:
        where.append("c.created_at >= ?")
        args.append(flt.since.isoformat())
    if flt.until is not None:
        where.append("c.created_at < ?")
        args.append((flt.until + timedelta(days=1)).isoformat())
    if flt.guideline == NO_VERSION:
        where.append("c.guideline_version IS NULL")
    elif flt.guideline is not None:
        where.append("c.guideline_version = ?")
        args.append(int(flt.guideline))
    if flt.status == "live":
        where.append("c.deleted_at IS NULL")
    elif flt.status == "changed":
        where.append("c.deleted_at IS NOT NULL")
    sql = ("SELECT c.id, c.created_at, a.kind, c.left_id, c.right_id, c.outcome, c.labeller_id, "
           "coalesce(l.name, ''), c.source, c.role, c.guideline_version, c.response_ms, c.ranking_id, "
           "c.supersedes_id, coalesce(substr(p.text, 1, 200), ''), c.deleted_at FROM comparisons c "
           "JOIN items a ON a.id = c.left_id LEFT JOIN labellers l ON l.id = c.labeller_id "
           "LEFT JOIN prompts p ON p.id = a.prompt_id"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY c.id")
    later = _successors(project) if flt.status != "live" else {}
    rows = []
    for r in project.conn.execute(sql, args):
        row = LabelRow(*r[:15])
        if r[15] is not None:
            successor, restores = later.get(row.id, (None, False))
            row.status = "undone" if successor is None else "restored" if restores else "replaced"
            row.successor = successor
        rows.append(row)
    return rows


def _successors(project: Project) -> dict[int, tuple[int, bool]]:
    """``{label id: (the newest label superseding it, whether that one restores it)}``."""
    out: dict[int, tuple[int, bool]] = {}
    for old, new, restores in project.conn.execute(
            "SELECT supersedes_id, id, json_extract(meta_json, '$.restores') FROM comparisons "
            "WHERE supersedes_id IS NOT NULL ORDER BY id"):
        out[old] = (new, restores is not None)
    return out


@dataclass
class Choices:
    """What the filters can choose from in this project."""

    labellers: list[tuple[int, str]]
    sources: list[str]
    kinds: list[str]  # item kinds with labels
    guideline_versions: list[int]
    unversioned: bool  # some labels were given without guidelines
    first_day: date | None
    last_day: date | None


def choices(project: Project) -> Choices:
    conn = project.conn
    labellers = [(r[0], r[1]) for r in conn.execute(
        "SELECT l.id, l.name FROM labellers l WHERE EXISTS (SELECT 1 FROM comparisons c WHERE c.labeller_id = l.id) "
        "ORDER BY l.name")]
    sources = [r[0] for r in conn.execute("SELECT DISTINCT source FROM comparisons ORDER BY source")]
    kinds = [r[0] for r in conn.execute(
        "SELECT DISTINCT a.kind FROM comparisons c JOIN items a ON a.id = c.left_id ORDER BY a.kind")]
    versions = [r[0] for r in conn.execute("SELECT DISTINCT guideline_version FROM comparisons ORDER BY 1")]
    first, last = conn.execute("SELECT min(created_at), max(created_at) FROM comparisons").fetchone()
    return Choices(labellers, sources, kinds, [v for v in versions if v is not None], None in versions,
                   date.fromisoformat(first[:10]) if first else None, date.fromisoformat(last[:10]) if last else None)


def history(project: Project, comparison_id: int) -> list[dict]:
    """The label's chain, oldest first: the labels it superseded, itself, and those that superseded it
    (relabels, restores, re-adjudications); each row with ``labeller`` (name)."""
    sql = ("SELECT c.*, l.name AS labeller FROM comparisons c LEFT JOIN labellers l ON l.id = c.labeller_id "
           "WHERE c.id = ?")
    row = project.conn.execute(sql, [comparison_id]).fetchone()
    if row is None:
        return []
    chain = [dict(row)]
    seen = {row["id"]}
    while chain[0]["supersedes_id"] is not None and chain[0]["supersedes_id"] not in seen:
        older = project.conn.execute(sql, [chain[0]["supersedes_id"]]).fetchone()
        if older is None:
            break
        seen.add(older["id"])
        chain.insert(0, dict(older))
    while True:
        newer = project.conn.execute(
            "SELECT c.*, l.name AS labeller FROM comparisons c LEFT JOIN labellers l ON l.id = c.labeller_id "
            "WHERE c.supersedes_id = ? ORDER BY c.id DESC LIMIT 1", [chain[-1]["id"]]).fetchone()
        if newer is None or newer["id"] in seen:
            break
        seen.add(newer["id"])
        chain.append(dict(newer))
    return chain


def history_text(chain: list[dict]) -> str:
    """A label's chain in one line: ``#3 left (undone) → #7 left (restore) → #9 right``."""
    parts = []
    for r in chain:
        meta = json.loads(r.get("meta_json") or "{}")
        how = " (restore)" if "restores" in meta else ""
        if r["role"] == "adjudication":
            how += " (adjudication)"
        gone = " (undone)" if r["deleted_at"] is not None and r is chain[-1] else ""
        parts.append(f"#{r['id']} {r['outcome']}{how}{gone}")
    return " → ".join(parts)


# ---------------------------------------------------------------------- writes (run by the label writer)
WriteFn = Callable[[Project], Any]


def _state(project: Project, comparison_id: int) -> tuple[str, int | None]:
    """``(status, successor)`` of a label now, as :class:`LabelRow` says them (``missing`` if no such label)."""
    row = project.conn.execute("SELECT deleted_at FROM comparisons WHERE id = ?", [comparison_id]).fetchone()
    if row is None:
        return "missing", None
    if row[0] is None:
        return "live", None
    later = project.conn.execute(
        "SELECT id, json_extract(meta_json, '$.restores') FROM comparisons WHERE supersedes_id = ? "
        "ORDER BY id DESC LIMIT 1", [comparison_id]).fetchone()
    if later is None:
        return "undone", None
    return ("restored" if later[1] is not None else "replaced"), later[0]


def _require(project: Project, comparison_id: int, wanted: str, doing: str) -> None:
    status, successor = _state(project, comparison_id)
    if status == wanted:
        return
    if status == "missing":
        raise ValueError(f"There is no label {comparison_id}.")
    now = {"live": "is live again", "undone": "was undone", "replaced": f"was replaced by label {successor}",
           "restored": f"was restored as label {successor}"}[status]
    raise LabelChangedError(f"Label {comparison_id} {now} meanwhile (in another window or process): it was "
                            f"not {doing}. The list shows it as it is now.")


def relabel(comparison_id: int, outcome: str) -> WriteFn:
    """A new label with ``outcome`` supersedes the live label ``comparison_id``; the write returns its id."""

    def write(p: Project) -> int:
        with p.write_transaction():
            _require(p, comparison_id, "live", "relabelled")
            return p.edit_comparison(comparison_id, outcome)
    return write


def undo(comparison_id: int) -> WriteFn:
    """Soft-delete the live label ``comparison_id`` (its queue entry wants an answer again); returns its id."""

    def write(p: Project) -> int:
        with p.write_transaction():
            _require(p, comparison_id, "live", "undone")
            p.undo_comparison(comparison_id)
        return comparison_id
    return write


def restore(comparison_id: int) -> WriteFn:
    """Undo the undo of label ``comparison_id`` (:meth:`Project.restore_comparison`); returns the new id."""

    def write(p: Project) -> int:
        with p.write_transaction():
            _require(p, comparison_id, "undone", "restored")
            return p.restore_comparison(comparison_id)
    return write


def undo_or_restore(row: LabelRow) -> tuple[str, WriteFn] | None:
    """What the undo key does to ``row``: undo a live label, restore an undone one (``("undo", fn)`` or
    ``("restore", fn)``); None for a label that was replaced (change its newer label instead)."""
    if row.status == "live":
        return "undo", undo(row.id)
    if row.status == "undone":
        return "restore", restore(row.id)
    return None
