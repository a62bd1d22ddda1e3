"""Extend peewee-migrate's Migrator with operations that keep the schema exact.

Every method updates the in-memory model of the table (``migrator.orm``),
which is how peewee-migrate knows the current schema when it replays applied
migrations with ``fake=True``, and builds one operation (:mod:`.`) from the
table's specs before and after that change: the operation's ``sql()`` (the
ddl planners, :mod:`..ddl.alter`, on those specs) is what it queues, so
server defaults, CHECK constraints, foreign key actions, index names and
partial indexes all come out as ``create_tables()`` would make them.
Nothing here runs SQL while queueing.  Inside :func:`replaying` the
operations are recorded without specs and queue nothing: rendering the
specs made a replay of 1000 files about 7 times slower.

Generated migration files call :func:`datalayer.migrate.ops.extend` on the
migrator they are given, so they work the same under ``pw_migrate migrate``
(plain Migrator) and under datalayer's Router (this class).

Operations that take ``online=True`` queue the forms that keep the table
readable and writable (see :mod:`..ddl.alter`); some of their statements cannot
run in a transaction block (``CREATE INDEX CONCURRENTLY``, batched fills), so
the generator puts them in migrations with ``atomic = False``.  Under
``pw_migrate migrate``, which runs every migration in one transaction, such
a statement commits what the migration did so far, runs on its own, and
opens a new transaction for the rest (and for the history row).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import itertools
import operator
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

import peewee as pw
from peewee_migrate import Migrator
from playhouse.migrate import SchemaMigrator

from .. import operations as ops
from ..ddl.alter import BatchFill, Step
from ..ddl.spec import (
    Sql,
    TableSpec,
    UnsupportedChange,
    _render_key,
    _untyped,
    database_of,
    index_entries,
    quote,
    rename_identifier,
    table_spec,
)

__all__ = [
    "DatalayerMigrator",
    "Opaque",
    "RowsGuard",
    "UnsupportedChange",
    "bind",
    "bound",
    "ref",
    "replaying",
    "typed",
]

# -- replays derive no SQL ------------------------------------------------------------
# A replay (router.replay: the history run in fake mode to know the schema) throws the
# SQL of every operation away; deriving it renders the table's whole DDL before and
# after each operation, which made long histories quadratic in the table's width.
# Inside ``replaying()`` (a per-thread switch) the operations change the state only.
_REPLAY = threading.local()
_T = TypeVar("_T")


def _unless_replaying(fn: Callable[..., _T], empty: Callable[[], _T]) -> Callable[..., _T]:
    def wrapper(*args: Any, **kwargs: Any) -> _T:
        return empty() if getattr(_REPLAY, "on", False) else fn(*args, **kwargs)

    return wrapper


def _replaying_now() -> bool:
    return bool(getattr(_REPLAY, "on", False))


@contextlib.contextmanager
def replaying() -> Iterator[None]:
    """Within this block (this thread), operations update the state and queue no SQL."""
    previous = getattr(_REPLAY, "on", False)
    _REPLAY.on = True
    try:
        yield
    finally:
        _REPLAY.on = previous


table_spec = _unless_replaying(table_spec, lambda: cast(TableSpec, None))

ModelRef = str | type[pw.Model]
F = TypeVar("F", bound=pw.Field)


def ref(module: str, qualname: str) -> Callable[..., Any]:
    """Return the object ``module.qualname`` (a callable default of a field, e.g. ``uuid.uuid4``).

    :raises ImportError: naming the object when it no longer exists; restore it or edit the
        migration to use a literal default.
    """
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"a migration refers to {module}.{qualname} (a field default), which cannot be "
            f"imported ({exc}); restore it or edit the migration to use a literal default"
        ) from None
    if not callable(obj):
        raise ImportError(f"{module}.{qualname} is not callable; it cannot be a field default")
    result: Callable[..., Any] = obj
    return result


def typed(field: F, field_type: str) -> F:
    """Return ``field`` with its column type set to ``field_type`` (a custom field's type)."""
    vars(field)["field_type"] = field_type  # an instance attribute shadows the class's
    return field


def _sql_node(node: Any, renames: Mapping[str, str]) -> Any:
    """Return ``node`` with column names rewritten if it is a plain ``SQL`` node."""
    if isinstance(node, pw.SQL) and not isinstance(node, pw.Entity):
        sql = rename_identifier(Sql(node.sql, tuple(node.params or ())), renames)
        return pw.SQL(sql.text, list(sql.params) or None)
    return node


_STEPS = "_datalayer_steps"  # the steps queued, for the planner (in the shared __dict__)
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


def _fill_op(database: Any, step: BatchFill) -> Callable[[], None]:
    def fill() -> None:
        run_fill(database, step)

    fill.__name__ = f"fill_{step.column}"
    return fill


def _outside_transaction(
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


def bind(migrator: Migrator, database: Any) -> None:
    """Point ``migrator`` (its schema migrator and the models of its state) at ``database``.

    A replay binds its migrator to a :class:`~.runtime.recorder.Recorder`, an apply to a
    watched view of the real database; only this migrator's own objects change.
    """
    old = migrator.__migrator__
    migrator.__database__ = database
    migrator.__migrator__ = SchemaMigrator.from_database(database)
    if "transactional_ddl" in vars(old):
        migrator.__migrator__.transactional_ddl = old.transactional_ddl
    for model in migrator.orm.__tables__.values():
        model._meta.database = database


@contextlib.contextmanager
def bound(migrator: Migrator, database: Any) -> Iterator[Any]:
    """Bind ``migrator`` to ``database`` for the block, then back to what it was bound to."""
    previous = migrator.__database__
    bind(migrator, database)
    try:
        yield database
    finally:
        bind(migrator, previous)


@dataclasses.dataclass(frozen=True)
class Opaque:
    """A ``migrator.sql(...)`` or ``migrator.run(fn)`` call, as a replay records it.

    A replay never executes either: it notes them (``squash`` refuses to fold data
    changes it cannot carry; the lint reads the SQL).
    """

    kind: str  # "sql" or "run"
    text: str  # the SQL, or the function's name
    params: tuple[Any, ...] = ()


_OPAQUE = "_datalayer_opaque"  # the Opaque calls recorded (in the shared __dict__)


_OPERATIONS = "_datalayer_operations"  # (operation, its queued callables) (shared __dict__)
_SPECS = "_datalayer_specs"  # model -> (fingerprint, its spec after the last operation on it)
_SPECS_MARK = "_datalayer_specs_mark"  # (queue, its length) when the specs were last known good
_SPECS_KEEP = "_datalayer_specs_keep"  # the spec after of the operation _around just built


_REFERRING = (pw.ForeignKeyField, pw.DeferredForeignKey)


def _fingerprint(cls: type[pw.Model]) -> tuple[Any, ...] | None:
    """Return what a cached spec of ``cls`` is checked against (identities), or None: never cache.

    A table with a foreign key is not cached: its columns' specs depend on the
    tables it refers to, which other operations change.
    """
    meta = cls._meta
    fields = meta.sorted_fields
    if any(map(isinstance, fields, itertools.repeat(_REFERRING))):
        return None
    constraints = meta.constraints
    return (
        _render_key(database_of(cls)), id(meta), meta.table_name, meta.schema,
        tuple(map(id, fields)), id(meta.indexes), tuple(map(id, meta.indexes)),
        id(constraints), tuple(map(id, constraints or ())), id(meta.primary_key),
        meta.composite_key,
    )


def _server_default(field: pw.Field) -> bool:
    return any("DEFAULT" in str(getattr(c, "sql", "")).upper() for c in field.constraints or ())


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


class DatalayerMigrator(Migrator):
    """A peewee-migrate ``Migrator`` whose operations reproduce ``create_tables()`` exactly.

    Operations beyond peewee-migrate's: :meth:`alter_fields` (type change
    with ``USING``), :meth:`rename_column`, :meth:`add_named_index`,
    :meth:`drop_named_index`, :meth:`rename_index`, :meth:`set_constraints`,
    :meth:`set_model_meta`, :meth:`set_schema`, :meth:`require_empty`.  Overridden with the
    same signatures:
    ``create_model``, ``remove_model``, ``add_fields``, ``remove_fields``,
    ``change_fields``, ``rename_field``, ``rename_table``, ``add_index``,
    ``drop_index``, ``add_not_null``, ``drop_not_null``.  One deliberate
    difference: ``remove_model`` and ``remove_fields`` do not CASCADE unless
    asked, so a drop that would take a view or another table's foreign key
    along fails instead.
    """

    ref = staticmethod(ref)
    typed = staticmethod(typed)

    @classmethod
    def extend(cls, migrator: Migrator) -> DatalayerMigrator:
        """Return a ``DatalayerMigrator`` sharing all state with ``migrator``.

        The two objects share one attribute dictionary, so operations queued
        through either run when the original is called, and models added
        through either are seen by both.

        :raises TypeError: when ``migrator`` is not a peewee-migrate Migrator.
        """
        if isinstance(migrator, cls):
            return migrator
        if not isinstance(migrator, Migrator):
            raise TypeError(
                f"expected a peewee_migrate.Migrator, got {type(migrator).__name__}; "
                "call extend() with the migrator passed to migrate()/rollback()"
            )
        extended = cls.__new__(cls)
        extended.__dict__ = migrator.__dict__
        extended.__dict__[_UPSTREAM] = True
        return extended

    # -- opaque operations: SQL and Python a replay notes and never runs ----------

    def sql(self, sql: str, *params: Any) -> None:
        """Run raw SQL: a :class:`~.data.RawSql` operation (a replay records it as :class:`Opaque`).

        Queued as written, with no ``_datalayer_step``: only the lint's parser reads
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

    def take_operations(self) -> list[ops.Operation]:
        """Return the operations recorded since the last call (see :mod:`.operations`)."""
        return [op for op, _ in self.take_recorded()]

    def take_recorded(self) -> list[tuple[ops.Operation, tuple[Any, ...]]]:
        """Return each operation recorded since the last call with the callables it queued."""
        found: list[tuple[ops.Operation, tuple[Any, ...]]] = self.__dict__.pop(_OPERATIONS, [])
        return found

    def _record(self, op: ops.Operation, start: int) -> None:
        """Record ``op`` with the callables queued since ``start`` (its place in ``__ops__``)."""
        queued = tuple(self.__ops__[start:])
        self.__dict__.setdefault(_OPERATIONS, []).append((op, queued))
        state = self.__dict__
        keep = state.pop(_SPECS_KEEP, None)
        specs = state.get(_SPECS)
        if specs and (keep is None or getattr(op, "after", None) is not keep
                      or not self._specs_in_step(start)):
            # Any operation but one of _around's may have changed any model (or something
            # was queued in between, outside these methods): forget every spec.
            specs.clear()
        state[_SPECS_MARK] = (id(self.__ops__), len(self.__ops__))

    def _emit(self, op: ops.Operation) -> None:
        """Queue ``op``'s SQL, in the form its file asked for (none in a replay), and record it."""
        start = len(self.__ops__)
        if not _replaying_now():
            self._queue(op.sql(safe=op.online))
        self._record(op, start)

    def take_opaque(self) -> list[Opaque]:
        """Return the ``sql``/``run`` calls since the last call, and forget them."""
        found: list[Opaque] = self.__dict__.pop(_OPAQUE, [])
        return found

    # -- plumbing -----------------------------------------------------------

    def _get(self, model: ModelRef) -> type[pw.Model]:
        if isinstance(model, str) and model in self.orm.__tables__:
            # A table name first: two models of one class name may be in the state at once
            # (a table renamed without a hint: the old and the new class are both ``Person``).
            found: type[pw.Model] = self.orm.__tables__[model]
            return found
        try:
            result: type[pw.Model] = self.__get_model__(model)
        except (ValueError, KeyError):
            known = ", ".join(sorted(self.orm.__tables__)) or "none"
            raise UnsupportedChange(
                f"no table or model {model!r} in the migration history (known tables: {known}); "
                "check the migration's table names against the earlier migrations"
            ) from None
        return result

    def _forget(self, cls: type[pw.Model]) -> None:
        """Remove ``cls`` from the state, and only it (another model may share its class name)."""
        orm = self.orm
        if orm.__tables__.get(cls._meta.table_name) is cls:
            del orm.__tables__[cls._meta.table_name]
        if orm.__models__.get(cls.__name__) is cls:
            del orm.__models__[cls.__name__]

    def _queue(self, steps: Iterable[Step]) -> None:
        steps = list(steps)
        self.__dict__.setdefault(_STEPS, []).extend(steps)
        db = self.__database__
        for step in steps:
            if isinstance(step, Sql):
                queued = self.__migrator__.sql(step.text, list(step.params) or None)
                queued._datalayer_step = step  # what plan.read_migrations reports
                self.__ops__.append(queued)
                continue
            if isinstance(step, BatchFill):
                op = _fill_op(db, step)
                if not step.online:
                    vars(op)["_datalayer_step"] = step
                    self.__ops__.append(op)
                    continue
            else:
                sql = step.sql

                def op(sql: Sql = sql) -> None:
                    db.execute_sql(sql.text, list(sql.params) or None)

                op.__name__ = "concurrently"
            if self.__dict__.get(_UPSTREAM):
                # pw_migrate's savepoint around the operations would not survive the
                # commit that lets this statement run outside the transaction.
                self.__migrator__.transactional_ddl = False
            outside = _outside_transaction(self.__dict__, db, op)
            vars(outside)["_datalayer_step"] = step
            self.__ops__.append(outside)

    def take_steps(self) -> list[Step]:
        """Return the steps queued since the last call, and forget them (for the planner)."""
        steps: list[Step] = self.__dict__.pop(_STEPS, [])
        return steps

    def _referrers(self, cls: type[pw.Model]) -> list[type[pw.Model]]:
        """Return the other tables of the state with a foreign key to ``cls``.

        None in a replay and in an offline rendering (a database with ``renders_only``:
        ``migrate sql``, the lint, check's SQL), which never fold their operations.
        """
        if _replaying_now() or getattr(self.__database__, "renders_only", False):
            return []
        tables = self.orm.__tables__
        found: dict[Any, None] = {}
        for m in cls._meta.backrefs.values():
            if m is not cls and tables.get(m._meta.table_name) is m:
                found[m] = None
        return list(found)

    def _around(
        self, cls: type[pw.Model], mutate: Callable[[], None], *, create: bool = False
    ) -> dict[str, Any]:
        """Run ``mutate``; return the specs of ``cls`` and of its referrers before and after.

        Only compared: no CREATE TABLE rendered unless ``create``.  None in a replay.
        """
        others = self._referrers(cls)
        before = self._spec_before(cls, create)
        others_before = [table_spec(m, create=False) for m in others]
        try:
            mutate()
        except BaseException:
            self.__dict__.pop(_SPECS, None)
            raise
        after = table_spec(cls, create=create)
        self._spec_after(cls, create, after)
        pairs = zip(others_before, [table_spec(m, create=False) for m in others], strict=True)
        return {"before": before, "after": after,
                "referrers": tuple((b, a) for b, a in pairs if b != a)}

    def _spec_before(self, cls: type[pw.Model], create: bool) -> TableSpec:
        """Return ``cls``'s spec: the one the last operation on it left, if nothing changed since.

        Each operation compares its table's spec before and after; in a history
        the spec before is, most of the time, the one after the previous
        operation on that table, which is not built again.  Valid while only
        operations of :meth:`_around` ran (any other operation forgets every spec)
        and the model's identities (:func:`_fingerprint`) are the same.
        """
        state = self.__dict__
        specs = state.get(_SPECS)
        if specs and not create and not _replaying_now():
            if not self._specs_in_step(len(self.__ops__)):
                specs.clear()  # something queued outside these methods
            else:
                hit = specs.get(cls)
                if hit is not None and hit[0] == _fingerprint(cls):
                    spec: TableSpec = hit[1]
                    return spec
        return table_spec(cls, create=create)

    def _specs_in_step(self, length: int) -> bool:
        """Return whether nothing was queued since the last recorded operation but by it.

        A new queue (the runner takes each file's operations) starts afresh.
        """
        mark = self.__dict__.get(_SPECS_MARK)
        return mark is None or mark[0] != id(self.__ops__) or mark[1] == length

    def add_default(self, model: ModelRef, name: str, default: Any) -> type[pw.Model]:
        """Upstream's operation, which changes a field and records nothing: forget the specs."""
        self.__dict__.pop(_SPECS, None)
        result: type[pw.Model] = super().add_default(model, name, default)
        self.__dict__.pop(_SPECS, None)
        return result

    def _spec_after(self, cls: type[pw.Model], create: bool, after: TableSpec | None) -> None:
        """Keep ``after`` for the next operation on ``cls`` (see :meth:`_spec_before`)."""
        state = self.__dict__
        specs: dict[type[pw.Model], tuple[Any, TableSpec]] = state.setdefault(_SPECS, {})
        for m in self._referrers(cls):
            specs.pop(m, None)
        fingerprint = None if after is None or create else _fingerprint(cls)
        if fingerprint is None:
            specs.pop(cls, None)
        else:
            assert after is not None
            specs[cls] = (fingerprint, after)
        state[_SPECS_KEEP] = after

    def _alter(
        self,
        model: type[pw.Model],
        mutate: Callable[[], None],
        kind: type[ops.TableChange],
        /,
        *,
        renames: Mapping[str, str] | None = None,
        using: Mapping[str, str] | None = None,
        online: bool = False,
        **fields: Any,
    ) -> type[pw.Model]:
        """Change ``model`` by ``mutate`` as operation ``kind`` (with ``fields``), and emit it."""
        table = model._meta.table_name
        specs = self._around(model, mutate)
        self._emit(kind(
            table, online=online, renames=tuple((renames or {}).items()),
            using=tuple((using or {}).items()), **specs, **fields,
        ))
        return model

    def _field(self, model: type[pw.Model], name: str) -> pw.Field:
        meta = model._meta
        field = meta.fields.get(name) or meta.columns.get(name)
        if field is None:
            raise UnsupportedChange(
                f"table {meta.table_name} has no field or column {name!r} in the migration "
                f"history (fields: {', '.join(meta.fields) or 'none'})"
            )
        result: pw.Field = field
        return result

    @staticmethod
    def _detach(model: type[pw.Model], field: pw.Field) -> None:
        """Remove ``field`` from ``model`` with its accessors and backref."""
        meta = model._meta
        meta.remove_field(field.name)
        if field.name in vars(model):
            delattr(model, field.name)
        if isinstance(field, pw.ForeignKeyField):
            oid = field.object_id_name
            if oid and oid in vars(model):
                delattr(model, oid)
            backref = field.backref
            if backref and backref not in ("+", "!") and backref in vars(field.rel_model):
                delattr(field.rel_model, backref)

    @staticmethod
    def _replace_in_indexes(model: type[pw.Model], old: pw.Field, new: pw.Field | None) -> None:
        """Point ``Meta.indexes`` at ``new`` instead of ``old`` (``None``: drop those entries)."""
        meta = model._meta
        kept: list[Any] = []
        entry: Any
        for entry in meta.indexes:
            if isinstance(entry, pw.ModelIndex):
                index = _untyped(entry)
                exprs = list(index._expressions)
                if any(e is old for e in exprs):
                    if new is None:
                        continue
                    index._expressions = [new if e is old else e for e in exprs]
            elif isinstance(entry, (list, tuple)):
                parts, unique = entry
                names = {old.name, old.column_name}
                if any(isinstance(p, str) and p in names for p in parts):
                    if new is None:
                        continue
                    entry = (
                        tuple(new.name if isinstance(p, str) and p in names else p for p in parts),
                        unique,
                    )
            kept.append(entry)
        meta.indexes = kept

    # -- tables ---------------------------------------------------------------

    def create_model(self, model: Any) -> Any:
        """Create the table (and its indexes) exactly as ``create_tables()`` would."""
        meta = model._meta
        meta.database = self.__database__
        self.orm.add(model)
        self._emit(ops.CreateTable(meta.table_name, after=table_spec(model)))
        return model

    def remove_model(self, model: ModelRef, *, cascade: bool = False) -> None:
        """Drop the table; without ``cascade`` it fails if anything still depends on it."""
        cls = self._get(model)
        spec = table_spec(cls)
        for field in cls._meta.sorted_fields:
            if isinstance(field, pw.ForeignKeyField) and field in cls._meta.refs:
                cls._meta.remove_ref(field)
        referrers: list[tuple[TableSpec, TableSpec]] = []
        if cascade:
            # CASCADE drops the foreign keys of the other tables that refer to this one.
            for other in self._referrers(cls):
                theirs = table_spec(other, create=False)
                gone = {f.column_name for f in other._meta.refs if f.rel_model is cls}
                columns = tuple(
                    dataclasses.replace(c, fk=None, fk_name=None) if c.name in gone else c
                    for c in theirs.columns
                )
                referrers.append((theirs, dataclasses.replace(theirs, columns=columns)))
        self._forget(cls)
        self._emit(ops.DropTable(cls._meta.table_name, before=spec, cascade=cascade,
                                 referrers=tuple(referrers)))

    def rename_table(self, model: ModelRef, new_name: str) -> type[pw.Model]:
        """Rename the table, and the indexes, constraints and sequences named after it."""
        cls = self._get(model)
        meta = cls._meta
        old = meta.table_name

        def mutate() -> None:
            self._forget(cls)
            meta.table_name = new_name
            del meta.table  # peewee caches the Table object with the old name
            entry: Any
            for entry in meta.indexes:
                if isinstance(entry, pw.ModelIndex):
                    _untyped(entry)._table = meta.table
            self.orm.add(cls)

        self._emit(ops.RenameTable(new_name, old=old, **self._around(cls, mutate)))
        return cls

    def set_schema(self, model: ModelRef, schema: str | None) -> type[pw.Model]:
        """Move the table, with its rows, indexes and sequences, to ``schema`` (None: public).

        The schema is created if it does not exist.
        """
        cls = self._get(model)
        meta = cls._meta
        old = meta.schema

        def mutate() -> None:
            meta.schema = schema  # resets the cached Table, which names the schema
            entry: Any
            for entry in meta.indexes:
                if isinstance(entry, pw.ModelIndex):
                    _untyped(entry)._table = meta.table

        specs = self._around(cls, mutate)
        self._emit(ops.SetSchema(meta.table_name, schema=schema, old_schema=old, **specs))
        return cls

    def set_model_meta(self, model: ModelRef, **options: Any) -> type[pw.Model]:
        """Change ``Meta.name`` or ``legacy_table_names`` (they name the field indexes).

        Or ``table_settings`` (a list): its ``WITH (...)`` storage parameters are set and
        reset in place.
        """
        cls = self._get(model)
        unknown = set(options) - {"name", "legacy_table_names", "table_settings"}
        if unknown:
            raise UnsupportedChange(
                "set_model_meta accepts name, legacy_table_names and table_settings, not "
                f"{', '.join(unknown)}"
            )

        def mutate() -> None:
            for key, value in options.items():
                setattr(cls._meta, key, value)

        previous = tuple(sorted((k, getattr(cls._meta, k)) for k in options))
        return self._alter(cls, mutate, ops.SetModelMeta,
                           options=tuple(sorted(options.items())), previous=previous)

    def set_primary_key(
        self, model: ModelRef, *names: str, online: bool = False
    ) -> type[pw.Model]:
        """Make the fields ``names`` (two or more) the table's composite primary key.

        The table has a composite key, or none (its key column dropped).  Without
        ``names``, a composite key is given up and its columns stay (the table has no
        key, as with peewee's ``primary_key = False``).
        ``online``: through a concurrent unique index, then ``USING INDEX`` (run
        it with ``atomic = False``).
        """
        cls = self._get(model)
        if not names and cls._meta.composite_key:
            meta = cls._meta

            def release() -> None:
                meta.primary_key = False
                meta.composite_key = False
                meta.auto_increment = False
                if "__composite_key__" in vars(cls):
                    delattr(cls, "__composite_key__")

            return self._alter(cls, release, ops.SetPrimaryKey, online=online, columns=())
        if len(names) < 2 or not (cls._meta.composite_key or not cls._meta.primary_key):
            raise UnsupportedChange(
                f"{cls._meta.table_name}: set_primary_key makes a composite key (two fields or "
                "more) of a table with a composite key or none; write other key changes by hand"
            )
        fields = [self._field(cls, n).name for n in names]

        def mutate() -> None:
            cls._meta.set_primary_key("__composite_key__", pw.CompositeKey(*fields))

        return self._alter(cls, mutate, ops.SetPrimaryKey, online=online, columns=tuple(names))

    def set_constraints(
        self, model: ModelRef, constraints: Sequence[Any], *, online: bool = False
    ) -> type[pw.Model]:
        """Replace the table constraints (``Meta.constraints``: CHECK, UNIQUE, ...).

        ``online``: CHECKs and foreign keys are added NOT VALID (validate them
        later with :meth:`validate_constraints`), a UNIQUE constraint through
        a concurrent unique index (run it with ``atomic = False``).
        """
        cls = self._get(model)

        def mutate() -> None:
            cls._meta.constraints = list(constraints)

        return self._alter(cls, mutate, ops.SetConstraints, online=online,
                           count=len(constraints))

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

    # -- columns ----------------------------------------------------------------

    def add_fields(
        self,
        model: ModelRef,
        *,
        allow_not_null: bool = False,
        online: bool | pw.Field = False,
        **fields: pw.Field,
    ) -> type[pw.Model]:
        """Add columns with their defaults, CHECKs, foreign keys and indexes.

        A NOT NULL column with only a Python default is added nullable, its
        rows are filled from the default, then it is made NOT NULL.
        ``online``: CHECKs and foreign keys are added NOT VALID, a volatile
        server default is set after the column is added and the rows filled
        in batches.  ``allow_not_null`` is accepted for peewee-migrate
        compatibility.  A field named ``online`` is a field, not the option.
        A serial key field (``id=pw.AutoField()``) replaces the table's key: the
        old key is dropped, the new column numbers the existing rows.
        """
        del allow_not_null
        if isinstance(online, pw.Field):
            fields, online = {"online": online, **fields}, False
        cls = self._get(model)

        def mutate() -> None:
            for name, field in fields.items():
                if field.primary_key:  # a serial key in place of the table's key
                    cls._meta.set_primary_key(name, field)
                else:
                    cls._meta.add_field(name, field)

        return self._alter(
            cls, mutate, ops.AddColumns, online=online,
            columns=tuple(f.column_name or name for name, f in fields.items()),
            old_code_safe=all(f.null or _server_default(f) for f in fields.values()),
        )

    def remove_fields(
        self, model: ModelRef, *names: str, cascade: bool = False, **params: Any
    ) -> type[pw.Model]:
        """Drop columns (by field or column name) with their indexes and constraints.

        Without ``cascade`` the drop fails if a view or another table's foreign
        key still uses a column.  Dropping the key's column leaves the table
        without a primary key (:meth:`set_primary_key` makes another).
        """
        del params
        cls = self._get(model)
        targets = [self._field(cls, n) for n in names]

        def mutate() -> None:
            for field in targets:
                self._replace_in_indexes(cls, field, None)
                self._detach(cls, field)
                if cls._meta.primary_key is field:  # the key goes with its column
                    cls._meta.primary_key = False

        return self._alter(cls, mutate, ops.DropColumns, cascade=cascade, columns=tuple(names))

    def change_fields(
        self, model: ModelRef, *, online: bool | pw.Field = False, **fields: pw.Field
    ) -> type[pw.Model]:
        """Change columns to match the given fields (type, NULL, default, CHECK, FK, index).

        ``online``: indexes built and dropped concurrently, CHECKs and foreign
        keys added NOT VALID, NOT NULL through a validated CHECK after the
        NULLs are filled in batches (run it with ``atomic = False``).  A field
        named ``online`` is a field, not the option (:meth:`alter_fields` takes both).
        """
        if isinstance(online, pw.Field):
            fields, online = {"online": online, **fields}, False
        return self.alter_fields(model, fields, online=online)

    def alter_fields(
        self,
        model: ModelRef,
        fields: Mapping[str, pw.Field],
        *,
        using: Mapping[str, str] | None = None,
        online: bool = False,
    ) -> type[pw.Model]:
        """Change columns; ``using`` maps a column name to its type change's USING expression.

        A key of ``using`` that is a key of ``fields`` (a field's name, as ``diff`` writes
        it) stands for that field's column (a foreign key's ``owner`` for ``owner_id``).
        """
        cls = self._get(model)
        olds = {name: self._field(cls, name) for name in fields}
        if using:
            using = {
                (fields[k].column_name or k) if k in fields else k: v for k, v in using.items()
            }
        renames = {}
        for name, new in fields.items():
            if new.column_name and new.column_name != olds[name].column_name:
                renames[olds[name].column_name] = new.column_name

        def mutate() -> None:
            for name, new in fields.items():
                old = olds[name]
                self._detach(cls, old)
                cls._meta.add_field(old.name, new)
                self._replace_in_indexes(cls, old, new)
                meta: Any = cls._meta
                if new.primary_key and not old.primary_key:  # a unique column made the key
                    meta.set_primary_key(old.name, new)
                elif old.primary_key and not new.primary_key and meta.primary_key is old:
                    meta.primary_key, meta.auto_increment = False, False

        return self._alter(cls, mutate, ops.AlterColumns, renames=renames, using=using,
                           online=online, columns=tuple(fields))

    def rename_column(
        self,
        model: ModelRef,
        old_column: str,
        new_column: str,
        *,
        field_name: str | None = None,
    ) -> type[pw.Model]:
        """Rename a column in place (data, indexes and constraints kept).

        ``field_name`` renames the model attribute as well; a field whose
        attribute was the old column name follows the column by default.
        """
        cls = self._get(model)
        field = self._field(cls, old_column)
        old_col = field.column_name
        new_attr = field_name or (new_column if field.name == old_col else field.name)
        renames = {old_col: new_column} if new_column != old_col else {}

        def mutate() -> None:
            meta = cls._meta
            old_attr = field.name
            self._detach(cls, field)
            field.column_name = new_column
            if isinstance(field, pw.ForeignKeyField):
                field.object_id_name = None  # recomputed from the column name on bind
            meta.add_field(new_attr, field)
            key: Any = meta.primary_key
            key_names = key.field_names if meta.composite_key else ()
            if old_attr in key_names:  # a column of a composite key: the key names it anew
                meta.set_primary_key("__composite_key__", pw.CompositeKey(*(
                    new_attr if n == old_attr else n for n in key_names)))
            rewritten: list[Any] = []
            entry: Any
            for entry in meta.indexes:
                if isinstance(entry, (list, tuple)):
                    parts, unique = entry
                    entry = (
                        tuple(new_attr if p in (old_attr, old_col) else p for p in parts),
                        unique,
                    )
                elif isinstance(entry, pw.ModelIndex) and renames:
                    index = _untyped(entry)
                    index._expressions = [_sql_node(e, renames) for e in index._expressions]
                    if index._where is not None:
                        index._where = _sql_node(index._where, renames)
                rewritten.append(entry)
            meta.indexes = rewritten
            if renames:
                # PostgreSQL rewrites expressions that mention the column; so does the model.
                meta.constraints = [_sql_node(c, renames) for c in meta.constraints or ()]
                for f in meta.sorted_fields:
                    if f.constraints:
                        f.constraints = [_sql_node(c, renames) for c in f.constraints]

        return self._alter(cls, mutate, ops.RenameColumn, renames=renames, old=old_col,
                           new=new_column)

    def rename_field(self, model: ModelRef, old_name: str, new_name: str) -> type[pw.Model]:
        """Rename a field and its column (peewee-migrate's operation, data kept)."""
        cls = self._get(model)
        field = self._field(cls, old_name)
        new_column = new_name
        if isinstance(field, pw.ForeignKeyField) and field.column_name.endswith("_id"):
            new_column = new_name + "_id"
        return self.rename_column(cls, field.column_name, new_column, field_name=new_name)

    def add_not_null(
        self, model: ModelRef, *names: str, online: bool = False
    ) -> type[pw.Model]:
        """Make columns NOT NULL, filling NULLs from the server or Python default first.

        ``online``: the NULLs filled in batches, then a validated CHECK lets
        ``SET NOT NULL`` skip its scan (run it with ``atomic = False``).
        """
        cls = self._get(model)
        targets = [self._field(cls, n) for n in names]

        def mutate() -> None:
            for f in targets:
                f.null = False

        return self._alter(cls, mutate, ops.AddNotNull, online=online, columns=tuple(names))

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

    def drop_not_null(self, model: ModelRef, *names: str) -> type[pw.Model]:
        """Allow NULL in columns."""
        cls = self._get(model)
        targets = [self._field(cls, n) for n in names]

        def mutate() -> None:
            for f in targets:
                f.null = True

        return self._alter(cls, mutate, ops.DropNotNull, columns=tuple(names))

    # -- indexes ------------------------------------------------------------------

    def add_index(
        self, model: ModelRef, *columns: str, unique: bool = False, **index_params: Any
    ) -> type[pw.Model]:
        """Add an index on fields or columns, named as peewee names it (``<table>_<columns>``)."""
        cls = self._get(model)
        if index_params:
            fields = [self._field(cls, c) for c in columns]
            probe: Any = pw.ModelIndex(cls, fields)
            name = probe._name
            return self.add_named_index(cls, name, *columns, unique=unique, **index_params)
        index: Any = pw.ModelIndex(cls, [self._field(cls, c) for c in columns])

        def mutate() -> None:
            cls._meta.indexes = [*cls._meta.indexes, (tuple(columns), unique)]

        return self._alter(cls, mutate, ops.AddIndex, name=index._name, unique=unique)

    def drop_index(self, model: ModelRef, *columns: str) -> type[pw.Model]:
        """Drop the index on exactly these fields or columns (by its real name)."""
        cls = self._get(model)
        fields = [self._field(cls, c) for c in columns]
        for _, index in index_entries(cls):
            exprs = list(getattr(index, "_expressions", ()))
            if len(exprs) == len(fields) and all(map(operator.is_, exprs, fields)):
                return self.drop_named_index(cls, index._name)
        raise UnsupportedChange(
            f"table {cls._meta.table_name} has no index on ({', '.join(columns)}) in the "
            "migration history"
        )

    def add_named_index(
        self,
        model: ModelRef,
        name: str,
        *expressions: str | pw.Node,
        unique: bool = False,
        where: str | pw.Node | None = None,
        using: str | None = None,
        nulls_distinct: bool | None = None,
        online: bool = False,
    ) -> type[pw.Model]:
        """Add an index named ``name``; strings are field names, nodes are SQL expressions.

        ``where`` makes a partial index (text or a peewee node); ``online``
        builds it ``CONCURRENTLY`` (run it with ``atomic = False``).
        """
        cls = self._get(model)
        exprs: list[Any] = [
            self._field(cls, e) if isinstance(e, str) else e for e in expressions
        ]
        where_node = pw.SQL(where) if isinstance(where, str) else where

        def mutate() -> None:
            index = pw.ModelIndex(
                cls, exprs, unique=unique, where=where_node, using=using, name=name,
                nulls_distinct=nulls_distinct,
            )
            cls._meta.indexes = [*cls._meta.indexes, index]

        return self._alter(cls, mutate, ops.AddIndex, online=online, name=name, unique=unique)

    def drop_named_index(
        self, model: ModelRef, name: str, *, online: bool = False
    ) -> type[pw.Model]:
        """Drop the index named ``name`` (a field's ``index``/``unique`` or a Meta index).

        ``online``: ``DROP INDEX CONCURRENTLY IF EXISTS`` (run it with ``atomic = False``).
        """
        cls = self._get(model)
        meta = cls._meta
        for origin, index in index_entries(cls):
            if getattr(index, "_name", None) != name:
                continue
            kind, _, ref = origin.partition(":")

            def mutate(kind: str = kind, ref: str = ref) -> None:
                if kind == "field":
                    f = meta.fields[ref]
                    f.index = f.unique = False
                else:
                    entries = list(meta.indexes)
                    del entries[int(ref)]
                    meta.indexes = entries

            return self._alter(cls, mutate, ops.DropIndex, online=online, name=name)
        raise UnsupportedChange(
            f"table {meta.table_name} has no index named {name!r} in the migration history"
        )

    def rename_index(self, model: ModelRef, old_name: str, new_name: str) -> type[pw.Model]:
        """Rename an index declared in ``Meta.indexes``."""
        cls = self._get(model)
        meta = cls._meta
        for origin, index in index_entries(cls):
            if getattr(index, "_name", None) != old_name:
                continue
            kind, _, ref = origin.partition(":")
            if kind != "meta":
                raise UnsupportedChange(
                    f"index {old_name} of {meta.table_name} comes from a field's index/unique "
                    "flag and is named by peewee; rename the field or table instead"
                )

            def mutate(pos: int = int(ref), index: Any = index) -> None:
                renamed = pw.ModelIndex(
                    cls, list(index._expressions), unique=index._unique, where=index._where,
                    using=index._using, name=new_name, nulls_distinct=index._nulls_distinct,
                )
                entries = list(meta.indexes)
                entries[pos] = renamed
                meta.indexes = entries

            return self._alter(cls, mutate, ops.RenameIndex, old=old_name, new=new_name)
        raise UnsupportedChange(
            f"table {meta.table_name} has no index named {old_name!r} in the migration history"
        )
