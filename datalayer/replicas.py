"""Route reads to streaming replicas, with read-your-writes by WAL position.

Imported only when ``DB_REPLICA_URLS`` is set (:meth:`datalayer.db.Database.configure`):
without replicas nothing here runs and nothing is measured.

* :class:`Router` is the decision, on its own (Django's ``db_for_read`` /
  ``db_for_write``): given the replicas' last known states and the position
  the caller must see, a replica that has replayed it, else the primary, and
  why.
* :class:`ReplicaSet` holds, per replica, a pool and a state refreshed by a
  poller thread at most once per ``DB_REPLICA_CHECK_INTERVAL`` (shared by
  every thread of the process), and, per thread, the caller's position: the
  WAL position of its last committed write.
* Positions (GitLab's "sticking"): a transaction that wrote commits with
  ``COMMIT; SELECT pg_current_wal_insert_lsn()`` sent as one simple-query
  message, so the position comes with the commit's own reply (the insert
  position after the commit returned is at or past the end of the commit
  record).  A write outside a transaction (autocommit) commits within its
  statement, whose reply cannot carry the position (psycopg2 returns the last
  result of a message only), so it is marked *pending* with the time it
  returned; the primary's insert position, sampled by a thread of the set at
  most once per interval and only while positions are pending, resolves it:
  a sample taken after the write returned is at or past its commit.  Until
  then the caller reads from the primary.
* Writes are seen at the connection: primary connections get a cursor class
  that notes statements which may write; replica connections get one that
  refuses them (:class:`~datalayer.errors.ReplicaWriteError`, naming the
  statement and the caller's line), and the replica's own refusal (SQLSTATE
  25006) is reported the same way.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import psycopg2
import psycopg2.extensions
from peewee import DatabaseError, InterfaceError

from . import pool as _pool
from ._connection import _Connection
from .errors import (
    DatabaseUnavailable,
    DatalayerError,
    PoolTimeout,
    ReplicaWriteError,
    TableMissing,
)

if TYPE_CHECKING:
    from ._connection import PooledDatabase
    from .config import Settings

logger = logging.getLogger("datalayer.replicas")

__all__ = [
    "ReplicaSet",
    "ReplicaState",
    "Route",
    "Router",
    "format_position",
    "parse_position",
]

T = TypeVar("T")

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
_INTRANS = psycopg2.extensions.TRANSACTION_STATUS_INTRANS
_monotonic = time.monotonic

COMMIT_WITH_POSITION = "COMMIT; SELECT pg_current_wal_insert_lsn()"
"""Sent instead of ``COMMIT`` by a transaction that wrote: one message, one round trip."""

PRIMARY_POSITION = "SELECT pg_current_wal_insert_lsn()"

CHECK_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
    "CASE WHEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) "
    "<= pg_last_wal_replay_lsn() THEN 0 "
    "ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)
"""A replica's replay position and lag: 0 when it has replayed all it received (after a
restart the receive position starts behind the replay one), else the
age of the last transaction it replayed (the usual measure, an upper bound: after an idle
spell that transaction is old although the replica is only just behind, so
:meth:`Replica.check` also bounds the lag by the time since a check last saw the replica
caught up)."""

DOWN_RETRY = 0.5
"""Seconds between connection attempts to a replica that is down."""
POLL_IDLE_STOP = 60.0
"""A poller stops after this many seconds without a routed read (the next read restarts it)."""


# -- positions ------------------------------------------------------------------------------


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


# -- which statements write ------------------------------------------------------------------

_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START", "END",
                      "ABORT", "SET", "RESET", "SHOW", "DISCARD"})
_READ_HEADS = frozenset({"SELECT", "VALUES", "TABLE", "WITH", "EXPLAIN", "FETCH", "DECLARE",
                         "CLOSE", "MOVE"})
# Words that make a read statement one that may write or lock (as datalayer._sql).
_WRITE_WORD = re.compile(
    r"\b(?:insert|update|delete|merge|into|lock|share|nextval|setval|set_config|"
    r"txid_current|pg_current_xact_id|pg_advisory\w*|pg_try_advisory\w*|pg_terminate_backend|"
    r"pg_cancel_backend|pg_notify|lo_\w+|dblink\w*)\b",
    re.IGNORECASE,
)
_SURE_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "CREATE", "ALTER",
                          "DROP", "TRUNCATE", "GRANT", "REVOKE", "COMMENT", "LOCK", "VACUUM",
                          "CLUSTER", "REINDEX", "REFRESH", "CALL", "DO", "ANALYZE", "SECURITY",
                          "IMPORT", "REASSIGN", "NOTIFY"})
_DML = re.compile(r"\b(?:insert|update|delete|merge)\b", re.IGNORECASE)
_may_write_cache: dict[str, bool] = {}
# Server-side prepared statements (datalayer._sql): name -> whether its body may write, learnt
# from the PREPARE this process sent (names derive from the SQL text, so they are stable).
_prepared_may_write: dict[str, bool] = {}
_PREPARE = re.compile(r"\bPREPARE\s+(\w+)\s+AS\s+(.*?)(?:;\s*EXECUTE\b|$)",
                      re.IGNORECASE | re.DOTALL)


def _text(query: Any, cursor: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    as_string = getattr(query, "as_string", None)  # psycopg2.sql.Composed
    return str(as_string(cursor)) if as_string is not None else str(query)


def _head(sql: str) -> str:
    words = sql.lstrip(" \t\r\n(")[:12].split(None, 1)
    return words[0].rstrip(";").upper() if words else ""


def may_write(sql: str) -> bool:
    """Return True unless ``sql`` surely only reads or controls the transaction (cached)."""
    known = _may_write_cache.get(sql)
    if known is not None:
        return known
    head = _head(sql)
    if head in _CONTROL:
        result = False
    elif head in _READ_HEADS:
        result = _WRITE_WORD.search(sql) is not None
    elif head in ("PREPARE", "DEALLOCATE"):  # "[DEALLOCATE x;]PREPARE x AS body;EXECUTE x(..)"
        found = _PREPARE.search(sql)
        if found is None:
            result = head == "PREPARE"
        else:
            result = may_write(found[2])
            _prepared_may_write[found[1]] = result
    elif head == "EXECUTE":
        words = sql.split(None, 2)
        name = words[1].split("(", 1)[0] if len(words) > 1 else ""
        known = _prepared_may_write.get(name)
        if known is None:
            return True  # not prepared by this process: may write (and not cached)
        result = known
    else:
        result = True
    if len(_may_write_cache) > 4096:
        _may_write_cache.clear()
    _may_write_cache[sql] = result
    return result


def surely_writes(sql: str) -> bool:
    """Return True when ``sql`` is a write a replica would refuse (refused before sending).

    Cached per SQL text, as :func:`may_write` is: every statement on a replica asks.
    """
    known = _surely_writes_cache.get(sql)
    if known is not None:
        return known
    head = _head(sql)
    result = head in _SURE_WRITES or (head == "WITH" and _DML.search(sql) is not None)
    if len(_surely_writes_cache) > 4096:
        _surely_writes_cache.clear()
    _surely_writes_cache[sql] = result
    return result


_surely_writes_cache: dict[str, bool] = {}


def _statement_name(sql: str) -> str:
    """The first words of ``sql``, up to any literal or value (never parameter values)."""
    words = []
    for word in sql.split()[:4]:
        cut = re.split(r"['$%(]", word, maxsplit=1)
        if cut[0]:
            words.append(cut[0])
        if len(cut) > 1:
            break
    return " ".join(words)[:60]


_SKIP_FRAMES = ("/datalayer/", "/peewee.py", "/playhouse/", "/psycopg2/", "/contextlib.py",
                "/functools.py")


def _caller() -> str:
    """Return ``file:line in function`` of the first frame outside datalayer and the drivers."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if not any(part in name for part in _SKIP_FRAMES):
            return f"{name}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "datalayer"


def refused(sql: str, where: str) -> ReplicaWriteError:
    """Return the error for a write sent to a replica."""
    return ReplicaWriteError(
        f"{_statement_name(sql)} (called from {_caller()}) writes, and it ran inside "
        f"db.read_replica() on {where}; writes go to the primary: move it out of the block "
        "(a transaction begun inside the block runs on the primary)"
    )


class PrimaryCursor(psycopg2.extensions.cursor):  # type: ignore[misc]
    """A cursor of a primary connection that notes the statements which may write."""

    def execute(self, query: Any, vars: Any = None) -> Any:
        try:
            return super().execute(query, vars)
        finally:
            if may_write(query if type(query) is str else _text(query, self)):
                _wrote(self.connection)

    def executemany(self, query: Any, vars_list: Any) -> Any:
        try:
            return super().executemany(query, vars_list)
        finally:
            _wrote(self.connection)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
        try:
            return super().copy_expert(sql, file, size)
        finally:
            _wrote(self.connection)

    def copy_from(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().copy_from(*args, **kwargs)
        finally:
            _wrote(self.connection)


def _wrote(conn: Any) -> None:
    if not conn.closed and conn.get_transaction_status() != _IDLE:
        conn.txn_wrote = True  # position taken at COMMIT
        return
    replicas = getattr(conn, "replica_set", None)
    if replicas is not None:
        replicas.wrote_outside_transaction()


class ReplicaCursor(psycopg2.extensions.cursor):  # type: ignore[misc]
    """A cursor of a replica connection: a write is refused with the call named."""

    def execute(self, query: Any, vars: Any = None) -> Any:
        sql = query if type(query) is str else _text(query, self)
        if surely_writes(sql):
            raise refused(sql, getattr(self.connection, "replica_name", "a replica"))
        try:
            return super().execute(query, vars)
        except psycopg2.Error as exc:
            if getattr(exc, "pgcode", None) == "25006":  # read_only_sql_transaction
                raise refused(sql, getattr(self.connection, "replica_name", "a replica")) from exc
            raise

    def executemany(self, query: Any, vars_list: Any) -> Any:
        raise refused(_text(query, self), getattr(self.connection, "replica_name", "a replica"))

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
        text = _text(sql, self)
        if re.search(r"\bFROM\s+STDIN\b", text, re.IGNORECASE):
            raise refused(text, getattr(self.connection, "replica_name", "a replica"))
        return super().copy_expert(sql, file, size)


# -- the decision -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaState:
    """What the last check of a replica found."""

    usable: bool
    replay: int = 0  # LSN replayed
    lag: float | None = None  # seconds
    reason: str = "not checked yet"
    checked: float = 0.0  # time.monotonic() of the check


class _HasState(Protocol):
    name: str
    state: ReplicaState


R = TypeVar("R", bound=_HasState)

# Route reasons (codes; str(route) says them in words).
REPLICA = "replica"
PENDING = "position not known yet"
NOT_REPLAYED = "position not replayed"
LAG = "lag"
DOWN = "down"
UNKNOWN = "state not known"
STALE = "no recent check"


class Route:
    """Where a read goes (``replica`` None: the primary) and why (``str()`` says it)."""

    __slots__ = ("code", "detail", "lag", "name", "needed", "replayed", "replica")

    def __init__(self, replica: Any, code: str, needed: int = 0, replayed: int = 0,
                 lag: float | None = None, detail: str = "", name: str = "") -> None:
        # A plain class: built for every routed read, a frozen dataclass costs ~2 us more.
        self.replica = replica
        self.code = code
        self.needed = needed
        self.replayed = replayed
        self.lag = lag
        self.detail = detail
        self.name = name

    def __repr__(self) -> str:
        return f"<Route {self}>"

    def __str__(self) -> str:
        if self.replica is not None:
            return (f"{self.name} (replayed {format_position(self.replayed)}, needs "
                    f"{format_position(self.needed)}, lag {self.lag or 0:.2f} s)")
        if self.code == PENDING:
            return ("primary: this caller's last write committed less than a check interval "
                    "ago and its position is not known yet")
        if self.code == NOT_REPLAYED:
            return (f"primary: {self.name} has not replayed this caller's last write "
                    f"(needs {format_position(self.needed)}, replayed "
                    f"{format_position(self.replayed)})")
        if self.code == LAG:
            return f"primary: {self.name} lags ({self.detail})"
        if self.code == UNKNOWN:
            return f"primary: {self.name} not checked yet"
        if self.code == DOWN:
            return f"primary: {self.name} is skipped ({self.detail})"
        if self.code == STALE:
            return f"primary: {self.name} did not answer its check ({self.detail})"
        return f"primary: {self.detail or self.code}"


_REASON_RANK = {NOT_REPLAYED: 0, LAG: 1, STALE: 2, UNKNOWN: 3, DOWN: 4}


class Router:
    """The routing decision, on its own: ``db_for_read`` / ``db_for_write`` (Django's names).

    ``replicas`` are objects with a ``name`` and a ``state``
    (:class:`ReplicaState`); the router only reads them, so it can be tested
    with plain values.  Healthy replicas are taken in turn.
    """

    def __init__(self, replicas: Sequence[_HasState], *, stale_after: float) -> None:
        self.replicas = list(replicas)
        self.stale_after = stale_after
        self._turn = itertools.count()

    def db_for_write(self) -> Route:
        return Route(None, "write", detail="a write")

    def db_for_read(self, needed: int | None, now: float) -> Route:
        """Return where a read goes for a caller that must see position ``needed``.

        ``needed`` None: the caller wrote and its position is not known yet (primary).
        """
        if needed is None:
            return Route(None, PENDING)
        replicas = self.replicas
        count = len(replicas)
        start = next(self._turn)
        best: Route | None = None
        for k in range(count):
            replica = replicas[(start + k) % count]
            state = replica.state
            if not state.usable:
                code = UNKNOWN if state.checked == 0.0 else (LAG if state.reason.startswith(
                    "lag") else DOWN)
                why = Route(None, code, detail=state.reason, name=replica.name)
            elif now - state.checked > self.stale_after:
                why = Route(None, STALE, detail=f"last answered {now - state.checked:.1f} s ago",
                            name=replica.name)
            elif state.replay < needed:
                why = Route(None, NOT_REPLAYED, needed, state.replay, state.lag,
                            name=replica.name)
            else:
                return Route(replica, REPLICA, needed, state.replay, state.lag,
                             name=replica.name)
            if best is None or _REASON_RANK[why.code] < _REASON_RANK[best.code]:
                best = why
        assert best is not None
        return best


# -- the replicas of a database ------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class Replica:
    """One replica: its settings, its pool of read connections, its last known state."""

    def __init__(self, index: int, settings: Settings, owner: ReplicaSet) -> None:
        self.index = index
        self.settings = settings
        self.url = settings.url(masked=True)
        self.name = f"replica {index} ({settings.describe()})"
        self.owner = owner
        self._connection_class = _Connection  # the same connection class as the primary's
        self.pool = _pool.ConnectionPool(
            self._open,
            max_open=settings.max_open_conns,
            max_idle=settings.max_idle_conns,
            max_lifetime=settings.conn_max_lifetime,
            max_idle_time=settings.conn_max_idle_time,
            timeout=settings.pool_timeout,
            name=f"{settings.application_name}-replica{index}",
            max_checkout_time=settings.max_checkout_time,
            client_timeout=settings.effective_client_timeout,
        )
        self.state = ReplicaState(False)
        self.in_use: bool | None = None  # for the one log line when it leaves / returns
        self.poller: threading.Thread | None = None
        self._check_conn: Any = None
        self._caught_up_at: float | None = None  # when a check last saw nothing left to replay

    def _connect(self, cursor_factory: Any) -> Any:
        try:
            raw = psycopg2.connect(**self.settings.connect_kwargs(),
                                   connection_factory=self._connection_class,
                                   cursor_factory=cursor_factory)
        except psycopg2.Error as exc:
            raise _pool.connect_failure(self.settings.describe(), exc) from None
        raw.autocommit = True
        raw.server_pid = raw.info.backend_pid
        raw.replica_name = self.name
        return raw

    def _open(self) -> Any:
        return self._connect(ReplicaCursor)

    def check(self, *, log: bool = True) -> ReplicaState:
        """Read the replica's replay position and lag now (one round trip); set the state."""
        inflight = self.pool.inflight
        raw = self._check_conn
        try:
            if raw is None or raw.closed:
                self._check_conn = None
                raw = self._check_conn = self._connect(psycopg2.extensions.cursor)
                self.pool.watchdog.start()
            inflight[raw] = _monotonic()
            try:
                with raw.cursor() as cur:
                    cur.execute(CHECK_SQL)
                    row = cur.fetchone()
            finally:
                inflight.pop(raw, None)
        except Exception as exc:  # down, refusing, dropped: all the same to a reader
            if raw is not None:
                with contextlib.suppress(Exception):
                    raw.close()
            self._check_conn = None
            self._caught_up_at = None
            return self.set_state(ReplicaState(False, reason=f"down: {_first_line(exc)}",
                                               checked=_monotonic()), log)
        in_recovery, replay, lag = row
        now = _monotonic()
        if not in_recovery or replay is None:
            return self.set_state(ReplicaState(
                False, reason="not a standby (pg_is_in_recovery() is false)", checked=now), log)
        lag = float(lag)
        if lag == 0.0:
            self._caught_up_at = now
        elif self._caught_up_at is not None:
            lag = min(lag, now - self._caught_up_at)
        position = parse_lsn(replay)
        if lag > self.owner.max_lag:
            return self.set_state(ReplicaState(
                False, position, lag, f"lag {lag:.1f} s > DB_REPLICA_MAX_LAG "
                f"{self.owner.max_lag:g} s", now), log)
        return self.set_state(ReplicaState(True, position, lag, "", now), log)

    def set_state(self, state: ReplicaState, log: bool = True) -> ReplicaState:
        """Replace the state; log one line when the replica leaves or returns to use."""
        self.state = state
        if not log:
            return state
        was = self.in_use
        if state.usable and was is not True:
            self.in_use = True
            if was is False:
                logger.warning("%s is back in use (lag %.2f s)", self.name, state.lag or 0.0)
        elif not state.usable and was is not False:
            self.in_use = False
            logger.warning("%s is skipped: %s; reads go to the primary or another replica",
                           self.name, state.reason)
        return state

    def mark_down(self, exc: BaseException) -> None:
        """A read found the replica down: skip it until a check finds it back."""
        self.set_state(ReplicaState(False, reason=f"down: {_first_line(exc)}",
                                    checked=_monotonic()))

    def close(self) -> None:
        self.pool.close()
        raw, self._check_conn = self._check_conn, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()


class _Caller(threading.local):
    """What one thread (the default "caller") must see, and its replica scope."""

    position = 0  # LSN at or past this caller's last committed write
    pending = 0.0  # time.monotonic() when a write whose position is not known yet returned
    carried = 0  # from read_your_writes()
    scope: _Scope | None = None
    pool: _pool.ConnectionPool | None = None  # a routed read's replica pool, for its length


# A replica read that failed for the replica's sake: run it again on the primary.
_FALLBACK = (DatabaseError, InterfaceError, DatabaseUnavailable, TableMissing)
_REPLICA_TROUBLE = frozenset({"40001", "57P01", "57P02", "57P03", "57014", "08006", "08003"})


class ReplicaSet:
    """The replicas of one :class:`~datalayer.db.Database`, and its callers' positions."""

    def __init__(self, db: PooledDatabase, settings: Settings) -> None:
        self.db = db
        self.max_lag = settings.replica_max_lag
        self.interval = settings.replica_check_interval
        self.replicas = [Replica(i + 1, s, self) for i, s in enumerate(settings.replica_settings())]
        # A state older than this is not trusted (the poller hangs on a frozen replica, say).
        self.stale_after = max(2.0, 20 * self.interval)
        self.router = Router(self.replicas, stale_after=self.stale_after)
        self._local = _Caller()
        self._sample: tuple[float, int] | None = None  # (time the query was sent, LSN)
        self._sample_wanted = threading.Event()
        self._sampler: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_read = 0.0
        self._generation = _pool._fork_generation[0]
        self._threads_missing = True  # a poller is to be started (at first, after it stopped)
        self._sample_conn: Any = None

    # -- positions ----------------------------------------------------------------

    def wrote_outside_transaction(self) -> None:
        """A write committed on its own (autocommit): its position is pending until sampled."""
        self._local.pending = _monotonic()
        if not self._sample_wanted.is_set():
            self._sample_wanted.set()
            self._ensure_threads(pollers=False)

    def committed(self, lsn_text: str | None) -> None:
        """A transaction that wrote committed; ``lsn_text`` came with the COMMIT's reply."""
        caller = self._local
        if lsn_text is None:
            self.wrote_outside_transaction()
            return
        lsn = parse_lsn(lsn_text)
        if lsn > caller.position:
            caller.position = lsn
        caller.pending = 0.0  # the insert position after COMMIT is past every earlier write

    def needed(self) -> int | None:
        """Return the position this caller's reads must see (None: not known yet)."""
        caller = self._local
        if caller.pending:
            sample = self._sample
            if sample is None or sample[0] < caller.pending:
                return None
            if sample[1] > caller.position:
                caller.position = sample[1]
            caller.pending = 0.0
        position = caller.position
        carried = caller.carried
        return carried if carried > position else position

    def last_write_position(self) -> str:
        """Return this caller's position (asking the primary when a write's is pending)."""
        if self.needed() is None:
            lsn = self.primary_position()
            caller = self._local
            caller.position = max(caller.position, lsn)
            caller.pending = 0.0
        needed = self.needed()
        return format_position(needed or 0)

    def primary_position(self) -> int:
        """Ask the primary for its WAL insert position (one round trip)."""
        from ._sql import Statement, fetchone

        row = fetchone(self.db, Statement.text(PRIMARY_POSITION), {})
        return parse_lsn(row[0])

    @contextlib.contextmanager
    def carry(self, lsn: int) -> Iterator[None]:
        caller = self._local
        before = caller.carried
        caller.carried = max(before, lsn)
        try:
            yield
        finally:
            caller.carried = before

    def forget(self) -> None:
        """Forget this thread's position (tests, and a worker between jobs)."""
        caller = self._local
        caller.position, caller.pending, caller.carried = 0, 0.0, 0

    # -- routing ---------------------------------------------------------------------

    def route(self) -> Route:
        """Return where this caller's next read goes (and start the pollers if needed)."""
        now = _monotonic()
        self._last_read = now
        if self._threads_missing or self._generation != _pool._fork_generation[0]:
            self._ensure_threads(pollers=True)
        return self.router.db_for_read(self.needed(), now)

    def scope(self, db: PooledDatabase, what: str = "read") -> _Scope:
        return _Scope(self, db, what)

    def read(self, db: PooledDatabase, call: Callable[[], T], what: str) -> T:
        """Run ``call`` (a read) on a replica when one may; on the primary if the replica fails."""
        caller = self._local
        if caller.scope is None and db._state.closed:
            return self._read_checked_out(db, call, what, caller)
        scope = _Scope(self, db, what)
        with scope:
            try:
                return call()
            except _FALLBACK as exc:
                if scope.replica is None:
                    raise  # it ran on the primary: the primary's error is the caller's
                failed = scope.replica
                if scope.raw is not None and scope.raw.closed:
                    failed.mark_down(exc)
                logger.info("%s on %s failed (%s); reading from the primary",
                            what, failed.name, _first_line(exc))
        logger.debug("%s -> primary: after the replica failed", what)
        return call()

    def _read_checked_out(self, db: PooledDatabase, call: Callable[[], T], what: str,
                          caller: _Caller) -> T:
        """The usual case of :meth:`read`: no block, no held connection, no transaction.

        ``call``'s statements each check a connection out (:func:`datalayer._sql.fetchone`):
        here out of the replica's pool, named in ``caller.pool`` for the call's length.
        Nothing is swapped into peewee's connection state, which is what makes a routed
        lookup cost a few microseconds more than an unrouted one and not a dozen.
        """
        route = self.route()
        replica = route.replica
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s -> %s", what, route)
        if replica is None:
            return call()
        caller.pool = replica.pool
        try:
            return call()
        except _FALLBACK as exc:
            if isinstance(exc, DatabaseUnavailable) and not isinstance(exc, PoolTimeout):
                replica.mark_down(exc)  # it refused a connection, or lost one twice
            logger.info("%s on %s failed (%s); reading from the primary",
                        what, replica.name, _first_line(exc))
        finally:
            caller.pool = None
        logger.debug("%s -> primary: after the replica failed", what)
        return call()

    def adopt(self, raw: Any) -> None:
        """Make the new primary connection ``raw`` note its writes, for read-your-writes."""
        raw.cursor_factory = PrimaryCursor
        raw.replica_set = self

    def lost(self, db: PooledDatabase, raw: Any, exc: BaseException | None) -> bool:
        """If ``raw`` is this thread's replica connection: give it up, fall back to the primary.

        Called with ``exc`` when a statement on it failed (True only when the
        failure is the replica's: the read may then run on the primary), and
        with ``exc`` None when the connection is found dead.
        """
        scope = self._local.scope
        if scope is None or scope.raw is not raw or raw is None:
            return False
        if exc is not None and not raw.closed and _pgcode(exc) not in _REPLICA_TROUBLE \
                and not isinstance(exc, InterfaceError):
            return False
        replica = scope.replica
        assert replica is not None
        if raw.closed:
            replica.pool.discard(raw)
            replica.mark_down(exc or RuntimeError("connection closed"))
        else:
            replica.pool.putconn(raw, reusable=_reusable(raw))
        scope.detach("the replica failed")
        return True

    def release(self, db: PooledDatabase, raw: Any, why: str) -> bool:
        """If ``raw`` is this thread's replica connection: return it and go back to the primary."""
        scope = self._local.scope
        if scope is None or scope.raw is not raw or raw is None:
            return False
        assert scope.replica is not None
        scope.replica.pool.putconn(raw, reusable=_reusable(raw))
        scope.detach(why)
        return True

    # -- the threads ---------------------------------------------------------------

    def _ensure_threads(self, *, pollers: bool) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            if self._generation != _pool._fork_generation[0]:  # a forked child: none run here
                self._generation = _pool._fork_generation[0]
                self._sampler = None
                self._sample_conn = None  # the parent's
                for replica in self.replicas:
                    replica.poller = None
                    replica._check_conn = None
            for replica in self.replicas if pollers else ():
                if replica.poller is None or not replica.poller.is_alive():
                    replica.poller = threading.Thread(
                        target=self._poll, args=(replica,), daemon=True,
                        name=f"{replica.pool.name}-check")
                    replica.poller.start()
            if pollers:
                self._threads_missing = False
            if self._sample_wanted.is_set() and (self._sampler is None
                                                 or not self._sampler.is_alive()):
                self._sampler = threading.Thread(target=self._sample_primary, daemon=True,
                                                 name=f"{self.db.settings.application_name}"
                                                 "-position")
                self._sampler.start()

    def _poll(self, replica: Replica) -> None:
        me = threading.current_thread()
        try:
            while not self._stop.is_set():
                if _monotonic() - self._last_read > POLL_IDLE_STOP:
                    return
                state = replica.check()
                self._stop.wait(self.interval if state.usable else max(self.interval,
                                                                         DOWN_RETRY))
        finally:
            with self._lock:
                if replica.poller is me:
                    replica.poller = None
                    self._threads_missing = True

    def _sample_primary(self) -> None:
        me = threading.current_thread()
        try:
            while not self._stop.is_set():
                if not self._sample_wanted.wait(POLL_IDLE_STOP) or self._stop.is_set():
                    return
                last = self._sample
                if last is not None:
                    wait = last[0] + self.interval - _monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return
                self._sample_wanted.clear()
                started = _monotonic()
                try:
                    lsn = self._query_primary()
                except Exception as exc:  # the primary is down: writers find out themselves
                    logger.debug("could not read the primary's WAL position: %s",
                                 _first_line(exc))
                    self._sample_wanted.set()
                    if self._stop.wait(max(self.interval, DOWN_RETRY)):
                        return
                    continue
                self._sample = (started, lsn)
        finally:
            with self._lock:
                if self._sampler is me:
                    self._sampler = None
                    raw, self._sample_conn = self._sample_conn, None
                    if raw is not None:
                        with contextlib.suppress(Exception):
                            raw.close()

    def _query_primary(self) -> int:
        """Read the primary's insert position on a connection of the sampler's own.

        Not from the pool: the sampler must neither take a slot the application
        waits for nor show in its pool's counters.
        """
        inflight = self.db.pool.inflight  # the watchdog ends a query a frozen server holds
        raw = self._sample_conn
        try:
            if raw is None or raw.closed:
                self._sample_conn = None
                raw = psycopg2.connect(**self.db.settings.connect_kwargs())
                raw.autocommit = True
                self._sample_conn = raw
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
            self._sample_conn = None
            raise
        return parse_lsn(row[0])

    # -- status ------------------------------------------------------------------

    def status(self, *, check: bool = False) -> list[dict[str, Any]]:
        """Each replica's masked URL, whether it is used, its lag and replay position."""
        out = []
        for replica in self.replicas:
            state = replica.check(log=False) if check else replica.state
            out.append({
                "url": replica.url,
                "in_use": state.usable,
                "lag": state.lag,
                "replayed": format_position(state.replay) if state.replay else None,
                "reason": state.reason,
            })
        return out

    def close(self) -> None:
        self._stop.set()
        self._sample_wanted.set()
        raw, self._sample_conn = self._sample_conn, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()
        for replica in self.replicas:
            replica.close()


def _pgcode(exc: BaseException) -> str | None:
    """Return the SQLSTATE of ``exc`` or of the driver error it wraps (peewee keeps it in args)."""
    for candidate in (exc, *exc.args[:1], exc.__cause__, exc.__context__):
        code = getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return None


def _reusable(raw: Any) -> bool:
    return not raw.closed and raw.get_transaction_status() == _IDLE


class _Scope:
    """One ``with db.read_replica():`` block (or one routed auth read) on one thread."""

    __slots__ = ("db", "nested", "owner", "raw", "replica", "stash", "what")

    def __init__(self, owner: ReplicaSet, db: PooledDatabase, what: str) -> None:
        self.owner = owner
        self.db = db
        self.what = what
        self.nested = False
        self.replica: Replica | None = None
        self.raw: Any = None
        self.stash: Any = None

    def __enter__(self) -> _Scope:
        caller = self.owner._local
        if caller.scope is not None:
            self.nested = True
            return self
        state = self.db._state
        if state.transactions:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s -> primary: inside a transaction", self.what)
            return self
        route = self.owner.route()
        replica = route.replica
        if replica is None:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s -> %s", self.what, route)
            return self
        try:
            raw = replica.pool.getconn()
        except DatalayerError as exc:
            if not isinstance(exc, PoolTimeout):
                replica.mark_down(exc)
            logger.debug("%s -> primary: %s: %s", self.what, replica.name, _first_line(exc))
            return self
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s -> %s", self.what, route)
        caller.scope = self
        self.replica = replica
        self.raw = raw
        if not state.closed:
            self.stash = state.conn
        state.set_connection(raw)
        state.fresh = True
        return self

    def detach(self, why: str) -> None:
        """Stop using the replica connection (already given back); the primary's comes back."""
        self.raw = None
        state = self.db._state
        state.reset()
        if self.stash is not None:
            state.set_connection(self.stash)
            state.fresh = False
            self.stash = None
        logger.debug("%s -> primary: %s", self.what, why)

    def __exit__(self, *exc: object) -> None:
        if self.nested:
            return
        caller = self.owner._local
        if caller.scope is not self:
            return
        caller.scope = None
        state = self.db._state
        raw = self.raw
        self.raw = None
        current = None if state.closed else state.conn
        if raw is not None and current is raw:
            state.reset()
            assert self.replica is not None
            self.replica.pool.putconn(raw, reusable=_reusable(raw))
            current = None
        elif current is not None and current is not self.stash and not state.transactions:
            self.db.close()  # a primary connection taken in the block, after a fallback
            current = None
        if self.stash is not None and current is None:
            state.set_connection(self.stash)
            state.fresh = False
        self.stash = None

