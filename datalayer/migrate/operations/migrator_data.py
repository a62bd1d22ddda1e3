"""The migrator's data operations: hand-written SQL, Python, fills, jobs, checks.

``migrator.sql`` and ``migrator.run`` are opaque (a replay notes them, never runs
them); :meth:`~DataMethods.backfill` fills NULLs in batches or declares a background
job; :meth:`~DataMethods.validate_constraints` validates NOT VALID constraints;
:meth:`~DataMethods.require_empty` stops on a table with rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import peewee as pw

from .. import operations as ops
from ..ddl.spec import (
    UnsupportedChange,
    quote,
)
from .migrator_core import MigratorCore, ModelRef
from .queued import RowsGuard
from .recording import _OPAQUE, Opaque, _replaying_now, table_spec

__all__ = ["DataMethods"]


class DataMethods(MigratorCore):
    """Operations on data (see :class:`.migrator.DatalayerMigrator`)."""

    # -- opaque operations: SQL and Python a replay notes and never runs ----------

    def sql(self, sql: str, *params: Any) -> None:
        """Run raw SQL: a :class:`~.data.RawSql` operation (a replay records it as :class:`Opaque`).

        Queued as written, recorded with no step: only the lint's parser reads
        hand-written SQL.
        """
        op = ops.RawSql("", sql_text=sql, params=params)
        self.__dict__.setdefault(_OPAQUE, []).append(Opaque("sql", op.sql_text, op.params))
        start = len(self.__ops__)
        self.__ops__.append(self.__migrator__.sql(op.sql_text, op.params or None))
        self._record(op, start)

    def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run a Python function (upstream's operation; a replay records it, never runs it)."""
        name = str(getattr(func, "__name__", None) or repr(func))
        self.__dict__.setdefault(_OPAQUE, []).append(Opaque("run", name))

        def call() -> None:
            func(*args, **kwargs)

        call.__name__ = name
        start = len(self.__ops__)
        self.__ops__.append(call)
        self._record(ops.PythonFunction("", name=name), start)

    def require_empty(
        self, model: ModelRef, reason: str, *, column: str | None = None
    ) -> type[pw.Model]:
        """Stop here, naming ``reason``, if the table has rows (see :class:`RowsGuard`).

        ``column``: only rows where that column is not NULL count.
        """
        cls = self._get(model)
        start = len(self.__ops__)
        spec = table_spec(cls, create=False)  # a check only; the schema state does not change
        if spec is not None:
            self.__ops__.append(RowsGuard(self.__database__, spec.name, spec.qualified, reason,
                                          column))
        op = ops.RequireEmpty(cls._meta.table_name, reason=reason, column=column or "",
                              before=spec, after=spec)
        self._record(op, start)
        return cls

    def backfill(
        self,
        model: ModelRef,
        *names: str,
        batch_size: int = 1000,
        background: bool = False,
        update: Mapping[str, str] | None = None,
        where: str | None = None,
        name: str | None = None,
    ) -> type[pw.Model]:
        """Fill the NULLs of columns from their server or Python default, in batches.

        Each batch is its own short transaction in a migration with
        ``atomic = False`` (rows walked by primary key); the schema is unchanged.

        ``background=True`` declares a background job instead
        (:mod:`.runtime.jobs`): applying the migration records it, and its
        batches run after the migration commits, outside its transaction and
        locks, resuming where they stopped if killed.  ``update`` maps columns
        to SQL expressions (``{"nickname": "lower(email)"}``; without it, the
        columns in ``names`` get their DEFAULT where they are NULL), ``where``
        is a SQL condition on the rows to change, ``name`` names the job
        (default: the table and the columns).
        """
        cls = self._get(model)
        if background or update is not None or where is not None or name is not None:
            return self._background(cls, names, batch_size, update, where, name, background)
        spec = table_spec(cls, create=False)  # SQL only; the schema state does not change
        columns = names if spec is None else tuple(self._field(cls, n).column_name for n in names)
        self._emit(ops.Backfill(cls._meta.table_name, before=spec, after=spec, online=True,
                                columns=tuple(columns), batch_size=batch_size))
        return cls

    def _background(
        self,
        cls: type[pw.Model],
        names: Sequence[str],
        batch_size: int,
        update: Mapping[str, str] | None,
        where: str | None,
        name: str | None,
        background: bool,
    ) -> type[pw.Model]:
        """Queue the registration of a background job (see :meth:`backfill`)."""
        from . import background as jobs

        table = cls._meta.table_name
        if not background:
            raise UnsupportedChange(
                f"backfill of {table}: update=, where= and name= declare a background job; "
                "add background=True"
            )
        if bool(names) == (update is not None):
            raise UnsupportedChange(
                f"backfill of {table}: give either column names (filled with their DEFAULT "
                "where NULL) or update={column: SQL expression}, not both or neither"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UnsupportedChange(f"backfill of {table}: batch_size must be a whole number >= 1")
        pk: Any = cls._meta.primary_key
        if not pk or isinstance(pk, pw.CompositeKey) or not getattr(pk, "column_name", None):
            raise UnsupportedChange(
                f"backfill of {table}: a background job walks the table by its primary key, "
                "and this table has no single-column primary key; write the batches by hand"
            )
        if update is not None:
            columns = [self._field(cls, c).column_name for c in update]
            exprs = update.values()
            sets = [f"{quote(c)} = {e}" for c, e in zip(columns, exprs, strict=True)]
        else:
            columns = [self._field(cls, c).column_name for c in names]
            sets = [f"{quote(c)} = DEFAULT" for c in columns]
            nulls = " OR ".join(f"{quote(c)} IS NULL" for c in columns)
            where = f"({nulls}) AND ({where})" if where else nulls
        job_name = name or f"{table}_{'_'.join(columns)}"
        self.__dict__.setdefault(_OPAQUE, []).append(Opaque("run", f"background job {job_name}"))
        start = len(self.__ops__)
        op = ops.BackgroundBackfill(table, columns=tuple(update or names), name=name or "")
        if _replaying_now():
            self._record(op, start)
            return cls
        spec = jobs.JobSpec(
            name=job_name,
            table=table_spec(cls).qualified,
            key=pk.column_name,
            set_sql=", ".join(sets),
            where_sql=where,
            batch_size=batch_size,
        )
        migration, history = jobs._calling_migration()
        db = self.__database__

        def register() -> None:
            jobs.register(db, migration, spec, history)

        register.__name__ = f"background_job_{job_name}"
        register.__doc__ = spec.describe()
        self.__ops__.append(register)
        self._record(op, start)
        return cls

    def validate_constraints(self, model: ModelRef) -> type[pw.Model]:
        """Validate the table's NOT VALID CHECKs and foreign keys (reads and writes go on)."""
        cls = self._get(model)
        spec = table_spec(cls, create=False)  # SQL only; the schema state does not change
        self._emit(ops.ValidateConstraints(cls._meta.table_name, before=spec, after=spec))
        return cls
