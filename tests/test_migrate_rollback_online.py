"""Rollbacks in the safe forms, run while a writer keeps writing (issue 15, items 4 and 6).

A rollback is a deploy too: each case applies a generated change to a table
with rows, then rolls it back while a writer thread inserts and updates rows
with a short ``lock_timeout``.  The writer must see no error, the v1 schema
must come back, and no statement of a rollback reads the whole table while
holding a lock that stops writes.  The slow cases scan at 1 ms per row (see
:mod:`tests.test_migrate_safe_forms`), so the plain form of their rollback
(``--unsafe``) holds its lock for seconds and the same writer times out:
that shows the check can fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from playhouse.postgres_ext import PostgresqlExtDatabase

from datalayer.config import Settings
from datalayer.migrate.autogenerate.api import create_migration
from datalayer.migrate.autogenerate.outcome import DiffResult
from datalayer.migrate.check import check
from datalayer.migrate.inspect import compare, snapshot
from datalayer.migrate.lint import lint, render_text
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.offline import migration_sql, render
from datalayer.migrate.runtime.rollback import rollback as migration_rollback
from tests.pgserver import Server
from tests.test_migrate_generate import open_db
from tests.test_migrate_lint_rollback import ALL_CASES
from tests.test_migrate_lint_rollback import _generated as generated
from tests.test_migrate_safe_forms import (
    SLOW_FUNCTION,
    Case,
    Writer,
    category,
    fk,
    items,
)


def _slow_code_index(*, code: bool) -> list[type[pw.Model]]:
    if not code:
        return [items()]
    m = items(code=pw.IntegerField(null=True))
    m.add_index(m.index(pw.SQL("slow.dl_slow(qty)"), m.code, name="items_slow_code"))
    return [m]


CASES = [
    # The rollback re-adds the CHECK: NOT VALID in its transaction, validated in the file before.
    Case("check_removed", lambda: [items(qty=pw.IntegerField(default=0, constraints=[
        pw.Check("slow.dl_slow(qty) >= 0")]))], lambda: [items()], slow=True),
    # The rollback re-adds the foreign key (another ON DELETE): NOT VALID, then validated.
    Case("fk_on_delete_changed", fk(null=True), lambda: [cat := category(), items(
        category=pw.ForeignKeyField(cat, column_name="category_id", null=True,
                                    on_delete="SET NULL"))]),
    # The rollback sets NOT NULL again through a validated CHECK.
    Case("not_null_dropped",
         lambda: [items(note=pw.CharField(max_length=20, constraints=[pw.SQL("DEFAULT 'n'")]))],
         lambda: [items(note=pw.CharField(max_length=20, null=True,
                                          constraints=[pw.SQL("DEFAULT 'n'")]))]),
    # The index on a dropped column is dropped first, concurrently, and built so again.
    Case("indexed_column_dropped", lambda: _slow_code_index(code=True),
         lambda: _slow_code_index(code=False), slow=True),
    # A foreign key column dropped with its table: re-added NOT VALID, its index concurrently.
    Case("fk_column_dropped_with_its_table", fk(null=True), lambda: [items()]),
]
ROWS = 1500  # with 1 ms per row, a slow scan holds its lock 1.5 s: the writer waits 1 s at most


@pytest.fixture
def online_db(pg: Server) -> Iterator[tuple[str, PostgresqlExtDatabase]]:
    with pg.database("dlrbonline") as name:
        db = open_db(pg, name)
        db.execute_sql(SLOW_FUNCTION)
        try:
            yield name, db
        finally:
            db.close()


def _rollback_under_writes(
    pg: Server, name: str, db: PostgresqlExtDatabase, tmp_path: Path, case: Case,
    *, unsafe: bool = False,
) -> tuple[DiffResult, Writer]:
    assert create_migration(Router(db, tmp_path), "v1", case.v1()) is not None
    write_sum(tmp_path)
    runner.apply(db, tmp_path)
    if "categories" in db.get_tables():
        db.execute_sql(
            "INSERT INTO categories (title) SELECT 't' || g FROM generate_series(1, 5) g")
    db.execute_sql(
        f"INSERT INTO items (name, qty) SELECT 'r' || g, g FROM generate_series(1, {ROWS}) g"
    )
    if "categories" in db.get_tables():
        db.execute_sql("UPDATE items SET category_id = (SELECT category_id FROM categories "
                       "LIMIT 1) WHERE mod(qty, 2) = 0")
    before = snapshot(db)
    ids = [str(r[0]) for r in db.execute_sql("SELECT item_id FROM items").fetchall()]
    result = create_migration(Router(db, tmp_path), "v2", case.v2(), unsafe=unsafe,
                              allow_drop=True)
    assert result is not None
    write_sum(tmp_path)
    runner.apply(db, tmp_path)

    writer = Writer(pg, name, ids, inserts=case.inserts)
    writer.start()
    try:
        time.sleep(0.1)
        migration_rollback(db, tmp_path, steps=len(result.names))
        time.sleep(0.1)
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.writes > 0
    db.execute_sql("DELETE FROM items WHERE name LIKE 'w%%'")  # rows the writer added
    assert compare(before, snapshot(db)) == [], "rollback must restore the v1 schema"
    assert not db.execute_sql(
        "SELECT conname FROM pg_constraint WHERE NOT convalidated").fetchall(), "all validated"
    return result, writer


def _blocking_rollback_statements(result: DiffResult) -> list[str]:
    """Return the rollback statements that scan the table under a lock that stops writes."""
    assert result.plan is not None
    bad = []
    for migration in result.plan.migrations:
        for st in migration.statements(rollback=True):
            if st.scans and "writes" in st.blocks:
                bad.append(st.sql.splitlines()[0])
            if st.sql.startswith(("DROP INDEX", "CREATE INDEX", "CREATE UNIQUE INDEX")) and (
                migration.atomic
            ):
                bad.append(st.sql)
    return bad


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rollback_in_the_safe_forms_under_writes(
    case: Case, pg: Server, online_db: tuple[str, PostgresqlExtDatabase], tmp_path: Path,
) -> None:
    name, db = online_db
    result, writer = _rollback_under_writes(pg, name, db, tmp_path, case)
    assert writer.errors == [], writer.errors[:5]
    assert _blocking_rollback_statements(result) == []
    report = lint(tmp_path)
    errors = [(n, f.rule) for n, f in [*report.errors, *report.rollback_errors]]
    assert errors == [], render_text(report)


def test_the_plain_rollback_blocks_the_writer(
    pg: Server, online_db: tuple[str, PostgresqlExtDatabase], tmp_path: Path,
) -> None:
    """The same change with unsafe=True: its rollback holds a lock through the scan."""
    name, db = online_db
    (case,) = [c for c in CASES if c.id == "check_removed"]
    result, writer = _rollback_under_writes(pg, name, db, tmp_path, case, unsafe=True)
    assert _blocking_rollback_statements(result) != []
    assert any(e.startswith("55P03") for e in writer.errors), writer.errors[:5]


def test_a_check_swap_rolls_back_through_a_file_that_does_nothing_going_forward(
    tmp_path: Path,
) -> None:
    """The validation of what a transactional rollback re-adds runs in the file before it."""
    v1 = [items(qty=pw.IntegerField(default=0, constraints=[pw.Check("qty >= 0")]))]
    v2 = [items(qty=pw.IntegerField(default=0, constraints=[pw.Check("qty >= 1")]))]
    create_migration(Router(PostgresqlExtDatabase(None), tmp_path), "v1", v1)
    result = create_migration(Router(PostgresqlExtDatabase(None), tmp_path), "v2", v2)
    assert result is not None and result.plan is not None
    first, tx, validate = result.plan.migrations
    assert (first.atomic, tx.atomic, validate.atomic) == (False, True, False)
    assert first.operations == ()
    assert [op.method for op in first.rollback] == ["validate_constraints"]
    assert [s.sql for s in tx.statements(rollback=True)][-1].endswith(
        "ADD CHECK (qty >= 0) NOT VALID")
    text = result.paths[0].read_text(encoding="utf-8")
    assert "atomic = False" in text and "Nothing to do going forward" in text


# Two of the generator's cases whose rollbacks (or forward) were written in the plain forms
# before (issue 15), one per new recipe: `migrate check` lints the files diff writes for them
# (all eight pass; each check takes seconds, so two stand for them here).
CHECK_CASES = [p for p in ALL_CASES if p.values[0].id in (
    "named_check_table_unique_and_literal_in_renamed_check", "model_removed_with_fk_to_it")]


@pytest.fixture
def settings(pg: Server) -> Settings:
    return pg.settings("postgres").replace(dev_database_url=pg.admin.url(masked=False))


@pytest.mark.parametrize("case", CHECK_CASES)
def test_check_passes_on_the_files_diff_wrote(
    case: Any, settings: Settings, tmp_path: Path
) -> None:
    """`migrate check` (checksums, sync, scratch apply, lint of both directions) is clean."""
    generated(case, tmp_path)
    write_sum(tmp_path)
    assert check(settings, tmp_path, models=case.v2()) == []


# The venv's own bin folder too: `.venv/bin/python -m pytest` runs without activating it.
SQUAWK = shutil.which("squawk") or shutil.which("squawk", path=str(Path(sys.executable).parent))
# squawk's rules about locks that datalayer shares: none may fire on a generated rollback.
LOCK_RULES = {
    "constraint-missing-not-valid", "adding-foreign-key-constraint",
    "require-concurrent-index-creation", "require-concurrent-index-deletion",
    "disallowed-unique-constraint",
}
FORMERLY_PLAIN = [p for p in ALL_CASES if p.values[0].id in (
    "check_field", "check_meta", "named_check_table_unique_and_literal_in_renamed_check",
    "on_delete_changed", "on_update_changed", "null_to_not_null_backfill", "not_null_dropped",
    "model_removed_with_fk_to_it")]


@pytest.mark.skipif(SQUAWK is None, reason="squawk (squawk-cli) is not installed")
@pytest.mark.parametrize("case", FORMERLY_PLAIN)
def test_squawk_finds_no_lock_problem_in_the_generated_sql(case: Any, tmp_path: Path) -> None:
    """The rollback SQL (and the forward) of the formerly plain cases, read by squawk."""
    assert SQUAWK is not None
    generated(case, tmp_path)
    found = []
    for rollback in (False, True):
        for m in migration_sql(tmp_path, rollback=rollback):
            path = tmp_path / f"{m.name}.{rollback}.sql"
            path.write_text(render([m]), encoding="utf-8")
            args = [SQUAWK, "--reporter", "json", "--pg-version", "12", str(path)]
            if m.atomic:
                args.insert(1, "--assume-in-transaction")
            out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
            assert out.returncode in (0, 1), out.stderr
            found += [(m.name, rollback, d["rule_name"]) for d in json.loads(out.stdout or "[]")
                      if d["rule_name"] in LOCK_RULES]
    assert found == []
