"""The package's operations against hand-written SQL on raw psycopg2, side by side.

    python -m benchmarks            # every benchmark
    python -m benchmarks ops        # this one

Runs against DATABASE_URL / DB_* when set, else the embedded server, in a
scratch database of its own that is dropped afterwards.

The first table times each single-row operation four ways, round by round
in rotating order, and prints for each the median of the per-round ratios
of throughput to the anchor, hand-written unprepared SQL on raw psycopg2
(1.00x):

* ``package``: what a worker writes, ``datalayer.get_user_by_email(...)`` with a
  pooled checkout per call (the package prepares its statements itself);
* ``raw PREPARE``: the same SQL on raw psycopg2, ``PREPARE``d once by hand and
  run with ``EXECUTE name(...)``;
* ``psycopg 3``: the same SQL on psycopg 3 with a ``psycopg_pool`` checkout per
  call and psycopg's automatic prepare (``prepare_threshold`` 5, its default).

Every side does the same work in Python that the operation needs (lower-casing
the address, making and hashing the token).  The raw sides hold one
connection each (autocommit, like the pool's).  Client CPU per operation is
``time.process_time()`` over a batch, divided by its size: the package's
against the anchor's, median of the per-round ratios.  On a busy machine that
ratio moves with the load (code that runs after each wait for the server runs
from cold caches); below the table, the client work of each operation is
also counted, which the load does not change: Python-level and built-in calls
(``sys.setprofile``) and bytecodes (``sys.settrace``) per operation, the
package's and raw's (C code inside psycopg2 and libpq is not in these counts).

The last column, ``routing``, is what read-replica routing adds to each operation, measured
on a primary and a streaming standby of the benchmark's own (embedded servers, the standby
built with ``pg_basebackup -R``), interleaved round by round: the lookup with a replica
configured (answered by the standby, the routing deciding per call) against the same
lookup on a database whose only server is that standby; each write with a replica
configured against the same write without (both on the primary; the writes note their
position for read-your-writes).  ``synchronous_commit = off`` on both sides there, so
that the fsync's noise does not bury a few percent: the writes are shorter, which makes
the routing's share larger, not smaller.  Skipped with the reason where no standby can be
built (``pg_basebackup`` missing).

The second table: bulk import, the cost of a checkout, threads, import time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import io
import itertools
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2

from benchmarks._common import Result, interleaved, print_results, scratch_database, server_settings

SINGLE_ROW_TARGET = 0.8  # the second table's lines
LOOKUP_TARGET = 1.3  # get user by e-mail, x raw unprepared
WRITE_TARGET = 1.05  # create user, issue token, rotate token (their commit dominates)
CPU_TARGET = 1.15  # client CPU per operation, package / raw unprepared, at most
ROUTING_BUDGET = 0.05  # what replica routing may add to a read or a write, at most
THREADS_TARGET = 0.3
BULK_TARGET = 0.8
CHECKOUT_BUDGET_US = 20.0
THREADS = 8
BULK_ROWS = 10_000
SEED_USERS = 1000

USER_COLUMNS = (
    "users_id, email, password_hash, display_name, role, is_active, last_login_at, "
    "created_at, updated_at"
)
RAW_GET_BY_EMAIL = f"SELECT {USER_COLUMNS} FROM users WHERE email = %s"
RAW_INSERT_USER = (
    "INSERT INTO users (email, password_hash, display_name, role, is_active) "
    f"VALUES (%s, %s, %s, %s, %s) ON CONFLICT (email) DO NOTHING RETURNING {USER_COLUMNS}"
)
RAW_ISSUE = (
    "INSERT INTO refresh_tokens (refresh_tokens_id, users_id, token_hash, family_id, "
    "expires_at, user_agent, ip) SELECT %s, %s, %s, %s, %s, %s, %s "
    "WHERE EXISTS (SELECT 1 FROM users WHERE users_id = %s AND is_active) "
    "RETURNING refresh_tokens_id"
)
RAW_ROTATE = """
WITH old AS (
    UPDATE refresh_tokens SET revoked_at = now(), replaced_by = %(new_id)s, updated_at = now()
    WHERE token_hash = %(old_hash)s AND revoked_at IS NULL AND expires_at > now()
      AND EXISTS (SELECT 1 FROM users u WHERE u.users_id = refresh_tokens.users_id
                  AND u.is_active)
    RETURNING users_id, family_id, user_agent, ip
), new AS (
    INSERT INTO refresh_tokens (refresh_tokens_id, users_id, token_hash, family_id,
                                expires_at, user_agent, ip)
    SELECT %(new_id)s, users_id, %(new_hash)s, family_id, %(expires_at)s,
           COALESCE(%(user_agent)s, user_agent), COALESCE(%(ip)s, ip)
    FROM old
    RETURNING users_id, family_id
)
SELECT users_id, family_id FROM new
"""
RAW_COPY = "COPY users (email, password_hash, display_name, role, is_active) FROM STDIN"
TTL = dt.timedelta(days=30)


def _raw_escape(value: Any) -> str:
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    text = str(value)
    return (
        text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


# -- four sides, rotating order ---------------------------------------------------------

SIDES = ("raw", "package", "raw PREPARE", "psycopg 3")


@dataclass
class Line:
    """One operation timed on every side: medians per operation and per-round ratios."""

    name: str
    target: float
    wall: dict[str, float]  # median seconds per operation
    ratio: dict[str, float]  # median over rounds of raw time / side time
    cpu: dict[str, float]  # median client CPU seconds per operation
    cpu_ratio: dict[str, float]  # median over rounds of side CPU / raw CPU
    routing: float | None = None  # median over rounds of routed time / plain time, minus 1
    routing_cpu: float | None = None  # median client CPU seconds the routing adds per op
    work: dict[str, Work] | None = None  # client work per op, counted (package and raw)

    @property
    def met(self) -> bool:
        return (
            self.ratio["package"] >= self.target
            and self.ratio["package"] > self.ratio["psycopg 3"]
            and self.cpu_ratio["package"] <= CPU_TARGET
            and (self.routing is None or self.routing <= ROUTING_BUDGET)
        )


@dataclass(frozen=True)
class Work:
    """Client work per operation, counted: the same on a busy machine as on a quiet one."""

    python_calls: float  # calls of Python functions (the benchmark's loop body included)
    c_calls: float  # calls of built-in functions and methods
    bytecodes: float  # bytecode instructions run by the interpreter

    def __str__(self) -> str:
        return (f"{self.python_calls:5.1f} py + {self.c_calls:5.1f} C calls, "
                f"{self.bytecodes:6.0f} bytecodes")


def count_work(fn: Callable[[int], None], n: int = 50) -> Work:
    """Run ``fn(n)`` twice, counting calls (sys.setprofile) then bytecodes (sys.settrace)."""
    calls = [0, 0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls[0] += 1
        elif event == "c_call":
            calls[1] += 1

    codes = [0]

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        if event == "opcode":
            codes[0] += 1
        return trace

    fn(5)  # warm: nothing made on first use counted
    sys.setprofile(profile)
    try:
        fn(n)
    finally:
        sys.setprofile(None)
    sys.settrace(trace)
    try:
        fn(n)
    finally:
        sys.settrace(None)
    return Work(calls[0] / n, calls[1] / n, codes[0] / n)


def _time_batch(fn: Callable[[int], None], n: int) -> tuple[float, float]:
    gc.disable()
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        fn(n)
        return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n
    finally:
        gc.enable()


def compare(name: str, sides: dict[str, Callable[[int], None]], *, target: float,
            rounds: int = 41, batch: int = 100) -> Line:
    """Time every side ``batch`` operations per round, the first side of a round rotating."""
    order = list(sides)
    for fn in sides.values():  # warm up: connections, prepared statements, caches
        fn(max(10, batch // 4))
    walls: dict[str, list[float]] = {k: [] for k in sides}
    cpus: dict[str, list[float]] = {k: [] for k in sides}
    for i in range(rounds):
        shift = i % len(order)
        for key in order[shift:] + order[:shift]:
            wall, cpu = _time_batch(sides[key], batch)
            walls[key].append(wall)
            cpus[key].append(cpu)
    anchor, anchor_cpu = walls["raw"], cpus["raw"]
    work = {k: count_work(sides[k]) for k in ("raw", "package")}
    return Line(
        name,
        target,
        work=work,
        wall={k: statistics.median(v) for k, v in walls.items()},
        ratio={k: statistics.median(r / s for r, s in zip(anchor, v, strict=True))
               for k, v in walls.items()},
        cpu={k: statistics.median(v) for k, v in cpus.items()},
        cpu_ratio={k: statistics.median(s / r for r, s in zip(anchor_cpu, v, strict=True))
                   for k, v in cpus.items()},
    )


def print_lines(lines: list[Line]) -> None:
    """Print the four-sided table: time per operation and throughput ratio to raw."""
    print("\nsingle-row operations: throughput vs raw psycopg2, hand-written unprepared SQL")
    head = (f"{'operation':<30}" + "".join(f"{k:>17}" for k in SIDES)
            + f"{'target':>8}{'CPU/op':>16}{'routing':>20}  met")
    print(head)
    print("-" * len(head))
    for line in lines:
        cells = "".join(
            f"{line.wall[k] * 1e6:8.1f} us {line.ratio[k]:4.2f}x" for k in SIDES
        )
        cpu = f"{line.cpu['package'] * 1e6:5.1f} us {line.cpu_ratio['package']:4.2f}x"
        routing = (
            "not measured" if line.routing is None or line.routing_cpu is None
            else f"{line.routing * 100:+5.1f}% {line.routing_cpu * 1e6:+5.1f} us"
        )
        print(f"{line.name:<30}{cells}{'>=' + format(line.target, 'g') + 'x':>8}{cpu:>16}"
              f"{routing:>20}  {'yes' if line.met else 'NO'}")
    print(f"x = throughput / raw unprepared's (median of per-round ratios); met: package >= "
          f"target, ahead of psycopg 3, and client CPU/op (package, x raw's) <= {CPU_TARGET:g}x"
          f", and the routing adds <= {ROUTING_BUDGET:.0%}")
    print("routing = time per op with a replica configured / without, minus 1 (median of "
          "per-round ratios), and the client CPU it adds per op")
    print("\nclient work per operation, counted (sys.setprofile / sys.settrace over 50 "
          "operations; the load does not change it): package vs raw unprepared")
    for line in lines:
        if line.work is not None:
            raw, package = line.work["raw"], line.work["package"]
            print(f"{line.name:<30} raw {raw}   package {package}  "
                  f"({package.bytecodes / raw.bytecodes:.2f}x the bytecodes)")


def _dollars(sql: str) -> tuple[str, list[str]]:
    """Return ``sql`` with ``%s`` / ``%(name)s`` as ``$n`` (a name once), and the names."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        key = match[1] or str(len(names))
        if match[1] is None or key not in names:
            names.append(key)
            return f"${len(names)}"
        return f"${names.index(key) + 1}"

    return re.sub(r"%(?:\((\w+)\))?s", number, sql), names


class Prepared:
    """A statement PREPAREd by hand on one raw psycopg2 connection."""

    def __init__(self, conn: Any, name: str, sql: str) -> None:
        body, names = _dollars(sql)
        with conn.cursor() as cur:
            cur.execute(f"PREPARE {name} AS {body}")
        self.sql = f"EXECUTE {name}({', '.join(['%s'] * len(names))})"
        self.names = names

    def args(self, params: Any) -> list[Any]:
        if isinstance(params, dict):
            return [params[k] for k in self.names]
        return list(params)



class Bench:
    """The state of one run: the package's database and a raw connection to the same one."""

    def __init__(self, settings: Any) -> None:
        import datalayer
        from datalayer.auth import passwords
        from datalayer.models import MODELS

        self.dl = datalayer
        self.passwords = passwords
        self.db = datalayer.connect(settings)
        with self.db.checkout():
            self.db.create_tables(MODELS)
        self.settings = settings
        self.raw = self.raw_connection()
        self.hash = passwords.hash_password("benchmark password")
        self.dl.import_users(
            {"email": f"seed{i}@bench.example", "password_hash": self.hash,
             "display_name": f"Seed {i}"}
            for i in range(SEED_USERS)
        )
        self.user_ids = [u[0] for u in self.query("SELECT users_id FROM users")]
        self.counter = itertools.count()
        self.prep = self.raw_connection()  # the raw side that PREPAREs by hand
        self.pg3 = self.psycopg3_pool()

    def psycopg3_pool(self) -> Any:
        """Return a psycopg_pool of one connection (autocommit, automatic prepare)."""
        import psycopg
        import psycopg_pool

        kwargs = self.settings.connect_kwargs()
        conninfo = psycopg.conninfo.make_conninfo(
            **{k: str(v) for k, v in kwargs.items() if v is not None}
        )
        pool = psycopg_pool.ConnectionPool(
            conninfo, min_size=1, max_size=1, open=True,
            kwargs={"autocommit": True, "prepare_threshold": 5},
        )
        pool.wait()
        return pool

    def raw_connection(self) -> Any:
        conn = psycopg2.connect(**self.settings.connect_kwargs())
        conn.autocommit = True
        return conn

    def query(self, sql: str, params: Any = ()) -> list[Any]:
        with self.raw.cursor() as cur:
            cur.execute(sql, params)
            rows: list[Any] = cur.fetchall()
            return rows

    def close(self) -> None:
        self.raw.close()
        self.prep.close()
        self.pg3.close()
        self.dl.close()

    # -- single-row operations ------------------------------------------------------

    def emails(self) -> Callable[[], str]:
        # Mixed case on purpose: the lookup is case-insensitive on both sides.
        cycle = itertools.cycle([f"Seed{i}@Bench.Example" for i in range(SEED_USERS)])
        return cycle.__next__

    def get_by_email(self) -> Line:
        get = self.dl.get_user_by_email
        nxt = {k: self.emails() for k in SIDES}
        conn, prep, pg3 = self.raw, Prepared(self.prep, "bench_get", RAW_GET_BY_EMAIL), self.pg3

        def package(n: int) -> None:
            nxt_p = nxt["package"]
            for _ in range(n):
                get(nxt_p())

        def raw(n: int) -> None:
            nxt_r = nxt["raw"]
            for _ in range(n):
                with conn.cursor() as cur:
                    cur.execute(RAW_GET_BY_EMAIL, (nxt_r().strip().lower(),))
                    cur.fetchone()

        def raw_prepared(n: int) -> None:
            nxt_r, pconn, sql = nxt["raw PREPARE"], self.prep, prep.sql
            for _ in range(n):
                with pconn.cursor() as cur:
                    cur.execute(sql, (nxt_r().strip().lower(),))
                    cur.fetchone()

        def psycopg3(n: int) -> None:
            nxt_r = nxt["psycopg 3"]
            for _ in range(n):
                with pg3.connection() as c:
                    c.execute(RAW_GET_BY_EMAIL, (nxt_r().strip().lower(),)).fetchone()

        return compare("get user by e-mail", self._sides(package, raw, raw_prepared, psycopg3),
                       target=LOOKUP_TARGET, batch=150)

    @staticmethod
    def _sides(*fns: Callable[[int], None]) -> dict[str, Callable[[int], None]]:
        package, raw, raw_prepared, psycopg3 = fns
        return {"raw": raw, "package": package, "raw PREPARE": raw_prepared,
                "psycopg 3": psycopg3}

    def get_by_email_held(self) -> Result:
        """The cost of a checkout: the same lookup with and without a held connection."""
        get = self.dl.get_user_by_email
        db = self.db
        nxt_a, nxt_b = self.emails(), self.emails()

        def per_call(n: int) -> None:
            for _ in range(n):
                get(nxt_a())

        def held(n: int) -> None:
            with db.checkout():
                for _ in range(n):
                    get(nxt_b())

        p, r, q = interleaved(per_call, held, rounds=41, batch=150)
        cycle = self.checkout_cycle()
        diff_us = (r / q - r) * 1e6  # from the paired ratio: steadier than p - r
        return Result(
            "pool checkout vs held connection (get)",
            p,
            r,
            ratio_override=q,
            note=(
                f"checkout per call costs {diff_us:+.1f} us over a held connection "
                f"(target <= {CHECKOUT_BUDGET_US:g} us); a bare checkout+return cycle "
                f"takes {cycle * 1e6:.1f} us"
            ),
            met_override=diff_us <= CHECKOUT_BUDGET_US,
        )

    def checkout_cycle(self) -> float:
        db = self.db

        def cycle(n: int) -> None:
            for _ in range(n):
                with db.checkout():
                    pass

        def nothing(n: int) -> None:
            for _ in range(n):
                pass

        p, _, _ = interleaved(cycle, nothing, rounds=11, batch=2000)
        return p

    def create_user(self) -> Line:
        create = self.dl.create_user
        hashed = self.hash
        conn, pg3 = self.raw, self.pg3
        prep = Prepared(self.prep, "bench_insert_user", RAW_INSERT_USER)
        run = uuid.uuid4().hex[:6]
        counter = self.counter

        def email() -> str:
            return f"New{run}-{next(counter)}@Bench.Example"

        def package(n: int) -> None:
            for _ in range(n):
                create(email(), password_hash=hashed, display_name="New User")

        def raw(n: int) -> None:
            for _ in range(n):
                with conn.cursor() as cur:
                    cur.execute(RAW_INSERT_USER, (email().strip().lower(), hashed, "New User",
                                                  "user", True))
                    cur.fetchone()

        def raw_prepared(n: int) -> None:
            pconn, sql = self.prep, prep.sql
            for _ in range(n):
                with pconn.cursor() as cur:
                    cur.execute(sql, (email().strip().lower(), hashed, "New User", "user", True))
                    cur.fetchone()

        def psycopg3(n: int) -> None:
            for _ in range(n):
                with pg3.connection() as c:
                    c.execute(RAW_INSERT_USER, (email().strip().lower(), hashed, "New User",
                                                "user", True)).fetchone()

        return compare("create user (database work)",
                       self._sides(package, raw, raw_prepared, psycopg3), target=WRITE_TARGET)

    def hashing(self) -> Result:
        from argon2.low_level import Type, hash_secret

        hash_password = self.passwords.hash_password
        params = self.passwords.DEFAULT_PARAMS
        assert isinstance(params, self.passwords.Argon2Params)

        def package(n: int) -> None:
            for _ in range(n):
                hash_password("benchmark password")

        def raw(n: int) -> None:
            for _ in range(n):
                hash_secret(b"benchmark password", os.urandom(16), params.time_cost,
                            params.memory_cost, params.parallelism, 32, Type.ID)

        p, r, q = interleaved(package, raw, rounds=5, batch=2, warmup=0)
        return Result(f"create user (argon2id hashing, {params.encode()})", p, r, unit="ms",
                      ratio_override=q)

    def issue_token(self) -> Line:
        issue = self.dl.issue_token
        ids = {k: itertools.cycle(self.user_ids) for k in SIDES}
        conn, pg3 = self.raw, self.pg3
        prep = Prepared(self.prep, "bench_issue", RAW_ISSUE)

        def params(user_id: Any) -> tuple[Any, ...]:
            token = secrets.token_urlsafe(32)
            token_hash = hashlib.sha256(token.encode()).hexdigest()
            expires = dt.datetime.now(dt.UTC) + TTL
            return (uuid.uuid4(), user_id, token_hash, uuid.uuid4(), expires, "bench/1.0",
                    "192.0.2.1", user_id)

        def package(n: int) -> None:
            nxt = ids["package"]
            for _ in range(n):
                issue(next(nxt), user_agent="bench/1.0", ip="192.0.2.1")

        def raw(n: int) -> None:
            nxt = ids["raw"]
            for _ in range(n):
                with conn.cursor() as cur:
                    cur.execute(RAW_ISSUE, params(next(nxt)))
                    if cur.fetchone() is None:
                        raise RuntimeError("raw issue failed")

        def raw_prepared(n: int) -> None:
            nxt, pconn, sql = ids["raw PREPARE"], self.prep, prep.sql
            for _ in range(n):
                with pconn.cursor() as cur:
                    cur.execute(sql, params(next(nxt)))
                    if cur.fetchone() is None:
                        raise RuntimeError("raw issue failed")

        def psycopg3(n: int) -> None:
            nxt = ids["psycopg 3"]
            for _ in range(n):
                with pg3.connection() as c:
                    if c.execute(RAW_ISSUE, params(next(nxt))).fetchone() is None:
                        raise RuntimeError("psycopg 3 issue failed")

        return compare("issue token", self._sides(package, raw, raw_prepared, psycopg3),
                       target=WRITE_TARGET)

    def rotate_token(self) -> Line:
        rotate = self.dl.rotate_token
        conn, pg3 = self.raw, self.pg3
        prep = Prepared(self.prep, "bench_rotate", RAW_ROTATE)
        state = {k: self.dl.issue_token(self.user_ids[i]).token for i, k in enumerate(SIDES)}

        def params(token: str) -> tuple[str, dict[str, Any]]:
            new = secrets.token_urlsafe(32)
            return new, {
                "old_hash": hashlib.sha256(token.encode()).hexdigest(),
                "new_id": uuid.uuid4(),
                "new_hash": hashlib.sha256(new.encode()).hexdigest(),
                "expires_at": dt.datetime.now(dt.UTC) + TTL,
                "user_agent": None,
                "ip": None,
            }

        def package(n: int) -> None:
            token = state["package"]
            for _ in range(n):
                token = rotate(token).token
            state["package"] = token

        def raw(n: int) -> None:
            token = state["raw"]
            for _ in range(n):
                token, values = params(token)
                with conn.cursor() as cur:
                    cur.execute(RAW_ROTATE, values)
                    if cur.fetchone() is None:
                        raise RuntimeError("raw rotation failed")
            state["raw"] = token

        def raw_prepared(n: int) -> None:
            token, pconn, sql = state["raw PREPARE"], self.prep, prep.sql
            for _ in range(n):
                token, values = params(token)
                with pconn.cursor() as cur:
                    cur.execute(sql, prep.args(values))
                    if cur.fetchone() is None:
                        raise RuntimeError("raw rotation failed")
            state["raw PREPARE"] = token

        def psycopg3(n: int) -> None:
            token = state["psycopg 3"]
            for _ in range(n):
                token, values = params(token)
                with pg3.connection() as c:
                    if c.execute(RAW_ROTATE, values).fetchone() is None:
                        raise RuntimeError("psycopg 3 rotation failed")
            state["psycopg 3"] = token

        return compare("rotate token", self._sides(package, raw, raw_prepared, psycopg3),
                       target=WRITE_TARGET)

    # -- bulk -------------------------------------------------------------------------

    def bulk_import(self, rounds: int = 7) -> Result:
        conn = self.raw
        import_users = self.dl.import_users
        hashed = self.hash

        def rows(tag: str) -> list[dict[str, Any]]:
            return [
                {"email": f"Bulk{tag}-{i}@Bench.Example", "password_hash": hashed,
                 "display_name": f"Bulk User {i}", "role": "user", "is_active": True}
                for i in range(BULK_ROWS)
            ]

        def clear() -> None:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM users WHERE email LIKE 'bulk%%'")
                cur.execute("VACUUM users")

        def package(data: list[dict[str, Any]]) -> float:
            start = time.perf_counter()
            count = import_users(data)
            elapsed = time.perf_counter() - start
            assert count == BULK_ROWS
            return elapsed

        def raw(data: list[dict[str, Any]]) -> float:
            start = time.perf_counter()
            lines = []
            for row in data:
                lines.append("\t".join((
                    _raw_escape(row["email"].strip().lower()),
                    _raw_escape(row["password_hash"]),
                    _raw_escape(row["display_name"]),
                    _raw_escape(row["role"]),
                    _raw_escape(row["is_active"]),
                )) + "\n")
            with conn.cursor() as cur:
                cur.copy_expert(RAW_COPY, io.StringIO("".join(lines)))
            return time.perf_counter() - start

        pkg: list[float] = []
        ref: list[float] = []
        for i in range(rounds + 1):
            order = (("p", package), ("r", raw)) if i % 2 == 0 else (("r", raw), ("p", package))
            for side, fn in order:
                data = rows(f"{side}{i}")
                clear()
                elapsed = fn(data)
                if i > 0:  # round 0 warms up
                    (pkg if side == "p" else ref).append(elapsed)
        clear()
        p, r = statistics.median(pkg), statistics.median(ref)
        q = statistics.median(b / a for a, b in zip(pkg, ref, strict=True))
        return Result(f"bulk import {BULK_ROWS:,} users (per batch)", p, r, unit="ms",
                      target=BULK_TARGET, ratio_override=q,
                      note="package: validation + COPY; raw: COPY text built by hand + COPY")

    # -- threads ----------------------------------------------------------------------

    def threads(self) -> Result:
        get = self.dl.get_user_by_email
        raw_conns = [self.raw_connection() for _ in range(THREADS)]

        def run_threads(work: Callable[[int, int], None], n: int) -> None:
            per_thread = max(1, n // THREADS)
            barrier = threading.Barrier(THREADS + 1)
            errors: list[BaseException] = []

            def body(k: int) -> None:
                barrier.wait()
                try:
                    work(k, per_thread)
                except BaseException as exc:  # report, do not hang the run
                    errors.append(exc)

            pool = [threading.Thread(target=body, args=(k,)) for k in range(THREADS)]
            for t in pool:
                t.start()
            barrier.wait()
            for t in pool:
                t.join()
            if errors:
                raise errors[0]

        def pkg_work(k: int, n: int) -> None:
            for i in range(n):
                get(f"Seed{(k * 97 + i) % SEED_USERS}@Bench.Example")

        def raw_work(k: int, n: int) -> None:
            conn = raw_conns[k]
            for i in range(n):
                with conn.cursor() as cur:
                    email = f"Seed{(k * 97 + i) % SEED_USERS}@Bench.Example".strip().lower()
                    cur.execute(RAW_GET_BY_EMAIL, (email,))
                    cur.fetchone()

        try:
            p, r, q = interleaved(
                lambda n: run_threads(pkg_work, n),
                lambda n: run_threads(raw_work, n),
                rounds=9,
                batch=THREADS * 300,
            )
        finally:
            for conn in raw_conns:
                conn.close()
        return Result(f"{THREADS} threads, get by e-mail (per op)", p, r, target=THREADS_TARGET,
                      ratio_override=q,
                      note=f"package: pool of {THREADS}, checkout per call; raw: {THREADS} "
                      "connections, one per thread")


# -- what replica routing adds (a primary and a standby of the benchmark's own) -------------


def paired(routed: Callable[[int], None], plain: Callable[[int], None], *, rounds: int = 41,
           batch: int = 100) -> tuple[float, float]:
    """Return (median routed/plain time - 1, median CPU seconds routed adds per op)."""
    for fn in (routed, plain):
        fn(max(10, batch // 4))
    times: list[float] = []
    cpus: list[float] = []
    for i in range(rounds):
        pair = (routed, plain) if i % 2 == 0 else (plain, routed)
        (w1, c1), (w2, c2) = (_time_batch(fn, batch) for fn in pair)
        if i % 2:
            (w1, c1), (w2, c2) = (w2, c2), (w1, c1)
        times.append(w1 / w2)
        cpus.append(c1 - c2)
    return statistics.median(times) - 1.0, statistics.median(cpus)


class Routing:
    """A primary and a streaming standby of the benchmark's own, and databases on them.

    ``routed`` names the primary and the standby as its replica; ``plain`` the primary
    alone; ``on_standby`` the standby alone (what a routed lookup is compared with: the
    same server answering, without the routing).
    """

    def __init__(self, stack: contextlib.ExitStack) -> None:
        from datalayer.config import Settings
        from datalayer.db import Database
        from tests._replica_helpers import cluster, password_hash

        self.cluster = stack.enter_context(cluster("datalayer-bench-routing-"))
        async_commit = {"options": "-c synchronous_commit=off"}
        base = self.cluster.settings(application_name="datalayer-bench-routing",
                                     max_open_conns=2, max_idle_conns=2, options=async_commit)
        self.routed = Database(base)
        self.plain = Database(base.replace(replicas=()))
        standby = Settings.from_url(self.cluster.standby.url)
        self.on_standby = Database(base.replace(host=standby.host, port=standby.port,
                                                replicas=()))
        for db in (self.routed, self.plain, self.on_standby):
            stack.callback(db.close_pool)
        self.hash = password_hash()
        import datalayer

        datalayer.import_users(
            ({"email": f"seed{i}@bench.example", "password_hash": self.hash,
              "display_name": f"Seed {i}"} for i in range(SEED_USERS)), db=self.plain)
        self.user_ids = [u.id for u in (datalayer.get_user_by_email(f"seed{i}@bench.example",
                                                                     db=self.plain)
                                        for i in range(20))]
        self.cluster.standby.wait_caught_up(self.cluster.primary)
        self.counter = itertools.count()

    def replica_share(self, reads: int = 200) -> float:
        """Return the share of ``reads`` routed lookups that the router sent to the standby."""
        from datalayer import get_user_by_email
        from datalayer.replicas import Router

        original = Router.pick  # what every routed read asks (db_for_read too)
        hits = [0, 0]

        def counting(router: Any, needed: int | None, now: float) -> Any:
            replica = original(router, needed, now)
            hits[replica is not None] += 1
            return replica

        Router.pick = counting  # type: ignore[method-assign]  # counting, not timing
        try:
            for i in range(reads):
                get_user_by_email(f"Seed{i % SEED_USERS}@Bench.Example", db=self.routed)
        finally:
            Router.pick = original  # type: ignore[method-assign]
        return hits[1] / max(1, sum(hits))

    def measure(self, op: str) -> tuple[float, float]:
        """Return what routing adds to ``op`` (see :func:`paired`)."""
        import datalayer

        if op == "get":
            def get(db: Any) -> Callable[[int], None]:
                emails = itertools.cycle([f"Seed{i}@Bench.Example" for i in range(SEED_USERS)])

                def run(n: int) -> None:
                    for _ in range(n):
                        datalayer.get_user_by_email(next(emails), db=db)
                return run
            return paired(get(self.routed), get(self.on_standby), batch=150)
        if op == "create":
            run_tag = uuid.uuid4().hex[:6]

            def create(db: Any) -> Callable[[int], None]:
                def run(n: int) -> None:
                    for _ in range(n):
                        datalayer.create_user(f"R{run_tag}-{next(self.counter)}@Bench.Example",
                                              password_hash=self.hash, display_name="New User",
                                              db=db)
                return run
            return paired(create(self.routed), create(self.plain))
        if op == "issue":
            def issue(db: Any) -> Callable[[int], None]:
                ids = itertools.cycle(self.user_ids)

                def run(n: int) -> None:
                    for _ in range(n):
                        datalayer.issue_token(next(ids), user_agent="bench/1.0",
                                              ip="192.0.2.1", db=db)
                return run
            return paired(issue(self.routed), issue(self.plain))

        def rotate(db: Any, user_id: Any) -> Callable[[int], None]:
            state = [datalayer.issue_token(user_id, db=db).token]

            def run(n: int) -> None:
                token = state[0]
                for _ in range(n):
                    token = datalayer.rotate_token(token, db=db).token
                state[0] = token
            return run
        return paired(rotate(self.routed, self.user_ids[0]),
                      rotate(self.plain, self.user_ids[1]))


# -- import time (fresh processes) -------------------------------------------------------


def _python(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def import_results(rounds: int = 9) -> list[Result]:
    """Time ``import datalayer`` (and its first use) against ``import psycopg2``."""
    probe = (
        "import sys, datalayer; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('peewee_migrate', 'click') or m.startswith('datalayer.cli') or "
        "m.startswith('datalayer.migrate')); print(','.join(bad))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.strip()
    cases = {
        "bare": "import datalayer",
        "ops": "import datalayer; datalayer.get_user_by_email",
        "raw": "import psycopg2",
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    _python("pass")
    for i in range(rounds):
        keys = list(cases) if i % 2 == 0 else list(reversed(cases))
        for key in keys:
            times[key].append(_python(cases[key]))
    med = {k: statistics.median(v) for k, v in times.items()}
    note = (
        "peewee-migrate, click and the CLI are not loaded"
        if not loaded
        else f"LOADED: {loaded}"
    )
    return [
        Result("import datalayer (fresh process)", med["bare"], med["raw"], unit="ms",
               note=note + "; raw: import psycopg2", met_override=not loaded),
        Result("import datalayer + operations (peewee)", med["ops"], med["raw"], unit="ms",
               note="first use of an operation loads peewee and the models"),
    ]


def _routing_unavailable() -> str | None:
    """Return why the routing column cannot be measured here, or None."""
    try:
        from tests._replica_helpers import standby_unavailable
    except ImportError as exc:  # run outside the repository
        return f"the test helpers that build a standby are not importable ({exc})"
    return standby_unavailable()


def main(argv: list[str] | None = None) -> int:
    """Run every line of the operations benchmark and print the table."""
    settings = server_settings()
    started = time.perf_counter()
    print(f"datalayer operations vs raw psycopg2 on {settings.describe()}")
    routing_skipped = _routing_unavailable()
    share: float | None = None
    with scratch_database(settings) as scratch:
        bench = Bench(scratch.replace(
            max_open_conns=THREADS, max_idle_conns=THREADS, application_name="datalayer-bench"
        ))
        try:
            lines: list[Line] = []
            ops = ("get", "create", "issue", "rotate")
            for line_step in (bench.get_by_email, bench.create_user, bench.issue_token,
                              bench.rotate_token):
                lines.append(line_step())
                print(f"  done: {lines[-1].name}", file=sys.stderr)
            steps: list[Callable[[], Result]] = [
                bench.hashing,
                bench.bulk_import,
                bench.get_by_email_held,
                bench.threads,
            ]
            results = []
            for step in steps:
                results.append(step())
                print(f"  done: {results[-1].name}", file=sys.stderr)
        finally:
            bench.close()
    # Last, on servers of its own: neither its servers nor its databases' threads (replica
    # checks, position samples) run while the lines above are timed.
    if routing_skipped is None:
        print("  building a primary and a standby for the routing column", file=sys.stderr)
        with contextlib.ExitStack() as stack:
            routing = Routing(stack)
            for op, line in zip(ops, lines, strict=True):
                line.routing, line.routing_cpu = routing.measure(op)
                if op == "get":  # before any routed write: no position to wait for
                    share = routing.replica_share()
                print(f"  done: routing, {line.name}", file=sys.stderr)
    results.extend(import_results())
    print_lines(lines)
    if routing_skipped is not None:
        print(f"routing not measured: {routing_skipped}")
    elif share is not None:
        print(f"routing: {share:.1%} of 200 routed lookups, checked after the lookup line, "
              "were answered by the standby (the rest by the primary)")
    print_results("operations: package vs raw psycopg2", results)
    print(f"(took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
