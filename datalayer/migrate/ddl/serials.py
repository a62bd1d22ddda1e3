"""Auto-numbered columns: serial pseudo-types and identity columns, and their changes.

``SERIAL`` is not a type: it is an integer column with a sequence it owns and a
``DEFAULT nextval(...)``; an identity column (``INT GENERATED ... AS IDENTITY``)
numbers its rows itself.  :func:`_serial_change` writes a type change to, from
or between those; the other functions tell them apart by the type a model
declares (peewee's ``field_type``, or a custom field's own: text its author wrote).
"""

from __future__ import annotations

import dataclasses

from .actions import TypeChange
from .spec import ColumnSpec, Sql, quote
from .steps import UNLISTED, Step, _do, _drop_default, _literal, _pct

__all__ = ["auto_base", "identity_of", "serial_base", "serial_sequence"]


_SERIALS = {"SMALLSERIAL": "SMALLINT", "SERIAL": "INTEGER", "BIGSERIAL": "BIGINT"}

_INTEGER_TYPES = {"SMALLINT", "INTEGER", "BIGINT", "INT", "INT2", "INT4", "INT8"}


def _integers(*types: str) -> bool:
    return all((serial_base(t) or t.strip().upper()) in _INTEGER_TYPES for t in types)


def serial_base(type_text: str) -> str | None:
    """Return the integer type under a serial pseudo-type (``BIGSERIAL``: ``BIGINT``), or None."""
    return _SERIALS.get(type_text.strip().upper())


def identity_of(type_text: str) -> tuple[str, str] | None:
    """Return (integer type, ``ALWAYS`` or ``BY DEFAULT``) of an identity column's type.

    ``type_text`` is the type the model declares (peewee's ``IdentityField`` holds its
    ``generate_always`` nowhere else): ``<integer> GENERATED {ALWAYS | BY DEFAULT} AS
    IDENTITY``, read word by word.
    """
    words = type_text.upper().split()
    if len(words) < 5 or words[1] != "GENERATED" or words[-2:] != ["AS", "IDENTITY"]:
        return None
    kind = " ".join(words[2:-2])
    if kind not in ("ALWAYS", "BY DEFAULT") or not all(c.isalnum() or c == "_" for c in words[0]):
        return None
    base = {"INT": "INTEGER", "INT4": "INTEGER", "INT8": "BIGINT", "INT2": "SMALLINT"}
    return base.get(words[0], words[0]), kind


def auto_base(type_text: str) -> str | None:
    """Return the integer type under a serial or identity type, None for any other type."""
    ident = identity_of(type_text)
    return serial_base(type_text) or (ident[0] if ident else None)


def serial_sequence(table: str, schema: str | None, column: str) -> str:
    """Return the quoted name of the sequence PostgreSQL makes for a serial column.

    Long names are shortened as PostgreSQL's ``makeObjectName`` does: the longer of
    table and column loses a character at a time until ``table_column_seq`` fits in 63
    bytes.
    """
    a, b = table.encode(), column.encode()
    room = 63 - len("__seq")
    while len(a) + len(b) > room:
        if len(a) > len(b):
            a = a[:-1]
        else:
            b = b[:-1]
    name = f"{a.decode(errors='ignore')}_{b.decode(errors='ignore')}_seq"
    return f"{quote(schema)}.{quote(name)}" if schema else quote(name)


def _serial_sequence_of(T: str, column: str, action: str) -> Sql:
    """Return a statement running ``action`` (``ALTER SEQUENCE %s ...``) on a column's sequence."""
    body = f"""DECLARE
    seq text := pg_get_serial_sequence({_literal(T)}, {_literal(column)});
BEGIN
    IF seq IS NULL THEN
        RAISE EXCEPTION 'column {_pct(_literal(column)[1:-1])} of {_pct(_literal(T)[1:-1])} '
            'owns no sequence: the database does not match its migration history';
    END IF;
    EXECUTE format({_literal(action)}, seq);
END"""
    return dataclasses.replace(_do(_pct(body)), kind=UNLISTED).doing()


def _serial_change(
    table: str, T: str, old: ColumnSpec, new: ColumnSpec, using: str | None
) -> list[Step]:
    """Return the statements for a type change to, from or between auto-numbered types.

    ``SERIAL`` is not a type: to one, the column gets the integer type, a sequence it owns
    and ``DEFAULT nextval(...)`` (the sequence starts after the largest value, unless
    ``using`` numbers the rows from it); from one, the default and the sequence go. An
    identity column (``INT GENERATED ... AS IDENTITY``) is added with ``ADD GENERATED``
    and removed with ``DROP IDENTITY``. Between two of one kind, the column and its
    sequence change integer type.
    """
    c = quote(new.name)
    old_serial, new_serial = serial_base(old.type.text), serial_base(new.type.text)
    old_ident, new_ident = identity_of(old.type.text), identity_of(new.type.text)
    old_base = old_serial or (old_ident and old_ident[0]) or old.type.text.upper()
    new_base = new_serial or (new_ident and new_ident[0]) or new.type.text.upper()
    steps: list[Step] = []
    if (old_serial and new_serial) or (old_ident and new_ident):
        if old_base != new_base:
            steps.append(Sql(f"ALTER TABLE {T} ALTER COLUMN {c} TYPE {new_base}").of(
                "alter_type", T).doing(TypeChange(T, new.name, new_base)))
            steps.append(_serial_sequence_of(T, new.name, f"ALTER SEQUENCE %s AS {new_base}"))
        if old_ident and new_ident and old_ident[1] != new_ident[1]:
            generated = Sql(f"ALTER TABLE {T} ALTER COLUMN {c} SET GENERATED {new_ident[1]}")
            steps.append(generated.of("alter_table", T).doing())
        return steps
    # Leave the old numbering.
    if old_serial:
        steps.append(_drop_default(T, c))
        steps.append(_serial_sequence_of(T, new.name, "DROP SEQUENCE %s"))
    elif old_ident:
        steps.append(Sql(f"ALTER TABLE {T} ALTER COLUMN {c} DROP IDENTITY").of("alter_table", T)
                     .doing())
    elif old.default is not None:
        steps.append(_drop_default(T, c))
    seq: str | None = None
    if new_serial:
        # The sequence first: a USING may number the rows from it.
        schema = T.split(".", 1)[0][1:-1].replace('""', '"') if "." in T else None
        seq = serial_sequence(table, schema, new.name)
        steps.append(Sql(f"CREATE SEQUENCE {seq} AS {new_base}", kind=UNLISTED).doing())
    if old_base != new_base or using:
        stmt = Sql(f"ALTER TABLE {T} ALTER COLUMN {c} TYPE {new_base}").of("alter_type", T).doing(
            TypeChange(T, new.name, new_base, (using or "").strip()))
        steps.append(stmt + f" USING {using}" if using else stmt)
    if seq is not None:
        steps.append(Sql(f"ALTER SEQUENCE {seq} OWNED BY {T}.{c}", kind=UNLISTED).doing())
        steps.append(Sql(
            f"ALTER TABLE {T} ALTER COLUMN {c} SET DEFAULT nextval({_literal(seq)}::regclass)"
        ).of("set_default", T).doing())
        steps.append(Sql(
            f"SELECT setval({_literal(seq)}, COALESCE(max({c}), 1), max({c}) IS NOT NULL) "
            f"FROM {T}", kind=UNLISTED,
        ).doing())
    elif new_ident:
        steps.append(Sql(f"ALTER TABLE {T} ALTER COLUMN {c} ADD GENERATED {new_ident[1]} "
                         "AS IDENTITY").of("alter_table", T).doing())
        steps.append(Sql(
            f"SELECT setval(pg_get_serial_sequence({_literal(T)}, {_literal(new.name)}), "
            f"COALESCE(max({c}), 1), max({c}) IS NOT NULL) FROM {T}", kind=UNLISTED,
        ).doing())
    return steps
