"""Operations on whole tables: create, drop, rename, move, and table-wide definitions."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from .base import Operation, Phase, TableChange
from .state import SchemaState

if TYPE_CHECKING:
    from ..ddl.alter import Step

__all__ = [
    "GONE",
    "CreateTable",
    "DropTable",
    "RenameTable",
    "SetConstraints",
    "SetModelMeta",
    "SetPrimaryKey",
    "SetSchema",
]

GONE = "the data it removes is gone; the rollback must rebuild it from elsewhere"


@dataclasses.dataclass(frozen=True)
class CreateTable(Operation):
    """``after`` is the new table's spec with its CREATE statements."""

    kind: ClassVar[str] = "create table"
    phase: ClassVar[Phase] = Phase.EXPAND

    def describe(self) -> str:
        return f"create table {self.table}"

    def inverse(self) -> Operation:
        return DropTable(self.table, before=self.after, online=self.online)

    def forward(self, state: SchemaState) -> SchemaState:
        return self._put(state)

    def sql(self, *, postgres: int = 12, safe: bool = False) -> tuple[Step, ...]:
        from ..ddl.alter import plan_create

        return tuple(plan_create(self.need(self.after)))


@dataclasses.dataclass(frozen=True)
class DropTable(Operation):
    """``before`` is the dropped table's spec; ``referrers`` the tables ``cascade`` changes."""

    cascade: bool = False
    kind: ClassVar[str] = "drop table"
    irreversible: ClassVar[str | None] = GONE

    def describe(self) -> str:
        return f"drop table {self.table}"

    def forward(self, state: SchemaState) -> SchemaState:
        """The table goes; with ``cascade``, the foreign keys that referred to it too."""
        return state.without(self.table).put(*(a for _, a in self.referrers))

    def sql(self, *, postgres: int = 12, safe: bool = False) -> tuple[Step, ...]:
        """``DROP TABLE``; with ``cascade`` it also locks the tables whose foreign keys go."""
        from ..ddl.alter import plan_drop
        from ..ddl.spec import Sql

        steps = tuple(plan_drop(self.need(self.before), cascade=self.cascade))
        if not (self.cascade and self.referrers):
            return steps
        others = tuple(b.qualified for b, _ in self.referrers)
        return tuple(s.of(s.kind, *s.tables, *others) if isinstance(s, Sql) else s
                     for s in steps)


@dataclasses.dataclass(frozen=True)
class RenameTable(Operation):
    """``table`` is the new name, ``old`` the old one."""

    old: str = ""
    kind: ClassVar[str] = "rename table"

    def describe(self) -> str:
        return f"rename table {self.old} to {self.table}"

    def inverse(self) -> Operation:
        return self._swapped(RenameTable, table=self.old, old=self.table)

    def forward(self, state: SchemaState) -> SchemaState:
        return self._put(state.without(self.old))

    def sql(self, *, postgres: int = 12, safe: bool = False) -> tuple[Step, ...]:
        from ..ddl.alter import plan_rename_table

        return tuple(plan_rename_table(*self.specs()))


@dataclasses.dataclass(frozen=True)
class SetSchema(Operation):
    schema: str | None = None
    old_schema: str | None = None
    kind: ClassVar[str] = "set schema"

    def describe(self) -> str:
        return f"move table {self.table} to schema {self.schema or 'public'}"

    def inverse(self) -> Operation:
        return self._swapped(SetSchema, schema=self.old_schema, old_schema=self.schema)

    def forward(self, state: SchemaState) -> SchemaState:
        return self._put(state)

    def sql(self, *, postgres: int = 12, safe: bool = False) -> tuple[Step, ...]:
        from ..ddl.alter import plan_set_schema

        return tuple(plan_set_schema(*self.specs()))


@dataclasses.dataclass(frozen=True)
class SetModelMeta(TableChange):
    """``options`` as set, ``previous`` as they were.

    ``Meta.name`` and ``legacy_table_names`` name the field indexes (no SQL);
    ``table_settings``' storage parameters are set and reset (:func:`..ddl.tables.plan_settings`).
    """

    options: tuple[tuple[str, object], ...] = ()
    previous: tuple[tuple[str, object], ...] = dataclasses.field(default=(), compare=False)
    kind: ClassVar[str] = "set model meta"
    phase: ClassVar[Phase] = Phase.EXPAND

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options)
        if all(k == "table_settings" for k, _ in self.options):
            return f"set {opts} on {self.table}"
        return f"set {opts} on {self.table} (renames its field indexes)"

    def inverse(self) -> Operation:
        return self._back(SetModelMeta, options=self.previous, previous=self.options)


@dataclasses.dataclass(frozen=True)
class SetConstraints(TableChange):
    count: int = 0
    kind: ClassVar[str] = "set constraints"

    def describe(self) -> str:
        return f"set the {self.count} table constraint(s) of {self.table}"

    def inverse(self) -> Operation:
        before = self.need(self.before)
        return self._back(SetConstraints, count=len(before.checks) + len(before.constraints))


@dataclasses.dataclass(frozen=True)
class SetPrimaryKey(TableChange):
    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "set primary key"

    def describe(self) -> str:
        if not self.columns:
            return f"drop the primary key of {self.table} (its columns stay)"
        return f"make ({', '.join(self.columns)}) the primary key of {self.table}"

    def inverse(self) -> Operation:
        before, _ = self.specs()
        return self._back(SetPrimaryKey, columns=before.primary_key)
