"""Find out what a write whose reply was lost did, instead of guessing.

When the connection breaks after a statement that writes was sent, the
server may have run it and committed it (outside a transaction a statement
commits on its own), or not have received it at all.  Running it again could
do it twice; reporting what the second run says (a duplicate, a reused
token, nothing found) would be a wrong answer for the caller's own write.
So the operations find out:

* :func:`settle` first waits until the server process that had the lost
  connection has exited (it finishes the statement it was running, then
  notices the closed socket): after that, nothing of the lost attempt can
  still change;
* a single-statement write then looks for what only it can have written (the
  token hash or password hash it made): :func:`single_write`;
* a write made of several statements runs in a transaction of its own whose
  id it learns from its first statement; after a lost ``COMMIT`` the server's
  ``txid_status()`` says whether that transaction committed:
  :func:`own_transaction`;
* in a transaction of the caller's, a single-statement write leaves a
  *witness* with the database (:meth:`datalayer._connection.PooledDatabase.witness`): after a
  lost ``COMMIT``, finding it proves the transaction committed (:func:`committed`).

Where it cannot find out (the server does not answer, or the old server
process does not exit within :data:`SETTLE_TIMEOUT`) the operation raises
:class:`~datalayer.errors.CommitUnknown`, which says the outcome is unknown.
Behind a connection pooler (PgBouncer) the server process id is not known;
the wait is then skipped.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._sql import _ONE, Statement, _on_checkout, fetchone
from .errors import CommitUnknown, ConnectionLost, DatabaseUnavailable

if TYPE_CHECKING:
    from ._connection import PooledDatabase

logger = logging.getLogger("datalayer")

__all__ = ["SETTLE_TIMEOUT", "committed", "own_transaction", "settle", "single_write"]

T = TypeVar("T")

SETTLE_TIMEOUT = 5.0
"""Seconds to wait for the server process of a lost connection to exit."""

_ACTIVITY = Statement.text("SELECT state FROM pg_stat_activity WHERE pid = %s", "pid")
_TXID_STATUS = Statement.text("SELECT txid_status(%s)", "xid")
_TXID = Statement.text("SELECT txid_current()")  # for own_transaction's work


def settle(db: PooledDatabase, pid: int | None, timeout: float | None = None) -> bool:
    """Wait until server process ``pid`` has exited; return False if it did not in time.

    With ``pid`` None (behind a pooler) there is nothing to wait for: True.
    """
    if pid is None:
        return True
    limit = SETTLE_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + limit
    pause = 0.005
    while True:
        if _aside(db, _ACTIVITY, {"pid": pid}) is None:
            return True
        if time.monotonic() >= deadline:
            logger.warning(
                "the server process of a lost connection was still there after %g s; the "
                "outcome of its last statement is unknown", limit,
            )
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _aside(db: PooledDatabase, stmt: Statement, values: Mapping[str, Any]) -> Any:
    """Run a read on a connection of its own (the thread's may be dead, in a transaction)."""
    return _on_checkout(db, stmt.sql, stmt.bind(values), _ONE, stmt.read_only)


def committed(db: PooledDatabase, unknown: CommitUnknown,
              witnesses: Sequence[tuple[Statement, Mapping[str, Any]]]) -> bool:
    """After a lost COMMIT: return True when one of ``witnesses`` finds its row.

    See :meth:`datalayer._connection.PooledDatabase.witness`.  False means "not known".
    """
    try:
        if not settle(db, getattr(unknown, "backend_pid", None)):
            return False
        return any(_aside(db, stmt, values) is not None for stmt, values in witnesses)
    except DatabaseUnavailable:
        return False


def single_write(
    db: PooledDatabase,
    attempt: Callable[[], T],
    find: Callable[[], T | None],
    witness: tuple[Statement, Mapping[str, Any]] | None = None,
    lost: CommitUnknown | None = None,
) -> T:
    """Run ``attempt`` (one statement that writes); after a lost reply, ``find`` what it did.

    ``find`` returns the result ``attempt`` would have returned when the lost
    attempt committed, else None; then ``attempt`` runs once more (the lost one
    is known to have changed nothing).  Inside the caller's transaction nothing
    is looked up: a loss there rolled everything back (``ConnectionLost``); but
    ``witness`` (a read that finds what ``attempt`` wrote) is handed to the
    database, so that a lost reply to the caller's COMMIT can be settled.

    ``lost``: the first attempt was made already, outside a transaction, by a
    caller's own fast path, and its reply was lost with this error; it is
    settled as if ``attempt`` had raised it.

    :raises CommitUnknown: when what happened cannot be found out.
    """
    for tries in (1, 2):
        try:
            if lost is not None:
                exc, lost = lost, None
                raise exc
            result = attempt()
            if witness is not None and db.in_transaction():
                db.witness(*witness)
            return result
        except CommitUnknown as exc:
            if db.in_transaction():
                raise
            found = _after_loss(db, exc, find)
            if found is not None:
                logger.info("a write's reply was lost; it had committed")
                return found
            if tries == 2:
                raise
            logger.info("a write's reply was lost; it had not committed: running it again")
    raise AssertionError("unreachable")  # pragma: no cover


def _after_loss(db: PooledDatabase, exc: CommitUnknown, find: Callable[[], T | None]) -> T | None:
    try:
        if not settle(db, getattr(exc, "backend_pid", None)):
            raise exc
        return find()
    except DatabaseUnavailable as second:
        if second is exc:
            raise
        raise exc from second


def own_transaction(db: PooledDatabase, work: Callable[[], T]) -> T:
    """Run ``work`` in a transaction of its own; after a lost COMMIT, ask the server.

    ``work`` runs its statements on the thread's connection.  The transaction's
    id is asked for before ``work`` runs, so that when the reply to ``COMMIT``
    is lost, ``txid_status()`` tells whether it committed (then ``work``'s
    result is returned) or not (then it runs once more).  A connection lost
    before ``COMMIT`` means the server rolled the transaction back: it runs
    once more too.  In the caller's transaction ``work`` simply runs in it.

    :raises CommitUnknown: when whether it committed cannot be found out.
    :raises ConnectionLost: when the connection is lost twice.
    """
    if db.in_transaction():
        return work()
    for tries in (1, 2):
        xid: int | None = None
        result: T
        try:
            with db.checkout(), db.atomic():
                row = fetchone(db, _TXID, {})
                xid = int(row[0])
                result = work()
            return result
        except CommitUnknown as exc:
            if xid is None:  # pragma: no cover - COMMIT is the only unknown step
                raise
            status = _after_loss(db, exc, functools.partial(_status, db, xid))
            if status == "committed":
                logger.info("the reply to COMMIT was lost; the transaction had committed")
                return result
            if status != "aborted" or tries == 2:
                raise
            logger.info("the reply to COMMIT was lost; it had not committed: running it again")
        except ConnectionLost:
            if tries == 2:
                raise
            logger.info("the connection was lost inside a transaction; running it again")
    raise AssertionError("unreachable")  # pragma: no cover


def _status(db: PooledDatabase, xid: int) -> str | None:
    row = fetchone(db, _TXID_STATUS, {"xid": xid})
    return None if row is None or row[0] is None else str(row[0])
