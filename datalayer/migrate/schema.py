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

:func:`compare` gives ``check``'s lines for one schema.  For ``baseline`` and
``drift``, :func:`snapshot_catalog` reads every non-system schema into a
:class:`Catalog` and :func:`differences` returns :class:`Difference` records
(kind, table, name, expected, actual) that render as one line each.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

__all__ = [
    "DEFAULT_IGNORE",
    "KINDS",
    "Catalog",
    "Check",
    "Column",
    "Difference",
    "ForeignKey",
    "Index",
    "Key",
    "Schema",
    "Table",
    "compare",
    "differences",
    "snapshot",
    "snapshot_catalog",
    "user_schemas",
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


# -- every schema, and differences as data -----------------------------------------

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


@dataclasses.dataclass(frozen=True)
class Difference:
    """One way two schemas differ, from the point of view of the ``expected`` side.

    ``kind`` is one of :data:`KINDS`; ``table`` is ``name`` or ``schema.name``
    (``public`` is not written; empty for a schema); ``name`` is the column,
    index or constraint (the table or schema itself for those kinds);
    ``expected`` / ``actual`` are the definitions on each side, ``None`` where
    the thing is absent.
    """

    kind: str
    table: str
    name: str
    expected: str | None
    actual: str | None

    def message(self, expected: str = "the migrations", actual: str = "the database") -> str:
        """Return one line that names the thing and both sides, e.g.

        ``users: column "nickname" exists in the database but not in the migrations (text)``.
        """
        if self.kind == "schema":
            return (
                f'schema "{self.name}" missing from {actual} ({expected} create it)'
                if self.actual is None
                else f'schema "{self.name}" exists in {actual} but not in {expected}'
            )
        if self.kind == "table":
            if self.actual is None:
                return f'table "{self.table}" missing from {actual} ({expected} create it)'
            return f'table "{self.table}" exists in {actual} but not in {expected}'
        if self.kind in _ATTRIBUTES:
            where = f"{self.table}.{self.name}"
            if self.kind == "nullable":
                return f"{where}: {self.actual} in {actual}, {self.expected} in {expected}"
            word = _ATTRIBUTES[self.kind]
            return (
                f"{where}: {word} {self.actual or 'none'} in {actual}, "
                f"{self.expected or 'none'} in {expected}"
            )
        what = f'{_THINGS[self.kind]} "{self.name}"'
        if self.actual is None:
            detail = "" if self.kind == "sequence" else f" ({expected} have {self.expected})"
            return f"{self.table}: {what} missing from {actual}{detail}"
        if self.expected is None:
            detail = "" if self.kind == "sequence" else f" ({self.actual})"
            return f"{self.table}: {what} exists in {actual} but not in {expected}{detail}"
        return (
            f"{self.table}: {what} is {self.actual} in {actual}, {self.expected} in {expected}"
        )

    def to_dict(self) -> dict[str, str | None]:
        """Return the fields as a JSON-ready dict (``drift --json`` entries)."""
        return dataclasses.asdict(self)


_ATTRIBUTES = {
    "type": "type",
    "nullable": "nullability",
    "default": "default",
    "identity": "identity",
    "generated": "generated expression",
    "collation": "collation",
}
_THINGS = {
    "column": "column",
    "primary_key": "primary key",
    "foreign_key": "foreign key",
    "unique": "unique constraint",
    "check": "check constraint",
    "index": "index",
    "sequence": "owned sequence",
}
KINDS = ("schema", "table", *_ATTRIBUTES, *_THINGS)
"""Every ``Difference.kind``."""


def _qualified(schema: str, table: str) -> str:
    return table if schema == "public" else f"{schema}.{table}"


def differences(expected: Catalog, actual: Catalog) -> list[Difference]:
    """Return every difference between two catalogs; empty when they are equal.

    The schemas compared are those of ``expected``; within them, tables on
    either side.  Columns compare by name (their order is ignored), CHECK
    constraints by definition (their names are ignored, see the module
    docstring), everything else by name and definition.
    """
    out: list[Difference] = []
    for schema_name in sorted(expected.schemas):
        want_schema = expected.schemas[schema_name]
        have_schema = actual.schemas.get(schema_name)
        if have_schema is None:
            out.append(Difference("schema", "", schema_name, schema_name, None))
            have_schema = Schema(schema_name, {})
        for name in sorted(set(want_schema.tables) | set(have_schema.tables)):
            want, have = want_schema.tables.get(name), have_schema.tables.get(name)
            table = _qualified(schema_name, name)
            if have is None:
                out.append(Difference("table", table, name, "table", None))
            elif want is None:
                out.append(Difference("table", table, name, None, "table"))
            else:
                out.extend(_table_differences(table, want, have))
    return out


def _column_differences(table: str, want: Column, have: Column) -> list[Difference]:
    out = []
    if want.type != have.type:
        out.append(Difference("type", table, want.name, want.type, have.type))
    if want.nullable != have.nullable:
        def word(nullable: bool) -> str:
            return "nullable" if nullable else "NOT NULL"

        out.append(Difference(
            "nullable", table, want.name, word(want.nullable), word(have.nullable)
        ))
    for kind in ("default", "identity", "generated", "collation"):
        w, h = getattr(want, kind) or None, getattr(have, kind) or None
        if w != h:
            out.append(Difference(kind, table, want.name, w, h))
    return out


def _named(
    kind: str, table: str, want: Mapping[str, str], have: Mapping[str, str]
) -> list[Difference]:
    return [
        Difference(kind, table, name, want.get(name), have.get(name))
        for name in sorted(set(want) | set(have))
        if want.get(name) != have.get(name)
    ]


def _table_differences(table: str, want: Table, have: Table) -> list[Difference]:
    out: list[Difference] = []
    for col in sorted(set(want.columns) | set(have.columns)):
        wc, hc = want.columns.get(col), have.columns.get(col)
        if hc is None:
            assert wc is not None
            out.append(Difference("column", table, col, wc.describe(), None))
        elif wc is None:
            out.append(Difference("column", table, col, None, hc.describe()))
        else:
            out.extend(_column_differences(table, wc, hc))

    def keys(key: Key | None) -> dict[str, str]:
        return {} if key is None else {key.name: key.definition}

    out.extend(_named("primary_key", table, keys(want.primary_key), keys(have.primary_key)))
    out.extend(_named(
        "foreign_key", table,
        {fk.name: fk.definition for fk in want.foreign_keys},
        {fk.name: fk.definition for fk in have.foreign_keys},
    ))
    out.extend(_named(
        "unique", table,
        {k.name: k.definition for k in want.uniques},
        {k.name: k.definition for k in have.uniques},
    ))
    # CHECKs pair by definition; the name shown is the side's own.
    unmatched_have = list(have.checks)
    missing: list[Check] = []
    for check in want.checks:
        match = next((c for c in unmatched_have if c.definition == check.definition), None)
        if match is None:
            missing.append(check)
        else:
            unmatched_have.remove(match)
    out.extend(Difference("check", table, c.name, c.definition, None) for c in missing)
    out.extend(Difference("check", table, c.name, None, c.definition) for c in unmatched_have)
    out.extend(_named(
        "index", table,
        {n: i.definition for n, i in want.indexes.items()},
        {n: i.definition for n, i in have.indexes.items()},
    ))
    out.extend(_named(
        "sequence", table,
        {s: f"owned by {table}" for s in want.sequences},
        {s: f"owned by {table}" for s in have.sequences},
    ))
    return out
