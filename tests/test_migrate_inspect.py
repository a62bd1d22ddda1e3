"""One schema comparison: ``check``, ``drift`` and ``baseline`` all use ``inspect.differences``.

``schema.py`` had two (``compare`` for check, ``differences`` for drift and
baseline); ``migrate/inspect/`` now holds the live catalog and the one
comparison, and ``compare`` renders check's lines from its differences.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from datalayer.config import Settings
from datalayer.migrate import baseline, drift, inspect
from datalayer.migrate.inspect import comparison, snapshot, snapshot_catalog


@pytest.fixture
def conn(empty_db: Settings) -> Iterator[Any]:
    connection = psycopg2.connect(empty_db.url(masked=False))
    connection.autocommit = True
    try:
        yield connection
    finally:
        connection.close()


BUILD = """
CREATE TABLE parents (id bigint PRIMARY KEY);
CREATE TABLE items (
    id serial PRIMARY KEY,
    name varchar(20) NOT NULL DEFAULT 'x',
    note text,
    qty int CHECK (qty >= 0),
    parent_id bigint REFERENCES parents (id) ON DELETE CASCADE
);
CREATE INDEX items_qty ON items (qty);
"""

CHANGE = """
ALTER TABLE items ALTER COLUMN name TYPE varchar(30);
ALTER TABLE items ALTER COLUMN name DROP DEFAULT;
ALTER TABLE items ALTER COLUMN note TYPE text COLLATE "C";
ALTER TABLE items DROP CONSTRAINT items_qty_check;
ALTER TABLE items DROP CONSTRAINT items_parent_id_fkey;
ALTER TABLE items ADD CONSTRAINT items_parent_id_fkey FOREIGN KEY (parent_id)
    REFERENCES parents (id);
DROP INDEX items_qty;
CREATE INDEX items_name ON items (name);
ALTER TABLE items ADD COLUMN spare int;
CREATE TABLE extra (id int);
"""


def test_check_drift_and_baseline_share_one_comparison() -> None:
    assert drift.differences is baseline.differences is comparison.differences
    assert inspect.differences is comparison.differences
    # check and squash import compare at call time, from inspect.
    for module in ("check", "squash"):
        source = (Path(inspect.__file__).parent.parent / f"{module}.py").read_text("utf-8")
        assert "from .inspect import compare, snapshot" in source
        assert "from .schema import" not in source


def test_drift_and_baseline_leave_out_the_history_tables_the_runtime_makes() -> None:
    """One list of history tables (inspect.history_tables) for drift and baseline: they
    spelled it apart, and baseline left a custom history's default phase table in."""
    from playhouse.postgres_ext import PostgresqlExtDatabase

    from datalayer.migrate.operations.background import jobs_table
    from datalayer.migrate.runtime.phases import phases_table

    class Router:
        schema = None
        migrate_table = "deploy_history"
        database = PostgresqlExtDatabase(None)

    made = {"deploy_history", jobs_table("deploy_history"), phases_table(Router()).strip('"')}
    left_out = inspect.history_tables("deploy_history")
    assert made <= left_out
    assert left_out >= inspect.DEFAULT_IGNORE  # a history moved to another table: both go
    assert drift.history_tables is baseline.history_tables is inspect.history_tables


def test_checks_lines_are_rendered_from_the_differences(
    monkeypatch: pytest.MonkeyPatch, conn: Any
) -> None:
    cur = conn.cursor()
    cur.execute(BUILD)
    schema = snapshot(conn)
    assert comparison.compare(schema, schema) == []
    planted = comparison.Difference("index", "items", "items_ghost", "CREATE INDEX ...", None)
    monkeypatch.setattr(comparison, "differences", lambda expected, actual: [planted])
    assert comparison.compare(schema, schema) == [
        "items: missing index items_ghost: CREATE INDEX ..."]


def test_check_and_drift_report_the_same_differences(conn: Any) -> None:
    cur = conn.cursor()
    cur.execute(BUILD)
    before = snapshot(conn)
    before_catalog = snapshot_catalog(conn)
    cur.execute(CHANGE)
    after = snapshot(conn)
    records = comparison.differences(before_catalog, snapshot_catalog(conn))
    lines = comparison.compare(before, after)
    assert lines == [
        "table extra: not expected (not in the models)",
        "items.name: expected character varying(20) NOT NULL DEFAULT 'x'::character varying, "
        "found character varying(30) NOT NULL",
        'items.note: expected text, found text COLLATE C',
        "items.spare: unexpected column (integer)",
        "items(parent_id): foreign key items_parent_id_fkey: expected FOREIGN KEY (parent_id) "
        "REFERENCES parents(id) ON DELETE CASCADE, found FOREIGN KEY (parent_id) REFERENCES "
        "parents(id)",
        "items: missing CHECK ((qty >= 0))",
        "items: unexpected index items_name: CREATE INDEX items_name ON items USING btree "
        "(name)",
        "items: missing index items_qty: CREATE INDEX items_qty ON items USING btree (qty)",
    ]
    # drift's records name the same things (type and default of name: two records, one line).
    assert sorted({(r.kind, r.name) for r in records}) == [
        ("check", "items_qty_check"), ("collation", "note"), ("column", "spare"),
        ("default", "name"), ("foreign_key", "items_parent_id_fkey"),
        ("index", "items_name"), ("index", "items_qty"), ("table", "extra"), ("type", "name"),
    ]
