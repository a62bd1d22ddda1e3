"""The pooled peewee database, and one-call setup from the environment.

``database`` is created deferred (``Database(None)``) so that importing the
models never connects; :func:`connect` initialises it from
:class:`~datalayer.config.Settings` (starting the embedded server when no
server is configured).

Recovery from lost connections happens here, at the driver boundary:

* before a statement runs outside a transaction, a connection that the driver
  already knows is closed is swapped for a fresh one (nothing was sent yet);
* the first statement on a connection fresh out of the pool, outside a
  transaction, is re-run once on a new connection when the old one turns out
  dead (the server restarted between the pool's check and the statement) —
  if it only reads (:func:`datalayer._sql.is_read_only`): a write may have
  reached the server and committed before the reply was lost, so it is never
  re-run;
* a write outside a transaction that loses its connection raises
  :class:`~datalayer.errors.CommitUnknown` (it may have committed; not retried
  by :mod:`datalayer.retry`); any other statement that loses its connection
  raises :class:`~datalayer.errors.ConnectionLost` once, saying whether
  anything can have been changed; the connection is dropped so
  the next statement gets a new one (peewee alone raises ``InterfaceError:
  connection already closed`` on every later query of that thread);
* a rollback on a dead connection is a no-op (the server already rolled the
  transaction back), so the error that escapes ``atomic()`` is the real cause;
* every statement (BEGIN, COMMIT and ROLLBACK included) is registered with the
  pool's watchdog (:mod:`datalayer._watchdog`) while in flight: past
  DB_CLIENT_TIMEOUT its connection is shut down and the caller gets
  ``ConnectionLost``, never a re-run (the statement was sent and may still
  complete if the frozen server resumes).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import psycopg2
from peewee import DatabaseError, InterfaceError, OperationalError, ProgrammingError
from playhouse.postgres_ext import PostgresqlExtDatabase

from ._watchdog import watching
from .config import Settings, load_settings
from .errors import ConnectionLost, DatabaseUnavailable
from .pool import ConnectionPool, PoolStats, connect_failure

if TYPE_CHECKING:
    from .replicas import ReplicaSet

logger = logging.getLogger(__name__)

__all__ = ["Database", "close", "connect", "database", "get_database", "replica_read", "resolve"]

P = ParamSpec("P")
T = TypeVar("T")
_NO_SCOPE = contextlib.nullcontext()
_INTRANS = psycopg2.extensions.TRANSACTION_STATUS_INTRANS


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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


class Database(PostgresqlExtDatabase):  # type: ignore[misc]
    """A ``PostgresqlExtDatabase`` whose connections come from a :class:`ConnectionPool`."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._settings: Settings | None = None
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._inflight: dict[Any, float] = {}  # the pool's watchdog registrations
        self._replicas: ReplicaSet | None = None  # only with DB_REPLICA_URLS
        super().__init__(None, **kwargs)
        if settings is not None:
            self.configure(settings)

    # -- setup ------------------------------------------------------------

    def configure(self, settings: Settings) -> Database:
        """(Re)initialise from ``settings``; an old pool is closed first."""
        if settings.host is None:
            raise DatabaseUnavailable(
                "no server configured; call datalayer.connect() to start the embedded one, "
                "or set DATABASE_URL or DB_HOST"
            )
        self.close_pool()
        self._settings = settings
        self.init(settings.dbname)
        self._pool = ConnectionPool(
            self._open_raw,
            max_open=settings.max_open_conns,
            max_idle=settings.max_idle_conns,
            max_lifetime=settings.conn_max_lifetime,
            max_idle_time=settings.conn_max_idle_time,
            timeout=settings.pool_timeout,
            name=settings.application_name,
            max_checkout_time=settings.max_checkout_time,
            client_timeout=settings.effective_client_timeout,
        )
        self._inflight = self._pool.inflight
        if settings.replicas:
            from .replicas import ReplicaSet  # deferred: costs nothing without replicas

            self._replicas = ReplicaSet(self, settings)
        return self

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
        replicas = self._replicas
        if replicas is not None:  # note the writes, for read-your-writes
            from .replicas import PrimaryCursor

            raw.cursor_factory = PrimaryCursor
            raw.replica_set = replicas
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

    def _execute_cursor(self, sql: str, params: Any, **cursor_options: Any) -> Any:
        state = self._state
        parent = super()._execute_cursor

        def run() -> Any:
            return parent(sql, params, **cursor_options)

        try:
            cursor = self._watched(run)
        except ProgrammingError as exc:
            from ._sql import table_missing

            # An undefined table: the migrations are not applied (TableMissing says so).
            missing = table_missing(exc, self.settings.describe()) if self._settings else None
            if missing is None:
                raise
            raise missing from exc
        except (DatabaseError, InterfaceError) as exc:  # a dead socket: also DatabaseError
            raw = state.conn
            replicas = self._replicas
            if replicas is not None and replicas.lost(self, raw, exc):
                # The replica failed a read (it refuses writes before sending): the primary
                # answers it.
                logger.info("a read failed on a replica (%s); running it on the primary",
                            _first_line(exc))
                cursor = self._watched(run)
                state.fresh = False
                return cursor
            if raw is None or not raw.closed:
                raise  # an ordinary error on a live connection (timeout, 40001, ...)
            first = getattr(state, "fresh", False)
            in_txn = bool(state.transactions)
            limit = self._timed_out(raw)
            from . import _sql  # deferred: _sql imports the models, which import this module

            read_only = _sql.is_read_only(sql)
            if not in_txn:
                self._drop_connection()
                if first and limit is None and read_only:
                    logger.info("a pooled connection was dead; re-running the read on a new one")
                    return self._watched(run)
            raise _sql._lost(self, exc, limit, raw, in_txn, read_only) from exc
        state.fresh = False
        return cursor

    @contextlib.contextmanager
    def client_timeout(self, seconds: float | None) -> Iterator[None]:
        """Let statements on this thread's connection run ``seconds`` in the block (None: no limit).

        For work with timeouts of its own, such as migrations (which set their own
        ``statement_timeout``): the pool's DB_CLIENT_TIMEOUT would cut a long
        migration.  Checks a connection out if the thread holds none; applies to
        that connection only.
        """
        with self.pool.watchdog.limit(self._live_connection(), seconds):
            yield

    def begin(self, isolation_level: Any = None) -> None:
        # BEGIN goes through cursor().execute(), not _execute_cursor(): without this, a
        # connection that died while held (server restart) fails atomic() with a bare
        # OperationalError.  BEGIN has no effects, so it is always safe to re-run it once
        # on a new connection.
        state = self._state
        state.witnesses = []  # see witness()
        replicas = self._replicas
        if replicas is not None:
            # A transaction runs on the primary, also inside read_replica().
            replicas.release(self, state.conn, "a transaction began in the block")
        parent = super().begin

        def run() -> None:
            parent(isolation_level)

        try:
            self._watched(run)
        except (OperationalError, InterfaceError):
            raw = state.conn
            if raw is None or not raw.closed or state.transactions:
                raise
            self._drop_connection()
            logger.info("the connection was dead at BEGIN; beginning on a new one")
            self._watched(run)
        if replicas is not None:
            state.conn.txn_wrote = False

    def rollback(self) -> None:
        state = self._state
        if not state.closed and state.conn is not None and state.conn.closed:
            return  # the server rolled back when the connection died
        if self._replicas is not None and state.conn is not None:
            state.conn.txn_wrote = False
        try:
            with watching(self._inflight, state.conn):
                super().rollback()
        except (OperationalError, InterfaceError):
            if state.conn is not None and state.conn.closed:
                return  # died during ROLLBACK (the watchdog closed it): the same
            raise

    def commit(self) -> None:
        state = self._state
        if not state.closed and state.conn is not None and state.conn.closed:
            raise ConnectionLost(
                f"lost the connection to {self.settings.describe()} before COMMIT; the "
                "transaction was rolled back by the server. Retry the unit of work"
            )
        replicas = self._replicas
        wrote = replicas is not None and state.conn is not None and state.conn.txn_wrote
        try:
            with watching(self._inflight, state.conn):
                if wrote and state.conn.get_transaction_status() == _INTRANS:
                    self._commit_with_position()
                else:
                    super().commit()
        except (DatabaseError, InterfaceError) as exc:  # a dead socket: also DatabaseError
            if wrote and replicas is not None:
                replicas.committed(None)  # it may have committed: position pending
            if state.conn is not None and state.conn.closed:
                from . import _outcome, _sql  # deferred, as above

                unknown = _sql.lost_write(
                    f"lost the connection to {self.settings.describe()} during COMMIT; whether "
                    "it committed is unknown. Check before retrying",
                    _sql.backend_pid(state.conn),
                )
                witnesses, state.witnesses = getattr(state, "witnesses", None) or [], []
                if witnesses and _outcome.committed(self, unknown, witnesses):
                    logger.info("the reply to COMMIT was lost; the transaction had committed")
                    return
                raise unknown from exc
            raise
        finally:
            state.witnesses = []

    def _commit_with_position(self) -> None:
        """COMMIT a transaction that wrote and learn its WAL position from the same reply."""
        from peewee import __exception_wrapper__  # type: ignore[attr-defined]

        from .replicas import COMMIT_WITH_POSITION

        raw = self._state.conn
        raw.txn_wrote = False
        with __exception_wrapper__:
            cursor = raw.cursor()
            cursor.execute(COMMIT_WITH_POSITION)
            row = cursor.fetchone()
        assert self._replicas is not None
        self._replicas.committed(row[0] if row else None)

    # -- read replicas ------------------------------------------------------------------

    def read_replica(self) -> contextlib.AbstractContextManager[Any]:
        """Send the block's reads to a healthy replica that has this caller's last write.

        Outside a transaction only: inside one (or for a transaction begun in
        the block) everything runs on the primary.  A write in the block raises
        :class:`~datalayer.errors.ReplicaWriteError`.  A read that fails
        because the replica failed runs again on the primary.  Without
        ``DB_REPLICA_URLS`` the block changes nothing.
        """
        replicas = self._replicas
        if replicas is None:
            return _NO_SCOPE
        return replicas.scope(self, "read_replica()")

    @contextlib.contextmanager
    def read_your_writes(self, position: str) -> Iterator[None]:
        """In the block, this thread's replica reads see at least ``position``.

        ``position`` is a string from :meth:`last_write_position`, made by this
        or another process (a web session, a job's payload).

        :raises ValueError: when ``position`` is not such a string.
        """
        from .replicas import parse_position

        lsn = parse_position(position)
        replicas = self._replicas
        if replicas is None:
            yield
            return
        with replicas.carry(lsn):
            yield

    def last_write_position(self) -> str:
        """Return an opaque string for the last write of this thread (``'0/0'``: none).

        Carry it to another request or process and pass it to
        :meth:`read_your_writes` there.  Without replicas configured here, this
        asks the primary for its current WAL position (one round trip): later
        than the thread's writes, so safe for a process that has replicas.
        """
        replicas = self._replicas
        if replicas is not None:
            return replicas.last_write_position()
        from ._sql import Statement, fetchone
        from .replicas import format_position, parse_lsn

        row = fetchone(self, Statement.text("SELECT pg_current_wal_insert_lsn()"), {})
        return format_position(parse_lsn(row[0]))

    def replica_status(self, *, check: bool = False) -> list[dict[str, Any]]:
        """Each replica (masked URL): in use or why not, lag, replayed position.

        ``check=True`` asks each replica now (one round trip each) instead of
        returning the last known state.
        """
        replicas = self._replicas
        return [] if replicas is None else replicas.status(check=check)

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
    def checkout(self) -> Iterator[Database]:
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


def replica_read(model: Any) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Route a read-only operation (with a ``db=`` keyword) to a replica when configured.

    The database is ``db=`` or ``model``'s.  Without replicas the call goes
    straight through.  With them, it runs on a replica that has this caller's
    last write, else on the primary, and again on the primary if the replica
    fails it.
    """

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        what = fn.__name__

        @functools.wraps(fn)
        def routed(*args: P.args, **kwargs: P.kwargs) -> T:
            db = kwargs.get("db")
            database = db if db is not None else model._meta.database
            replicas = getattr(database, "_replicas", None)
            if replicas is None:
                return fn(*args, **kwargs)
            return replicas.read(database, lambda: fn(*args, **kwargs), what)  # type: ignore[no-any-return]

        return routed

    return decorate


database = Database()
"""The package's database; models are bound to it.  Set it up with :func:`connect`."""


def get_database() -> Database:
    """Return the package's database (set up or not)."""
    return database


def connect(settings: Settings | None = None, **overrides: Any) -> Database:
    """Set the package's database up from ``settings`` (default: the environment).

    With no server configured, the embedded PostgreSQL server is started (extra
    ``embedded``).  Returns the database, ready for ``with db.checkout():``.

    :raises ConfigError: for bad configuration.
    :raises EmbeddedServerError: when the embedded server is needed but cannot start.
    """
    if settings is None:
        settings = load_settings()
    if overrides:
        settings = settings.replace(**overrides)
    settings = resolve(settings)
    return database.configure(settings)


def resolve(settings: Settings) -> Settings:
    """Return ``settings`` pointing at a real server (starting the embedded one if needed)."""
    if not settings.embedded:
        return settings
    from .embedded import ensure_server  # deferred: only when no server is configured

    server = ensure_server(settings.embedded_dir)
    return settings.replace(
        host=server.host, port=server.port, user=server.user, dbname=server.dbname, password=""
    )


def close() -> None:
    """Close the package's pool; :func:`connect` sets it up again."""
    database.close_pool()

