"""A migration plan as data: operations, their statements, and what each statement locks.

The generator (:mod:`.generate`) builds a :class:`Plan` from the difference
between the migration history and the models: one or more
:class:`PlannedMigration` (files), each a list of :class:`Operation`
(calls of :class:`~datalayer.migrate.migrator.DatalayerMigrator`) with the
operations of its rollback.  Every operation carries the
:class:`Statement` objects it runs, and every statement says, for the
target PostgreSQL version, which lock it takes on which table, whether it
scans or rewrites the table, and whether it can run in a transaction.
The code writer turns the plan into files; ``migrate sql``, ``migrate
lint`` and ``squash`` can read the same objects (:func:`describe` gives the
same report for one statement of SQL text).

Lock levels are PostgreSQL's (``Lock``), weakest first; ``Lock.blocks``
says what a held lock holds up: ``reads``, ``writes``, ``ddl``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ._ddl import BatchFill, Online, Step
from ._spec import Sql

__all__ = [
    "Lock",
    "MigrationStatements",
    "Operation",
    "Plan",
    "PlannedMigration",
    "Statement",
    "describe",
    "read_migrations",
    "statement_of",
]


class Lock(enum.IntEnum):
    """A PostgreSQL table lock mode, ordered from weakest to strongest."""

    NONE = 0
    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def sql_name(self) -> str:
        """Return the mode as PostgreSQL spells it (``ACCESS EXCLUSIVE``)."""
        return self.name.replace("_", " ")

    @property
    def blocks(self) -> tuple[str, ...]:
        """Return what the lock holds up while it is held: reads, writes, DDL."""
        if self >= Lock.ACCESS_EXCLUSIVE:
            return ("reads", "writes", "ddl")
        if self >= Lock.SHARE:
            return ("writes", "ddl")
        if self >= Lock.SHARE_UPDATE_EXCLUSIVE:
            return ("ddl",)
        if self >= Lock.ROW_SHARE:
            return ("ddl",)  # EXCLUSIVE / ACCESS EXCLUSIVE requests wait for it
        return ()


@dataclasses.dataclass(frozen=True)
class Statement:
    """One statement of a migration and its effect on the tables it touches."""

    sql: str
    params: tuple[object, ...] = ()
    locks: tuple[tuple[str, Lock], ...] = ()  # (table as written, lock mode)
    scans: bool = False  # reads every row while holding ``locks``
    rewrites: bool = False  # writes a new copy of the table (and its indexes)
    transactional: bool = True  # False: must run outside a transaction block
    batched: bool = False  # a fill in batches, each its own short transaction when online

    @property
    def lock(self) -> Lock:
        """Return the strongest lock the statement takes."""
        return max((mode for _, mode in self.locks), default=Lock.NONE)

    @property
    def blocks(self) -> tuple[str, ...]:
        """Return what the statement's strongest lock holds up (reads, writes, ddl)."""
        return self.lock.blocks

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for t, _ in self.locks))


@dataclasses.dataclass(frozen=True)
class Operation:
    """One call of the extended migrator (``code``) and the statements it runs."""

    code: str
    method: str
    table: str | None
    statements: tuple[Statement, ...]
    online: bool = False

    @property
    def transactional(self) -> bool:
        """Return False when a statement of this operation cannot run in a transaction."""
        return all(s.transactional for s in self.statements)

    @property
    def lock(self) -> Lock:
        return max((s.lock for s in self.statements), default=Lock.NONE)


@dataclasses.dataclass(frozen=True)
class PlannedMigration:
    """One migration file: its operations, the rollback's, and whether it is one transaction.

    ``rollback`` is the inverse of ``operations`` as a whole, in the order it runs.
    """

    suffix: str  # "" for the first file, "_2", "_3" ... for the next ones
    atomic: bool
    operations: tuple[Operation, ...]
    rollback: tuple[Operation, ...]

    def statements(self, *, rollback: bool = False) -> Iterator[Statement]:
        """Yield the statements of the migration (or of its rollback) in order."""
        for op in self.rollback if rollback else self.operations:
            yield from op.statements


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


# -- what a statement locks ------------------------------------------------------------

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_TABLE = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"
_ALTER_RE = re.compile(rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?({_TABLE})", re.I)
_CREATE_INDEX_RE = re.compile(
    rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?:{_IDENT}\s+)?ON\s+(?:ONLY\s+)?({_TABLE})",
    re.I,
)
_DROP_INDEX_RE = re.compile(
    rf"DROP\s+INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?({_TABLE})", re.I
)
_REFERENCES_RE = re.compile(rf"REFERENCES\s+({_TABLE})", re.I)
_TABLE_STMT_RE = re.compile(
    rf"^\s*(CREATE|DROP)\s+TABLE\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?({_TABLE})", re.I
)
_UPDATE_RE = re.compile(rf"^\s*UPDATE\s+(?:ONLY\s+)?({_TABLE})", re.I)
_INDEX_ALTER_RE = re.compile(rf"^\s*ALTER\s+INDEX\s+(?:IF\s+EXISTS\s+)?({_TABLE})", re.I)


def _alter_lock(text: str, hint: str) -> tuple[Lock, bool, bool]:
    """Return (lock, scans, rewrites) of one ``ALTER TABLE`` statement (or DO block)."""
    t = " ".join(text.upper().split())
    not_valid = "NOT VALID" in t
    if "VALIDATE CONSTRAINT" in t and "ADD " not in t:
        return Lock.SHARE_UPDATE_EXCLUSIVE, True, False
    if "USING INDEX" in t:
        return Lock.ACCESS_EXCLUSIVE, False, False
    if " TYPE " in t:
        rewrite = hint != "in-place"
        return Lock.ACCESS_EXCLUSIVE, rewrite, rewrite
    if " ADD COLUMN " in t:
        scans = " CHECK " in t or " CHECK(" in t
        return Lock.ACCESS_EXCLUSIVE, scans, False
    if "FOREIGN KEY" in t or " REFERENCES " in t:
        return Lock.SHARE_ROW_EXCLUSIVE, not not_valid, False
    if re.search(r"\bADD\b.*\b(UNIQUE|PRIMARY KEY|EXCLUDE)\b", t):
        return Lock.ACCESS_EXCLUSIVE, True, False
    if re.search(r"\bADD\b.*\bCHECK\b", t):
        return Lock.ACCESS_EXCLUSIVE, not not_valid, False
    if "SET NOT NULL" in t:
        return Lock.ACCESS_EXCLUSIVE, hint != "no-scan", False
    return Lock.ACCESS_EXCLUSIVE, False, False


def describe(sql: str, *, hint: str = "", postgres: int = 12) -> Statement:
    """Return ``sql`` (one statement as datalayer writes it) with its locks, scan and rewrite.

    Recognises the statements the generator and the migrator operations
    write; any other statement is reported as taking ACCESS EXCLUSIVE on the
    tables it names after ALTER TABLE (a conservative guess).
    """
    del postgres  # PostgreSQL 12 to 17 take the same locks for these statements
    text = sql.strip()
    head = text[:16].upper()
    refs = [m.group(1) for m in _REFERENCES_RE.finditer(text)]
    if head.startswith("DO "):
        tables = [m.group(1) for m in _ALTER_RE.finditer(text)]
        lock, scans, rewrites = _alter_lock(text, hint)
        if "RENAME" in text.upper() and not tables:
            lock = Lock.ACCESS_EXCLUSIVE
        if not tables:
            m = re.search(r"'((?:[^']|'')+)'::regclass", text)
            tables = [m.group(1).replace("''", "'")] if m else []
        locks = [(t, lock) for t in dict.fromkeys(tables)]
        locks += [(r, Lock.SHARE_ROW_EXCLUSIVE) for r in refs]
        return Statement(text, (), tuple(locks), scans, rewrites)
    m = _CREATE_INDEX_RE.match(text)
    if m:
        concurrent = bool(m.group(1))
        lock = Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else Lock.SHARE
        return Statement(text, (), ((m.group(2), lock),), True, False, not concurrent)
    m = _DROP_INDEX_RE.match(text)
    if m:
        concurrent = bool(m.group(1))
        lock = Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else Lock.ACCESS_EXCLUSIVE
        # The lock is on the index's table; the statement names the index.
        return Statement(text, (), ((m.group(2), lock),), False, False, not concurrent)
    m = _INDEX_ALTER_RE.match(text)
    if m:
        return Statement(text, (), ((m.group(1), Lock.SHARE_UPDATE_EXCLUSIVE),))
    m = _TABLE_STMT_RE.match(text)
    if m:
        locks = [(m.group(2), Lock.ACCESS_EXCLUSIVE)]
        locks += [(r, Lock.SHARE_ROW_EXCLUSIVE) for r in refs]
        return Statement(text, (), tuple(locks))
    m = _UPDATE_RE.match(text)
    if m:
        return Statement(text, (), ((m.group(1), Lock.ROW_EXCLUSIVE),), True, False)
    m = _ALTER_RE.match(text)
    if m:
        lock, scans, rewrites = _alter_lock(text, hint)
        locks = [(m.group(1), lock)]
        locks += [(r, Lock.SHARE_ROW_EXCLUSIVE) for r in refs]
        return Statement(text, (), tuple(locks), scans, rewrites)
    return Statement(text)


def statement_of(step: Step, *, postgres: int = 12) -> Statement:
    """Return the :class:`Statement` of one step queued by the migrator."""
    if isinstance(step, BatchFill):
        return Statement(
            str(step), (), ((step.table, Lock.ROW_EXCLUSIVE),), True, False,
            transactional=not step.online, batched=True,
        )
    if isinstance(step, Online):
        found = describe(step.sql.text, hint=step.sql.hint, postgres=postgres)
        return dataclasses.replace(found, params=step.sql.params, transactional=False)
    assert isinstance(step, Sql)
    found = describe(step.text, hint=step.hint, postgres=postgres)
    return dataclasses.replace(found, params=step.params)


def statements_of(steps: Sequence[Step], *, postgres: int = 12) -> tuple[Statement, ...]:
    return tuple(statement_of(s, postgres=postgres) for s in steps)


# -- the statements of migration files ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MigrationStatements:
    """The statements a migration file runs (and its rollback), read without a database."""

    name: str
    atomic: bool
    statements: tuple[Statement, ...]
    rollback: tuple[Statement, ...]


def _render_op(op: Any, recorder: Any, postgres: int) -> list[Statement]:
    """Return the statements of one queued operation, run against the recorder."""
    step = getattr(op, "_datalayer_step", None)
    if step is not None:
        return [statement_of(step, postgres=postgres)]
    from playhouse.migrate import Operation

    if not isinstance(op, Operation):  # migrator.run(fn): Python code
        name = getattr(op, "__name__", type(op).__name__)
        return [Statement(f"-- runs Python: {name}()")]
    recorder.take()
    try:
        op.run()  # its schema migrator is bound to the recorder: nothing runs
    except Exception as exc:  # an upstream operation that reads the catalog first
        recorder.take()
        return [Statement(f"-- {getattr(op.fn, '__name__', 'operation')}: cannot be shown "
                          f"without a database ({type(exc).__name__})")]
    return [
        dataclasses.replace(describe(text, postgres=postgres), params=params)
        for text, params in recorder.take()
    ]


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
    from ..errors import MigrationError
    from .migrator import DatalayerMigrator

    todo = list(router.todo)
    wanted = list(todo if names is None else names)
    unknown = [n for n in wanted if n not in todo]
    if unknown:
        raise MigrationError(
            f"no migration {', '.join(unknown)} in {router.migrate_dir}; "
            "`datalayer migrate status` lists them"
        )
    from .runtime.recorder import Recorder

    recorder = Recorder(postgres)
    migrator = DatalayerMigrator(recorder)
    out: list[MigrationStatements] = []

    def collect(fn: Any) -> tuple[Statement, ...]:
        migrator.__ops__ = []
        migrator.take_steps()
        recorder.take()
        fn(migrator, recorder, fake=False)
        found = [describe(sql, postgres=postgres) for sql, _ in recorder.take()]
        for op in migrator.__ops__:
            found.extend(_render_op(op, recorder, postgres))
        migrator.__ops__ = []
        migrator.take_steps()
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
