"""Operations that leave the schema as it is: fills, validation, checks, SQL and Python."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Operation, Phase

if TYPE_CHECKING:
    from ..ddl.alter import Step

__all__ = [
    "Backfill",
    "BackgroundBackfill",
    "PythonFunction",
    "RawSql",
    "RequireEmpty",
    "ValidateConstraints",
]


@dataclasses.dataclass(frozen=True)
class Backfill(Operation):
    """Fill the NULLs of ``columns`` (column names) from their defaults, in batches."""

    columns: tuple[str, ...] = ()
    batch_size: int = 1000
    kind: ClassVar[str] = "backfill"
    phase: ClassVar[Phase] = Phase.EXPAND
    irreversible: ClassVar[str | None] = "it only fills NULLs; there is nothing to undo"

    def describe(self) -> str:
        return f"fill the NULLs of {', '.join(self.columns)} of {self.table} in batches"

    def sql(self, *, postgres: int = 12, safe: bool = False) -> tuple[Step, ...]:
        from ..ddl.alter import fill_nulls

        spec = self.need(self.before)
        key = spec.primary_key[0] if len(spec.primary_key) == 1 else None
        steps: list[Step] = []
        for name in self.columns:
            col = spec.column(name)
            assert col is not None, name
            steps.extend(fill_nulls(spec.qualified, col, online=True, key=key,
                                    batch_size=self.batch_size))
        return tuple(steps)


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
class ValidateConstraints(Operation):
    kind: ClassVar[str] = "validate constraints"
    phase: ClassVar[Phase] = Phase.EXPAND
    irreversible: ClassVar[str | None] = "validation only checks rows; there is nothing to undo"

    def describe(self) -> str:
        return f"validate the NOT VALID constraints of {self.table}"

    def sql(self, *, postgres: int = 12, safe: bool = False) -> tuple[Step, ...]:
        from ..ddl.alter import validate_constraints

        return (validate_constraints(self.need(self.before).qualified),)


@dataclasses.dataclass(frozen=True)
class RequireEmpty(Operation):
    """A check that runs in its place (:class:`.migrator.RowsGuard`); it has no SQL."""

    reason: str = ""
    column: str = ""  # only rows where this column is not NULL count
    kind: ClassVar[str] = "require empty"
    phase: ClassVar[Phase] = Phase.EXPAND
    irreversible: ClassVar[str | None] = "a check; there is nothing to undo"

    def describe(self) -> str:
        if self.column:
            return f"stop while {self.table}.{self.column} holds values ({self.reason})"
        return f"stop unless table {self.table} is empty ({self.reason})"


@dataclasses.dataclass(frozen=True)
class RawSql(Operation):
    """Hand-written SQL (``migrator.sql``): run as written; only the lint's parser reads it."""

    sql_text: str = ""
    params: tuple[Any, ...] = dataclasses.field(default=(), compare=False)
    kind: ClassVar[str] = "raw SQL"
    irreversible: ClassVar[str | None] = "hand-written SQL: its rollback is hand-written too"

    def describe(self) -> str:
        first = " ".join(self.sql_text.split())
        return f"run SQL: {first[:60]}{'...' if len(first) > 60 else ''}"

    def sql(self, *, postgres: int = 12, safe: bool = False) -> tuple[Step, ...]:
        from ..ddl.spec import Sql

        return (Sql(self.sql_text, self.params),)


@dataclasses.dataclass(frozen=True)
class PythonFunction(Operation):
    name: str = ""
    kind: ClassVar[str] = "python function"
    irreversible: ClassVar[str | None] = "Python code: its rollback is hand-written too"

    def describe(self) -> str:
        return f"run Python: {self.name}()"
