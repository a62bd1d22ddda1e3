"""Revocation wins every race with rotation: threads and processes, many trials.

The guarantee (DESIGN, "Guarantees under concurrency"): once
``revoke_all_for_user``, ``deactivate_user``, ``revoke_token`` or a reuse
detection returns, no rotation of the affected tokens succeeds and none of
them is live, whatever rotations were in flight; activating the user again
brings no old session back.

Each trial starts rotators (8 threads in this process, or 8 threads spread
over 4 worker processes), each rotating its own token again and again until
it is refused; once every one of them has rotated at least once, and up to
20 ms later, the main thread revokes.  A trial is a
violation when, after the revocation returned, an affected token is live
(checked at once and again when the rotators are done) or a rotation that
*started* after it returned succeeded.  Every test prints its trials and
violations and fails on any violation.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from datalayer.auth import passwords, tokens, users
from datalayer.config import Settings
from datalayer.db import Database
from datalayer.errors import AuthenticationError, TokenReuseError
from datalayer.models import User

pytestmark = pytest.mark.slow

ROTATORS = 8
PROCESSES = 4
TRIALS = 20

# (call started at, raw successor) for each rotation that succeeded, and how it ended.
Outcome = tuple[list[tuple[float, str]], str]


# -- the rotators -----------------------------------------------------------------------------


# How long rotators go on after the revocation returned (to catch one that still succeeds).
AFTERWARDS = 0.1


def rotate_until_refused(db: Database, token: str, started: Any, revoked: Any) -> Outcome:
    """Rotate ``token`` and each successor until refused.

    ``started`` (a shared int) is incremented after the first success, so the
    main thread revokes only once every rotator is rotating; ``revoked`` (a
    shared float) is when the revocation returned: a rotator still succeeding
    stops ``AFTERWARDS`` seconds after it.
    """
    got: list[tuple[float, str]] = []
    current = token
    give_up = time.monotonic() + 60
    while True:
        started_at = time.monotonic()
        done = revoked.value
        if (done and started_at > done + AFTERWARDS) or started_at > give_up:
            return got, "still rotating"
        try:
            current = tokens.rotate_token(current, db=db).token
        except AuthenticationError as exc:
            return got, type(exc).__name__
        got.append((started_at, current))
        if len(got) == 1:
            with started.get_lock():
                started.value += 1


def _rotate_all(db: Database, batch: Sequence[str], started: Any,
                revoked: Any) -> list[Outcome]:
    with ThreadPoolExecutor(len(batch)) as pool:
        futures = [pool.submit(rotate_until_refused, db, t, started, revoked) for t in batch]
        return [f.result() for f in futures]


_worker: dict[str, Any] = {}


def _init_worker(settings: Settings, started: Any, revoked: Any) -> None:
    _worker.update(db=Database(settings), started=started, revoked=revoked)


def _worker_rotate(batch: list[str]) -> list[Outcome]:
    db = _worker["db"]
    if not batch:  # the warm-up: connect once
        with db.checkout():
            db.execute_sql("SELECT 1")
        return []
    return _rotate_all(db, batch, _worker["started"], _worker["revoked"])


class Rotators:
    """Run one rotator per token: all in this process, or spread over worker processes."""

    def __init__(self, db: Database, mode: str) -> None:
        self.db = db
        self.mode = mode
        ctx = multiprocessing.get_context("spawn")
        self.started = ctx.Value("i", 0)
        self.revoked = ctx.Value("d", 0.0)
        self._threads = ThreadPoolExecutor(1)
        self._procs: Any = None
        if mode == "processes":
            self._procs = ctx.Pool(PROCESSES, initializer=_init_worker,
                                   initargs=(db.settings, self.started, self.revoked))
            # Warm up: every worker imported the package and connected before trial 1.
            self._procs.map(_worker_rotate, [[]] * PROCESSES, chunksize=1)

    def start(self, batch: Sequence[str]) -> Callable[[], list[Outcome]]:
        """Start rotating ``batch``; return once every rotator has rotated once."""
        self.started.value = 0
        self.revoked.value = 0.0
        if self._procs is None:
            future: Future[list[Outcome]] = self._threads.submit(
                _rotate_all, self.db, list(batch), self.started, self.revoked
            )
            result = future.result
        else:
            chunks = [list(batch[i::PROCESSES]) for i in range(PROCESSES)]
            pending = [self._procs.apply_async(_worker_rotate, (c,)) for c in chunks]

            def result() -> list[Outcome]:
                parts = [p.get(90) for p in pending]
                out: list[Outcome] = [([], "")] * len(batch)
                for i, part in enumerate(parts):
                    for j, outcome in enumerate(part):
                        out[i + j * PROCESSES] = outcome
                return out

        deadline = time.monotonic() + 60
        while self.started.value < len(batch):
            assert time.monotonic() < deadline, "the rotators did not start"
            time.sleep(0.001)
        time.sleep(random.uniform(0.0, 0.02))  # then revoke somewhere in the thick of it
        return result

    def revoked_now(self) -> float:
        """Tell the rotators the revocation returned; return the moment."""
        now = time.monotonic()
        self.revoked.value = now
        return now

    def close(self) -> None:
        self._threads.shutdown()
        if self._procs is not None:
            self._procs.terminate()
            self._procs.join()


@pytest.fixture(params=["threads", "processes"])
def rotators(request: pytest.FixtureRequest, isolated_db: Database) -> Iterator[Rotators]:
    runner = Rotators(isolated_db, request.param)
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture(scope="module")
def pw_hash() -> str:
    return passwords.hash_password("a password")  # once: hashing is slow on purpose


# -- bookkeeping ------------------------------------------------------------------------------


@dataclass
class Tally:
    name: str
    trials: int = 0
    violations: int = 0
    details: list[str] = field(default_factory=list)

    def record(self, problems: list[str]) -> None:
        self.trials += 1
        if problems:
            self.violations += 1
            self.details.append(f"trial {self.trials}: " + "; ".join(problems))

    def check(self) -> None:
        print(f"\nrace {self.name}: {self.trials} trials, {self.violations} violations")
        assert self.violations == 0, "\n".join(self.details[:5])


def live(db: Database, *, user: uuid.UUID | None = None, family: uuid.UUID | None = None) -> int:
    where, value = ("users_id", user) if user is not None else ("family_id", family)
    with db.checkout():
        row = db.execute_sql(
            f"SELECT count(*) FROM refresh_tokens WHERE {where} = %s AND revoked_at IS NULL "
            "AND expires_at > now()",
            (value,),
        ).fetchone()
    return int(row[0])


def late_successes(outcome: Outcome, after: float) -> int:
    """Rotations that started after ``after`` and still succeeded."""
    return sum(1 for started, _ in outcome[0] if started > after)


def new_user(db: Database, pw_hash: str, label: str) -> User:
    return users.create_user(f"{label}-{uuid.uuid4().hex[:10]}@example.com",
                             password_hash=pw_hash, db=db)


# -- the races ----------------------------------------------------------------------------------


def test_revoke_all_against_rotators(isolated_db: Database, rotators: Rotators,
                                     pw_hash: str) -> None:
    tally = Tally(f"revoke_all_for_user vs {ROTATORS} rotators [{rotators.mode}]")
    for _ in range(TRIALS):
        user = new_user(isolated_db, pw_hash, "all")
        batch = [tokens.issue_token(user, db=isolated_db).token for _ in range(ROTATORS)]
        done = rotators.start(batch)
        tokens.revoke_all_for_user(user, db=isolated_db)
        returned = rotators.revoked_now()
        problems = []
        if (n := live(isolated_db, user=user.id)):
            problems.append(f"{n} live right after it returned")
        outcomes = done()
        if (n := live(isolated_db, user=user.id)):
            problems.append(f"{n} live once the rotators stopped")
        if (n := sum(late_successes(o, returned) for o in outcomes)):
            problems.append(f"{n} rotations started after it returned succeeded")
        tally.record(problems)
    tally.check()


def test_attacker_rotating_in_a_loop_against_sign_out_everywhere(
    isolated_db: Database, rotators: Rotators, pw_hash: str
) -> None:
    """One stolen token rotated as fast as possible, beside 7 other users' rotations."""
    tally = Tally(f"attacker in a loop vs sign-out everywhere [{rotators.mode}]")
    bystanders = [new_user(isolated_db, pw_hash, "bystander") for _ in range(ROTATORS - 1)]
    for _ in range(30):
        victim = new_user(isolated_db, pw_hash, "victim")
        stolen = tokens.issue_token(victim, db=isolated_db).token
        tokens.issue_token(victim, db=isolated_db)  # the victim's own sessions
        others = [tokens.issue_token(b, db=isolated_db).token for b in bystanders]
        done = rotators.start([stolen, *others])
        tokens.revoke_all_for_user(victim, db=isolated_db)
        returned = rotators.revoked_now()
        problems = []
        if (n := live(isolated_db, user=victim.id)):
            problems.append(f"{n} live right after it returned")
        attacker = done()[0]
        if (n := live(isolated_db, user=victim.id)):
            problems.append(f"{n} live once the attacker stopped")
        if (n := late_successes(attacker, returned)):
            problems.append(f"the attacker rotated {n} more times after it returned")
        tally.record(problems)
    tally.check()


def test_reuse_detection_against_rotation_in_flight(
    isolated_db: Database, rotators: Rotators, pw_hash: str
) -> None:
    """A stale token is presented while the rightful client keeps rotating its successor."""
    tally = Tally(f"reuse detection vs rotation in flight [{rotators.mode}]")
    for _ in range(TRIALS):
        user = new_user(isolated_db, pw_hash, "reuse")
        stale = [tokens.issue_token(user, db=isolated_db) for _ in range(ROTATORS)]
        current = [tokens.rotate_token(s.token, db=isolated_db).token for s in stale]
        done = rotators.start(current)
        returned: list[float] = []
        problems = []
        for i, old in enumerate(stale):  # each family's stale token, one after the other
            try:
                tokens.rotate_token(old.token, db=isolated_db)
                problems.append(f"family {i}: the stale token rotated")
            except TokenReuseError:
                pass
            returned.append(time.monotonic())
            if (n := live(isolated_db, family=old.family_id)):
                problems.append(f"family {i}: {n} live right after TokenReuseError")
        rotators.revoked_now()
        outcomes = done()
        for i, (old, outcome) in enumerate(zip(stale, outcomes, strict=True)):
            if (n := live(isolated_db, family=old.family_id)):
                problems.append(f"family {i}: {n} live once the client stopped")
            if (n := late_successes(outcome, returned[i])):
                problems.append(f"family {i}: {n} rotations after TokenReuseError succeeded")
        tally.record(problems)
    tally.check()


def test_deactivate_against_rotators_then_reactivate(
    isolated_db: Database, rotators: Rotators, pw_hash: str
) -> None:
    tally = Tally(f"deactivate_user vs {ROTATORS} rotators, then re-activation [{rotators.mode}]")
    for _ in range(TRIALS):
        user = new_user(isolated_db, pw_hash, "deactivate")
        batch = [tokens.issue_token(user, db=isolated_db).token for _ in range(ROTATORS)]
        done = rotators.start(batch)
        users.deactivate_user(user, db=isolated_db)
        returned = rotators.revoked_now()
        problems = []
        if (n := live(isolated_db, user=user.id)):
            problems.append(f"{n} live right after it returned")
        outcomes = done()
        if (n := sum(late_successes(o, returned) for o in outcomes)):
            problems.append(f"{n} rotations started after it returned succeeded")
        with isolated_db.checkout():
            User.update(is_active=True).where(User.id == user.id).execute()
        came_back = 0
        for token, outcome in zip(batch, outcomes, strict=True):
            last = outcome[0][-1][1] if outcome[0] else token
            try:
                tokens.rotate_token(last, db=isolated_db)
                came_back += 1
            except AuthenticationError:
                pass
        if came_back:
            problems.append(f"{came_back} old sessions rotated again after re-activation")
        if (n := live(isolated_db, user=user.id)):
            problems.append(f"{n} live after re-activation")
        tally.record(problems)
    tally.check()


def test_revoke_token_of_a_rotated_token_against_its_rotating_successor(
    isolated_db: Database, rotators: Rotators, pw_hash: str
) -> None:
    """Signing out with a token that was rotated since revokes the live successor too."""
    tally = Tally(f"revoke_token of a rotated token vs its rotating successor [{rotators.mode}]")
    for _ in range(TRIALS):
        user = new_user(isolated_db, pw_hash, "signout")
        rotated = [tokens.issue_token(user, db=isolated_db) for _ in range(ROTATORS)]
        current = [tokens.rotate_token(r.token, db=isolated_db).token for r in rotated]
        done = rotators.start(current)
        returned: list[float] = []
        problems = []
        for i, old in enumerate(rotated):
            if tokens.revoke_token(old.token, db=isolated_db) is not True:
                problems.append(f"family {i}: revoke_token said nothing was live")
            returned.append(time.monotonic())
            if (n := live(isolated_db, family=old.family_id)):
                problems.append(f"family {i}: {n} live right after it returned")
        rotators.revoked_now()
        outcomes = done()
        for i, (old, outcome) in enumerate(zip(rotated, outcomes, strict=True)):
            if (n := live(isolated_db, family=old.family_id)):
                problems.append(f"family {i}: {n} live once the rotator stopped")
            if (n := late_successes(outcome, returned[i])):
                problems.append(f"family {i}: {n} rotations after it returned succeeded")
        tally.record(problems)
    tally.check()


# -- purges beside rotations ----------------------------------------------------------------------


# Expired rotation chains, written straight in SQL so that there are always many: each
# family's links expire in random order, so a purge's batch (in expires_at order) takes
# links from the middle of chains, with their neighbours in another purge's batch.
_EXPIRED_CHAINS = """
WITH families AS (SELECT gen_random_uuid() AS family FROM generate_series(1, %(families)s)),
links AS (SELECT family, n, gen_random_uuid() AS id
          FROM families, generate_series(1, %(length)s) AS n)
INSERT INTO refresh_tokens (refresh_tokens_id, users_id, token_hash, family_id, expires_at,
                            revoked_at, replaced_by)
SELECT id, %(user)s, md5(random()::text) || md5(random()::text), family,
       now() - random() * interval '1 hour', now(),
       (SELECT next.id FROM links AS next WHERE next.family = links.family AND next.n = links.n + 1)
FROM links
"""


def _expired_chains(db: Database, user: User, families: int, length: int) -> None:
    with db.checkout():
        db.execute_sql(_EXPIRED_CHAINS,
                       {"families": families, "length": length, "user": str(user.id)})


def test_purgers_beside_rotators_never_deadlock(isolated_db: Database, pw_hash: str) -> None:
    """3 purge_expired workers and 8 rotators whose short-lived chains keep expiring."""
    rotating = [new_user(isolated_db, pw_hash, "purge") for _ in range(ROTATORS)]
    owner = new_user(isolated_db, pw_hash, "expired")
    _expired_chains(isolated_db, owner, families=100, length=8)
    stop_at = time.monotonic() + 6.0
    errors: list[str] = []
    counts = {"rotations": 0, "purged": 0, "purges": 0}

    def rotator(user: User) -> None:
        rng = random.Random()
        token: str | None = None
        while time.monotonic() < stop_at:
            ttl = dt.timedelta(milliseconds=rng.randint(20, 300))
            try:
                if token is None:
                    token = tokens.issue_token(user, ttl=ttl, db=isolated_db).token
                else:
                    token = tokens.rotate_token(token, ttl=ttl, db=isolated_db).token
                    counts["rotations"] += 1
            except AuthenticationError:  # expired (or purged since): sign in again
                token = None
            except Exception as exc:
                errors.append(f"rotator: {type(exc).__module__}.{type(exc).__name__}: {exc}")
                token = None

    def purger() -> None:
        rng = random.Random()
        while time.monotonic() < stop_at:
            try:
                counts["purged"] += tokens.purge_expired(
                    rng.randint(3, 40), max_batches=rng.randint(1, 3), db=isolated_db
                )
                counts["purges"] += 1
            except Exception as exc:
                errors.append(f"purger: {type(exc).__module__}.{type(exc).__name__}: {exc}")

    def feeder() -> None:
        while time.monotonic() < stop_at - 0.5:
            try:
                _expired_chains(isolated_db, owner, families=20, length=8)
            except Exception as exc:
                errors.append(f"feeder: {type(exc).__module__}.{type(exc).__name__}: {exc}")
            time.sleep(0.02)

    with ThreadPoolExecutor(ROTATORS + 4) as pool:
        futures = [pool.submit(rotator, u) for u in rotating]
        futures.append(pool.submit(feeder))
        futures += [pool.submit(purger) for _ in range(3)]
        for f in futures:
            f.result()
    deadlocks = sum("deadlock" in e for e in errors)
    print(f"\npurge: 3 purgers, {ROTATORS} rotators, 6 s: {counts['purges']} purges deleted "
          f"{counts['purged']} tokens beside {counts['rotations']} rotations; "
          f"{deadlocks} deadlocks, {len(errors)} errors")
    assert not errors, errors[:5]
    assert counts["purged"] > 0 and counts["rotations"] > 0
    assert tokens.purge_expired(db=isolated_db) >= 0
    with isolated_db.checkout():
        left = isolated_db.execute_sql(
            "SELECT count(*) FROM refresh_tokens WHERE expires_at < now() - interval '1 second'"
        ).fetchone()[0]
    assert left == 0  # a purge alone takes every expired token, chains included
