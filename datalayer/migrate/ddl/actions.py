"""What a statement does that the rows of a table could make fail, as data.

The checks before DDL (:mod:`..runtime.prechecks`) need, for each statement of
a pending migration, the UNIQUE index or constraint, CHECK, foreign key,
SET NOT NULL, type change or validation it adds, the rows it writes, or that
it cannot be read.  A ddl planner attaches these to the :class:`~.spec.Sql` it
builds (:meth:`~.spec.Sql.doing`), so a generated statement is never read back
from its text; :mod:`..runtime.statements` reads hand-written SQL into the same
classes.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "Action",
    "AddColumn",
    "Check",
    "Fill",
    "ForeignKey",
    "NotNull",
    "Opaque",
    "Planned",
    "TypeChange",
    "Unique",
    "Validate",
    "Writes",
]


@dataclasses.dataclass(frozen=True)
class Unique:
    """A UNIQUE index or constraint (or a primary key) over ``elements`` of ``table``."""

    table: str
    elements: tuple[str, ...]
    name: str = ""
    where: str = ""
    nulls_distinct: bool = True
    primary_key: bool = False


@dataclasses.dataclass(frozen=True)
class Check:
    """``ADD CHECK (expression)``; ``not_valid``: the rows are checked only by a later VALIDATE."""

    table: str
    expression: str
    name: str = ""
    not_valid: bool = False


@dataclasses.dataclass(frozen=True)
class ForeignKey:
    """``ADD FOREIGN KEY (columns) REFERENCES parent (parent_columns)``; () : its primary key."""

    table: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    name: str = ""
    not_valid: bool = False


@dataclasses.dataclass(frozen=True)
class NotNull:
    """``ALTER COLUMN column SET NOT NULL``."""

    table: str
    column: str


@dataclasses.dataclass(frozen=True)
class TypeChange:
    """``ALTER COLUMN column TYPE type [USING expression]``."""

    table: str
    column: str
    type: str
    using: str = ""


@dataclasses.dataclass(frozen=True)
class Validate:
    """``VALIDATE CONSTRAINT name`` (``name`` empty: every NOT VALID one of the table)."""

    table: str
    name: str = ""


@dataclasses.dataclass(frozen=True)
class AddColumn:
    """``ADD COLUMN column``: new, so nothing about it can be checked beforehand."""

    table: str
    column: str


@dataclasses.dataclass(frozen=True)
class Fill:
    """A batched fill of the NULLs of ``column`` (:class:`.._ddl.BatchFill`)."""

    table: str
    column: str


@dataclasses.dataclass(frozen=True)
class Writes:
    """A statement that changes rows of ``table`` (UPDATE, DELETE, INSERT, TRUNCATE)."""

    table: str


@dataclasses.dataclass(frozen=True)
class Opaque:
    """Python code, or SQL of a shape not read here: it may change anything."""

    what: str


Action = Unique | Check | ForeignKey | NotNull | TypeChange | Validate | AddColumn | Fill | Writes
Planned = Action | Opaque
