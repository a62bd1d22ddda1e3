"""Columns: add one, change one (type, default, NULL), fill its NULLs.

A NOT NULL column with a constant Python default is added with that constant as
its DEFAULT (PostgreSQL 11+ stores it once), then the default dropped; with a
volatile or Python-callable default, online, it is added empty, its rows filled
in batches (:class:`.steps.BatchFill`) and then made NOT NULL.  Whether a type
change rewrites the table is :func:`..facts.type_change`'s (the lint reads it too).
"""

from __future__ import annotations

from .. import facts
from .actions import AddColumn, NotNull, TypeChange
from .constraints import set_not_null
from .serials import _integers, _serial_change, auto_base, serial_base
from .spec import ColumnSpec, Sql, UnsupportedChange, quote
from .steps import BatchFill, Step, _do, _drop_default, _literal, _pct, _set_default

__all__ = ["fill_nulls", "is_volatile", "rewrites_type", "type_change"]


def _column_ddl(col: ColumnSpec, *, null: bool, default: bool, checks: bool) -> Sql:
    """Return ``col``'s definition with or without NOT NULL, its DEFAULT and its CHECKs."""
    out = Sql(f"{quote(col.name)} ") + col.type
    if col.collation:
        out = out + f" COLLATE {col.collation}"
    if not null:
        out = out + " NOT NULL"
    if default and col.default is not None:
        out = out + " DEFAULT " + col.default
    for extra in col.other + (col.checks if checks else ()):
        out = out + " " + extra
    return out


def is_volatile(default: Sql | None) -> bool:
    """Return True when a server default may differ per row (``gen_random_uuid()``, ...).

    Such a default makes ``ADD COLUMN`` rewrite the whole table; a constant
    or stable one (``0``, ``'x'``, ``now()``) is stored once, without a rewrite.
    Which functions are volatile is :data:`.facts.NOT_VOLATILE`'s (shared with the lint).
    """
    if default is None:
        return False
    return facts.first_volatile(facts.calls_in(default.text)) is not None


def type_change(old: ColumnSpec, new: ColumnSpec, using: str | None = None) -> facts.TypeChange:
    """Return what changing column ``old`` to ``new`` does (:func:`.facts.type_change`)."""
    return facts.type_change(
        facts.parse_type(old.type.text), facts.parse_type(new.type.text),
        old_collation=old.collation, new_collation=new.collation, using=using is not None,
    )


def rewrites_type(old: Sql, new: Sql) -> bool:
    """Return True when changing a column's type from ``old`` to ``new`` rewrites the table.

    The rule is :func:`.facts.type_change`'s, which the lint reads too.
    """
    return facts.type_change(facts.parse_type(old.text), facts.parse_type(new.text)).rewrites


def fill_nulls(
    T: str, col: ColumnSpec, *, online: bool, key: str | None, batch_size: int = 1000
) -> list[Step]:
    """Return the steps that give the NULLs of ``col`` its default (server, then Python)."""
    if col.default is not None:
        return [BatchFill(T, col.name, key, "default", batch_size=batch_size, online=online)]
    if col.py_default is None or col.db_value is None:
        return []
    if callable(col.py_default):
        return [BatchFill(T, col.name, key, "callable", factory=col.py_default,
                          db_value=col.db_value, batch_size=batch_size, online=online)]
    value = col.db_value(col.py_default)
    return [BatchFill(T, col.name, key, "value", value=value, batch_size=batch_size,
                      online=online)]


def _retype_referenced_key(T: str, column: str, alter: str, new_type: str) -> Sql:
    """Return ``alter`` (a key's type change) with the foreign keys that refer to the key.

    PostgreSQL refuses to keep a foreign key between columns of incompatible types
    (uuid and varchar): the referencing constraints are dropped, the key and then each
    referencing column get the new type, and the constraints are added back as they were.
    Found in the catalog at run time, so hand-written foreign keys are carried too.
    """
    rc = _literal(T) + "::regclass"
    typ = _literal(new_type)[1:-1]
    body = f"""DECLARE
    r record;
    saved text[] := '{{}}';
    i int;
BEGIN
    FOR r IN SELECT k.conrelid::regclass::text AS tbl, k.conname,
                    pg_get_constraintdef(k.oid) AS def, a.attname
               FROM pg_constraint k
               JOIN pg_attribute ka ON ka.attrelid = k.confrelid AND ka.attnum = k.confkey[1]
               JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
              WHERE k.contype = 'f' AND k.confrelid = {rc} AND cardinality(k.confkey) = 1
                AND ka.attname = {_literal(column)}
              ORDER BY 1, 2 LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
        saved := saved || ARRAY[r.tbl, r.conname, r.def, r.attname];
    END LOOP;
    EXECUTE {_literal(alter)};
    i := 1;
    WHILE i < coalesce(array_length(saved, 1), 0) LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE {typ} USING %I::text::{typ}',
                       saved[i], saved[i + 3], saved[i + 3]);
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', saved[i], saved[i + 1], saved[i + 2]);
        i := i + 4;
    END LOOP;
END"""
    return _do(_pct(body))


def _add_column_sql(T: str, col: ColumnSpec, *, checks: bool, required: bool = False) -> Sql:
    """Return ``ALTER TABLE T ADD COLUMN `` (a scan when the column comes with its CHECKs).

    ``required``: the column comes NOT NULL without a DEFAULT, which old code's INSERTs
    (that leave it out) do not survive.
    """
    kind = "add_column_checked" if checks and col.checks else "add_column"
    add = Sql(f"ALTER TABLE {T} ADD COLUMN ").of(kind, T).doing(AddColumn(T, col.name))
    return add.expanding(False) if required else add


def _add_column(
    table: str, T: str, col: ColumnSpec, *, online: bool = False, key: str | None = None,
    new_key: bool = False,
) -> list[Step]:
    c = quote(col.name)
    if col.primary_key and new_key:
        # A serial key: PostgreSQL numbers the existing rows from the new sequence
        # (rewriting the table under ACCESS EXCLUSIVE, as any volatile default does).
        return [_add_column_sql(T, col, checks=True, required=_required(col)) + col.ddl]
    if col.primary_key:
        raise UnsupportedChange(
            f"{table}.{col.name}: adding a primary key column is not supported; "
            "write that migration by hand"
        )
    needs_fill = col.default is None and col.py_default is not None
    if not col.null and needs_fill and not callable(col.py_default) and col.db_value:
        # NOT NULL with a constant Python default: PostgreSQL 11+ stores the constant
        # once (no rewrite, no fill), then the default goes (create_tables() has none).
        value = col.db_value(col.py_default)
        if value is not None:
            return [
                _add_column_sql(T, col, checks=not online)
                + _column_ddl(col, null=True, default=False, checks=not online)
                + Sql(" DEFAULT %s NOT NULL", (value,)),
                _drop_default(T, c),
            ]
    if online and (is_volatile(col.default) or (not col.null and needs_fill)):
        # Added empty (no rewrite under the lock), the default set for new rows, the
        # existing rows filled in batches outside the lock, then NOT NULL if wanted.
        steps: list[Step] = [
            _add_column_sql(T, col, checks=False)
            + _column_ddl(col, null=True, default=False, checks=False)
        ]
        if col.default is not None:
            steps.append(_set_default(T, c) + col.default)
        steps.extend(fill_nulls(T, col, online=True, key=key))
        if not col.null:
            steps.extend(set_not_null(table, T, col.name, online=True))
        return steps
    if online:
        return [_add_column_sql(T, col, checks=False, required=_required(col))
                + _column_ddl(col, null=col.null, default=True, checks=False)]
    if not col.null and needs_fill:
        # NOT NULL with a Python-side default only: add it nullable, fill the
        # existing rows, then forbid NULLs (create_tables() has no DEFAULT here).
        return [
            _add_column_sql(T, col, checks=True) + col.ddl_nullable,
            *fill_nulls(T, col, online=False, key=key),
            Sql(f"ALTER TABLE {T} ALTER COLUMN {c} SET NOT NULL").of("set_not_null", T)
            .doing(NotNull(T, col.name)),
        ]
    return [_add_column_sql(T, col, checks=True, required=_required(col)) + col.ddl]


def _required(col: ColumnSpec) -> bool:
    """True when ``col``'s definition makes it NOT NULL without a DEFAULT."""
    return not col.null and col.default is None


def _alter_column(
    table: str,
    T: str,
    old: ColumnSpec,
    new: ColumnSpec,
    using: str | None,
    *,
    online: bool = False,
    key: str | None = None,
    key_moved: bool = False,
) -> list[Step]:
    if old is new:  # the same spec (a field unchanged: its memoized spec): nothing to do
        return []
    c = quote(new.name)
    steps: list[Step] = []
    if old.primary_key != new.primary_key and not key_moved:
        raise UnsupportedChange(
            f"{table}.{new.name}: changing PRIMARY KEY is not supported; write that migration "
            "by hand"
        )
    if old.other != new.other:
        raise UnsupportedChange(
            f"{table}.{new.name}: the column constraint(s) "
            f"{', '.join(s.text for s in old.other + new.other)} changed; only DEFAULT and CHECK "
            "can be altered automatically, write that migration by hand"
        )
    retype = old.type != new.type or old.collation != new.collation
    default_dropped = False
    auto = auto_base(old.type.text) or auto_base(new.type.text)
    if retype and auto:
        steps.extend(_serial_change(table, T, old, new, using))
    elif retype:
        if old.default is not None:
            # The old default may not cast to the new type; set it again afterwards.
            steps.append(_drop_default(T, c))
            default_dropped = True
        stmt = Sql(f"ALTER TABLE {T} ALTER COLUMN {c} TYPE ") + new.type
        if new.collation:
            stmt = stmt + f" COLLATE {new.collation}"
        if using:
            stmt = stmt + f" USING {using}"
        if new.primary_key and not _integers(old.type.text, new.type.text) and not stmt.params:
            stmt = _retype_referenced_key(T, new.name, stmt.text, new.type.text)
        stmt = stmt.of(type_change(old, new, using).kind, T)
        if not new.type.params:
            stmt = stmt.doing(TypeChange(T, new.name, new.type.text.strip(), (using or "").strip()))
        steps.append(stmt)
    if retype and auto and old.default is not None:
        default_dropped = True  # _serial_change dropped it
    if new.default is not None and (default_dropped or old.default != new.default):
        steps.append(_set_default(T, c) + new.default)
    elif new.default is None and old.default is not None and not default_dropped:
        steps.append(_drop_default(T, c))
    if old.null and not new.null:
        if retype and serial_base(new.type.text) and not serial_base(old.type.text):
            # Numbered from the new sequence (its DEFAULT), walking the rows by ctid.
            steps.append(BatchFill(T, new.name, None, "default", online=online))
        else:
            steps.extend(fill_nulls(T, new, online=online, key=key))
        steps.extend(set_not_null(table, T, new.name, online=online))
    elif not old.null and new.null:
        drop = Sql(f"ALTER TABLE {T} ALTER COLUMN {c} DROP NOT NULL").of("alter_table", T).doing()
        steps.append(drop.expanding(True))  # a constraint less: old code's writes still pass
    return steps
