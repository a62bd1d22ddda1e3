"""The migration lock: a session-level advisory lock per history table, polled, never blocking.

``apply``, ``rollback`` and ``rebase`` hold it while they read and write the
history; a waiting run polls ``pg_try_advisory_lock`` (a blocking wait would keep
a snapshot open that every ``CREATE INDEX CONCURRENTLY`` waits for) and tells
``on_wait`` who holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from ...errors import LockTimeout
from .files import MIGRATE_TABLE
from .target import _describe

__all__ = ["DEFAULT_LOCK_WAIT", "WAIT_NOTICE_EVERY", "holder", "lock_key"]


DEFAULT_LOCK_WAIT = 300.0
"""Seconds ``apply`` waits for another run's migration lock before :class:`LockTimeout`."""


def lock_key(migrate_table: str = MIGRATE_TABLE) -> int:
    """Return the advisory-lock key (a signed 64-bit integer) used for ``migrate_table``."""
    digest = hashlib.sha256(f"datalayer.migrate:{migrate_table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


WAIT_NOTICE_EVERY = 10.0
"""Seconds between the "still waiting for the migration lock" lines (``on_wait``)."""


class _WaitNotices:
    """Tell ``on_wait`` once when a run starts waiting for the lock, then every
    :data:`WAIT_NOTICE_EVERY` s.

    Any wait loop calls :meth:`tick` whenever it wakes; the first call says who
    holds the lock (pid, application_name, for how long).
    """

    def __init__(self, db: Any, key: int, table: str, on_wait: Callable[[str], None] | None):
        self.db, self.key, self.table, self.on_wait = db, key, table, on_wait
        self.every = WAIT_NOTICE_EVERY  # read when the wait starts (tests shorten it)
        self.started: float | None = None
        self.last = 0.0

    def tick(self) -> None:
        if self.on_wait is None:
            return
        now = time.monotonic()
        if self.started is None:
            self.started = self.last = now
            holder = _lock_holder(self.db, self.key)
            who = f"held by {holder}" if holder else "its holder is not visible to this user"
            self.on_wait(
                f"waiting for the migration lock of {self.table} on {_describe(self.db)}: {who}"
            )
        elif now - self.last >= self.every:
            self.last = now
            self.on_wait(
                f"still waiting for the migration lock of {self.table} "
                f"({now - self.started:.0f} s so far)"
            )


def holder(db: Any, key: int) -> tuple[int, str, float] | None:
    """Return (pid, application_name, seconds) of the session holding advisory lock ``key``
    (a bigint key) on this database, if this user can see it."""
    classid, objid = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    with contextlib.suppress(Exception):
        row = db.execute_sql(
            "SELECT a.pid, a.application_name, "
            "EXTRACT(EPOCH FROM now() - COALESCE(a.xact_start, a.backend_start)) "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
            "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())",
            (classid, objid),
        ).fetchone()
        if row:
            return int(row[0]), row[1] or "?", float(row[2] or 0)
    return None


def _lock_holder(db: Any, key: int) -> str | None:
    """Return "pid N, application A, for S s" of the session holding lock ``key``, if seen."""
    found = holder(db, key)
    return None if found is None else "pid {}, application {}, for {:.0f} s".format(*found)


@contextlib.contextmanager
def _migration_lock(
    db: Any,
    key: int,
    wait: float,
    table: str,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the session-level advisory lock ``key``; wait at most ``wait`` seconds for it.

    ``on_wait`` gets one line when the wait starts (who holds the lock) and one
    every :data:`WAIT_NOTICE_EVERY` seconds while it lasts.

    :raises MigrationError: behind a transaction-pooling pooler (PgBouncer), where
        a session lock would not stay with this session.
    """
    from ..._pooler import require_direct_connection

    require_direct_connection(db, what="datalayer migrate", where=_describe(db))
    check_interval = (getattr(db, "server_version", 0) or 0) >= 140000
    if check_interval:
        # A dead client is noticed within a second even mid-statement: its transaction
        # is rolled back and this lock freed, so the next run does not wait for long.
        db.execute_sql("SELECT set_config('client_connection_check_interval', '1000', false)")
    try:
        notices = _WaitNotices(db, key, table, on_wait)
        if not _poll_advisory_lock(db, key, wait, notices.tick):
            raise _lock_timeout(db, key, wait, table)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            try:
                db.execute_sql("SELECT pg_advisory_unlock(%s)", (key,))
            except Exception:
                # Never hand a connection that may still hold the lock back to a pool.
                with contextlib.suppress(Exception):
                    db.connection().close()
                if not failed:  # a lost connection took the lock with it: keep the real error
                    raise
    finally:
        if check_interval:
            with contextlib.suppress(Exception):
                db.execute_sql("RESET client_connection_check_interval")


def _poll_advisory_lock(db: Any, key: int, wait: float, tick: Callable[[], None]) -> bool:
    """Take advisory lock ``key`` with ``pg_try_advisory_lock``, polling for up to ``wait`` s.

    Never a blocking ``pg_advisory_lock``: a session waiting in one keeps a
    snapshot open, and every ``CREATE INDEX CONCURRENTLY`` (the lock holder's
    own, or the application's) waits for it to end.  Between polls this
    session is idle, outside any transaction; ``tick`` is called after each
    failed poll (the waiting notices).
    """
    deadline = time.monotonic() + wait
    pause = 0.05
    while True:
        if db.execute_sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            return True
        tick()
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 1.0)


def _lock_timeout(db: Any, key: int, wait: float, table: str) -> LockTimeout:
    found = _lock_holder(db, key)
    holder = ""
    if found:
        pid = found.split(",", 1)[0].removeprefix("pid ")
        holder = (
            f" (held by {found}; if that process is gone, end it with "
            f"SELECT pg_terminate_backend({pid}))"
        )
    return LockTimeout(
        f"another migration run holds the migration lock of {table} on {_describe(db)}"
        f"{holder}; waited {wait:g} s. Let it finish and retry, or wait longer (--wait)"
    )
