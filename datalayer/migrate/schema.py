"""Read a live PostgreSQL schema into plain dataclasses, and compare two of them.

:func:`snapshot` reads the catalog of one schema (``public`` by default):
tables, columns (type, nullability, default), the primary key, foreign keys
with their ON DELETE / ON UPDATE actions, CHECK and UNIQUE constraints, and
indexes, each as PostgreSQL prints it (``format_type``, ``pg_get_expr``,
``pg_get_constraintdef``, ``pg_get_indexdef``).  Two databases built the same
way give equal snapshots, so :func:`compare` can tell "the migrations applied
to a scratch database" from "``create_tables()`` of the models".

What is compared, and what is not:

* columns by name, ignoring their order (PostgreSQL cannot reorder columns,
  so a column added by a later migration sits last);
* CHECK constraints by definition, ignoring their names (PostgreSQL names
  unnamed checks ``<table>_<first column>_check`` and numbers duplicates in
  the order they were made, which a migration history cannot always repeat);
* everything else by name and definition: the primary key, foreign keys,
  UNIQUE constraints, indexes, and the sequences that serial columns own.

The migration history table(s) named in ``ignore`` are left out.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

__all__ = [
    "DEFAULT_IGNORE",
    "Check",
    "Column",
    "ForeignKey",
    "Index",
    "Key",
    "Schema",
    "Table",
    "compare",
    "snapshot",
]

DEFAULT_IGNORE = frozenset({"migratehistory"})
"""Tables left out of a snapshot by default: peewee-migrate's history table."""

_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


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
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str
    on_update: str
    definition: str


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
    """One table with everything :func:`compare` looks at."""

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
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       f.relname,
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i),
       k.confdeltype, k.confupdtype
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class f ON f.oid = k.confrelid
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
        for oid, name, kind, definition, cols, ref, refcols, ondel, onupd in _rows(
            cur, _CONSTRAINTS_SQL, (schema,)
        ):
            if oid not in tables:
                continue
            cols_t = tuple(cols or ())
            if kind == "p":
                pkeys[oid] = Key(name, cols_t, definition)
            elif kind in ("u", "x"):
                uniques[oid].append(Key(name, cols_t, definition))
            elif kind == "f":
                fks[oid].append(ForeignKey(
                    name, cols_t, ref, tuple(refcols or ()),
                    _ACTIONS.get(ondel, ondel), _ACTIONS.get(onupd, onupd), definition,
                ))
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


def _strip_schema(definition: str, schema: str) -> str:
    """Drop ``schema.`` qualifiers so that two schemas of different names compare equal."""
    return definition.replace(f" {schema}.", " ").replace(f"({schema}.", "(")


def compare(expected: Schema, actual: Schema) -> list[str]:
    """Return the differences between two snapshots, one line each; empty when equal.

    Lines read "table.column: expected ..., found ..." from the point of view
    of ``expected`` (e.g. the models) against ``actual`` (e.g. the migrations).
    """
    out: list[str] = []
    for name in sorted(set(expected.tables) | set(actual.tables)):
        want, have = expected.tables.get(name), actual.tables.get(name)
        if have is None:
            out.append(f"table {name}: missing (expected by the models)")
        elif want is None:
            out.append(f"table {name}: not expected (not in the models)")
        else:
            out.extend(_compare_table(want, have, expected.name, actual.name))
    return out


def _compare_table(want: Table, have: Table, want_schema: str, have_schema: str) -> list[str]:
    t = want.name
    out: list[str] = []

    def norm_w(text: str) -> str:
        return _strip_schema(text, want_schema)

    def norm_h(text: str) -> str:
        return _strip_schema(text, have_schema)

    for col in sorted(set(want.columns) | set(have.columns)):
        wc, hc = want.columns.get(col), have.columns.get(col)
        if hc is None:
            assert wc is not None
            out.append(f"{t}.{col}: missing column (expected {wc.describe()})")
        elif wc is None:
            out.append(f"{t}.{col}: unexpected column ({hc.describe()})")
        elif dataclasses.replace(wc, default=wc.default and norm_w(wc.default)) != (
            dataclasses.replace(hc, default=hc.default and norm_h(hc.default))
        ):
            out.append(f"{t}.{col}: expected {wc.describe()}, found {hc.describe()}")

    def key_text(key: Key | None, norm: Any) -> str:
        return "none" if key is None else f"{key.name} {norm(key.definition)}"

    if key_text(want.primary_key, norm_w) != key_text(have.primary_key, norm_h):
        out.append(
            f"{t}: primary key: expected {key_text(want.primary_key, norm_w)}, "
            f"found {key_text(have.primary_key, norm_h)}"
        )

    out.extend(_compare_named(
        t, "foreign key",
        {(fk.columns, fk.name): norm_w(fk.definition) for fk in want.foreign_keys},
        {(fk.columns, fk.name): norm_h(fk.definition) for fk in have.foreign_keys},
    ))
    out.extend(_compare_named(
        t, "unique constraint",
        {(k.columns, k.name): norm_w(k.definition) for k in want.uniques},
        {(k.columns, k.name): norm_h(k.definition) for k in have.uniques},
    ))
    want_checks = Counter(norm_w(c.definition) for c in want.checks)
    have_checks = Counter(norm_h(c.definition) for c in have.checks)
    for definition in sorted((want_checks - have_checks).elements()):
        out.append(f"{t}: missing {definition}")
    for definition in sorted((have_checks - want_checks).elements()):
        out.append(f"{t}: unexpected {definition}")
    out.extend(_compare_named(
        t, "index",
        {((), n): norm_w(i.definition) for n, i in want.indexes.items()},
        {((), n): norm_h(i.definition) for n, i in have.indexes.items()},
    ))
    if sorted(want.sequences) != sorted(have.sequences):
        out.append(
            f"{t}: owned sequences: expected {', '.join(sorted(want.sequences)) or 'none'}, "
            f"found {', '.join(sorted(have.sequences)) or 'none'}"
        )
    return out


def _compare_named(
    table: str,
    kind: str,
    want: Mapping[tuple[tuple[str, ...], str], str],
    have: Mapping[tuple[tuple[str, ...], str], str],
) -> list[str]:
    out: list[str] = []
    for key in sorted(set(want) | set(have)):
        cols, name = key
        where = f"{table}({', '.join(cols)})" if cols else table
        if key not in have:
            out.append(f"{where}: missing {kind} {name}: {want[key]}")
        elif key not in want:
            out.append(f"{where}: unexpected {kind} {name}: {have[key]}")
        elif want[key] != have[key]:
            out.append(f"{where}: {kind} {name}: expected {want[key]}, found {have[key]}")
    return out
