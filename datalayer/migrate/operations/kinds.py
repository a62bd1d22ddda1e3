"""One small immutable class per kind of operation the migrator builds."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import Operation, Phase

__all__ = [
    "AddColumns",
    "AddIndex",
    "AddNotNull",
    "AlterColumns",
    "Backfill",
    "BackgroundBackfill",
    "CreateTable",
    "DropColumns",
    "DropIndex",
    "DropNotNull",
    "DropTable",
    "PythonFunction",
    "RawSql",
    "RenameColumn",
    "RenameIndex",
    "RenameTable",
    "RequireEmpty",
    "SetConstraints",
    "SetModelMeta",
    "SetPrimaryKey",
    "SetSchema",
    "ValidateConstraints",
]

_GONE = "the data it removes is gone; the rollback must rebuild it from elsewhere"


@dataclasses.dataclass(frozen=True)
class CreateTable(Operation):
    kind: ClassVar[str] = "create table"
    phase: ClassVar[Phase] = Phase.EXPAND

    def describe(self) -> str:
        return f"create table {self.table}"

    def inverse(self) -> Operation:
        return DropTable(self.table)


@dataclasses.dataclass(frozen=True)
class DropTable(Operation):
    kind: ClassVar[str] = "drop table"
    irreversible: ClassVar[str | None] = _GONE

    def describe(self) -> str:
        return f"drop table {self.table}"


@dataclasses.dataclass(frozen=True)
class RenameTable(Operation):
    old: str = ""
    kind: ClassVar[str] = "rename table"

    def describe(self) -> str:
        return f"rename table {self.old} to {self.table}"

    def inverse(self) -> Operation:
        return RenameTable(self.old, old=self.table)


@dataclasses.dataclass(frozen=True)
class SetSchema(Operation):
    schema: str | None = None
    old_schema: str | None = None
    kind: ClassVar[str] = "set schema"

    def describe(self) -> str:
        return f"move table {self.table} to schema {self.schema or 'public'}"

    def inverse(self) -> Operation:
        return SetSchema(self.table, schema=self.old_schema, old_schema=self.schema)


@dataclasses.dataclass(frozen=True)
class SetModelMeta(Operation):
    options: tuple[tuple[str, object], ...] = ()
    kind: ClassVar[str] = "set model meta"
    phase: ClassVar[Phase] = Phase.EXPAND
    irreversible: ClassVar[str | None] = "the previous options are not kept in the operation"

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options)
        return f"set {opts} on {self.table} (renames its field indexes)"


@dataclasses.dataclass(frozen=True)
class AddColumns(Operation):
    columns: tuple[str, ...] = ()
    old_code_safe: bool = True
    """Each column is nullable or has a server default: old code's INSERTs still work."""

    kind: ClassVar[str] = "add column"

    @property
    def phase(self) -> Phase:  # type: ignore[override]
        return Phase.EXPAND if self.old_code_safe else Phase.CONTRACT

    def describe(self) -> str:
        return f"add column {', '.join(self.columns)} to {self.table}"

    def inverse(self) -> Operation:
        return DropColumns(self.table, columns=self.columns)


@dataclasses.dataclass(frozen=True)
class DropColumns(Operation):
    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "drop column"
    irreversible: ClassVar[str | None] = _GONE

    def describe(self) -> str:
        return f"drop column {', '.join(self.columns)} from {self.table}"


@dataclasses.dataclass(frozen=True)
class AlterColumns(Operation):
    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "alter column"
    irreversible: ClassVar[str | None] = (
        "the previous definition is in the replayed state, not in the operation"
    )

    def describe(self) -> str:
        return f"alter column {', '.join(self.columns)} of {self.table}"


@dataclasses.dataclass(frozen=True)
class RenameColumn(Operation):
    old: str = ""
    new: str = ""
    kind: ClassVar[str] = "rename column"

    def describe(self) -> str:
        return f"rename column {self.old} of {self.table} to {self.new}"

    def inverse(self) -> Operation:
        return RenameColumn(self.table, old=self.new, new=self.old)


@dataclasses.dataclass(frozen=True)
class AddNotNull(Operation):
    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "set not null"

    def describe(self) -> str:
        return f"set not null on {', '.join(self.columns)} of {self.table}"

    def inverse(self) -> Operation:
        return DropNotNull(self.table, columns=self.columns)


@dataclasses.dataclass(frozen=True)
class DropNotNull(Operation):
    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "drop not null"
    phase: ClassVar[Phase] = Phase.EXPAND

    def describe(self) -> str:
        return f"drop not null on {', '.join(self.columns)} of {self.table}"

    def inverse(self) -> Operation:
        return AddNotNull(self.table, columns=self.columns)


@dataclasses.dataclass(frozen=True)
class Backfill(Operation):
    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "backfill"
    phase: ClassVar[Phase] = Phase.EXPAND
    irreversible: ClassVar[str | None] = "it only fills NULLs; there is nothing to undo"

    def describe(self) -> str:
        return f"fill the NULLs of {', '.join(self.columns)} of {self.table} in batches"


@dataclasses.dataclass(frozen=True)
class BackgroundBackfill(Operation):
    """A background job (``backfill(..., background=True)``): batches after the commit."""

    columns: tuple[str, ...] = ()
    name: str = ""
    kind: ClassVar[str] = "background backfill"
    phase: ClassVar[Phase] = Phase.EXPAND
    irreversible: ClassVar[str | None] = "it changes rows, not the schema"

    def describe(self) -> str:
        return (
            f"background job {self.name or self.table}: update {', '.join(self.columns)} of "
            f"{self.table} in batches after the migration commits"
        )


@dataclasses.dataclass(frozen=True)
class AddIndex(Operation):
    name: str = ""
    unique: bool = False
    kind: ClassVar[str] = "add index"
    phase: ClassVar[Phase] = Phase.EXPAND

    def describe(self) -> str:
        what = "unique index" if self.unique else "index"
        return f"add {what} {self.name or '(named by peewee)'} on {self.table}"

    def inverse(self) -> Operation | None:
        return DropIndex(self.table, name=self.name) if self.name else None


@dataclasses.dataclass(frozen=True)
class DropIndex(Operation):
    name: str = ""
    kind: ClassVar[str] = "drop index"
    irreversible: ClassVar[str | None] = (
        "the index definition is in the replayed state, not in the operation"
    )

    def describe(self) -> str:
        return f"drop index {self.name} of {self.table}"


@dataclasses.dataclass(frozen=True)
class RenameIndex(Operation):
    old: str = ""
    new: str = ""
    kind: ClassVar[str] = "rename index"
    phase: ClassVar[Phase] = Phase.EXPAND

    def describe(self) -> str:
        return f"rename index {self.old} of {self.table} to {self.new}"

    def inverse(self) -> Operation:
        return RenameIndex(self.table, old=self.new, new=self.old)


@dataclasses.dataclass(frozen=True)
class SetConstraints(Operation):
    count: int = 0
    kind: ClassVar[str] = "set constraints"
    irreversible: ClassVar[str | None] = (
        "the previous constraints are in the replayed state, not in the operation"
    )

    def describe(self) -> str:
        return f"set the {self.count} table constraint(s) of {self.table}"


@dataclasses.dataclass(frozen=True)
class SetPrimaryKey(Operation):
    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "set primary key"
    irreversible: ClassVar[str | None] = (
        "the previous key is in the replayed state, not in the operation"
    )

    def describe(self) -> str:
        if not self.columns:
            return f"drop the primary key of {self.table} (its columns stay)"
        return f"make ({', '.join(self.columns)}) the primary key of {self.table}"


@dataclasses.dataclass(frozen=True)
class ValidateConstraints(Operation):
    kind: ClassVar[str] = "validate constraints"
    phase: ClassVar[Phase] = Phase.EXPAND
    irreversible: ClassVar[str | None] = "validation only checks rows; there is nothing to undo"

    def describe(self) -> str:
        return f"validate the NOT VALID constraints of {self.table}"


@dataclasses.dataclass(frozen=True)
class RequireEmpty(Operation):
    reason: str = ""
    kind: ClassVar[str] = "require empty"
    phase: ClassVar[Phase] = Phase.EXPAND
    irreversible: ClassVar[str | None] = "a check; there is nothing to undo"

    def describe(self) -> str:
        return f"stop unless table {self.table} is empty ({self.reason})"


@dataclasses.dataclass(frozen=True)
class RawSql(Operation):
    sql: str = ""
    kind: ClassVar[str] = "raw SQL"
    irreversible: ClassVar[str | None] = "hand-written SQL: its rollback is hand-written too"

    def describe(self) -> str:
        first = " ".join(self.sql.split())
        return f"run SQL: {first[:60]}{'...' if len(first) > 60 else ''}"


@dataclasses.dataclass(frozen=True)
class PythonFunction(Operation):
    name: str = ""
    kind: ClassVar[str] = "python function"
    irreversible: ClassVar[str | None] = "Python code: its rollback is hand-written too"

    def describe(self) -> str:
        return f"run Python: {self.name}()"
