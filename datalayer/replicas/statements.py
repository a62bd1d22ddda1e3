"""Which statements write, and the cursors that act on it.

* On a primary connection (:class:`PrimaryCursor`) a statement that may write
  is noted: inside a transaction the connection is marked (``txn_wrote``: its
  COMMIT then carries the position back, :mod:`datalayer.replicas.positions`);
  outside one the write has committed and the caller's position is pending.
* On a replica connection (:class:`ReplicaCursor`) a statement that surely
  writes is refused before it is sent, with
  :class:`~datalayer.errors.ReplicaWriteError` naming the statement (never its
  values) and the caller's line; the replica's own refusal (SQLSTATE 25006) is
  reported the same way.

Both judge a statement by its text, once per distinct text (cached): every
statement of a process with replicas passes through one of them.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import psycopg2
import psycopg2.extensions

from ..errors import ReplicaWriteError

__all__ = ["PrimaryCursor", "ReplicaCursor", "may_write", "refused", "surely_writes"]

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
_cursor = psycopg2.extensions.cursor

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
            return _cursor.execute(self, query, vars)
        finally:
            # may_write(), its cache read inline: every statement on the primary comes here.
            writes = _may_write_cache.get(query) if type(query) is str else None
            if writes is None:
                writes = may_write(query if type(query) is str else _text(query, self))
            if writes:
                _wrote(self.connection)

    def executemany(self, query: Any, vars_list: Any) -> Any:
        try:
            return _cursor.executemany(self, query, vars_list)
        finally:
            _wrote(self.connection)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
        try:
            return _cursor.copy_expert(self, sql, file, size)
        finally:
            _wrote(self.connection)

    def copy_from(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return _cursor.copy_from(self, *args, **kwargs)
        finally:
            _wrote(self.connection)


def _wrote(conn: Any) -> None:
    if not conn.closed and conn.get_transaction_status() != _IDLE:
        conn.txn_wrote = True  # position taken at COMMIT
        return
    positions = getattr(conn, "positions", None)  # datalayer.replicas.positions.Positions
    if positions is not None:
        positions.wrote_outside_transaction()


class ReplicaCursor(psycopg2.extensions.cursor):  # type: ignore[misc]
    """A cursor of a replica connection: a write is refused with the call named."""

    def execute(self, query: Any, vars: Any = None) -> Any:
        sql = query if type(query) is str else _text(query, self)
        writes = _surely_writes_cache.get(sql)  # surely_writes(), its cache read inline
        if writes is None:
            writes = surely_writes(sql)
        if writes:
            raise refused(sql, getattr(self.connection, "replica_name", "a replica"))
        try:
            return _cursor.execute(self, query, vars)
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
        return _cursor.copy_expert(self, sql, file, size)
