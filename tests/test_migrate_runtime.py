"""Apply, status, dry run, rollback and failure handling against a real PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg2
import pytest

from datalayer.config import Settings
from datalayer.errors import ChecksumError, LockTimeout, MigrationError
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from tests.migrate_runtime_support import (
    history,
    make_tables,
    tables,
    write_migration,
    write_table_migration,
)
from tests.pgserver import Server


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    return tmp_path / "migrations"


def _has_history_table(pg: Server, dbname: str) -> bool:
    conn = pg.raw(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('migratehistory')")
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


# -- status is read-only -------------------------------------------------------


def test_status_on_empty_database_and_missing_directory_writes_nothing(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    # A folder that does not exist is an error naming it (a typo in --dir must not look fine).
    with pytest.raises(MigrationError, match=f"migrations folder {mdir} does not exist"):
        runner.status(empty_db, mdir)
    assert not mdir.exists(), "status must not create the migrations directory"
    assert not _has_history_table(pg, empty_db.dbname), "status must not create the history table"


def test_status_lists_everything_pending_without_history_table(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    names = make_tables(mdir, 3)
    result = runner.status(empty_db, mdir)
    assert result.pending == names
    assert result.applied == []
    assert not result.up_to_date
    assert not _has_history_table(pg, empty_db.dbname)


def test_router_done_and_todo_are_read_only(pg: Server, empty_db: Settings, mdir: Path) -> None:
    from datalayer.db import Database

    db = Database(empty_db)
    try:
        with db.checkout():
            router = Router(db, mdir)
            assert router.todo == []
            assert router.done == []
    finally:
        db.close_pool()
    assert not mdir.exists()
    assert not _has_history_table(pg, empty_db.dbname)


# -- apply ----------------------------------------------------------------------


def test_apply_runs_pending_in_order_records_hashes_and_reports_times(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    names = make_tables(mdir, 3)
    seen: list[str] = []
    results = runner.apply(empty_db, mdir, on_applied=lambda a: seen.append(a.name))
    assert [r.name for r in results] == names == seen
    assert all(r.seconds > 0 and r.transactional for r in results)
    rows = history(pg, empty_db.dbname)
    assert [r[0] for r in rows] == names
    assert all(r[1] and len(r[1]) == 64 for r in rows), "each row records the file's SHA-256"
    assert {"t1", "t2", "t3", "migratehistory"} <= tables(pg, empty_db.dbname)
    assert runner.apply(empty_db, mdir) == []
    assert runner.status(empty_db, mdir).up_to_date


def test_apply_to_stops_after_the_named_migration(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    names = make_tables(mdir, 4)
    assert [r.name for r in runner.apply(empty_db, mdir, to=names[1])] == names[:2]
    assert [r.name for r in runner.apply(empty_db, mdir, to="003")] == names[2:3]
    assert runner.apply(empty_db, mdir, to=names[0]) == []  # already applied: nothing to do
    with pytest.raises(MigrationError, match="no migration"):
        runner.apply(empty_db, mdir, to="999_nope")
    assert runner.status(empty_db, mdir).pending == names[3:]


def test_apply_refuses_unhashed_files(empty_db: Settings, mdir: Path) -> None:
    make_tables(mdir, 1, hashed=False)
    with pytest.raises(ChecksumError, match=r"migrations\.sum is missing; run `datalayer migrate"):
        runner.apply(empty_db, mdir)


def test_dry_run_prints_sql_and_changes_nothing(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    names = make_tables(mdir, 2)
    results = runner.apply(empty_db, mdir, dry_run=True)
    assert [r.name for r in results] == names
    assert any(s.startswith("CREATE TABLE") and '"t1"' in s for s in results[0].sql)
    assert any('"t2"' in s for s in results[1].sql)
    assert not any("migratehistory" in s for r in results for s in r.sql)
    assert not any(s.upper().startswith("SAVEPOINT") for r in results for s in r.sql)
    assert tables(pg, empty_db.dbname) == set()
    assert not _has_history_table(pg, empty_db.dbname)
    # On a database with some applied: only the pending ones, still nothing changed.
    runner.apply(empty_db, mdir, to=names[0])
    before = (tables(pg, empty_db.dbname), history(pg, empty_db.dbname))
    assert [r.name for r in runner.apply(empty_db, mdir, dry_run=True)] == names[1:]
    assert (tables(pg, empty_db.dbname), history(pg, empty_db.dbname)) == before


def test_failing_migration_leaves_nothing_partial(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    make_tables(mdir, 1)
    write_migration(
        mdir,
        "002_half",
        migrate="""
        migrator.sql("CREATE TABLE half_done (id int)")
        migrator.sql("INSERT INTO t1 (note) VALUES ('written by 002')")
        migrator.sql("SELECT no_such_function()")
        """,
    )
    write_table_migration(mdir, "003_after", "after_half")
    write_sum(mdir)
    with pytest.raises(MigrationError) as info:
        runner.apply(empty_db, mdir)
    message = str(info.value)
    assert "002_half.py failed and was rolled back" in message
    assert "no_such_function" in message
    assert "the 1 migration(s) before it in this run stay applied" in message
    assert "half_done" not in tables(pg, empty_db.dbname)
    assert "after_half" not in tables(pg, empty_db.dbname)
    conn = pg.raw(empty_db.dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM t1")
        assert cur.fetchone()[0] == 0
    conn.close()
    assert [r[0] for r in history(pg, empty_db.dbname)] == ["001_create_t1"]
    # Fixing the never-applied file and re-hashing lets the run finish.
    write_migration(mdir, "002_half", migrate='migrator.sql("CREATE TABLE half_done (id int)")')
    write_sum(mdir)
    assert [r.name for r in runner.apply(empty_db, mdir)] == ["002_half", "003_after"]
    assert [r[0] for r in history(pg, empty_db.dbname)] == [
        "001_create_t1", "002_half", "003_after"
    ]


def test_non_transactional_migration_can_create_index_concurrently(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    make_tables(mdir, 1)
    write_migration(
        mdir,
        "002_index",
        header="atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction",
        migrate='migrator.sql("CREATE INDEX CONCURRENTLY t1_note_idx ON t1 (note)")',
        rollback='migrator.sql("DROP INDEX CONCURRENTLY t1_note_idx")',
    )
    write_sum(mdir)
    results = runner.apply(empty_db, mdir)
    assert [(r.name, r.transactional) for r in results] == [
        ("001_create_t1", True), ("002_index", False)
    ]
    conn = pg.raw(empty_db.dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('t1_note_idx')")
        assert cur.fetchone()[0] == "t1_note_idx"
    conn.close()
    assert runner.rollback(empty_db, mdir, steps=1)[0].name == "002_index"
    assert [r[0] for r in history(pg, empty_db.dbname)] == ["001_create_t1"]


def test_concurrent_index_in_a_transactional_migration_fails_with_the_way_out(
    empty_db: Settings, mdir: Path
) -> None:
    make_tables(mdir, 1)
    write_migration(
        mdir, "002_index", migrate='migrator.sql("CREATE INDEX CONCURRENTLY i ON t1 (note)")'
    )
    write_sum(mdir)
    with pytest.raises(MigrationError, match="cannot run inside a transaction block"):
        runner.apply(empty_db, mdir)


def test_statement_timeout_applies_to_migrations(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    write_migration(mdir, "001_slow", migrate='migrator.sql("SELECT pg_sleep(5)")')
    write_sum(mdir)
    start = time.monotonic()
    with pytest.raises(MigrationError, match=r"statement timeout.*raise --statement-timeout"):
        runner.apply(empty_db, mdir, statement_timeout=0.2)
    assert time.monotonic() - start < 4
    assert history(pg, empty_db.dbname) == []


def test_lock_timeout_applies_to_migrations(pg: Server, empty_db: Settings, mdir: Path) -> None:
    make_tables(mdir, 1)
    runner.apply(empty_db, mdir)
    write_migration(mdir, "002_alter", migrate='migrator.sql("ALTER TABLE t1 ADD COLUMN x int")')
    write_sum(mdir)
    holder = pg.raw(empty_db.dbname)
    holder.autocommit = False
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT * FROM t1")  # holds ACCESS SHARE until rollback
        with pytest.raises(
            MigrationError, match=r"did not get its table lock.* in 1 attempt over.*--lock-retries"
        ):
            runner.apply(empty_db, mdir, lock_timeout=0.2, lock_retries=0)
    finally:
        holder.rollback()
        holder.close()
    assert [r.name for r in runner.apply(empty_db, mdir)] == ["002_alter"]


def test_advisory_lock_wait_ends_with_a_clear_lock_timeout(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    make_tables(mdir, 1)
    holder = pg.raw(empty_db.dbname)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (runner.lock_key(),))
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        for wait in (0.3, 0):
            with pytest.raises(LockTimeout) as info:
                runner.apply(empty_db, mdir, lock_wait=wait)
            message = str(info.value)
            assert f"pid {pid}" in message and "pg_terminate_backend" in message
            assert empty_db.describe() in message
    finally:
        holder.close()
    assert len(runner.apply(empty_db, mdir, lock_wait=5)) == 1


# -- history versus files -------------------------------------------------------


def test_status_flags_modified_even_after_rehash_and_apply_refuses(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    names = make_tables(mdir, 2)
    runner.apply(empty_db, mdir)
    path = mdir / f"{names[0]}.py"
    path.write_text(path.read_text() + "\n# edited after it was applied\n")
    write_sum(mdir)  # someone re-hashed: the checksum file no longer notices
    result = runner.status(empty_db, mdir)
    assert result.modified == [names[0]]
    assert result.checksum_problems == []
    assert not result.up_to_date
    with pytest.raises(MigrationError, match=rf"{names[0]}\.py changed after it was applied; "
                       "restore it and add a new migration instead"):
        runner.apply(empty_db, mdir)


def test_status_flags_missing_and_apply_refuses(empty_db: Settings, mdir: Path) -> None:
    names = make_tables(mdir, 3)
    runner.apply(empty_db, mdir)
    (mdir / f"{names[2]}.py").unlink()
    write_sum(mdir)
    result = runner.status(empty_db, mdir)
    assert result.missing == [names[2]]
    assert result.applied == names
    with pytest.raises(MigrationError, match=rf"{names[2]}\.py was applied .* not on disk"):
        runner.apply(empty_db, mdir)


def test_pending_file_sorting_before_an_applied_one_is_refused(
    empty_db: Settings, mdir: Path
) -> None:
    make_tables(mdir, 1)
    write_table_migration(mdir, "005_late", "late")
    write_sum(mdir)
    runner.apply(empty_db, mdir)
    write_table_migration(mdir, "003_early", "early")
    write_sum(mdir)  # hashed, but the database already has 005
    with pytest.raises(MigrationError, match=r"003_early\.py is pending but sorts before 005_late"):
        runner.apply(empty_db, mdir)


def test_history_table_written_by_upstream_is_adopted(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    from peewee_migrate import Router as UpstreamRouter
    from playhouse.postgres_ext import PostgresqlExtDatabase

    names = make_tables(mdir, 2)
    upstream_db = PostgresqlExtDatabase(empty_db.dbname, **{
        k: v for k, v in empty_db.connect_kwargs().items() if k != "dbname"
    })
    UpstreamRouter(upstream_db, migrate_dir=mdir).run(names[0])
    upstream_db.close()
    assert history(pg, empty_db.dbname) == [(names[0], None)]  # no checksum column
    assert runner.status(empty_db, mdir).to_dict() == {
        "applied": names[:1], "pending": names[1:], "modified": [], "missing": [],
        "problems": [],
        "invalid_indexes": [], "not_valid_constraints": [],
    }
    runner.apply(empty_db, mdir)
    rows = history(pg, empty_db.dbname)
    assert [r[0] for r in rows] == names
    assert all(r[1] for r in rows), "the upstream row gets its hash filled in"


# -- rollback ----------------------------------------------------------------------


def test_rollback_steps_undoes_the_last_ones_newest_first(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    names = make_tables(mdir, 3)
    runner.apply(empty_db, mdir)
    results = runner.rollback(empty_db, mdir, steps=2)
    assert [r.name for r in results] == [names[2], names[1]]
    assert [r[0] for r in history(pg, empty_db.dbname)] == names[:1]
    assert tables(pg, empty_db.dbname) == {"t1", "migratehistory"}
    with pytest.raises(MigrationError, match="cannot roll back 2 migration"):
        runner.rollback(empty_db, mdir, steps=2)
    runner.rollback(empty_db, mdir)
    with pytest.raises(MigrationError, match="nothing to roll back"):
        runner.rollback(empty_db, mdir)
    assert runner.status(empty_db, mdir).pending == names


def test_failing_rollback_is_rolled_back(pg: Server, empty_db: Settings, mdir: Path) -> None:
    make_tables(mdir, 1)
    write_migration(
        mdir,
        "002_bad_rollback",
        migrate='migrator.sql("CREATE TABLE keep_me (id int)")',
        rollback='migrator.sql("DROP TABLE keep_me")\nmigrator.sql("SELECT 1/0")',
    )
    write_sum(mdir)
    runner.apply(empty_db, mdir)
    with pytest.raises(MigrationError, match=r"rollback of .*002_bad_rollback\.py failed"):
        runner.rollback(empty_db, mdir)
    assert "keep_me" in tables(pg, empty_db.dbname)
    assert [r[0] for r in history(pg, empty_db.dbname)][-1] == "002_bad_rollback"


def test_a_migration_using_the_orm_state_of_earlier_ones(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    # 002 finds the model that 001 created through migrator.orm: the replay must work.
    make_tables(mdir, 1)
    write_migration(
        mdir,
        "002_add_field",
        header="import peewee as pw",
        migrate='migrator.add_fields("t1", size=pw.IntegerField(null=True))',
        rollback='migrator.remove_fields("t1", "size")',
    )
    write_sum(mdir)
    runner.apply(empty_db, mdir, to="001")
    runner.apply(empty_db, mdir)  # a new process would start from the replay, as here
    conn = pg.raw(empty_db.dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT size FROM t1")
    conn.close()
    runner.rollback(empty_db, mdir)
    conn = pg.raw(empty_db.dbname)
    with conn.cursor() as cur, pytest.raises(psycopg2.errors.UndefinedColumn):
        cur.execute("SELECT size FROM t1")
    conn.close()


def test_apply_accepts_a_database_and_leaves_its_connection_unlocked(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    from datalayer.db import Database

    make_tables(mdir, 2)
    db = Database(empty_db.replace(max_open_conns=1, max_idle_conns=1))
    try:
        assert len(runner.apply(db, mdir)) == 2
        with db.checkout():
            held = db.execute_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = "
                "pg_backend_pid()"
            ).fetchone()[0]
            assert held == 0, "the pooled connection must not keep the migration lock"
            assert db.execute_sql("SHOW lock_timeout").fetchone()[0] == "0"
        assert runner.status(db, mdir).up_to_date
    finally:
        db.close_pool()
