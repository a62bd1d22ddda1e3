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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import psycopg2
from peewee import DatabaseError, InterfaceError, OperationalError, ProgrammingError

from ._connection import PooledDatabase
from ._watchdog import watching
from .config import Settings, load_settings
from .errors import ConnectionLost, DatabaseUnavailable
from .pool import ConnectionPool

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


class Database(PooledDatabase):
    """A ``PostgresqlExtDatabase`` whose connections come from a :class:`ConnectionPool`.

    The pool, the per-thread connection and the watchdog come from
    :class:`~datalayer._connection.PooledDatabase`; this class adds the setup,
    transactions, recovery from lost connections and read replicas.
    """

    _replicas: ReplicaSet | None

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
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
        assert self._replicas is not None
        self._replicas.commit_with_position(self._state.conn)

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
            return replicas.read_call(database, fn, args, kwargs, what)  # type: ignore[no-any-return]

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

