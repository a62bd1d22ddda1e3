"""Re-run whole units of work when the connection is lost or the server asks for it.

A *unit of work* is a function that does everything it needs from the start:
reads, writes and the decisions in between.  :func:`run` calls it again when

* the connection was lost (:class:`~datalayer.errors.ConnectionLost`, peewee's
  ``OperationalError`` / ``InterfaceError`` with a psycopg2 connection error
  anywhere in the ``orig`` / ``__cause__`` / ``__context__`` chain, or a
  failed connect while the server restarts), or
* the server rolled the transaction back on purpose: serialization failure
  (SQLSTATE ``40001``) or deadlock (``40P01``),

waiting a bounded, exponentially growing, jittered delay between attempts and
giving up after ``attempts`` tries or ``deadline`` seconds, whichever comes
first; the last error is then raised unchanged (with a note saying how many
attempts were made).  :func:`run_transaction` (or ``@retrying(transaction=True)``)
runs the unit inside ``db.atomic()`` on a checkout of its own for each attempt.

Half a transaction is never retried: called while the thread is inside a
transaction, both refuse with :class:`RetryInTransactionError` (a retry
there would re-run only the tail of the caller's work after the server had
thrown the head away).  A COMMIT whose outcome is unknown
(:class:`~datalayer.errors.CommitUnknown`) is not retried either: the unit may
have committed, and running it again could write it twice.

Statement, lock and idle-in-transaction timeouts (SQLSTATE 57014, 55P03,
25P03) are *not* retried: they mean the unit is too slow or blocked, and
running it again would only add load.  Neither are :class:`PoolTimeout`,
:class:`TooManyConnections` (the pool has waited DB_POOL_TIMEOUT already; more
connects would only add to the server's load) and :class:`PoolClosed`.

The default policy (:data:`DEFAULT_POLICY`: up to 40 attempts within 15 s,
pauses doubling from 50 ms to 1 s, each at least half its ceiling) rides out
a server restart of several seconds; a unit that meets a server that stays
down fails after about 15 s.

Attempts are logged at DEBUG on the ``datalayer.retry`` logger with the error
type and SQLSTATE only, never the statement or its parameters.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import psycopg2

from .errors import (
    CommitUnknown,
    ConnectionLost,
    DatalayerError,
    PoolClosed,
    PoolTimeout,
    TooManyConnections,
)

if TYPE_CHECKING:
    from .db import Database

logger = logging.getLogger(__name__)

__all__ = [
    "RETRYABLE_SQLSTATES",
    "RetryInTransactionError",
    "RetryPolicy",
    "is_retryable",
    "retrying",
    "run",
    "run_transaction",
]

P = ParamSpec("P")
T = TypeVar("T")

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
"""Serialization failure and deadlock: the server rolled back; running again may succeed."""

# SQLSTATEs that mean the connection itself is gone: class 08 (connection exception),
# admin / crash shutdown and "cannot connect now" (the server is starting or stopping).
_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


class RetryInTransactionError(DatalayerError, RuntimeError):
    """A retry was asked for inside an open transaction; retry the whole transaction instead."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    The delay before attempt ``n + 1`` is a random value between
    ``base_delay * 2**(n-1) * (1 - jitter)`` and ``base_delay * 2**(n-1)``,
    capped at ``max_delay`` and at the time left before ``deadline``.
    """

    attempts: int = 40
    """Tries in all, the first included (1: no retry)."""
    deadline: float = 15.0
    """Seconds from the first attempt after which no new attempt starts.

    The default rides out a server restart or fail-over of several seconds (see
    the figures in docs/operations/retry.md); with ``attempts`` high it is the bound that counts."""
    base_delay: float = 0.05
    max_delay: float = 1.0
    jitter: float = 0.5
    """0: no randomness; 1: "full jitter" (anything from 0 to the delay).  The default
    keeps each pause at least half its ceiling, so that the pauses add up to the
    outage instead of many near-zero retries spent in its first second."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.deadline <= 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("deadline must be > 0 and delays >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, attempt: int) -> float:
        """Return the pause after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return float(ceiling * (1.0 - self.jitter * random.random()))


DEFAULT_POLICY = RetryPolicy()


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and every exception reachable through orig / __cause__ / __context__."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        for nxt in (getattr(cur, "orig", None), cur.__cause__, cur.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _sqlstate(exc: BaseException) -> str | None:
    for e in _chain(exc):
        code = getattr(e, "pgcode", None)
        if isinstance(code, str) and code:
            return code
    return None


def is_retryable(exc: BaseException) -> bool:
    """Return True when ``exc`` means the whole unit of work may simply be run again."""
    chain = list(_chain(exc))
    if any(isinstance(e, (CommitUnknown, PoolTimeout, PoolClosed, TooManyConnections))
           for e in chain):
        return False
    for e in chain:
        if isinstance(e, ConnectionLost):
            return True
        if isinstance(e, psycopg2.Error):
            code = e.pgcode
            if code in RETRYABLE_SQLSTATES:
                return True
            if code is None:
                # libpq's own errors carry no SQLSTATE: "server closed the connection
                # unexpectedly", "connection already closed", "could not connect",
                # "timeout expired" (connect_timeout).
                if isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)):
                    return True
            elif code.startswith("08") or code in _CONNECTION_SQLSTATES:
                return True
    return False


def _describe(exc: BaseException) -> str:
    """Name an error by type and SQLSTATE only (messages may quote data)."""
    code = _sqlstate(exc)
    return f"{type(exc).__name__}" + (f" (SQLSTATE {code})" if code else "")


def _database(db: Database | None) -> Database:
    if db is not None:
        return db
    from .db import database

    return database


def _guard(db: Database, what: str) -> None:
    if db.is_closed() or not db.in_transaction():
        return
    raise RetryInTransactionError(
        f"{what} was called inside an open transaction; retrying there would re-run only part "
        "of the work after the server discarded the rest. Call it outside the transaction, "
        "around the whole unit of work (datalayer.retry.run_transaction does both)"
    )


def _policy(policy: RetryPolicy | None, overrides: dict[str, Any]) -> RetryPolicy:
    base = policy or DEFAULT_POLICY
    return replace(base, **overrides) if overrides else base


def _loop(
    attempt_once: Callable[[], T],
    db: Database,
    policy: RetryPolicy,
    name: str,
) -> T:
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = attempt_once()
        except Exception as exc:
            if isinstance(exc, RetryInTransactionError) or not is_retryable(exc):
                raise
            elapsed = time.monotonic() - start
            remaining = policy.deadline - elapsed
            if attempt >= policy.attempts or remaining <= 0:
                logger.debug(
                    "retry %s: attempt %d failed with %s; giving up after %.3f s",
                    name, attempt, _describe(exc), elapsed,
                )
                exc.add_note(
                    f"datalayer.retry: gave up after {attempt} attempt(s) in {elapsed:.2f} s"
                )
                raise
            pause = min(policy.delay(attempt), remaining)
            logger.debug(
                "retry %s: attempt %d failed with %s; retrying in %.3f s",
                name, attempt, _describe(exc), pause,
            )
            # A connection the driver knows is dead is replaced on the next statement
            # (datalayer.db); nothing of this attempt is left open to clean up.
            time.sleep(pause)
            continue
        if attempt > 1:
            logger.debug("retry %s: attempt %d succeeded", name, attempt)
        return result


def _name(fn: Callable[..., Any]) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or "unit")


def run(
    fn: Callable[[], T],
    *,
    db: Database | None = None,
    policy: RetryPolicy | None = None,
    **overrides: Any,
) -> T:
    """Call ``fn()`` until it succeeds, retrying on lost connections, 40001 and 40P01.

    ``fn`` must be a whole unit of work; if it opens a transaction it must
    open and finish it itself.  Each attempt runs inside ``db.checkout()``
    (the thread's current connection when it holds one, a pooled one
    otherwise).  ``overrides`` are :class:`RetryPolicy` fields
    (``attempts=3, deadline=10``).

    :raises RetryInTransactionError: when called inside an open transaction.
    :raises Exception: the last error, when it is not retryable or retries ran out.
    """
    database = _database(db)
    _guard(database, "datalayer.retry.run")
    pol = _policy(policy, overrides)

    def once() -> T:
        with database.checkout():
            return fn()

    return _loop(once, database, pol, _name(fn))


def run_transaction(
    fn: Callable[[], T],
    *,
    db: Database | None = None,
    policy: RetryPolicy | None = None,
    isolation_level: str | None = None,
    **overrides: Any,
) -> T:
    """Call ``fn()`` inside ``db.atomic()`` on a checkout, retrying the whole transaction.

    Each attempt checks a connection out, begins a transaction (with
    ``isolation_level`` such as ``"SERIALIZABLE"`` if given), calls ``fn``
    and commits; on a retryable error the transaction is rolled back (or was
    already, by the server) and the whole of it runs again.

    :raises RetryInTransactionError: when called inside an open transaction.
    :raises Exception: the last error, when it is not retryable or retries ran out.
    """
    database = _database(db)
    _guard(database, "datalayer.retry.run_transaction")
    pol = _policy(policy, overrides)
    atomic_args: dict[str, Any] = {}
    if isolation_level is not None:
        atomic_args["isolation_level"] = isolation_level

    def once() -> T:
        with database.checkout(), database.atomic(**atomic_args):
            return fn()

    return _loop(once, database, pol, _name(fn))


@overload
def retrying(func: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def retrying(
    *,
    transaction: bool = False,
    db: Database | None = None,
    policy: RetryPolicy | None = None,
    isolation_level: str | None = None,
    **overrides: Any,
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


def retrying(
    func: Callable[P, T] | None = None,
    /,
    *,
    transaction: bool = False,
    db: Database | None = None,
    policy: RetryPolicy | None = None,
    isolation_level: str | None = None,
    **overrides: Any,
) -> Callable[P, T] | Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a unit of work so that every call goes through :func:`run`.

    ``@retrying`` or ``@retrying(transaction=True, attempts=3)``; with
    ``transaction=True`` every call is :func:`run_transaction`.
    """
    if isolation_level is not None and not transaction:
        raise ValueError("isolation_level needs transaction=True")
    _policy(policy, overrides)  # validate now, not at the first call

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            unit = functools.partial(fn, *args, **kwargs)
            if transaction:
                return run_transaction(
                    unit, db=db, policy=policy, isolation_level=isolation_level, **overrides
                )
            return run(unit, db=db, policy=policy, **overrides)

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate
