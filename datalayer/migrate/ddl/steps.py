"""The pieces every ddl planner builds with: the kinds of step, and small statements.

A planner returns a list of :data:`Step`: a :class:`~.spec.Sql` statement, an
:class:`Online` one (``CONCURRENTLY``: outside a transaction block) or a
:class:`BatchFill` (NULLs filled in batches).  The helpers here quote literals,
wrap ``DO`` blocks, shorten names to PostgreSQL's 63 bytes, and write the few
statements several planners share (``SET``/``DROP DEFAULT``, a concurrent unique
index and the ``USING INDEX`` that makes it a constraint).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from .actions import Unique
from .spec import Sql, quote

__all__ = ["UNLISTED", "BatchFill", "Online", "Step"]


@dataclasses.dataclass(frozen=True)
class Online:
    """A statement that cannot run inside a transaction block (``CONCURRENTLY``)."""

    sql: Sql

    def __str__(self) -> str:
        return self.sql.text


@dataclasses.dataclass(frozen=True)
class BatchFill:
    """Fill the NULLs of a column in batches of ``batch_size`` rows, walking the primary key.

    The value is the column's server default (``source="default"``), one
    literal (``"value"``), or a Python callable called once per row
    (``"callable"``).  With ``online`` every batch is its own short
    transaction, run outside the migration's transaction and lock; without,
    the batches run in the migration's transaction.
    """

    table: str  # qualified and quoted
    column: str
    key: str | None  # the single-column primary key, None: the table has none
    source: str
    value: Any = None
    factory: Callable[[], Any] | None = None
    db_value: Callable[[Any], Any] | None = None
    batch_size: int = 1000
    online: bool = False

    def __str__(self) -> str:
        what = {
            "default": "its DEFAULT",
            "value": repr(self.value),
            "callable": f"{getattr(self.factory, '__qualname__', self.factory)}() per row",
        }[self.source]
        by = f"by {quote(self.key)}" if self.key else "by ctid"
        mode = ", one transaction per batch" if self.online else ""
        return (
            f"-- fill NULLs of {self.table}.{quote(self.column)} with {what}, "
            f"{self.batch_size} rows at a time {by}{mode}"
        )


Step = Sql | Online | BatchFill

UNLISTED = "unlisted"
"""The kind of a statement that takes no table lock the facts list (CREATE SCHEMA, sequences)."""


def _literal(text: str) -> str:
    """Return ``text`` as a SQL string literal (also safe inside a DO block)."""
    return "'" + text.replace("'", "''") + "'"


def _pct(text: str) -> str:
    """Escape ``%`` for psycopg2, which formats every statement peewee sends."""
    return text.replace("%", "%%")


def _do(body: str, params: tuple[Any, ...] = ()) -> Sql:
    return Sql(f"DO $datalayer$\n{body}\n$datalayer$", params)


def _if_exists(missing_ok: bool) -> str:
    return "IF EXISTS " if missing_ok else ""


def _give_up(missing_ok: bool) -> str:
    """Return what a ``DO`` block does when the object to drop is not there."""
    return "\n        RETURN;  -- already gone: this statement ran before" if missing_ok else ""


def _using_index(text: str, T: str) -> Sql:
    # The unique index was built (and its rows checked) before.
    return Sql(text).of("add_constraint_using_index", T).doing()


def _unique_index(text: str, T: str, name: str, columns: Sequence[str]) -> Online:
    """Return ``text``, the concurrent unique index ``name`` on ``columns`` of ``T``."""
    unique = Unique(T, tuple(quote(c) for c in columns), name)
    return Online(Sql(text).of("create_index_concurrently", T).doing(unique))


_NAMEDATALEN = 63


def _short_name(name: str) -> str:
    """Return ``name``, or a name under PostgreSQL's 63-byte limit derived from it."""
    if len(name.encode()) <= _NAMEDATALEN:
        return name
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return name.encode()[: _NAMEDATALEN - 11].decode(errors="ignore") + "_" + digest


def _drop_default(T: str, c: str) -> Sql:
    # Old code that leaves the column out of its INSERTs relies on the default.
    drop = Sql(f"ALTER TABLE {T} ALTER COLUMN {c} DROP DEFAULT").of("set_default", T)
    return drop.expanding(False).doing()


def _set_default(T: str, c: str) -> Sql:
    return Sql(f"ALTER TABLE {T} ALTER COLUMN {c} SET DEFAULT ").of("set_default", T).doing()
