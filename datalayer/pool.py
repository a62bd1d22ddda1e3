"""A bounded pool of psycopg2 connections with the limits of the DESIGN.

* at most ``max_open`` connections exist at once (checked out, idle or being
  opened); a checkout waits up to ``timeout`` seconds, then raises
  :class:`~datalayer.errors.PoolTimeout`;
* at most ``max_idle`` are kept idle; extra ones are closed on release;
* a connection older than ``max_lifetime`` or idle longer than
  ``max_idle_time`` is closed instead of reused (on checkout, on release, and
  by a small background reaper);
* connections are opened *outside* the pool's lock, so a slow or hung server
  delays only the caller that needs a new connection;
* when the server refuses a new connection because its ``max_connections`` is
  reached (:class:`~datalayer.errors.TooManyConnections`), the checkout waits
  up to ``timeout`` for one of the pool's own connections to come back (or a
  slot to free up) instead of failing at once;
* a checkout never hands out a dead connection: the socket of an idle
  connection is polled (a killed backend or a restarted server has sent its
  goodbye and closed, which shows as a readable socket) and a connection idle
  longer than ``validate_after`` is pinged with a round trip; anything else is
  left to the failure path in :mod:`datalayer.db`;
* a connection checked out by a thread that has since died is reclaimed, and
  so (with ``max_checkout_time``) is one held longer than that by a live
  thread while no statement runs on it: a leaked checkout;
* with ``client_timeout``, a statement in flight longer than that has its
  connection's socket shut down by a watchdog thread (:mod:`._watchdog`), so a
  frozen server cannot hold a thread for ever;
* after ``fork()`` the child never touches its parent's connections.

This module knows nothing of peewee.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._watchdog import Watchdog
from .errors import DatabaseUnavailable, PoolClosed, PoolTimeout, TooManyConnections

logger = logging.getLogger(__name__)

__all__ = ["ConnectionPool", "PoolStats", "connect_failure", "is_server_full"]


_monotonic = time.monotonic
_current_thread = threading.current_thread
_get_ident = threading.get_ident
# The running threads by ident, as threading.current_thread() looks the caller up (a dict
# lookup instead of a Python-level call on every checkout); {} where it is not there.
_threads: dict[int, threading.Thread] = getattr(threading, "_active", {})

# Bumped in a forked child, so a pool notices a fork with one integer compare per checkout
# (os.getpid() is a system call on current glibc).
_fork_generation = [0]


def _after_fork_in_child() -> None:
    _fork_generation[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Entry:
    """A pooled connection and its times (a plain class: a dataclass costs a millisecond
    of a script's start-up to make)."""

    __slots__ = ("checked_out", "created", "last_used", "owner", "poll", "poller", "raw")

    def __init__(self, raw: Any, created: float, last_used: float,
                 owner: threading.Thread | None = None, checked_out: float = 0.0,
                 poller: Any = None) -> None:
        self.raw = raw
        self.created = created
        self.last_used = last_used
        self.owner = owner
        self.checked_out = checked_out
        self.poller = poller  # select.poll registered on the socket, made once per connection
        self.poll = None if poller is None else poller.poll  # its bound poll method


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of the pool's counters."""

    open: int
    idle: int
    in_use: int
    max_open: int
    max_idle: int
    waiting: int
    opened_total: int
    closed_total: int
    reclaimed_total: int = 0
    timeouts_total: int = 0
    extra: dict[str, int] = field(default_factory=dict)


# What a server at its connection limit answers a new connection (SQLSTATE 53300,
# too_many_connections), whose text is all libpq passes on from a failed connect:
# "sorry, too many clients already", "too many connections for role / database",
# "remaining connection slots are reserved for ..." (superuser / replication slots).
_SERVER_FULL = ("too many clients", "too many connections",
                "remaining connection slots are reserved")


def is_server_full(exc: BaseException) -> bool:
    """Return True when a failed connect means the server's connection limit is reached."""
    if getattr(exc, "pgcode", None) == "53300":
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _SERVER_FULL)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def connect_failure(where: str, exc: BaseException) -> DatabaseUnavailable:
    """Return the error for a connect to ``where`` (user@host:port/name) that failed with ``exc``.

    The server's connection limit is named as such (:class:`TooManyConnections`),
    with the two ways out; anything else says to check the server and the settings.
    """
    first = _first_line(exc)
    if is_server_full(exc):
        return TooManyConnections(
            f"cannot connect to {where}: the server's connection limit is reached "
            f"(SQLSTATE 53300: {first}); lower DB_MAX_OPEN_CONNS (summed over every process "
            "that connects) or raise max_connections on the server"
        )
    return DatabaseUnavailable(
        f"cannot connect to {where}: {first}; check that the server runs and "
        "DATABASE_URL / DB_* point at it"
    )


def _poller(raw: Any) -> Any:
    """Return a ``select.poll`` watching ``raw``'s socket (None where poll is unavailable)."""
    if not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(raw.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return poller


def _socket_readable(entry: _Entry) -> bool:
    """Return True when the server has sent something to an idle connection (or closed it)."""
    try:
        if entry.poller is not None:
            return bool(entry.poller.poll(0))
        readable, _, _ = select.select([entry.raw.fileno()], [], [], 0)
    except (OSError, ValueError, Exception):  # closed descriptor or driver error
        return True
    return bool(readable)


class ConnectionPool:
    """Hand out raw DB-API connections made by ``connect()`` within fixed limits."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        max_open: int = 25,
        max_idle: int = 5,
        max_lifetime: float = 3600.0,
        max_idle_time: float = 1800.0,
        timeout: float = 10.0,
        validate_after: float = 2.0,
        name: str = "datalayer",
        max_checkout_time: float | None = None,
        client_timeout: float | None = None,
    ) -> None:
        if max_open <= 0 or max_idle <= 0 or max_idle > max_open:
            raise ValueError("need 0 < max_idle <= max_open")
        self._connect = connect
        self.max_open = max_open
        self.max_idle = max_idle
        self.max_lifetime = max_lifetime
        self.max_idle_time = max_idle_time
        self.timeout = timeout
        self.validate_after = validate_after
        self.max_checkout_time = max_checkout_time
        self.name = name
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._idle: deque[_Entry] = deque()
        self._in_use: dict[int, _Entry] = {}
        self._opening = 0
        self._waiting = 0
        self._closed = False
        self._generation = _fork_generation[0]
        self._orphans: list[Any] = []  # a forked child keeps its parent's connections untouched
        self._opened_total = 0
        self._closed_total = 0
        self._reclaimed_total = 0
        self._timeouts_total = 0
        self._reaper: threading.Thread | None = None
        self._reaper_stop = threading.Event()
        self.watchdog = Watchdog(client_timeout, name=name)
        # Code running a statement on one of our connections registers it here:
        # ``inflight[raw] = time.monotonic()`` before, ``inflight.pop(raw, None)`` after.
        self.inflight = self.watchdog.inflight

    # -- public -----------------------------------------------------------

    def getconn(self, timeout: float | None = None) -> Any:
        """Check a live connection out; open one if allowed; else wait.

        :raises PoolTimeout: when none became free within ``timeout`` seconds.
        :raises PoolClosed: after :meth:`close`.
        """
        if self._generation != _fork_generation[0]:
            self._after_fork()
        owner = _threads.get(_get_ident()) or _current_thread()  # current_thread(), inline
        # Fast path: the most recently used idle connection, young and recently used.
        # acquire() + try/finally rather than ``with``: as safe, and cheaper (this runs on
        # every checkout).
        fast: _Entry | None = None
        lock = self._lock
        lock.acquire()
        try:
            idle = self._idle
            if idle and not self._closed:
                cand = idle[-1]
                now = _monotonic()
                if (
                    now - cand.last_used <= self.validate_after
                    and now - cand.created <= self.max_lifetime
                    and not cand.raw.closed
                ):
                    idle.pop()
                    cand.owner = owner
                    cand.checked_out = now
                    self._in_use[id(cand.raw)] = cand
                    fast = cand
        finally:
            lock.release()
        if fast is not None:
            raw = fast.raw
            poll = fast.poll  # _socket_readable(fast), inlined: this runs on every checkout
            if poll is not None:
                try:
                    if not poll(0):
                        return raw
                except Exception:  # closed descriptor or driver error: check it below
                    pass
            elif not _socket_readable(fast):
                return raw
            if self._ping(raw):
                return raw
            self.discard(raw)
        wait = self.timeout if timeout is None else timeout
        deadline: float | None = None
        full_waits = 0
        while True:
            to_close: list[Any] = []
            entry: _Entry | None = None
            must_open = False
            timed_out: PoolTimeout | None = None
            with self._lock:
                if self._closed:
                    raise PoolClosed(f"pool {self.name!r} is closed; set the package up again")
                now = time.monotonic()
                while self._idle:
                    cand = self._idle.pop()  # most recently used first: keeps the warm ones warm
                    if self._expired(cand, now):
                        to_close.append(cand.raw)
                        continue
                    entry = cand
                    break
                if entry is None:
                    if self._open_count() >= self.max_open:
                        self._reclaim_dead_owners_locked(to_close)
                    if self._open_count() < self.max_open:
                        self._opening += 1
                        must_open = True
                    else:
                        if deadline is None:
                            deadline = now + wait
                        remaining = deadline - now
                        if remaining <= 0:
                            self._timeouts_total += 1
                            timed_out = PoolTimeout(
                                f"no database connection became free within {wait:g} s "
                                f"({len(self._in_use)} of {self.max_open} in use); raise "
                                "DB_MAX_OPEN_CONNS or DB_POOL_TIMEOUT, or return connections sooner"
                            )
                        else:
                            self._waiting += 1
                            try:
                                self._cond.wait(remaining)
                            finally:
                                self._waiting -= 1
                if entry is not None:
                    entry.owner = owner
                    entry.checked_out = now
                    self._in_use[id(entry.raw)] = entry
            self._close_many_later(to_close)
            if timed_out is not None:
                raise timed_out
            if entry is not None:
                if self._usable(entry, now):
                    return entry.raw
                self.discard(entry.raw)
                continue
            if must_open:
                try:
                    return self._open(owner)
                except TooManyConnections as exc:
                    # The server is full: wait for one of our own connections to come back
                    # (a release wakes us) or a slot to free up, up to the pool's timeout.
                    if deadline is None:
                        deadline = time.monotonic() + wait
                    full_waits += 1
                    if not self._wait_after_full(deadline, full_waits):
                        raise TooManyConnections(
                            f"{exc} (waited {wait:g} s, DB_POOL_TIMEOUT, with "
                            f"{self.stats().in_use} of this pool's connections in use)"
                        ) from None

    def putconn(self, raw: Any, *, reusable: bool = True) -> None:
        """Return a connection; it is closed instead when it is broken, too old or surplus."""
        if self._generation != _fork_generation[0]:
            return
        close_it = False
        lock = self._lock
        lock.acquire()  # as in getconn()
        try:
            entry = self._in_use.pop(id(raw), None)
            if entry is None:
                return
            now = _monotonic()
            entry.owner = None
            entry.last_used = now
            if (
                not reusable
                or self._closed
                or raw.closed
                or len(self._idle) >= self.max_idle
                or now - entry.created > self.max_lifetime
            ):
                close_it = True
            else:
                self._idle.append(entry)
            if self._waiting:
                self._cond.notify()
        finally:
            lock.release()
        if close_it:
            self._close_raw(raw)

    def discard(self, raw: Any) -> None:
        """Close a checked-out connection and free its slot (it was found broken)."""
        if self._generation != _fork_generation[0]:
            return
        with self._lock:
            entry = self._in_use.pop(id(raw), None)
            self._cond.notify()
        if entry is not None:
            self._close_raw(raw)

    def is_checked_out(self, raw: Any) -> bool:
        """Return True when ``raw`` is currently checked out of this pool."""
        return id(raw) in self._in_use

    def close_idle(self) -> int:
        """Close every idle connection; return how many."""
        with self._lock:
            idle, self._idle = list(self._idle), deque()
        for entry in idle:
            self._close_raw(entry.raw)
        return len(idle)

    def prune(self) -> int:
        """Close idle connections past their idle time or lifetime; return how many."""
        now = time.monotonic()
        with self._lock:
            keep: deque[_Entry] = deque()
            gone: list[_Entry] = []
            for entry in self._idle:
                (gone if self._expired(entry, now) else keep).append(entry)
            self._idle = keep
            dead: list[Any] = []
            self._reclaim_dead_owners_locked(dead)
            if gone or dead:
                self._cond.notify_all()
        for entry in gone:
            self._close_raw(entry.raw)
        self._close_many_later(dead)
        return len(gone) + len(dead)

    def close(self) -> None:
        """Close every connection, idle and checked out, and refuse further checkouts."""
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle), deque()
            in_use, self._in_use = list(self._in_use.values()), {}
            self._cond.notify_all()
        self._reaper_stop.set()
        for entry in idle + in_use:
            self._close_raw(entry.raw)
        # Only now: closing a connection whose statement hangs on a frozen server waits
        # for that statement, which the watchdog ends.
        self.watchdog.stop()

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> PoolStats:
        """Return the current counters."""
        with self._lock:
            return PoolStats(
                open=self._open_count(),
                idle=len(self._idle),
                in_use=len(self._in_use),
                max_open=self.max_open,
                max_idle=self.max_idle,
                waiting=self._waiting,
                opened_total=self._opened_total,
                closed_total=self._closed_total,
                reclaimed_total=self._reclaimed_total,
                timeouts_total=self._timeouts_total,
            )

    # -- internals --------------------------------------------------------

    def _open_count(self) -> int:
        return len(self._idle) + len(self._in_use) + self._opening

    def _expired(self, entry: _Entry, now: float) -> bool:
        return (
            entry.raw.closed
            or now - entry.created > self.max_lifetime
            or now - entry.last_used > self.max_idle_time
        )

    def _usable(self, entry: _Entry, now: float) -> bool:
        raw = entry.raw
        if raw.closed:
            return False
        if _socket_readable(entry) or now - entry.last_used > self.validate_after:
            return self._ping(raw)
        return True

    def _ping(self, raw: Any) -> bool:
        inflight = self.inflight
        try:
            cur = raw.cursor()
            inflight[raw] = time.monotonic()  # a frozen server must not hang a checkout
            try:
                cur.execute("SELECT 1")
                cur.fetchone()
            finally:
                inflight.pop(raw, None)
                cur.close()
        except Exception:
            logger.debug("pool %s: a pooled connection failed its check; replacing it", self.name)
            return False
        return True

    def _open(self, owner: threading.Thread) -> Any:
        try:
            raw = self._connect()
        except BaseException:
            with self._lock:
                self._opening -= 1
                self._cond.notify()
            raise
        now = time.monotonic()
        with self._lock:
            self._opening -= 1
            self._opened_total += 1
            if self._closed:
                closed = True
            else:
                closed = False
                self._in_use[id(raw)] = _Entry(raw, now, now, owner, now, _poller(raw))
        if closed:
            self._close_raw(raw)
            raise PoolClosed(f"pool {self.name!r} is closed; set the package up again")
        self._start_reaper()
        self.watchdog.start()
        logger.debug("pool %s: opened a connection (%d open)", self.name, self._open_count())
        return raw

    def _wait_after_full(self, deadline: float, attempt: int) -> bool:
        """Wait after the server refused a connection as full; False when time is up.

        Returns early when a connection of the pool is released (``putconn``
        and ``discard`` notify waiters); otherwise after a back-off that
        doubles from 50 ms to 1 s, so waiting threads do not hammer a full
        server with connects (each one costs it a process).
        """
        with self._lock:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                if remaining <= 0:
                    self._timeouts_total += 1
                return False
            self._waiting += 1
            try:
                self._cond.wait(min(remaining, 0.05 * 2 ** min(attempt - 1, 5)))
            finally:
                self._waiting -= 1
        return True

    def _reclaim_dead_owners_locked(self, to_close: list[Any]) -> None:
        now = time.monotonic()
        for key, entry in list(self._in_use.items()):
            if self._leaked(entry, now):
                del self._in_use[key]
                to_close.append(entry.raw)
                self._reclaimed_total += 1
                logger.warning(
                    "pool %s: reclaimed a connection that thread %r held for more than "
                    "DB_MAX_CHECKOUT_TIME (%g s) without running a statement; return "
                    "connections with db.checkout() or db.close()",
                    self.name,
                    entry.owner.name if entry.owner is not None else "?",
                    self.max_checkout_time,
                )
                continue
            if entry.owner is not None and not entry.owner.is_alive():
                del self._in_use[key]
                to_close.append(entry.raw)
                self._reclaimed_total += 1
                logger.warning(
                    "pool %s: reclaimed a connection checked out by thread %r, which ended "
                    "without returning it",
                    self.name,
                    entry.owner.name,
                )

    def _leaked(self, entry: _Entry, now: float) -> bool:
        """Return True for a checkout held past ``max_checkout_time`` with no statement running."""
        if self.max_checkout_time is None or now - entry.checked_out <= self.max_checkout_time:
            return False
        status = getattr(entry.raw, "get_transaction_status", None)
        try:
            # 1 = ACTIVE in psycopg2 (a statement is running): never pull a connection mid-query.
            return status is None or int(status()) != 1
        except Exception:
            return True

    def _close_many_later(self, raws: list[Any]) -> None:
        for raw in raws:
            self._close_raw(raw)

    def _close_raw(self, raw: Any) -> None:
        with self._lock:
            self._closed_total += 1
        try:
            raw.close()
        except Exception:
            logger.debug("pool %s: error closing a connection", self.name, exc_info=True)

    def _after_fork(self) -> None:
        # The parent still uses these sockets: closing them here would end its sessions.
        self._orphans.extend(e.raw for e in self._idle)
        self._orphans.extend(e.raw for e in self._in_use.values())
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._idle = deque()
        self._in_use = {}
        self._opening = 0
        self._waiting = 0
        self._reaper = None
        self._reaper_stop = threading.Event()
        self.watchdog.after_fork()
        self._generation = _fork_generation[0]

    def _start_reaper(self) -> None:
        if self._reaper is not None and self._reaper.is_alive():
            return
        shortest = min(self.max_idle_time, self.max_lifetime, self.max_checkout_time or 60.0, 60.0)
        interval = max(0.5, shortest / 2)
        ref = weakref.ref(self)
        stop = self._reaper_stop

        def run() -> None:
            while not stop.wait(interval):
                pool = ref()
                if pool is None or pool._closed:
                    return
                pool.prune()
                del pool

        thread = threading.Thread(target=run, name=f"{self.name}-pool-reaper", daemon=True)
        with self._lock:
            if self._reaper is not None and self._reaper.is_alive():
                return
            self._reaper = thread
        thread.start()
