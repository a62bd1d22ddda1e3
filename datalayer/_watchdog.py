"""Give up on a statement the server never answers: a client-side watchdog.

Why it is needed: a server (or one backend) that is frozen — SIGSTOP, a
stalled VM or storage, a half-dead network path that still ACKs — leaves the
client's thread in libpq's ``recv`` for ever, and nothing else fires:
``statement_timeout`` is enforced by the frozen backend itself, TCP
keepalives and ``tcp_user_timeout`` see a kernel that still ACKs, and
``conn.cancel()`` goes to the postmaster, frozen too.

How it works, and what it costs:

* the code that runs a statement registers its connection in
  :attr:`Watchdog.inflight` (``inflight[raw] = time.monotonic()``) and removes
  it afterwards: a dict set and delete per statement, nothing else;
* one daemon thread per pool, started with the pool's first connection (as
  the pool's reaper is), scans that dict about every 0.5 s; a connection in
  flight longer than its limit has its socket shut down —
  ``shutdown(SHUT_RDWR)`` on a *duplicate* of its descriptor: shutdown acts on
  the socket, not the descriptor, so the thread blocked in ``recv`` wakes with
  EOF, libpq marks the connection bad and psycopg2 raises
  ``OperationalError`` with ``conn.closed`` set.  The original descriptor is
  never closed from here: libpq in the owning thread still uses it, and a
  closed number could be handed to another file before libpq is done with it;
* the connection is remembered as timed out (:meth:`Watchdog.timed_out`), so
  the recovery rules of :mod:`datalayer.db` raise
  :class:`~datalayer.errors.ConnectionLost` and drop it instead of re-running
  the statement: it was sent, and may still complete if the server resumes.

Migrations lift the limit for their connection (:meth:`Watchdog.limit`): they
run with timeouts of their own.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["Watchdog", "lost_message", "watching"]

SCAN_INTERVAL = 0.5
"""Seconds between two scans (shorter for limits under 2 s, so they stay about right)."""


class watching:  # lower case: used like a function, ``with watching(inflight, raw):``
    """Register ``raw`` as in flight for the block (for paths that are not per-operation)."""

    __slots__ = ("inflight", "raw")

    def __init__(self, inflight: dict[Any, float], raw: Any) -> None:
        self.inflight = inflight
        self.raw = raw

    def __enter__(self) -> None:
        if self.raw is not None:
            self.inflight[self.raw] = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.inflight.pop(self.raw, None)


class Watchdog:
    """Shut down the connections whose statement has been in flight longer than ``timeout``.

    ``timeout`` ``None`` turns it off: registrations still happen (they cost
    next to nothing) but no thread runs.
    """

    def __init__(self, timeout: float | None, *, name: str = "datalayer",
                 interval: float = SCAN_INTERVAL) -> None:
        self.timeout = timeout
        self.name = name
        self.interval = interval if timeout is None else max(0.05, min(interval, timeout / 4))
        self.inflight: dict[Any, float] = {}
        self.fired_total = 0
        self._limits: dict[Any, float | None] = {}
        self._timed_out: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- used by the pool ---------------------------------------------------

    def start(self) -> None:
        """Start the scanning thread unless it runs or the watchdog is off."""
        if self.timeout is None or (self._thread is not None and self._thread.is_alive()):
            return
        ref = weakref.ref(self)
        stop, interval = self._stop, self.interval

        def run() -> None:
            while not stop.wait(interval):
                watchdog = ref()
                if watchdog is None:
                    return
                try:
                    watchdog.scan()
                except Exception:  # a bug here must not end the thread that bounds every wait
                    logger.exception("pool %s: the watchdog's scan failed", watchdog.name)
                del watchdog

        thread = threading.Thread(target=run, name=f"{self.name}-pool-watchdog", daemon=True)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Stop the scanning thread (the pool was closed)."""
        self._stop.set()

    def after_fork(self) -> None:
        """Forget the parent's registrations in a forked child.

        The child shares the parent's sockets: shutting one down here would
        break the parent's connection.  (Threads do not survive a fork, so
        neither does the scanning thread; the child starts its own.)
        """
        self.inflight.clear()
        self._limits.clear()
        self._timed_out = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()

    # -- used by the database -------------------------------------------------

    @contextmanager
    def limit(self, raw: Any, seconds: float | None) -> Iterator[None]:
        """Let statements on ``raw`` run ``seconds`` (``None``: no limit) for the block."""
        missing = object()
        old = self._limits.get(raw, missing)
        self._limits[raw] = seconds
        try:
            yield
        finally:
            if old is missing:
                self._limits.pop(raw, None)
            else:
                self._limits[raw] = old  # type: ignore[assignment]

    def timed_out(self, raw: Any) -> float | None:
        """Return the limit ``raw`` exceeded if the watchdog shut it down, else None."""
        if raw is None:
            return None
        with self._lock:
            return self._timed_out.get(raw)

    # -- the scan ---------------------------------------------------------------

    def scan(self, now: float | None = None) -> int:
        """Shut down every connection in flight past its limit; return how many."""
        if now is None:
            now = time.monotonic()
        default, limits = self.timeout, self._limits
        fired = 0
        # dict.copy() is one C call under the GIL: a consistent snapshot while other
        # threads register and unregister.
        for raw, started in self.inflight.copy().items():
            limit = limits.get(raw, default) if limits else default
            if limit is None or now - started < limit:
                continue
            if self._shut_down(raw, started, limit):
                fired += 1
        return fired

    def _shut_down(self, raw: Any, started: float, limit: float) -> bool:
        with self._lock:
            if raw in self._timed_out:
                return False  # done already; its owner has not woken up yet
        try:
            fd = raw.fileno()
            dup = os.dup(fd)
        except Exception:  # closed meanwhile: nothing to do
            return False
        try:
            # The same registration still there means the statement has been in flight
            # the whole time, so the connection was not closed and ``dup`` is its socket,
            # not a descriptor number reused by another file.
            if self.inflight.get(raw) is not started:
                return False
            with self._lock:
                self._timed_out[raw] = limit  # before the shutdown: the owner looks on waking
            sock = socket.socket(fileno=dup)
            dup = -1  # the socket object owns it now
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected any more: the owner has its error already
            finally:
                sock.close()  # closes the duplicate only
        except OSError:
            logger.debug("pool %s: could not shut a connection's socket down", self.name,
                         exc_info=True)
            return False
        finally:
            if dup >= 0:
                os.close(dup)
        self.fired_total += 1
        logger.warning(
            "pool %s: no answer from the server within %g s (DB_CLIENT_TIMEOUT) while a "
            "statement was in flight; closed its connection so the caller gets ConnectionLost "
            "instead of waiting for ever (a frozen server or a network partition?)",
            self.name,
            limit,
        )
        return True


def lost_message(where: str, limit: float) -> str:
    """Return the ConnectionLost message for a statement the watchdog gave up on."""
    return (
        f"no answer from {where} within {limit:g} s (DB_CLIENT_TIMEOUT) while a statement was "
        "in flight, so the connection was closed (a frozen server or a network partition?). "
        "Inside a transaction nothing was committed; a statement outside one may still "
        "complete if the server resumes. Retry the unit of work once the server answers "
        "(datalayer.retry does so)"
    )
