"""What every operation is: an immutable value with a phase, a description and an inverse."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

__all__ = ["Operation", "Phase"]


class Phase(enum.Enum):
    """Whether an operation keeps the running (previous) release of the application working.

    ``EXPAND`` only adds: old and new code both keep working (a new table, a
    nullable column, an index, a NOT VALID constraint and its validation, a
    backfill).  ``CONTRACT`` removes or narrows what old code may use (a drop,
    a rename, SET NOT NULL, a type change); so does anything datalayer cannot
    see into (hand-written SQL, a Python function).
    """

    EXPAND = "expand"
    CONTRACT = "contract"


@dataclasses.dataclass(frozen=True)
class Operation:
    """One operation of a migration, as the migrator's method that made it was called.

    ``steps`` are the SQL steps it queued (none in a replay, which derives no
    SQL); ``queued`` the callables that run them.  Subclasses set ``kind`` and
    ``phase`` and say how to describe and invert themselves.
    """

    table: str
    steps: tuple[Any, ...] = dataclasses.field(default=(), compare=False, repr=False)
    queued: tuple[Any, ...] = dataclasses.field(default=(), compare=False, repr=False)
    """The migrator's queued callables for it (``migrator.__ops__`` entries), in order:
    what a phased apply (:mod:`..runtime.phases`) keeps or leaves out."""
    specs: tuple[Any, Any] | None = dataclasses.field(default=None, compare=False, repr=False)
    """The table's spec before and after it, for the kinds a phased apply rewrites
    (a rename, a column drop); None elsewhere and in a replay."""

    kind: ClassVar[str] = "operation"
    phase: ClassVar[Phase] = Phase.CONTRACT
    irreversible: ClassVar[str | None] = None
    """Why the operation has no inverse (None: :meth:`inverse` returns one)."""

    def describe(self) -> str:
        """Return one line saying what the operation does."""
        return f"{self.kind} on {self.table}"

    def inverse(self) -> Operation | None:
        """Return the operation that undoes this one, or None (see ``irreversible``)."""
        return None

    @property
    def transactional(self) -> bool:
        """Whether every statement of the operation can run inside a transaction block."""
        from ..ddl.alter import Online

        return not any(isinstance(step, Online) for step in self.steps)

    def statements(self, *, postgres: int = 12) -> list[Any]:
        """Return the statements of the queued steps with their lock facts (:mod:`..plan`)."""
        from ..ddl.effects import statement_of

        return [statement_of(step, postgres=postgres) for step in self.steps]
