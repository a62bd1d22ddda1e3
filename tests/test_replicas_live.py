"""Read replicas against a real streaming standby (``pg_basebackup -R`` of a primary of the
tests' own; both embedded servers on their own ports, see tests/_replica_helpers.py).

Lag is injected with ``recovery_min_apply_delay``; the standby is stopped and started.  The
figures asked for (stale reads, share of reads on the replica, failed reads and the time
back in use) are printed as ``FIGURE`` lines (``pytest -s`` shows them).
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from datalayer.auth import users
from datalayer.config import Settings
from datalayer.db import Database, database
from datalayer.errors import NotFound, ReplicaWriteError
from datalayer.models import User
from datalayer.replicas import Route
from tests._faults_helpers import PgBouncer, pgbouncer_binary, run_threads
from tests._replica_helpers import Cluster, cluster, password_hash, standby_unavailable

WHY = standby_unavailable()
pytestmark = [pytest.mark.skipif(WHY is not None, reason=WHY or ""), pytest.mark.slow]


@pytest.fixture(scope="module")
def rep() -> Iterator[Cluster]:
    with cluster() as made:
        yield made


@pytest.fixture
def configure(rep: Cluster) -> Iterator[Callable[..., Database]]:
    """Set the package's database up on the primary with the standby as replica (no lag)."""
    if not rep.standby.running():
        rep.standby.start()
    rep.standby.set_apply_delay(0)
    rep.standby.wait_caught_up(rep.primary)

    def make(settings: Settings | None = None, **overrides: Any) -> Database:
        return database.configure((settings or rep.settings()).replace(**overrides))

    yield make
    database.close_pool()


class Routes(logging.Handler):
    """Counts the routed reads from the DEBUG lines of datalayer.replicas (item 7's log)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.mutex = threading.Lock()
        self.replica = 0
        self.primary = 0
        self.first_replica_after: float | None = None
        self.since = float("inf")
        self.lines: list[str] = []
        self.keep_lines = False

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        route = args[1] if len(args) == 2 and isinstance(args[1], Route) else None
        with self.mutex:
            if self.keep_lines:
                self.lines.append(record.getMessage())
            if route is None:
                if "-> primary" in str(record.msg):
                    self.primary += 1
                return
            if route.replica is not None:
                self.replica += 1
                if self.first_replica_after is None and record.created >= self.since:
                    self.first_replica_after = record.created
            else:
                self.primary += 1


@pytest.fixture
def routes() -> Iterator[Routes]:
    handler = Routes()
    log = logging.getLogger("datalayer.replicas")
    before = log.level
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)
    log.setLevel(before)


def wait_for_replica(db: Database, timeout: float = 10.0) -> None:
    """Wait until a read of this thread would go to the replica."""
    assert db._replicas is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db._replicas.route().replica is not None:
            return
        time.sleep(0.02)
    raise AssertionError(f"the replica was not used within {timeout:g} s: {db._replicas.route()}")


def on_replica(db: Database) -> bool:
    return bool(db.execute_sql("SELECT pg_is_in_recovery()").fetchone()[0])


def email(tag: str, i: int | str) -> str:
    return f"{tag}-{i}@replicas.test"


# -- routing -----------------------------------------------------------------------------------


def test_reads_go_to_the_replica_writes_and_transactions_to_the_primary(configure, routes):
    db = configure()
    tag = uuid.uuid4().hex[:8]
    users.create_user(email(tag, 0), password_hash=password_hash())
    wait_for_replica(db)
    with db.read_replica():
        assert on_replica(db)
        assert User.select().where(User.email == email(tag, 0)).count() == 1
        with db.atomic():  # a transaction begun in the block runs on the primary
            assert not on_replica(db)
            User.create(email=email(tag, 1), password_hash=password_hash())
        assert not on_replica(db)  # and the rest of the block stays there
    db.close()
    with db.atomic():  # reads inside a transaction: on the primary, seeing its own writes
        users.create_user(email(tag, 2), password_hash=password_hash())
        assert users.get_user_by_email(email(tag, 2)).email == email(tag, 2)
    db.close()
    assert users.get_user_by_email(email(tag, 2))  # the commit's position is honoured
    assert routes.replica >= 1


def test_a_held_primary_connection_comes_back_after_the_block(configure):
    db = configure()
    wait_for_replica(db)
    with db.checkout():
        pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        with db.read_replica():
            assert on_replica(db)
            with db.read_replica():  # nested: the same replica connection
                assert on_replica(db)
        assert db.execute_sql("SELECT pg_backend_pid()").fetchone()[0] == pid
        assert not on_replica(db)
    assert db._state.closed
    assert db.pool_stats().in_use == 0
    assert db._replicas.replicas[0].pool.stats().in_use == 0


def test_a_write_on_the_replica_is_an_error_naming_the_call(configure, rep):
    db = configure()
    tag = uuid.uuid4().hex[:8]
    wait_for_replica(db)
    with db.read_replica(), pytest.raises(ReplicaWriteError) as info:
        User.create(email=email(tag, "w"), password_hash=password_hash())
    message = str(info.value)
    assert 'INSERT INTO "users"' in message
    assert "test_replicas_live.py" in message and "test_a_write_on_the_replica" in message
    assert tag not in message  # no values
    with db.read_replica(), pytest.raises(ReplicaWriteError, match="UPDATE"):
        db.execute_sql("UPDATE users SET display_name = 'x' WHERE false")
    db.close()
    assert rep.primary.query("SELECT count(*) FROM users WHERE email = %s",
                             (email(tag, "w"),))[0][0] == 0


def test_a_replica_connection_dying_mid_block_reruns_the_read_on_the_primary(configure, rep):
    db = configure()
    wait_for_replica(db)
    with db.read_replica():
        assert on_replica(db)
        pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        rep.standby.query(f"SELECT pg_terminate_backend({pid})")
        time.sleep(0.1)
        # The next read finds the connection dead: it runs on the primary instead.
        assert db.execute_sql("SELECT pg_is_in_recovery()").fetchone()[0] is False
    db.close()


def test_lag_beyond_the_limit_skips_the_replica_with_one_line_each_way(configure, rep, caplog):
    db = configure(replica_max_lag=0.5)
    tag = uuid.uuid4().hex[:8]
    wait_for_replica(db)
    stop = threading.Event()

    def writer() -> None:  # keeps WAL coming, so the delayed standby is behind
        i = 0
        while not stop.is_set():
            users.create_user(email(tag, i), password_hash=password_hash())
            i += 1
            time.sleep(0.02)

    caplog.set_level(logging.INFO, logger="datalayer.replicas")
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        rep.standby.set_apply_delay(1.5)
        deadline = time.monotonic() + 15
        while db._replicas.replicas[0].state.usable and time.monotonic() < deadline:
            time.sleep(0.05)
        state = db._replicas.replicas[0].state
        assert not state.usable and state.reason.startswith("lag "), state
        route = db._replicas.route()
        assert route.replica is None and "lags" in str(route)
        rep.standby.set_apply_delay(0)
        wait_for_replica(db, timeout=15)
    finally:
        stop.set()
        thread.join()
    lines = [r.getMessage() for r in caplog.records if r.name == "datalayer.replicas"
             and r.levelno >= logging.INFO]
    assert sum("is skipped: lag" in line for line in lines) == 1, lines
    assert sum("is back in use" in line for line in lines) == 1, lines


def test_db_info_lists_the_replicas_with_their_lag_masked(configure, rep):
    from click.testing import CliRunner

    from datalayer.cli import main

    url = rep.standby.url.replace("postgres@", "postgres:s3cret@")
    env = {"DATABASE_URL": rep.primary.settings().url(masked=False), "DB_REPLICA_URLS": url}
    result = CliRunner().invoke(main, ["db", "info"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("replica 1:"))
    assert "postgres:***@127.0.0.1" in line and "in use, lag 0.00 s" in line
    result = CliRunner().invoke(main, ["db", "info", "--json"], env=env, catch_exceptions=False)
    assert '"in_use": true' in result.output and "s3cret" not in result.output


# -- the figures ---------------------------------------------------------------------------------

TRIALS = int(os.environ.get("DATALAYER_REPLICA_TRIALS", "10000"))


def test_read_your_writes_same_thread_with_1s_of_lag(configure, rep):
    """0 stale reads: create a user, then get_user_by_email at once, TRIALS times."""
    db = configure()
    tag = uuid.uuid4().hex[:8]
    users.create_user(email(tag, "seed"), password_hash=password_hash())
    wait_for_replica(db)
    rep.standby.set_apply_delay(1.0)
    stale = 0
    others_on_replica = 0
    started = time.monotonic()
    for i in range(TRIALS):
        users.create_user(email(tag, i), password_hash=password_hash())
        try:
            users.get_user_by_email(email(tag, i))
        except NotFound:
            stale += 1
        if i % 100 == 0:  # the replica stays in use for reads that need no recent write
            db._replicas.forget()  # (this thread's own write was just checked)
            with db.read_replica():
                others_on_replica += on_replica(db)
            db.close()
    elapsed = time.monotonic() - started
    print(f"\nFIGURE same-thread read-your-writes, 1 s lag: {stale} stale of {TRIALS} "
          f"({elapsed:.1f} s); reads needing no write on the replica: {others_on_replica} of "
          f"{(TRIALS + 99) // 100}")
    assert stale == 0
    assert others_on_replica >= (TRIALS + 99) // 100 * 0.8  # the replica was in use meanwhile


_CHILD = r"""
import os, sys
import datalayer
from datalayer.auth import users
db = datalayer.connect()
stale = replica = 0
for line in sys.stdin:
    address, position, seed = line.split()
    try:
        with db.read_your_writes(position):
            users.get_user_by_email(address)
        answer = "ok"
    except datalayer.NotFound:
        answer = "stale"
    with db.read_replica():
        on = db.execute_sql("SELECT pg_is_in_recovery()").fetchone()[0]
    print(answer, int(on), flush=True)
"""


def test_read_your_writes_through_a_carried_position_in_another_process(configure, rep):
    db = configure()
    tag = uuid.uuid4().hex[:8]
    wait_for_replica(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env.update(DATABASE_URL=rep.primary.settings().url(masked=False),
               DB_REPLICA_URLS=rep.standby.url)
    child = subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    rep.standby.set_apply_delay(1.0)
    stale = on_replica_count = 0
    started = time.monotonic()
    try:
        for i in range(TRIALS):
            users.create_user(email(tag, i), password_hash=password_hash())
            child.stdin.write(f"{email(tag, i)} {db.last_write_position()} x\n")
            child.stdin.flush()
            answer, on = child.stdout.readline().split()
            stale += answer == "stale"
            on_replica_count += int(on)
    finally:
        child.stdin.close()
        child.wait(30)
    elapsed = time.monotonic() - started
    print(f"\nFIGURE carried position, another process, 1 s lag: {stale} stale of {TRIALS} "
          f"({elapsed:.1f} s); that process's reads needing no write on the replica: "
          f"{on_replica_count} of {TRIALS}")
    assert stale == 0
    assert on_replica_count >= TRIALS * 0.8  # the replica was in use meanwhile


def test_most_eligible_reads_go_to_the_replica_without_lag(configure, rep, routes):
    db = configure()
    tag = uuid.uuid4().hex[:8]
    for i in range(50):
        users.create_user(email(tag, i), password_hash=password_hash())
    wait_for_replica(db)
    stop = threading.Event()
    duration = 5.0

    def writer() -> None:  # writes go on meanwhile (WAL moves), in a thread of their own
        i = 0
        while not stop.is_set():
            users.create_user(email(tag, f"w{i}"), password_hash=password_hash())
            i += 1
            time.sleep(0.005)

    def reader(index: int) -> None:
        end = time.monotonic() + duration
        rng = random.Random(index)
        while time.monotonic() < end:
            users.get_user_by_email(email(tag, rng.randrange(50)))

    thread = threading.Thread(target=writer)
    thread.start()
    routes.replica = routes.primary = 0
    try:
        errors = run_threads(16, reader)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    total = routes.replica + routes.primary
    share = routes.replica / total
    print(f"\nFIGURE no lag, 16 reader threads + 1 writer: {routes.replica} of {total} reads "
          f"on the replica ({share:.1%})")
    assert share >= 0.8


def test_standby_stopped_mid_run_no_read_fails_and_it_comes_back(configure, rep, routes):
    """16 threads read for 30 s; the standby stops at 8 s and starts again at 16 s."""
    db = configure()
    tag = uuid.uuid4().hex[:8]
    for i in range(50):
        users.create_user(email(tag, i), password_hash=password_hash())
    wait_for_replica(db)
    duration = float(os.environ.get("DATALAYER_REPLICA_RUN", "30"))
    failures: list[BaseException] = []
    reads = [0]
    lock = threading.Lock()
    start = time.monotonic()

    def reader(index: int) -> None:
        rng = random.Random(index)
        n = 0
        while time.monotonic() - start < duration:
            try:
                if n % 5 == 4:
                    with db.read_replica():
                        found = User.select().where(
                            User.email == email(tag, rng.randrange(50))).count()
                    db.close()
                    assert found == 1
                else:
                    users.get_user_by_email(email(tag, rng.randrange(50)))
            except BaseException as exc:
                with lock:
                    failures.append(exc)
            n += 1
        with lock:
            reads[0] += n

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(duration * 8 / 30)
    rep.standby.stop()
    stopped = time.time()
    replica_before = routes.replica
    time.sleep(duration * 8 / 30)
    during = routes.replica - replica_before
    rep.standby.start()
    restarted = time.time()
    routes.since = restarted
    for t in threads:
        t.join(120)
    back = None if routes.first_replica_after is None else routes.first_replica_after - restarted
    print(f"\nFIGURE standby stopped for {restarted - stopped:.1f} s of a {duration:g} s run, "
          f"16 threads: {len(failures)} failed reads of {reads[0]}; back in use "
          f"{back if back is None else round(back, 2)} s after its restart")
    assert not failures, [repr(f) for f in failures[:5]]
    assert back is not None and back <= 5.0
    assert during < 50  # while it was down, reads went to the primary


# -- through PgBouncer --------------------------------------------------------------------------


@pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer is not installed")
def test_through_pgbouncer(configure, rep, routes, tmp_path_factory):
    binary = pgbouncer_binary()
    assert binary is not None
    import tempfile
    from pathlib import Path

    directory = Path(tempfile.mkdtemp(prefix="datalayer-rep-pgb-"))
    assert rep.primary.server is not None
    front = PgBouncer(binary, directory / "p", "127.0.0.1", rep.primary.server.port).start()
    back = PgBouncer(binary, directory / "s", "127.0.0.1", rep.standby.port).start()
    try:
        settings = Settings.from_url(front.url("postgres"), application_name="datalayer-rep-pgb",
                                     replicas=(back.url("postgres"),))
        db = configure(settings)
        tag = uuid.uuid4().hex[:8]
        wait_for_replica(db)
        rep.standby.set_apply_delay(1.0)
        trials = max(TRIALS // 5, 100)
        stale = 0
        for i in range(trials):
            if i % 2:
                users.create_user(email(tag, i), password_hash=password_hash())
            else:  # a transaction that writes: its position comes with the COMMIT
                with db.atomic():
                    users.create_user(email(tag, i), password_hash=password_hash())
                db.close()
            try:
                users.get_user_by_email(email(tag, i))
            except NotFound:
                stale += 1
        db._replicas.forget()
        wait_for_replica(db)  # lag 1 s < DB_REPLICA_MAX_LAG: in use for reads needing no write
        with db.read_replica():
            replica_used = on_replica(db)
        db.close()
        print(f"\nFIGURE through PgBouncer (transaction pooling), 1 s lag: {stale} stale of "
              f"{trials}; replica in use for other reads: {replica_used}")
        assert stale == 0 and replica_used
    finally:
        database.close_pool()
        front.stop()
        back.stop()


def test_a_background_job_pauses_while_the_replica_lags(configure, rep):
    """A job's batches wait while the standby replays more than --max-lag behind (item 16.5)."""
    from datalayer.migrate.operations.background import JobSpec, register
    from datalayer.migrate.runtime import jobs

    db = configure()
    table = f"jobs_lag_{uuid.uuid4().hex[:8]}"
    with db.checkout():
        db.execute_sql(f"CREATE TABLE {table} (id serial PRIMARY KEY, n int NOT NULL DEFAULT 0)")
        db.execute_sql(f"INSERT INTO {table} (n) SELECT 0 FROM generate_series(1, 80)")
        register(db, table, JobSpec("fill", table, "id", "n = n + 1", None, 10))
    rep.standby.set_apply_delay(0.5)  # each batch's commit replays 0.5 s late
    notes: list[str] = []

    class Notes:
        def progress(self, job, rate):
            pass

        def note(self, line):
            notes.append(line)

        def finished(self, job):
            pass

    try:
        with db.checkout():
            # 8 batches 0.1 s apart: the lag the job reads is bounded by the time since the
            # replica was last seen caught up, so a job faster than max_lag never pauses
            # (on a quiet machine 8 unthrottled batches took less than 0.2 s).
            done = jobs.run_jobs(db, [table], jobs.JobOptions(max_lag=0.2, poll=0.05,
                                                              throttle=0.1, reporter=Notes()))
            counts = db.execute_sql(f"SELECT n, count(*) FROM {table} GROUP BY n").fetchall()
    finally:
        rep.standby.set_apply_delay(0)
    assert [j.state for j in done] == ["done"] and counts == [(1, 80)]
    assert notes and all(f"job {table}:fill: paused, a replica replays " in n for n in notes)
