"""The client-side watchdog: a frozen server cannot hold a thread for ever.

Freezing is done to an embedded server of our own (never the shared one):
the backend of a connection is stopped (SIGSTOP) while its statement runs,
or the whole server (postmaster and every child).  The statement's caller
must get ``ConnectionLost`` within about DB_CLIENT_TIMEOUT while other
threads go on, and the pool must hold no leaked slot once the server is back.
A statement shorter than the limit, and a long migration, are never cut.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee
import psycopg2
import pytest
from click.testing import CliRunner

from datalayer import _sql
from datalayer._watchdog import Watchdog
from datalayer.cli import main
from datalayer.config import (
    CLIENT_TIMEOUT_MARGIN,
    DEFAULT_CLIENT_TIMEOUT,
    Settings,
    load_settings,
)
from datalayer.db import Database, database
from datalayer.errors import ConfigError, ConnectionLost, DatabaseUnavailable
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import write_sum
from tests._faults_helpers import OwnServer, Stopwatch, own_server
from tests.migrate_runtime_support import history, write_migration
from tests.pgserver import Server

CLIENT_TIMEOUT = 1.5
APP = "datalayer-watchdog"
VICTIM_SQL = "SELECT pg_sleep(1.0) AS watchdog_victim"  # shorter than CLIENT_TIMEOUT


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement_timeout", "client_timeout", "effective"),
    [
        (None, None, DEFAULT_CLIENT_TIMEOUT),  # neither set: the default, never for ever
        (10.0, None, 10.0 + CLIENT_TIMEOUT_MARGIN),  # the server's timeout fires first
        (10.0, 0.0, None),  # explicit 0: off
        (10.0, 3.0, 3.0),
        (None, 3.0, 3.0),
    ],
)
def test_client_timeout_default_follows_statement_timeout(
    statement_timeout: float | None, client_timeout: float | None, effective: float | None
) -> None:
    s = Settings(statement_timeout=statement_timeout, client_timeout=client_timeout)
    assert s.effective_client_timeout == effective


def test_client_timeout_from_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv("DB_PASSWORD", "sentinel-Pw-77")
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT", "30s")
    assert load_settings().effective_client_timeout == 35.0
    monkeypatch.setenv("DB_CLIENT_TIMEOUT", "1500ms")
    assert load_settings().effective_client_timeout == 1.5
    monkeypatch.setenv("DB_CLIENT_TIMEOUT", "0")
    assert load_settings().effective_client_timeout is None
    monkeypatch.setenv("DB_CLIENT_TIMEOUT", "soon")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "DB_CLIENT_TIMEOUT" in info.value.problems
    assert "sentinel-Pw-77" not in str(info.value)
    with pytest.raises(ConfigError, match="DB_CLIENT_TIMEOUT"):
        Settings(client_timeout=-1.0)


# -- the scan, on a socket pair (no server) ----------------------------------------------


class _FakeConn:
    """Stands in a psycopg2 connection: a socket whose peer sees what the watchdog does."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()


def test_scan_shuts_down_only_overdue_statements_and_never_closes_the_descriptor() -> None:
    wd = Watchdog(1.0, name="unit")
    pairs = [socket.socketpair() for _ in range(4)]
    overdue, young, lifted, closed = (_FakeConn(a) for a, _ in pairs)
    try:
        now = time.monotonic()
        wd.inflight[overdue] = now - 5
        wd.inflight[young] = now - 0.1
        wd.inflight[lifted] = now - 5
        wd.inflight[closed] = now - 5
        pairs[3][0].close()  # its fileno() now raises: skipped quietly
        with wd.limit(lifted, None):
            assert wd.scan() == 1
        assert wd.timed_out(overdue) == 1.0
        assert wd.timed_out(young) is None and wd.timed_out(lifted) is None
        pairs[0][1].settimeout(2)
        assert pairs[0][1].recv(1) == b""  # the peer saw the shutdown
        assert overdue.fileno() >= 0  # the connection's own descriptor is still open
        assert pairs[0][0].recv(1) == b""  # and reads EOF: libpq's blocked recv wakes
        # The limit is back after the block: the next scan catches the lifted one.
        assert wd.scan() == 1 and wd.timed_out(lifted) == 1.0
        # A registration replaced by a newer one (the next statement) is left alone.
        wd.inflight.pop(overdue)
        wd.inflight[young] = time.monotonic()
        assert wd.scan() == 0 and wd.fired_total == 2
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_watchdog_off_starts_no_thread() -> None:
    wd = Watchdog(None)
    wd.start()
    assert wd._thread is None
    ref = weakref.ref(wd)
    del wd
    assert ref() is None


# -- against a server of our own -------------------------------------------------------


@pytest.fixture(scope="module")
def srv() -> Iterator[OwnServer]:
    with own_server("datalayer-watchdog-") as server:
        yield server


@pytest.fixture
def configure(srv: OwnServer) -> Iterator[Callable[..., Database]]:
    """Point the package's database at our server; always thaw and close afterwards."""

    def make(**overrides: Any) -> Database:
        srv.start()
        options = {"application_name": APP, "client_timeout": CLIENT_TIMEOUT,
                   "connect_timeout": 2, "max_open_conns": 5, "max_idle_conns": 5, **overrides}
        return database.configure(srv.settings(**options))

    yield make
    srv.thaw()
    database.close_pool()
    srv.start()


def _active_victim(srv: OwnServer, within: float = 0.8) -> int:
    """Return the backend pid running VICTIM_SQL, polling for at most ``within`` s."""
    conn = srv.admin()
    try:
        watch = Stopwatch()
        while watch.elapsed < within:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                    "AND state = 'active' AND query = %s",
                    (APP, VICTIM_SQL),
                )
                row = cur.fetchone()
            if row:
                return int(row[0])
            time.sleep(0.005)
    finally:
        conn.close()
    raise AssertionError("the victim statement was not seen running")


def _gone(srv: OwnServer, pid: int, within: float = 8.0) -> bool:
    watch = Stopwatch()
    while watch.elapsed < within:
        if srv.query("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == [(0,)]:
            return True
        time.sleep(0.1)
    return False


class _Victim(threading.Thread):
    """Run ``call`` once and record what came out of it and when."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(name="victim", daemon=True)
        self.call = call
        self.outcome: object = None
        self.elapsed = 0.0

    def run(self) -> None:
        watch = Stopwatch()
        try:
            self.call()
            self.outcome = "completed"
        except Exception as exc:  # examined by the test
            self.outcome = exc
        self.elapsed = watch.elapsed


def _peewee_in_transaction(db: Database) -> None:
    with db.checkout(), db.atomic():
        db.execute_sql("SELECT 1")
        db.execute_sql(VICTIM_SQL)


def _fast_path(db: Database) -> None:
    _sql._on_checkout(db, VICTIM_SQL, (), _sql._ONE)


def _held_connection(db: Database) -> None:
    with db.checkout():
        _sql._run(db, VICTIM_SQL, ()).fetchone()


@pytest.mark.slow
@pytest.mark.parametrize(
    "victim_call",
    [_peewee_in_transaction, _fast_path, _held_connection],
    ids=["peewee-atomic", "fast-path", "held-run"],
)
def test_frozen_backend_mid_statement_raises_connection_lost_others_unaffected(
    srv: OwnServer,
    configure: Callable[..., Database],
    victim_call: Callable[[Database], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = configure()
    caplog.set_level(logging.WARNING, logger="datalayer._watchdog")
    done = threading.Event()
    latencies: list[float] = []
    other_errors: list[BaseException] = []

    def other() -> None:  # statements on other connections of the same pool
        while not done.is_set():
            watch = Stopwatch()
            try:
                with db.checkout():
                    db.execute_sql("SELECT 1").fetchone()
            except BaseException as exc:  # reported by the test
                other_errors.append(exc)
                return
            latencies.append(watch.elapsed)
            time.sleep(0.005)

    victim = _Victim(lambda: victim_call(db))
    others = threading.Thread(target=other, name="other")
    others.start()
    victim.start()
    try:
        pid = _active_victim(srv)
        srv.freeze(pid)
        frozen_at = len(latencies)
        victim.join(CLIENT_TIMEOUT + 10)
        assert not victim.is_alive(), "the victim hung"
        during = len(latencies) - frozen_at
    finally:
        srv.thaw()
        done.set()
        others.join(10)
    print(f"\nfrozen backend ({victim_call.__name__}): {type(victim.outcome).__name__} after "
          f"{victim.elapsed:.2f} s; other thread: {during} statements meanwhile, slowest "
          f"{max(latencies) * 1000:.1f} ms; pool {db.pool_stats()}")
    assert isinstance(victim.outcome, ConnectionLost), victim.outcome
    assert "DB_CLIENT_TIMEOUT" in str(victim.outcome)
    assert CLIENT_TIMEOUT - 0.1 <= victim.elapsed < CLIENT_TIMEOUT + 1.5
    assert other_errors == []
    assert during >= 20 and max(latencies) < 1.0  # the other thread went on, unhindered
    records = [r.getMessage() for r in caplog.records if r.name == "datalayer._watchdog"]
    assert len(records) == 1 and "pg_sleep" not in records[0]
    assert db.pool.watchdog.fired_total == 1
    # No leaked slot: nothing checked out, the victim's connection closed, not pooled.
    stats = db.pool_stats()
    assert stats.in_use == 0 and stats.open == stats.idle <= 5
    # The backend, thawed, sees its client gone and ends; the pool works as before.
    assert _gone(srv, pid), "the thawed backend did not end"
    with db.checkout(), db.atomic():
        assert db.execute_sql("SELECT 2").fetchone() == (2,)
    assert _sql._on_checkout(db, "SELECT 3", (), _sql._ONE) == (3,)
    assert db.pool_stats().in_use == 0


@pytest.mark.slow
def test_frozen_server_in_flight_statement_and_new_connects_bounded(
    srv: OwnServer, configure: Callable[..., Database]
) -> None:
    db = configure()
    pool = db.pool
    warm = [pool.getconn() for _ in range(3)]  # three idle connections to start with
    for raw in warm:
        pool.putconn(raw)
    frozen = threading.Event()
    held_took: list[float] = []

    def holder() -> None:  # holds a checkout; its next statement goes to a frozen backend
        with db.checkout():
            db.execute_sql("SELECT 1")
            frozen.wait(10)
            watch = Stopwatch()
            try:
                db.execute_sql("SELECT 2")
            finally:
                held_took.append(watch.elapsed)

    victim = _Victim(lambda: _peewee_in_transaction(db))
    held = _Victim(holder)
    held.start()
    victim.start()
    try:
        _active_victim(srv)
        srv.freeze(srv.postmaster_pid)  # first, so it starts no new child meanwhile
        for pid in sorted(srv.pids() - {srv.postmaster_pid}):
            srv.freeze(pid)
        frozen.set()
        victim.join(CLIENT_TIMEOUT + 10)
        held.join(CLIENT_TIMEOUT + 10)
        assert not victim.is_alive() and not held.is_alive(), "a caller hung"

        # The idle pooled connection is checked with a round trip before it is handed
        # out (validate_after 0 here): that ping is bounded too, then a new connect
        # fails within connect_timeout (2 s).
        pool.validate_after = 0.0
        idle = _Victim(lambda: _sql._on_checkout(db, "SELECT 1", (), _sql._ONE))
        idle.start()
        idle.join(CLIENT_TIMEOUT + 10)

        # No connection left: a new connect is bounded by connect_timeout, and it
        # does not hold the pool's lock meanwhile.
        assert db.pool_stats().open == 0
        newcomer = _Victim(lambda: _sql._on_checkout(db, "SELECT 1", (), _sql._ONE))
        newcomer.start()
        time.sleep(0.3)
        watch = Stopwatch()
        assert db.pool_stats().open == 1 and watch.elapsed < 0.3
        newcomer.join(15)
    finally:
        srv.thaw()
    print(f"\nfrozen server: in flight {type(victim.outcome).__name__} after "
          f"{victim.elapsed:.2f} s; next statement on a held connection "
          f"{type(held.outcome).__name__} after {held_took[0]:.2f} s; "
          f"idle pooled {type(idle.outcome).__name__} after {idle.elapsed:.2f} s; "
          f"new connect {type(newcomer.outcome).__name__} after {newcomer.elapsed:.2f} s")
    assert isinstance(victim.outcome, ConnectionLost), victim.outcome
    assert victim.elapsed < CLIENT_TIMEOUT + 1.5
    assert isinstance(held.outcome, ConnectionLost), held.outcome
    assert "DB_CLIENT_TIMEOUT" in str(held.outcome)
    assert held_took[0] < CLIENT_TIMEOUT + 1.5
    assert isinstance(idle.outcome, DatabaseUnavailable), idle.outcome
    assert "cannot connect" in str(idle.outcome)
    assert idle.elapsed < CLIENT_TIMEOUT + 2 + 2
    assert isinstance(newcomer.outcome, DatabaseUnavailable), newcomer.outcome
    assert not isinstance(newcomer.outcome, ConnectionLost)
    assert newcomer.elapsed < 2 + 2
    assert pool.watchdog.fired_total == 3  # the in-flight, the held and the ping
    # Back: the pool works, nothing leaked.
    pool.validate_after = 2.0
    assert _sql._on_checkout(db, "SELECT 1", (), _sql._ONE) == (1,)
    with db.checkout():
        assert db.execute_sql("SELECT 2").fetchone() == (2,)
    stats = db.pool_stats()
    assert stats.in_use == 0 and stats.open == stats.idle == 1


@pytest.mark.slow
def test_closing_the_pool_is_not_held_up_by_a_frozen_statement(
    srv: OwnServer, configure: Callable[..., Database]
) -> None:
    # psycopg2's close() waits for the statement in flight on that connection: the
    # watchdog must outlive the pool's close() to end it.
    db = configure()
    victim = _Victim(lambda: _peewee_in_transaction(db))
    victim.start()
    closer = _Victim(db.close_pool)  # in a thread: without the fix it would hang here
    try:
        srv.freeze(_active_victim(srv))
        closer.start()
        closer.join(CLIENT_TIMEOUT + 5)
        hung = closer.is_alive()
    finally:
        srv.thaw()
    closer.join(10)
    victim.join(10)
    assert not hung, "closing the pool waited for the frozen statement"
    assert closer.outcome == "completed" and closer.elapsed < CLIENT_TIMEOUT + 1.5
    assert isinstance(victim.outcome, DatabaseUnavailable), victim.outcome


@pytest.mark.slow
def test_statements_below_the_limit_are_not_cut(
    srv: OwnServer, configure: Callable[..., Database]
) -> None:
    db = configure()
    calls = [_peewee_in_transaction, _fast_path, _held_connection]
    victims = [_Victim(lambda call=call: call(db)) for call in calls]  # type: ignore[misc]
    for v in victims:
        v.start()
    for v in victims:
        v.join(10)
    assert [v.outcome for v in victims] == ["completed"] * 3
    assert db.pool.watchdog.fired_total == 0
    assert db.pool_stats().in_use == 0


def test_default_without_statement_timeout_and_server_timeout_first(
    srv: OwnServer, configure: Callable[..., Database]
) -> None:
    db = configure(client_timeout=None)
    assert db.execute_sql("SELECT 1").fetchone() == (1,)
    db.close()
    assert db.pool.watchdog.timeout == DEFAULT_CLIENT_TIMEOUT  # never for ever by default
    db = configure(client_timeout=0)  # explicitly off: no thread
    assert db.execute_sql("SELECT 1").fetchone() == (1,)
    db.close()
    assert db.pool.watchdog.timeout is None and db.pool.watchdog._thread is None
    for thread in [t for t in threading.enumerate() if t.name == f"{APP}-pool-watchdog"]:
        thread.join(5)  # the first pool's watchdog, stopped when that pool was closed
    assert not [t for t in threading.enumerate() if t.name == f"{APP}-pool-watchdog"]

    # With a statement timeout the watchdog is on, above it: the server's own
    # timeout fires first and the connection stays in the pool.
    db = configure(client_timeout=None, statement_timeout=0.2)
    assert db.pool.watchdog.timeout == 0.2 + CLIENT_TIMEOUT_MARGIN
    with db.checkout():
        opened = db.pool_stats().opened_total
        with pytest.raises(peewee.OperationalError) as info:
            db.execute_sql("SELECT pg_sleep(2)")
        assert isinstance(info.value.orig, psycopg2.errors.QueryCanceled)
        assert db.execute_sql("SELECT 1").fetchone() == (1,)
    assert db.pool_stats().opened_total == opened
    assert db.pool.watchdog._thread is not None and db.pool.watchdog._thread.is_alive()


def test_a_long_migration_is_not_cut(
    pg: Server, clean_env: Path, empty_db: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shared server is fine here: nothing is frozen, a migration just takes long.
    mdir = clean_env / "migrations"
    write_migration(mdir, "001_slow", 'migrator.sql("SELECT pg_sleep(1.2)")')
    write_sum(mdir)
    monkeypatch.setenv("DATABASE_URL", empty_db.url(masked=False))
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT", "200ms")
    monkeypatch.setenv("DB_CLIENT_TIMEOUT", "500ms")
    try:
        result = CliRunner().invoke(
            main, ["migrate", "apply", "--statement-timeout", "0"], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        assert "applied 001_slow" in result.output

        # The library API on the package's pool: the limit is lifted for the
        # migration's connection only, and comes back afterwards.
        write_migration(mdir, "002_slow", 'migrator.sql("SELECT pg_sleep(1.0)")')
        write_sum(mdir)
        db = database.configure(empty_db.replace(client_timeout=0.5))
        assert [a.name for a in runner.apply(db, mdir, statement_timeout=None)] == ["002_slow"]
        assert [row[0] for row in history(pg, empty_db.dbname)] == ["001_slow", "002_slow"]
        with db.checkout(), pytest.raises(ConnectionLost, match="DB_CLIENT_TIMEOUT"):
            db.execute_sql("SELECT pg_sleep(1.5)")
        assert db.pool_stats().in_use == 0
    finally:
        database.close_pool()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_forgets_the_parents_registrations(
    srv: OwnServer, configure: Callable[..., Database]
) -> None:
    db = configure()
    db.execute_sql("SELECT 1")  # the watchdog thread runs in the parent
    raw = db.connection()
    # As if a statement had been in flight for a minute (its limit lifted here, in the
    # parent, so that our own watchdog leaves it alone; the child forgets both).
    with db.pool.watchdog.limit(raw, None):
        db.pool.inflight[raw] = time.monotonic() - 60
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                fresh = db.pool.getconn()  # notices the fork: forgets the parent's state
                ok = not db.pool.inflight and db.pool.watchdog.scan() == 0
                db.pool.putconn(fresh)
                code = 0 if ok else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        db.pool.inflight.pop(raw, None)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connection was not touched by the child.
    assert db.execute_sql("SELECT 2").fetchone() == (2,)
    db.close()
