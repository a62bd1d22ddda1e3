"""The pool's limits and recovery, observed on a real server (pg_stat_activity)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from datalayer.config import Settings
from datalayer.db import Database
from datalayer.errors import ConnectionLost, DatabaseUnavailable, PoolClosed, PoolTimeout
from tests.pgserver import Server


@pytest.fixture
def make_db(pg: Server) -> Iterator[object]:
    """Build Databases on the admin database, each with its own application_name."""
    made: list[Database] = []

    def make(**overrides: object) -> Database:
        name = f"dlpool-{uuid.uuid4().hex[:10]}"
        settings = pg.admin.replace(application_name=name, **overrides)
        db = Database(settings)
        made.append(db)
        return db

    yield make
    for db in made:
        db.close_pool()


def server_conns(pg: Server, app: str) -> int:
    conn = pg.raw()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def settled_conns(pg: Server, app: str, expected: int, timeout: float = 5.0) -> int:
    """Return the server's count once it equals ``expected`` (backends exit asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        n = server_conns(pg, app)
        if n == expected or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def terminate(pg: Server, pid: int) -> None:
    conn = pg.raw()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
                if cur.fetchone() is None:
                    return
            time.sleep(0.02)
    finally:
        conn.close()


def backend_pid(db: Database) -> int:
    return int(db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])


def test_max_open_then_wait_then_timeout(make_db, pg: Server) -> None:  # type: ignore[no-untyped-def]
    db = make_db(max_open_conns=3, max_idle_conns=3, pool_timeout=0.3)
    pool = db.pool
    held = [pool.getconn() for _ in range(3)]
    assert server_conns(pg, db.settings.application_name) == 3
    start = time.monotonic()
    with pytest.raises(PoolTimeout, match="3 of 3 in use"):
        pool.getconn()
    waited = time.monotonic() - start
    assert 0.25 <= waited < 2.0
    assert server_conns(pg, db.settings.application_name) == 3
    for raw in held:
        pool.putconn(raw)


def test_waiting_checkout_gets_a_returned_connection(make_db) -> None:  # type: ignore[no-untyped-def]
    db = make_db(max_open_conns=1, max_idle_conns=1, pool_timeout=5)
    pool = db.pool
    first = pool.getconn()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pool.getconn()))
    waiter.start()
    time.sleep(0.2)
    assert not got and pool.stats().waiting == 1
    pool.putconn(first)
    waiter.join(5)
    assert got == [first]
    pool.putconn(first)


def test_idle_cap_closes_extra_connections(make_db, pg: Server) -> None:  # type: ignore[no-untyped-def]
    db = make_db(max_open_conns=6, max_idle_conns=2)
    pool = db.pool
    held = [pool.getconn() for _ in range(6)]
    assert server_conns(pg, db.settings.application_name) == 6
    for raw in held:
        pool.putconn(raw)
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.open) == (2, 0, 2)
    assert sum(1 for raw in held if raw.closed) == 4
    assert settled_conns(pg, db.settings.application_name, 2) == 2


def test_lifetime_replaces_old_connections(make_db) -> None:  # type: ignore[no-untyped-def]
    db = make_db(conn_max_lifetime=0.3)
    with db.checkout():
        first = backend_pid(db)
    with db.checkout():
        assert backend_pid(db) == first  # still young: reused
    time.sleep(0.4)
    with db.checkout():
        assert backend_pid(db) != first


def test_idle_time_closes_idle_connections_without_a_checkout(make_db, pg: Server) -> None:  # type: ignore[no-untyped-def]
    db = make_db(conn_max_idle_time=0.3)
    with db.checkout():
        backend_pid(db)
    assert server_conns(pg, db.settings.application_name) == 1
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and server_conns(pg, db.settings.application_name):
        time.sleep(0.1)
    assert server_conns(pg, db.settings.application_name) == 0
    assert db.pool.stats().open == 0


def test_killed_idle_backend_is_never_handed_out(make_db, pg: Server) -> None:  # type: ignore[no-untyped-def]
    db = make_db()
    with db.checkout():
        pid = backend_pid(db)
    terminate(pg, pid)
    raw = db.pool.getconn()  # the pool itself must not hand out the dead one
    try:
        with raw.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] != pid
    finally:
        db.pool.putconn(raw)
    assert db.pool.stats().open == 1


def test_dead_connection_at_first_statement_is_retried(make_db, pg: Server) -> None:  # type: ignore[no-untyped-def]
    """The server may end a backend between the pool's check and the first statement."""
    db = make_db()
    with db.checkout():
        raw = db._state.conn
        with raw.cursor() as cur:  # behind the package's back: the checkout is still fresh
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        terminate(pg, pid)
        assert backend_pid(db) != pid  # re-run once on a new connection, no error
        assert db._state.conn is not raw and raw.closed
    assert db.pool.stats().open == 1


def test_held_connection_fails_once_then_recovers(make_db, pg: Server) -> None:  # type: ignore[no-untyped-def]
    db = make_db()
    db.connect()  # a thread holding a connection across a failure (autoconnect style)
    try:
        pid = backend_pid(db)
        terminate(pg, pid)
        with pytest.raises(ConnectionLost, match="lost the connection"):
            backend_pid(db)
        assert backend_pid(db) != pid  # the very next statement works
        assert backend_pid(db) == backend_pid(db)
    finally:
        db.close()
    assert db.pool.stats().in_use == 0


def test_backend_dying_inside_atomic_raises_the_real_cause(make_db, pg: Server) -> None:  # type: ignore[no-untyped-def]
    db = make_db()
    table = f"t_{uuid.uuid4().hex[:8]}"
    with db.checkout():
        db.execute_sql(f"CREATE TABLE {table} (x int)")
    try:
        with db.checkout():
            with pytest.raises(ConnectionLost), db.atomic():
                db.execute_sql(f"INSERT INTO {table} VALUES (1)")
                terminate(pg, backend_pid(db))
                db.execute_sql(f"INSERT INTO {table} VALUES (2)")
            assert db.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
    finally:
        with db.checkout():
            db.execute_sql(f"DROP TABLE {table}")


def test_connection_of_a_dead_thread_is_reclaimed(make_db) -> None:  # type: ignore[no-untyped-def]
    db = make_db(max_open_conns=1, max_idle_conns=1, pool_timeout=2)

    def leak() -> None:
        db.connect()
        backend_pid(db)  # never closed

    t = threading.Thread(target=leak)
    t.start()
    t.join()
    assert db.pool.stats().in_use == 1
    with db.checkout():
        backend_pid(db)
    assert db.pool.stats().reclaimed_total == 1


def test_checkout_always_returns_and_rolls_back(make_db) -> None:  # type: ignore[no-untyped-def]
    db = make_db(max_open_conns=1, max_idle_conns=1)
    with pytest.raises(RuntimeError), db.checkout():
        db.begin()
        db._state.transactions.append(object())  # a transaction left open
        raise RuntimeError("boom")
    assert db.pool.stats().in_use == 0
    with db.checkout():
        status = db._state.conn.get_transaction_status()
        assert status == 0  # idle, not in a transaction


def test_nested_checkout_reuses_the_connection(make_db) -> None:  # type: ignore[no-untyped-def]
    db = make_db()
    with db.checkout():
        pid = backend_pid(db)
        with db.checkout():
            assert backend_pid(db) == pid
        assert not db.is_closed()
    assert db.is_closed()


def test_savepoints_in_nested_atomic(make_db) -> None:  # type: ignore[no-untyped-def]
    db = make_db()
    table = f"t_{uuid.uuid4().hex[:8]}"
    with db.checkout():
        db.execute_sql(f"CREATE TEMP TABLE {table} (x int)")
        with db.atomic():
            db.execute_sql(f"INSERT INTO {table} VALUES (1)")
            with pytest.raises(ZeroDivisionError), db.atomic():
                db.execute_sql(f"INSERT INTO {table} VALUES (2)")
                raise ZeroDivisionError
        rows = db.execute_sql(f"SELECT x FROM {table}").fetchall()
        assert rows == [(1,)]


def test_server_settings_reach_the_server(make_db) -> None:  # type: ignore[no-untyped-def]
    db = make_db(statement_timeout=0.25, lock_timeout=1.5, idle_in_transaction_timeout=30)
    with db.checkout():
        show = {
            k: db.execute_sql(f"SHOW {k}").fetchone()[0]
            for k in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
                      "application_name")
        }
    assert show == {
        "statement_timeout": "250ms",
        "lock_timeout": "1500ms",
        "idle_in_transaction_session_timeout": "30s",
        "application_name": db.settings.application_name,
    }


def test_unreachable_server_is_a_clear_error_without_password() -> None:
    settings = Settings(host="127.0.0.1", port=1, password="sentinel-pw", connect_timeout=1)
    db = Database(settings)
    try:
        with pytest.raises(DatabaseUnavailable) as err, db.checkout():
            pass
        assert "sentinel-pw" not in str(err.value)
        assert "postgres@127.0.0.1:1/postgres" in str(err.value)
        assert db.pool.stats().open == 0  # the failed connect freed its slot
    finally:
        db.close_pool()


def test_closed_pool_refuses(make_db) -> None:  # type: ignore[no-untyped-def]
    db = make_db()
    pool = db.pool
    pool.close()
    with pytest.raises(PoolClosed):
        pool.getconn()


def test_repr_does_not_show_the_password() -> None:
    db = Database(Settings(host="h", password="sentinel-pw"))
    assert "sentinel-pw" not in repr(db) and "sentinel-pw" not in repr(db.settings)
    assert "sentinel-pw" not in repr(db.connect_params)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_leaves_parent_connections_alone(make_db) -> None:  # type: ignore[no-untyped-def]
    db = make_db()
    with db.checkout():
        pid = backend_pid(db)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            with db.checkout():
                code = 0 if backend_pid(db) != pid else 3
            db.close_pool()
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with db.checkout():
        assert backend_pid(db) == pid  # the parent's idle connection still works
