"""Read replicas without a standby: the settings, the routing decision, the write detection,
and that nothing changes (nothing imported, nothing measured) when no replica is configured.

The tests against a real streaming standby are in tests/test_replicas_live.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from datalayer.config import Settings, load_settings
from datalayer.db import Database
from datalayer.errors import ConfigError
from datalayer.replicas import (
    NOT_REPLAYED,
    PENDING,
    ReplicaState,
    Router,
    format_position,
    may_write,
    parse_position,
    surely_writes,
)
from tests._replica_helpers import password_hash

PRIMARY = "postgresql://app:pw@db.internal:5432/app"


# -- settings --------------------------------------------------------------------------------


def test_replica_urls_from_the_environment(clean_env, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", PRIMARY)
    monkeypatch.setenv("DB_REPLICA_URLS", " postgresql://app:s3cret@r1:5432/app ,"
                       "postgresql://app:s3cret@r2:6432/app,")
    monkeypatch.setenv("DB_REPLICA_MAX_LAG", "2s")
    monkeypatch.setenv("DB_REPLICA_CHECK_INTERVAL", "250ms")
    s = load_settings()
    assert s.replicas == ("postgresql://app:s3cret@r1:5432/app", "postgresql://app:s3cret@r2:6432/app")
    assert s.replica_max_lag == 2.0
    assert s.replica_check_interval == 0.25
    assert "s3cret" not in repr(s)
    assert "postgresql://app:***@r1:5432/app" in repr(s)
    r1, r2 = s.replica_settings()
    assert (r1.host, r1.port, r2.host, r2.port) == ("r1", 5432, "r2", 6432)
    assert r1.password == "s3cret" and "s3cret" not in repr(r1)
    assert r1.max_open_conns == s.max_open_conns and r1.replicas == ()


def test_replica_defaults_and_the_keyword():
    s = Settings(host="h")
    assert (s.replicas, s.replica_max_lag, s.replica_check_interval) == ((), 5.0, 0.1)
    s = Settings(host="h", replicas=["postgresql://u:pw@r1/db"])
    assert s.replicas == ("postgresql://u:pw@r1/db",)
    assert "pw" not in repr(s)
    assert s.replace(replicas=[]).replicas == ()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DB_REPLICA_URLS", "mysql://u:s3cret@r1/db",
         "DB_REPLICA_URLS: mysql://u:***@r1/db has scheme"),
        ("DB_REPLICA_URLS", "postgresql://u:s3cret@:5432/db", "names no host"),
        ("DB_REPLICA_MAX_LAG", "soon", "DB_REPLICA_MAX_LAG: 'soon' is not valid"),
        ("DB_REPLICA_MAX_LAG", "0", "DB_REPLICA_MAX_LAG: 0.0 must be a duration > 0"),
        ("DB_REPLICA_CHECK_INTERVAL", "2h", "DB_REPLICA_CHECK_INTERVAL: 7200.0 must be a duration"),
    ],
)
def test_bad_replica_settings_say_what_to_fix(clean_env, monkeypatch, name, value, expected):
    monkeypatch.setenv("DATABASE_URL", PRIMARY)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert expected in str(info.value)
    assert "s3cret" not in str(info.value)


def test_bad_replica_url_on_the_cli_is_one_line(clean_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env.update(DATABASE_URL=PRIMARY, DB_REPLICA_URLS="postgresql://u:s3cret@r1:notaport/db")
    cli = [sys.executable, "-c", "from datalayer.cli import run; run()", "db", "info"]
    proc = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "DB_REPLICA_URLS" in proc.stderr and "port" in proc.stderr
    assert "Traceback" not in proc.stderr and "s3cret" not in proc.stderr + proc.stdout


# -- positions ---------------------------------------------------------------------------------


def test_positions_round_trip_and_bad_ones_are_refused():
    for lsn in (0, 0x3000148, (0x16 << 32) | 0xB374D848):
        assert parse_position(format_position(lsn)) == lsn
    assert format_position((0x16 << 32) | 0xB374D848) == "16/B374D848"
    for bad in ("", "abc", "1/2/3", "x/1", "1" * 50, None):
        with pytest.raises(ValueError, match="last_write_position"):
            parse_position(bad)  # type: ignore[arg-type]


# -- which statements may write -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "writes"),
    [
        ('SELECT "t1"."email" FROM "users" AS "t1" WHERE ("t1"."email" = %s)', False),
        ("WITH x AS (SELECT 1) SELECT * FROM x", False),
        ("SHOW server_version", False),
        ("BEGIN", False),
        ("COMMIT; SELECT pg_current_wal_insert_lsn()", False),
        ("ROLLBACK", False),
        ('INSERT INTO "users" ("email") VALUES (%s) RETURNING "users_id"', True),
        ('UPDATE "users" SET "is_active" = false', True),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d", True),
        ("SELECT * FROM users FOR UPDATE", True),
        ("SELECT nextval('s')", True),
        ("EXECUTE dl_stmt_3 (%s)", True),  # unknown: counted as a write (safe side)
        ("CREATE TABLE t (id int)", True),
    ],
)
def test_statements_that_may_write(sql, writes):
    assert may_write(sql) is writes


def test_prepared_statements_are_judged_by_their_prepared_body():
    from datalayer._sql import Statement

    read = Statement.text('SELECT "email" FROM "users" WHERE "email" = %s', "email").prepared
    write = Statement.text('UPDATE "users" SET "is_active" = false WHERE "users_id" = %s',
                           "id").prepared
    assert may_write(read.execute) and may_write(write.execute)  # never prepared here: unknown
    assert may_write(read.first) is False and may_write(write.first) is True
    assert may_write(read.execute) is False and may_write(write.execute) is True
    assert may_write(read.renew) is False and may_write(write.renew) is True


def test_statements_a_replica_refuses_before_sending():
    assert surely_writes('INSERT INTO "users" VALUES (1)')
    assert surely_writes("  delete from t")
    assert surely_writes("WITH d AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM d")
    assert not surely_writes("SELECT * FROM t")
    assert not surely_writes("WITH x AS (SELECT 1) SELECT * FROM x")


# -- the routing decision, on its own -------------------------------------------------------------


class _Fake:
    def __init__(self, name: str, state: ReplicaState) -> None:
        self.name = name
        self.state = state


def test_router_prefers_a_replica_that_has_replayed_the_callers_write():
    now = 100.0
    behind = _Fake("r1", ReplicaState(True, replay=500, lag=0.2, checked=now - 0.05))
    ahead = _Fake("r2", ReplicaState(True, replay=900, lag=0.0, checked=now - 0.05))
    router = Router([behind, ahead], stale_after=2.0)
    for _ in range(4):  # whichever replica's turn it is
        route = router.db_for_read(800, now)
        assert route.replica is ahead
    # No position: both take turns.
    seen = {router.db_for_read(0, now).replica.name for _ in range(4)}
    assert seen == {"r1", "r2"}
    assert router.db_for_write().replica is None


def test_router_sends_to_the_primary_and_says_why():
    now = 50.0
    r1 = _Fake("r1", ReplicaState(True, replay=500, lag=0.0, checked=now))
    router = Router([r1], stale_after=2.0)
    route = router.db_for_read(600, now)
    assert route.replica is None and route.code == NOT_REPLAYED
    assert "has not replayed this caller's last write" in str(route)
    assert "needs 0/258" in str(route) and "replayed 0/1F4" in str(route)
    assert router.db_for_read(None, now).code == PENDING
    r1.state = ReplicaState(False, replay=500, lag=9.0, reason="lag 9.0 s > DB_REPLICA_MAX_LAG 5 s",
                            checked=now)
    assert "lags (lag 9.0 s > DB_REPLICA_MAX_LAG 5 s)" in str(router.db_for_read(0, now))
    r1.state = ReplicaState(False, reason="down: connection refused", checked=now)
    assert "skipped (down: connection refused)" in str(router.db_for_read(0, now))
    r1.state = ReplicaState(True, replay=900, lag=0.0, checked=now - 10)
    assert "did not answer its check" in str(router.db_for_read(0, now))
    assert "not checked yet" in str(Router([_Fake("r", ReplicaState(False))], stale_after=2)
                                     .db_for_read(0, now))



def test_pick_decides_as_db_for_read_without_saying_why():
    """Router.pick (what every routed read asks) and db_for_read (the DEBUG line) agree."""
    now = 100.0
    states = [
        ReplicaState(True, replay=900, lag=0.0, checked=now - 0.05),
        ReplicaState(True, replay=500, lag=0.3, checked=now),
        ReplicaState(False, replay=900, lag=9.0, reason="lag 9.0 s > DB_REPLICA_MAX_LAG 5 s",
                     checked=now),
        ReplicaState(False, reason="down: connection refused", checked=now),
        ReplicaState(True, replay=900, lag=0.0, checked=now - 10),  # no recent check
        ReplicaState(False),  # not checked yet
    ]
    for needed in (None, 0, 500, 800, 900, 901):
        for state in states:  # one replica: the path without turns
            router = Router([_Fake("r", state)], stale_after=2.0)
            assert router.pick(needed, now) is router.db_for_read(needed, now).replica
        for first in states:  # two: whichever is usable and has replayed `needed`
            for second in states:
                pair = [_Fake("a", first), _Fake("b", second)]
                router = Router(pair, stale_after=2.0)
                fit = {r.name for r in pair if r.state.usable and needed is not None
                       and r.state.replay >= needed and now - r.state.checked <= 2.0}
                for _ in range(2):
                    picked = router.pick(needed, now)
                    assert (picked.name if picked else None) in (fit or {None})
                    route = router.db_for_read(needed, now)
                    assert (route.replica.name if route.replica else None) in (fit or {None})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_starts_threads_of_its_own():
    """A routed read checks one flag for its pollers; a fork sets it in the child, and a
    position left pending by the parent gets a sampler of the child's own."""
    db = Database(Settings(host="127.0.0.1", port=9, replicas=["postgresql://u@r1:5433/db"]))
    try:
        replicas = db._replicas
        replicas._threads_missing = False  # as after the parent's first routed read
        positions = replicas.positions
        positions._wanted.set()  # as while the parent's sampler is asked for a sample
        positions._sampler = parent_sampler = object()  # the parent's (not the child's)
        positions.local.caller.pending = 1.0  # a write whose position is pending
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            answer = b"1" if replicas._threads_missing else b"0"
            answer += b"1" if positions._sampler is None else b"0"
            caller = positions.local.caller
            answer += b"1" if positions.resolve(caller) is None else b"0"  # still pending
            started = positions._sampler
            answer += b"1" if started is not None and started is not parent_sampler else b"0"
            os.write(write_end, answer)
            os._exit(0)
        os.close(write_end)
        os.waitpid(child, 0)
        assert os.read(read_end, 4) == b"1111"
        os.close(read_end)
        assert replicas._threads_missing is False  # the parent's threads still run
        assert positions._sampler is parent_sampler
    finally:
        positions._sampler = None
        db.close_pool()

def test_router_names_the_closest_replica_when_none_can_answer():
    now = 10.0
    down = _Fake("down", ReplicaState(False, reason="down: refused", checked=now))
    behind = _Fake("behind", ReplicaState(True, replay=10, lag=0.0, checked=now))
    route = Router([down, behind], stale_after=2.0).db_for_read(20, now)
    assert route.code == NOT_REPLAYED and route.name == "behind"


# -- without replicas nothing changes ------------------------------------------------------------


def test_without_replicas_nothing_is_imported_or_measured(pg, template_db):
    """A script without DB_REPLICA_URLS never imports datalayer.replicas nor sends a query more."""
    with pg.database("dlnorep", template=template_db) as name:
        url = pg.settings(name).url(masked=False)
        script = (
            "import sys, datalayer\n"
            "db = datalayer.connect()\n"
            "try:\n"
            "    datalayer.get_user_by_email('nobody@example.com')\n"
            "except datalayer.NotFound:\n"
            "    pass\n"
            "with db.read_replica():\n"
            "    db.execute_sql('SELECT 1')\n"
            "raw = db.pool.getconn()\n"
            "print(raw.cursor_factory is None, db._replicas is None,"
            " 'datalayer.replicas' in sys.modules)\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
        env["DATABASE_URL"] = url
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout.split()
        assert out == ["True", "True", "False"]


def test_without_replicas_read_replica_is_the_primary_and_positions_still_work(isolated_db):
    db = isolated_db
    if db.settings.replicas:  # TEST_REPLICA=1 gives every test database a standby
        db.configure(db.settings.replace(replicas=()))
    from datalayer.auth import users

    with db.read_replica():
        assert db.execute_sql("SELECT pg_is_in_recovery()").fetchone()[0] is False
    db.close()
    users.create_user(f"{uuid.uuid4().hex[:8]}@norep.test", password_hash=password_hash())
    position = db.last_write_position()
    assert parse_position(position) > 0
    with db.read_your_writes(position):
        assert db.execute_sql("SELECT 1").fetchone() == (1,)
    with pytest.raises(ValueError, match="last_write_position"), db.read_your_writes("nope"):
        pass
    assert db.replica_status() == []


def test_a_database_with_replicas_shows_them_masked():
    s = Settings(host="primary", password="pw1",
                 replicas=["postgresql://u:s3cret@r1:5433/db"])
    db = Database(s)
    try:
        assert "s3cret" not in repr(db) and "s3cret" not in repr(db.settings)
        (status,) = db.replica_status()
        assert status["url"] == "postgresql://u:***@r1:5433/db"
        assert status["in_use"] is False and status["reason"] == "not checked yet"
    finally:
        db.close_pool()

