"""A migration plan as data: operations, their statements, and what each statement locks.

The generator (:mod:`.compare`) builds a :class:`Plan` from the difference
between the migration history and the models: one or more
:class:`PlannedMigration` (files), each a list of operations
(:mod:`..operations` values, each with the migrator call that builds it)
with the operations of its rollback.  Every operation gives the
:class:`~..ddl.effects.Statement` objects it runs (``Operation.statements``), and every
statement says, for the target PostgreSQL version, which lock it takes on which
table, whether it scans or rewrites the table, and whether it can run in a
transaction.  The file text is rendered from the operations' calls
(:mod:`.render`); ``migrate sql``, ``migrate lint`` and ``squash`` can read the
same objects (:func:`..ddl.effects.describe` gives the same report for one
statement of SQL text).

Lock levels are PostgreSQL's (``Lock``, from :mod:`.facts`), weakest first;
``Lock.blocks`` says what a held lock holds up: ``reads``, ``writes``, ``DDL``.
Which lock, scan and rewrite each kind of statement has is
:data:`.facts.EFFECTS` (the lint reads the same table).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..ddl.effects import Statement, describe
from ..facts import Lock
from ..operations import Operation

if TYPE_CHECKING:
    from ..operations.recording import Recorded

__all__ = [
    "Lock",
    "MigrationStatements",
    "Plan",
    "PlannedMigration",
    "operation_statements",
    "read_migrations",
]


@dataclasses.dataclass(frozen=True)
class PlannedMigration:
    """One migration file: its operations, the rollback's, and whether it is one transaction.

    ``operations`` and ``rollback`` are :mod:`..operations` values, each with the
    migrator call that builds it (``Operation.call``, what the file says);
    ``rollback`` is the inverse of ``operations`` as a whole, in the order it runs.
    """

    suffix: str  # "" for the first file, "_2", "_3" ... for the next ones
    atomic: bool
    operations: tuple[Operation, ...]
    rollback: tuple[Operation, ...]
    postgres: int = 12

    def statements(self, *, rollback: bool = False) -> Iterator[Statement]:
        """Yield the statements of the migration (or of its rollback) in order."""
        for op in self.rollback if rollback else self.operations:
            yield from op.statements(postgres=self.postgres)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The migrations that take the history's schema to the models', and what to know."""

    migrations: tuple[PlannedMigration, ...]
    warnings: tuple[str, ...] = ()
    postgres: int = 12
    online: bool = True  # False: ``unsafe``, the plain forms were written

    def __bool__(self) -> bool:
        return bool(self.migrations)

    def statements(self) -> Iterator[Statement]:
        for migration in self.migrations:
            yield from migration.statements()

    def operations(self) -> Iterator[Operation]:
        """Yield the operations of every file, in the order they run."""
        for migration in self.migrations:
            yield from migration.operations


# -- the statements of migration files ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MigrationStatements:
    """The statements a migration file runs (and its rollback), read without a database."""

    name: str
    atomic: bool
    statements: tuple[Statement, ...]
    rollback: tuple[Statement, ...]


def _render_queued(queued: Any, recorder: Any, postgres: int) -> list[Statement]:
    """Return the statements of a queued callable no operation speaks for, run on the recorder.

    An upstream peewee-migrate operation (its SQL recorded), or Python code.
    """
    from playhouse.migrate import Operation as Upstream

    if not isinstance(queued, Upstream):  # migrator.run(fn), a check: Python code
        name = getattr(queued, "__name__", type(queued).__name__)
        return [Statement(f"-- runs Python: {name}()")]
    recorder.take()
    try:
        queued.run()  # its schema migrator is bound to the recorder: nothing runs
    except Exception as exc:  # an upstream operation that reads the catalog first
        recorder.take()
        return [Statement(f"-- {getattr(queued.fn, '__name__', 'operation')}: cannot be shown "
                          f"without a database ({type(exc).__name__})")]
    return [
        dataclasses.replace(describe(text, postgres=postgres), params=params)
        for text, params in recorder.take()
    ]


def operation_statements(
    recorded: Iterable[Recorded],
    queued: Iterable[Any],
    recorder: Any,
    postgres: int,
) -> list[Statement]:
    """Return the statements of a migrator's queue, each operation's from the operation itself.

    ``recorded`` is ``take_recorded()``: each operation with the callables it queued.
    An operation with statements gives them (``Operation.statements``, hand-written
    ``migrator.sql`` parsed from its text); the callables of one without (Python
    code, a check) and those no operation queued (upstream peewee-migrate's) are
    shown as they run on ``recorder``.
    """
    from ..operations.recording import Owners

    owners = Owners(recorded)
    queued = list(queued)
    found: list[Statement] = []
    done: set[int] = set()
    for call in queued:
        op = owners.operation(call)
        if op is None:
            found.extend(_render_queued(call, recorder, postgres))
            continue
        if id(op) in done:
            continue
        done.add(id(op))
        mine = op.statements(postgres=postgres)
        if mine:
            found.extend(mine)
        else:
            for own in (q for q in queued if owners.operation(q) is op):
                found.extend(_render_queued(own, recorder, postgres))
    return found


def read_migrations(
    router: Any, names: Iterable[str] | None = None, *, postgres: int = 12
) -> list[MigrationStatements]:
    """Return the statements of migration files ``names`` (default: all), in order.

    The history is replayed in memory up to each file (no database is
    queried); the file's ``migrate`` and then its ``rollback`` are run with
    every operation collected instead of executed: generated operations,
    ``migrator.sql(...)`` and upstream peewee-migrate operations alike, and
    statements the file sends through ``database.execute_sql`` directly.
    ``router`` is datalayer's :class:`~datalayer.migrate.router.Router`.
    """
    from ...errors import MigrationError

    todo = list(router.todo)
    wanted = list(todo if names is None else names)
    unknown = [n for n in wanted if n not in todo]
    if unknown:
        raise MigrationError(
            f"no migration {', '.join(unknown)} in {router.migrate_dir}; "
            "`datalayer migrate status` lists them"
        )
    from ..runtime.recorder import Recorder

    recorder = Recorder(postgres)
    migrator = router.migrator_class(recorder)  # datalayer's: it records operations
    out: list[MigrationStatements] = []

    def collect(fn: Any) -> tuple[Statement, ...]:
        migrator.__ops__ = []
        migrator.take_recorded()
        recorder.take()
        fn(migrator, recorder, fake=False)
        found = [describe(sql, postgres=postgres) for sql, _ in recorder.take()]
        queued, migrator.__ops__ = list(migrator.__ops__), []
        found.extend(operation_statements(migrator.take_recorded(), queued, recorder, postgres))
        return tuple(found)

    for name in todo:
        loaded = router.load(name)
        if name in wanted:
            forward = collect(loaded.migrate)
            backward = collect(loaded.rollback)
            out.append(MigrationStatements(name, loaded.atomic, forward, backward))
            collect(loaded.migrate)  # back to the state after this file
        else:
            collect(loaded.migrate)
    order = {n: i for i, n in enumerate(wanted)}
    return sorted(out, key=lambda m: order[m.name])
