"""Write positions: what each caller must see, and the opaque strings that carry it.

A position is a WAL location (an LSN).  "The caller" is a thread: its position
is at or past the commit of its last write, and a replica may answer its reads
only once it has replayed that far (:mod:`datalayer.replicas.router` decides).

How a write's position is learnt (issue 17, item 2: without a round trip more
where it can):

* a transaction that wrote commits with ``COMMIT; SELECT
  pg_current_wal_insert_lsn()`` sent as one simple-query message
  (:data:`COMMIT_WITH_POSITION`, sent by :meth:`datalayer.db.Database.commit`):
  the position comes with the commit's own reply.  The insert position read
  after the commit returned is at or past the end of its commit record.  Its
  cost is the server parsing and running a one-row ``SELECT`` in the same
  message, and the client reading that row (``python -m benchmarks replicas``
  prints it against a plain ``COMMIT`` and against a second round trip);
* a write outside a transaction (autocommit) commits within its statement,
  whose reply cannot carry the position (psycopg2 returns the last result of a
  message only, and ``RETURNING pg_current_wal_insert_lsn()`` would be read
  before the commit record is written).  It is marked *pending* with the time
  it returned, at the cost of one clock read; a sampler thread reads the
  primary's insert position on a connection of its own, at most once per
  ``DB_REPLICA_CHECK_INTERVAL`` and only while a position is pending: a sample
  taken after the write returned is at or past its commit.  Until then the
  caller reads from the primary.  The round trip is the sampler's, shared by
  every thread of the process, never the caller's.

:meth:`Positions.last_write_position` gives the caller's position as an opaque
string (:func:`format_position`) and ``db.read_your_writes(position)``
(:meth:`Positions.carry`) honours one made in another process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg2

from .. import pool as _pool

if TYPE_CHECKING:
    from .._connection import PooledDatabase

logger = logging.getLogger("datalayer.replicas")

__all__ = [
    "COMMIT_WITH_POSITION",
    "PRIMARY_POSITION",
    "Positions",
    "format_position",
    "parse_lsn",
    "parse_position",
]

_monotonic = time.monotonic

COMMIT_WITH_POSITION = "COMMIT; SELECT pg_current_wal_insert_lsn()"
"""Sent instead of ``COMMIT`` by a transaction that wrote: one message, one round trip."""

PRIMARY_POSITION = "SELECT pg_current_wal_insert_lsn()"

DOWN_RETRY = 0.5
"""Seconds between attempts to reach a server that is down."""
IDLE_STOP = 60.0
"""A background thread stops after this many seconds without work (the next use restarts it)."""


# -- the opaque strings -----------------------------------------------------------------------


def parse_lsn(text: str) -> int:
    """Return the PostgreSQL LSN ``text`` (``16/B374D848``) as an integer."""
    hi, sep, lo = text.partition("/")
    if not sep:
        raise ValueError(text)
    return (int(hi, 16) << 32) | int(lo, 16)


def format_position(lsn: int) -> str:
    """Return the opaque position string of ``lsn`` (the LSN in PostgreSQL's text form)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_position(position: str) -> int:
    """Return the LSN of a string from :meth:`Database.last_write_position`.

    :raises ValueError: one line saying what is expected.
    """
    try:
        if not isinstance(position, str) or len(position) > 40:
            raise ValueError
        value = parse_lsn(position.strip())
        if value < 0 or value >= 1 << 64:
            raise ValueError
    except ValueError:
        raise ValueError(
            "not a write position; pass the string db.last_write_position() returned "
            "(e.g. '0/3000148')"
        ) from None
    return value


def first_line(exc: BaseException) -> str:
    """Return the first line of ``exc``'s message (its type when it has none)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# -- each caller's position -------------------------------------------------------------------


class _Caller:
    """What one thread (the default "caller") must see, and its replica block."""

    __slots__ = ("carried", "pending", "position", "scope")

    def __init__(self) -> None:
        self.position = 0  # LSN at or past this caller's last committed write
        self.pending = 0.0  # time.monotonic() when a write whose position is not known returned
        self.carried = 0  # from read_your_writes()
        self.scope: Any = None  # the thread's open db.read_replica() block (replica_set._Scope)


class _Local(threading.local):
    """Per thread: its :class:`_Caller` (one thread-local read gets all a read looks at)."""

    pool: _pool.ConnectionPool | None = None  # a routed read's replica pool, for its length

    def __init__(self) -> None:  # run in each thread on its first use
        self.caller = _Caller()


class Positions:
    """The callers' positions of one database, and the sampler that resolves pending ones."""

    def __init__(self, db: PooledDatabase, interval: float) -> None:
        self.db = db
        self.interval = interval
        self.local = _Local()  # datalayer._sql reads .pool from it
        self._sample: tuple[float, int] | None = None  # (time the query was sent, LSN)
        self._wanted = threading.Event()
        self._sampler: threading.Thread | None = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._generation = _pool._fork_generation[0]

    def wrote_outside_transaction(self) -> None:
        """A write committed on its own (autocommit): its position is pending until sampled."""
        self.local.caller.pending = _monotonic()
        if not self._wanted.is_set():
            self._wanted.set()
            self._ensure_sampler()

    def committed(self, lsn_text: str | None) -> None:
        """A transaction that wrote committed; ``lsn_text`` came with the COMMIT's reply."""
        if lsn_text is None:
            self.wrote_outside_transaction()
            return
        caller = self.local.caller
        lsn = parse_lsn(lsn_text)
        if lsn > caller.position:
            caller.position = lsn
        caller.pending = 0.0  # the insert position after COMMIT is past every earlier write

    def resolve(self, caller: _Caller) -> int | None:
        """Resolve ``caller``'s pending write from the last sample; None while it cannot."""
        sample = self._sample
        if sample is None or sample[0] < caller.pending:
            if self._sampler is None:  # none runs (a forked child, or it stopped): start one
                self._wanted.set()
                self._ensure_sampler()
            return None
        if sample[1] > caller.position:
            caller.position = sample[1]
        caller.pending = 0.0
        return caller.position

    def needed(self) -> int | None:
        """Return the position this caller's reads must see (None: not known yet)."""
        caller = self.local.caller
        position = caller.position if not caller.pending else self.resolve(caller)
        if position is None:
            return None
        carried = caller.carried
        return carried if carried > position else position

    def last_write_position(self) -> str:
        """Return this caller's position (asking the primary when a write's is pending)."""
        if self.needed() is None:
            lsn = self.primary_position()
            caller = self.local.caller
            caller.position = max(caller.position, lsn)
            caller.pending = 0.0
        return format_position(self.needed() or 0)

    def primary_position(self) -> int:
        """Ask the primary for its WAL insert position (one round trip)."""
        from .._sql import Statement, fetchone

        row = fetchone(self.db, Statement.text(PRIMARY_POSITION), {})
        return parse_lsn(row[0])

    @contextlib.contextmanager
    def carry(self, lsn: int) -> Iterator[None]:
        """In the block, this thread's reads must see ``lsn`` (from another process)."""
        caller = self.local.caller
        before = caller.carried
        caller.carried = max(before, lsn)
        try:
            yield
        finally:
            caller.carried = before

    def forget(self) -> None:
        """Forget this thread's position (tests, and a worker between jobs)."""
        caller = self.local.caller
        caller.position, caller.pending, caller.carried = 0, 0.0, 0

    # -- the sampler -------------------------------------------------------------------------

    def after_fork(self) -> None:
        """In a forked child: the parent's sampler and its connection are not this process's."""
        wanted = self._wanted.is_set()
        self._lock = threading.Lock()  # a parent's thread may have held it at the fork
        self._wanted = threading.Event()
        if wanted:
            self._wanted.set()
        self._sampler = None
        self._conn = None
        self._generation = _pool._fork_generation[0]

    def _ensure_sampler(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            if self._generation != _pool._fork_generation[0]:  # a forked child: none runs here
                self._generation = _pool._fork_generation[0]
                self._sampler = None
                self._conn = None  # the parent's
            if self._wanted.is_set() and (self._sampler is None or not self._sampler.is_alive()):
                self._sampler = threading.Thread(
                    target=self._run, daemon=True,
                    name=f"{self.db.settings.application_name}-position")
                self._sampler.start()

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            while not self._stop.is_set():
                if not self._wanted.wait(IDLE_STOP) or self._stop.is_set():
                    return
                last = self._sample
                if last is not None:
                    wait = last[0] + self.interval - _monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return
                self._wanted.clear()
                started = _monotonic()
                try:
                    lsn = self._query_primary()
                except Exception as exc:  # the primary is down: writers find out themselves
                    logger.debug("could not read the primary's WAL position: %s",
                                 first_line(exc))
                    self._wanted.set()
                    if self._stop.wait(max(self.interval, DOWN_RETRY)):
                        return
                    continue
                self._sample = (started, lsn)
        finally:
            with self._lock:
                if self._sampler is me:
                    self._sampler = None
                    raw, self._conn = self._conn, None
                    if raw is not None:
                        with contextlib.suppress(Exception):
                            raw.close()

    def _query_primary(self) -> int:
        """Read the primary's insert position on a connection of the sampler's own.

        Not from the pool: the sampler must neither take a slot the application
        waits for nor show in its pool's counters.
        """
        inflight = self.db.pool.inflight  # the watchdog ends a query a frozen server holds
        raw = self._conn
        try:
            if raw is None or raw.closed:
                self._conn = None
                raw = psycopg2.connect(**self.db.settings.connect_kwargs())
                raw.autocommit = True
                self._conn = raw
            inflight[raw] = _monotonic()
            try:
                with raw.cursor() as cur:
                    cur.execute(PRIMARY_POSITION)
                    row = cur.fetchone()
            finally:
                inflight.pop(raw, None)
        except BaseException:
            if raw is not None:
                with contextlib.suppress(Exception):
                    raw.close()
            self._conn = None
            raise
        return parse_lsn(row[0])

    def close(self) -> None:
        self._stop.set()
        self._wanted.set()
        raw, self._conn = self._conn, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()
