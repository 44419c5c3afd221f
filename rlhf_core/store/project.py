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
from collections.abc import Callable, Iterable, Mapping, Sequence
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
# A queue entry (``q``) still wants an answer: none yet, or fewer than the several it wants (overlap)
_WANTS_ANSWER = ("(q.comparison_id IS NULL OR (q.answers_wanted > 1 AND q.answers_wanted > "
                 "(SELECT count(*) FROM queue_answers x WHERE x.queue_id = q.id)))")
# ... that labeller ``?`` has not answered (each labeller answers an entry once, blind to the others)
_NOT_ANSWERED_BY = "NOT EXISTS (SELECT 1 FROM queue_answers x WHERE x.queue_id = q.id AND x.labeller_id = ?)"
MAX_GUIDELINES_CHARS = 200_000
MAX_OVERLAP_ANSWERS = 10
_GOLDEN = 0.6180339887498949  # overlap entries: queue ids whose multiple of this is below the fraction


def overlap_chosen(queue_id: int, fraction: float) -> bool:
    """Whether queue entry ``queue_id`` goes to several labellers under overlap ``fraction``: a
    low-discrepancy (golden-ratio) sequence over the ids, so any run of N new entries holds about
    N * fraction of them, spread out rather than every k-th."""
    return fraction > 0 and (queue_id * _GOLDEN) % 1.0 < fraction


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string (the format of every ``*_at`` column)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def app_version() -> str:
    return __version__


def _dumps(value: Any) -> str:
    return json.dumps(value if value is not None else {}, sort_keys=True, default=str)


def _db_path_for(path: Path) -> Path:
    return path / DB_NAME if path.suffix != ".db" else path


class LabelChangedError(ValueError):
    """A write about labels refused because they changed since the person saw them (another window,
    process or person); nothing was written. The message says what changed."""


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

    @contextlib.contextmanager
    def write_transaction(self):
        """The block holds the write lock (``BEGIN IMMEDIATE``, waiting up to the busy timeout): what it reads
        stays true until it commits, so a check and the write it allows are never overtaken by another
        connection or process. Inside a transaction already it is a savepoint; an exception rolls it back."""
        if self.conn.in_transaction:
            with self.db.atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
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
                            f"ON b.id = q.right_id WHERE {_WANTS_ANSWER} AND a.kind = b.kind "
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

    def labeller_id(self, name: str | None) -> int | None:
        """The id of the labeller called ``name`` (None: no such labeller yet)."""
        if not name or not name.strip():
            return None
        row = self.conn.execute("SELECT id FROM labellers WHERE name = ?", [name.strip()]).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ labelling study
    def guidelines(self, version: int | None = None) -> dict | None:
        """The labelling guidelines (Markdown): the newest version, or ``version``; ``version``, ``text``,
        ``created_at``. None when none were written (or no such version)."""
        if version is None:
            row = self.conn.execute("SELECT version, text, created_at FROM guidelines "
                                    "ORDER BY version DESC LIMIT 1").fetchone()
        else:
            row = self.conn.execute("SELECT version, text, created_at FROM guidelines WHERE version = ?",
                                    [int(version)]).fetchone()
        return dict(row) if row else None

    def guideline_version(self) -> int | None:
        """The newest guidelines' version (None: no guidelines yet)."""
        return self.conn.execute("SELECT max(version) FROM guidelines").fetchone()[0]

    def guideline_versions(self) -> list[dict]:
        """Every stored version, newest first: ``version``, ``created_at``, ``chars``."""
        rows = self.conn.execute("SELECT version, created_at, length(text) AS chars FROM guidelines "
                                 "ORDER BY version DESC")
        return [dict(r) for r in rows]

    def save_guidelines(self, text: str) -> int:
        """Store ``text`` as the next version (older versions are kept: labels name the version they
        were given under); returns its number, or the newest one's when ``text`` is that text unchanged."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("The guidelines are empty: write what “better” means (or cancel).")
        if len(text) > MAX_GUIDELINES_CHARS:
            raise ValueError(f"The guidelines are {len(text):,} characters long: at most "
                             f"{MAX_GUIDELINES_CHARS:,} are kept.")
        with self.write_transaction():  # two windows saving at once get versions n and n+1
            row = self.conn.execute("SELECT version, text FROM guidelines ORDER BY version DESC LIMIT 1").fetchone()
            if row is not None and row["text"] == text:
                return row["version"]
            version = (row["version"] if row else 0) + 1
            self.conn.execute("INSERT INTO guidelines (version, text, created_at) VALUES (?, ?, ?)",
                              [version, text, utc_now()])
        return version

    def overlap(self) -> tuple[float, int]:
        """The labelling study's overlap: ``(fraction, answers)``: that fraction of newly queued pairs
        wants ``answers`` labellers each (the rest one). ``(0.0, 2)`` unless set."""
        row = self.conn.execute("SELECT json_extract(settings_json, '$.overlap'), "
                                "json_extract(settings_json, '$.overlap_answers') FROM project WHERE id = 1").fetchone()
        fraction = float(row[0]) if row is not None and isinstance(row[0], (int, float)) else 0.0
        answers = int(row[1]) if row is not None and isinstance(row[1], int) else 2
        return min(max(fraction, 0.0), 1.0), min(max(answers, 2), MAX_OVERLAP_ANSWERS)

    def set_overlap(self, fraction: float, answers: int = 2) -> None:
        """Set the overlap (see :meth:`overlap`); pairs queued from now on follow it."""
        try:
            fraction, answers_f = float(fraction), float(answers)
        except (TypeError, ValueError):
            raise ValueError("The overlap is a fraction from 0 to 1 and a number of labellers from 2 to "
                             f"{MAX_OVERLAP_ANSWERS}.") from None
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"The overlap must be a fraction from 0 to 1 (0 % to 100 %), not {fraction:g}.")
        if answers_f != int(answers_f) or not 2 <= answers_f <= MAX_OVERLAP_ANSWERS:
            raise ValueError(f"Overlapping pairs go to 2 to {MAX_OVERLAP_ANSWERS} labellers, not {answers}.")
        self.conn.execute("UPDATE project SET settings_json = json_set(settings_json, '$.overlap', ?, "
                          "'$.overlap_answers', ?) WHERE id = 1", [fraction, int(answers_f)])

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

    def last_metrics(self, run_id: int) -> dict[str, tuple[int, float]]:
        """Each metric's value at its last step: ``{key: (step, value)}`` (one indexed query, not the series)."""
        out: dict[str, tuple[int, float]] = {}
        # SQLite takes the bare columns of a MAX() aggregate from the row holding the maximum
        rows = self.conn.execute("SELECT key, MAX(step), value FROM metrics WHERE run_id=? GROUP BY key", [run_id])
        for key, step, value in rows:
            current = current_key(key)
            if current not in out or step >= out[current][0]:
                out[current] = (int(step), float("nan") if value is None else float(value))
        return out

    def discard_after(self, run_id: int, step: int) -> tuple[int, int]:
        """Delete a run's metrics and samples logged after ``step`` (a resumed run logs them again);
        returns (metric rows, samples) deleted."""
        with self.db.atomic():
            metrics = self.conn.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", [run_id, step]).rowcount
            samples = self.conn.execute("DELETE FROM samples WHERE run_id = ? AND step > ?", [run_id, step]).rowcount
        return metrics, samples

    def discard_metric(self, run_id: int, key: str) -> int:
        """Delete every row of a run's metric ``key`` (old names included): a resumed job that logs several
        rows at one step, which :meth:`discard_after` cannot tell apart, logs the ones it keeps again.
        Returns how many rows went."""
        names = [k for (k,) in self.conn.execute("SELECT DISTINCT key FROM metrics WHERE run_id = ?", [run_id])
                 if current_key(k) == key]
        if not names:
            return 0
        marks = ",".join("?" * len(names))
        return self.conn.execute(f"DELETE FROM metrics WHERE run_id = ? AND key IN ({marks})",
                                 [run_id, *names]).rowcount

    def discard_run_items(self, run_id: int, kind: str, keep: Iterable[int] = ()) -> int:
        """Soft-delete the live items of ``kind`` that run ``run_id`` made, except ``keep``: those a killed run
        made after its saved state (the resumed run makes them again). Returns how many."""
        kept = {int(i) for i in keep}
        ids = [r["id"] for r in self.run_items(run_id, kind) if r["id"] not in kept]
        if ids:
            marks = ",".join("?" * len(ids))
            self.conn.execute(f"UPDATE items SET deleted_at = ? WHERE id IN ({marks})", [utc_now(), *ids])
        return len(ids)

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
        guideline_version: int | None = None,
    ) -> int:
        """Record one label. It is committed before this returns (nothing is ever buffered).
        ``guideline_version``: the labelling guidelines the labeller was shown (None: none)."""
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
                    "response_ms, ranking_id, supersedes_id, principle, note, meta_json, created_at, "
                    "guideline_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [left_id, right_id, outcome, labeller_id, source,
                     None if response_ms is None else int(response_ms), ranking_id, supersedes_id,
                     principle, note, _dumps(meta), utc_now(),
                     None if guideline_version is None else int(guideline_version)],
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"cannot record this comparison: {exc}") from exc
            cid = cur.lastrowid
            if queue_id is not None:
                self._record_answer(queue_id, cid, labeller_id)
        return cid

    def _record_answer(self, queue_id: int, comparison_id: int, labeller_id: int | None) -> None:
        """Label ``comparison_id`` answers queue entry ``queue_id`` (the first answer is also the entry's
        ``comparison_id``); inside the caller's transaction."""
        self.conn.execute("INSERT INTO queue_answers (queue_id, comparison_id, labeller_id, created_at) "
                          "VALUES (?, ?, ?, ?)", [queue_id, comparison_id, labeller_id, utc_now()])
        self.conn.execute("UPDATE pair_queue SET comparison_id=? WHERE id=? AND comparison_id IS NULL",
                          [comparison_id, queue_id])

    def claim_pair(
        self,
        queue_id: int,
        outcome: str,
        *,
        labeller_id: int | None = None,
        source: str = "human",
        response_ms: int | None = None,
        meta: Mapping | None = None,
        guideline_version: int | None = None,
    ) -> int | None:
        """Answer queue entry ``queue_id`` only if it still wants an answer and ``labeller_id`` has not
        answered it (an entry of the overlap wants several labellers' answers, one each): the label and
        the answer commit in one transaction under the write lock. Returns the comparison id, or None
        (nothing written) when the entry got its answers meanwhile (from another process or connection),
        this labeller answered it already, or it does not exist."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT left_id, right_id, answers_wanted, comparison_id FROM pair_queue WHERE id=?",
                               [queue_id]).fetchone()
            cid = None
            if row is not None:
                answers, mine = conn.execute(
                    "SELECT count(*), coalesce(sum(labeller_id = ?), 0) FROM queue_answers WHERE queue_id = ?",
                    [labeller_id, queue_id]).fetchone()
                answers = max(answers, row["comparison_id"] is not None)
                if answers < row["answers_wanted"] and not mine:
                    cid = self.add_comparison(row["left_id"], row["right_id"], outcome, labeller_id=labeller_id,
                                              source=source, response_ms=response_ms, meta=meta,
                                              guideline_version=guideline_version)
                    self._record_answer(queue_id, cid, labeller_id)
            conn.execute("COMMIT" if cid is not None else "ROLLBACK")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return cid

    def undo_comparison(self, comparison_id: int) -> None:
        """Soft-delete a label (the row stays, with ``deleted_at`` set) and reopen its queue entry (it wants
        that answer again; the entry's ``comparison_id`` becomes its earliest answer left, if any)."""
        with self.db.atomic():
            self.conn.execute(
                "UPDATE comparisons SET deleted_at=? WHERE id=? AND deleted_at IS NULL",
                [utc_now(), comparison_id],
            )
            self.conn.execute("DELETE FROM queue_answers WHERE comparison_id=?", [comparison_id])
            self.conn.execute(
                "UPDATE pair_queue SET comparison_id=(SELECT min(x.comparison_id) FROM queue_answers x "
                "WHERE x.queue_id = pair_queue.id) WHERE comparison_id=?", [comparison_id]
            )

    def edit_comparison(self, comparison_id: int, outcome: str, *, response_ms: int | None = None,
                        guideline_version: int | None = None) -> int:
        """Change a label: a new row supersedes the old one, which is soft-deleted; it answers the old
        one's queue entry. ``guideline_version``: the guidelines shown now (None: the old label's)."""
        old = self.conn.execute("SELECT * FROM comparisons WHERE id=?", [comparison_id]).fetchone()
        if old is None:
            raise ValueError(f"no comparison {comparison_id}")
        with self.db.atomic():
            new_id = self.add_comparison(
                old["left_id"], old["right_id"], outcome,
                labeller_id=old["labeller_id"], source=old["source"], response_ms=response_ms,
                ranking_id=old["ranking_id"], supersedes_id=comparison_id,
                principle=old["principle"], note=old["note"], meta=json.loads(old["meta_json"]),
                guideline_version=old["guideline_version"] if guideline_version is None else guideline_version,
            )
            self.conn.execute(
                "UPDATE comparisons SET deleted_at=? WHERE id=? AND deleted_at IS NULL",
                [utc_now(), comparison_id],
            )
            self.conn.execute(
                "UPDATE pair_queue SET comparison_id=? WHERE comparison_id=?", [new_id, comparison_id]
            )
            self.conn.execute("UPDATE queue_answers SET comparison_id=? WHERE comparison_id=?", [new_id, comparison_id])
            self.conn.execute("UPDATE comparisons SET role=? WHERE id=?", [old["role"], new_id])  # an adjudication stays one
        return new_id

    def pair_comparisons(self, a: int, b: int) -> list[dict]:
        """Live comparisons of items ``a`` and ``b`` in either order (labels and adjudications), oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM comparisons WHERE ((left_id=? AND right_id=?) OR (left_id=? AND right_id=?)) "
            "AND deleted_at IS NULL ORDER BY id", [a, b, b, a])
        return [dict(r) for r in rows]

    def restore_comparison(self, comparison_id: int) -> int:
        """Undo an undo: a copy of the undone label (same answer, labeller, time taken, role) supersedes it, with
        ``meta.restores``, and answers a queue entry of the pair that wants it again. Both rows stay. Returns
        the new id; :class:`LabelChangedError` when the label is live or was replaced meanwhile."""
        with self.write_transaction():
            row = self.conn.execute("SELECT * FROM comparisons WHERE id=?", [comparison_id]).fetchone()
            if row is None:
                raise ValueError(f"There is no label {comparison_id}.")
            if row["deleted_at"] is None:
                raise LabelChangedError(f"Label {comparison_id} is not undone (it was restored or never undone "
                                        "meanwhile): nothing was changed.")
            later = self.conn.execute("SELECT id FROM comparisons WHERE supersedes_id=? ORDER BY id DESC LIMIT 1",
                                      [comparison_id]).fetchone()
            if later is not None:
                raise LabelChangedError(f"Label {comparison_id} was replaced by label {later[0]} meanwhile: "
                                        "nothing was changed.")
            meta = json.loads(row["meta_json"] or "{}")
            meta["restores"] = comparison_id
            cur = self.conn.execute(
                "INSERT INTO comparisons (left_id, right_id, outcome, labeller_id, source, response_ms, ranking_id, "
                "supersedes_id, principle, note, meta_json, created_at, guideline_version, role) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [row["left_id"], row["right_id"], row["outcome"], row["labeller_id"], row["source"],
                 row["response_ms"], row["ranking_id"], comparison_id, row["principle"], row["note"],
                 _dumps(meta), utc_now(), row["guideline_version"], row["role"]])
            new_id = cur.lastrowid
            if row["role"] == "label":  # the queue entry the undo reopened, if it still wants this labeller
                entry = self.conn.execute(
                    "SELECT q.id FROM pair_queue q WHERE q.left_id=? AND q.right_id=? AND (SELECT count(*) FROM "
                    "queue_answers x WHERE x.queue_id = q.id) < q.answers_wanted AND NOT EXISTS (SELECT 1 FROM "
                    "queue_answers x WHERE x.queue_id = q.id AND x.labeller_id IS ?) ORDER BY q.id DESC LIMIT 1",
                    [row["left_id"], row["right_id"], row["labeller_id"]]).fetchone()
                if entry is not None:
                    self._record_answer(entry[0], new_id, row["labeller_id"])
        return new_id

    def add_adjudication(
        self,
        left_id: int,
        right_id: int,
        outcome: str,
        *,
        labeller_id: int,
        disputed_ids: Iterable[int],
        previous_id: int | None = None,
        response_ms: int | None = None,
        guideline_version: int | None = None,
        meta: Mapping | None = None,
    ) -> int:
        """Settle a disagreement: a comparison with role ``adjudication`` by ``labeller_id`` (the adjudicator),
        ``meta.adjudicates`` naming the disputed labels. Refused (:class:`LabelChangedError`, nothing written)
        unless the pair's live labels are still exactly ``disputed_ids`` and its newest live adjudication is
        still ``previous_id`` (which the new one replaces)."""
        disputed = sorted({int(i) for i in disputed_ids})
        with self.write_transaction():
            rows = self.pair_comparisons(left_id, right_id)
            labels = sorted(r["id"] for r in rows if r["role"] == "label")
            adjudications = [r["id"] for r in rows if r["role"] == "adjudication"]
            newest = adjudications[-1] if adjudications else None
            if labels != disputed:
                added, gone = sorted(set(labels) - set(disputed)), sorted(set(disputed) - set(labels))
                what = "; ".join(part for part in (
                    f"label {', '.join(map(str, added))} added" if added else "",
                    f"label {', '.join(map(str, gone))} undone or relabelled" if gone else "") if part)
                raise LabelChangedError(f"The labels of items {left_id} and {right_id} changed since they were "
                                        f"shown ({what}): the adjudication was not saved. Look at them again.")
            if newest != previous_id:
                raise LabelChangedError(f"Items {left_id} and {right_id} were adjudicated meanwhile (label {newest}): "
                                        "the adjudication was not saved. Look at them again.")
            cid = self.add_comparison(left_id, right_id, outcome, labeller_id=labeller_id, source="human",
                                      response_ms=response_ms, supersedes_id=previous_id,
                                      meta={**dict(meta or {}), "adjudicates": disputed},
                                      guideline_version=guideline_version)
            self.conn.execute("UPDATE comparisons SET role='adjudication' WHERE id=?", [cid])
            if previous_id is not None:
                self.conn.execute("UPDATE comparisons SET deleted_at=? WHERE id=? AND deleted_at IS NULL",
                                  [utc_now(), previous_id])
        return cid

    def comparisons(self, *, include_deleted: bool = False, source: str | None = None) -> list[dict]:
        where, args = [], []
        if not include_deleted:
            where.append("deleted_at IS NULL")
        if source:
            where.append("source=?")
            args.append(source)
        sql = "SELECT * FROM comparisons" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [dict(r) for r in self.conn.execute(sql, args)]

    def comparisons_of(self, kind: str, env_id: str) -> list[dict]:
        """Live labels of two live items of ``kind`` and ``env_id``, oldest first: ``id``, ``left_id``,
        ``right_id``, ``outcome``, ``source``, ``role``."""
        rows = self.conn.execute(
            "SELECT c.id, c.left_id, c.right_id, c.outcome, c.source, c.role FROM comparisons c JOIN items a ON a.id = "
            "c.left_id JOIN items b ON b.id = c.right_id WHERE c.deleted_at IS NULL AND a.deleted_at IS NULL "
            "AND b.deleted_at IS NULL AND a.kind = ? AND b.kind = ? AND a.env_id = ? AND b.env_id = ? "
            "ORDER BY c.id", [kind, kind, env_id, env_id])
        return [dict(r) for r in rows]

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
        ``labeller`` (name), ``ra``/``rb`` (the items' true returns), ``correction`` (item id or None),
        ``queued`` (1 if the label answers a queue entry, else 0) and ``answers_wanted`` (of that entry:
        more than 1 for a pair of the overlap, whose answers each labeller gives blind; else None or 1)."""
        rows = self.conn.execute(
            "SELECT c.*, l.name AS labeller, a.true_return AS ra, b.true_return AS rb, "
            "json_extract(c.meta_json, '$.correction') AS correction, "
            "(EXISTS (SELECT 1 FROM queue_answers x WHERE x.comparison_id = c.id) OR "
            "EXISTS (SELECT 1 FROM pair_queue q WHERE q.comparison_id = c.id)) AS queued, "
            "(SELECT max(q.answers_wanted) FROM queue_answers x JOIN pair_queue q ON q.id = x.queue_id "
            "WHERE x.comparison_id = c.id) AS answers_wanted FROM comparisons c "
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
        guideline_version: int | None = None,
    ) -> int:
        """Store a ranking (groups worst -> best, ties share a group) and its expanded pairs;
        ``guideline_version``: the guidelines the labeller was shown (kept on the ranking and its pairs)."""
        groups = normalise_groups(groups)
        with self.db.atomic():
            cur = self.conn.execute(
                "INSERT INTO rankings (labeller_id, source, prompt_id, response_ms, note, created_at, "
                "guideline_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [labeller_id, source, prompt_id, response_ms, note, utc_now(), guideline_version],
            )
            rid = cur.lastrowid
            self.conn.executemany(
                "INSERT INTO ranking_entries (ranking_id, item_id, position) VALUES (?, ?, ?)",
                [(rid, item, pos) for pos, group in enumerate(groups) for item in group],
            )
            for left, right, outcome in expand_ranking(groups):
                self.add_comparison(
                    left, right, outcome, labeller_id=labeller_id, source=source, ranking_id=rid,
                    guideline_version=guideline_version,
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
        answers_wanted: int | None = None,
    ) -> int:
        """Queue a pair for labelling; returns its queue id. ``answers_wanted``: how many labellers should
        answer it (None: the project's :meth:`overlap` decides, 1 outside the overlap)."""
        with self.db.atomic():
            cur = self.conn.execute(
                "INSERT INTO pair_queue (left_id, right_id, run_id, priority, reason_json, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [left_id, right_id, run_id, float(priority), _dumps(reason), utc_now()],
            )
            qid = cur.lastrowid
            if answers_wanted is None:
                fraction, answers = self.overlap()
                answers_wanted = answers if overlap_chosen(qid, fraction) else 1
            if int(answers_wanted) != 1:
                self.conn.execute("UPDATE pair_queue SET answers_wanted=? WHERE id=?", [int(answers_wanted), qid])
        return qid

    def pending_pairs(self, limit: int = 10, *, labeller_id: int | None = None) -> list[dict]:
        """Queue entries that still want an answer (with ``labeller_id``: one from that labeller), in
        queue order (priority, then id)."""
        mine, args = (f" AND {_NOT_ANSWERED_BY}", [labeller_id]) if labeller_id is not None else ("", [])
        rows = self.conn.execute(
            f"SELECT * FROM pair_queue q WHERE {_WANTS_ANSWER}{mine} ORDER BY priority DESC, id LIMIT ?",
            [*args, limit],
        )
        return [dict(r) for r in rows]

    # The queue holds pairs of every item kind: a labelling view reads only its own kind
    # ("clip" or "response") and skips pairs whose items were deleted.
    _OPEN_OF_KIND = ("FROM pair_queue q JOIN items a ON a.id = q.left_id JOIN items b ON b.id = q.right_id "
                     f"WHERE {_WANTS_ANSWER} AND a.kind = ? AND b.kind = ? AND a.deleted_at IS NULL "
                     "AND b.deleted_at IS NULL")

    def _open_of_kind(self, kind: str, labeller_id: int | None) -> tuple[str, list]:
        if labeller_id is None:
            return self._OPEN_OF_KIND, [kind, kind]
        return f"{self._OPEN_OF_KIND} AND {_NOT_ANSWERED_BY}", [kind, kind, labeller_id]

    def pending_pairs_of(self, kind: str, limit: int = 2, exclude: Iterable[int] = (), *,
                         labeller_id: int | None = None) -> list[dict]:
        """Queue entries of two live items of ``kind`` that still want an answer, in queue order (priority,
        then id), leaving out the queue ids in ``exclude`` (labels on their way to the database); with
        ``labeller_id``, only those this labeller has not answered (an overlap entry another labeller
        answered is still theirs to answer)."""
        exclude = set(exclude)
        sql, args = self._open_of_kind(kind, labeller_id)
        rows = self.conn.execute(f"SELECT q.* {sql} ORDER BY q.priority DESC, q.id LIMIT ?",
                                 [*args, limit + len(exclude)])
        return [dict(r) for r in rows if r["id"] not in exclude][:limit]

    def waiting_count(self, kind: str, *, labeller_id: int | None = None) -> int:
        """Queue entries of two live items of ``kind`` that still want an answer (from ``labeller_id``)."""
        sql, args = self._open_of_kind(kind, labeller_id)
        return self.conn.execute(f"SELECT count(*) {sql}", args).fetchone()[0]

    def waiting_counts(self) -> dict[str, int]:
        """Open queue entries of two live items, per item kind (what each labelling view calls
        "waiting"; their sum is ``counts()["queued_pairs"]``)."""
        rows = self.conn.execute(
            "SELECT a.kind, count(*) FROM pair_queue q JOIN items a ON a.id = q.left_id JOIN items b "
            f"ON b.id = q.right_id WHERE {_WANTS_ANSWER} AND a.kind = b.kind AND a.deleted_at IS NULL "
            "AND b.deleted_at IS NULL GROUP BY a.kind ORDER BY a.kind")
        return {kind: n for kind, n in rows}

    def run_queue(self, run_id: int) -> list[dict]:
        """The queue entries run ``run_id`` made, in queue order: ``id``, ``left_id``, ``right_id``, ``outcome``
        (of the live label answering it; None while open) and ``live`` (1 when both items are live). One
        query: a job that learns from the answers polls it."""
        rows = self.conn.execute(
            "SELECT q.id, q.left_id, q.right_id, c.outcome, (a.deleted_at IS NULL AND b.deleted_at IS NULL) AS live "
            "FROM pair_queue q LEFT JOIN comparisons c ON c.id = q.comparison_id AND c.deleted_at IS NULL "
            "JOIN items a ON a.id = q.left_id JOIN items b ON b.id = q.right_id WHERE q.run_id = ? ORDER BY q.id",
            [run_id])
        return [dict(r) for r in rows]

    def runs_waiting_for_labels(self, kind: str) -> list[dict]:
        """Running runs with open queue entries of two live items of ``kind``, by run id: ``run_id``,
        ``job`` (the run's kind) and ``waiting`` (how many entries)."""
        rows = self.conn.execute(
            "SELECT r.id AS run_id, r.kind AS job, count(*) AS waiting FROM pair_queue q JOIN runs r ON r.id = "
            "q.run_id JOIN items a ON a.id = q.left_id JOIN items b ON b.id = q.right_id WHERE q.comparison_id "
            "IS NULL AND r.status = 'running' AND a.kind = ? AND b.kind = ? AND a.deleted_at IS NULL AND "
            "b.deleted_at IS NULL GROUP BY r.id ORDER BY r.id", [kind, kind])
        return [dict(r) for r in rows]

    def answered_count(self, kind: str, *, source: str | None = None) -> int:
        """Answers to queue entries of ``kind`` (from ``source`` only, if given): one per answered entry,
        several for an entry of the overlap answered by several labellers."""
        sql = ("SELECT count(*) FROM queue_answers x JOIN pair_queue q ON q.id = x.queue_id "
               "JOIN comparisons c ON c.id = x.comparison_id JOIN items i ON i.id = q.left_id WHERE i.kind = ?")
        args: list = [kind]
        if source is not None:
            sql += " AND c.source = ?"
            args.append(source)
        return self.conn.execute(sql, args).fetchone()[0]

    def reopened_pair(self, comparison_id: int, *, labeller_id: int | None = None) -> dict | None:
        """The queue entry an undone label came from (wanting an answer again, from ``labeller_id``), if any."""
        mine, args = (f" AND {_NOT_ANSWERED_BY}", [labeller_id]) if labeller_id is not None else ("", [])
        row = self.conn.execute(
            "SELECT q.* FROM pair_queue q JOIN comparisons c ON c.left_id = q.left_id AND c.right_id = q.right_id "
            f"WHERE c.id = ? AND {_WANTS_ANSWER}{mine} ORDER BY q.id DESC LIMIT 1",
            [comparison_id, *args]).fetchone()
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


def write_into(project_or_path: Project | str | os.PathLike, write: Callable[[Project, bool], Any]) -> Any:
    """``write(project, created)`` into an open project (left open) or a folder, opened or created for the
    call and closed after; a folder this call created is removed again when ``write`` fails (an import
    refused half-way leaves no empty project behind)."""
    if isinstance(project_or_path, Project):
        return write(project_or_path, False)
    folder = Path(project_or_path).expanduser()
    existed = folder.exists()
    created = not existed or (folder.is_dir() and not any(folder.iterdir()))
    project = open_project(folder, create=True)
    try:
        result = write(project, created)
    except BaseException:
        project.close()
        if created:
            shutil.rmtree(folder, ignore_errors=True)
            if existed:
                folder.mkdir(exist_ok=True)
        raise
    project.close()
    return result


def copy_project(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a whole project folder (database via SQLite's backup API so WAL content is included)."""
    src_p, dst_p = Path(src), Path(dst)
    with Project.open(src_p) as project:
        shutil.copytree(src_p, dst_p, ignore=shutil.ignore_patterns(f"{DB_NAME}*"))
        project._backup(str(dst_p.absolute() / DB_NAME))
    return dst_p
