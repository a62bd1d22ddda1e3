"""What ``apply`` needs to run DDL under live traffic: retries, INVALID indexes, leftovers.

* :func:`backoff` is the jittered exponential delay between two attempts of a
  migration whose lock was not granted within ``lock_timeout`` (55P03);
* :func:`recording` notes the statements a non-transactional migration runs,
  and :func:`concurrent_indexes` reads the indexes they build concurrently out
  of them, so :func:`invalid_indexes` can tell whether one of those builds
  left an INVALID index (a failed or killed ``CREATE INDEX CONCURRENTLY``,
  or an ``IF NOT EXISTS`` that found such a leftover and did nothing) and
  :func:`drop_index` can remove it before the migration runs again;
* :func:`schema_problems` lists every INVALID index and NOT VALID constraint
  of the schemas in use, for ``status``;
* :func:`remember` notes, before a non-transactional migration runs, which
  constraints, indexes and NOT NULLs the tables have, and :func:`undo`
  removes, after it failed, what it added since that would change how the
  running application's writes fare: a constraint (NOT VALID or validated),
  a unique or INVALID index, a NOT NULL.  New columns and plain valid
  indexes stay: they change nothing for the application.

Nothing here prints, sleeps or retries by itself: :mod:`.runner` does.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import MigrationError

__all__ = [
    "Before",
    "IndexRef",
    "InvalidIndexes",
    "NotValidConstraint",
    "backoff",
    "concurrent_indexes",
    "drop_index",
    "invalid_indexes",
    "remember",
    "schema_problems",
    "undo",
]

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CIC_RE = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?P<name>{_IDENT})\s+ON\s+(?:ONLY\s+)?(?P<table>{_IDENT}(?:\s*\.\s*{_IDENT})?)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class IndexRef:
    """An index as a statement names it: its name and its table (as written, maybe qualified)."""

    name: str
    table: str


@dataclass(frozen=True)
class InvalidIndex:
    """An index whose ``pg_index.indisvalid`` is false."""

    schema: str
    name: str
    table: str
    definition: str
    building: bool = False
    """True while a ``CREATE INDEX CONCURRENTLY`` is still building it (not a leftover)."""

    @property
    def qualified(self) -> str:
        """Return ``schema.name`` as PostgreSQL would quote it."""
        return f"{_quote(self.schema)}.{_quote(self.name)}"

    def to_dict(self) -> dict[str, Any]:
        """Return the fields (the shape of ``status --json``)."""
        return asdict(self)


@dataclass(frozen=True)
class NotValidConstraint:
    """A constraint added ``NOT VALID`` and not validated yet (``pg_constraint.convalidated``)."""

    schema: str
    name: str
    table: str
    definition: str

    def to_dict(self) -> dict[str, Any]:
        """Return the fields (the shape of ``status --json``)."""
        return asdict(self)


class InvalidIndexes(MigrationError):
    """A non-transactional migration ran but an index it builds is INVALID; not recorded."""

    def __init__(self, indexes: Sequence[InvalidIndex]) -> None:
        self.indexes = tuple(indexes)
        names = ", ".join(i.qualified for i in self.indexes)
        super().__init__(
            f"index {names} is INVALID (a concurrent build failed or was killed, maybe in an "
            "earlier run); the migration is not recorded"
        )


def _quote(ident: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", ident):
        return ident
    return '"' + ident.replace('"', '""') + '"'


def _unquote(ident: str) -> str:
    ident = ident.strip()
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower()


def backoff(attempt: int, *, base: float = 0.25, cap: float = 15.0) -> float:
    """Return the delay before attempt ``attempt + 1``: ``base * 2**(attempt-1)``, capped, jittered.

    The jitter (x0.5 to x1.5) keeps several migrators, or a migrator and an
    application retrying its own work, from colliding again in step.
    """
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return float(delay * random.uniform(0.5, 1.5))


def concurrent_indexes(statements: Sequence[str]) -> list[IndexRef]:
    """Return the named indexes that ``CREATE [UNIQUE] INDEX CONCURRENTLY`` statements build."""
    found: dict[IndexRef, None] = {}
    for sql in statements:
        for match in _CIC_RE.finditer(sql):
            found[IndexRef(_unquote(match["name"]), re.sub(r"\s+", "", match["table"]))] = None
    return list(found)


_INVALID_SQL = """
SELECT n.nspname, c.relname, t.relname, pg_get_indexdef(c.oid),
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
WHERE NOT i.indisvalid AND {where}
ORDER BY 1, 3, 2
"""


def _invalid(row: Sequence[Any]) -> InvalidIndex:
    schema, name, table, definition, building = row
    return InvalidIndex(schema, name, table, definition, building=bool(building))


def invalid_indexes(db: Any, refs: Sequence[IndexRef]) -> list[InvalidIndex]:
    """Return those of ``refs`` that exist and are INVALID and that no one is building now."""
    found: list[InvalidIndex] = []
    for ref in refs:
        rows = db.execute_sql(
            _INVALID_SQL.format(where="i.indrelid = to_regclass(%s) AND c.relname = %s"),
            (ref.table, ref.name),
        ).fetchall()
        found.extend(_invalid(row) for row in rows)
    return [i for i in found if not i.building]


def drop_index(db: Any, index: InvalidIndex) -> None:
    """``DROP INDEX CONCURRENTLY`` an INVALID index (outside a transaction; under lock_timeout)."""
    db.execute_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {index.qualified}")


_SCHEMAS = "n.nspname = ANY (current_schemas(false))"

_NOT_VALID_SQL = f"""
SELECT n.nspname, co.conname, t.relname, pg_get_constraintdef(co.oid)
FROM pg_constraint co
JOIN pg_class t ON t.oid = co.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE NOT co.convalidated AND {_SCHEMAS}
ORDER BY 1, 3, 2
"""


def schema_problems(db: Any) -> tuple[list[InvalidIndex], list[NotValidConstraint]]:
    """Return the INVALID indexes and NOT VALID constraints of the search path's schemas.

    Indexes still being built concurrently are included, with ``building=True``.
    """
    indexes = [_invalid(r) for r in db.execute_sql(_INVALID_SQL.format(where=_SCHEMAS)).fetchall()]
    constraints = [NotValidConstraint(*r) for r in db.execute_sql(_NOT_VALID_SQL).fetchall()]
    return indexes, constraints


# -- undoing what a failed non-transactional migration added ----------------------------

_USER_TABLES = (
    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_%%'"
)


@dataclass(frozen=True)
class Before:
    """What the tables had before a non-transactional migration ran (catalog ids)."""

    constraints: frozenset[int]
    indexes: frozenset[int]
    not_null: frozenset[tuple[int, int]]  # (table, column number)
    columns: frozenset[tuple[int, int]] = frozenset()


def remember(db: Any) -> Before:
    """Return the constraints, indexes and NOT NULL columns of every user table."""
    constraints = db.execute_sql(
        f"SELECT oid FROM pg_constraint WHERE conrelid IN ({_USER_TABLES})"
    ).fetchall()
    indexes = db.execute_sql(
        f"SELECT indexrelid FROM pg_index WHERE indrelid IN ({_USER_TABLES})"
    ).fetchall()
    columns = db.execute_sql(
        f"SELECT attrelid, attnum, attnotnull FROM pg_attribute WHERE attrelid IN "
        f"({_USER_TABLES}) AND attnum > 0 AND NOT attisdropped"
    ).fetchall()
    return Before(
        frozenset(int(r[0]) for r in constraints),
        frozenset(int(r[0]) for r in indexes),
        frozenset((int(r[0]), int(r[1])) for r in columns if r[2]),
        frozenset((int(r[0]), int(r[1])) for r in columns),
    )


_ADDED_CONSTRAINTS = """
SELECT co.oid, format('ALTER TABLE %%s DROP CONSTRAINT IF EXISTS %%I', co.conrelid::regclass,
       co.conname), co.conname, co.conrelid::regclass::text, co.convalidated
FROM pg_constraint co
WHERE co.conrelid = ANY (%s::oid[]) AND co.contype IN ('c', 'f', 'u', 'p', 'x')
ORDER BY co.oid DESC
"""

_ADDED_INDEXES = """
SELECT i.indexrelid, format('DROP INDEX CONCURRENTLY IF EXISTS %%s', i.indexrelid::regclass),
       i.indexrelid::regclass::text, i.indrelid::regclass::text, i.indisvalid
FROM pg_index i
WHERE i.indrelid = ANY (%s::oid[]) AND (i.indisunique OR NOT i.indisvalid)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = i.indexrelid)
  AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                  WHERE p.index_relid = i.indexrelid)
ORDER BY i.indexrelid DESC
"""

_ADDED_NOT_NULL = """
SELECT a.attrelid, a.attnum,
       format('ALTER TABLE %%s ALTER COLUMN %%I DROP NOT NULL', a.attrelid::regclass, a.attname),
       a.attname, a.attrelid::regclass::text, a.atthasdef
FROM pg_attribute a
WHERE a.attrelid = ANY (%s::oid[]) AND a.attnum > 0 AND a.attnotnull AND NOT a.attisdropped
  AND NOT EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conrelid = a.attrelid
                  AND co.contype = 'p' AND a.attnum = ANY (co.conkey))
"""


def undo(db: Any, before: Before) -> tuple[list[str], list[str]]:
    """Remove what a failed migration added to the user tables since ``before``.

    Every table is looked at, not only those its statements name (a raw
    cursor or a DO block may reach others); while a migration runs, the
    migration lock keeps other runs out, so what changed is its own.
    Returns (what was undone, the SQL of what could not be undone): each
    statement runs on its own (outside a transaction, under the session's
    lock_timeout); one that fails is given back for the message.
    """
    oids = [int(r[0]) for r in db.execute_sql(_USER_TABLES).fetchall()]
    if not oids:
        return [], []
    todo: list[tuple[str, str]] = []
    for oid, sql, name, table, valid in db.execute_sql(_ADDED_CONSTRAINTS, (oids,)).fetchall():
        if int(oid) not in before.constraints:
            state = "" if valid else "NOT VALID "
            todo.append((sql, f"dropped the {state}constraint {name} on {table}"))
    for oid, sql, name, table, valid in db.execute_sql(_ADDED_INDEXES, (oids,)).fetchall():
        if int(oid) not in before.indexes:
            state = "unique" if valid else "INVALID"
            todo.append((sql, f"dropped the {state} index {name} on {table}"))
    for rel, num, sql, name, table, has_default in db.execute_sql(
        _ADDED_NOT_NULL, (oids,)
    ).fetchall():
        if (int(rel), int(num)) in before.not_null:
            continue
        if has_default and (int(rel), int(num)) not in before.columns:
            continue  # a column it added with a default: INSERTs that omit it still work
        todo.append((sql, f"made {table}.{name} nullable again"))
    done: list[str] = []
    left: list[str] = []
    for sql, what in todo:
        try:
            db.execute_sql(sql.replace("%", "%%"))
        except Exception:
            left.append(sql)
            continue
        done.append(what)
    return done, left
