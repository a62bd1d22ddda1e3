"""What read-your-writes costs: the commit that returns its WAL position, and the routing hooks.

Three pairs, each interleaved in one run on a scratch database (DATABASE_URL / DB_* or the
embedded server):

* a transaction that writes one row (``synchronous_commit = off`` for these two pairs:
  the fsync of a commit varies more than the difference), committed with ``COMMIT; SELECT
  pg_current_wal_insert_lsn()`` (one message, what datalayer sends when replicas are
  configured) against a plain ``COMMIT``, on raw psycopg2: the price of knowing the
  position without a round trip more;
* the same against ``COMMIT`` followed by ``SELECT pg_current_wal_insert_lsn()`` as a
  second round trip: what the one-message form saves;
* ``create_user`` (password hashed beforehand) and ``get_user_by_email`` through datalayer
  with a replica configured against datalayer without: the per-call cost of the write
  detection and of the routing decision.  The "replica" is the same server, which is not a
  standby, so it is skipped and every read is answered by the primary: the line measures
  the decision and the hooks, not a second server (``synchronous_commit = off`` on both
  sides, for the same reason as above).

Then issue 17's item-4 figures through PgBouncer (the tests print them on direct
connections, ``pytest -s tests/test_replicas_live.py``): on a primary and a
``pg_basebackup -R`` standby of its own, each behind a pgbouncer in transaction pooling,
stale reads after the caller's own write with 1 s of lag (same thread, and through a
position carried to another process; DATALAYER_REPLICA_TRIALS, default 10,000), the share
of reads the replica serves with no lag, and the standby stopped in the middle of a
DATALAYER_REPLICA_RUN (default 30) s run of 16 threads: failed reads and how long after
its restart it is back in use.  Skipped with the reason where no standby can be built or
pgbouncer is not installed.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2

from benchmarks._common import Result, interleaved, print_results, scratch_database, server_settings
from datalayer.auth import users
from datalayer.auth.passwords import hash_password
from datalayer.config import Settings
from datalayer.db import Database, database
from datalayer.errors import NotFound
from datalayer.models import MODELS


def _raw(settings: object) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(**settings.connect_kwargs())  # type: ignore[attr-defined]
    conn.autocommit = True
    return conn


def main(argv: list[str] | None = None) -> int:
    """Print the cost of the commit position and of the routing hooks as ratios."""
    started = time.perf_counter()
    base = server_settings()
    results: list[Result] = []
    with scratch_database(base, "datalayer_bench_rep") as settings:
        conn = _raw(settings)
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE bench_rep (id bigserial PRIMARY KEY, v text)")
            # The commit's fsync would hide the difference in its noise: off for these pairs.
            cur.execute("SET synchronous_commit = off")

        def txn(commit: str, extra: str | None) -> Callable[[int], None]:
            def run(n: int) -> None:
                cur = conn.cursor()
                for _ in range(n):
                    cur.execute("BEGIN")
                    cur.execute("INSERT INTO bench_rep (v) VALUES ('x')")
                    cur.execute(commit)
                    if extra is not None:
                        cur.execute(extra)
                        cur.fetchone()
                    elif commit != "COMMIT":
                        cur.fetchone()
            return run

        one_message = txn("COMMIT; SELECT pg_current_wal_insert_lsn()", None)
        plain = txn("COMMIT", None)
        two_trips = txn("COMMIT", "SELECT pg_current_wal_insert_lsn()")
        pkg, raw, ratio = interleaved(one_message, plain, rounds=31, batch=200)
        results.append(Result("commit with its position (one message)", pkg, raw,
                              ratio_override=ratio,
                              note="anchor: plain COMMIT (synchronous_commit off for both)"))
        pkg, raw, ratio = interleaved(one_message, two_trips, rounds=31, batch=200)
        results.append(Result("commit with its position (one message)", pkg, raw,
                              ratio_override=ratio,
                              note="anchor: COMMIT, then SELECT pg_current_wal_insert_lsn()"))
        conn.close()

        # synchronous_commit off for both sides here too: the fsync's noise (1-5 ms on a
        # shared disk) would bury the microseconds the hooks cost.
        settings = settings.replace(options={"options": "-c synchronous_commit=off"})
        plain_db = Database(settings)
        with plain_db.checkout(), plain_db.bind_ctx(MODELS):
            plain_db.create_tables(MODELS)
        routed_db = Database(settings.replace(replicas=(settings.url(masked=False),)))
        hashed = hash_password("benchmark password")
        tag = uuid.uuid4().hex[:8]
        counter = [0]

        def create(db: Database) -> Callable[[int], None]:
            def run(n: int) -> None:
                for _ in range(n):
                    counter[0] += 1
                    users.create_user(f"b{tag}-{counter[0]}@bench.test", password_hash=hashed,
                                      db=db)
            return run

        def lookup(db: Database) -> Callable[[int], None]:
            def run(n: int) -> None:
                for i in range(n):
                    with contextlib.suppress(NotFound):
                        users.get_user_by_email(f"b{tag}-{i % 50 + 1}@bench.test", db=db)
            return run

        try:
            pkg, raw, ratio = interleaved(create(routed_db), create(plain_db), rounds=31,
                                          batch=100)
            results.append(Result("create_user, a replica configured", pkg, raw,
                                  ratio_override=ratio, target=0.95,
                                  note="anchor: the same without replicas"))
            pkg, raw, ratio = interleaved(lookup(routed_db), lookup(plain_db), rounds=31,
                                          batch=300)
            results.append(Result("get_user_by_email, a replica configured", pkg, raw,
                                  ratio_override=ratio, target=0.95,
                                  note="anchor: the same without replicas (both on the primary)"))
        finally:
            routed_db.close_pool()
            plain_db.close_pool()
    print_results("read-your-writes: the commit position and the routing hooks", results)
    print(f"({time.perf_counter() - started:.0f} s)")
    return pgbouncer_figures()


# -- issue 17's item-4 figures through PgBouncer -----------------------------------------------
#
# tests/test_replicas_live.py prints (``pytest -s``) the figures on direct connections, and
# through PgBouncer only the stale reads of same-thread writes; the others through PgBouncer
# are printed here, on a primary and a pg_basebackup standby of the benchmark's own, each
# behind a pgbouncer in transaction pooling (what a deployment with PgBouncer looks like).

TRIALS = int(os.environ.get("DATALAYER_REPLICA_TRIALS", "10000"))
RUN_SECONDS = float(os.environ.get("DATALAYER_REPLICA_RUN", "30"))
THREADS = 16

_CHILD = r"""
import sys
import datalayer
from datalayer.auth import users
db = datalayer.connect()
for line in sys.stdin:
    address, position = line.split()
    try:
        with db.read_your_writes(position):
            users.get_user_by_email(address)
        answer = "ok"
    except datalayer.NotFound:
        answer = "stale"
    print(answer, flush=True)
"""


class _Picks:
    """Counts where the router sends reads (wrapping this database's Router.pick)."""

    def __init__(self, db: Database) -> None:
        assert db._replicas is not None
        self.router = db._replicas.router
        self.original = self.router.pick
        self.lock = threading.Lock()
        self.replica = self.primary = 0
        self.since = float("inf")  # time.monotonic() after which the first replica pick counts
        self.first_after: float | None = None
        self.router.pick = self.pick  # type: ignore[method-assign]  # counting, not timing

    def pick(self, needed: int | None, now: float) -> Any:
        replica = self.original(needed, now)
        with self.lock:
            if replica is None:
                self.primary += 1
            else:
                self.replica += 1
                if self.first_after is None and now >= self.since:
                    self.first_after = now
        return replica

    def reset(self) -> None:
        with self.lock:
            self.replica = self.primary = 0

    def close(self) -> None:
        self.router.pick = self.original  # type: ignore[method-assign]


def _wait_for_replica(db: Database, timeout: float = 15.0) -> None:
    assert db._replicas is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db._replicas.route().replica is not None:
            return
        time.sleep(0.02)
    raise RuntimeError(f"the replica was not used within {timeout:g} s: {db._replicas.route()}")


def _stale_same_thread(db: Database, hashed: str, tag: str) -> int:
    stale = 0
    for i in range(TRIALS):
        users.create_user(f"{tag}-s{i}@replicas.bench", password_hash=hashed, db=db)
        try:
            users.get_user_by_email(f"{tag}-s{i}@replicas.bench", db=db)
        except NotFound:
            stale += 1
    return stale


def _stale_carried(db: Database, hashed: str, tag: str, primary_url: str,
                   replica_url: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env.update(DATABASE_URL=primary_url, DB_REPLICA_URLS=replica_url)
    child = subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    stale = 0
    try:
        for i in range(TRIALS):
            address = f"{tag}-c{i}@replicas.bench"
            users.create_user(address, password_hash=hashed, db=db)
            child.stdin.write(f"{address} {db.last_write_position()}\n")
            child.stdin.flush()
            stale += child.stdout.readline().strip() == "stale"
    finally:
        child.stdin.close()
        child.wait(30)
        child.stdout.close()
    return stale


def _share(db: Database, hashed: str, tag: str, picks: _Picks) -> tuple[int, int]:
    """16 reader threads for 5 s while one thread writes: (reads to the replica, all reads)."""
    from tests._faults_helpers import run_threads

    for i in range(50):
        users.create_user(f"{tag}-r{i}@replicas.bench", password_hash=hashed, db=db)
    db._replicas.forget()  # type: ignore[union-attr]  # this thread reads nothing here
    _wait_for_replica(db)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            users.create_user(f"{tag}-w{i}@replicas.bench", password_hash=hashed, db=db)
            i += 1
            time.sleep(0.005)

    def reader(index: int) -> None:
        end = time.monotonic() + 5.0
        rng = random.Random(index)
        while time.monotonic() < end:
            users.get_user_by_email(f"{tag}-r{rng.randrange(50)}@replicas.bench", db=db)

    thread = threading.Thread(target=writer)
    thread.start()
    picks.reset()
    try:
        errors = run_threads(THREADS, reader)
    finally:
        stop.set()
        thread.join()
    if errors:
        raise errors[0]
    return picks.replica, picks.replica + picks.primary


def _standby_stopped(db: Database, rep: Any, tag: str,
                     picks: _Picks) -> tuple[int, int, float | None, float]:
    """16 threads read for RUN_SECONDS; the standby stops at 8/30 of it and starts at 16/30.

    Returns (failed reads, reads, seconds from the restart to the first read sent to the
    replica, seconds it was stopped).
    """
    from datalayer.models import User

    failures: list[BaseException] = []
    reads = [0]
    lock = threading.Lock()
    start = time.monotonic()

    def reader(index: int) -> None:
        rng = random.Random(index)
        n = 0
        while time.monotonic() - start < RUN_SECONDS:
            address = f"{tag}-r{rng.randrange(50)}@replicas.bench"
            try:
                if n % 5 == 4:  # an application's own read in a read_replica() block
                    with db.read_replica():
                        found = User.select().where(User.email == address).count()
                    db.close()
                    if found != 1:
                        raise AssertionError(f"{address} not found")
                else:
                    users.get_user_by_email(address, db=db)
            except BaseException as exc:
                with lock:
                    failures.append(exc)
            n += 1
        with lock:
            reads[0] += n

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(RUN_SECONDS * 8 / 30)
    rep.standby.stop()
    stopped = time.monotonic()
    time.sleep(RUN_SECONDS * 8 / 30)
    rep.standby.start()
    restarted = time.monotonic()
    picks.since = restarted
    for t in threads:
        t.join(120)
    back = None if picks.first_after is None else picks.first_after - restarted
    if back is None:
        print(f"  the replica's state at the end: {db._replicas.replicas[0].state}")  # type: ignore[union-attr]
    for exc in failures[:3]:
        print(f"  a failed read: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return len(failures), reads[0], back, restarted - stopped


def pgbouncer_figures() -> int:
    """Print the item-4 figures through PgBouncer (each line says met or MISSED)."""
    try:
        from tests._faults_helpers import PgBouncer, pgbouncer_binary
        from tests._replica_helpers import cluster, password_hash, standby_unavailable
    except ImportError as exc:  # run outside the repository
        print(f"figures through PgBouncer not measured: the test helpers are not importable "
              f"({exc})")
        return 0
    why = standby_unavailable()
    binary = pgbouncer_binary()
    if why is None and binary is None:
        why = "pgbouncer is not installed"
    if why is not None:
        print(f"figures through PgBouncer not measured: {why}")
        return 0
    assert binary is not None
    started = time.perf_counter()
    print("  building a primary and a standby, each behind a pgbouncer", file=sys.stderr)
    directory = Path(tempfile.mkdtemp(prefix="datalayer-bench-rep-pgb-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, directory, True)
        rep = stack.enter_context(cluster("datalayer-bench-rep-"))
        assert rep.primary.server is not None
        front = PgBouncer(binary, directory / "p", "127.0.0.1", rep.primary.server.port,
                          pool_size=THREADS).start()
        stack.callback(front.stop)
        # pgbouncer waits server_login_retry (default 15 s) after a failed login before it
        # tries the server again, refusing its clients meanwhile: a standby restarted within
        # that spell is not reachable through it before it ends, whatever the client does.
        back = PgBouncer(binary, directory / "s", "127.0.0.1", rep.standby.port,
                         pool_size=THREADS, extra="server_login_retry = 1\n").start()
        stack.callback(back.stop)
        settings = Settings.from_url(front.url("postgres"),
                                     application_name="datalayer-bench-rep-pgb",
                                     replicas=(back.url("postgres"),),
                                     max_open_conns=THREADS + 2, max_idle_conns=THREADS + 2)
        # The package's database: its models are bound to it (read_replica() blocks use User).
        db = database.configure(settings)
        stack.callback(database.close_pool)
        picks = _Picks(db)
        stack.callback(picks.close)
        hashed = password_hash()
        tag = uuid.uuid4().hex[:8]
        rep.standby.wait_caught_up(rep.primary)
        _wait_for_replica(db)

        rep.standby.set_apply_delay(1.0)
        lines = []
        stale = _stale_same_thread(db, hashed, tag)
        lines.append((f"same-thread read-your-writes, 1 s lag: {stale} stale of {TRIALS}",
                      stale == 0))
        print("  done: same thread", file=sys.stderr)
        stale = _stale_carried(db, hashed, tag, front.url("postgres"), back.url("postgres"))
        lines.append((f"carried position, another process, 1 s lag: {stale} stale of {TRIALS}",
                      stale == 0))
        print("  done: carried position", file=sys.stderr)
        rep.standby.set_apply_delay(0)
        rep.standby.wait_caught_up(rep.primary)
        on_replica, total = _share(db, hashed, tag, picks)
        lines.append((f"no lag, {THREADS} reader threads + 1 writer: {on_replica} of {total} "
                      f"reads on the replica ({on_replica / max(1, total):.1%})",
                      on_replica >= 0.8 * total))
        print("  done: share", file=sys.stderr)
        failed, reads, back_after, down_for = _standby_stopped(db, rep, tag, picks)
        lines.append((f"standby stopped for {down_for:.1f} s of a {RUN_SECONDS:g} s run, "
                      f"{THREADS} threads: {failed} failed reads of {reads}; back in use "
                      f"{'never' if back_after is None else f'{back_after:.2f} s'} after its "
                      "restart", failed == 0 and back_after is not None and back_after <= 5.0))
    print("\nissue 17 item 4 through PgBouncer (transaction pooling, primary and standby "
          "each behind one)")
    for text, met in lines:
        print(f"  {text}  {'met' if met else 'MISSED'}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0
