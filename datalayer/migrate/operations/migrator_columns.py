"""The migrator's column operations: add, drop, change, rename, NOT NULL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import peewee as pw

from .. import operations as ops
from ..ddl.spec import (
    Sql,
    _untyped,
    rename_identifier,
)
from .migrator_core import MigratorCore, ModelRef

__all__ = ["ColumnMethods"]


def _sql_node(node: Any, renames: Mapping[str, str]) -> Any:
    """Return ``node`` with column names rewritten if it is a plain ``SQL`` node."""
    if isinstance(node, pw.SQL) and not isinstance(node, pw.Entity):
        sql = rename_identifier(Sql(node.sql, tuple(node.params or ())), renames)
        return pw.SQL(sql.text, list(sql.params) or None)
    return node


def _server_default(field: pw.Field) -> bool:
    return any("DEFAULT" in str(getattr(c, "sql", "")).upper() for c in field.constraints or ())


class ColumnMethods(MigratorCore):
    """Operations on columns (see :class:`.migrator.DatalayerMigrator`)."""

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

    def drop_not_null(self, model: ModelRef, *names: str) -> type[pw.Model]:
        """Allow NULL in columns."""
        cls = self._get(model)
        targets = [self._field(cls, n) for n in names]

        def mutate() -> None:
            for f in targets:
                f.null = True

        return self._alter(cls, mutate, ops.DropNotNull, columns=tuple(names))
