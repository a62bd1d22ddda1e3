"""The migrator's table operations: create, drop, rename, move, key, constraints."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import peewee as pw

from .. import operations as ops
from ..ddl.spec import (
    TableSpec,
    UnsupportedChange,
    _untyped,
)
from .migrator_core import MigratorCore, ModelRef
from .recording import table_spec

__all__ = ["TableMethods"]


class TableMethods(MigratorCore):
    """Operations on whole tables (see :class:`.migrator.DatalayerMigrator`)."""

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
