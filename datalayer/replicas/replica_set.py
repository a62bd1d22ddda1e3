"""The replicas of one database: where each read goes, and falling back to the primary.

:class:`ReplicaSet` ties the parts together for :class:`datalayer.db.Database`:

* a routed read (:meth:`ReplicaSet.read`, the auth operations that only read)
  asks :meth:`Router.pick <datalayer.replicas.router.Router.pick>` with the
  caller's position (:mod:`~datalayer.replicas.positions`) and the replicas'
  states (:mod:`~datalayer.replicas.health`), and checks its connection out of
  that replica's pool; a read the replica fails runs again on the primary;
* ``with db.read_replica():`` (:class:`_Scope`) swaps a replica's connection
  into peewee's per-thread state for the block, and back;
* one poller thread per replica refreshes its state at most once per
  ``DB_REPLICA_CHECK_INTERVAL``, shared by every thread, and stops after a
  minute without routed reads (the next one restarts it).

What a routed read costs on top of the same read without replicas: one clock
read, three thread-local reads (the caller's position and block), the
decision (a few attribute reads and comparisons, nothing allocated), the
DEBUG check (the log line is built only when DEBUG is on), and naming the
replica's pool in the thread-local for the call's length.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg2.extensions
from peewee import DatabaseError, InterfaceError, __exception_wrapper__  # type: ignore[attr-defined]

from .. import pool as _pool
from ..errors import DatabaseUnavailable, DatalayerError, PoolTimeout, TableMissing
from .health import Replica
from .positions import (
    COMMIT_WITH_POSITION,
    IDLE_STOP,
    Positions,
    _Local,
    _monotonic,
    first_line,
    format_position,
)
from .router import Route, Router
from .statements import PrimaryCursor

if TYPE_CHECKING:
    from .._connection import PooledDatabase
    from ..config import Settings

logger = logging.getLogger("datalayer.replicas")
_debug_on = logger.isEnabledFor
_DEBUG = logging.DEBUG
# The logger's cache of isEnabledFor() answers, cleared by logging on every level change.
_cache = getattr(logger, "_cache", None)
_level_cache: dict[int, bool] = _cache if isinstance(_cache, dict) else {}

__all__ = ["ReplicaSet"]

T = TypeVar("T")

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
_fork_generation = _pool._fork_generation  # the list itself: pool bumps its item in a child

DOWN_RETRY = 0.5
"""Seconds between checks of a replica that is down."""
POLL_IDLE_STOP = IDLE_STOP
"""A poller stops after this many seconds without a routed read (the next read restarts it)."""

_sets: weakref.WeakSet[ReplicaSet] = weakref.WeakSet()


def _after_fork() -> None:
    """In a forked child no thread of the parent runs: the next read or write starts them."""
    for replicas in list(_sets):
        replicas._threads_missing = True
        replicas.positions.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

# A replica read that failed for the replica's sake: run it again on the primary.
_FALLBACK = (DatabaseError, InterfaceError, DatabaseUnavailable, TableMissing)
_REPLICA_TROUBLE = frozenset({"40001", "57P01", "57P02", "57P03", "57014", "08006", "08003"})


class ReplicaSet:
    """The replicas of one :class:`~datalayer.db.Database`, and its callers' positions."""

    def __init__(self, db: PooledDatabase, settings: Settings) -> None:
        self.db = db
        self.max_lag = settings.replica_max_lag
        self.interval = settings.replica_check_interval
        self.replicas = [Replica(i + 1, s, self.max_lag)
                         for i, s in enumerate(settings.replica_settings())]
        # A state older than this is not trusted (the poller hangs on a frozen replica, say).
        self.stale_after = max(2.0, 20 * self.interval)
        self.router = Router(self.replicas, stale_after=self.stale_after)
        self.positions = Positions(db, self.interval)
        self._local: _Local = self.positions.local  # datalayer._sql reads .pool from it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_read = 0.0
        self._generation = _fork_generation[0]
        self._threads_missing = True  # a poller is to be started (at first, after it stopped)
        _sets.add(self)

    # -- positions (see datalayer.replicas.positions) -------------------------------

    def committed(self, lsn_text: str | None) -> None:
        """A transaction that wrote committed; ``lsn_text`` came with the COMMIT's reply."""
        self.positions.committed(lsn_text)

    def wrote_outside_transaction(self) -> None:
        self.positions.wrote_outside_transaction()

    def needed(self) -> int | None:
        """Return the position this caller's reads must see (None: not known yet)."""
        return self.positions.needed()

    def last_write_position(self) -> str:
        return self.positions.last_write_position()

    def carry(self, lsn: int) -> contextlib.AbstractContextManager[None]:
        return self.positions.carry(lsn)

    def forget(self) -> None:
        """Forget this thread's position (tests, and a worker between jobs)."""
        self.positions.forget()

    # -- routing ---------------------------------------------------------------------

    def route(self) -> Route:
        """Return where this caller's next read goes, and why (and start the pollers if needed)."""
        now = _monotonic()
        self._last_read = now
        if self._threads_missing:
            self._ensure_pollers()
        return self.router.db_for_read(self.positions.needed(), now)

    def scope(self, db: PooledDatabase, what: str = "read") -> _Scope:
        return _Scope(self, db, what)

    def read(self, db: PooledDatabase, call: Callable[[], T], what: str) -> T:
        """Run ``call`` (a read) on a replica when one may; on the primary if the replica fails."""
        return self.read_call(db, call, (), {}, what)

    def read_call(self, db: PooledDatabase, fn: Callable[..., T], args: tuple[Any, ...],
                  kwargs: dict[str, Any], what: str) -> T:
        """Run ``fn(*args, **kwargs)``, a read, as :meth:`read` runs ``call``.

        The usual case (no block, no held connection, no transaction) is inline here, as
        lean as it can be, for every routed auth read takes it: ``fn``'s statements each
        check a connection out (:func:`datalayer._sql.fetchone`), here out of the
        replica's pool, named in the thread-local for the call's length.  Nothing is
        swapped into peewee's connection state, and nothing is allocated for the decision
        unless DEBUG is on.
        """
        local = self._local
        caller = local.caller
        if caller.scope is not None or not db._state.closed:
            return self._read_in_scope(db, lambda: fn(*args, **kwargs), what)
        now = _monotonic()
        self._last_read = now
        if self._threads_missing:  # also set in a forked child (_after_fork)
            self._ensure_pollers()
        # The caller's position (Positions.needed(), inline).
        needed = caller.position if not caller.pending else self.positions.resolve(caller)
        carried = caller.carried
        if carried and needed is not None and carried > needed:
            needed = carried
        # logger.isEnabledFor(DEBUG), from logging's own cache when it holds the answer (a
        # wrong True only costs the Route: logger.debug() checks again).
        debug = _level_cache.get(_DEBUG)
        if debug is None:
            debug = _debug_on(_DEBUG)
        if debug:
            route = self.router.db_for_read(needed, now)
            logger.debug("%s -> %s", what, route)
            replica = route.replica
        else:
            replica = self.router.pick(needed, now)
        if replica is None:
            return fn(*args, **kwargs)
        local.pool = replica.pool
        try:
            return fn(*args, **kwargs)
        except _FALLBACK as exc:
            if isinstance(exc, DatabaseUnavailable) and not isinstance(exc, PoolTimeout):
                replica.mark_down(exc)  # it refused a connection, or lost one twice
            logger.info("%s on %s failed (%s); reading from the primary",
                        what, replica.name, first_line(exc))
        finally:
            local.pool = None
        logger.debug("%s -> primary: after the replica failed", what)
        return fn(*args, **kwargs)

    def _read_in_scope(self, db: PooledDatabase, call: Callable[[], T], what: str) -> T:
        """:meth:`read` inside a block, a transaction, or with a connection held."""
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
                            what, failed.name, first_line(exc))
        logger.debug("%s -> primary: after the replica failed", what)
        return call()

    def commit_with_position(self, raw: Any) -> None:
        """COMMIT the transaction of ``raw`` (which wrote) and note the position its reply carries.

        One message, ``COMMIT; SELECT pg_current_wal_insert_lsn()``: no round trip more.
        """
        raw.txn_wrote = False
        with __exception_wrapper__:
            cursor = raw.cursor()
            cursor.execute(COMMIT_WITH_POSITION)
            row = cursor.fetchone()
        self.positions.committed(row[0] if row else None)

    def adopt(self, raw: Any) -> None:
        """Make the new primary connection ``raw`` note its writes, for read-your-writes."""
        raw.cursor_factory = PrimaryCursor
        raw.positions = self.positions

    def lost(self, db: PooledDatabase, raw: Any, exc: BaseException | None) -> bool:
        """If ``raw`` is this thread's replica connection: give it up, fall back to the primary.

        Called with ``exc`` when a statement on it failed (True only when the
        failure is the replica's: the read may then run on the primary), and
        with ``exc`` None when the connection is found dead.
        """
        scope = self._local.caller.scope
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
        scope = self._local.caller.scope
        if scope is None or scope.raw is not raw or raw is None:
            return False
        assert scope.replica is not None
        scope.replica.pool.putconn(raw, reusable=_reusable(raw))
        scope.detach(why)
        return True

    # -- the pollers ---------------------------------------------------------------

    def _ensure_pollers(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            if self._generation != _fork_generation[0]:  # a forked child: none run here
                self._generation = _fork_generation[0]
                for replica in self.replicas:
                    replica.poller = None
                    replica._check_conn = None  # the parent's
            for replica in self.replicas:
                if replica.poller is None or not replica.poller.is_alive():
                    replica.poller = threading.Thread(
                        target=self._poll, args=(replica,), daemon=True,
                        name=f"{replica.pool.name}-check")
                    replica.poller.start()
            self._threads_missing = False

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
        self.positions.close()
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
        caller = self.owner._local.caller
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
            logger.debug("%s -> primary: %s: %s", self.what, replica.name, first_line(exc))
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
        caller = self.owner._local.caller
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

