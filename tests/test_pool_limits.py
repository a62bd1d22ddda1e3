"""The pool and the configuration against the server's limits, restarts and silent networks.

Everything that changes a server's settings, fills its connection slots or
restarts it does so to an embedded server of our own (``own_server``), never
to the shared one.  Timing figures are printed (``-s``) for docs/operations/retry.md; the
assertions are about outcomes, with generous bounds only against hangs.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

import datalayer
from datalayer import config, retry
from datalayer.auth import passwords, users
from datalayer.config import DEFAULT_CLIENT_TIMEOUT, Settings, load_settings
from datalayer.db import Database, database
from datalayer.errors import (
    ConfigError,
    ConnectionLost,
    DatabaseUnavailable,
    TooManyConnections,
)
from datalayer.pool import is_server_full
from tests._faults_helpers import OwnServer, Stopwatch, check_units, own_server, write_unit

MAX_CONNECTIONS = 12  # superuser_reserved_connections = 3: 9 for other roles
APP = "datalayer-limits"


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(("open_", "idle"), [(1, 1), (4, 4), (5, 5), (6, 5), (25, 5), (100, 5)])
def test_max_idle_defaults_to_min_5_and_max_open(open_: int, idle: int) -> None:
    assert Settings(max_open_conns=open_).max_idle_conns == idle


def test_db_max_open_conns_alone_works(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv("DB_MAX_OPEN_CONNS", "4")
    s = load_settings()
    assert (s.max_open_conns, s.max_idle_conns) == (4, 4)
    monkeypatch.setenv("DB_MAX_IDLE_CONNS", "2")
    assert load_settings().max_idle_conns == 2
    monkeypatch.setenv("DB_MAX_IDLE_CONNS", "5")  # set, and more than open: still an error
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "DB_MAX_IDLE_CONNS" in info.value.problems


def test_a_defaulted_idle_follows_replace_an_explicit_one_does_not() -> None:
    assert Settings().replace(max_open_conns=2).max_idle_conns == 2
    assert Settings().replace(max_open_conns=2).replace(max_open_conns=40).max_idle_conns == 5
    with pytest.raises(ConfigError, match="DB_MAX_IDLE_CONNS"):
        Settings(max_idle_conns=5).replace(max_open_conns=2)


@pytest.mark.parametrize(
    "field", ["statement_timeout", "lock_timeout", "idle_in_transaction_timeout",
              "max_checkout_time"])
def test_zero_means_none(field: str) -> None:
    s = Settings(host="h", **{field: 0})
    assert getattr(s, field) is None
    assert field.split("_timeout")[0] not in s.connect_kwargs().get("options", "") or (
        field == "max_checkout_time")


def test_statement_timeout_zero_sets_no_server_timeout_and_the_default_client_one() -> None:
    s = Settings(host="h", statement_timeout=0)
    assert "statement_timeout" not in s.connect_kwargs().get("options", "")
    assert s.effective_client_timeout == DEFAULT_CLIENT_TIMEOUT
    assert Settings(host="h", client_timeout=0).effective_client_timeout is None


def test_tcp_keepalives_on_by_default_and_a_url_overrides_them() -> None:
    kwargs = Settings(host="h").connect_kwargs()
    assert kwargs["keepalives"] == 1 and kwargs["keepalives_idle"] == 30
    url = Settings.from_url("postgresql://u@h/d?keepalives_idle=5&keepalives=0")
    assert url.connect_kwargs()["keepalives_idle"] == "5"
    assert url.connect_kwargs()["keepalives"] == "0"


# -- a server of our own with few connection slots ---------------------------------------


@pytest.fixture(scope="module")
def small() -> Iterator[OwnServer]:
    with own_server("datalayer-limits-") as srv:
        srv.query(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
        srv.query("CREATE ROLE app LOGIN")
        srv.query("GRANT ALL ON ALL TABLES IN SCHEMA public TO app")
        srv.restart()
        assert srv.query("SHOW max_connections") == [(str(MAX_CONNECTIONS),)]
        yield srv


@contextlib.contextmanager
def fill(srv: OwnServer, leave: int = 0, user: str = "postgres") -> Iterator[list[Any]]:
    """Take every connection slot ``user`` can get, then give ``leave`` of them back."""
    assert srv.server is not None
    held: list[Any] = []
    kwargs = {**srv.settings().connect_kwargs(), "user": user, "application_name": "filler"}
    try:
        while True:
            try:
                held.append(psycopg2.connect(**kwargs))
            except psycopg2.OperationalError as exc:
                assert is_server_full(exc), exc
                break
            assert len(held) <= MAX_CONNECTIONS
        for _ in range(leave):
            held.pop().close()
        yield held
    finally:
        for conn in held:
            conn.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # backends exit asynchronously
            with contextlib.suppress(psycopg2.OperationalError):
                if not srv.query("SELECT 1 FROM pg_stat_activity WHERE application_name "
                                 "= 'filler'"):
                    break
            time.sleep(0.05)


def _message(srv: OwnServer, user: str) -> str:
    db = Database(srv.settings(user=user, application_name=APP, pool_timeout=0.3))
    try:
        with pytest.raises(TooManyConnections) as info:
            db.execute_sql("SELECT 1")
        return str(info.value)
    finally:
        db.close_pool()


def test_the_connection_limit_is_reported_as_such(small: OwnServer) -> None:
    with fill(small):
        full = _message(small, "postgres")  # superuser: "sorry, too many clients already"
    with fill(small, user="app"):  # only the reserved slots are left
        reserved = _message(small, "app")
    print("\nserver full:", full, "\nonly reserved slots left:", reserved)
    for message in (full, reserved):
        assert "connection limit is reached" in message and "53300" in message
        assert "lower DB_MAX_OPEN_CONNS" in message and "raise max_connections" in message
        assert "check that the server runs" not in message
        assert "waited 0.3 s" in message
    assert "too many clients" in full and "remaining connection slots are reserved" in reserved
    exc = TooManyConnections("x")
    assert not retry.is_retryable(exc)
    assert datalayer.TooManyConnections is TooManyConnections
    assert issubclass(TooManyConnections, DatabaseUnavailable)


def test_a_full_server_makes_checkouts_wait_for_the_pools_own_connections(
    small: OwnServer,
) -> None:
    """8 threads, a pool of 6, a server with 2 free slots: every unit succeeds."""
    db = Database(small.settings(max_open_conns=6, pool_timeout=10, application_name=APP))
    failures: list[BaseException] = []
    done: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for _ in range(5):
            try:
                with db.checkout():
                    db.execute_sql("SELECT pg_sleep(0.05)")
                with lock:
                    done.append(i)
            except BaseException as exc:
                with lock:
                    failures.append(exc)

    with fill(small, leave=2):
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        watch = Stopwatch()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = watch.elapsed
        stats = db.pool_stats()
    db.close_pool()
    print(f"\n40 units, 8 threads, 2 free slots: {len(done)} ok, {len(failures)} failed, "
          f"{elapsed:.2f} s, {stats.opened_total} connections opened")
    assert not failures, [str(f) for f in failures[:3]]
    assert len(done) == 40 and stats.opened_total <= 2 + 1


# -- a restart under the default retry policy ----------------------------------------------


@pytest.fixture(scope="module")
def srv() -> Iterator[OwnServer]:
    with own_server("datalayer-restart-") as server:
        yield server


@pytest.mark.parametrize("down", [3.0])
def test_the_default_retry_policy_rides_out_a_restart(
    srv: OwnServer, down: float, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="datalayer.retry")
    database.configure(srv.settings(application_name=APP, connect_timeout=2))
    try:
        with database.checkout():
            write_unit("restart", 0)  # a pooled connection that the stop kills
        calls: list[float] = []
        srv.stop()
        watch = Stopwatch()
        restarter = threading.Timer(down, srv.start)
        restarter.start()

        def unit() -> None:
            calls.append(watch.elapsed)
            write_unit("restart", 1)

        try:
            retry.run_transaction(unit)  # the default policy
        finally:
            restarter.join()
        took = watch.elapsed
        failed = [r for r in caplog.records
                  if r.name == "datalayer.retry" and "retrying in" in r.getMessage()]
        print(f"\nserver down {down:g} s (+ its start): the unit succeeded after {took:.2f} s, "
              f"at attempt {len(failed) + 1} of {retry.DEFAULT_POLICY.attempts}")
        assert check_units(srv, "restart") == (2, 4)  # written exactly once
        assert calls and calls[-1] >= down and len(failed) >= 3  # it really waited
    finally:
        database.close_pool()
        srv.start()


# -- a silent network ----------------------------------------------------------------------------


class SilentProxy:
    """Forward TCP to ``port``; once ``silent`` is set, drop every byte both ways (and keep
    the connections open: the client's kernel sees a peer that ACKs, as behind a stalled
    proxy or NAT)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.silent = threading.Event()
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    return
                if not self.silent.is_set():
                    dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


def test_the_default_configuration_never_waits_for_ever_on_a_silent_network(
    srv: OwnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither DB_CLIENT_TIMEOUT nor DB_STATEMENT_TIMEOUT set: the default client timeout
    ends ``import_users`` on a network gone silent (the default is shortened for the test)."""
    assert Settings(host="h").effective_client_timeout == DEFAULT_CLIENT_TIMEOUT == 60.0
    monkeypatch.setattr(config, "DEFAULT_CLIENT_TIMEOUT", 1.5)
    srv.start()
    assert srv.server is not None
    proxy = SilentProxy(srv.server.port)
    db = Database(srv.settings(port=proxy.port, application_name=APP, connect_timeout=2))
    assert db.settings.client_timeout is None and db.settings.statement_timeout is None
    cheap = passwords.hash_password("pw", params=passwords.ScryptParams(ln=4))
    outcome: list[BaseException | int] = []

    def run() -> None:
        try:
            with db.checkout():
                db.execute_sql("SELECT 1")
                proxy.silent.set()
                outcome.append(users.import_users(
                    [{"email": f"silent{i}@x.test", "password_hash": cheap} for i in range(50)],
                    db=db))
        except BaseException as exc:
            outcome.append(exc)

    watch = Stopwatch()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)  # a guard against the hang this test is about
    took = watch.elapsed
    try:
        assert not thread.is_alive(), "import_users still waiting on a silent network"
        print(f"\nsilent network, default client timeout 1.5 s: {type(outcome[0]).__name__} "
              f"after {took:.2f} s")
        assert isinstance(outcome[0], (ConnectionLost, DatabaseUnavailable)), outcome
        # The statement's loss says DB_CLIENT_TIMEOUT; import_users, whose transaction the
        # server rolled back, runs once more and then cannot even connect (still silent).
        message = str(outcome[0])
        assert "DB_CLIENT_TIMEOUT" in message or "cannot connect" in message, message
    finally:
        proxy.close()
        db.close_pool()


