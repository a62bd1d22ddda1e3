"""The live catalog: read a PostgreSQL schema (or every user schema) into plain dataclasses.

:func:`snapshot` reads the catalog of one schema (``public`` by default):
tables, columns (type, nullability, default, identity, generated expression,
collation), the primary key, foreign keys with their ON DELETE / ON UPDATE
actions, CHECK and UNIQUE constraints, indexes, and the sequences serial
columns own, each as PostgreSQL prints it (``format_type``, ``pg_get_expr``,
``pg_get_constraintdef``, ``pg_get_indexdef``).  Two databases built the same
way give equal snapshots.  :func:`snapshot_catalog` reads every non-system
schema into a :class:`Catalog`.  The migration history table(s) named in
``ignore`` are left out.  Comparing is :mod:`.comparison`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

__all__ = [
    "DEFAULT_IGNORE",
    "Catalog",
    "Check",
    "Column",
    "ForeignKey",
    "Index",
    "Key",
    "Schema",
    "Table",
    "history_tables",
    "snapshot",
    "snapshot_catalog",
    "user_schemas",
]


def history_tables(migrate_table: str = "migratehistory") -> frozenset[str]:
    """Return the tables of a migration history, left out of a comparison: peewee-migrate's
    history table (``migrate_table``, and the default's), the background jobs table next to
    it (:mod:`datalayer.migrate.runtime.jobs`) and the table of migrations with only their
    expand phase applied (:mod:`..runtime.phases`)."""
    return frozenset(
        f"{table}{suffix}" for table in {"migratehistory", migrate_table}
        for suffix in ("", "_jobs", "_phases")
    )


DEFAULT_IGNORE = history_tables()
"""Tables left out of a snapshot by default: the default history's (:func:`history_tables`)."""


class _Cursor(Protocol):
    def execute(self, sql: str, params: Any = ...) -> Any: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...

    def close(self) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Column:
    """One column as PostgreSQL describes it."""

    name: str
    type: str
    nullable: bool
    default: str | None = None
    identity: str = ""
    generated: str = ""
    collation: str | None = None

    def describe(self) -> str:
        """Return the column's definition as one line of SQL-like text."""
        parts = [self.type]
        if not self.nullable:
            parts.append("NOT NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.identity:
            parts.append(f"IDENTITY ({self.identity})")
        if self.generated:
            parts.append(f"GENERATED ({self.generated})")
        if self.collation:
            parts.append(f"COLLATE {self.collation}")
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class Key:
    """A primary key or UNIQUE constraint."""

    name: str
    columns: tuple[str, ...]
    definition: str


@dataclasses.dataclass(frozen=True)
class ForeignKey:
    """A foreign key constraint."""

    name: str
    columns: tuple[str, ...]
    definition: str  # pg_get_constraintdef: the parent, its columns and the actions


@dataclasses.dataclass(frozen=True)
class Check:
    """A CHECK constraint; ``definition`` is ``pg_get_constraintdef`` (``CHECK (...)``)."""

    name: str
    definition: str


@dataclasses.dataclass(frozen=True)
class Index:
    """An index that does not back a constraint; ``definition`` is ``pg_get_indexdef``."""

    name: str
    definition: str
    unique: bool


@dataclasses.dataclass(frozen=True)
class Table:
    """One table with everything the comparison (:mod:`.comparison`) looks at."""

    name: str
    columns: Mapping[str, Column]
    primary_key: Key | None = None
    foreign_keys: tuple[ForeignKey, ...] = ()
    checks: tuple[Check, ...] = ()
    uniques: tuple[Key, ...] = ()
    indexes: Mapping[str, Index] = dataclasses.field(default_factory=dict)
    sequences: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Schema:
    """The tables of one PostgreSQL schema, by name."""

    name: str
    tables: Mapping[str, Table]


def _rows(cur: _Cursor, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    cur.execute(sql, params)
    return cur.fetchall()


_TABLES_SQL = """
SELECT c.oid, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""

_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_CONSTRAINTS_SQL = """
SELECT k.conrelid, k.conname, k.contype, pg_get_constraintdef(k.oid),
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND k.contype IN ('p', 'u', 'f', 'c', 'x')
ORDER BY k.conrelid, k.conname
"""

_INDEXES_SQL = """
SELECT i.indrelid, ic.relname, pg_get_indexdef(i.indexrelid), i.indisunique
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid
                  AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))
ORDER BY i.indrelid, ic.relname
"""

_SEQUENCES_SQL = """
SELECT d.refobjid, s.relname
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_namespace n ON n.oid = s.relnamespace
WHERE n.nspname = %s AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
ORDER BY d.refobjid, s.relname
"""


def snapshot(
    database_or_conn: Any,
    schema: str = "public",
    *,
    ignore: Iterable[str] = DEFAULT_IGNORE,
) -> Schema:
    """Read the tables of ``schema`` from a live database.

    ``database_or_conn`` is a peewee database (connected, or able to connect
    on demand) or a DB-API connection such as ``psycopg2.connect(...)``.
    Tables named in ``ignore`` (the migration history) are left out.  Only
    reads the catalog.
    """
    skip = set(ignore)
    # A peewee database and a DB-API connection both hand out cursors.
    cur: _Cursor = database_or_conn.cursor()
    try:
        tables = {oid: name for oid, name in _rows(cur, _TABLES_SQL, (schema,)) if name not in skip}
        columns: dict[int, dict[str, Column]] = {oid: {} for oid in tables}
        for oid, name, typ, nullable, default, ident, gen, coll in _rows(
            cur, _COLUMNS_SQL, (schema,)
        ):
            if oid in columns:
                columns[oid][name] = Column(name, typ, nullable, default, ident or "", gen or "",
                                            coll)
        pkeys: dict[int, Key] = {}
        fks: dict[int, list[ForeignKey]] = {oid: [] for oid in tables}
        checks: dict[int, list[Check]] = {oid: [] for oid in tables}
        uniques: dict[int, list[Key]] = {oid: [] for oid in tables}
        for oid, name, kind, definition, cols in _rows(cur, _CONSTRAINTS_SQL, (schema,)):
            if oid not in tables:
                continue
            cols_t = tuple(cols or ())
            if kind == "p":
                pkeys[oid] = Key(name, cols_t, definition)
            elif kind in ("u", "x"):
                uniques[oid].append(Key(name, cols_t, definition))
            elif kind == "f":
                fks[oid].append(ForeignKey(name, cols_t, definition))
            else:
                checks[oid].append(Check(name, definition))
        indexes: dict[int, dict[str, Index]] = {oid: {} for oid in tables}
        for oid, name, definition, unique in _rows(cur, _INDEXES_SQL, (schema,)):
            if oid in indexes:
                indexes[oid][name] = Index(name, definition, bool(unique))
        sequences: dict[int, list[str]] = {oid: [] for oid in tables}
        for oid, name in _rows(cur, _SEQUENCES_SQL, (schema,)):
            if oid in sequences:
                sequences[oid].append(name)
    finally:
        cur.close()
    return Schema(schema, {
        name: Table(
            name=name,
            columns=columns[oid],
            primary_key=pkeys.get(oid),
            foreign_keys=tuple(fks[oid]),
            checks=tuple(checks[oid]),
            uniques=tuple(uniques[oid]),
            indexes=indexes[oid],
            sequences=tuple(sequences[oid]),
        )
        for oid, name in sorted(tables.items(), key=lambda item: item[1])
    })


# -- every schema -----------------------------------------

_USER_SCHEMAS_SQL = """
SELECT nspname FROM pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema')
  AND nspname !~ '^pg_(toast|temp_)'
ORDER BY nspname
"""


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Snapshots of several schemas of one database, by schema name."""

    schemas: Mapping[str, Schema]

    def table(self, qualified: str) -> Table | None:
        """Return the table named ``schema.table`` (or just ``table`` for ``public``)."""
        schema, _, name = qualified.rpartition(".")
        found = self.schemas.get(schema or "public")
        return None if found is None else found.tables.get(name)


def user_schemas(database_or_conn: Any) -> list[str]:
    """Return the names of the schemas that are not PostgreSQL's own (``pg_*``, ...)."""
    cur: _Cursor = database_or_conn.cursor()
    try:
        return [row[0] for row in _rows(cur, _USER_SCHEMAS_SQL, ())]
    finally:
        cur.close()


def snapshot_catalog(
    database_or_conn: Any,
    schemas: Iterable[str] | None = None,
    *,
    ignore: Iterable[str] = DEFAULT_IGNORE,
) -> Catalog:
    """Read ``schemas`` (default: every non-system schema) from a live database.

    A schema named in ``schemas`` that does not exist is left out of the
    catalog (so :func:`differences` reports it missing).  Only reads the catalog.
    """
    present = user_schemas(database_or_conn)
    wanted = present if schemas is None else [s for s in dict.fromkeys(schemas) if s in present]
    skip = frozenset(ignore)
    return Catalog({s: snapshot(database_or_conn, s, ignore=skip) for s in wanted})
