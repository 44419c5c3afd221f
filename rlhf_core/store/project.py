"""A workbench project: one folder with one SQLite database plus media/checkpoint/artifact folders.

    name.rlhf/
        project.db        every label, item, run and metric (WAL mode, foreign keys on)
        media/            rendered clips, thumbnails
        checkpoints/      model weights written by runs
        artifacts/        exports and anything else a run produces
        locks/            one lock file per queued or running run, held by the process working on it

Paths inside the database are relative to the folder, so the folder can be zipped and opened on
another machine. A ``Project`` wraps ONE connection and must be used from the thread that opened
it; a worker thread opens its own with ``Project.open(path, check=False)``.

Opening never writes to something that is not a valid project: the file is checked through a
read-only SQLite connection (required tables, schema version, ``quick_check`` up to
``QUICK_CHECK_MAX_BYTES``) before the read-write connection is made. Nothing outside SQLite ever
opens the database or its side files (see ``_inspect``). A database from a newer schema is refused and left untouched;
one from an older schema is backed up next to itself and upgraded.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlite_utils import Database

from rlhf_core import __version__
from rlhf_core.config import upgrade_settings
from rlhf_core.metrics import current_key
from rlhf_core.store import run_leases
from rlhf_core.store.errors import (
    INTERRUPTED_ERROR,
    CorruptProjectError,
    NewerSchemaError,
    NotAProjectError,
    ProjectError,
    ReadOnlyProjectError,
    friendly_db_error,
)
from rlhf_core.store.migrations import KNOWN_MIGRATIONS, MIGRATION_SET, SCHEMA_VERSION, migrations
from rlhf_core.store.ranking import expand_ranking, normalise_groups

DB_NAME = "project.db"
SUBFOLDERS = ("media", "checkpoints", "artifacts")
LIVE_STATUSES = ("queued", "running")  # a run in one of these has a lease while a process works on it
PROJECT_SUFFIX = ".rlhf"
OUTCOMES = ("left", "right", "tie", "both_bad", "skip")
SOURCES = ("human", "synthetic", "ai", "auto")
RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
# quick_check reads the whole file (~1.6 s a GB here): on open only up to this size; larger projects
# are checked in the background (Project.integrity_problems), and always before a schema upgrade
QUICK_CHECK_MAX_BYTES = 128 * 1024 * 1024
_REQUIRED_TABLES = {"project", "runs", "items", "comparisons", "metrics"}


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string (the format of every ``*_at`` column)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def app_version() -> str:
    return __version__


def _dumps(value: Any) -> str:
    return json.dumps(value if value is not None else {}, sort_keys=True, default=str)


def _db_path_for(path: Path) -> Path:
    return path / DB_NAME if path.suffix != ".db" else path


class Project:
    """An open project. Create with :meth:`create` or :meth:`open`; close with :meth:`close`."""

    def __init__(self, folder: Path, conn: sqlite3.Connection):
        self.folder = folder
        self.db_path = folder / DB_NAME
        self.conn = conn
        self.db = Database(conn)
        self._leases: set[int] = set()  # runs whose lease this connection took (released on finish/close)

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: str | os.PathLike, name: str | None = None) -> Project:
        """Create a new project folder at ``path`` (which must not exist or be an empty folder)."""
        folder = Path(path).expanduser().absolute()
        if folder.exists():
            if not folder.is_dir():
                raise ProjectError(f"Cannot create a project at {folder}: a file with that name exists.")
            if any(folder.iterdir()):
                if (folder / DB_NAME).exists():
                    raise ProjectError(f"A project already exists at {folder}; open it instead.")
                raise ProjectError(
                    f"Cannot create a project at {folder}: the folder is not empty. "
                    "Choose a new name or an empty folder."
                )
        created_folder = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for sub in SUBFOLDERS:
                (folder / sub).mkdir(exist_ok=True)
        except OSError as exc:
            _remove_new_project(folder, created_folder)
            raise friendly_db_error(exc, folder.parent) or ProjectError(
                f"Cannot create a project at {folder}: {exc.strerror or exc}."
            ) from exc
        try:
            conn = cls._connect(folder / DB_NAME)
            project = cls(folder, conn)
            try:
                with project.db.atomic():
                    migrations.apply(project.db)
                    project._set_user_version()
                    project.db.execute(
                        "INSERT INTO project (id, name, created_at, created_by_version) VALUES (1, ?, ?, ?)",
                        [name or folder.name.removesuffix(PROJECT_SUFFIX), utc_now(), app_version()],
                    )
            except BaseException:
                project.close()
                raise
        except (sqlite3.Error, OSError, ProjectError) as exc:
            _remove_new_project(folder, created_folder)  # a half-made project would look like a real one
            raise friendly_db_error(exc, folder.parent) or ProjectError(
                f"Cannot create a project at {folder}: {exc}."
            ) from exc
        return project

    @classmethod
    def open(cls, path: str | os.PathLike, *, check: bool = True, upgrade: bool = True) -> Project:
        """Open an existing project folder (or its ``project.db``).

        ``check`` runs SQLite's ``quick_check`` first (the GUI does; worker threads that reopen a
        project the GUI already checked pass ``False``). Raises :class:`ProjectError` subclasses
        with a message for a person; nothing is written unless the project is valid.
        """
        given = Path(path).expanduser().absolute()
        if not given.exists():
            raise NotAProjectError(f"No project at {given}: the path does not exist.")
        db_path = _db_path_for(given) if given.is_dir() else given
        folder = db_path.parent
        if db_path.exists() and not db_path.is_file():  # a folder, a pipe or a device: never opened
            raise NotAProjectError(f"{given} is not a workbench project: {db_path} is not a database file.")
        if not db_path.is_file():
            raise NotAProjectError(
                f"{given} is not a workbench project (it has no {DB_NAME}). "
                "Use File → New Project to create one."
            )
        applied = cls._inspect(db_path, check=check)
        conn = cls._connect(db_path)
        project = cls(folder, conn)
        if len(applied) < SCHEMA_VERSION:
            if not upgrade:
                conn.close()
                raise ProjectError(f"{db_path} uses an older schema and upgrading was not allowed.")
            try:
                project._backup(f"{DB_NAME}.schema-v{len(applied)}.bak")
                migrations.apply(project.db)
                project._set_user_version()
            except (sqlite3.Error, OSError) as exc:
                project.close()
                raise friendly_db_error(exc, folder) or ProjectError(
                    f"Cannot upgrade {db_path}: {exc}. It was left as it was."
                ) from exc
        try:
            for sub in SUBFOLDERS:
                (folder / sub).mkdir(exist_ok=True)
        except OSError as exc:
            project.close()
            raise friendly_db_error(exc, folder) or ProjectError(f"Cannot open {folder}: {exc}.") from exc
        return project

    @staticmethod
    def _connect(db_path: Path) -> sqlite3.Connection:
        if not os.access(db_path.parent, os.W_OK) or (db_path.exists() and not os.access(db_path, os.W_OK)):
            raise ReadOnlyProjectError(
                f"The project at {db_path.parent} is read-only (a read-only disk or folder): the workbench "
                "needs to write to it. Copy it to a writable folder, or change its permissions."
            )
        conn = sqlite3.connect(db_path, timeout=30.0, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across app crashes
            conn.execute("PRAGMA busy_timeout = 30000")
        except sqlite3.Error as exc:
            conn.close()
            raise friendly_db_error(exc, db_path.parent) or ProjectError(
                f"Cannot open {db_path}: {exc}."
            ) from exc
        return conn

    @staticmethod
    def _inspect(db_path: Path, *, check: bool) -> list[str]:
        """Validate a database file without writing to it; returns its applied migrations.

        Everything goes through SQLite, never a plain ``open()``: on Linux, closing any descriptor of
        the file drops every POSIX lock this process holds on it, SQLite's included, and another
        process would then delete the live ``-wal``/``-shm`` of a connection still writing.
        With no ``-wal`` the database file holds every committed row, so it is read ``immutable``
        (no locks, no side files created); otherwise through an ordinary read-only connection.
        """
        if not os.access(db_path, os.R_OK):
            raise ProjectError(f"Cannot read {db_path}: permission denied.")
        wal = db_path.with_name(db_path.name + "-wal")
        immutable = not wal.exists()
        try:
            return Project._inspect_readonly(db_path, check=check, immutable=immutable)
        except CorruptProjectError:
            if not immutable:
                raise
            # a writer may have started between the look for -wal and the read: read again, with locks
            if not wal.exists():
                raise
            return Project._inspect_readonly(db_path, check=check, immutable=False)

    @staticmethod
    def _inspect_readonly(db_path: Path, *, check: bool, immutable: bool) -> list[str]:
        uri = f"file:{quote(os.fsencode(db_path))}?mode=ro" + ("&immutable=1" if immutable else "")
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=30.0)
        except sqlite3.Error as exc:
            raise friendly_db_error(exc, db_path.parent) or CorruptProjectError(
                f"Cannot open {db_path}: {exc}. It was left untouched.") from exc
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "_sqlite_migrations" not in tables or not _REQUIRED_TABLES <= tables:
                raise NotAProjectError(
                    f"{db_path} is an SQLite database but not a workbench project. It was left untouched."
                )
            names = _applied_migrations(conn, db_path)
            if len(names) < SCHEMA_VERSION or (check and os.path.getsize(db_path) <= QUICK_CHECK_MAX_BYTES):
                _raise_if_damaged(conn, db_path)
            return names
        except sqlite3.DatabaseError as exc:
            condition = friendly_db_error(exc, db_path.parent)  # a full or read-only disk is not damage
            if condition is not None:
                raise condition from exc
            if "not a database" in str(exc) or "encrypted" in str(exc):
                raise CorruptProjectError(
                    f"{db_path} is not an SQLite database (it may be damaged or a different file). "
                    "It was left untouched."
                ) from exc
            raise CorruptProjectError(
                f"{db_path} is damaged or not a database ({exc}). It was left untouched."
            ) from exc
        finally:
            conn.close()

    def integrity_problems(self) -> list[str]:
        """SQLite's ``quick_check`` (see :func:`integrity_problems`): [] when the file is sound."""
        return integrity_problems(self.db_path)

    def _backup(self, name: str) -> Path:
        target = self.folder / name
        dest = sqlite3.connect(target)
        try:
            self.conn.backup(dest)
        finally:
            dest.close()
        return target

    def _set_user_version(self) -> None:
        self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        for run_id in list(self._leases):  # runs this connection took and never finished: no longer alive
            run_leases.release(self.folder, run_id)
        self._leases.clear()
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    def rollback(self) -> None:
        """End a transaction a failed write left open (nothing of it is kept)."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def read_snapshot(self):
        """Reads inside the block see one snapshot of the database (a deferred transaction, ended after)."""
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ basics
    @property
    def name(self) -> str:
        row = self.conn.execute("SELECT name FROM project WHERE id = 1").fetchone()
        return row[0] if row else self.folder.name.removesuffix(PROJECT_SUFFIX)  # record removed by hand

    @property
    def schema_version(self) -> int:
        return len(migrations.applied(self.db))

    def relpath(self, path: str | os.PathLike) -> str:
        """A path inside the project folder, as stored in the database (relative, POSIX)."""
        p = Path(path)
        if p.is_absolute():
            p = p.relative_to(self.folder)
        return p.as_posix()

    def abspath(self, stored: str) -> Path:
        return self.folder / stored

    def counts(self) -> dict[str, int]:
        """Row counts for the overview page (soft-deleted rows excluded)."""
        q = {
            "trajectories": "SELECT count(*) FROM items WHERE kind='trajectory' AND deleted_at IS NULL",
            "clips": "SELECT count(*) FROM items WHERE kind='clip' AND deleted_at IS NULL",
            "responses": "SELECT count(*) FROM items WHERE kind='response' AND deleted_at IS NULL",
            "prompts": "SELECT count(*) FROM prompts WHERE deleted_at IS NULL",
            "comparisons": "SELECT count(*) FROM comparisons WHERE deleted_at IS NULL",
            "rankings": "SELECT count(*) FROM rankings WHERE deleted_at IS NULL",
            # the labelling views' "waiting": open entries of two live items (waiting_counts)
            "queued_pairs": "SELECT count(*) FROM pair_queue q JOIN items a ON a.id = q.left_id JOIN items b "
                            "ON b.id = q.right_id WHERE q.comparison_id IS NULL AND a.kind = b.kind "
                            "AND a.deleted_at IS NULL AND b.deleted_at IS NULL",
            "labellers": "SELECT count(*) FROM labellers",
            "runs": "SELECT count(*) FROM runs",
            "checkpoints": "SELECT count(*) FROM checkpoints",
        }
        return {k: self.conn.execute(sql).fetchone()[0] for k, sql in q.items()}

    # ------------------------------------------------------------------ labellers
    def ensure_labeller(self, name: str, kind: str = "human", params: Mapping | None = None) -> int:
        name = name.strip()
        if not name:
            raise ValueError("a labeller needs a name")
        row = self.conn.execute("SELECT id FROM labellers WHERE name = ?", [name]).fetchone()
        if row:
            return row[0]
        cur = self.conn.execute(
            "INSERT INTO labellers (name, kind, params_json, created_at) VALUES (?, ?, ?, ?)",
            [name, kind, _dumps(params), utc_now()],
        )
        return cur.lastrowid

    def labellers(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM labellers ORDER BY id")]

    # ------------------------------------------------------------------ runs
    def create_run(
        self,
        kind: str,
        config: Mapping[str, Any] | None = None,
        *,
        name: str = "",
        status: str = "queued",
        parent_run_id: int | None = None,
    ) -> int:
        # the lease is taken before the row is committed, so no other process ever sees a queued or
        # running run without it (and marks it interrupted)
        with self.db.atomic():
            cur = self.conn.execute(
                "INSERT INTO runs (kind, name, config_json, status, created_at, parent_run_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [kind, name, _dumps(config), status, utc_now(), parent_run_id],
            )
            run_id = cur.lastrowid
            if status in LIVE_STATUSES:
                self._hold(run_id)
        return run_id

    def _hold(self, run_id: int) -> None:
        if run_leases.hold(self.folder, run_id):
            self._leases.add(int(run_id))

    def start_run(self, run_id: int) -> None:
        self._hold(run_id)
        self.conn.execute(
            "UPDATE runs SET status='running', started_at=? WHERE id=?", [utc_now(), run_id]
        )

    def finish_run(
        self, run_id: int, status: str, *, error: str | None = None, result: Any = None
    ) -> None:
        if status not in ("completed", "failed", "cancelled"):
            raise ValueError(f"not a final run status: {status!r}")
        self.conn.execute(
            "UPDATE runs SET status=?, finished_at=?, error=?, result_json=? WHERE id=?",
            [status, utc_now(), error, None if result is None else _dumps(result), run_id],
        )
        run_leases.release(self.folder, run_id)  # whichever connection of this process took it
        self._leases.discard(int(run_id))

    def get_run(self, run_id: int) -> dict | None:
        row = self.conn.execute("SELECT * FROM runs WHERE id=?", [run_id]).fetchone()
        return _run_row(row) if row else None

    def runs(self, kind: str | None = None) -> list[dict]:
        if kind is None:
            rows = self.conn.execute("SELECT * FROM runs ORDER BY id")
        else:
            rows = self.conn.execute("SELECT * FROM runs WHERE kind=? ORDER BY id", [kind])
        return [_run_row(r) for r in rows]

    def mark_interrupted_runs(self) -> int:
        """Runs left 'queued'/'running' by a crash or kill are marked failed; returns how many.

        A run whose lease (:mod:`rlhf_core.store.run_leases`) is still held, by this process or another
        one (``python -m rlhf_core`` training in this project, a second app), is alive and left alone."""
        marked = 0
        rows = self.conn.execute("SELECT id FROM runs WHERE status IN ('queued', 'running') ORDER BY id").fetchall()
        for (run_id,) in rows:
            if run_leases.is_alive(self.folder, run_id):
                continue
            cur = self.conn.execute(  # the status test again: the run may have finished meanwhile
                "UPDATE runs SET status='failed', finished_at=?, error=COALESCE(error, ?) "
                "WHERE id=? AND status IN ('queued', 'running')",
                [utc_now(), INTERRUPTED_ERROR, run_id],
            )
            marked += cur.rowcount
            run_leases.lock_path(self.folder, run_id).unlink(missing_ok=True)  # the dead process's file
        return marked

    # ------------------------------------------------------------------ metrics & samples
    def log_metrics(
        self, run_id: int, step: int, values: Mapping[str, float], wall_time: float | None = None
    ) -> None:
        self.log_metric_rows(run_id, [(step, values, wall_time)])

    def log_metric_rows(
        self, run_id: int, rows: Iterable[tuple[int, Mapping[str, float], float | None]]
    ) -> None:
        """Write many metric rows in one transaction (what the job's metric sink flushes)."""
        now = time.time()
        flat = [
            (run_id, int(step), key, None if v is None else float(v), wall if wall is not None else now)
            for step, values, wall in rows
            for key, v in values.items()
        ]
        if not flat:
            return
        with self.db.atomic():
            self.conn.executemany(
                "INSERT INTO metrics (run_id, step, key, value, wall_time) VALUES (?, ?, ?, ?, ?)",
                flat,
            )

    def metric_keys(self, run_id: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT key FROM metrics WHERE run_id=? ORDER BY key", [run_id]
        )
        return sorted({current_key(r[0]) for r in rows})

    def metrics(self, run_id: int) -> dict[str, tuple[list[int], list[float]]]:
        """All metrics of a run: ``{key: (steps, values)}`` in step order (renamed keys under their
        current name, :data:`rlhf_core.metrics.RENAMED_KEYS`)."""
        out: dict[str, tuple[list[int], list[float]]] = {}
        rows = self.conn.execute(
            "SELECT key, step, value FROM metrics WHERE run_id=? ORDER BY key, step, id", [run_id]
        )
        for key, step, value in rows:
            steps, values = out.setdefault(current_key(key), ([], []))
            steps.append(step)
            values.append(float("nan") if value is None else value)
        return out

    def discard_after(self, run_id: int, step: int) -> tuple[int, int]:
        """Delete a run's metrics and samples logged after ``step`` (a resumed run logs them again);
        returns (metric rows, samples) deleted."""
        with self.db.atomic():
            metrics = self.conn.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", [run_id, step]).rowcount
            samples = self.conn.execute("DELETE FROM samples WHERE run_id = ? AND step > ?", [run_id, step]).rowcount
        return metrics, samples

    def add_sample(self, run_id: int, kind: str, payload: Any, step: int | None = None) -> int:
        cur = self.conn.execute(
            "INSERT INTO samples (run_id, step, kind, payload_json, created_at) VALUES (?, ?, ?, ?, ?)",
            [run_id, step, kind, _dumps(payload), utc_now()],
        )
        return cur.lastrowid

    def live_runs(self) -> list[dict]:
        """Runs whose status is queued or running (alive or interrupted: see :meth:`mark_interrupted_runs`)."""
        rows = self.conn.execute("SELECT * FROM runs WHERE status IN ('queued', 'running') ORDER BY id")
        return [_run_row(r) for r in rows]

    def metric_rows_since(self, run_ids: Iterable[int], after_id: int = 0) -> dict[int, list]:
        """Metric rows of ``run_ids`` stored after row ``after_id``, for following a run that another
        process writes: ``{run_id: [(step, {key: value}), ...]}``, one entry per step in the order
        written (a NULL value, e.g. a NaN, reads as NaN)."""
        ids = [int(r) for r in run_ids]
        out: dict[int, list] = {}
        if not ids:
            return out
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"SELECT run_id, step, key, value FROM metrics WHERE id > ? AND run_id IN ({marks}) ORDER BY id",
            [int(after_id), *ids],
        )
        for run_id, step, key, value in rows:
            key = current_key(key)
            batch = out.setdefault(run_id, [])
            if not batch or batch[-1][0] != step or key in batch[-1][1]:
                batch.append((step, {}))
            batch[-1][1][key] = float("nan") if value is None else float(value)
        return out

    def samples_since(self, run_ids: Iterable[int], after_id: int = 0) -> list[dict]:
        """Samples of ``run_ids`` stored after sample ``after_id``, oldest first (with ``payload``)."""
        ids = [int(r) for r in run_ids]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(f"SELECT * FROM samples WHERE id > ? AND run_id IN ({marks}) ORDER BY id",
                                 [int(after_id), *ids])
        return [{**dict(r), "payload": json.loads(r["payload_json"])} for r in rows]

    def newest_row_ids(self) -> tuple[int, int]:
        """The newest metric and sample row ids (0 when none): the ``after_id`` from which
        :meth:`metric_rows_since` and :meth:`samples_since` read only what is written later."""
        metric = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM metrics").fetchone()[0]
        sample = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()[0]
        return int(metric), int(sample)

    def samples(self, run_id: int, kind: str | None = None) -> list[dict]:
        sql = "SELECT * FROM samples WHERE run_id=?" + (" AND kind=?" if kind else "") + " ORDER BY id"
        rows = self.conn.execute(sql, [run_id, kind] if kind else [run_id])
        return [{**dict(r), "payload": json.loads(r["payload_json"])} for r in rows]

    # ------------------------------------------------------------------ prompts & items
    def add_prompt(
        self,
        text: str,
        *,
        category: str = "",
        tags: Sequence[str] = (),
        source: str = "user",
        gold_answer: str | None = None,
        meta: Mapping | None = None,
    ) -> int:
        if not text.strip():
            raise ValueError("a prompt cannot be empty")
        cur = self.conn.execute(
            "INSERT INTO prompts (text, category, tags_json, source, gold_answer, meta_json, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [text, category, json.dumps(list(tags)), source, gold_answer, _dumps(meta), utc_now()],
        )
        return cur.lastrowid

    def prompt_text(self, prompt_id: int | None) -> str:
        """A prompt's text ("" when there is no such prompt)."""
        row = self.conn.execute("SELECT text FROM prompts WHERE id=?", [prompt_id]).fetchone()
        return row[0] if row else ""

    def prompt_texts_of_items(self, item_ids: Iterable[int]) -> dict[int, str]:
        """``{item id: its prompt's text}`` for the items (responses) that have a prompt."""
        ids = list(item_ids)
        if not ids:
            return {}
        rows = self.conn.execute(
            f"SELECT i.id, p.text FROM items i JOIN prompts p ON p.id = i.prompt_id "
            f"WHERE i.id IN ({', '.join('?' for _ in ids)})", ids)
        return {r[0]: r[1] for r in rows}

    def prompts(self) -> list[dict]:
        """Live prompts by id: ``id``, ``text``, ``category``, ``source``."""
        rows = self.conn.execute(
            "SELECT id, text, category, source FROM prompts WHERE deleted_at IS NULL ORDER BY id")
        return [dict(r) for r in rows]

    def prompts_with_responses(self, min_count: int = 2) -> list[dict]:
        """Live prompts with at least ``min_count`` live responses, by id: ``id``, ``text``, ``k`` (responses)."""
        rows = self.conn.execute(
            "SELECT p.id, p.text, count(i.id) AS k FROM prompts p JOIN items i ON i.prompt_id = p.id "
            "WHERE i.kind = 'response' AND i.deleted_at IS NULL AND p.deleted_at IS NULL "
            "GROUP BY p.id HAVING k >= ? ORDER BY p.id", [min_count])
        return [dict(r) for r in rows]

    def response_ids(self, prompt_id: int) -> list[int]:
        """Live responses to a prompt, by id."""
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM items WHERE kind='response' AND prompt_id=? AND deleted_at IS NULL ORDER BY id",
            [prompt_id])]

    def add_item(self, kind: str, **fields: Any) -> int:
        """Insert an item (trajectory, clip or response). JSON fields accept dicts."""
        row = dict(fields)
        for key in ("params", "meta"):
            if key in row:
                row[f"{key}_json"] = _dumps(row.pop(key))
        for key in ("data_path", "media_path"):
            if row.get(key):
                row[key] = self.relpath(row[key])
        row["kind"] = kind
        row["created_at"] = utc_now()
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            cur = self.conn.execute(f"INSERT INTO items ({cols}) VALUES ({marks})", list(row.values()))
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"invalid {kind}: {exc}") from exc
        return cur.lastrowid

    def get_item(self, item_id: int) -> dict | None:
        row = self.conn.execute("SELECT * FROM items WHERE id=?", [item_id]).fetchone()
        return dict(row) if row else None

    def item_is_live(self, item_id: int) -> bool:
        row = self.conn.execute("SELECT deleted_at FROM items WHERE id=?", [item_id]).fetchone()
        return row is not None and row[0] is None

    def correction_count(self) -> int:
        """Live responses written as corrections."""
        return self.conn.execute("SELECT count(*) FROM items WHERE kind='response' AND source='correction' "
                                 "AND deleted_at IS NULL").fetchone()[0]

    def items(self, kind: str | None = None, *, include_deleted: bool = False) -> list[dict]:
        where, args = [], []
        if kind:
            where.append("kind=?")
            args.append(kind)
        if not include_deleted:
            where.append("deleted_at IS NULL")
        sql = "SELECT * FROM items" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [dict(r) for r in self.conn.execute(sql, args)]

    def run_items(self, run_id: int, kind: str) -> list[dict]:
        """The live items of ``kind`` that run ``run_id`` made, oldest first."""
        rows = self.conn.execute("SELECT * FROM items WHERE run_id=? AND kind=? AND deleted_at IS NULL ORDER BY id",
                                 [run_id, kind])
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ comparisons
    def add_comparison(
        self,
        left_id: int,
        right_id: int,
        outcome: str,
        *,
        labeller_id: int | None = None,
        source: str = "human",
        response_ms: int | None = None,
        ranking_id: int | None = None,
        supersedes_id: int | None = None,
        principle: str | None = None,
        note: str = "",
        meta: Mapping | None = None,
        queue_id: int | None = None,
    ) -> int:
        """Record one label. It is committed before this returns (nothing is ever buffered)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}; got {outcome!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
        if left_id == right_id:
            raise ValueError("an item cannot be compared with itself")
        with self.db.atomic():
            try:
                cur = self.conn.execute(
                    "INSERT INTO comparisons (left_id, right_id, outcome, labeller_id, source, "
                    "response_ms, ranking_id, supersedes_id, principle, note, meta_json, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [left_id, right_id, outcome, labeller_id, source,
                     None if response_ms is None else int(response_ms), ranking_id, supersedes_id,
                     principle, note, _dumps(meta), utc_now()],
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"cannot record this comparison: {exc}") from exc
            cid = cur.lastrowid
            if queue_id is not None:
                self.conn.execute("UPDATE pair_queue SET comparison_id=? WHERE id=?", [cid, queue_id])
        return cid

    def claim_pair(
        self,
        queue_id: int,
        outcome: str,
        *,
        labeller_id: int | None = None,
        source: str = "human",
        response_ms: int | None = None,
        meta: Mapping | None = None,
    ) -> int | None:
        """Label queue entry ``queue_id`` only if nobody has: the label and the claim commit in one
        transaction under the write lock. Returns the comparison id, or None (nothing written) when
        the entry was answered meanwhile (by another process or connection) or does not exist."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT left_id, right_id FROM pair_queue WHERE id=?", [queue_id]).fetchone()
            cid = None
            if row is not None:
                cid = self.add_comparison(row[0], row[1], outcome, labeller_id=labeller_id, source=source,
                                          response_ms=response_ms, meta=meta)
                taken = conn.execute("UPDATE pair_queue SET comparison_id=? WHERE id=? AND comparison_id IS NULL",
                                     [cid, queue_id]).rowcount
                if taken != 1:
                    cid = None
            conn.execute("COMMIT" if cid is not None else "ROLLBACK")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return cid

    def undo_comparison(self, comparison_id: int) -> None:
        """Soft-delete a label (the row stays, with ``deleted_at`` set) and reopen its queue entry."""
        with self.db.atomic():
            self.conn.execute(
                "UPDATE comparisons SET deleted_at=? WHERE id=? AND deleted_at IS NULL",
                [utc_now(), comparison_id],
            )
            self.conn.execute(
                "UPDATE pair_queue SET comparison_id=NULL WHERE comparison_id=?", [comparison_id]
            )

    def edit_comparison(self, comparison_id: int, outcome: str, *, response_ms: int | None = None) -> int:
        """Change a label: a new row supersedes the old one, which is soft-deleted."""
        old = self.conn.execute("SELECT * FROM comparisons WHERE id=?", [comparison_id]).fetchone()
        if old is None:
            raise ValueError(f"no comparison {comparison_id}")
        with self.db.atomic():
            new_id = self.add_comparison(
                old["left_id"], old["right_id"], outcome,
                labeller_id=old["labeller_id"], source=old["source"], response_ms=response_ms,
                ranking_id=old["ranking_id"], supersedes_id=comparison_id,
                principle=old["principle"], note=old["note"], meta=json.loads(old["meta_json"]),
            )
            self.conn.execute(
                "UPDATE comparisons SET deleted_at=? WHERE id=? AND deleted_at IS NULL",
                [utc_now(), comparison_id],
            )
            self.conn.execute(
                "UPDATE pair_queue SET comparison_id=? WHERE comparison_id=?", [new_id, comparison_id]
            )
        return new_id

    def comparisons(self, *, include_deleted: bool = False, source: str | None = None) -> list[dict]:
        where, args = [], []
        if not include_deleted:
            where.append("deleted_at IS NULL")
        if source:
            where.append("source=?")
            args.append(source)
        sql = "SELECT * FROM comparisons" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [dict(r) for r in self.conn.execute(sql, args)]

    def comparison_is_live(self, comparison_id: int) -> bool:
        """The label exists and is neither undone nor superseded."""
        row = self.conn.execute("SELECT deleted_at FROM comparisons WHERE id=?", [comparison_id]).fetchone()
        return row is not None and row[0] is None

    def comparison_count(self, kind: str) -> int:
        """Live labels whose items are of ``kind`` (queued, ranked or given directly)."""
        return self.conn.execute(
            "SELECT count(*) FROM comparisons c JOIN items i ON i.id = c.left_id "
            "WHERE c.deleted_at IS NULL AND i.kind = ?", [kind]).fetchone()[0]

    def reviewed_ai_count(self) -> int:
        """Live human labels given while reviewing an AI's label."""
        return self.conn.execute(
            "SELECT count(*) FROM comparisons WHERE deleted_at IS NULL AND source = 'human' "
            "AND json_extract(meta_json, '$.reviewed_ai') IS NOT NULL").fetchone()[0]

    def recent_labels(self, kind: str, limit: int, *, with_rankings: bool = True) -> list[dict]:
        """The newest live labels of items of ``kind``, newest first: each comparison row plus
        ``labeller`` (name), ``ra``/``rb`` (the items' true returns), ``correction`` (item id or None)
        and ``queued`` (1 if the label answers a queue entry, else 0)."""
        rows = self.conn.execute(
            "SELECT c.*, l.name AS labeller, a.true_return AS ra, b.true_return AS rb, "
            "json_extract(c.meta_json, '$.correction') AS correction, "
            "EXISTS (SELECT 1 FROM pair_queue q WHERE q.comparison_id = c.id) AS queued FROM comparisons c "
            "LEFT JOIN labellers l ON l.id = c.labeller_id JOIN items a ON a.id = c.left_id "
            "JOIN items b ON b.id = c.right_id WHERE c.deleted_at IS NULL AND a.kind = ? "
            + ("" if with_rankings else "AND c.ranking_id IS NULL ")
            + "ORDER BY c.id DESC LIMIT ?", [kind, limit])
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------ rankings
    def add_ranking(
        self,
        groups: Sequence[Sequence[int]],
        *,
        labeller_id: int | None = None,
        source: str = "human",
        prompt_id: int | None = None,
        response_ms: int | None = None,
        note: str = "",
    ) -> int:
        """Store a ranking (groups worst -> best, ties share a group) and its expanded pairs."""
        groups = normalise_groups(groups)
        with self.db.atomic():
            cur = self.conn.execute(
                "INSERT INTO rankings (labeller_id, source, prompt_id, response_ms, note, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [labeller_id, source, prompt_id, response_ms, note, utc_now()],
            )
            rid = cur.lastrowid
            self.conn.executemany(
                "INSERT INTO ranking_entries (ranking_id, item_id, position) VALUES (?, ?, ?)",
                [(rid, item, pos) for pos, group in enumerate(groups) for item in group],
            )
            for left, right, outcome in expand_ranking(groups):
                self.add_comparison(
                    left, right, outcome, labeller_id=labeller_id, source=source, ranking_id=rid
                )
        return rid

    def ranking_groups(self, ranking_id: int) -> list[list[int]]:
        rows = self.conn.execute(
            "SELECT item_id, position FROM ranking_entries WHERE ranking_id=? ORDER BY position, item_id",
            [ranking_id],
        )
        groups: dict[int, list[int]] = {}
        for item, pos in rows:
            groups.setdefault(pos, []).append(item)
        return [groups[p] for p in sorted(groups)]

    def undo_ranking(self, ranking_id: int) -> None:
        now = utc_now()
        with self.db.atomic():
            self.conn.execute("UPDATE rankings SET deleted_at=? WHERE id=? AND deleted_at IS NULL", [now, ranking_id])
            self.conn.execute(
                "UPDATE comparisons SET deleted_at=? WHERE ranking_id=? AND deleted_at IS NULL", [now, ranking_id]
            )

    def recent_rankings(self, limit: int = 20, *, prompts_only: bool = False) -> list[dict]:
        """Live rankings, newest first: ``id``, ``created_at``, ``prompt_id``, ``labeller`` (name),
        ``k`` (items ranked) and ``groups`` (worst -> best). ``prompts_only``: rankings of responses."""
        rows = self.conn.execute(
            "SELECT r.id, r.created_at, r.prompt_id, l.name AS labeller, count(e.item_id) AS k FROM rankings r "
            "LEFT JOIN labellers l ON l.id = r.labeller_id JOIN ranking_entries e ON e.ranking_id = r.id "
            "WHERE r.deleted_at IS NULL " + ("AND r.prompt_id IS NOT NULL " if prompts_only else "")
            + "GROUP BY r.id ORDER BY r.id DESC LIMIT ?", [limit]).fetchall()
        return [{**dict(r), "groups": self.ranking_groups(r["id"])} for r in rows]

    def ranked_prompt_ids(self) -> set[int]:
        """Prompts with a live ranking of their responses."""
        return {r[0] for r in self.conn.execute(
            "SELECT DISTINCT prompt_id FROM rankings WHERE deleted_at IS NULL AND prompt_id IS NOT NULL")}

    # ------------------------------------------------------------------ pair queue
    def enqueue_pair(
        self,
        left_id: int,
        right_id: int,
        *,
        priority: float = 0.0,
        reason: Mapping | None = None,
        run_id: int | None = None,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO pair_queue (left_id, right_id, run_id, priority, reason_json, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [left_id, right_id, run_id, float(priority), _dumps(reason), utc_now()],
        )
        return cur.lastrowid

    def pending_pairs(self, limit: int = 10) -> list[dict]:
        rows = self.conn.execute(
            "SELECT * FROM pair_queue WHERE comparison_id IS NULL ORDER BY priority DESC, id LIMIT ?",
            [limit],
        )
        return [dict(r) for r in rows]

    # The queue holds pairs of every item kind: a labelling view reads only its own kind
    # ("clip" or "response") and skips pairs whose items were deleted.
    _OPEN_OF_KIND = ("FROM pair_queue q JOIN items a ON a.id = q.left_id JOIN items b ON b.id = q.right_id "
                     "WHERE q.comparison_id IS NULL AND a.kind = ? AND b.kind = ? AND a.deleted_at IS NULL "
                     "AND b.deleted_at IS NULL")

    def pending_pairs_of(self, kind: str, limit: int = 2, exclude: Iterable[int] = ()) -> list[dict]:
        """Open queue entries of two live items of ``kind`` in queue order (priority, then id),
        leaving out the queue ids in ``exclude`` (labels on their way to the database)."""
        exclude = set(exclude)
        rows = self.conn.execute(f"SELECT q.* {self._OPEN_OF_KIND} ORDER BY q.priority DESC, q.id LIMIT ?",
                                 [kind, kind, limit + len(exclude)])
        return [dict(r) for r in rows if r["id"] not in exclude][:limit]

    def waiting_count(self, kind: str) -> int:
        """Open queue entries of two live items of ``kind``."""
        return self.conn.execute(f"SELECT count(*) {self._OPEN_OF_KIND}", [kind, kind]).fetchone()[0]

    def waiting_counts(self) -> dict[str, int]:
        """Open queue entries of two live items, per item kind (what each labelling view calls
        "waiting"; their sum is ``counts()["queued_pairs"]``)."""
        rows = self.conn.execute(
            "SELECT a.kind, count(*) FROM pair_queue q JOIN items a ON a.id = q.left_id JOIN items b "
            "ON b.id = q.right_id WHERE q.comparison_id IS NULL AND a.kind = b.kind AND a.deleted_at IS NULL "
            "AND b.deleted_at IS NULL GROUP BY a.kind ORDER BY a.kind")
        return {kind: n for kind, n in rows}

    def answered_count(self, kind: str, *, source: str | None = None) -> int:
        """Queue entries of ``kind`` that a label answers (one from ``source`` only, if given)."""
        sql = ("SELECT count(*) FROM pair_queue q JOIN comparisons c ON c.id = q.comparison_id "
               "JOIN items i ON i.id = q.left_id WHERE i.kind = ?")
        args: list = [kind]
        if source is not None:
            sql += " AND c.source = ?"
            args.append(source)
        return self.conn.execute(sql, args).fetchone()[0]

    def reopened_pair(self, comparison_id: int) -> dict | None:
        """The queue entry an undone label came from (open again), if any."""
        row = self.conn.execute(
            "SELECT q.* FROM pair_queue q JOIN comparisons c ON c.left_id = q.left_id AND c.right_id = q.right_id "
            "WHERE c.id = ? AND q.comparison_id IS NULL ORDER BY q.id DESC LIMIT 1", [comparison_id]).fetchone()
        return dict(row) if row else None

    # ------------------------------------------------------------------ checkpoints & artifacts
    def add_checkpoint(
        self, run_id: int | None, kind: str, path: str | os.PathLike, *, step: int | None = None,
        meta: Mapping | None = None,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO checkpoints (run_id, step, kind, path, meta_json, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [run_id, step, kind, self.relpath(path), _dumps(meta), utc_now()],
        )
        return cur.lastrowid

    def add_artifact(
        self, run_id: int | None, kind: str, path: str | os.PathLike, *, meta: Mapping | None = None
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO artifacts (run_id, kind, path, meta_json, created_at) VALUES (?, ?, ?, ?, ?)",
            [run_id, kind, self.relpath(path), _dumps(meta), utc_now()],
        )
        return cur.lastrowid

    def checkpoints(self, run_id: int | None = None) -> list[dict]:
        if run_id is None:
            rows = self.conn.execute("SELECT * FROM checkpoints ORDER BY id")
        else:
            rows = self.conn.execute("SELECT * FROM checkpoints WHERE run_id=? ORDER BY id", [run_id])
        return [dict(r) for r in rows]

    def delete_checkpoints(self, ids: Iterable[int]) -> int:
        """Delete checkpoint rows (their files stay): a resumed run drops those saved after its state,
        which it saves again. Returns how many went."""
        ids = [int(i) for i in ids]
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        return self.conn.execute(f"DELETE FROM checkpoints WHERE id IN ({marks})", ids).rowcount

    def run_folder(self, run_id: int, sub: str = "checkpoints", *, create: bool = True) -> Path:
        """A folder for one run's files (created on demand unless ``create`` is False: a question about it)."""
        folder = self.folder / sub / f"run-{int(run_id):05d}"
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return folder


def integrity_problems(db_path: str | os.PathLike) -> list[str]:
    """SQLite's ``quick_check`` on a read-only connection of its own (safe in any thread): [] when the
    file is sound. O(database size): the app runs it in the background for projects too large to
    check on open."""
    uri = f"file:{quote(os.fsencode(db_path))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        return [str(exc)]
    try:
        return _quick_check(conn)
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()


def _quick_check(conn: sqlite3.Connection) -> list[str]:
    """SQLite's ``quick_check`` findings ([] when the file is sound)."""
    result = [r[0] for r in conn.execute("PRAGMA quick_check")]
    return [] if result == ["ok"] else result


def _remove_new_project(folder: Path, created_folder: bool) -> None:
    """Undo a failed :meth:`Project.create`: only what it made (the folder, or its contents when the
    folder was there and empty before)."""
    if created_folder:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir() if folder.is_dir() else ():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _run_row(row: sqlite3.Row) -> dict:
    """A run as a dict; settings or a result that a hand edit made unreadable read as empty, with
    ``config_error`` saying so, so one bad row never hides the others."""
    d = dict(row)
    config = _loads_or_none(d.pop("config_json") or "{}")
    # settings stored under a field's old name read as the new name (rlhf_core.config.RENAMED_FIELDS)
    d["config"] = upgrade_settings(str(d.get("kind")), config) if isinstance(config, dict) else {}
    if not isinstance(config, dict):
        d["config_error"] = "The run's stored settings could not be read (not a JSON object)."
    raw_result = d.pop("result_json", None)
    d["result"] = _loads_or_none(raw_result) if raw_result else None
    return d


def _loads_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _applied_migrations(conn: sqlite3.Connection, db_path: Path) -> list[str]:
    """Names of the applied migrations; refuses newer schemas and unknown histories."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set=? ORDER BY rowid", [MIGRATION_SET]
        )
    ]
    unknown = [n for n in names if n not in KNOWN_MIGRATIONS]
    if unknown:
        raise NewerSchemaError(
            f"{db_path} was written by a newer version of RLHF Workbench (schema steps this version "
            f"does not know: {', '.join(unknown)}). Update the app to open it; the project was left "
            "untouched."
        )
    if names != list(KNOWN_MIGRATIONS[: len(names)]):
        raise CorruptProjectError(
            f"{db_path} has an unexpected schema history ({', '.join(names)}). It was left untouched."
        )
    return names


def _raise_if_damaged(conn: sqlite3.Connection, db_path: Path) -> None:
    result = _quick_check(conn)
    if result:
        raise CorruptProjectError(
            f"{db_path} is damaged (SQLite integrity check: {'; '.join(result[:3])}). "
            "It was left untouched; restore it from a backup."
        )


def open_project(path: str | os.PathLike, *, create: bool = False, name: str | None = None) -> Project:
    """Open the project at ``path``; with ``create=True`` make it first if it does not exist."""
    p = Path(path).expanduser()
    if create and (not p.exists() or (p.is_dir() and not any(p.iterdir()))):
        return Project.create(p, name=name)
    return Project.open(p)


def copy_project(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a whole project folder (database via SQLite's backup API so WAL content is included)."""
    src_p, dst_p = Path(src), Path(dst)
    with Project.open(src_p) as project:
        shutil.copytree(src_p, dst_p, ignore=shutil.ignore_patterns(f"{DB_NAME}*"))
        project._backup(str(dst_p.absolute() / DB_NAME))
    return dst_p
