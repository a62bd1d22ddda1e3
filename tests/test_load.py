"""Load: 4 processes x 16 threads of mixed operations against pools of 5 idle / 25 open.

Every operation of the package runs (create, import, get, authenticate, issue,
rotate, revoke, revoke all, deactivate, delete, purge, a retried model
transaction) for ``DATALAYER_LOAD_SECONDS`` (default 30).  Each worker keeps
the state it expects (users, tokens, which are revoked); at the end the tables
must hold exactly that — nothing lost, nothing duplicated — with 0 errors.
Meanwhile pg_stat_activity is sampled by application name (one per process):
no process ever has more than 25 connections, and at the end none is left.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from datalayer import retry
from datalayer.auth import tokens, users
from datalayer.config import Settings
from datalayer.errors import AuthenticationError
from tests.pgserver import Server

# alone: its 4 x 16 connections and the other worker's would near max_connections (100).
pytestmark = [pytest.mark.slow, pytest.mark.alone]

SECONDS = float(os.environ.get("DATALAYER_LOAD_SECONDS", "30"))
PROCESSES = int(os.environ.get("DATALAYER_LOAD_PROCESSES", "4"))
THREADS = int(os.environ.get("DATALAYER_LOAD_THREADS", "16"))
MAX_OPEN, MAX_IDLE = 25, 5
KNOWN_PASSWORD = "load-test password"
SHORT = dt.timedelta(microseconds=1)


@dataclass
class Expect:
    """What one worker wrote, and so what the tables must hold for it."""

    tag: str
    emails: set[str] = field(default_factory=set)  # every user that must exist
    inactive: set[str] = field(default_factory=set)
    tokens: dict[str, str] = field(default_factory=dict)  # token id -> owner e-mail (live rows)
    revoked: set[str] = field(default_factory=set)
    ops: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


class Worker:
    """One thread's mix of operations, with its own expected state."""

    WEIGHTS = {
        "create": 14, "import": 3, "issue": 18, "rotate": 18, "revoke": 5, "read": 20,
        "auth": 1, "deactivate": 2, "delete": 3, "expiring": 3, "purge": 1, "revoke_all": 1,
        "txn": 5,
    }

    def __init__(self, tag: str, pw_hash: str, known_email: str, seed: int) -> None:
        self.x = Expect(tag)
        self.pw_hash = pw_hash
        self.known_email = known_email
        self.rng = random.Random(seed)
        self.n = 0
        self.active: dict[str, uuid.UUID] = {}  # e-mail -> id (created here, active)
        self.live: dict[str, tuple[str, str]] = {}  # token id -> (raw token, owner e-mail)
        self.names = list(self.WEIGHTS)
        self.weights = list(self.WEIGHTS.values())

    def email(self) -> str:
        self.n += 1
        return f"{self.x.tag}-{self.n}@load.test"

    def run(self, until: float) -> Expect:
        home = self.email()
        self.active[home] = users.create_user(home, password_hash=self.pw_hash).id
        self.x.emails.add(home)
        self.home = home
        while time.monotonic() < until:
            op = self.rng.choices(self.names, self.weights)[0]
            try:
                getattr(self, "op_" + op)()
                self.x.ops[op] += 1
            except Exception as exc:
                self.x.errors.append(f"{op}: {''.join(traceback.format_exception(exc))[-1500:]}")
        return self.x

    # -- operations -------------------------------------------------------------------

    def _other_user(self) -> str | None:
        others = [e for e in self.active if e != self.home]
        return self.rng.choice(others) if others else None

    def op_create(self) -> None:
        email = self.email()
        user = users.create_user(email.upper(), password_hash=self.pw_hash, display_name="L")
        assert user.email == email
        self.active[email] = user.id
        self.x.emails.add(email)

    def op_import(self) -> None:
        batch = [self.email() for _ in range(5)]
        rows = [{"email": e, "password_hash": self.pw_hash, "role": "user"} for e in batch]
        assert users.import_users(rows) == 5
        self.x.emails.update(batch)  # imported users are only counted, never used further

    def op_issue(self) -> None:
        email = self.rng.choice(list(self.active))
        issued = tokens.issue_token(self.active[email], user_agent="load", ip="10.0.0.1")
        self.live[str(issued.id)] = (issued.token, email)
        self.x.tokens[str(issued.id)] = email

    def op_rotate(self) -> None:
        if not self.live:
            return self.op_issue()
        old_id = self.rng.choice(list(self.live))
        raw, email = self.live.pop(old_id)
        new = tokens.rotate_token(raw)
        self.x.revoked.add(old_id)
        self.live[str(new.id)] = (new.token, email)
        self.x.tokens[str(new.id)] = email
        return None

    def op_revoke(self) -> None:
        if not self.live:
            return
        tid = self.rng.choice(list(self.live))
        raw, _ = self.live.pop(tid)
        assert tokens.revoke_token(raw) is True
        self.x.revoked.add(tid)

    def op_read(self) -> None:
        email = self.rng.choice(list(self.active))
        assert users.get_user_by_email(email.title()).id == self.active[email]
        assert users.get_user(self.active[email]).email == email

    def op_auth(self) -> None:
        assert users.authenticate(self.known_email, KNOWN_PASSWORD).email == self.known_email
        try:
            users.authenticate(self.known_email, KNOWN_PASSWORD + "!")
        except AuthenticationError:
            return
        raise AssertionError("a wrong password was accepted")

    def _revoke_live_of(self, email: str) -> int:
        gone = [tid for tid, (_, owner) in self.live.items() if owner == email]
        for tid in gone:
            del self.live[tid]
            self.x.revoked.add(tid)
        return len(gone)

    def op_deactivate(self) -> None:
        email = self._other_user()
        if email is None:
            return
        expected = sum(1 for _, owner in self.live.values() if owner == email)
        assert users.deactivate_user(self.active.pop(email)) == expected
        self._revoke_live_of(email)
        self.x.inactive.add(email)

    def op_revoke_all(self) -> None:
        email = self.rng.choice(list(self.active))
        expected = sum(1 for _, owner in self.live.values() if owner == email)
        assert tokens.revoke_all_for_user(self.active[email]) == expected
        self._revoke_live_of(email)

    def op_delete(self) -> None:
        email = self._other_user()
        if email is None:
            return
        users.delete_user(self.active.pop(email))
        self._revoke_live_of(email)
        self.x.emails.discard(email)
        for tid in [t for t, owner in self.x.tokens.items() if owner == email]:
            del self.x.tokens[tid]
            self.x.revoked.discard(tid)

    def op_expiring(self) -> None:
        tokens.issue_token(self.active[self.home], ttl=SHORT)  # purged: not expected

    def op_purge(self) -> None:
        tokens.purge_expired(batch_size=50)

    def op_txn(self) -> None:
        from datalayer.models import RefreshToken, User

        uid = self.active[self.home]

        def unit() -> int:
            User.update(display_name=f"n{self.n}").where(User.id == uid).execute()
            return int(RefreshToken.select().where(RefreshToken.user == uid).count())

        retry.run_transaction(unit)


def _child(
    settings: Settings, index: int, seconds: float, threads: int, pw_hash: str,
    known_email: str, ready: Any, go: Any, results: Any,
) -> None:
    """One process: its own pool, ``threads`` workers, results back through ``results``."""
    import datalayer

    db = datalayer.connect(settings)
    tag = f"p{index}"
    out: list[Expect] = []
    lock = threading.Lock()
    ready.set()
    go.wait(60)
    until = time.monotonic() + seconds

    def run(t: int) -> None:
        w = Worker(f"{tag}t{t}", pw_hash, known_email, seed=index * 1000 + t)
        try:
            x = w.run(until)
        except Exception as exc:  # the set-up of the worker failed
            x = w.x
            x.errors.append("".join(traceback.format_exception(exc))[-1500:])
        with lock:
            out.append(x)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stats = db.pool_stats()
    results.put((index, out, stats.__dict__.copy()))
    datalayer.close()


def test_load_mixed_operations(pg: Server, template_db: str):
    with pg.database("dlload", template=template_db) as name:
        run_id = uuid.uuid4().hex[:8]
        app = f"dl-load-{run_id}"
        base = pg.settings(name).replace(max_open_conns=MAX_OPEN, max_idle_conns=MAX_IDLE)
        import datalayer

        datalayer.connect(base.replace(application_name=f"{app}-main"))
        known = users.create_user("known@load.test", KNOWN_PASSWORD)
        from datalayer.auth import passwords

        pw_hash = passwords.hash_password("not used for sign-in")
        datalayer.close()

        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        go = ctx.Event()
        readies = [ctx.Event() for _ in range(PROCESSES)]
        procs = [
            ctx.Process(
                target=_child,
                args=(base.replace(application_name=f"{app}-p{i}"), i, SECONDS, THREADS,
                      pw_hash, known.email, readies[i], go, results),
            )
            for i in range(PROCESSES)
        ]
        for p in procs:
            p.start()
        try:
            for r in readies:
                assert r.wait(120), "a load process did not start"
            peak_per_app: Counter[str] = Counter()
            peak_total = 0
            samples = 0
            conn = pg.raw(name)
            started = time.monotonic()
            go.set()
            collected: list[tuple[int, list[Expect], dict[str, Any]]] = []
            with conn.cursor() as cur:
                while len(collected) < PROCESSES:
                    cur.execute(
                        "SELECT application_name, count(*) FROM pg_stat_activity "
                        "WHERE application_name LIKE %s GROUP BY 1",
                        (app + "-%",),
                    )
                    rows = cur.fetchall()
                    samples += 1
                    peak_total = max(peak_total, sum(int(n) for _, n in rows))
                    for a, n in rows:
                        peak_per_app[a] = max(peak_per_app[a], int(n))
                    while not results.empty():
                        collected.append(results.get())
                    if time.monotonic() - started > SECONDS + 120:
                        raise AssertionError("the load processes did not finish in time")
                    time.sleep(0.05)
            elapsed = time.monotonic() - started
            for p in procs:
                p.join(60)
                assert p.exitcode == 0
            # Nothing left connected once the processes closed their pools.
            cur = conn.cursor()
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                (app + "-%",),
            )
            assert cur.fetchone()[0] == 0

            expects = [x for _, xs, _ in collected for x in xs]
            errors = [e for x in expects for e in x.errors]
            ops = sum((x.ops for x in expects), Counter())
            assert errors == [], f"{len(errors)} errors, first: {errors[:3]}"
            for _, _, stats in collected:
                assert stats["in_use"] == 0 and stats["idle"] <= MAX_IDLE, stats
                assert stats["open"] <= MAX_OPEN and stats["timeouts_total"] == 0, stats
            assert peak_total <= PROCESSES * MAX_OPEN
            assert all(n <= MAX_OPEN for n in peak_per_app.values()), peak_per_app

            # Nothing lost, nothing duplicated.
            datalayer.connect(base.replace(application_name=f"{app}-check"))
            tokens.purge_expired()
            datalayer.close()
            cur.execute("SELECT email, is_active FROM users WHERE email LIKE 'p%%@load.test'")
            rows = cur.fetchall()
            want_emails = set().union(*(x.emails for x in expects))
            got_emails = [r[0] for r in rows]
            assert len(got_emails) == len(set(got_emails))
            assert set(got_emails) == want_emails
            assert {r[0] for r in rows if not r[1]} == set().union(*(x.inactive for x in expects))
            cur.execute(
                "SELECT t.refresh_tokens_id::text, t.revoked_at IS NOT NULL FROM refresh_tokens t"
                " JOIN users u USING (users_id) WHERE u.email LIKE 'p%%@load.test'"
            )
            toks = cur.fetchall()
            want_tokens: dict[str, str] = {}
            for x in expects:
                want_tokens.update(x.tokens)
            assert len(toks) == len({t[0] for t in toks})
            assert {t[0] for t in toks} == set(want_tokens)
            assert {t[0] for t in toks if t[1]} == set().union(*(x.revoked for x in expects))
            conn.close()
        finally:
            go.set()
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
                    p.join(10)
        total_ops = sum(ops.values())
        report = (
            f"load: {PROCESSES} processes x {THREADS} threads for {SECONDS:g} s "
            f"({elapsed:.1f} s wall): {total_ops} operations {dict(ops)}, 0 errors; "
            f"{len(got_emails)} users and {len(toks)} tokens checked; peak connections "
            f"per process {max(peak_per_app.values())} (limit {MAX_OPEN}), total {peak_total} "
            f"(limit {PROCESSES * MAX_OPEN}) over {samples} samples; 0 left at the end"
        )
        print(report)
        assert total_ops > PROCESSES * THREADS
