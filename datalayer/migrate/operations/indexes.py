"""Operations on indexes: add, drop, rename.  Their SQL is the specs' difference."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import Operation, Phase, TableChange

__all__ = ["AddIndex", "DropIndex", "RenameIndex"]


@dataclasses.dataclass(frozen=True)
class AddIndex(TableChange):
    name: str = ""
    unique: bool = False
    kind: ClassVar[str] = "add index"
    phase: ClassVar[Phase] = Phase.EXPAND

    def describe(self) -> str:
        what = "unique index" if self.unique else "index"
        return f"add {what} {self.name or '(named by peewee)'} on {self.table}"

    def inverse(self) -> Operation | None:
        return self._back(DropIndex, name=self.name) if self.name else None


@dataclasses.dataclass(frozen=True)
class DropIndex(TableChange):
    name: str = ""
    kind: ClassVar[str] = "drop index"

    def describe(self) -> str:
        return f"drop index {self.name} of {self.table}"

    def inverse(self) -> Operation:
        index = self.need(self.before).index(self.name)
        return self._back(AddIndex, name=self.name, unique=bool(index and index.unique))


@dataclasses.dataclass(frozen=True)
class RenameIndex(TableChange):
    old: str = ""
    new: str = ""
    kind: ClassVar[str] = "rename index"
    phase: ClassVar[Phase] = Phase.EXPAND

    def describe(self) -> str:
        return f"rename index {self.old} of {self.table} to {self.new}"

    def inverse(self) -> Operation:
        return self._back(RenameIndex, old=self.new, new=self.old)
