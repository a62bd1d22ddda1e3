"""The one SQL recorder: a database object that runs nothing, and a watched view of a real one.

Nothing here replaces an attribute of peewee's classes or of a database object
another thread uses.  As Django's schema editor with ``collect_sql`` and
alembic's ``as_sql`` mode do, the recorder is an object *passed in*: a replay,
``migrate sql`` and ``migrate lint`` hand migration files a :class:`Recorder`
(a PostgreSQL database that never connects), so whatever a file sends is
written down and nothing reaches a server.  Applying hands them a
:func:`watched` view of the real database instead: the same connection and
transaction (it shares the database's per-thread state), with a check or a
note before each statement.  Other threads that use the real database object
meanwhile are untouched.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from ...db import Database
from ...errors import DatabaseUnavailable

__all__ = ["NoCursor", "Recorder", "literal", "watched"]

_SAVEPOINT_HEADS = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")


def _is_savepoint(sql: str) -> bool:
    """Return True for peewee's own nesting statements (``SAVEPOINT``, its release, rollback)."""
    text = sql.lstrip().upper()
    for head in _SAVEPOINT_HEADS:
        after = text[len(head):len(head) + 1]
        if text.startswith(head) and not (after.isalnum() or after == "_"):
            return True
    return False


class NoCursor:
    """What a statement that was only recorded returns: no rows."""

    rowcount = 0
    description = ()
    lastrowid = None

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def fetchmany(self, size: int = 0) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def close(self) -> None:
        return None


def literal(value: Any) -> str:
    """Return ``value`` as a PostgreSQL literal (standard_conforming_strings on)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, decimal.Decimal)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "'\\x" + bytes(value).hex() + "'::bytea"
    if isinstance(value, (list, tuple)):
        return "ARRAY[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, (dt.datetime, dt.date, dt.time, uuid.UUID)):
        value = value.isoformat() if not isinstance(value, uuid.UUID) else str(value)
    text = str(value)
    return "'" + text.replace("'", "''") + "'"


def render(sql: str, params: Any = None) -> str:
    """Return ``sql`` with its ``%s`` parameters written in as literals (as psycopg2 sends it)."""
    values = tuple(literal(p) for p in (params or ()))
    try:
        return sql % values
    except (TypeError, ValueError):
        return sql if not params else f"{sql}  -- params: {params!r}"


class Recorder(Database):
    """A PostgreSQL database object that never connects: it writes statements down.

    ``calls`` holds each statement as sent (text and parameters), ``statements``
    the same rendered with the parameters written in; every query returns no
    rows.  Peewee's transaction calls (BEGIN, COMMIT, savepoints) do nothing.
    Code that would ask the database a question it needs answered can look at
    ``runs_nothing`` and skip the question.
    """

    runs_nothing = True

    def __init__(self, postgres: int = 12) -> None:
        super().__init__()
        self.server_version = postgres * 10000
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.version_read = False
        """True once code asked ``server_version`` (its SQL may depend on the version)."""

    @property
    def server_version(self) -> int:
        """The version the statements are written for (reading it sets ``version_read``)."""
        self.version_read = True
        return self._server_version

    @server_version.setter
    def server_version(self, value: int) -> None:
        self._server_version = value

    @property
    def statements(self) -> list[str]:
        """Return the recorded statements with their parameters written in."""
        return [render(sql, params) for sql, params in self.calls]

    def take(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Return the calls recorded so far and forget them."""
        calls, self.calls = self.calls, []
        return calls

    def execute_sql(self, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not _is_savepoint(sql):  # peewee's nesting, not the migration's SQL
            self.calls.append((sql, tuple(params or ())))
        return NoCursor()

    def is_closed(self) -> bool:
        return False

    def connect(self, reuse_if_open: bool = False) -> bool:
        raise DatabaseUnavailable(
            "this migration reads the database while it is queued, which cannot be done "
            "without a database (a replay, `migrate sql`, `migrate lint`); use "
            "migrator.sql(...) or migrator.run(fn) instead"
        )

    def cursor(self, named_cursor: Any = None) -> Any:
        self.connect()

    def close(self) -> bool:
        return False

    def begin(self, *args: Any, **kwargs: Any) -> None:
        return None

    def commit(self, *args: Any, **kwargs: Any) -> None:
        return None

    def rollback(self, *args: Any, **kwargs: Any) -> None:
        return None


Before = Callable[[str, Any], Any]


def watched(db: Any, before: Before) -> Any:
    """Return a view of ``db`` that calls ``before(sql, params)`` ahead of each statement.

    The view shares ``db``'s state (its per-thread connection and transaction),
    so what it runs is part of the caller's transaction; ``db`` itself, and
    every other thread using it, is untouched.  ``before`` may raise to refuse
    the statement, or return a cursor to stand for it (then it is not run).
    """
    base: type[Any] = type(db)

    def execute_sql(self: Any, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        instead = before(sql, params)
        if instead is not None:
            return instead
        return base.execute_sql(self, sql, params, *args, **kwargs)

    view_class = type(base.__name__, (base,), {"execute_sql": execute_sql, "__module__": __name__})
    view: Any = object.__new__(view_class)
    view.__dict__ = db.__dict__  # the same connections, transactions and settings
    return view
