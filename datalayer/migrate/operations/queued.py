"""The callables a migrator queues beyond SQL: batched fills, commits around them, a guard.

:func:`run_fill` fills a column's NULLs in batches (a :class:`~..ddl.alter.BatchFill`
step); :func:`outside_transaction` makes a statement that cannot run in a transaction
block work under ``pw_migrate migrate`` too; :class:`RowsGuard` stops a migration
when a table it needs empty has rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..ddl.alter import BatchFill
from ..ddl.spec import (
    quote,
)

__all__ = ["RowsGuard", "fill_call", "outside_transaction", "run_fill"]

_UPSTREAM = "_datalayer_upstream"  # set when extend() wrapped another runner's Migrator


def _column_types(database: Any, step: BatchFill) -> tuple[str, str]:
    """Return the SQL types of the key column (``tid`` without one) and of the filled column."""
    rows = database.execute_sql(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname IN (%s, %s) AND NOT attisdropped",
        (step.table, step.key or step.column, step.column),
    ).fetchall()
    types = dict(rows)
    return (types.get(step.key, "tid") if step.key else "tid"), types.get(step.column, "text")


def run_fill(database: Any, step: BatchFill) -> int:
    """Fill the NULLs of ``step.column`` ``step.batch_size`` rows at a time; return the count.

    Rows are walked in primary-key order (``ctid`` without a single-column
    key); each batch is one UPDATE of a key range (or, for a Python
    callable, of a list of rows with one value each), so under autocommit
    every batch is its own short transaction.  A last pass picks up NULLs
    that concurrent inserts left behind the walk.
    """
    T, c, n = step.table, quote(step.column), int(step.batch_size)
    k = quote(step.key) if step.key else "ctid"
    key_type, col_type = _column_types(database, step)
    filled = 0

    def update(keys: Sequence[Any]) -> None:
        nonlocal filled
        if step.source == "callable":
            assert step.factory is not None and step.db_value is not None
            pairs = [(key, step.db_value(step.factory())) for key in keys]
            values = ", ".join(f"(%s::{key_type}, %s::{col_type})" for _ in pairs)
            params = [p for pair in pairs for p in pair]
            cursor = database.execute_sql(
                f"UPDATE {T} SET {c} = v.val FROM (VALUES {values}) AS v(k, val) "
                f"WHERE {T}.{k} = v.k AND {T}.{c} IS NULL",
                params,
            )
        else:
            value, params = ("DEFAULT", []) if step.source == "default" else ("%s", [step.value])
            if step.key:
                where, params = f"{k} >= %s AND {k} <= %s", [*params, keys[0], keys[-1]]
            else:
                where, params = f"{k} = ANY(%s::tid[])", [*params, list(keys)]
            cursor = database.execute_sql(
                f"UPDATE {T} SET {c} = {value} WHERE {where} AND {c} IS NULL", params
            )
        filled += max(cursor.rowcount or 0, 0)

    last: Any = None
    while step.key:  # the walk by primary key
        after = "" if last is None else f"WHERE {k} > %s "
        rows = database.execute_sql(
            f"SELECT {k} FROM {T} {after}ORDER BY {k} LIMIT {n}", [] if last is None else [last]
        ).fetchall()
        if not rows:
            break
        keys = [r[0] for r in rows]
        if step.source == "callable":
            found = database.execute_sql(
                f"SELECT {k} FROM {T} WHERE {k} >= %s AND {k} <= %s AND {c} IS NULL",
                [keys[0], keys[-1]],
            ).fetchall()
            if found:
                update(sorted(r[0] for r in found))
        else:
            update(keys)
        last = keys[-1]
    while True:  # what is still NULL: rows inserted behind the walk, or no key to walk
        order = f" ORDER BY {k}" if step.key else ""
        rows = database.execute_sql(
            f"SELECT {k} FROM {T} WHERE {c} IS NULL{order} LIMIT {n}"
        ).fetchall()
        if not rows:
            return filled
        update([r[0] for r in rows])


def fill_call(database: Any, step: BatchFill) -> Callable[[], None]:
    def fill() -> None:
        run_fill(database, step)

    fill.__name__ = f"fill_{step.column}"
    return fill


def outside_transaction(
    shared: dict[str, Any], database: Any, fn: Callable[[], None]
) -> Callable[[], None]:
    """Return ``fn`` made to run outside a transaction block.

    datalayer runs a migration with ``atomic = False`` in autocommit, so there
    is nothing to do.  ``pw_migrate migrate`` wraps every migration in one
    transaction: commit it (what the migration did so far is kept), run
    ``fn`` in autocommit, and begin again for the rest and the history row.
    """

    def run() -> None:
        if shared.get(_UPSTREAM) and database.in_transaction():
            database.commit()
            try:
                fn()
            finally:
                database.begin()
        else:
            fn()

    run.__name__ = getattr(fn, "__name__", "outside_transaction")
    return run


class RowsGuard:
    """An operation that stops a migration (or rollback) when a table has rows.

    Queued by :meth:`DatalayerMigrator.require_empty` before a step that cannot fill
    existing rows (a NOT NULL column re-added without a default).  It runs in its place
    like any operation, and ``datalayer migrate rollback`` also finds it in the queued
    operations and checks it before anything runs (:meth:`blocked`).
    """

    def __init__(
        self, database: Any, table: str, table_sql: str, reason: str, column: str | None = None
    ) -> None:
        self.database = database
        self.table = table
        self.table_sql = table_sql
        self.reason = reason
        self.column = column  # only rows where this column is not NULL count
        self.__name__ = f"require_empty_{table}"

    def blocked(self, database: Any | None = None) -> str | None:
        """Return why the step cannot run on ``database`` now (None: the table is empty)."""
        db = database if database is not None else self.database
        found = db.execute_sql("SELECT to_regclass(%s)", (self.table_sql,)).fetchone()
        if found is None or found[0] is None:
            return None
        where = f" WHERE {quote(self.column)} IS NOT NULL" if self.column else ""
        cursor = db.execute_sql(f"SELECT EXISTS (SELECT 1 FROM {self.table_sql}{where})")
        row = cursor.fetchone()
        if not row or not row[0]:
            return None
        if self.column:
            return (f"{self.reason}, and {self.table}.{self.column} holds values: set them to "
                    "NULL first (nothing was changed)")
        return (
            f"{self.reason}, and table {self.table} has rows: empty it first, or edit the "
            "file to give the column a default (then run `datalayer migrate hash`)"
        )

    def __call__(self) -> None:
        from ...errors import MigrationError

        problem = self.blocked()
        if problem:
            raise MigrationError(problem)
