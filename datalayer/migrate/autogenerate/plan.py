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

Lock levels are PostgreSQL's (``Lock``, from :mod:`.facts`), weakest first;
``Lock.blocks`` says what a held lock holds up: ``reads``, ``writes``, ``DDL``.
Which lock, scan and rewrite each kind of statement has is
:data:`.facts.EFFECTS` (the lint reads the same table).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .. import facts
from ..ddl.alter import BatchFill, Online, Step
from ..ddl.spec import Sql
from ..facts import Lock
from .code import Step as CodeStep

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
    kind: str = ""  # the kind of statement, a key of facts.EFFECTS ("": not recognised)
    origin: str = "generated"  # or "hand-written" (migrator.sql, execute_sql)

    @property
    def table(self) -> str | None:
        """Return the table the statement changes (the first it locks), None if none."""
        return self.locks[0][0] if self.locks else None

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
    """One call of the extended migrator (``step``) and the statements it runs."""

    step: CodeStep  # applied to the replayed state, rendered to the file
    method: str
    table: str | None
    statements: tuple[Statement, ...]
    online: bool = False

    @property
    def code(self) -> str:
        """Return the operation's code as the migration file has it."""
        return "\n".join(self.step.render())

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


_HINT_KINDS = {"in-place": "alter_type_in_place", "rewrite": "alter_type",
               "no-scan": "set_not_null_checked"}  # older spellings of the hints


def _alter_kind(text: str, hint: str) -> str:
    """Return the kind (a key of :data:`.facts.EFFECTS`) of one ``ALTER TABLE`` or DO block."""
    hint = _HINT_KINDS.get(hint, hint)
    if hint == "drop_constraint":
        return hint
    t = " ".join(text.upper().split())
    not_valid = "NOT VALID" in t
    if "VALIDATE CONSTRAINT" in t and "ADD " not in t:
        return "validate_constraint"
    if "USING INDEX" in t:
        return "add_constraint_using_index"
    if " TYPE " in t:
        return hint if hint in ("alter_type_in_place", "alter_collation") else "alter_type"
    if " ADD COLUMN " in t:
        return "add_column_checked" if " CHECK " in t or " CHECK(" in t else "add_column"
    if "FOREIGN KEY" in t or " REFERENCES " in t:
        return "add_foreign_key_not_valid" if not_valid else "add_foreign_key"
    if re.search(r"\bADD\b.*\b(UNIQUE|PRIMARY KEY|EXCLUDE)\b", t):
        return "add_unique"
    if re.search(r"\bADD\b.*\bCHECK\b", t):
        return "add_check_not_valid" if not_valid else "add_check"
    if "SET NOT NULL" in t:
        return "set_not_null_checked" if hint == "set_not_null_checked" else "set_not_null"
    if " SET SCHEMA " in t:
        return "set_schema"
    if " DROP COLUMN " in t:
        return "drop_column"
    if " RENAME COLUMN " in t:
        return "rename_column"
    if re.search(r"\bRENAME TO\b", t):
        return "rename_table"
    return "alter_table"


def _of_kind(
    text: str, kind: str, tables: Iterable[str], refs: Iterable[str] = (), *, postgres: int
) -> Statement:
    """Return the :class:`Statement` of ``text``, a statement of ``kind`` on ``tables``."""
    fact = facts.effect(kind, postgres=postgres)
    locks = [(t, fact.lock) for t in dict.fromkeys(tables)]
    locks += [(r, facts.EFFECTS["references"].lock) for r in refs]
    return Statement(
        text, (), tuple(locks), fact.scans, fact.rewrites, fact.transactional, kind=kind
    )


def describe(sql: str, *, hint: str = "", postgres: int = 12) -> Statement:
    """Return ``sql`` (one statement as datalayer writes it) with its locks, scan and rewrite.

    Recognises the statements the generator and the migrator operations
    write; any other statement is reported as taking ACCESS EXCLUSIVE on the
    tables it names after ALTER TABLE (a conservative guess).  The lock,
    scan and rewrite of each kind of statement are :data:`.facts.EFFECTS`'s.
    """
    text = sql.strip()
    head = text[:16].upper()
    refs = [m.group(1) for m in _REFERENCES_RE.finditer(text)]
    if head.startswith("DO "):
        tables = [m.group(1) for m in _ALTER_RE.finditer(text)]
        kind = _alter_kind(text, hint)
        if not tables:
            m = re.search(r"'((?:[^']|'')+)'::regclass", text)
            tables = [m.group(1).replace("''", "'")] if m else []
        return _of_kind(text, kind, tables, refs, postgres=postgres)
    m = _CREATE_INDEX_RE.match(text)
    if m:
        kind = "create_index_concurrently" if m.group(1) else "create_index"
        return _of_kind(text, kind, [m.group(2)], postgres=postgres)
    m = _DROP_INDEX_RE.match(text)
    if m:
        # The lock is on the index's table; the statement names the index.
        kind = "drop_index_concurrently" if m.group(1) else "drop_index"
        return _of_kind(text, kind, [m.group(2)], postgres=postgres)
    m = _INDEX_ALTER_RE.match(text)
    if m:
        return _of_kind(text, "alter_index", [m.group(1)], postgres=postgres)
    m = _TABLE_STMT_RE.match(text)
    if m:
        kind = "create_table" if m.group(1).upper() == "CREATE" else "drop_table"
        return _of_kind(text, kind, [m.group(2)], refs, postgres=postgres)
    m = _UPDATE_RE.match(text)
    if m:
        kind = "update" if re.search(r"\bWHERE\b", text, re.I) else "update_all"
        return _of_kind(text, kind, [m.group(1)], postgres=postgres)
    m = _ALTER_RE.match(text)
    if m:
        return _of_kind(text, _alter_kind(text, hint), [m.group(1)], refs, postgres=postgres)
    return Statement(text)


def statement_of(step: Step, *, postgres: int = 12) -> Statement:
    """Return the :class:`Statement` of one step queued by the migrator."""
    if isinstance(step, BatchFill):
        fill = facts.EFFECTS["batch_fill"]
        return Statement(
            str(step), (), ((step.table, fill.lock),), fill.scans, fill.rewrites,
            transactional=not step.online, batched=True, kind="batch_fill",
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
    migrator = router.migrator_class(recorder)  # datalayer's: it has take_steps()
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
