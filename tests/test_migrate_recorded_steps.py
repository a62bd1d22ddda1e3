"""What a queued callable runs comes from the operation that queued it, not from the callable.

The migrator records each operation with the callables it queued and the step each
runs (``take_recorded()``); the phase split, ``migrate sql``, the lint and the checks
before DDL read them there.  A migration file whose code wraps the queued callables
(here with :func:`functools.wraps`, to log each one) or reorders them still gets each
statement in its phase and its statements from its operation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee as pw

from datalayer.migrate.autogenerate.api import create_migration
from datalayer.migrate.autogenerate.plan import read_migrations
from datalayer.migrate.lint import lint
from datalayer.migrate.operations.migrator import DatalayerMigrator
from datalayer.migrate.operations.recording import Owners
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.offline import migration_sql
from datalayer.migrate.runtime.recorder import Recorder
from tests.pgserver import Server
from tests.test_migrate_generate import open_db, rows

V2 = '''
import functools

import peewee as pw
from peewee_migrate import Migrator
from playhouse.migrate import Operation

CALLS = []


def logged(queued):
    run = queued.run if isinstance(queued, Operation) else queued

    @functools.wraps(queued)
    def call():
        CALLS.append(1)
        run()

    return call


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    from datalayer.migrate.ops import extend

    m = extend(migrator)
    m.add_fields("items", note=pw.TextField(null=True))
    m.remove_fields("items", "old")
    if WRAP:
        migrator.__ops__[:] = [logged(q) for q in reversed(migrator.__ops__)]


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    from datalayer.migrate.ops import extend

    m = extend(migrator)
    m.add_fields("items", old=pw.TextField(null=True))
    m.remove_fields("items", "note")
'''


def _items() -> list[type[pw.Model]]:
    attrs: dict[str, Any] = {"Meta": type("Meta", (), {"table_name": "items"}),
                             "name": pw.TextField(), "old": pw.TextField()}
    return [type("Item", (pw.Model,), attrs)]


def _history(directory: Path, wrap: bool) -> Path:
    assert create_migration(Router(Recorder(), directory), "items", _items()) is not None
    (directory / "002_note.py").write_text(f"WRAP = {wrap}\n{V2}")
    return directory


def test_wrapped_callables_are_found_as_the_ones_they_wrap() -> None:
    m = DatalayerMigrator(Recorder())
    m.create_model(_items()[0])
    m.add_fields("items", note=pw.TextField(null=True))
    recorded = m.take_recorded()
    (add,) = m.__ops__[-1:]

    def wrapper() -> None:
        add.run()

    vars(wrapper)["__wrapped__"] = add
    owners = Owners(recorded)
    assert owners.operation(wrapper) is recorded[-1].operation
    assert owners.step(wrapper) is recorded[-1].steps[-1]
    assert owners.operation(lambda: None) is None


def test_the_lint_reads_a_wrapped_callable_as_its_operation(tmp_path: Path) -> None:
    plain = read_migrations(Router(Recorder(), _history(tmp_path / "a", False)), ["002_note"])
    wrapped = read_migrations(Router(Recorder(), _history(tmp_path / "b", True)), ["002_note"])
    assert [s.sql for s in plain[0].statements] == [
        'ALTER TABLE "items" ADD COLUMN "note" TEXT', 'ALTER TABLE "items" DROP COLUMN "old"']
    # the file ran them in the other order, each wrapped in a function of its own
    assert [s.sql for s in wrapped[0].statements] == [s.sql for s in plain[0].statements][::-1]
    assert [s.lock for s in wrapped[0].statements] == [s.lock for s in plain[0].statements][::-1]


def test_migrate_sql_and_lint_show_a_wrapped_callables_statements(tmp_path: Path) -> None:
    plain = migration_sql(_history(tmp_path / "a", False), ["002_note"], facts=True)
    wrapped = migration_sql(_history(tmp_path / "b", True), ["002_note"], facts=True)
    assert plain[0].statements == (
        'ALTER TABLE "items" ADD COLUMN "note" TEXT;', 'ALTER TABLE "items" DROP COLUMN "old";')
    assert wrapped[0].statements == plain[0].statements[::-1]
    assert wrapped[0].facts == plain[0].facts[::-1]
    # so the lint sees the drop (it read "-- python: call (not shown)" twice)
    found = [f.rule for m in lint(tmp_path / "b").migrations for f in m.all_findings()]
    assert "ban-drop-column" in found


def test_apply_phase_expand_runs_the_expand_part_of_wrapped_callables(
    pg: Server, tmp_path: Path
) -> None:
    mdir = _history(tmp_path / "migrations", True)
    with pg.database("dlrecorded") as dbname:
        db = open_db(pg, dbname)
        try:
            runner.apply(db, mdir, to="001_items", verify_checksums=False)
            db.execute_sql("INSERT INTO items (name, old) VALUES ('a', 'x')")
            done = runner.apply(db, mdir, phase="expand", verify_checksums=False)
            assert [a.name for a in done] == ["002_note"]
            columns = "SELECT column_name, is_nullable FROM information_schema.columns " \
                      "WHERE table_name = 'items' ORDER BY column_name"
            # expand: the new column added, the old one's NOT NULL dropped, nothing removed
            assert rows(db, columns) == [("id", "NO"), ("name", "NO"), ("note", "YES"),
                                         ("old", "YES")]
            runner.apply(db, mdir, phase="contract", verify_checksums=False)
            assert rows(db, columns) == [("id", "NO"), ("name", "NO"), ("note", "YES")]
        finally:
            db.close()
