"""Fault injection against an embedded server of our own (never the shared one).

Each test states the fault, what the package must do, and measures it:
restarts with an idle pool and with a held connection, the server down for
5 s (the retry helper rides it out), a frozen postmaster and a frozen backend
(bounded by connect_timeout / lock_timeout, other threads unaffected), a
backend killed mid-transaction (nothing half-written), a leaked transaction
(ended by idle_in_transaction_session_timeout) and a leaked checkout
(reclaimed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee
import psycopg2
import pytest

from datalayer import retry
from datalayer.db import Database, database
from datalayer.errors import ConnectionLost, DatabaseUnavailable
from datalayer.models import User
from tests._faults_helpers import (
    OwnServer,
    Stopwatch,
    check_units,
    own_server,
    run_threads,
    write_unit,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv() -> Iterator[OwnServer]:
    with own_server("datalayer-faults-") as server:
        yield server


@pytest.fixture
def configure(srv: OwnServer) -> Iterator[Callable[..., Database]]:
    """Point the package's database at our server with the given settings."""

    def make(**overrides: Any) -> Database:
        srv.start()
        return database.configure(srv.settings(**overrides))

    yield make
    srv.thaw()
    database.close_pool()
    srv.start()


def _unit(tag: str, i: int) -> None:
    with database.atomic():
        write_unit(tag, i)


def test_restart_with_idle_pool_fails_no_unit(srv: OwnServer, configure: Callable[..., Database]):
    db = configure(max_idle_conns=5, max_open_conns=25)
    barrier = threading.Barrier(5)

    def warm(index: int) -> None:
        with db.checkout():
            barrier.wait(10)  # all five hold a connection at once: five go back idle
            for j in range(4):
                _unit("idle", index * 100 + j)

    assert run_threads(5, warm) == []
    assert db.pool_stats().idle == 5
    opened_before = db.pool_stats().opened_total

    srv.restart()  # every idle connection is now dead

    failures: list[BaseException] = []

    def after(index: int) -> None:
        for j in range(10):
            try:
                with db.checkout():
                    _unit("idle", 1000 + index * 100 + j)
            except Exception as exc:  # counted: the test requires none
                failures.append(exc)

    assert run_threads(5, after) == []
    assert failures == [], [repr(f) for f in failures]
    users, tokens = check_units(srv, "idle")
    assert (users, tokens) == (70, 140)
    stats = db.pool_stats()
    assert stats.in_use == 0 and stats.open <= 25
    assert stats.opened_total > opened_before  # the dead ones were replaced


def test_restart_while_a_thread_holds_a_connection(
    srv: OwnServer, configure: Callable[..., Database]
):
    db = configure()
    ready, restarted = threading.Event(), threading.Event()
    outcomes: list[str] = []
    mid_txn_outcome: list[str] = []

    def holder(index: int) -> None:
        with db.checkout():
            _unit("held", index * 1000)
            if index == 1:
                # This one is inside a transaction, half-way through, during the restart.
                with pytest.raises(ConnectionLost), db.atomic():
                    User.create(email="held-txn-0@faults.test", password_hash="x" * 20)
                    ready.set()
                    restarted.wait(30)
                    User.create(email="held-txn-1@faults.test", password_hash="x" * 20)
                mid_txn_outcome.append("ConnectionLost")
                _unit("held", 500)  # and the thread goes on, same checkout
                return
            ready.set()
            restarted.wait(30)
            for j in range(1, 11):
                try:
                    _unit("held", j)
                    outcomes.append("ok")
                except ConnectionLost:
                    outcomes.append("lost")

    threads = [threading.Thread(target=holder, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    assert ready.wait(30)
    time.sleep(0.2)
    srv.restart()
    restarted.set()
    for t in threads:
        t.join(60)
    print(f"restart while held: in-flight transaction {mid_txn_outcome}, next units {outcomes}")
    assert mid_txn_outcome == ["ConnectionLost"]
    # At most the in-flight unit fails; every later one succeeds on a new connection.
    assert outcomes.count("lost") <= 1, outcomes
    assert outcomes[outcomes.count("lost"):] == ["ok"] * (10 - outcomes.count("lost"))
    users, _ = check_units(srv, "held")
    assert users == 2 + outcomes.count("ok") + 1  # a first unit per thread, the ok ones, #500
    assert srv.query("SELECT count(*) FROM users WHERE email LIKE 'held-txn-%'") == [(0,)]
    assert db.pool_stats().in_use == 0


def test_server_down_5s_then_back_retry_succeeds(
    srv: OwnServer, configure: Callable[..., Database], caplog: pytest.LogCaptureFixture
):
    db = configure(connect_timeout=2)
    with db.checkout():
        _unit("down", 0)  # a pooled connection that the stop will kill
    srv.stop()
    down = Stopwatch()
    restarter = threading.Timer(5.0, srv.start)
    restarter.start()
    calls = []

    def unit() -> str:
        calls.append(1)
        write_unit("down", 1)
        return "done"

    caplog.set_level(logging.DEBUG, logger="datalayer.retry")
    try:
        result = retry.run_transaction(unit, attempts=100, deadline=30, max_delay=0.5)
    finally:
        restarter.join()
    assert result == "done"
    assert down.elapsed >= 4.5
    assert check_units(srv, "down") == (2, 4)  # written exactly once
    attempts = [r for r in caplog.records if r.name == "datalayer.retry"]
    assert len(attempts) >= 5
    assert any("succeeded" in r.getMessage() for r in attempts)
    for record in attempts:  # no statement or parameters in the log
        assert "down-1" not in record.getMessage() and "INSERT" not in record.getMessage()


def test_frozen_postmaster_bounded_by_connect_timeout(
    srv: OwnServer, configure: Callable[..., Database]
):
    db = configure(connect_timeout=2, max_open_conns=5, max_idle_conns=5)
    hold = threading.Event()
    worker_ready = threading.Event()
    done: list[float] = []

    def worker() -> None:
        # Holds its connection: its backend is alive while the postmaster is frozen.
        with db.checkout():
            worker_ready.set()
            while not hold.is_set():
                t = Stopwatch()
                db.execute_sql("SELECT 1").fetchone()
                done.append(t.elapsed)
                time.sleep(0.01)

    w = threading.Thread(target=worker)
    w.start()
    assert worker_ready.wait(10)
    srv.freeze(srv.postmaster_pid)
    try:
        connect_outcome: list[object] = []

        def newcomer() -> None:
            t = Stopwatch()
            try:
                with db.checkout():
                    db.execute_sql("SELECT 1")
                connect_outcome.append("connected")
            except DatabaseUnavailable as exc:
                connect_outcome.append(exc)
            connect_outcome.append(t.elapsed)

        n = threading.Thread(target=newcomer)
        n.start()
        time.sleep(0.5)
        # The connect in flight does not hold the pool's lock.
        t = Stopwatch()
        stats = db.pool_stats()
        assert t.elapsed < 0.5 and stats.open == 2
        before = len(done)
        n.join(15)
        assert not n.is_alive()
        assert isinstance(connect_outcome[0], DatabaseUnavailable), connect_outcome
        assert "cannot connect" in str(connect_outcome[0])
        elapsed = connect_outcome[1]
        assert isinstance(elapsed, float) and elapsed < 2 + 3
        assert len(done) - before > 10  # the other thread kept working meanwhile
        assert max(done) < 1.0
    finally:
        srv.thaw()
        hold.set()
        w.join(10)
    with db.checkout():  # and afterwards everything works again
        _unit("thawed", 0)
    assert db.pool_stats().in_use == 0


def test_frozen_backend_bounded_by_lock_timeout_others_unaffected(
    srv: OwnServer, configure: Callable[..., Database]
):
    db = configure(lock_timeout=1.0, statement_timeout=10.0)
    with db.checkout():
        _unit("frozen", 0)
        _unit("frozen", 1)
    locked = threading.Event()
    release = threading.Event()
    pid: list[int] = []

    def locker() -> None:
        with db.checkout(), db.atomic():
            pid.append(db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])
            User.update(display_name="locked").where(
                User.email == "frozen-0@faults.test"
            ).execute()
            locked.set()
            release.wait(30)

    lt = threading.Thread(target=locker)
    lt.start()
    assert locked.wait(10)
    srv.freeze(pid[0])  # the backend holding the row lock stops dead
    try:
        results: dict[str, Any] = {}

        def same_row(index: int) -> None:
            t = Stopwatch()
            try:
                with db.checkout():
                    User.update(display_name="blocked").where(
                        User.email == "frozen-0@faults.test"
                    ).execute()
                results["same"] = "updated"
            except peewee.OperationalError as exc:
                results["same"] = exc
            results["same_elapsed"] = t.elapsed

        def other_rows(index: int) -> None:
            t = Stopwatch()
            for j in range(20):
                with db.checkout():
                    _unit("frozen-other", index * 100 + j)
            results[f"other{index}"] = t.elapsed

        errors = run_threads(1, same_row) + run_threads(3, other_rows)
        assert errors == []
        err = results["same"]
        assert isinstance(err, peewee.OperationalError)
        assert getattr(err.orig, "pgcode", None) == "55P03"  # lock_timeout, not a hang
        assert results["same_elapsed"] < 1.0 + 2.0
        assert check_units(srv, "frozen-other") == (60, 120)
        assert all(results[f"other{i}"] < 10 for i in range(3))
    finally:
        srv.thaw()
        release.set()
        lt.join(10)
    assert srv.query(
        "SELECT display_name FROM users WHERE email = 'frozen-0@faults.test'"
    ) == [("locked",)]


def test_killed_backend_mid_transaction_writes_nothing(
    srv: OwnServer, configure: Callable[..., Database]
):
    db = configure()
    victims: list[int] = []

    def unit_killed_once(tag: str, i: int) -> None:
        User.create(email=f"{tag}-{i}@faults.test", password_hash="x" * 20)
        if not victims:
            victims.append(db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])
            srv.query("SELECT pg_terminate_backend(%s)", (victims[0],))
            time.sleep(0.1)
        # The rest of the unit: on the killed connection this fails.
        with db.atomic():
            pass
        write_unit(tag, i + 1000)

    with db.checkout():
        with pytest.raises(ConnectionLost) as info, db.atomic():
            unit_killed_once("killed", 0)
        assert "not committed" in str(info.value) or "lost the connection" in str(info.value)
        # nothing of the unit was written
        assert srv.query("SELECT count(*) FROM users WHERE email LIKE 'killed-%'") == [(0,)]
        _unit("killed-after", 0)  # the same thread goes on, on a new connection
    assert check_units(srv, "killed-after") == (1, 2)

    # With the retry helper the killed attempt is re-run as a whole, written once.
    victims.clear()
    retry.run_transaction(lambda: unit_killed_once("killed-retry", 0))
    rows = srv.query("SELECT email FROM users WHERE email LIKE 'killed-retry-%' ORDER BY 1")
    assert rows == [("killed-retry-0@faults.test",), ("killed-retry-1000@faults.test",)]
    assert srv.query(
        "SELECT count(*) FROM refresh_tokens JOIN users USING (users_id) "
        "WHERE email = 'killed-retry-1000@faults.test'"
    ) == [(2,)]
    assert db.pool_stats().in_use == 0


def test_leaked_transaction_ended_by_idle_in_transaction_timeout(
    srv: OwnServer, configure: Callable[..., Database]
):
    db = configure(idle_in_transaction_timeout=1.0, lock_timeout=5.0)
    with db.checkout():
        _unit("leak", 0)
    leaked = threading.Event()
    finish = threading.Event()

    def leaker() -> None:
        # Checks out, opens a transaction, locks a row, then forgets about it (but lives on).
        db.connect()
        db.begin()
        User.update(display_name="leaked").where(User.email == "leak-0@faults.test").execute()
        leaked.set()
        finish.wait(30)

    t = threading.Thread(target=leaker)
    t.start()
    assert leaked.wait(10)
    watch = Stopwatch()
    with db.checkout():
        n = User.update(display_name="after").where(User.email == "leak-0@faults.test").execute()
    assert n == 1
    assert watch.elapsed < 1.0 + 3.0  # the server ended the leaked session, releasing the lock
    finish.set()
    t.join(10)
    rows = srv.query("SELECT display_name FROM users WHERE email = 'leak-0@faults.test'")
    assert rows == [("after",)]


def test_retry_helper_reruns_serialization_failures(
    srv: OwnServer, configure: Callable[..., Database]
):
    db = configure()
    with db.checkout():
        _unit("ser", 0)
    attempts: list[int] = []
    gate = threading.Barrier(2)

    def bump(index: int) -> None:
        def unit() -> None:
            attempts.append(index)
            user = User.get(User.email == "ser-0@faults.test")
            if attempts.count(index) == 1:
                gate.wait(5)  # both read before either writes, on the first attempt
            name = (user.display_name or "") + str(index)
            User.update(display_name=name).where(User.id == user.id).execute()

        retry.run_transaction(unit, isolation_level="SERIALIZABLE", attempts=10)

    assert run_threads(2, bump) == []
    name = srv.query("SELECT display_name FROM users WHERE email = 'ser-0@faults.test'")[0][0]
    assert sorted(name) == ["0", "1"]  # both increments, neither lost
    assert len(attempts) >= 3  # one of them was retried


def test_retry_helper_reruns_deadlocks(srv: OwnServer, configure: Callable[..., Database]):
    db = configure()
    with db.checkout():
        _unit("dl", 0)
        _unit("dl", 1)
    gate = threading.Barrier(2)
    attempts: list[int] = []

    def cross(index: int) -> None:
        first, second = ("dl-0", "dl-1") if index == 0 else ("dl-1", "dl-0")

        def unit() -> None:
            attempts.append(index)
            User.update(display_name=f"t{index}").where(
                User.email == f"{first}@faults.test"
            ).execute()
            if attempts.count(index) == 1:
                gate.wait(5)  # both hold their first row before taking the second
            User.update(display_name=f"t{index}").where(
                User.email == f"{second}@faults.test"
            ).execute()

        retry.run_transaction(unit, attempts=10)

    assert run_threads(2, cross) == []
    assert len(attempts) == 3  # exactly one deadlock victim, run again
    names = srv.query("SELECT DISTINCT display_name FROM users WHERE email LIKE 'dl-%'")
    assert len(names) == 1  # the retried one wrote both rows last


def test_retry_refuses_inside_a_transaction(configure: Callable[..., Database]):
    db = configure()
    with db.checkout(), db.atomic():
        with pytest.raises(retry.RetryInTransactionError, match="inside an open transaction"):
            retry.run(lambda: None)
        with pytest.raises(retry.RetryInTransactionError):
            retry.run_transaction(lambda: None)


def test_unretryable_errors_are_raised_at_once(configure: Callable[..., Database]):
    configure(statement_timeout=0.2)
    calls: list[int] = []

    def slow() -> None:
        calls.append(1)
        database.execute_sql("SELECT pg_sleep(2)")

    with pytest.raises(peewee.OperationalError) as info:
        retry.run(slow)
    assert isinstance(info.value.orig, psycopg2.errors.QueryCanceled)
    assert calls == [1]


def test_leaked_checkout_of_a_live_thread_is_reclaimed(
    srv: OwnServer, configure: Callable[..., Database]
):
    db = configure(max_checkout_time=1.0, max_open_conns=3, max_idle_conns=3)
    with db.checkout():
        _unit("lc", 0)
    leaked = threading.Event()
    finish = threading.Event()
    after: list[object] = []

    def leaker(in_txn: bool) -> None:
        db.connect()  # never returned in time: a leak, by a thread that lives on
        if not in_txn:
            db.execute_sql("SELECT 1")
            leaked.set()
            finish.wait(30)
            # The owner comes back: outside a transaction it simply gets a new connection.
            after.append(db.execute_sql("SELECT 2").fetchone()[0])
        else:
            try:
                with db.atomic():
                    User.update(display_name="leaked").where(
                        User.email == "lc-0@faults.test"
                    ).execute()
                    finish.wait(30)
                    db.execute_sql("SELECT 2")  # inside its transaction: that is gone
            except ConnectionLost:
                after.append("lost")
        db.close()

    def busy() -> None:
        with db.checkout():  # a long statement is never pulled from under its thread
            after.append(db.execute_sql("SELECT 3 FROM pg_sleep(4)").fetchone()[0])

    threads = [
        threading.Thread(target=leaker, args=(False,)),
        threading.Thread(target=leaker, args=(True,)),
        threading.Thread(target=busy),
    ]
    for t in threads:
        t.start()
    assert leaked.wait(10)
    watch = Stopwatch()
    while db.pool_stats().reclaimed_total < 2 and watch.elapsed < 5:
        time.sleep(0.05)
    stats = db.pool_stats()
    assert stats.reclaimed_total == 2, stats
    assert stats.in_use == 1  # the busy one only
    # The leaked transaction's lock went with its connection.
    with db.checkout():
        assert User.update(display_name="free").where(
            User.email == "lc-0@faults.test"
        ).execute() == 1
    finish.set()
    for t in threads:
        t.join(10)
    assert sorted(map(str, after)) == ["2", "3", "lost"]
    assert db.pool_stats().in_use == 0


def test_sigkill_of_migrate_apply_leaves_nothing_partial(srv: OwnServer, tmp_path: Path):
    import os
    import signal
    import subprocess
    import sys

    from datalayer.migrate.runtime.checksum import write_sum
    from tests.migrate_runtime_support import write_migration

    srv.start()
    dbname = "migkill"
    srv.query(f"DROP DATABASE IF EXISTS {dbname}")
    srv.query(f"CREATE DATABASE {dbname}")
    mdir = tmp_path / "migrations"
    write_migration(mdir, "001_t1", 'migrator.sql("CREATE TABLE t1 (id int)")\n'
                    'migrator.sql("INSERT INTO t1 SELECT generate_series(1, 10)")')
    write_migration(mdir, "002_slow", "\n".join([
        'migrator.sql("CREATE TABLE t2 (id int)")',
        'migrator.sql("INSERT INTO t2 SELECT generate_series(1, 1000)")',
        'migrator.sql("ALTER TABLE t1 ADD COLUMN extra int")',  # ACCESS EXCLUSIVE on t1
        'migrator.sql("SELECT pg_sleep(60)")',
    ]))
    write_migration(mdir, "003_t3", 'migrator.sql("CREATE TABLE t3 (id int)")')
    write_sum(mdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATALAYER_"))}
    env["DATABASE_URL"] = srv.settings(dbname=dbname).url(masked=False)
    cmd = [sys.executable, "-c", "from datalayer.cli import run; run()", "migrate", "--dir",
           str(mdir), "apply"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    app = srv.settings(dbname=dbname, application_name="datalayer-faults-app")
    try:
        watch = Stopwatch()
        while not srv.query(
            "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND query LIKE %s",
            (dbname, "%pg_sleep(60)%"),
        ):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            assert watch.elapsed < 60, "the slow migration never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        killed = Stopwatch()
        # An application read of the locked table: blocked while the orphaned backend
        # holds ACCESS EXCLUSIVE, then served.
        reader = psycopg2.connect(**app.connect_kwargs())
        reader.autocommit = True
        with reader.cursor() as cur:
            cur.execute("SET statement_timeout = '30s'")
            cur.execute("SELECT count(*) FROM t1")
            assert cur.fetchone() == (10,)
        reader.close()
        lock_held = killed.elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    def one(sql: str) -> Any:
        conn = psycopg2.connect(**app.connect_kwargs())
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()[0]
        finally:
            conn.close()

    # Nothing of 002 happened: no t2, no new column, only 001 in the history.
    assert one("SELECT to_regclass('t2') IS NULL") is True
    assert one("SELECT count(*) FROM information_schema.columns WHERE table_name = 't1' "
               "AND column_name = 'extra'") == 0
    assert one("SELECT string_agg(name, ',' ORDER BY id) FROM migratehistory") == "001_t1"
    assert lock_held < 5.0, f"the orphaned migration held its lock for {lock_held:.1f} s"
    print(f"sigkill of migrate apply: reads of the locked table waited {lock_held:.2f} s")

    # The next apply completes (with the slow step made quick).
    text = (mdir / "002_slow.py").read_text().replace("pg_sleep(60)", "pg_sleep(0)")
    (mdir / "002_slow.py").write_text(text)
    write_sum(mdir)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert one("SELECT string_agg(name, ',' ORDER BY id) FROM migratehistory") == (
        "001_t1,002_slow,003_t3"
    )
    assert one("SELECT count(*) FROM t2") == 1000
    srv.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
              (dbname,))
    srv.query(f"DROP DATABASE {dbname}")
