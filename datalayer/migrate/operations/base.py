"""What every operation is: an immutable value that knows its state change, SQL and inverse."""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .state import SchemaState

if TYPE_CHECKING:
    from ..ddl.alter import Step
    from ..ddl.spec import TableSpec

__all__ = ["Operation", "Phase", "TableChange"]


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


Specs = tuple[tuple["TableSpec", "TableSpec"], ...]
_O = TypeVar("_O", bound="Operation")


@dataclasses.dataclass(frozen=True)
class Operation:
    """One operation of a migration: its table, its specs before and after, its options.

    ``before`` / ``after`` are the table's specs around the operation (None in a
    replay, which keeps no specs); ``referrers`` the (before, after) specs of the
    other tables it changes (a foreign key to a renamed table or retyped key).
    ``online`` is the form the migration file asked for (:meth:`sql`'s ``safe``).
    ``call`` is the migrator call that builds the operation, as the generator writes it
    (a :class:`~..autogenerate.code.Step`: it renders the file's text); None for an
    operation recorded from a file.
    """

    table: str
    before: TableSpec | None = dataclasses.field(default=None, compare=False, repr=False)
    after: TableSpec | None = dataclasses.field(default=None, compare=False, repr=False)
    referrers: Specs = dataclasses.field(default=(), compare=False, repr=False)
    online: bool = False
    call: Any = dataclasses.field(default=None, compare=False, repr=False)

    kind: ClassVar[str] = "operation"
    phase: ClassVar[Phase] = Phase.CONTRACT
    irreversible: ClassVar[str | None] = None
    """Why the operation has no inverse (None: :meth:`inverse` returns one)."""

    def describe(self) -> str:
        """Return one line saying what the operation does."""
        return f"{self.kind} on {self.table}"

    @property
    def method(self) -> str:
        """Return the migrator method that builds it, as its ``call`` names it (else its kind)."""
        return str(getattr(self.call, "method", self.kind))

    def inverse(self) -> Operation | None:
        """Return the operation that undoes this one, or None (see ``irreversible``)."""
        return None

    def forward(self, state: SchemaState) -> SchemaState:
        """Return ``state`` after this operation (pure: no database, no model)."""
        return state

    def sql(self, *, postgres: int = 12, safe: bool = False) -> tuple[Step, ...]:
        """Return its statements for PostgreSQL ``postgres``: the online form when ``safe``."""
        return ()

    def statements(self, *, postgres: int = 12) -> list[Any]:
        """Return the statements of the form the file asked for, with their lock facts."""
        from ..ddl.effects import statement_of

        steps = self.sql(postgres=postgres, safe=self.online)
        return [statement_of(step, postgres=postgres) for step in steps]

    @property
    def transactional(self) -> bool:
        """Whether every statement of the operation can run inside a transaction block."""
        return all(s.transactional for s in self.statements())

    def specs(self) -> tuple[TableSpec, TableSpec]:
        """Return ``(before, after)`` (see :meth:`need`)."""
        return self.need(self.before), self.need(self.after)

    def need(self, spec: TableSpec | None) -> TableSpec:
        """Return ``spec``.

        :raises ValueError: for an operation recorded by a replay (it keeps no specs).
        """
        if spec is None:
            raise ValueError(
                f"{self.describe()}: recorded without the table's specs (a replay keeps "
                "none); record it with a migrator that is not replaying"
            )
        return spec

    def _put(self, state: SchemaState) -> SchemaState:
        """Return ``state`` with the table (and its referrers) as they are after."""
        return state.put(*(a for _, a in self.referrers), self.need(self.after))

    def _swapped(self, cls: type[_O], **fields: Any) -> _O:
        """Return an operation of ``cls`` from ``after`` back to ``before`` (:meth:`inverse`)."""
        return cls(
            fields.pop("table", self.table), before=self.after, after=self.before,
            referrers=tuple((a, b) for b, a in self.referrers), online=self.online, **fields,
        )


@dataclasses.dataclass(frozen=True)
class TableChange(Operation):
    """An operation whose SQL is the difference between the table's two specs.

    ``renames`` maps old column names to new ones (renamed, not dropped and
    added); ``using`` a column to its type change's ``USING``; ``cascade`` drops
    columns with what depends on them.
    """

    renames: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)
    using: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)
    cascade: bool = False

    def forward(self, state: SchemaState) -> SchemaState:
        return self._put(state)

    def sql(self, *, postgres: int = 12, safe: bool = False) -> tuple[Step, ...]:
        from ..ddl.alter import plan_alter

        before, after = self.specs()
        return tuple(plan_alter(
            before, after, renames=dict(self.renames), using=dict(self.using), online=safe,
            cascade=self.cascade,
        ))

    def _back(self, cls: type[_O], **fields: Any) -> _O:
        """Return the :class:`TableChange` of ``cls`` that undoes this one."""
        renames = tuple((new, old) for old, new in self.renames)
        return self._swapped(cls, renames=renames, **fields)
