"""What generating a migration returns or raises: the diff, its files, the drops, the errors."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from ...errors import GenerationError
from ..operations import Operation
from .plan import Plan

__all__ = ["Diff", "DiffFile", "DiffResult", "Drop", "DropRefused"]


@dataclasses.dataclass(frozen=True)
class Drop:
    """A table or column that a migration drops, and the addition it may be a rename of."""

    table: str
    column: str | None = None  # None: the whole table
    renamed_to: str | None = None  # a same-shaped table or column added by the same diff
    hint: str | None = None  # the renamed_from line that makes it a rename

    def __str__(self) -> str:
        if self.column is None:
            text = f"drops table {self.table} and its rows"
            kind, new = "table", self.renamed_to
        else:
            text = f"drops column {self.table}.{self.column} and its data"
            kind, new = "column", f"{self.table}.{self.renamed_to}"
        if self.renamed_to is None:
            return text
        shape = "same column types and nullability" if self.column is None else "same type"
        return (
            f"{text}; it looks renamed to {kind} {new} ({shape}), and without a hint the "
            f"rows are not carried over: if it was renamed, add {self.hint}"
        )


class DropRefused(GenerationError):
    """The migration would drop tables or columns and drops were not allowed; see ``drops``."""

    def __init__(self, drops: Sequence[Drop]) -> None:
        self.drops = tuple(drops)
        super().__init__(
            "nothing written: this migration would drop data; mark renames with renamed_from, "
            "or run again with --allow-drop (create_migration(..., allow_drop=True)) if the "
            "drops are wanted",
            [str(d) for d in self.drops],
        )


@dataclasses.dataclass(frozen=True)
class DiffFile:
    """One file of a migration: its name suffix, whether it is one transaction, its bodies.

    ``operations`` and ``rollback_operations`` are what the bodies are rendered from
    (each operation's ``call``).
    """

    suffix: str
    atomic: bool
    migrate: str
    rollback: str
    operations: tuple[Operation, ...] = ()
    rollback_operations: tuple[Operation, ...] = ()


@dataclasses.dataclass(frozen=True)
class Diff:
    """The bodies of ``migrate`` and ``rollback`` (template-ready), the warnings and drops.

    ``files`` has one entry per file to write; ``migrate`` and ``rollback``
    join them (for display); ``plan`` is the plan they were written from.
    """

    migrate: str
    rollback: str
    warnings: tuple[str, ...] = ()
    drops: tuple[Drop, ...] = ()
    files: tuple[DiffFile, ...] = ()
    plan: Plan | None = None

    def __bool__(self) -> bool:
        return bool(self.migrate)


@dataclasses.dataclass(frozen=True)
class DiffResult:
    """A migration file just written: its path, its name and the generator's warnings."""

    path: Path
    name: str
    warnings: tuple[str, ...] = ()
    paths: tuple[Path, ...] = ()  # every file written, the first is ``path``
    names: tuple[str, ...] = ()
    plan: Plan | None = None

    def __fspath__(self) -> str:
        return os.fspath(self.path)
