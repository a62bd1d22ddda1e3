"""The migrator's index operations: add, drop and rename, by columns or by name."""

from __future__ import annotations

import operator
from typing import Any

import peewee as pw

from .. import operations as ops
from ..ddl.spec import (
    UnsupportedChange,
    index_entries,
)
from .migrator_core import MigratorCore, ModelRef

__all__ = ["IndexMethods"]


class IndexMethods(MigratorCore):
    """Operations on indexes (see :class:`.migrator.DatalayerMigrator`)."""

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
