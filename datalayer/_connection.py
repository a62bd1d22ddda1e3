"""The pooled connection layer that :class:`datalayer.db.Database` builds on.

:class:`PooledDatabase` is a ``PostgresqlExtDatabase`` whose connections come
from a :class:`~datalayer.pool.ConnectionPool`: checking one out and back in,
dropping a dead one, registering a statement with the pool's watchdog, and the
witnesses a transaction leaves for a lost ``COMMIT``.  The statement layer
(:mod:`datalayer._sql`), the outcome of lost writes (:mod:`datalayer._outcome`)
and the read replicas (:mod:`datalayer.replicas`) need only this much of a
database, so they import this module, never :mod:`datalayer.db`, which puts
them together (transactions, recovery from lost connections, replica routing).

The replica set is seen here only through :class:`ReplicaHooks`: the few calls
the connection layer makes on it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import psycopg2
from peewee import OperationalError
from playhouse.postgres_ext import PostgresqlExtDatabase

from ._watchdog import watching
from .errors import DatabaseUnavailable
from .pool import ConnectionPool, PoolStats, connect_failure

if TYPE_CHECKING:
    from typing import Self

    from .config import Settings

__all__ = ["PooledDatabase", "ReplicaHooks", "dialect"]


_UUID = uuid.UUID
_new_object = object.__new__
_set_int = vars(uuid.UUID)["int"].__set__  # the slots' descriptors of UUID
_set_safe = vars(uuid.UUID)["is_safe"].__set__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def _cast_uuid(data: str | None, cursor: Any) -> uuid.UUID | None:
    """Return the ``uuid.UUID`` of a ``uuid`` column's text, as ``uuid.UUID(data)`` would.

    The server writes a ``uuid`` in one form only (36 characters: lower-case hex in
    groups of 8-4-4-4-12), so the parsing ``uuid.UUID()`` does for any form it accepts
    (braces, ``urn:uuid:``, no hyphens; half the client work of reading a token's ids) is
    skipped: the 32 digits are read as one number, and the instance made as
    ``UUID.__init__`` makes it.
    """
    if data is None:
        return None
    value = _new_object(_UUID)
    _set_int(value, int(data.replace("-", ""), 16))
    _set_safe(value, _SAFE_UNKNOWN)
    return value


# For the package's connections only (psycopg2 asks a connection's casters first); peewee
# registers psycopg2.extras' UUID caster for every connection of the process.
_UUID_TYPE = psycopg2.extensions.new_type((2950,), "UUID", _cast_uuid)


class _Connection(psycopg2.extensions.connection):  # type: ignore[misc]
    """A psycopg2 connection that remembers its server process id.

    libpq forgets it once the connection breaks, which is when
    :mod:`datalayer._outcome` needs it: to wait for that server process to
    finish the statement whose reply was lost.
    """

    server_pid: int = 0
    txn_wrote: bool = False  # with replicas: the open transaction ran a statement that may write
    # The names of the server-side prepared statements made on it (datalayer._sql);
    # None until the first one is asked for, False behind a pooler (never prepare).
    prepared: set[str] | bool | None = None
    # The cursor datalayer._sql runs the package's statements with (made on first use).
    statement_cursor: Any = None


class ReplicaHooks(Protocol):
    """What the connection layer asks of a :class:`datalayer.replicas.ReplicaSet`."""

    _local: Any  # the caller's routing state (a routed read names its replica's pool)

    def adopt(self, raw: Any) -> None:
        """Make a new primary connection note its writes (for read-your-writes)."""

    def release(self, db: PooledDatabase, raw: Any, why: str) -> bool:
        """Return a replica's connection held by the thread; True if ``raw`` was one."""

    def lost(self, db: PooledDatabase, raw: Any, exc: BaseException | None) -> bool:
        """Handle a failed replica connection; True if ``raw`` was one."""

    def committed(self, lsn_text: str | None) -> None:
        """Note the WAL position of this caller's last commit (None: pending)."""

    def close(self) -> None:
        """Close every replica's pool."""


class PooledDatabase(PostgresqlExtDatabase):  # type: ignore[misc]
    """A ``PostgresqlExtDatabase`` whose connections come from a :class:`ConnectionPool`."""

    def __init__(self, **kwargs: Any) -> None:
        self._settings: Settings | None = None
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._inflight: dict[Any, float] = {}  # the pool's watchdog registrations
        self._replicas: ReplicaHooks | None = None  # only with DB_REPLICA_URLS
        super().__init__(None, **kwargs)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise DatabaseUnavailable(
                "the database is not set up; call datalayer.connect() first"
            )
        return self._settings

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise DatabaseUnavailable(
                "the database is not set up; call datalayer.connect() first"
            )
        return self._pool

    def pool_stats(self) -> PoolStats:
        """Return the pool's counters (open, idle, in use, waiting, totals)."""
        return self.pool.stats()

    def __repr__(self) -> str:
        if self._settings is None:
            return "<datalayer.Database (not set up)>"
        return f"<datalayer.Database {self._settings.describe()}>"

    def _open_raw(self) -> Any:
        settings = self.settings
        try:
            raw = psycopg2.connect(**settings.connect_kwargs(), connection_factory=_Connection)
        except psycopg2.Error as exc:
            raise connect_failure(settings.describe(), exc) from None
        raw.autocommit = True
        raw.server_pid = raw.info.backend_pid
        psycopg2.extensions.register_type(_UUID_TYPE, raw)
        replicas = self._replicas
        if replicas is not None:  # note the writes, for read-your-writes
            replicas.adopt(raw)
        if self.server_version is None:  # type: ignore[has-type]
            self.server_version = raw.server_version
        return raw

    # -- connection state (per thread, no global lock) ---------------------

    def connect(self, reuse_if_open: bool = False) -> bool:
        state = self._state
        if not state.closed:
            if reuse_if_open:
                return False
            raise OperationalError("Connection already opened.")
        if self._pool is None:
            raise DatabaseUnavailable(
                "the database is not set up; call datalayer.connect() first"
            )
        raw = self._pool.getconn()
        state.reset()
        state.set_connection(raw)
        state.fresh = True
        return True

    def close(self) -> bool:
        state = self._state
        if state.closed:
            return False
        if self.in_transaction():
            raise OperationalError("Attempting to close database while transaction is open.")
        raw = state.conn
        replicas = self._replicas
        if replicas is not None and replicas.release(self, raw, "db.close() in the block"):
            return True
        state.reset()
        pool = self._pool
        if pool is not None and raw is not None:
            pool.putconn(raw, reusable=_reusable(raw, pool.inflight))
        return True

    def _drop_connection(self) -> None:
        """Forget this thread's (dead) connection and free its pool slot."""
        state = self._state
        raw = state.conn
        replicas = self._replicas
        if replicas is not None and replicas.lost(self, raw, None):
            return  # a replica's connection: the read goes on on the primary
        state.reset()
        if raw is not None and self._pool is not None:
            self._pool.discard(raw)

    def _live_connection(self) -> Any:
        """Return this thread's connection, checking one out (or replacing a dead one) first."""
        state = self._state
        if state.closed:
            self.connect()
        elif state.conn.closed and not state.transactions:
            # The driver knows this connection is gone and nothing is in flight.
            self._drop_connection()
            self.connect()
        return state.conn

    def cursor(self, named_cursor: Any = None) -> Any:
        conn = self._live_connection()
        if named_cursor:
            return self._adapter.server_side_cursor(conn)
        return conn.cursor()

    def _watched(self, run: Callable[[], Any]) -> Any:
        """Call ``run`` with this thread's connection registered with the watchdog."""
        raw = self._live_connection()
        inflight = self._inflight
        inflight[raw] = time.monotonic()
        try:
            return run()
        finally:
            inflight.pop(raw, None)

    def _timed_out(self, raw: Any) -> float | None:
        """Return the client timeout ``raw`` exceeded if the watchdog closed it, else None."""
        pool = self._pool
        return None if pool is None else pool.watchdog.timed_out(raw)

    def witness(self, stmt: Any, values: Any) -> None:
        """Remember a read that finds a write of the open transaction, for a lost COMMIT.

        ``stmt`` (a :class:`datalayer._sql.Statement`) with ``values`` returns a row
        only once a row that only this transaction wrote is visible (the hash of a
        token it issued, say).  When the reply to COMMIT is lost, the server
        process is waited for and the read run on another connection: a row
        means the transaction committed (it commits whole), and ``commit()``
        returns; no row proves nothing (a savepoint may have been rolled back),
        so :class:`~datalayer.errors.CommitUnknown` is raised as without one.
        """
        witnesses = getattr(self._state, "witnesses", None)
        if witnesses is None:
            witnesses = self._state.witnesses = []
        if len(witnesses) < 3:  # a few are plenty
            witnesses.append((stmt, values))

    # -- helpers for scripts and workers ------------------------------------

    @contextlib.contextmanager
    def checkout(self) -> Iterator[Self]:
        """Check a connection out for the block and always return it.

        Nested use reuses the connection already held by the thread.  An open
        transaction left in the block is rolled back before the connection
        goes back to the pool.
        """
        if not self._state.closed:
            yield self
            return
        self.connect()
        try:
            yield self
        finally:
            state = self._state
            if state.transactions:
                del state.transactions[:]
                with contextlib.suppress(Exception), watching(self._inflight, state.conn):
                    self._adapter.rollback(state.conn)
            self.close()

    def close_pool(self) -> None:
        """Close every pooled connection (idle and checked out)."""
        pool, self._pool = self._pool, None
        replicas, self._replicas = self._replicas, None
        with contextlib.suppress(Exception):
            self._state.reset()
        if replicas is not None:
            replicas.close()
        if pool is not None:
            pool.close()

    close_all = close_pool


def _reusable(raw: Any, inflight: dict[Any, float]) -> bool:
    if raw.closed:
        return False
    status = raw.get_transaction_status()
    if status == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return True
    if status == psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN:
        return False
    try:
        with watching(inflight, raw):
            raw.cursor().execute("ROLLBACK")
    except Exception:
        return False
    return True


dialect = PooledDatabase()
"""The SQL dialect statements are compiled with (the same for every database)."""
