"""Copy one finished run (and the runs it made) from one project into another: rows, files and references.

:func:`export_run` packs a run as a :class:`RunBundle` (plain, picklable data: the rows of the run, its
child runs, metrics, samples, checkpoints, artefacts, items, the prompts those items need, the open pair-queue
entries it made, and its files as bytes or paths); :func:`import_run` writes a bundle into a project under
new ids, in one transaction, with every reference rewritten: parent runs, a clip's trajectory, checkpoint ids
and paths in results, sample payloads and metadata (by key: ``run_id``, ``checkpoint_id``, ``trajectories``
...), ``run:N`` / ``checkpoint:N`` references, run folders (``checkpoints/run-00007/`` ->
``checkpoints/run-00042/``), the run id in model cards and the checkpoint ids in a resumable state.
:func:`copy_run` is the two in one. The Ray sweep engine uses them: a member runs in a scratch copy of the
project on a worker, and the driver imports the bundle it returns.

Rows the run did not make are referenced, never copied: with ``shared`` (the target's highest ids when the
source was copied from it, :class:`SharedIds`) a reference to an id up to those is kept as it is; any other
reference outside the run is refused (:class:`RunCopyError`), so nothing points at the wrong row. Labels
(comparisons, rankings) are not copied.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_core.store.project import LIVE_STATUSES, SUBFOLDERS, Project

CARD_FILE = "README.md"  # a model card (rlhf_core.store.model_card): the run id is in its text
STATE_FILE = "state.json"  # a resumable state (rlhf_core.resume): the run's checkpoint ids
STAGING_PREFIX = ".run-import-"  # a folder under artifacts/ holding an import's files until they are placed
_TABLES = ("runs", "items", "prompts", "checkpoints", "artifacts", "pair_queue")

#: JSON keys whose whole-number values are ids of a table (a plural key: only in a list, never a count)
_ID_KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run", "run_id", "run_ids", "parent_run_id", "queued_by_run", "previous_round_run", "policy_run"),
    "checkpoints": ("checkpoint_id", "checkpoint_ids", "checkpoints"),
    "items": ("item", "item_id", "item_ids", "trajectory", "trajectory_id", "trajectory_ids", "trajectories",
              "clip_id", "clip_ids", "clips", "left_id", "right_id", "parent_id", "response_id", "response_ids",
              "revised_id", "original_id", "revision_id", "revision_ids", "correction_id", "video_item",
              "workbench_item_id"),
    "prompts": ("prompt_id", "prompt_ids"),
    "pair_queue": ("queue_id", "queue_ids"),
}
_PLURAL = {"run_ids", "checkpoint_ids", "checkpoints", "item_ids", "trajectory_ids", "trajectories", "clip_ids",
           "clips", "response_ids", "revision_ids", "prompt_ids", "queue_ids"}
_SUFFIXES = {"_run_id": "runs", "_checkpoint_id": "checkpoints", "_item_id": "items", "_prompt_id": "prompts"}
_REFERENCE = re.compile(r"(run|checkpoint):(\d+)")
_RUN_FOLDER = re.compile(r"(%s)/run-(\d+)(/.*)?" % "|".join(map(re.escape, SUBFOLDERS)))


class RunCopyError(ValueError):
    """A run that cannot be copied as asked; ``str(error)`` says why in one sentence."""


@dataclass(frozen=True)
class SharedIds:
    """The highest id of each table that two projects share (one was copied from the other): references up
    to these name the same rows in both."""

    runs: int = 0
    items: int = 0
    prompts: int = 0
    checkpoints: int = 0
    artifacts: int = 0
    pair_queue: int = 0

    @classmethod
    def of(cls, conn: sqlite3.Connection) -> SharedIds:
        return cls(**{t: int(conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0]) for t in _TABLES})


@dataclass
class RunBundle:
    """A run as data: ``rows[table]`` are the source's rows (column -> value, with their old ids), ``files``
    maps a path relative to the project folder to its bytes (or to the source file, when not inlined)."""

    root: int
    rows: dict[str, list[dict]]
    files: dict[str, bytes | Path] = field(default_factory=dict)
    shared: SharedIds = field(default_factory=SharedIds)
    source_folder: str = ""
    message: str = ""  # a failed run's error in one line (filled by whoever ran it)

    @property
    def status(self) -> str:
        return next(r["status"] for r in self.rows["runs"] if r["id"] == self.root)

    def size(self) -> int:
        """The bytes of the inlined files."""
        return sum(len(v) for v in self.files.values() if isinstance(v, bytes))


# ------------------------------------------------------------------------------------------ export
def export_run(project: Project, run_id: int, *, shared: SharedIds | None = None, inline: bool = False) -> RunBundle:
    """Run ``run_id`` and its child runs as a :class:`RunBundle` (``inline``: the files as bytes, to send)."""
    shared = shared or SharedIds()
    conn = project.conn
    with project.read_snapshot():
        root = conn.execute("SELECT * FROM runs WHERE id = ?", [int(run_id)]).fetchone()
        if root is None:
            raise RunCopyError(f"There is no run {run_id} to copy.")
        runs = [dict(root)]
        frontier = [root["id"]]
        while frontier:
            children = _select(conn, "runs", "parent_run_id", frontier)
            runs += children
            frontier = [c["id"] for c in children]
        live = [r["id"] for r in runs if r["status"] in LIVE_STATUSES]
        if live:
            raise RunCopyError(f"Run {live[0]} is still {next(r['status'] for r in runs if r['id'] == live[0])}; "
                               "copy it when it has finished.")
        ids = [r["id"] for r in runs]
        rows = {"runs": sorted(runs, key=lambda r: r["id"])}
        for table in ("metrics", "samples", "checkpoints", "artifacts", "items"):
            rows[table] = _select(conn, table, "run_id", ids)
        rows["pair_queue"] = [q for q in _select(conn, "pair_queue", "run_id", ids) if q["comparison_id"] is None]
        item_ids = {i["id"] for i in rows["items"]}
        prompt_ids = sorted({i["prompt_id"] for i in rows["items"]
                             if i["prompt_id"] is not None and i["prompt_id"] > shared.prompts})
        rows["prompts"] = _select(conn, "prompts", "id", prompt_ids)
    for item in rows["items"]:
        _check_reference(item["parent_id"], item_ids, shared.items, f"item {item['id']} of run {item['run_id']} "
                         "comes from item {ref}, which another run made")
    for entry in rows["pair_queue"]:
        for side in ("left_id", "right_id"):
            _check_reference(entry[side], item_ids, shared.items, f"a pair that run {entry['run_id']} queued "
                             "shows item {ref}, which another run made")
    return RunBundle(root=int(run_id), rows=rows, files=_run_files(project, rows, inline), shared=shared,
                     source_folder=str(project.folder))


def _select(conn: sqlite3.Connection, table: str, column: str, values: list) -> list[dict]:
    out: list[dict] = []
    for start in range(0, len(values), 500):  # SQLite's limit on bound parameters
        chunk = values[start:start + 500]
        marks = ",".join("?" * len(chunk))
        out += [dict(r) for r in conn.execute(f"SELECT * FROM {table} WHERE {column} IN ({marks}) ORDER BY id", chunk)]
    return out


def _check_reference(ref: int | None, copied: set[int], shared_upto: int, what: str) -> None:
    if ref is not None and ref not in copied and ref > shared_upto:
        raise RunCopyError(what.format(ref=ref) + "; copy that run first, or copy into the project this one "
                           "was made from.")


def _run_files(project: Project, rows: dict[str, list[dict]], inline: bool) -> dict[str, bytes | Path]:
    """The run folders' files and the files its rows name elsewhere (a trajectory's arrays in media/);
    files reached through a link are the target's own (inputs a worker saw) and stay out."""
    folder = project.folder
    paths = [f"{sub}/run-{r['id']:05d}" for r in rows["runs"] for sub in SUBFOLDERS]
    for item in rows["items"]:
        paths += [p for p in (item["data_path"], item["media_path"]) if p]
    paths += [r["path"] for table in ("checkpoints", "artifacts") for r in rows[table] if r["path"]]
    files: dict[str, bytes | Path] = {}
    for rel in paths:
        start = folder / rel
        if _through_link(folder, rel) or not start.exists():
            continue
        found = [start] if start.is_file() else sorted(
            p for p in start.rglob("*") if p.is_file() and not p.is_symlink())
        for path in found:
            key = path.relative_to(folder).as_posix()
            if key not in files:
                files[key] = path.read_bytes() if inline else path
    return files


def _through_link(folder: Path, rel: str) -> bool:
    path = folder
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


# ------------------------------------------------------------------------------------------ import
@dataclass
class _Maps:
    ids: dict[str, dict[int, int]]
    units: list[tuple[str, str]]  # (old path prefix, new path prefix), longest first
    source_folder: str
    target_folder: str

    def ref(self, table: str, value: int) -> int:
        return self.ids[table].get(value, value)

    def path(self, rel: str | None) -> str | None:
        if not rel:
            return rel
        for old, new in self.units:
            if rel == old or rel.startswith(old + "/"):
                return new + rel[len(old):]
        return rel

    def text(self, value: str) -> str:
        match = _REFERENCE.fullmatch(value)
        if match:
            table = "runs" if match.group(1) == "run" else "checkpoints"
            return f"{match.group(1)}:{self.ref(table, int(match.group(2)))}"
        if self.source_folder and value.startswith(self.source_folder + "/"):
            return self.target_folder + "/" + str(self.path(value[len(self.source_folder) + 1:]))
        return str(self.path(value)) if _RUN_FOLDER.match(value) or value in dict(self.units) else value

    def json(self, value: Any, key: str = "") -> Any:
        """``value`` with the ids and paths it holds rewritten (ids by the key that holds them)."""
        if isinstance(value, Mapping):
            return {k: self.json(v, str(k)) for k, v in value.items()}
        table = _table_of(key)
        if isinstance(value, list):
            if table and key in _PLURAL and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return [self.ref(table, v) for v in value]
            return [self.json(v, "" if key in _PLURAL else key) for v in value]
        if isinstance(value, int) and not isinstance(value, bool):
            return self.ref(table, value) if table and key not in _PLURAL else value
        if isinstance(value, str):
            return self.text(value)
        return value

    def json_text(self, text: str | None) -> str | None:
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return json.dumps(self.json(value), sort_keys=True, default=str)


def _table_of(key: str) -> str | None:
    for table, keys in _ID_KEYS.items():
        if key in keys:
            return table
    return next((t for suffix, t in _SUFFIXES.items() if key.endswith(suffix)), None)


def import_run(project: Project, bundle: RunBundle, *, parent_run_id: int | None = None) -> int:
    """Write ``bundle`` into ``project`` under new ids (its root run's parent: ``parent_run_id``); returns
    the root run's new id. One transaction: on any error nothing of it stays, files included. The files are
    written to a staging folder first and only moved into place inside the transaction, so the write lock
    is held for renames, not for writing gigabytes."""
    rows = bundle.rows
    conn = project.conn
    ids: dict[str, dict[int, int]] = {t: {} for t in _TABLES}
    written: list[Path] = []
    made_dirs: list[Path] = []
    staging = _stage(project.folder, bundle)
    try:
        with project.write_transaction():
            for run in rows["runs"]:  # parents first: a child's id is larger than its parent's
                parent = parent_run_id if run["id"] == bundle.root else ids["runs"].get(run["parent_run_id"])
                ids["runs"][run["id"]] = _insert(conn, "runs", run, {"parent_run_id": parent, "result_json": None})
            units = _units(project.folder, bundle, ids["runs"])
            maps = _Maps(ids, units, bundle.source_folder, str(project.folder))
            for prompt in rows["prompts"]:
                ids["prompts"][prompt["id"]] = _insert(conn, "prompts", prompt, {})
            for item in sorted(rows["items"], key=lambda i: i["id"]):
                ids["items"][item["id"]] = _insert(conn, "items", item, {
                    "parent_id": maps.ref("items", item["parent_id"]) if item["parent_id"] is not None else None,
                    "prompt_id": maps.ref("prompts", item["prompt_id"]) if item["prompt_id"] is not None else None,
                    "run_id": maps.ref("runs", item["run_id"]), "data_path": maps.path(item["data_path"]),
                    "media_path": maps.path(item["media_path"])})
            for table in ("checkpoints", "artifacts"):
                for row in rows[table]:
                    extra = {"run_id": maps.ref("runs", row["run_id"]), "path": maps.path(row["path"])}
                    if table == "checkpoints" and row.get("name"):
                        extra["name"] = _free_name(conn, row["name"], maps.ref("runs", row["run_id"]))
                    ids[table][row["id"]] = _insert(conn, table, row, extra)
            for entry in rows["pair_queue"]:
                ids["pair_queue"][entry["id"]] = _insert(conn, "pair_queue", entry, {
                    "left_id": maps.ref("items", entry["left_id"]), "right_id": maps.ref("items", entry["right_id"]),
                    "run_id": maps.ref("runs", entry["run_id"])})
            # JSON last: it may name any of the rows above
            for table, columns in (("runs", ("result_json",)), ("items", ("params_json", "meta_json")),
                                   ("checkpoints", ("meta_json",)), ("artifacts", ("meta_json",)),
                                   ("pair_queue", ("reason_json",))):
                for row in rows[table]:
                    sets = {c: maps.json_text(row.get(c)) for c in columns if row.get(c) is not None}
                    if sets:
                        conn.execute(f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in sets)} WHERE id = ?",
                                     [*sets.values(), ids[table][row["id"]]])
            conn.executemany("INSERT INTO metrics (run_id, step, key, value, wall_time) VALUES (?, ?, ?, ?, ?)",
                             [(ids["runs"][m["run_id"]], m["step"], m["key"], m["value"], m["wall_time"])
                              for m in rows["metrics"]])
            for sample in rows["samples"]:
                _insert(conn, "samples", sample, {"run_id": ids["runs"][sample["run_id"]],
                                                  "payload_json": maps.json_text(sample["payload_json"])})
            _place_files(project.folder, bundle, maps, staging, written, made_dirs)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for folder in reversed(made_dirs):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ids["runs"][bundle.root]


def _stage(target: Path, bundle: RunBundle) -> Path:
    """The bundle's files, written (as ``0``, ``1``, ... in the order of their paths) into a staging folder
    inside the project, on the file system their places are on."""
    (target / "artifacts").mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target / "artifacts"))
    try:
        for index, (_rel, content) in enumerate(sorted(bundle.files.items())):
            if isinstance(content, bytes):
                (staging / str(index)).write_bytes(content)
            else:
                shutil.copyfile(content, staging / str(index))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _insert(conn: sqlite3.Connection, table: str, row: Mapping[str, Any], changes: Mapping[str, Any]) -> int:
    values = {k: v for k, v in row.items() if k != "id"}
    values.update(changes)
    cur = conn.execute(f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                       list(values.values()))
    return int(cur.lastrowid)


def _free_name(conn: sqlite3.Connection, name: str, run_id: int) -> str:
    """A checkpoint's name, made unique in the target (names are unique, case aside)."""
    candidate, n = name, 1
    while conn.execute("SELECT 1 FROM checkpoints WHERE name = ? COLLATE NOCASE", [candidate]).fetchone():
        n += 1
        candidate = f"{name} (run {run_id})" if n == 2 else f"{name} (run {run_id}, {n - 1})"
    return candidate


def _units(target: Path, bundle: RunBundle, run_ids: Mapping[int, int]) -> list[tuple[str, str]]:
    """Where the bundle's files go: each run folder to the new run's folder; any other file or folder a
    row names keeps its path, or gets a free one when the target has that path already."""
    units: dict[str, str] = {}
    for old, new in run_ids.items():
        for sub in SUBFOLDERS:
            units[f"{sub}/run-{old:05d}"] = f"{sub}/run-{new:05d}"
    named = [p for p in (*[i.get(c) for i in bundle.rows["items"] for c in ("data_path", "media_path")],
                         *[r.get("path") for t in ("checkpoints", "artifacts") for r in bundle.rows[t]]) if p]
    taken: set[str] = set(units.values())
    for rel in named:
        if any(rel == u or rel.startswith(u + "/") for u in units):
            continue
        if not any(f == rel or f.startswith(rel + "/") for f in bundle.files):
            continue  # not brought along: a file the target has (an input) or that is gone
        new = rel
        while (target / new).exists() or new in taken:
            stem, dot, suffix = Path(new).name.partition(".")
            new = (Path(new).parent / f"{stem}-copy{dot}{suffix}").as_posix()
        units[rel] = new
        taken.add(new)
    return sorted(units.items(), key=lambda u: -len(u[0]))


def _place_files(target: Path, bundle: RunBundle, maps: _Maps, staging: Path, placed: list[Path],
                 made_dirs: list[Path]) -> None:
    run_map = maps.ids["runs"]
    for index, rel in enumerate(sorted(bundle.files)):
        dest = target / str(maps.path(rel))  # a free path (_units), or the new run's own folder
        top = dest.parent
        while not top.parent.exists():
            top = top.parent
        if not top.exists():
            made_dirs.append(top)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged = staging / str(index)
        name = Path(rel).name
        if name == CARD_FILE:
            staged.write_bytes(_fix_card(staged.read_bytes(), run_map))
        elif name == STATE_FILE and "resume" in Path(rel).parts:
            staged.write_bytes(_fix_state(staged.read_bytes(), maps))
        shutil.move(staged, dest)  # a rename (another file system: a copy)
        placed.append(dest)


def _fix_card(data: bytes, run_map: Mapping[int, int]) -> bytes:
    """A model card names its run in the header (``run_id: N``) and the text (``(run N``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data

    def swap(match: re.Match) -> str:
        return match.group(1) + str(run_map.get(int(match.group(2)), match.group(2)))

    text = re.sub(r"(\n\s*run_id: )(\d+)(?=\n)", swap, text)
    text = re.sub(r"(\(run )(\d+)(?=[ )])", swap, text)
    return text.encode("utf-8")


def _fix_state(data: bytes, maps: _Maps) -> bytes:
    try:
        state = json.loads(data)
    except ValueError:
        return data
    return json.dumps(maps.json(state)).encode("utf-8")


def copy_run(source: Project, run_id: int, target: Project, *, parent_run_id: int | None = None,
             shared: SharedIds | None = None) -> int:
    """Copy run ``run_id`` of ``source`` (with its child runs) into ``target``; returns its new id there."""
    return import_run(target, export_run(source, run_id, shared=shared), parent_run_id=parent_run_id)
