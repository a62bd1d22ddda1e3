"""Draw the models as a Mermaid ``erDiagram``, from their metadata alone.

Pure functions, no database: :func:`render_mermaid` returns the diagram,
:func:`render_markdown` the page committed as ``docs/er-diagram.md``.  The
CLI (``datalayer erd``) decides where the text goes.

What the diagram shows, per column: the PostgreSQL type, the column name,
``PK`` / ``FK`` / ``UK`` markers, and a comment with what the type word cannot
carry (``varchar(254)``), ``nullable``, the server default, enum values,
CHECK constraints, ``indexed`` and the ``ON DELETE`` action of a foreign key.
Columns are NOT NULL unless the comment says ``nullable``.

Relations come from the foreign keys, one line each, labelled with the FK
column and drawn from the referenced table to the referencing one:

* referenced side: ``||`` (exactly one) for a NOT NULL FK, ``|o`` (zero or
  one) for a nullable one;
* referencing side: ``o{`` (zero or more) for a plain FK, ``o|`` (zero or one)
  for a unique FK (or one that is the primary key): a one-to-one.

Mermaid's grammar limits attribute types and names to a word
(``[A-Za-z_][A-Za-z0-9_-]*`` is the portable subset; older renderers reject
parentheses), so lengths go to the comment and other characters become ``_``.
Output depends only on the models and their order: the same models give the
same text, byte for byte, so ``datalayer erd --check`` can compare it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import peewee as pw
from playhouse.postgres_ext import PostgresqlExtDatabase

from .models.fields import EnumField

__all__ = ["MERMAID_WORD", "render_markdown", "render_mermaid"]

#: What Mermaid accepts as an entity name, attribute type or attribute name
#: (the portable subset of its ``erDiagram`` grammar).
MERMAID_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

# Only used to compile column types to PostgreSQL DDL; never connects.  A
# fixed dialect keeps the output independent of the database models are bound to.
_DIALECT = PostgresqlExtDatabase(None)

_INDENT = "    "


@dataclass
class _Column:
    type: str
    name: str
    keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = [self.type, self.name]
        if self.keys:
            parts.append(",".join(self.keys))
        if self.notes:
            # A Mermaid comment ends at the next double quote and at the line's end.
            comment = " ".join("; ".join(self.notes).replace('"', "'").split())
            parts.append(f'"{comment}"')
        return " ".join(parts)


def _is_abstract(model: type[pw.Model]) -> bool:
    """Return True for a class declared abstract (``__abstract__ = True`` on itself)."""
    return bool(model.__dict__.get("__abstract__", False))


def _sql(node: Any) -> str:
    """Compile a peewee node (a type, a constraint, a WHERE) to SQL text, values inlined."""
    ctx = _DIALECT.get_sql_context()
    with ctx.scope_values(subquery=True):  # as in CREATE INDEX: bare column names
        ctx.sql(node)
    sql, params = ctx.query()
    for param in params:  # constraints written as SQL(...) carry none; be safe anyway
        sql = sql.replace("%s", repr(param), 1)
    return str(sql)


def _word(text: str, what: str) -> str:
    """Return ``text`` if Mermaid accepts it as a name, else raise ``ValueError``."""
    if not MERMAID_WORD.match(text):
        raise ValueError(
            f"{what} {text!r} cannot be drawn: Mermaid names must match {MERMAID_WORD.pattern}"
        )
    return text


def _column_type(column: pw.Field) -> tuple[str, str | None]:
    """Return the Mermaid type word and, if it had parameters, the full SQL type.

    ``VARCHAR(254)`` gives ``("varchar", "varchar(254)")``; ``TIMESTAMPTZ`` gives
    ``("timestamptz", None)``; ``DOUBLE PRECISION`` gives ``("double_precision", None)``.
    """
    ctx = _DIALECT.get_sql_context()
    ddl = column.ddl_datatype(ctx)
    full = _sql(ddl).lower() if ddl is not None else "unknown"
    base = re.sub(r"\(.*?\)", "", full).strip()
    word = re.sub(r"[^A-Za-z0-9_]+", "_", base).strip("_") or "unknown"
    if not word[0].isalpha() and word[0] != "_":
        word = "_" + word
    return word, (full if full != base else None)


def _unquote(sql: str) -> str:
    # A comment cannot hold a double quote; identifiers read the same without them.
    return sql.replace('"', "")


def _constraint_notes(column: pw.Field) -> list[str]:
    """Return ``default …`` and ``check (…)`` notes from the column's constraints."""
    notes: list[str] = []
    for constraint in column.constraints or ():
        text = " ".join(_sql(constraint).split())
        upper = text.upper()
        if upper.startswith("DEFAULT "):
            notes.append("default " + _unquote(text[len("DEFAULT ") :]))
        elif upper.startswith("CHECK"):
            if isinstance(column, EnumField):
                continue  # shown as "one of: …", which says the same more plainly
            notes.append("check " + _unquote(text[len("CHECK") :].strip()))
        else:
            notes.append(_unquote(text.lower()))
    return notes


def _primary_key_names(model: type[pw.Model]) -> set[str]:
    pk = model._meta.primary_key
    if isinstance(pk, pw.CompositeKey):
        return set(pk.field_names)
    return {pk.name} if pk is not None and pk is not False else set()


def _index_flags(model: type[pw.Model]) -> tuple[set[str], set[str], dict[str, list[str]]]:
    """Return (unique columns, indexed columns, extra notes) from the model's indexes.

    A full index on one column makes it ``UK`` (unique) or notes it ``indexed``;
    a composite or partial index is noted on each of its columns instead, as
    ``unique (a, b)`` or ``index (a, b) where …`` (``UK`` would overstate it).
    """
    unique: set[str] = set()
    indexed: set[str] = set()
    extra: dict[str, list[str]] = {}
    for index in model._meta.fields_to_index():
        columns = [e for e in getattr(index, "_expressions", ()) if isinstance(e, pw.Field)]
        if not columns:
            continue  # an index on expressions only: nothing to attach it to
        is_unique = bool(getattr(index, "_unique", False))
        where = getattr(index, "_where", None)
        if len(columns) == 1 and where is None:
            (unique if is_unique else indexed).add(columns[0].name)
            continue
        label = ("unique" if is_unique else "index") + " ("
        label += ", ".join(c.column_name for c in columns) + ")"
        if where is not None:
            label += " where " + _unquote(_sql(where))
        for c in columns:
            extra.setdefault(c.name, []).append(label)
    return unique, indexed, extra


def _default_note(column: pw.Field, server_notes: Sequence[str]) -> str | None:
    """Return a note for a Python-side default when the server has none."""
    if any(note.startswith("default ") for note in server_notes):
        return None
    default = column.default
    if default is None:
        return None
    if callable(default):
        name = getattr(default, "__name__", type(default).__name__)
        return f"app default {name}()"
    value = getattr(default, "value", default)  # an enum member: its stored value
    return f"app default {value!r}"


def _columns(model: type[pw.Model]) -> list[_Column]:
    pk_names = _primary_key_names(model)
    unique, indexed, extra = _index_flags(model)
    out: list[_Column] = []
    for column in model._meta.sorted_fields:
        type_word, full_type = _column_type(column)
        col = _Column(
            type=_word(type_word, f"type of {model._meta.table_name}.{column.column_name}"),
            name=_word(column.column_name, f"column {model._meta.table_name}.{column.column_name}"),
        )
        if column.name in pk_names:
            col.keys.append("PK")
        if isinstance(column, pw.ForeignKeyField):
            col.keys.append("FK")
        if column.name in unique and column.name not in pk_names:
            col.keys.append("UK")
        if full_type is not None:
            col.notes.append(full_type)
        if column.null:
            col.notes.append("nullable")
        constraint_notes = _constraint_notes(column)
        col.notes.extend(n for n in constraint_notes if n.startswith("default "))
        app_default = _default_note(column, constraint_notes)
        if app_default is not None:
            col.notes.append(app_default)
        if isinstance(column, EnumField):
            col.notes.append("one of: " + ", ".join(str(m.value) for m in column.enum_cls))
        col.notes.extend(n for n in constraint_notes if not n.startswith("default "))
        col.notes.extend(extra.get(column.name, []))
        if column.name in indexed and not {"PK", "UK"} & set(col.keys):
            col.notes.append("indexed")  # PK and UK imply an index already
        if isinstance(column, pw.ForeignKeyField):
            if column.on_delete:
                col.notes.append(f"on delete {str(column.on_delete).lower()}")
            if column.on_update:
                col.notes.append(f"on update {str(column.on_update).lower()}")
        out.append(col)
    return out


def _relation(model: type[pw.Model], fk: pw.ForeignKeyField, unique: set[str]) -> str:
    """Return the relation line of one foreign key, referenced table on the left."""
    pk_names = _primary_key_names(model)
    one_to_one = fk.name in unique or pk_names == {fk.name}
    parent = "|o" if fk.null else "||"
    child = "o|" if one_to_one else "o{"
    target = _word(fk.rel_model._meta.table_name, "table")
    source = _word(model._meta.table_name, "table")
    return f'{target} {parent}--{child} {source} : "{fk.column_name}"'


def _tables(models: Iterable[type[pw.Model]]) -> list[type[pw.Model]]:
    """Return the concrete models, in the order given, each once."""
    seen: set[type[pw.Model]] = set()
    out: list[type[pw.Model]] = []
    for model in models:
        if _is_abstract(model) or model in seen:
            continue
        seen.add(model)
        out.append(model)
    return out


def render_mermaid(models: Iterable[type[pw.Model]]) -> str:
    """Return a Mermaid ``erDiagram`` of ``models`` (abstract ones skipped).

    Tables appear in the order given and columns in declaration order, then one
    relation line per foreign key.  A foreign key to a model not in ``models``
    is still drawn (Mermaid shows the table without columns).

    :raises ValueError: a table or column name that Mermaid cannot show.
    """
    tables = _tables(models)
    lines = ["erDiagram"]
    for model in tables:
        lines.append(f"{_INDENT}{_word(model._meta.table_name, 'table')} {{")
        lines.extend(f"{_INDENT * 2}{col.line()}" for col in _columns(model))
        lines.append(f"{_INDENT}}}")
    relations: list[str] = []
    for model in tables:
        unique, _, _ = _index_flags(model)
        for column in model._meta.sorted_fields:
            if isinstance(column, pw.ForeignKeyField):
                relations.append(_INDENT + _relation(model, column, unique))
    if relations:
        lines.append("")
        lines.extend(relations)
    return "\n".join(lines) + "\n"


def render_markdown(
    models: Iterable[type[pw.Model]],
    modules: Sequence[str] = ("datalayer.models",),
    *,
    make_target: str | None = "er-diagram",
) -> str:
    """Return the markdown page holding the diagram (``docs/er-diagram.md``).

    ``modules`` names where the models come from, for the page's header;
    ``make_target`` the Makefile target that regenerates it (this repository's
    ``er-diagram``), or None for a project without one: the page then names
    ``datalayer erd --output FILE``.
    """
    diagram = render_mermaid(models)
    source = ", ".join(f"`{m}`" for m in modules)
    if make_target:
        how = (
            f" (`make {make_target}`); do not edit it by hand. After changing a model, run"
            f" `make {make_target}` and commit the result;"
        )
    else:
        how = (
            "; do not edit it by hand. After changing a model, run `datalayer erd --output"
            " FILE` (FILE: this file) and commit the result;"
        )
    return (
        "# ER diagram\n"
        "\n"
        f"Generated from the models in {source} by `datalayer erd`{how}"
        " `datalayer erd --check` (run in CI) fails while this file is out of date.\n"
        "\n"
        "Types are PostgreSQL column types, with lengths in the comment column."
        " Columns are NOT NULL unless marked `nullable`. Markers: `PK` primary key,"
        " `FK` foreign key, `UK` unique. Relations are labelled with the foreign-key"
        " column: `||` exactly one, `|o` zero or one, `o{` zero or more.\n"
        "\n"
        "```mermaid\n"
        f"{diagram}"
        "```\n"
    )
