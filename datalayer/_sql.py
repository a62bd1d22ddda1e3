"""Compile hot queries once from the models, and run them on the pooled connection.

Building a peewee query and turning it into SQL costs tens of microseconds of
CPU every time, about as much as the round trip to the server.  The
operations in :mod:`datalayer.auth.users` and :mod:`datalayer.auth.tokens` therefore
build each query once, from the models, with named :class:`Param`
placeholders where the values go, and keep the SQL text.  A call binds its
values and runs the SQL on the thread's pooled connection directly.

What peewee's ``execute_sql`` would add is kept: a checkout per statement
when the thread holds no connection, the recovery rules of
:mod:`datalayer.db` (a *read-only* statement whose connection, fresh out of
the pool, turns out dead is re-run once on a new one; a write is never re-run
here: outside a transaction its loss raises
:class:`~datalayer.errors.CommitUnknown`, since the server may have run and
committed it before the reply was lost, and the operations find out what
happened (:mod:`datalayer._outcome`); inside one,
:class:`~datalayer.errors.ConnectionLost`, as the server rolled it back;
never a re-run after the watchdog gave up on the statement), the watchdog
registration around every statement, and driver errors raised as peewee's
exception types.  What is left out on purpose: peewee's DEBUG log of every
statement *with its parameters*, which would write password and token hashes
to the log.
"""

from __future__ import annotations

import logging
import operator
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

import peewee as pw
import psycopg2
import psycopg2.extensions
from peewee import __exception_wrapper__  # type: ignore[attr-defined]  # not in the stubs

from ._watchdog import lost_message
from .errors import CommitUnknown, ConnectionLost, TableMissing

if TYPE_CHECKING:
    from ._connection import PooledDatabase

logger = logging.getLogger("datalayer")

_STATUS_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
_monotonic = time.monotonic

__all__ = [
    "Param",
    "Statement",
    "copy_in",
    "execute",
    "fetchall",
    "fetchone",
    "is_read_only",
    "lost_write",
]

# Statements that cannot have changed anything start with one of these words...
_READ_HEADS = frozenset({"SELECT", "SHOW", "VALUES", "TABLE"})
# ... and hold none of these (a lock, a sequence, a data-modifying CTE, SELECT INTO,
# a setting, an advisory lock).  A word inside a string literal makes a statement
# count as a write: when in doubt, no re-run.  Compiled on first use: only a
# statement that lost its connection is looked at (milliseconds off a script's start).
_WRITE_WORDS = (
    r"\b(?:insert|update|delete|merge|copy|into|lock|share|nextval|setval|set_config|"
    r"txid_current|pg_current_xact_id|pg_advisory\w*|pg_try_advisory\w*|pg_terminate_backend|"
    r"pg_cancel_backend|pg_notify|lo_\w+|dblink\w*)\b"
)


# _WRITE_WORDS as words (the whole word) and as the starts of words (``pg_advisory\w*``;
# ``lo_\w+`` needs one character more): what the check of ASCII text looks for, without
# compiling the pattern (milliseconds, once per process: a script's first prepared
# statement asks, for its name).
_WRITE_WHOLE = frozenset({
    "insert", "update", "delete", "merge", "copy", "into", "lock", "share", "nextval",
    "setval", "set_config", "txid_current", "pg_current_xact_id", "pg_terminate_backend",
    "pg_cancel_backend", "pg_notify",
})
_WRITE_STARTS = ("pg_advisory", "pg_try_advisory", "dblink", "lo_")
_WORD = re.compile(r"\w+", re.ASCII).findall  # a trivial pattern: cheap to compile


def is_read_only(sql: str) -> bool:
    """Return True when ``sql`` cannot have changed anything, so running it again is safe.

    A plain ``SELECT`` (or ``SHOW``, ``VALUES``, ``TABLE``) that takes no row
    lock and calls none of the well-known functions with effects.  A ``SELECT``
    calling a function of the application's own that writes is not detected:
    run such calls inside a transaction.
    """
    head = sql.lstrip(" \t\r\n(")[:8].split(None, 1)
    if not head or head[0].upper() not in _READ_HEADS:
        return False
    if not sql.isascii():  # case folding beyond ASCII: the pattern decides
        return re.search(_WRITE_WORDS, sql, re.IGNORECASE) is None  # re caches it
    for word in _WORD(sql.lower()):
        if word in _WRITE_WHOLE or (
            word.startswith(_WRITE_STARTS) and (word[:3] != "lo_" or len(word) > 3)
        ):
            return False
    return True


def backend_pid(raw: Any) -> int | None:
    """Return the server process id of ``raw`` (known from its start-up), or None."""
    pid = getattr(raw, "server_pid", 0)  # set by datalayer.db: libpq forgets it on a break
    if not pid:
        try:
            pid = int(raw.info.backend_pid)
        except Exception:  # pragma: no cover - a driver without .info
            return None
    return int(pid) or None


class _Slot:
    """Stands in a compiled query's parameter list for a value given at run time."""

    __slots__ = ("convert", "name")

    def __init__(self, name: str, convert: Callable[[Any], Any] | None) -> None:
        self.name = name
        self.convert = convert


class Param(pw.Node):
    """A named placeholder in a query built once and run many times.

    ``convert`` (e.g. a field's ``db_value``) is applied to the value at run time.
    """

    def __init__(self, name: str, convert: Callable[[Any], Any] | None = None) -> None:
        super().__init__()
        self.name = name
        self.convert = convert

    def __sql__(self, ctx: Any) -> Any:
        # converter=False: the value is a marker; conversion happens when it is bound.
        return ctx.value(_Slot(self.name, self.convert), converter=False)


class Statement:
    """SQL text compiled once from a peewee query, and how to bind its parameters.

    On a direct connection it runs as a server-side prepared statement (see
    :func:`_execute`): ``PREPARE name AS ...`` once per connection, folded into
    the round trip of its first use, then ``EXECUTE name(...)``.
    """

    __slots__ = ("_getter", "_plan", "_texts", "names", "read_only", "sql")

    def __init__(self, query: Any) -> None:
        from ._connection import dialect  # the same for every PooledDatabase

        sql, params = dialect.get_sql_context().sql(query).query()
        self.sql: str = sql
        # Looked at only after a lost connection (None: work it out then, is_read_only()).
        self.read_only: bool | None = None
        plan: list[tuple[str | None, Callable[[Any], Any] | None, Any]] = []
        for p in params:
            if isinstance(p, _Slot):
                plan.append((p.name, p.convert, None))
            else:
                plan.append((None, None, p))  # a constant peewee put in (e.g. a default)
        self._plan = tuple(plan)
        self.names = frozenset(n for n, _, _ in plan if n is not None)
        self._texts: _Prepared | None = None
        self._getter = _getter(self._plan)

    @classmethod
    def text(cls, sql: str, *names: str) -> Statement:
        """Return a statement of hand-written ``sql`` whose ``%s`` take ``names`` in order."""
        stmt = cls.__new__(cls)
        stmt.sql = sql
        stmt.read_only = None
        stmt._plan = tuple((n, None, None) for n in names)
        stmt.names = frozenset(names)
        stmt._texts = None
        stmt._getter = _getter(stmt._plan)
        return stmt

    def bind(self, values: Mapping[str, Any]) -> Sequence[Any]:
        """Return the parameters for ``values`` (keyed by :class:`Param` name), in order."""
        getter = self._getter
        if getter is not None:  # every parameter a plain value: one C call
            params: Sequence[Any] = getter(values)
            return params
        out = []
        for name, convert, const in self._plan:
            if name is None:
                out.append(const)
            elif convert is None:
                out.append(values[name])
            else:
                out.append(convert(values[name]))
        return out

    @property
    def prepared(self) -> _Prepared:
        """Return the texts that prepare and run this statement by name (made once)."""
        texts = self._texts
        if texts is None:
            texts = self._texts = _Prepared(self.sql, _slots(self._plan))
        return texts

    def __repr__(self) -> str:
        return f"<Statement {self.sql[:60]!r}...>"


def _slots(plan: Sequence[tuple[str | None, Any, Any]]) -> list[int]:
    """Return, for each parameter of ``plan``, the number of its ``$n`` in a prepared body.

    A name given twice (unconverted both times) is one ``$n``: its value is rendered once
    into ``EXECUTE name(...)`` instead of once per use.  A constant is a number of its own.
    """
    seen: dict[str, int] = {}
    slots: list[int] = []
    count = 0
    for name, convert, _ in plan:
        if name is not None and convert is None:
            number = seen.get(name)
            if number is None:
                count += 1
                number = seen[name] = count
        else:
            count += 1
            number = count
        slots.append(number)
    return slots


def _getter(plan: Sequence[tuple[str | None, Any, Any]]) -> Callable[[Any], Any] | None:
    """Return a function of the values giving the parameter tuple, when none is converted.

    ``operator.itemgetter`` of the names in order (two or more: one name gives a
    1-tuple around its value); None when a parameter is a constant or converted.
    """
    if not plan or any(name is None or convert is not None for name, convert, _ in plan):
        return None
    if len(plan) == 1:
        name = plan[0][0]
        return lambda values: (values[name],)
    return operator.itemgetter(*(name for name, _, _ in plan))


# -- server-side prepared statements ------------------------------------------------


class _Prepared:
    """The SQL texts that run one statement as a server-side prepared statement.

    The name is derived from the SQL text, so the same statement has the same
    name in every process (``pg_prepared_statements`` shows which ones a
    connection holds): ``datalayer_r_`` and 16 hex digits for a statement that
    only reads, ``datalayer_w_`` for one that may write.  psycopg2 interpolates
    the parameters into ``EXECUTE name(...)`` as it does into any statement; the
    server coerces each to the type it inferred for ``$n`` when it was prepared.
    A value the statement uses twice (a name given twice) is one ``$n`` and is
    rendered once: ``pick`` takes the parameters of the plain text (one per
    ``%s``) to those of ``EXECUTE`` (None when they are the same).
    """

    __slots__ = ("execute", "first", "name", "pick", "renew")

    def __init__(self, sql: str, slots: Sequence[int]) -> None:
        import hashlib  # deferred: only a script that prepares pays for it

        digest = hashlib.sha1(sql.encode(), usedforsecurity=False).hexdigest()
        # r: it only reads (is_read_only), w: it may write; so a cursor that sees only
        # "EXECUTE name(...)" can still tell (the replica routing notes the writes).
        self.name = f"datalayer_{'r' if is_read_only(sql) else 'w'}_{digest[:16]}"
        numbers = iter(slots)
        body = re.sub(_PLACEHOLDER, lambda m: "%" if m[1] == "%" else f"${next(numbers)}", sql)
        count = max(slots, default=0)
        args = f"({', '.join(['%s'] * count)})" if count else ""
        prepare = f"PREPARE {self.name} AS {body.replace('%', '%%')}"
        self.execute = f"EXECUTE {self.name}{args}"
        self.first = f"{prepare};{self.execute}"
        self.renew = f"DEALLOCATE {self.name};{self.first}"
        firsts = [slots.index(n) for n in range(1, count + 1)]
        self.pick: Callable[[Sequence[Any]], Sequence[Any]] | None = None
        if firsts != list(range(len(slots))):
            if count == 1:
                self.pick = lambda params: (params[firsts[0]],)
            else:
                self.pick = operator.itemgetter(*firsts)


_PLACEHOLDER = r"%([s%])"  # peewee's parameter, or a literal percent sign

# SQLSTATEs after which a prepared statement is made again and the call re-run: the
# server answered before running anything.
_GONE = "26000"  # invalid_sql_statement_name: DISCARD ALL, DEALLOCATE, a new session
_STALE = "0A000"  # "cached plan must not change result type": a column changed type
_EXISTS = "42P05"  # duplicate_prepared_statement: an earlier first use failed after PREPARE


def _prepared_names(raw: Any) -> set[str] | None:
    """Return a new set for the names prepared on ``raw``, or None when it must not prepare.

    Asked once per connection, on its first statement that could be prepared
    (one round trip, :func:`datalayer._pooler.pooler_detected`): a connection
    through a pooler such as PgBouncer never prepares (in transaction mode a
    prepared statement stays with a server connection that the next
    transaction may not get).  The answer is kept on the connection.
    """
    from ._pooler import pooler_detected  # deferred: only when a statement may prepare

    if pooler_detected(raw):
        raw.prepared = False
        logger.debug("a connection goes through a pooler: no prepared statements on it")
        return None
    names: set[str] = set()
    raw.prepared = names
    return names


def _execute(cursor: Any, raw: Any, stmt: Statement, params: Sequence[Any]) -> None:
    """Run ``stmt`` on ``cursor`` (of ``raw``, outside a transaction), prepared where it can.

    A statement the server no longer has (``DISCARD ALL``) or whose plan went
    stale (a migration changed the type of a column it returns) is prepared
    again and re-run once: the server refused it before running anything, and
    outside a transaction the refusal left nothing to roll back.
    """
    known: set[str] | bool | None = getattr(raw, "prepared", False)
    if known is None:  # the connection's first: is it direct?
        known = _prepared_names(raw)
    if known is None or known is False or known is True:
        cursor.execute(stmt.sql, params)
        return
    names = known
    texts = stmt._texts or stmt.prepared
    if texts.pick is not None:
        params = texts.pick(params)
    name = texts.name
    if name in names:
        try:
            cursor.execute(texts.execute, params)
        except psycopg2.Error as exc:
            _prepare_again(cursor, raw, texts, names, params, exc)
        return
    _first_use(cursor, raw, texts, names, params, texts.first)


def _prepare_again(cursor: Any, raw: Any, texts: _Prepared, names: set[str],
                   params: Sequence[Any], exc: psycopg2.Error) -> None:
    """After ``EXECUTE`` of a statement prepared on ``raw`` failed with ``exc``: prepare it
    again and re-run it when the server no longer has it or its plan went stale, else
    raise ``exc``.  ``params`` are those of ``EXECUTE`` (after ``texts.pick``)."""
    code = exc.pgcode
    if raw.closed or code not in (_GONE, _STALE):
        raise exc
    names.discard(texts.name)
    logger.debug("prepared statement %s %s; preparing it again", texts.name,
                 "is gone" if code == _GONE else "went stale")
    _first_use(cursor, raw, texts, names, params, texts.first if code == _GONE else texts.renew)


def _first_use(cursor: Any, raw: Any, texts: _Prepared, names: set[str],
               params: Sequence[Any], sql: str) -> None:
    """Run ``sql`` (that prepares the statement and runs it) and note the name as prepared.

    ``params`` are those of ``EXECUTE`` (after ``texts.pick``).
    """
    try:
        cursor.execute(sql, params)
    except psycopg2.Error as exc:
        if raw.closed or exc.pgcode != _EXISTS:
            raise
        cursor.execute(texts.execute, params)  # it was prepared by a first use that failed
    names.add(texts.name)


# -- running ----------------------------------------------------------------


def table_missing(exc: BaseException, where: str) -> TableMissing | None:
    """Return the error to raise for an undefined table (SQLSTATE 42P01), else None."""
    for candidate in (exc, exc.__cause__, exc.__context__, *exc.args):
        if getattr(candidate, "pgcode", None) == "42P01":
            diag = getattr(candidate, "diag", None)
            what = getattr(diag, "message_primary", None) or "a table does not exist"
            return TableMissing(
                f"{what} on {where}: the migrations are not applied there yet; run "
                "`datalayer migrate apply` (or check DATABASE_URL / DB_* point at the "
                "right database)"
            )
    return None


def _reraise(exc: psycopg2.Error, db: PooledDatabase | None = None) -> None:
    """Raise ``exc`` as peewee's matching exception type (as ``execute_sql`` would).

    An undefined table becomes :class:`~datalayer.errors.TableMissing`, which
    says to apply the migrations.
    """
    if db is not None and getattr(exc, "pgcode", None) == "42P01":
        missing = table_missing(exc, db.settings.describe())
        if missing is not None:
            raise missing from exc
    with __exception_wrapper__:
        raise exc


def _cursor(raw: Any) -> Any:
    """Return the cursor the package's statements use on ``raw`` (made once per connection).

    Every caller here reads the result before the connection is used again, so
    one cursor serves them all; making and freeing one per statement is a
    measurable part of a single-row operation's client time.
    """
    cursor = getattr(raw, "statement_cursor", None)
    if cursor is None or cursor.closed:
        cursor = raw.cursor()
        if hasattr(raw, "statement_cursor"):  # a datalayer connection (db._Connection)
            raw.statement_cursor = cursor
    return cursor


def _send(
    db: PooledDatabase,
    sql: str,
    params: Sequence[Any],
    copy_from: IO[str] | None,
    stmt: Statement | None = None,
) -> Any:
    """Execute on the thread's connection, registered with the watchdog while in flight.

    ``stmt`` (whose text is ``sql``) runs prepared when no transaction is open
    (see :func:`_execute`); inside one, a prepared statement gone stale would
    abort the caller's transaction, so the plain text runs.
    """
    raw = db._live_connection()
    cursor = _cursor(raw)
    inflight = db._inflight
    inflight[raw] = _monotonic()
    try:
        if copy_from is not None:
            cursor.copy_expert(sql, copy_from)
        elif stmt is not None and raw.get_transaction_status() == _STATUS_IDLE:
            _execute(cursor, raw, stmt, params)
        else:
            cursor.execute(sql, params)
    finally:
        inflight.pop(raw, None)
    return cursor


def _run(
    db: PooledDatabase,
    sql: str,
    params: Sequence[Any],
    copy_from: IO[str] | None = None,
    read_only: bool | None = None,
    stmt: Statement | None = None,
) -> Any:
    """Execute on the thread's connection; apply the recovery rules of :mod:`datalayer.db`.

    With ``copy_from``, ``sql`` is a ``COPY ... FROM STDIN`` fed from that file.
    """
    state = db._state
    try:
        cursor = _send(db, sql, params, copy_from, stmt)
    except psycopg2.Error as exc:
        raw = state.conn
        if (
            raw is None
            or not raw.closed
            or not isinstance(exc, (psycopg2.DatabaseError, psycopg2.InterfaceError))
        ):
            _reraise(exc, db)
            raise  # pragma: no cover - _reraise always raises
        first = getattr(state, "fresh", False)
        limit = db._timed_out(raw)
        in_transaction = bool(state.transactions)
        if read_only is None:
            read_only = is_read_only(sql)
        if not in_transaction:
            db._drop_connection()
            if first and limit is None and read_only:
                logger.info("a pooled connection was dead; re-running the read on a new one")
                try:
                    cursor = _send(db, sql, params, copy_from, stmt)
                except psycopg2.Error as exc2:
                    _reraise(exc2)
                state.fresh = False
                return cursor
        raise _lost(db, exc, limit, raw, in_transaction, read_only) from exc
    state.fresh = False
    return cursor


def _lost(
    db: PooledDatabase,
    exc: BaseException,
    limit: float | None,
    raw: Any,
    in_transaction: bool,
    read_only: bool,
) -> ConnectionLost:
    """Return the error for a statement whose connection died, telling what may have happened."""
    where = db.settings.describe()
    text = str(exc).strip().splitlines()
    cause = text[0] if text else type(exc).__name__
    if not in_transaction and not read_only:
        message = (
            lost_message(where, limit) if limit is not None else
            f"lost the connection to {where} after a statement that writes was sent outside "
            f"a transaction ({cause}); the server may have run and committed it. Check "
            "before running it again (datalayer.retry does not re-run it)"
        )
        return lost_write(message, backend_pid(raw))
    if limit is not None:  # the watchdog gave up on it
        return ConnectionLost(lost_message(where, limit))
    if in_transaction:
        return ConnectionLost(
            f"lost the connection to {where} while a statement was in flight ({cause}); the "
            "server rolls the open transaction back, so none of it was committed. Retry the "
            "unit of work (datalayer.retry does so)"
        )
    return ConnectionLost(
        f"lost the connection to {where} while a statement was in flight ({cause}); it only "
        "reads, so nothing was changed. Retry it (datalayer.retry does so)"
    )


def lost_write(message: str, pid: int | None) -> CommitUnknown:
    """Return the error for a write whose reply was lost, with its server process id.

    ``backend_pid`` lets :mod:`datalayer._outcome` wait for that server process
    to finish before it looks at what the write did.
    """
    error = CommitUnknown(message)
    error.backend_pid = pid  # type: ignore[attr-defined]
    return error


_ONE, _ALL, _COUNT = 0, 1, 2


def _idle(raw: Any) -> bool:
    """Return True when ``raw`` is alive and outside a transaction (fit to go back)."""
    return not raw.closed and raw.get_transaction_status() == _STATUS_IDLE


def _on_checkout(
    db: PooledDatabase,
    sql: str,
    params: Sequence[Any],
    mode: int,
    read_only: bool | None = None,
    stmt: Statement | None = None,
) -> Any:
    """Run one statement on a connection checked out of the pool for it alone.

    Used when the thread holds no connection: the pool is used directly,
    without peewee's per-thread connection state (a measurable part of a
    single-row operation).  The rules are those of :mod:`datalayer.db`: a
    read whose connection is found dead on this, its first statement, is run
    once more on a new one; a write is not (see :func:`_lost`).  Autocommit:
    the statement is its own transaction.
    """
    replicas = db._replicas
    # A routed read (datalayer.replicas) names its replica's pool for its length.
    pool = (replicas is not None and replicas._local.pool) or db._pool or db.pool
    inflight = pool.inflight
    for attempt in (1, 2):
        raw = pool.getconn()
        try:
            cursor = getattr(raw, "statement_cursor", None)  # _cursor(raw), inline
            if cursor is None or cursor.closed:
                cursor = _cursor(raw)
            inflight[raw] = _monotonic()
            try:
                if stmt is None:
                    cursor.execute(sql, params)
                else:  # idle: fresh out of the pool
                    texts = stmt._texts
                    known = getattr(raw, "prepared", None)
                    if texts is not None and type(known) is set and texts.name in known:
                        args = params if texts.pick is None else texts.pick(params)
                        try:  # _execute()'s usual case, inline
                            cursor.execute(texts.execute, args)
                        except psycopg2.Error as exc:
                            _prepare_again(cursor, raw, texts, known, args, exc)
                    else:
                        _execute(cursor, raw, stmt, params)
            finally:
                inflight.pop(raw, None)
            result = (
                cursor.fetchone() if mode == _ONE
                else cursor.rowcount if mode == _COUNT
                else cursor.fetchall()
            )
        except psycopg2.Error as exc:
            if raw.closed and isinstance(exc, (psycopg2.DatabaseError, psycopg2.InterfaceError)):
                pool.discard(raw)
                limit = pool.watchdog.timed_out(raw)
                if read_only is None:
                    read_only = is_read_only(sql)
                if attempt == 1 and limit is None and read_only:
                    logger.info("a pooled connection was dead; running the read on a new one")
                    continue
                raise _lost(db, exc, limit, raw, False, read_only) from exc
            pool.putconn(raw, reusable=_idle(raw))
            _reraise(exc, db)
        except BaseException:
            pool.putconn(raw, reusable=_idle(raw))
            raise
        pool.putconn(raw)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def fetchone(db: PooledDatabase, stmt: Statement, values: Mapping[str, Any]) -> Any:
    """Run ``stmt`` and return its first row (or None); check a connection out if needed."""
    if db._state.closed:
        return _on_checkout(db, stmt.sql, stmt.bind(values), _ONE, stmt.read_only, stmt)
    return _run(db, stmt.sql, stmt.bind(values), None, stmt.read_only, stmt).fetchone()


def fetchall(db: PooledDatabase, stmt: Statement, values: Mapping[str, Any]) -> list[Any]:
    """Run ``stmt`` and return all its rows; check a connection out if needed."""
    if db._state.closed:
        rows: list[Any] = _on_checkout(
            db, stmt.sql, stmt.bind(values), _ALL, stmt.read_only, stmt
        )
    else:
        rows = _run(db, stmt.sql, stmt.bind(values), None, stmt.read_only, stmt).fetchall()
    return rows


def execute(db: PooledDatabase, stmt: Statement, values: Mapping[str, Any]) -> int:
    """Run ``stmt`` and return the number of rows it touched; check a connection out if needed."""
    if db._state.closed:
        count: int = _on_checkout(db, stmt.sql, stmt.bind(values), _COUNT, stmt.read_only, stmt)
    else:
        count = _run(db, stmt.sql, stmt.bind(values), None, stmt.read_only, stmt).rowcount
    return count


def copy_in(db: PooledDatabase, sql: str, data: IO[str]) -> int:
    """Run ``COPY ... FROM STDIN`` (``sql``) fed from ``data`` on the thread's connection."""
    count: int = _run(db, sql, (), data).rowcount
    return count
