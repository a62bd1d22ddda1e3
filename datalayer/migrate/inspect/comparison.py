"""The one schema comparison: ``check``, ``drift`` and ``baseline`` all use :func:`differences`.

:func:`differences` compares two :class:`~.catalog.Catalog` (or, through
:func:`compare`, two :class:`~.catalog.Schema`) and returns
:class:`Difference` records: kind, table, name, expected, actual.  What is
compared, and what is not:

* columns by name, ignoring their order (PostgreSQL cannot reorder columns,
  so a column added by a later migration sits last);
* CHECK constraints by definition, ignoring their names (PostgreSQL names
  unnamed checks ``<table>_<first column>_check`` and numbers duplicates in
  the order they were made, which a migration history cannot always repeat);
* everything else by name and definition: the primary key, foreign keys,
  UNIQUE constraints, indexes, and the sequences that serial columns own.

Two renderings of the same records: :meth:`Difference.message` (``drift``,
``baseline``: "in the database" / "in the migrations") and :func:`compare`'s
lines (``check``: the models against the migrations, one line per column).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from .catalog import Catalog, Check, Column, Key, Schema, Table

__all__ = ["KINDS", "Difference", "compare", "differences"]


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
    for kind, w, h in (("foreign_key", want.foreign_keys, have.foreign_keys),
                       ("unique", want.uniques, have.uniques)):
        out.extend(_named(kind, table, {k.name: k.definition for k in w},
                          {k.name: k.definition for k in h}))
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


# -- check's lines: the same differences, rendered for one schema --------------------


def _strip_schema(definition: str, schema: str) -> str:
    """Drop ``schema.`` qualifiers so that two schemas of different names compare equal."""
    return definition.replace(f" {schema}.", " ").replace(f"({schema}.", "(")


def _unqualified(schema: Schema) -> Schema:
    """Return ``schema`` with its own name stripped from every definition and default."""

    def strip(text: str) -> str:
        return _strip_schema(text, schema.name)

    def table(t: Table) -> Table:
        return dataclasses.replace(
            t,
            columns={n: dataclasses.replace(c, default=c.default and strip(c.default))
                     for n, c in t.columns.items()},
            primary_key=t.primary_key and dataclasses.replace(
                t.primary_key, definition=strip(t.primary_key.definition)),
            foreign_keys=tuple(dataclasses.replace(k, definition=strip(k.definition))
                               for k in t.foreign_keys),
            checks=tuple(dataclasses.replace(c, definition=strip(c.definition))
                         for c in t.checks),
            uniques=tuple(dataclasses.replace(k, definition=strip(k.definition))
                          for k in t.uniques),
            indexes={n: dataclasses.replace(i, definition=strip(i.definition))
                     for n, i in t.indexes.items()},
        )

    return Schema(schema.name, {name: table(t) for name, t in schema.tables.items()})


def compare(expected: Schema, actual: Schema) -> list[str]:
    """Return the differences between two snapshots, one line each; empty when equal.

    Lines read "table.column: expected ..., found ..." from the point of view
    of ``expected`` (e.g. the models) against ``actual`` (e.g. the migrations);
    the differences are :func:`differences`' (schema qualifiers aside, so that
    two schemas of different names compare).
    """
    want, have = _unqualified(expected), _unqualified(actual)
    found = differences(Catalog({want.name: want}), Catalog({want.name: have}))
    whole: dict[str, str] = {}  # a table on one side only
    parts: dict[str, list[Difference]] = defaultdict(list)
    for d in found:
        if d.kind == "table":
            whole[d.name] = (f"table {d.name}: missing (expected by the models)"
                             if d.actual is None
                             else f"table {d.name}: not expected (not in the models)")
        else:
            parts[d.table.rpartition(".")[2]].append(d)
    out: list[str] = []
    for name in sorted(set(whole) | set(parts)):
        if name in whole:
            out.append(whole[name])
        else:
            out.extend(_table_lines(want.tables[name], have.tables[name], parts[name]))
    return out


def _keyed(kind: str, t: str, want: Iterable[Any], have: Iterable[Any],
           names: set[str]) -> list[str]:
    """Lines for foreign keys or UNIQUE constraints: ``t(cols): missing KIND name: def``."""
    w = {(k.columns, k.name): k.definition for k in want if k.name in names}
    h = {(k.columns, k.name): k.definition for k in have if k.name in names}
    out = []
    for key in sorted(set(w) | set(h)):
        cols, name = key
        where = f"{t}({', '.join(cols)})" if cols else t
        if key not in h:
            out.append(f"{where}: missing {kind} {name}: {w[key]}")
        elif key not in w:
            out.append(f"{where}: unexpected {kind} {name}: {h[key]}")
        elif w[key] != h[key]:
            out.append(f"{where}: {kind} {name}: expected {w[key]}, found {h[key]}")
    return out


def _table_lines(want: Table, have: Table, found: list[Difference]) -> list[str]:
    t = want.name
    kinds: dict[str, set[str]] = defaultdict(set)
    for d in found:
        kinds["attribute" if d.kind in _ATTRIBUTES else d.kind].add(d.name)
    out: list[str] = []
    for col in sorted(kinds["column"] | kinds["attribute"]):
        wc, hc = want.columns.get(col), have.columns.get(col)
        if hc is None and wc is not None:
            out.append(f"{t}.{col}: missing column (expected {wc.describe()})")
        elif wc is None and hc is not None:
            out.append(f"{t}.{col}: unexpected column ({hc.describe()})")
        elif wc is not None and hc is not None:
            out.append(f"{t}.{col}: expected {wc.describe()}, found {hc.describe()}")
    if kinds["primary_key"]:
        def key_text(key: Key | None) -> str:
            return "none" if key is None else f"{key.name} {key.definition}"

        out.append(f"{t}: primary key: expected {key_text(want.primary_key)}, "
                   f"found {key_text(have.primary_key)}")
    out.extend(_keyed("foreign key", t, want.foreign_keys, have.foreign_keys,
                      kinds["foreign_key"]))
    out.extend(_keyed("unique constraint", t, want.uniques, have.uniques, kinds["unique"]))
    checks = [d for d in found if d.kind == "check"]
    out.extend(sorted(f"{t}: missing {d.expected}" for d in checks if d.actual is None))
    out.extend(sorted(f"{t}: unexpected {d.actual}" for d in checks if d.expected is None))
    for d in (d for d in found if d.kind == "index"):
        if d.actual is None:
            out.append(f"{t}: missing index {d.name}: {d.expected}")
        elif d.expected is None:
            out.append(f"{t}: unexpected index {d.name}: {d.actual}")
        else:
            out.append(f"{t}: index {d.name}: expected {d.expected}, found {d.actual}")
    if kinds["sequence"]:
        out.append(
            f"{t}: owned sequences: expected {', '.join(sorted(want.sequences)) or 'none'}, "
            f"found {', '.join(sorted(have.sequences)) or 'none'}"
        )
    return out
