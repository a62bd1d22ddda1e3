"""A failed or killed statement of a safe form leaves nothing that breaks the running app.

For each online (safe) form the generator writes, and for each statement
``k`` the migration sends, ``apply`` is run with statement ``k`` failing
on the server (``fail``: a real error in its place) or with the migration's
own session terminated just before it (``kill``: ``pg_terminate_backend``).
After every such failure the old release's writes (through its own
connection, as v1 allows them: a NULL, a duplicate, a negative, an unknown
key) must still succeed: whatever the failed migration added that would
reject them (a NOT VALID constraint, a validated CHECK, a unique or INVALID
index, a NOT NULL) was undone before ``apply`` returned.  Then the same
migration, run again, must finish and give the v2 schema; a rollback gives
back v1 for the next ``k``.

Run with ``-s`` to see the failure-cleanup matrix.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import psycopg2
import pytest
from playhouse.postgres_ext import PostgresqlExtDatabase

from datalayer.config import Settings
from datalayer.errors import MigrationError
from datalayer.migrate.autogenerate.api import create_migration
from datalayer.migrate.inspect import compare, snapshot
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.rollback import rollback as migration_rollback
from tests.migrate_runtime_support import make_tables, write_migration
from tests.pgserver import Server
from tests.test_migrate_generate import declared, open_db, reset_schema
from tests.test_migrate_safe_forms import SLOW_FUNCTION, category, items

Models = list[type[pw.Model]]
_DDL = ("ALTER", "CREATE", "DROP", "DO", "UPDATE")  # the statements that change something


def _fk(**kw: Any) -> Callable[[], Models]:
    def build() -> Models:
        cat = category()
        return [cat, items(category=pw.ForeignKeyField(cat, column_name="category_id",
                                                       on_delete="CASCADE", **kw))]
    return build


@dataclasses.dataclass
class Form:
    id: str
    v1: Callable[[], Models]
    v2: Callable[[], Models]
    old_write: str  # what the old release writes (v1 allows it, v2 would not)
    seed: str = ""


PLAIN = "INSERT INTO items (name, qty) VALUES ('o1', 1)"
FORMS = [
    Form("index_concurrently", lambda: [items()],
         lambda: [items(qty=pw.IntegerField(default=0, index=True))], PLAIN),
    Form("index_drop_concurrently", lambda: [items(qty=pw.IntegerField(default=0, index=True))],
         lambda: [items()], PLAIN),
    Form("unique_index", lambda: [items(code=pw.CharField(max_length=40, null=True))],
         lambda: [items(code=pw.CharField(max_length=40, null=True, unique=True))],
         "INSERT INTO items (name, qty, code) VALUES ('o1', 1, 'dup'), ('o2', 2, 'dup')"),
    Form("unique_constraint_using_index", lambda: [items()],
         lambda: [items(constraints=[pw.SQL("UNIQUE (name, qty)")])],
         "INSERT INTO items (name, qty) VALUES ('o1', 7), ('o1', 7)"),
    Form("fk_new_column", lambda: [category(), items()], _fk(null=True), PLAIN),
    Form("fk_existing_column",
         lambda: [category(), items(category=pw.UUIDField(column_name="category_id", null=True,
                                                          index=True))],
         _fk(null=True),
         f"INSERT INTO items (name, qty, category_id) VALUES ('o1', 1, '{uuid.uuid4()}')"),
    Form("check_not_valid_then_validate", lambda: [items()],
         lambda: [items(qty=pw.IntegerField(default=0, constraints=[pw.Check("qty >= 0")]))],
         "INSERT INTO items (name, qty) VALUES ('o1', -5)"),
    Form("set_not_null_through_check",
         lambda: [items(note=pw.CharField(max_length=20, null=True,
                                          constraints=[pw.SQL("DEFAULT 'n'")]))],
         lambda: [items(note=pw.CharField(max_length=20, constraints=[pw.SQL("DEFAULT 'n'")]))],
         "INSERT INTO items (name, qty, note) VALUES ('o1', 1, NULL)",
         seed="UPDATE items SET note = NULL WHERE mod(qty, 3) = 0"),
    Form("not_null_column_filled_in_batches", lambda: [items()],
         lambda: [items(token=pw.UUIDField(default=uuid.uuid4))], PLAIN),
    Form("volatile_server_default", lambda: [items()],
         lambda: [items(code=pw.UUIDField(null=True,
                                          constraints=[pw.SQL("DEFAULT gen_random_uuid()")]))],
         PLAIN),
]

MATRIX: list[str] = []


@pytest.fixture(scope="module")
def shared_db(pg: Server) -> Iterator[tuple[str, PostgresqlExtDatabase]]:
    with pg.database("dlcleanup") as name:
        database = open_db(pg, name)
        try:
            yield name, database
        finally:
            database.close()


@pytest.fixture
def db(shared_db: tuple[str, PostgresqlExtDatabase]) -> tuple[str, PostgresqlExtDatabase]:
    """One database for the module, emptied before each test (creating one costs more)."""
    name, database = shared_db
    if database.is_closed() or getattr(database.connection(), "closed", 0):
        database.close()  # a kill in the previous test
    reset_schema(database)
    return name, database


@pytest.fixture(scope="module")
def ref(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    with pg.database("dlcleanref") as name:
        database = open_db(pg, name)
        try:
            yield database
        finally:
            database.close()


def _old_release_writes(pg: Server, name: str, sql: str) -> str:
    """Run the old release's write on a connection of its own; return '' or the error."""
    conn = pg.raw(name)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            cur.execute("DELETE FROM items WHERE name LIKE 'o%'")
        return ""
    except psycopg2.Error as exc:
        return f"{exc.pgcode}: {str(exc).splitlines()[0]}"
    finally:
        conn.close()


@pytest.mark.parametrize("form", FORMS, ids=[f.id for f in FORMS])
def test_old_release_keeps_writing_after_each_statement_fails(
    form: Form, pg: Server, db: tuple[str, PostgresqlExtDatabase],
    ref: PostgresqlExtDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, database = db
    create_migration(Router(database, tmp_path), "v1", form.v1())
    write_sum(tmp_path)
    runner.apply(database, tmp_path)
    if "categories" in database.get_tables():
        database.execute_sql("INSERT INTO categories (title) VALUES ('a'), ('b')")
    database.execute_sql(
        "INSERT INTO items (name, qty) SELECT 'r' || g, g FROM generate_series(1, 30) g"
    )
    if form.seed:
        database.execute_sql(form.seed)
    before = snapshot(database)
    result = create_migration(Router(database, tmp_path), "v2", form.v2())
    assert result is not None
    write_sum(tmp_path)
    want = declared(ref, form.v2())
    assert any("atomic = False" in p.read_text() for p in result.paths), "not a safe form"

    # What the old release's write meets when only the first n files of v2 are applied
    # (a NOT VALID constraint added by an applied file is there "before the attempt").
    baseline = {0: ""}
    for n, file in enumerate(result.names[:-1], start=1):
        runner.apply(database, tmp_path, to=file)
        baseline[n] = _old_release_writes(pg, name, form.old_write)
        migration_rollback(database, tmp_path, steps=n)

    real = database.execute_sql
    for mode in ("fail", "kill"):
        for k in range(1, 60):
            count = 0
            sent: list[str] = []

            def flaky(sql: str, params: Any = None, *args: Any, k: int = k, mode: str = mode,
                      sent: list[str] = sent, **kwargs: Any) -> Any:
                nonlocal count
                if sql.lstrip().upper().startswith(_DDL) and "migratehistory" not in sql:
                    count += 1
                    if count == k:
                        sent.append(" ".join(sql.split())[:60])
                        if mode == "kill":
                            real("SELECT pg_terminate_backend(pg_backend_pid())")
                        real("SELECT 1/0")  # the statement fails on the server in its place
                return real(sql, params, *args, **kwargs)

            monkeypatch.setattr(database, "execute_sql", flaky)
            try:
                runner.apply(database, tmp_path)
                failed = ""
            except Exception as exc:
                failed = str(exc)
            monkeypatch.setattr(database, "execute_sql", real)
            if not failed:  # past the last statement: all of it ran
                migration_rollback(database, tmp_path, steps=len(result.names))
                break
            if database.is_closed() or getattr(database.connection(), "closed", 0):
                database.close()
            error = _old_release_writes(pg, name, form.old_write)
            applied = len(database.execute_sql("SELECT name FROM migratehistory").fetchall()) - 1
            marker = "would meet was undone: "
            undone = (failed.split(marker, 1)[1].split(" (what only adds", 1)[0]
                      if marker in failed else "-")
            outcome = ("yes" if not error else "as before: rejected by the NOT VALID constraint "
                       f"of the applied {result.names[applied - 1]}" if error == baseline[applied]
                       else f"NO: {error}")
            MATRIX.append(f"| {form.id} | {mode} | {k}: `{sent[0] if sent else '?'}` | "
                          f"{outcome} | {undone} |")
            assert error == baseline[applied], f"{mode} before {k}: old release: {error}"
            runner.apply(database, tmp_path)  # the next run finishes the job
            assert compare(want, snapshot(database)) == [], f"{mode} before statement {k}"
            migration_rollback(database, tmp_path, steps=len(result.names))
            assert compare(before, snapshot(database)) == [], f"rollback after {mode} at {k}"
        assert k > 1


def test_print_matrix() -> None:
    """Print the failure-cleanup matrix gathered above (``-s``)."""
    if MATRIX:
        print("\n| safe form | mode | statement | old release writes | undone |")
        print("|---|---|---|---|---|")
        print("\n".join(MATRIX))


def test_validate_killed_from_outside_through_the_cli_settings(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    """The pooled database of the CLI: VALIDATE's session is ended by pg_terminate_backend.

    ``apply`` connects again, takes the migration lock again, and drops the NOT VALID
    constraint the migration added, so the old release's negative numbers still go in.
    """
    mdir = tmp_path / "migrations"
    make_tables(mdir, 1)
    runner.apply(empty_db, mdir)
    conn = pg.raw(empty_db.dbname)
    with conn.cursor() as cur:
        cur.execute(SLOW_FUNCTION)
        cur.execute("ALTER TABLE t1 ADD COLUMN qty int")
        cur.execute("INSERT INTO t1 (note, qty) SELECT 'n', g FROM generate_series(1, 300) g")
    write_migration(
        mdir, "002_qty_positive", header="atomic = False",
        migrate='migrator.sql("ALTER TABLE t1 ADD CONSTRAINT qty_ok CHECK (slow.dl_slow(qty) '
                '>= 0) NOT VALID")\nmigrator.sql("ALTER TABLE t1 VALIDATE CONSTRAINT qty_ok")',
        rollback='migrator.sql("ALTER TABLE t1 DROP CONSTRAINT IF EXISTS qty_ok")',
    )
    write_sum(mdir)
    killed: list[int] = []

    def kill_validate() -> None:
        watcher = pg.raw(empty_db.dbname)
        try:
            with watcher.cursor() as cur:
                for _ in range(600):
                    cur.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE "
                                "'ALTER TABLE t1 VALIDATE%%' AND state = 'active' "
                                "AND datname = current_database()")
                    row = cur.fetchone()
                    if row:
                        cur.execute("SELECT pg_terminate_backend(%s)", row)
                        killed.append(row[0])
                        return
                    time.sleep(0.01)
        finally:
            watcher.close()

    thread = threading.Thread(target=kill_validate, daemon=True)
    thread.start()
    with pytest.raises(MigrationError) as caught:
        runner.apply(empty_db, mdir)
    thread.join()
    assert killed, "VALIDATE was not seen running"
    message = str(caught.value)
    assert "was undone: dropped the NOT VALID constraint qty_ok on t1" in message, message
    assert "the session was ended on purpose (pg_terminate_backend)" in message
    with conn.cursor() as cur:  # the old release
        cur.execute("INSERT INTO t1 (note, qty) VALUES ('old', -1)")
        cur.execute("SELECT count(*) FROM pg_constraint WHERE conname = 'qty_ok'")
        assert cur.fetchone() == (0,)
        cur.execute("DELETE FROM t1 WHERE qty < 0")
    conn.close()
    assert [a.name for a in runner.apply(empty_db, mdir)] == ["002_qty_positive"]


def test_undo_waits_out_a_lock_held_by_the_application(
    pg: Server, db: tuple[str, PostgresqlExtDatabase], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The DROP of the undo does not get its lock at first (a long read): it is tried again."""
    name, database = db
    form = next(f for f in FORMS if f.id == "set_not_null_through_check")
    create_migration(Router(database, tmp_path), "v1", form.v1())
    write_sum(tmp_path)
    runner.apply(database, tmp_path)
    database.execute_sql("INSERT INTO items (name, qty) VALUES ('r', 1)")
    create_migration(Router(database, tmp_path), "v2", form.v2())
    write_sum(tmp_path)
    ready, done = threading.Event(), threading.Event()

    def long_read() -> None:  # the application: a transaction that read items, open 1 s
        conn = pg.raw(name)
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM items")
                ready.set()
                time.sleep(1.0)
            conn.rollback()
        finally:
            conn.close()
            done.set()

    real = database.execute_sql

    def flaky(sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if "VALIDATE CONSTRAINT" in sql and not ready.is_set():
            threading.Thread(target=long_read, daemon=True).start()
            assert ready.wait(10)
            real("SELECT 1/0")
        return real(sql, params, *args, **kwargs)

    monkeypatch.setattr(database, "execute_sql", flaky)
    with pytest.raises(MigrationError) as caught:
        runner.apply(database, tmp_path, lock_timeout=0.2)
    assert done.wait(10)
    message = str(caught.value)
    assert "was undone: dropped the NOT VALID constraint items_note_not_null_dl on items" \
        in message, message
    assert "could not undo" not in message
