"""What one migration statement does to the tables it touches: its lock, scan and rewrite.

:class:`Statement` is one statement of a migration with, for the target
PostgreSQL version, the lock it takes on each table, whether it scans or
rewrites the table, whether it can run in a transaction and whether the
previous release survives it (``expands``: the expand part of a migration);
:func:`statement_of` gives it for a step the ddl planners wrote (from the kind,
tables and phase the step carries), :func:`describe` for one statement of SQL
text that nobody classified (hand-written, or an index a model wrote as SQL;
read when pglast is not installed).  Which lock, scan, rewrite and phase each
kind of statement has is :data:`..facts.EFFECTS` (the lint reads the same
table).  The plan (:mod:`..autogenerate.plan`), the operations, ``migrate sql``
and ``apply --phase`` (:mod:`..runtime.phases`) read these.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from .. import facts
from ..facts import Lock
from .spec import Sql
from .steps import UNLISTED, BatchFill, Online, Step

__all__ = ["Statement", "describe", "statement_of", "statements_of"]


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
    # True: the previous release keeps working once it ran (a migration's expand part)
    expands: bool = False

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


def _alter_kind(text: str, hint: str) -> str:
    """Return the kind (a key of :data:`.facts.EFFECTS`) of one ``ALTER TABLE`` or DO block."""
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
        text, (), tuple(locks), fact.scans, fact.rewrites, fact.transactional, kind=kind,
        expands=fact.expands,
    )


def describe(sql: str, *, hint: str = "", postgres: int = 12) -> Statement:
    """Return ``sql`` (one statement of SQL text) with its locks, scan and rewrite, read from it.

    For SQL whose kind nobody knows (hand-written ``migrator.sql``, upstream
    operations) when pglast is not there to parse it; a step the ddl planners
    wrote carries its kind (:func:`statement_of`).  Recognises the usual forms;
    any other statement is reported as taking ACCESS EXCLUSIVE on the tables it
    names after ALTER TABLE (a conservative guess).  The lock, scan and rewrite of
    each kind of statement are :data:`.facts.EFFECTS`'s.
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
    """Return the :class:`Statement` of one step, from the kind and tables it carries."""
    if isinstance(step, BatchFill):
        fill = facts.EFFECTS["batch_fill"]
        return Statement(
            str(step), (), ((step.table, fill.lock),), fill.scans, fill.rewrites,
            transactional=not step.online, batched=True, kind="batch_fill",
            expands=fill.expands,
        )
    sql = step.sql if isinstance(step, Online) else step
    assert isinstance(sql, Sql)
    if sql.kind == UNLISTED:
        found = Statement(sql.text)
    elif sql.kind:
        found = _of_kind(sql.text, sql.kind, sql.tables, sql.refs, postgres=postgres)
    else:  # an index a model declares as SQL text: read from it
        found = describe(sql.text, postgres=postgres)
    if isinstance(step, Online):
        found = dataclasses.replace(found, transactional=False)
    if sql.expands is not None:  # its planner knows better than its kind
        found = dataclasses.replace(found, expands=sql.expands)
    return dataclasses.replace(found, params=sql.params)


def statements_of(steps: Sequence[Step], *, postgres: int = 12) -> tuple[Statement, ...]:
    return tuple(statement_of(s, postgres=postgres) for s in steps)
