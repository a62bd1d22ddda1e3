"""``apply`` under live traffic: lock_timeout retries, INVALID indexes, the polled migration lock.

Every test runs against a real PostgreSQL with other sessions holding real
locks: a reader's ACCESS SHARE, a writer's open INSERT, a second migrator
waiting for the migration lock, an apply process killed mid-build.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from datalayer.config import Settings
from datalayer.errors import MigrationError
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime import prechecks
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.lock import lock_key
from datalayer.migrate.runtime.status import status as migration_status
from tests.migrate_runtime_support import (
    cli_command,
    cli_env,
    history,
    make_tables,
    run_cli,
    write_migration,
)
from tests.pgserver import Server

UNIQUE_CIC = "CREATE UNIQUE INDEX CONCURRENTLY {exists}t1_note_key ON t1 (note)"


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    return tmp_path / "migrations"


@pytest.fixture
def t1(pg: Server, empty_db: Settings, mdir: Path) -> Iterator[psycopg2.extensions.connection]:
    """Table t1 (id, note) made by migration 001 with 2000 rows; yields an autocommit connection."""
    make_tables(mdir, 1)
    runner.apply(empty_db, mdir)
    conn = pg.raw(empty_db.dbname)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO t1 (note) SELECT 'n' || g FROM generate_series(1, 2000) g")
    try:
        yield conn
    finally:
        conn.close()


def _one(conn: psycopg2.extensions.connection, sql: str, *params: object) -> object:
    with conn.cursor() as cur:
        cur.execute(sql, params or None)
        row = cur.fetchone()
    return row[0] if row else None


def _index_state(conn: psycopg2.extensions.connection, name: str) -> str:
    """Return 'valid', 'INVALID' or 'absent' for index ``name``."""
    valid = _one(
        conn,
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %s",
        name,
    )
    return "absent" if valid is None else ("valid" if valid else "INVALID")


def _names(pg: Server, empty_db: Settings) -> list[str]:
    return [row[0] for row in history(pg, empty_db.dbname)]


def _hold(
    pg: Server, dbname: str, sql: str, seconds: float, ready: threading.Event
) -> threading.Thread:
    """Run ``sql`` in a transaction of its own connection, keep it open ``seconds``, roll back."""

    def hold() -> None:
        conn = pg.raw(dbname)
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
            ready.set()
            time.sleep(seconds)
            conn.rollback()
        finally:
            conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert ready.wait(10)
    return thread


# -- lock_timeout and retries ------------------------------------------------------


def test_lock_timeout_is_retried_and_other_queries_wait_at_most_about_that(
    pg: Server, empty_db: Settings, mdir: Path, t1: psycopg2.extensions.connection
) -> None:
    write_migration(mdir, "002_alter", migrate='migrator.sql("ALTER TABLE t1 ADD COLUMN x int")')
    write_sum(mdir)
    longest = [0.0]
    stop = threading.Event()

    def reader() -> None:  # the application: short queries on t1 all along
        conn = pg.raw(empty_db.dbname)
        try:
            while not stop.is_set():
                start = time.monotonic()
                _one(conn, "SELECT count(*) FROM t1")
                longest[0] = max(longest[0], time.monotonic() - start)
                time.sleep(0.02)
        finally:
            conn.close()

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    # A long transaction that read t1 keeps ACCESS SHARE for 3 s: ALTER TABLE cannot have it.
    holder = _hold(pg, empty_db.dbname, "SELECT count(*) FROM t1", 3.0, threading.Event())
    retries: list[runner.Retry] = []
    try:
        applied = runner.apply(empty_db, mdir, lock_timeout=0.5, on_retry=retries.append)
    finally:
        stop.set()
        holder.join()
        reading.join()
    assert [a.name for a in applied] == ["002_alter"]
    assert applied[0].attempts == len(retries) + 1 >= 2
    assert all(r.reason == "lock not granted within 0.5 s" for r in retries)
    assert [r.attempt for r in retries] == list(range(1, len(retries) + 1))
    assert _names(pg, empty_db) == ["001_create_t1", "002_alter"]
    assert _one(t1, "SELECT count(x) FROM t1") == 0  # the column is there
    # Queued behind the waiting ALTER, a reader waits at most about the lock_timeout (0.5 s),
    # not the 3 s the holder kept its lock (generous margin: noisy shared host).
    assert longest[0] < 2.0, f"a reader waited {longest[0]:.2f} s"


def test_lock_retries_exhausted_is_one_clear_line_and_nothing_recorded(
    pg: Server, empty_db: Settings, mdir: Path, t1: psycopg2.extensions.connection
) -> None:
    write_migration(
        mdir,
        "002_alter",
        migrate="""
        migrator.sql("ALTER TABLE t1 ADD COLUMN y int")
        migrator.sql("ALTER TABLE t1 ADD COLUMN x int")
        """,
    )
    write_sum(mdir)
    holder = pg.raw(empty_db.dbname)
    holder.autocommit = False
    try:
        _one(holder, "SELECT count(*) FROM t1")  # ACCESS SHARE until rollback
        result = run_cli(
            empty_db, mdir, "migrate", "apply", "--lock-timeout", "0.2", "--lock-retries", "2"
        )
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 1, result.stdout + result.stderr
    retry_lines = [line for line in result.stdout.splitlines() if line.startswith("retry ")]
    assert len(retry_lines) == 2, result.stdout
    assert "002_alter: lock not granted within 0.2 s (attempt 1 of 3)" in retry_lines[0]
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "Traceback" not in result.stderr, result.stderr
    assert error[0].startswith("error: migration ") and "002_alter.py" in error[0]
    assert "in 3 attempts" in error[0] and "none of it took effect" in error[0]
    assert "--lock-retries" in error[0]
    assert _names(pg, empty_db) == ["001_create_t1"]
    assert _one(t1, "SELECT count(*) FROM pg_attribute WHERE attrelid = 't1'::regclass "
                    "AND attname IN ('x', 'y')") == 0
    # Once the lock is free the same command applies it.
    assert run_cli(empty_db, mdir, "migrate", "apply").returncode == 0
    assert _names(pg, empty_db) == ["001_create_t1", "002_alter"]


# -- INVALID indexes ---------------------------------------------------------------


def test_concurrent_index_names_are_read_from_the_statements() -> None:
    from datalayer.migrate.runtime.online import IndexRef, concurrent_indexes

    found = concurrent_indexes([
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON users (email)",
        'create index concurrently "Odd ""Name""" on only "app"."Items" USING btree (x)',
        "CREATE INDEX CONCURRENTLY Mixed ON app . t (x) WHERE x > 0",
        "CREATE INDEX plain_idx ON t (x)",  # not concurrent: a failure rolls it back
        "CREATE INDEX CONCURRENTLY ON t (x)",  # unnamed: nothing to look up
        "DROP INDEX CONCURRENTLY IF EXISTS users_email_key",
    ])
    assert found == [
        IndexRef("users_email_key", "users"),
        IndexRef('Odd "Name"', '"app"."Items"'),
        IndexRef("mixed", "app.t"),
    ]


def _unique_index_migration(mdir: Path, exists: str = "IF NOT EXISTS ") -> None:
    write_migration(
        mdir,
        "002_unique_note",
        header="atomic = False",
        migrate=f'migrator.sql("{UNIQUE_CIC.format(exists=exists)}")',
        rollback='migrator.sql("DROP INDEX CONCURRENTLY IF EXISTS t1_note_key")',
    )
    write_sum(mdir)


def _duplicates_rejected(conn: psycopg2.extensions.connection) -> None:
    with pytest.raises(psycopg2.errors.UniqueViolation), conn.cursor() as cur:
        cur.execute("INSERT INTO t1 (note) VALUES ('n1')")


def test_failed_concurrent_build_is_dropped_and_not_recorded(
    pg: Server, empty_db: Settings, mdir: Path, t1: psycopg2.extensions.connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The duplicates arrive after the checks before DDL found none, as the build starts.
    checked = prechecks.verify

    def then_duplicates(*args: Any, **kwargs: Any) -> None:
        checked(*args, **kwargs)
        _one(t1, "INSERT INTO t1 (note) VALUES ('n1'), ('n2') RETURNING id")

    monkeypatch.setattr(prechecks, "verify", then_duplicates)
    _unique_index_migration(mdir)
    with pytest.raises(MigrationError) as info:
        runner.apply(empty_db, mdir)
    message = str(info.value)
    assert "could not create unique index" in message
    assert "the INVALID index public.t1_note_key its concurrent build left was dropped" in message
    assert "remove the duplicate rows" in message
    assert _index_state(t1, "t1_note_key") == "absent"
    assert _names(pg, empty_db) == ["001_create_t1"]
    assert migration_status(empty_db, mdir).invalid_indexes == []
    # The duplicates removed, the same migration builds the index and is recorded once.
    _one(t1, "DELETE FROM t1 WHERE id > 2000 RETURNING id")
    monkeypatch.setattr(prechecks, "verify", checked)
    assert [a.name for a in runner.apply(empty_db, mdir)] == ["002_unique_note"]
    assert _index_state(t1, "t1_note_key") == "valid"
    assert _names(pg, empty_db) == ["001_create_t1", "002_unique_note"]
    _duplicates_rejected(t1)


def test_lock_timeout_inside_a_concurrent_build_drops_its_invalid_index_and_retries(
    pg: Server, empty_db: Settings, mdir: Path, t1: psycopg2.extensions.connection
) -> None:
    _unique_index_migration(mdir)
    # An open write transaction: the build waits for it, longer than the lock_timeout.
    writer = _hold(pg, empty_db.dbname, "INSERT INTO t1 (note) VALUES ('w')", 3.0,
                   threading.Event())
    retries: list[runner.Retry] = []
    try:
        applied = runner.apply(empty_db, mdir, lock_timeout=0.5, on_retry=retries.append)
    finally:
        writer.join()
    assert [a.name for a in applied] == ["002_unique_note"]
    # DROP INDEX CONCURRENTLY waits for the writer too: the index goes once the writer is done.
    assert retries[0].reason == "lock not granted within 0.5 s", retries
    assert retries[-1].dropped == ("public.t1_note_key",), retries
    assert _index_state(t1, "t1_note_key") == "valid"
    assert _names(pg, empty_db) == ["001_create_t1", "002_unique_note"]
    _duplicates_rejected(t1)


def _waiting_build(conn: psycopg2.extensions.connection, index: str) -> int | None:
    """Return the pid of the backend building ``index`` in this database, once it waits.

    Read from ``pg_stat_progress_create_index`` of this connection's database, by the
    index's name, in the phase "waiting for writers before build": a CREATE INDEX
    CONCURRENTLY of another database on the same server (another test run) is never
    taken for it (the pg_stat_activity text match this replaced took one, then waited for
    the wrong backend to end), and the catalog entry exists, INVALID, when it answers.
    """
    pid = _one(
        conn,
        "SELECT p.pid FROM pg_stat_progress_create_index p "
        "JOIN pg_class c ON c.oid = p.index_relid "
        "WHERE p.datname = current_database() AND c.relname = %s "
        "AND p.phase = 'waiting for writers before build'",
        index,
    )
    return int(pid) if isinstance(pid, int) else None


def _wait_for(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    """Poll ``predicate`` until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.mark.parametrize("exists", ["IF NOT EXISTS ", ""], ids=["if-not-exists", "plain"])
def test_apply_killed_mid_concurrent_build_then_rerun(
    pg: Server, empty_db: Settings, mdir: Path, t1: psycopg2.extensions.connection, exists: str
) -> None:
    """docs/migrations/apply.md's ``atomic = False`` example, killed mid-build, is safe to rerun."""
    _unique_index_migration(mdir, exists)
    # Keep the build waiting (phase "waiting for writers") so the kill lands mid-build.
    writer = pg.raw(empty_db.dbname)
    writer.autocommit = False
    _one(writer, "INSERT INTO t1 (note) VALUES ('w') RETURNING id")
    proc = subprocess.Popen(
        cli_command("migrate", "apply", "--lock-timeout", "60"),
        env=cli_env(empty_db, mdir),
        cwd=mdir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # The kill lands while the build waits for the writer, which stays open until the
        # build's own backend has ended: the build can never complete in between.
        backend = _wait_for(lambda: _waiting_build(t1, "t1_note_key"),
                            "the build to wait for the writer")
        assert _index_state(t1, "t1_note_key") == "INVALID"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # The server notices the dead client (client_connection_check_interval) and
        # cancels the build: the INVALID index stays behind, as after any killed run.
        _wait_for(lambda: _one(t1, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                               backend) == 0, "the killed run's backend to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        writer.rollback()
        writer.close()
    assert _index_state(t1, "t1_note_key") == "INVALID"
    assert _names(pg, empty_db) == ["001_create_t1"]
    status = migration_status(empty_db, mdir)
    assert [i.name for i in status.invalid_indexes] == ["t1_note_key"]
    assert status.pending == ["002_unique_note"]

    result = run_cli(empty_db, mdir, "migrate", "apply")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dropped INVALID index public.t1_note_key" in result.stdout
    assert "applied 002_unique_note" in result.stdout
    assert _index_state(t1, "t1_note_key") == "valid"
    assert _names(pg, empty_db) == ["001_create_t1", "002_unique_note"]
    assert migration_status(empty_db, mdir).invalid_indexes == []
    _duplicates_rejected(t1)


# -- status --------------------------------------------------------------------------


def test_status_lists_invalid_indexes_and_not_valid_constraints(
    pg: Server, empty_db: Settings, mdir: Path, t1: psycopg2.extensions.connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _one(t1, "INSERT INTO t1 (note) VALUES ('n1') RETURNING id")
    with pytest.raises(psycopg2.errors.UniqueViolation), t1.cursor() as cur:
        cur.execute(UNIQUE_CIC.format(exists=""))  # leaves t1_note_key INVALID
    _one(t1, "ALTER TABLE t1 ADD CONSTRAINT t1_note_short CHECK (length(note) < 10) NOT VALID; "
             "SELECT 1")
    result = migration_status(empty_db, mdir)
    assert [(i.schema, i.name, i.table, i.building) for i in result.invalid_indexes] == [
        ("public", "t1_note_key", "t1", False)
    ]
    assert "UNIQUE INDEX t1_note_key" in result.invalid_indexes[0].definition
    assert [(c.schema, c.name, c.table) for c in result.not_valid_constraints] == [
        ("public", "t1_note_short", "t1")
    ]
    assert "NOT VALID" in result.not_valid_constraints[0].definition
    assert result.up_to_date  # reported, not a migration state

    text = run_cli(empty_db, mdir, "migrate", "status")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "INVALID index public.t1_note_key on t1 (a failed concurrent build)" in text.stdout
    assert "NOT VALID constraint t1_note_short on public.t1: CHECK" in text.stdout
    data = json.loads(run_cli(empty_db, mdir, "migrate", "status", "--json").stdout)
    assert [i["name"] for i in data["invalid_indexes"]] == ["t1_note_key"]
    assert [c["name"] for c in data["not_valid_constraints"]] == ["t1_note_short"]

    with t1.cursor() as cur:
        cur.execute("ALTER TABLE t1 VALIDATE CONSTRAINT t1_note_short")
        cur.execute("DROP INDEX CONCURRENTLY t1_note_key")
    cleared = migration_status(empty_db, mdir)
    assert cleared.invalid_indexes == [] and cleared.not_valid_constraints == []


# -- the migration lock ----------------------------------------------------------------


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_index_build_completes_while_a_second_migrator_waits(
    pg: Server, empty_db: Settings, mdir: Path, t1: psycopg2.extensions.connection, trial: int
) -> None:
    """A migrator waiting for the migration lock holds no snapshot a concurrent build waits for."""
    write_migration(mdir, "002_alter", migrate='migrator.sql("ALTER TABLE t1 ADD COLUMN x int")')
    write_sum(mdir)
    first = pg.raw(empty_db.dbname)  # the first migrator: holds the lock, builds an index
    outcome: list[object] = []
    try:
        _one(first, "SELECT pg_advisory_lock(%s)", lock_key())

        def second() -> None:
            try:
                outcome.append(runner.apply(empty_db, mdir, lock_wait=60))
            except Exception as exc:  # reported by the assertion below
                outcome.append(exc)

        waiting = threading.Thread(target=second, daemon=True)
        waiting.start()
        _wait_for(
            lambda: _one(first, "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE "
                                "'%%pg_try_advisory_lock%%' AND pid <> pg_backend_pid() "
                                "AND datname = current_database()") == 1,
            "the second migrator to poll",
        )
        time.sleep(0.5)  # it keeps waiting
        # With a blocking pg_advisory_lock the waiter's snapshot would hold this build
        # until the statement_timeout cancelled it.
        with first.cursor() as cur:
            cur.execute("SET statement_timeout = '15s'")
            cur.execute("CREATE INDEX CONCURRENTLY t1_note_idx ON t1 (note)")
        assert _index_state(first, "t1_note_idx") == "valid"
        assert waiting.is_alive() and not outcome, "the second migrator must still be waiting"
        _one(first, "SELECT pg_advisory_unlock(%s)", lock_key())
        waiting.join(60)
    finally:
        first.close()
    assert len(outcome) == 1 and isinstance(outcome[0], list), outcome
    assert [a.name for a in outcome[0]] == ["002_alter"]
    assert _names(pg, empty_db) == ["001_create_t1", "002_alter"]


def test_status_marks_an_index_still_being_built(
    pg: Server, empty_db: Settings, mdir: Path, t1: psycopg2.extensions.connection
) -> None:
    writer = pg.raw(empty_db.dbname)
    writer.autocommit = False
    _one(writer, "INSERT INTO t1 (note) VALUES ('w') RETURNING id")  # the build waits for it
    builder = pg.raw(empty_db.dbname)
    build = "CREATE INDEX CONCURRENTLY t1_note_idx ON t1 (note)"
    building = threading.Thread(target=lambda: builder.cursor().execute(build), daemon=True)
    building.start()
    try:
        _wait_for(lambda: _index_state(t1, "t1_note_idx") == "INVALID", "the build to start")
        found = migration_status(empty_db, mdir).invalid_indexes
        assert [(i.name, i.building) for i in found] == [("t1_note_idx", True)]
    finally:
        writer.rollback()
        writer.close()
        building.join(30)
        builder.close()
    assert _index_state(t1, "t1_note_idx") == "valid"
    assert migration_status(empty_db, mdir).invalid_indexes == []
