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
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable

import psycopg2

from benchmarks._common import Result, interleaved, print_results, scratch_database, server_settings
from datalayer.auth import users
from datalayer.auth.passwords import hash_password
from datalayer.db import Database
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
    return 0
