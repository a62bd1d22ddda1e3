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
  of the schemas in use, for ``status``.

Nothing here prints, sleeps or retries by itself: :mod:`.runner` does.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import MigrationError

__all__ = [
    "IndexRef",
    "InvalidIndexes",
    "NotValidConstraint",
    "backoff",
    "concurrent_indexes",
    "drop_index",
    "invalid_indexes",
    "schema_problems",
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


_SCHEMAS = "n.nspname = ANY (current_schemas(false) || %s::text[])"

_NOT_VALID_SQL = f"""
SELECT n.nspname, co.conname, t.relname, pg_get_constraintdef(co.oid)
FROM pg_constraint co
JOIN pg_class t ON t.oid = co.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE NOT co.convalidated AND {_SCHEMAS}
ORDER BY 1, 3, 2
"""


def schema_problems(
    db: Any, extra_schemas: Sequence[str] = ()
) -> tuple[list[InvalidIndex], list[NotValidConstraint]]:
    """Return the INVALID indexes and NOT VALID constraints of the search path's schemas.

    ``extra_schemas`` adds schemas (the history table's).  Indexes still being
    built concurrently are included, with ``building=True``.
    """
    params = (list(extra_schemas),)
    indexes = [
        _invalid(row)
        for row in db.execute_sql(_INVALID_SQL.format(where=_SCHEMAS), params).fetchall()
    ]
    constraints = [
        NotValidConstraint(*row) for row in db.execute_sql(_NOT_VALID_SQL, params).fetchall()
    ]
    return indexes, constraints
