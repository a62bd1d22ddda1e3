"""The package's operations against hand-written SQL on raw psycopg2, side by side.

    python -m benchmarks            # every benchmark
    python -m benchmarks ops        # this one

Runs against DATABASE_URL / DB_* when set, else the embedded server, in a
scratch database of its own that is dropped afterwards.  Each line times the
package and the raw version alternately, round by round, and prints the
medians and the ratio of their throughputs (package / raw).

The package side is what a worker writes: ``datalayer.get_user_by_email(...)``
with a pooled checkout per call.  The raw side holds one psycopg2 connection
(autocommit, like the pool's) and runs the same SQL, written by hand, doing the
same work in Python that the operation needs (lower-casing the address,
making and hashing the token, escaping COPY text).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg2

from benchmarks._common import Result, interleaved, print_results, scratch_database, server_settings

SINGLE_ROW_TARGET = 0.8
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
        self.dl.close()

    # -- single-row operations ------------------------------------------------------

    def emails(self) -> Callable[[], str]:
        # Mixed case on purpose: the lookup is case-insensitive on both sides.
        cycle = itertools.cycle([f"Seed{i}@Bench.Example" for i in range(SEED_USERS)])
        return cycle.__next__

    def get_by_email(self) -> Result:
        get = self.dl.get_user_by_email
        nxt_p, nxt_r = self.emails(), self.emails()
        conn = self.raw

        def package(n: int) -> None:
            for _ in range(n):
                get(nxt_p())

        def raw(n: int) -> None:
            for _ in range(n):
                with conn.cursor() as cur:
                    cur.execute(RAW_GET_BY_EMAIL, (nxt_r().strip().lower(),))
                    cur.fetchone()

        p, r, q = interleaved(package, raw, rounds=41, batch=150)
        return Result("get user by e-mail", p, r, target=SINGLE_ROW_TARGET, ratio_override=q)

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

    def create_user(self) -> Result:
        create = self.dl.create_user
        hashed = self.hash
        conn = self.raw
        run = uuid.uuid4().hex[:6]
        counter = self.counter

        def package(n: int) -> None:
            for _ in range(n):
                create(f"New{run}-{next(counter)}@Bench.Example", password_hash=hashed,
                       display_name="New User")

        def raw(n: int) -> None:
            for _ in range(n):
                email = f"New{run}-{next(counter)}@Bench.Example".strip().lower()
                with conn.cursor() as cur:
                    cur.execute(RAW_INSERT_USER, (email, hashed, "New User", "user", True))
                    cur.fetchone()

        p, r, q = interleaved(package, raw, rounds=41, batch=100)
        return Result("create user (database work)", p, r, target=SINGLE_ROW_TARGET,
                      ratio_override=q)

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

    def issue_token(self) -> Result:
        issue = self.dl.issue_token
        ids_p = itertools.cycle(self.user_ids)
        ids_r = itertools.cycle(self.user_ids)
        conn = self.raw

        def package(n: int) -> None:
            for _ in range(n):
                issue(next(ids_p), user_agent="bench/1.0", ip="192.0.2.1")

        def raw(n: int) -> None:
            for _ in range(n):
                user_id = next(ids_r)
                token = secrets.token_urlsafe(32)
                token_hash = hashlib.sha256(token.encode()).hexdigest()
                expires = dt.datetime.now(dt.UTC) + TTL
                with conn.cursor() as cur:
                    cur.execute(RAW_ISSUE, (uuid.uuid4(), user_id, token_hash, uuid.uuid4(),
                                            expires, "bench/1.0", "192.0.2.1", user_id))
                    if cur.fetchone() is None:
                        raise RuntimeError("raw issue failed")

        p, r, q = interleaved(package, raw, rounds=41, batch=100)
        return Result("issue token", p, r, target=SINGLE_ROW_TARGET, ratio_override=q)

    def rotate_token(self) -> Result:
        rotate = self.dl.rotate_token
        conn = self.raw
        state = {
            "pkg": self.dl.issue_token(self.user_ids[0]).token,
            "raw": self.dl.issue_token(self.user_ids[1]).token,
        }

        def package(n: int) -> None:
            token = state["pkg"]
            for _ in range(n):
                token = rotate(token).token
            state["pkg"] = token

        def raw(n: int) -> None:
            token = state["raw"]
            for _ in range(n):
                new = secrets.token_urlsafe(32)
                params = {
                    "old_hash": hashlib.sha256(token.encode()).hexdigest(),
                    "new_id": uuid.uuid4(),
                    "new_hash": hashlib.sha256(new.encode()).hexdigest(),
                    "expires_at": dt.datetime.now(dt.UTC) + TTL,
                    "user_agent": None,
                    "ip": None,
                }
                with conn.cursor() as cur:
                    cur.execute(RAW_ROTATE, params)
                    if cur.fetchone() is None:
                        raise RuntimeError("raw rotation failed")
                token = new
            state["raw"] = token

        p, r, q = interleaved(package, raw, rounds=41, batch=100)
        return Result("rotate token", p, r, target=SINGLE_ROW_TARGET, ratio_override=q)

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


def main(argv: list[str] | None = None) -> int:
    """Run every line of the operations benchmark and print the table."""
    settings = server_settings()
    started = time.perf_counter()
    print(f"datalayer operations vs raw psycopg2 on {settings.describe()}")
    with scratch_database(settings) as scratch:
        bench = Bench(scratch.replace(
            max_open_conns=THREADS, max_idle_conns=THREADS, application_name="datalayer-bench"
        ))
        try:
            steps: list[Callable[[], Result]] = [
                bench.get_by_email,
                bench.create_user,
                bench.hashing,
                bench.issue_token,
                bench.rotate_token,
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
    results.extend(import_results())
    print_results("operations: package vs raw psycopg2", results)
    print(f"(took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
