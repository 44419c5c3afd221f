"""Labels of clips and trajectories as JSON Lines: export, and import back into a project that holds the
same trajectories (the project they came from, a copy of it, or one that imported the same data).

One JSON object per line; ``type`` says which::

    {"type": "comparison", "left": SIDE, "right": SIDE, "outcome": "left", "labeller": "you",
     "labeller_kind": "human", "source": "human", "time": "2026-05-01T12:00:00.000+00:00",
     "response_ms": 812, "note": ""}
    {"type": "ranking", "groups": [[SIDE, ...], [SIDE], ...], "labeller": ..., "labeller_kind": ...,
     "source": "human", "time": ..., "response_ms": null, "note": ""}

    SIDE = {"trajectory": 3, "env_id": "CartPole-v1", "kind": "clip", "start_step": 40, "end_step": 90}

- ``trajectory``: the trajectory's item id in the project; ``kind`` ``trajectory`` (the whole of it:
  steps 0 to its length) or ``clip``; ``start_step``/``end_step``: the steps [start, end) the clip
  covers, which are also the frames of the trajectory's video that it shows.
- ``outcome``: ``left``, ``right``, ``tie``, ``both_bad`` or ``skip`` (which side was preferred).
  A ranking's ``groups`` go worst -> best; items in one group are tied.
- ``labeller`` (a name, or null), ``labeller_kind`` (``human``, ``synthetic``, ``ai``), ``source``
  (``human``, ``synthetic``, ``ai``, ``auto``), ``time`` (ISO 8601 with a time zone; stored in UTC),
  ``response_ms`` (or null), ``note``. Other keys are ignored.

Export (:func:`export_comparisons`) writes every live comparison of two live clips/trajectories that is
not part of a ranking, then every live ranking of them (text comparisons go out as TRL data:
:mod:`rlhf_core.io.trl`). Import (:func:`import_comparisons`) checks the whole file against the
project first: a line naming a trajectory the project does not have (or of another environment,
or a clip outside it) is refused with its line number and nothing is imported. A good file is
written in one transaction: a clip is matched to the project's live clip of the same trajectory and
steps, else added; labellers are matched by name, else added; each label keeps its time, and one
equal to a live label already there (same items, outcome, labeller and time) is not added again,
so importing a file twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rlhf_core.envs.storage import load_arrays
from rlhf_core.input_files import InputFileError, jsonl_values, read_data_file
from rlhf_core.io.trl import parse_sources, write_atomically
from rlhf_core.store.project import OUTCOMES, SOURCES, Project

CONTROL_KINDS = ("trajectory", "clip")
LABELLER_KINDS = ("human", "synthetic", "ai")
MAX_FILE_BYTES = 512_000_000
MAX_ROWS = 1_000_000
MAX_NAME_CHARS = 200
MAX_NOTE_CHARS = 10_000


@dataclasses.dataclass
class ComparisonsExport:
    path: Path
    comparisons: int
    rankings: int
    left_out: int = 0  # live labels of a deleted clip or trajectory

    def as_dict(self) -> dict:
        return {"path": str(self.path), "comparisons": self.comparisons, "rankings": self.rankings,
                "left_out": self.left_out}


@dataclasses.dataclass
class ComparisonsImport:
    path: Path
    project: Path
    rows: int = 0
    comparisons_added: int = 0
    rankings_added: int = 0
    clips_added: int = 0
    labellers_added: int = 0
    already_present: int = 0  # labels the project already had (a re-import)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"], d["project"] = str(self.path), str(self.project)
        return d


# ------------------------------------------------------------------------------- export
def export_comparisons(project: Project, path: str | os.PathLike, *,
                       sources: str | Iterable[str] | None = None) -> ComparisonsExport:
    """Write the project's clip and trajectory labels (of the given sources; default all) to ``path``
    as JSON Lines, atomically."""
    path = Path(path).expanduser().absolute()
    wanted = parse_sources(sources)
    marks = ", ".join("?" for _ in wanted)
    items: dict[int, dict | None] = {}
    labellers = {r["id"]: (r["name"], r["kind"]) for r in project.labellers()}

    def side(item_id: int) -> dict | None:
        if item_id not in items:
            row = project.get_item(item_id)
            items[item_id] = _side(project, row) if row and row["deleted_at"] is None else None
        return items[item_id]

    def who(labeller_id: int | None) -> dict:
        name, kind = labellers.get(labeller_id, (None, None))
        return {"labeller": name, "labeller_kind": kind}

    lines, n_comparisons, n_rankings, left_out = [], 0, 0, 0
    rows = project.conn.execute(
        f"SELECT c.* FROM comparisons c JOIN items a ON a.id = c.left_id JOIN items b ON b.id = c.right_id "
        f"WHERE c.deleted_at IS NULL AND c.ranking_id IS NULL AND c.source IN ({marks}) "
        f"AND a.kind IN ('trajectory', 'clip') AND b.kind IN ('trajectory', 'clip') ORDER BY c.id", list(wanted))
    for c in rows.fetchall():
        left, right = side(c["left_id"]), side(c["right_id"])
        if left is None or right is None:
            left_out += 1
            continue
        lines.append({"type": "comparison", "left": left, "right": right, "outcome": c["outcome"],
                      **who(c["labeller_id"]), "source": c["source"], "time": c["created_at"],
                      "response_ms": c["response_ms"], "note": c["note"] or ""})
        n_comparisons += 1
    rankings = project.conn.execute(
        f"SELECT * FROM rankings WHERE deleted_at IS NULL AND prompt_id IS NULL AND source IN ({marks}) "
        f"ORDER BY id", list(wanted)).fetchall()
    for r in rankings:
        groups = [[side(i) for i in group] for group in project.ranking_groups(r["id"])]
        kinds = {project.get_item(i)["kind"] for group in project.ranking_groups(r["id"]) for i in group}
        if not kinds <= set(CONTROL_KINDS):
            continue  # a ranking of responses
        if any(s is None for group in groups for s in group):
            left_out += 1
            continue
        lines.append({"type": "ranking", "groups": groups, **who(r["labeller_id"]), "source": r["source"],
                      "time": r["created_at"], "response_ms": r["response_ms"], "note": r["note"] or ""})
        n_rankings += 1
    write_atomically(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return ComparisonsExport(path=path, comparisons=n_comparisons, rankings=n_rankings, left_out=left_out)


def _side(project: Project, item: dict) -> dict | None:
    """The SIDE object of a live clip or trajectory item (None for another kind)."""
    if item["kind"] == "trajectory":
        return {"trajectory": item["id"], "env_id": item["env_id"], "kind": "trajectory", "start_step": 0,
                "end_step": int(item["length"])}
    if item["kind"] == "clip":
        parent = project.get_item(item["parent_id"])
        if parent is None or parent["deleted_at"] is not None:
            return None
        return {"trajectory": item["parent_id"], "env_id": item["env_id"], "kind": "clip",
                "start_step": int(item["start_step"]), "end_step": int(item["end_step"])}
    return None


# ------------------------------------------------------------------------------- parsing
class _RowError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class _Side:
    trajectory: int
    kind: str
    start: int
    end: int


@dataclasses.dataclass
class _Row:
    line: int
    kind: str  # comparison | ranking
    groups: list[list[_Side]]  # comparison: [[left], [right]]
    outcome: str | None
    labeller: str | None
    labeller_kind: str
    source: str
    time: str
    response_ms: int | None
    note: str


def _int(value: Any, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _RowError(f'"{what}" must be a whole number from {low}, got {json.dumps(value)[:40]}')
    return value


def _parse_side(value: Any, what: str, trajectories: Mapping[int, dict]) -> _Side:
    if not isinstance(value, Mapping):
        raise _RowError(f'"{what}" must be an object with "trajectory", "kind", "start_step" and "end_step"')
    for key in ("trajectory", "kind", "start_step", "end_step"):
        if key not in value:
            raise _RowError(f'"{what}" lacks "{key}"')
    tid = _int(value["trajectory"], f"{what}.trajectory", 1)
    kind = value["kind"]
    if kind not in CONTROL_KINDS:
        raise _RowError(f'"{what}.kind" must be "trajectory" or "clip", got {json.dumps(kind)[:40]}')
    start, end = _int(value["start_step"], f"{what}.start_step"), _int(value["end_step"], f"{what}.end_step")
    traj = trajectories.get(tid)
    if traj is None:
        raise _RowError(f"{what} names trajectory {tid}, which is not in this project")
    if traj["deleted_at"] is not None:
        raise _RowError(f"{what} names trajectory {tid}, which was deleted from this project")
    env_id = value.get("env_id")
    if env_id is not None and env_id != traj["env_id"]:
        raise _RowError(f"{what} names trajectory {tid} of {str(env_id)[:60]}, but this project's trajectory "
                        f"{tid} is of {traj['env_id']}: the file belongs to another project")
    length = int(traj["length"] or 0)
    if kind == "trajectory" and (start, end) != (0, length):
        raise _RowError(f"{what} covers steps {start}-{end} of trajectory {tid}, which has {length} steps here")
    if not start < end <= length:
        raise _RowError(f"{what} covers steps {start}-{end}, outside trajectory {tid} (0-{length})")
    return _Side(tid, kind, start, end)


def _parse_time(value: Any) -> str:
    if not isinstance(value, str):
        raise _RowError('"time" must be an ISO 8601 date and time, e.g. "2026-05-01T12:00:00+00:00"')
    try:
        when = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise _RowError(f'"time" is not an ISO 8601 date and time: {value[:40]!r}') from None
    if when.tzinfo is None:
        raise _RowError(f'"time" needs a time zone (e.g. +00:00 or Z): {value[:40]!r}')
    return when.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _parse_row(obj: Any, line: int, trajectories: Mapping[int, dict]) -> _Row:
    if not isinstance(obj, Mapping):
        raise _RowError("expected a JSON object")
    kind = obj.get("type")
    if kind == "comparison":
        for key in ("left", "right", "outcome"):
            if key not in obj:
                raise _RowError(f'a comparison needs "{key}"')
        groups = [[_parse_side(obj["left"], "left", trajectories)], [_parse_side(obj["right"], "right", trajectories)]]
        if groups[0] == groups[1]:
            raise _RowError("left and right are the same clip")
        if obj["outcome"] not in OUTCOMES:
            raise _RowError(f'"outcome" must be one of {", ".join(OUTCOMES)}, got {json.dumps(obj["outcome"])[:40]}')
        outcome = obj["outcome"]
    elif kind == "ranking":
        raw = obj.get("groups")
        if not isinstance(raw, list) or not raw or not all(isinstance(g, list) and g for g in raw):
            raise _RowError('"groups" must be a list of non-empty lists of clips, worst first')
        groups = [[_parse_side(s, f"groups[{i}][{j}]", trajectories) for j, s in enumerate(g)]
                  for i, g in enumerate(raw)]
        flat = [s for g in groups for s in g]
        if len(flat) < 2:
            raise _RowError("a ranking needs at least two clips")
        if len(set(flat)) != len(flat):
            raise _RowError("a clip appears more than once in the ranking")
        outcome = None
    else:
        raise _RowError(f'"type" must be "comparison" or "ranking", got {json.dumps(kind)[:40]}')
    source = obj.get("source")
    if source not in SOURCES:
        raise _RowError(f'"source" must be one of {", ".join(SOURCES)}, got {json.dumps(source)[:40]}')
    labeller = obj.get("labeller")
    if labeller is not None and (not isinstance(labeller, str) or not labeller.strip()
                                 or len(labeller) > MAX_NAME_CHARS):
        raise _RowError(f'"labeller" must be a name of 1-{MAX_NAME_CHARS} characters, or null')
    default_kind = source if source in LABELLER_KINDS else "synthetic"
    labeller_kind = obj.get("labeller_kind") or default_kind
    if labeller_kind not in LABELLER_KINDS:
        raise _RowError(f'"labeller_kind" must be one of {", ".join(LABELLER_KINDS)}, got '
                        f'{json.dumps(labeller_kind)[:40]}')
    if "time" not in obj:
        raise _RowError('a label needs its "time"')
    response_ms = obj.get("response_ms")
    if response_ms is not None:
        response_ms = _int(response_ms, "response_ms")
    note = obj.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise _RowError(f'"note" must be text of at most {MAX_NOTE_CHARS} characters')
    return _Row(line, kind, groups, outcome, labeller.strip() if labeller else None, labeller_kind, source,
                _parse_time(obj["time"]), response_ms, note)


def parse_comparisons_file(project: Project, path: str | os.PathLike) -> list[_Row]:
    """Read and check a whole file against ``project``; :class:`InputFileError` lists every problem."""
    path = Path(path)
    raw = read_data_file(path, MAX_FILE_BYTES)
    trajectories = {r["id"]: r for r in project.items("trajectory", include_deleted=True)}
    rows, problems = [], []
    for number, obj in jsonl_values(raw, problems):
        try:
            rows.append(_parse_row(obj, number, trajectories))
        except _RowError as exc:
            problems.append(f"line {number}: {exc}")
    if not problems and not rows:
        problems.append("the file contains no labels")
    if len(rows) > MAX_ROWS:
        problems.append(f"the file has {len(rows)} labels; the limit is {MAX_ROWS}")
    if problems:
        raise InputFileError(path, problems)
    return rows


# ------------------------------------------------------------------------------- import
def import_comparisons(project: Project, path: str | os.PathLike) -> ComparisonsImport:
    """Check the whole file, then add its clips, labellers, comparisons and rankings in one transaction.
    Raises :class:`InputFileError` (nothing imported)."""
    path = Path(path)
    rows = parse_comparisons_file(project, path)
    report = ComparisonsImport(path=path.absolute(), project=project.folder, rows=len(rows))
    clips: dict[tuple[int, int, int], int] = {}
    for r in project.conn.execute("SELECT id, parent_id, start_step, end_step FROM items WHERE kind = 'clip' "
                                  "AND deleted_at IS NULL ORDER BY id DESC"):
        clips[(r[1], r[2], r[3])] = r[0]  # the oldest one wins
    labeller_ids = {r["name"]: r["id"] for r in project.labellers()}
    comparisons = {(r[0], r[1], r[2], r[3], r[4]) for r in project.conn.execute(
        "SELECT left_id, right_id, outcome, labeller_id, created_at FROM comparisons "
        "WHERE deleted_at IS NULL AND ranking_id IS NULL")}
    rankings = set()
    for r in project.conn.execute("SELECT id, labeller_id, created_at FROM rankings WHERE deleted_at IS NULL"):
        rankings.add((r[1], r[2], _groups_key(project.ranking_groups(r[0]))))
    rewards: dict[int, Any] = {}
    meta = {"import": path.name}

    def item_id(side: _Side) -> int:
        if side.kind == "trajectory":
            return side.trajectory
        key = (side.trajectory, side.start, side.end)
        if key not in clips:
            traj = project.get_item(side.trajectory)
            if side.trajectory not in rewards:
                rewards[side.trajectory] = load_arrays(project, traj)["rewards"]
            clips[key] = project.add_item(
                "clip", parent_id=side.trajectory, source=traj["source"], env_id=traj["env_id"], seed=traj["seed"],
                start_step=side.start, end_step=side.end, length=side.end - side.start,
                true_return=float(rewards[side.trajectory][side.start:side.end].sum()),
                params={"trajectory": side.trajectory, **meta})
            report.clips_added += 1
        return clips[key]

    def labeller_id(row: _Row) -> int | None:
        if row.labeller is None:
            return None
        if row.labeller not in labeller_ids:
            labeller_ids[row.labeller] = project.ensure_labeller(row.labeller, kind=row.labeller_kind, params=meta)
            report.labellers_added += 1
        return labeller_ids[row.labeller]

    with project.db.atomic():
        for row in rows:
            who = labeller_id(row)
            groups = [[item_id(s) for s in g] for g in row.groups]
            if row.kind == "comparison":
                key = (groups[0][0], groups[1][0], row.outcome, who, row.time)
                if key in comparisons:
                    report.already_present += 1
                    continue
                cid = project.add_comparison(groups[0][0], groups[1][0], row.outcome, labeller_id=who,
                                             source=row.source, response_ms=row.response_ms, note=row.note, meta=meta)
                project.conn.execute("UPDATE comparisons SET created_at = ? WHERE id = ?", [row.time, cid])
                comparisons.add(key)
                report.comparisons_added += 1
            else:
                key = (who, row.time, _groups_key(groups))
                if key in rankings:
                    report.already_present += 1
                    continue
                rid = project.add_ranking(groups, labeller_id=who, source=row.source, response_ms=row.response_ms,
                                          note=row.note)
                project.conn.execute("UPDATE rankings SET created_at = ? WHERE id = ?", [row.time, rid])
                project.conn.execute("UPDATE comparisons SET created_at = ? WHERE ranking_id = ?", [row.time, rid])
                rankings.add(key)
                report.rankings_added += 1
    return report


def _groups_key(groups: list[list[int]]) -> tuple:
    return tuple(tuple(sorted(g)) for g in groups)
