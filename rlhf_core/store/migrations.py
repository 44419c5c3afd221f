"""The project database schema: one numbered list of migrations.

This file IS the schema. Each migration is applied once, in order, inside a transaction
(sqlite-utils ``Migrations``). Never edit a migration that has been released; add a new one.
``tests/core/store/test_schema.py`` pins the exact resulting schema, and a database written by each
earlier schema version is kept under ``tests/fixtures/`` and upgraded in a test.

Conventions
- Times are ISO-8601 UTC strings (``created_at`` etc.); ``wall_time`` in metrics is Unix seconds.
- Paths to media/checkpoints are stored RELATIVE to the project folder, so a zipped project opens
  on another machine.
- Nothing a person gave is deleted: undo sets ``deleted_at`` (soft delete) and an edit writes a
  new row whose ``supersedes_id`` points at the old one.
- Free-form extras go in ``*_json`` TEXT columns (valid JSON, checked by SQLite).
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATION_SET = "rlhf_workbench"
migrations = Migrations(MIGRATION_SET)


def _run(db: Database, *statements: str) -> None:
    for sql in statements:
        db.execute(sql)


@migrations(name="m001_initial")
def m001_initial(db: Database) -> None:
    _run(
        db,
        """
        CREATE TABLE project (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by_version TEXT NOT NULL,
            settings_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings_json))
        )
        """,
        """
        CREATE TABLE labellers (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL DEFAULT 'human' CHECK (kind IN ('human', 'synthetic', 'ai')),
            params_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(params_json)),
            created_at TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            config_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config_json)),
            status TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            error TEXT,
            result_json TEXT CHECK (result_json IS NULL OR json_valid(result_json)),
            parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL
        )
        """,
        """
        CREATE TABLE prompts (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL,
            category TEXT NOT NULL DEFAULT '',
            tags_json TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags_json)),
            source TEXT NOT NULL DEFAULT 'user',
            gold_answer TEXT,
            meta_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json)),
            created_at TEXT NOT NULL,
            deleted_at TEXT
        )
        """,
        # An item is anything a person can judge: a whole trajectory, a clip (a segment of a
        # trajectory: parent_id + start_step/end_step) or a text response to a prompt.
        """
        CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('trajectory', 'clip', 'response')),
            parent_id INTEGER REFERENCES items(id) ON DELETE RESTRICT,
            prompt_id INTEGER REFERENCES prompts(id) ON DELETE RESTRICT,
            run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
            source TEXT NOT NULL DEFAULT 'generated',
            env_id TEXT,
            seed INTEGER,
            start_step INTEGER,
            end_step INTEGER,
            length INTEGER,
            true_return REAL,
            text TEXT,
            model_id TEXT,
            params_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(params_json)),
            data_path TEXT,
            media_path TEXT,
            meta_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json)),
            created_at TEXT NOT NULL,
            deleted_at TEXT,
            CHECK (kind != 'clip' OR parent_id IS NOT NULL),
            CHECK (kind != 'response' OR (prompt_id IS NOT NULL AND text IS NOT NULL))
        )
        """,
        "CREATE INDEX idx_items_kind ON items(kind)",
        "CREATE INDEX idx_items_parent ON items(parent_id)",
        "CREATE INDEX idx_items_prompt ON items(prompt_id)",
        # A ranking orders K items worst -> best; equal `position` values are ties.
        """
        CREATE TABLE rankings (
            id INTEGER PRIMARY KEY,
            labeller_id INTEGER REFERENCES labellers(id) ON DELETE RESTRICT,
            source TEXT NOT NULL DEFAULT 'human'
                CHECK (source IN ('human', 'synthetic', 'ai', 'auto')),
            prompt_id INTEGER REFERENCES prompts(id) ON DELETE RESTRICT,
            response_ms INTEGER,
            note TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            deleted_at TEXT
        )
        """,
        """
        CREATE TABLE ranking_entries (
            ranking_id INTEGER NOT NULL REFERENCES rankings(id) ON DELETE CASCADE,
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE RESTRICT,
            position INTEGER NOT NULL CHECK (position >= 0),
            PRIMARY KEY (ranking_id, item_id)
        )
        """,
        """
        CREATE TABLE comparisons (
            id INTEGER PRIMARY KEY,
            left_id INTEGER NOT NULL REFERENCES items(id) ON DELETE RESTRICT,
            right_id INTEGER NOT NULL REFERENCES items(id) ON DELETE RESTRICT,
            outcome TEXT NOT NULL CHECK (outcome IN ('left', 'right', 'tie', 'both_bad', 'skip')),
            labeller_id INTEGER REFERENCES labellers(id) ON DELETE RESTRICT,
            source TEXT NOT NULL CHECK (source IN ('human', 'synthetic', 'ai', 'auto')),
            response_ms INTEGER CHECK (response_ms IS NULL OR response_ms >= 0),
            ranking_id INTEGER REFERENCES rankings(id) ON DELETE CASCADE,
            supersedes_id INTEGER REFERENCES comparisons(id) ON DELETE RESTRICT,
            principle TEXT,
            note TEXT NOT NULL DEFAULT '',
            meta_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json)),
            created_at TEXT NOT NULL,
            deleted_at TEXT,
            CHECK (left_id != right_id)
        )
        """,
        "CREATE INDEX idx_comparisons_pair ON comparisons(left_id, right_id)",
        "CREATE INDEX idx_comparisons_labeller ON comparisons(labeller_id)",
        # Pairs waiting for a label (query selection writes here; labelling views read here).
        """
        CREATE TABLE pair_queue (
            id INTEGER PRIMARY KEY,
            left_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            right_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
            priority REAL NOT NULL DEFAULT 0,
            reason_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(reason_json)),
            comparison_id INTEGER REFERENCES comparisons(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL,
            CHECK (left_id != right_id)
        )
        """,
        "CREATE INDEX idx_pair_queue_open ON pair_queue(comparison_id, priority)",
        """
        CREATE TABLE metrics (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            key TEXT NOT NULL,
            value REAL,
            wall_time REAL NOT NULL
        )
        """,
        "CREATE INDEX idx_metrics_run_key_step ON metrics(run_id, key, step)",
        """
        CREATE TABLE samples (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step INTEGER,
            kind TEXT NOT NULL,
            payload_json TEXT NOT NULL CHECK (json_valid(payload_json)),
            created_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX idx_samples_run ON samples(run_id, kind)",
        """
        CREATE TABLE checkpoints (
            id INTEGER PRIMARY KEY,
            run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
            step INTEGER,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            meta_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json)),
            created_at TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE artifacts (
            id INTEGER PRIMARY KEY,
            run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            meta_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json)),
            created_at TEXT NOT NULL
        )
        """,
    )



@migrations(name="m002_artefact_names")
def m002_artefact_names(db: Database) -> None:
    """Artefacts (checkpoints) get a name a person can edit; '' shows a default made from the run."""
    _run(
        db,
        "ALTER TABLE checkpoints ADD COLUMN name TEXT NOT NULL DEFAULT ''",
        "CREATE UNIQUE INDEX idx_checkpoints_name ON checkpoints(name COLLATE NOCASE) WHERE name != ''",
    )

@migrations(name="m003_labelling_study")
def m003_labelling_study(db: Database) -> None:
    """A labelling study: versioned guidelines (each label records the version it was given under), queue
    entries answered by several labellers (``answers_wanted``; every answer in ``queue_answers``, the first
    also in ``pair_queue.comparison_id`` as before), and adjudications (``role``) that settle disagreements."""
    _run(
        db,
        """
        CREATE TABLE guidelines (
            id INTEGER PRIMARY KEY,
            version INTEGER NOT NULL UNIQUE CHECK (version >= 1),
            text TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """,
        "ALTER TABLE comparisons ADD COLUMN guideline_version INTEGER",
        "ALTER TABLE rankings ADD COLUMN guideline_version INTEGER",
        "ALTER TABLE comparisons ADD COLUMN role TEXT NOT NULL DEFAULT 'label' "
        "CHECK (role IN ('label', 'adjudication'))",
        "ALTER TABLE pair_queue ADD COLUMN answers_wanted INTEGER NOT NULL DEFAULT 1 CHECK (answers_wanted >= 1)",
        """
        CREATE TABLE queue_answers (
            queue_id INTEGER NOT NULL REFERENCES pair_queue(id) ON DELETE CASCADE,
            comparison_id INTEGER NOT NULL UNIQUE REFERENCES comparisons(id) ON DELETE CASCADE,
            labeller_id INTEGER REFERENCES labellers(id) ON DELETE RESTRICT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (queue_id, comparison_id)
        )
        """,
        "CREATE UNIQUE INDEX idx_queue_answers_labeller ON queue_answers(queue_id, labeller_id) "
        "WHERE labeller_id IS NOT NULL",
        "INSERT INTO queue_answers (queue_id, comparison_id, labeller_id, created_at) "
        "SELECT q.id, q.comparison_id, c.labeller_id, c.created_at FROM pair_queue q "
        "JOIN comparisons c ON c.id = q.comparison_id",
    )


#: Names of every migration this version of the app knows, in order.
KNOWN_MIGRATIONS: tuple[str, ...] = tuple(m.name for m in migrations._migrations)
SCHEMA_VERSION = len(KNOWN_MIGRATIONS)
