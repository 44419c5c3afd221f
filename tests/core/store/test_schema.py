"""The schema is pinned, old projects upgrade, newer projects are refused untouched."""

import hashlib
import json
import shutil
import sqlite3

import pytest

from rlhf_core.store import SCHEMA_VERSION, NewerSchemaError, Project
from rlhf_core.store.migrations import KNOWN_MIGRATIONS
from tests.fixtures.make_fixtures import HERE, schema_dump

FIXTURES = sorted((HERE / "projects").glob("schema-v*.rlhf"))


def test_schema_is_pinned(tmp_path):
    with Project.create(tmp_path / "p.rlhf") as p:
        assert p.schema_version == SCHEMA_VERSION == len(KNOWN_MIGRATIONS)
        assert p.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # If this fails you changed the schema: add a NEW migration (never edit a released one), then
    # refresh tests/fixtures/schema.sql with `python -m tests.fixtures.make_fixtures`.
    assert schema_dump(tmp_path / "p.rlhf" / "project.db") == (HERE / "schema.sql").read_text()


def test_there_is_a_fixture_for_every_released_schema_version():
    versions = sorted(int(p.name.split("-v")[1].split(".")[0]) for p in FIXTURES)
    assert versions == list(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_old_project_opens_and_upgrades(tmp_path, fixture):
    folder = tmp_path / fixture.name
    shutil.copytree(fixture, folder)
    expected = json.loads((folder / "expected.json").read_text())
    with Project.open(folder) as p:
        assert p.schema_version == SCHEMA_VERSION
        counts = p.counts()
        for key, value in expected["counts"].items():
            assert counts[key] == value, key
        assert len(p.comparisons()) == expected["live_comparisons"]
        assert len(p.comparisons(include_deleted=True)) == expected["all_comparisons"]
        run = p.runs()[0]
        assert {k: [list(s), list(v)] for k, (s, v) in p.metrics(run["id"]).items()} == expected["metrics"]
    assert schema_dump(folder / "project.db") == (HERE / "schema.sql").read_text()
    if expected["schema_version"] < SCHEMA_VERSION:
        assert (folder / f"project.db.schema-v{expected['schema_version']}.bak").exists()


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    folder = tmp_path / "future.rlhf"
    Project.create(folder).close()
    conn = sqlite3.connect(folder / "project.db")
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                 "VALUES ('rlhf_workbench', 'm999_from_the_future', '2030-01-01')")
    conn.commit()
    conn.close()
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
    with pytest.raises(NewerSchemaError, match="newer version"):
        Project.open(folder)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
    assert after == before
