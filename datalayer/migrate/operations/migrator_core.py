"""The plumbing every migrator operation goes through: find, change, record, queue.

:class:`MigratorCore` is peewee-migrate's ``Migrator`` with what the operations
(:mod:`.migrator_tables`, :mod:`.migrator_columns`, :mod:`.migrator_indexes`,
:mod:`.migrator_data`) share: :meth:`~MigratorCore._get` and ``_field`` find a table
and a field of the state, :meth:`~MigratorCore._alter` changes the model and builds
the operation from the table's specs before and after (:meth:`~MigratorCore._around`,
which reuses the last spec of a table while nothing else changed it),
:meth:`~MigratorCore._emit` queues the operation's steps and records it.
:func:`bind` points a migrator at a database (a recorder, or a watched real one).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

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
)
from .queued import _UPSTREAM, fill_call, outside_transaction
from .recording import _OPAQUE, Opaque, Recorded, _replaying_now, table_spec

__all__ = ["MigratorCore", "ModelRef", "bind", "bound"]

ModelRef = str | type[pw.Model]


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


_OPERATIONS = "_datalayer_operations"  # the Recorded operations (in the shared __dict__)
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


class MigratorCore(Migrator):
    """peewee-migrate's Migrator with the plumbing of datalayer's operations (see the module)."""

    def take_operations(self) -> list[ops.Operation]:
        """Return the operations recorded since the last call (see :mod:`.operations`)."""
        return [rec.operation for rec in self.take_recorded()]

    def take_recorded(self) -> list[Recorded]:
        """Return each operation recorded since the last call, its callables and their steps."""
        found: list[Recorded] = self.__dict__.pop(_OPERATIONS, [])
        return found

    def _record(self, op: ops.Operation, start: int, steps: Sequence[Step] = ()) -> None:
        """Record ``op`` with the callables queued since ``start`` (its place in ``__ops__``).

        ``steps``: what each of them runs, one a callable (none: Python code, a check,
        hand-written SQL).
        """
        queued = tuple(self.__ops__[start:])
        ran: tuple[Step | None, ...] = tuple(steps) or (None,) * len(queued)
        assert len(ran) == len(queued), (op, ran, queued)
        self.__dict__.setdefault(_OPERATIONS, []).append(Recorded(op, queued, ran))
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
        steps = () if _replaying_now() else tuple(op.sql(safe=op.online))
        self._queue(steps)
        self._record(op, start, steps)

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
        """Queue one callable a step, in order (:meth:`_record` pairs them)."""
        db = self.__database__
        for step in steps:
            if isinstance(step, Sql):
                self.__ops__.append(self.__migrator__.sql(step.text, list(step.params) or None))
                continue
            if isinstance(step, BatchFill):
                op = fill_call(db, step)
                if not step.online:
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
            self.__ops__.append(outside_transaction(self.__dict__, db, op))

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
