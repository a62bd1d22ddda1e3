"""Operations on columns: add, drop, alter, rename, NOT NULL (SQL: the specs' difference)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import Operation, Phase, TableChange

__all__ = [
    "AddColumns",
    "AddNotNull",
    "AlterColumns",
    "DropColumns",
    "DropNotNull",
    "RenameColumn",
]


@dataclasses.dataclass(frozen=True)
class AddColumns(TableChange):
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
        return self._back(DropColumns, columns=self.columns)


@dataclasses.dataclass(frozen=True)
class DropColumns(TableChange):
    """Its inverse adds the columns back as they were defined (their data is gone)."""

    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "drop column"

    def describe(self) -> str:
        return f"drop column {', '.join(self.columns)} from {self.table}"

    def inverse(self) -> Operation:
        before = self.need(self.before)
        gone = [c for c in before.columns if c.name in self.columns]
        safe = all(c.null or c.default is not None for c in gone)
        return self._back(AddColumns, columns=self.columns, old_code_safe=safe, cascade=False)


@dataclasses.dataclass(frozen=True)
class AlterColumns(TableChange):
    """Its inverse changes the columns back (without a USING: write one if the cast needs it)."""

    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "alter column"

    def describe(self) -> str:
        return f"alter column {', '.join(self.columns)} of {self.table}"

    def inverse(self) -> Operation:
        return self._back(AlterColumns, columns=self.columns, using=())


@dataclasses.dataclass(frozen=True)
class RenameColumn(TableChange):
    old: str = ""
    new: str = ""
    kind: ClassVar[str] = "rename column"

    def describe(self) -> str:
        return f"rename column {self.old} of {self.table} to {self.new}"

    def inverse(self) -> Operation:
        return self._back(RenameColumn, old=self.new, new=self.old)


@dataclasses.dataclass(frozen=True)
class AddNotNull(TableChange):
    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "set not null"

    def describe(self) -> str:
        return f"set not null on {', '.join(self.columns)} of {self.table}"

    def inverse(self) -> Operation:
        return self._back(DropNotNull, columns=self.columns)


@dataclasses.dataclass(frozen=True)
class DropNotNull(TableChange):
    columns: tuple[str, ...] = ()
    kind: ClassVar[str] = "drop not null"
    phase: ClassVar[Phase] = Phase.EXPAND

    def describe(self) -> str:
        return f"drop not null on {', '.join(self.columns)} of {self.table}"

    def inverse(self) -> Operation:
        return self._back(AddNotNull, columns=self.columns)
