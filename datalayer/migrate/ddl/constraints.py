"""Table constraints: drop CHECKs, foreign keys and others, add them, SET NOT NULL, validate.

Objects whose names PostgreSQL chose (unnamed CHECK and foreign key constraints)
are found at run time from the catalog, by definition or by column, in a ``DO``
block, so that a migration never depends on guessing those names.  Online, a
foreign key or CHECK is added ``NOT VALID`` (a later ``VALIDATE CONSTRAINT``
checks the rows under a weak lock), ``SET NOT NULL`` goes behind a validated
``CHECK (col IS NOT NULL)``, and a UNIQUE constraint is built as a concurrent
unique index first.
"""

from __future__ import annotations

import re

from .actions import Check, NotNull, Validate
from .spec import Sql, UnsupportedChange, constraint_name, quote, read_constraint
from .steps import (
    _NAMEDATALEN,
    Step,
    _do,
    _give_up,
    _if_exists,
    _literal,
    _pct,
    _short_name,
    _unique_index,
    _using_index,
)

__all__ = [
    "drop_check",
    "drop_constraint",
    "drop_foreign_key",
    "set_not_null",
    "validate_constraints",
]


def drop_check(table: str, table_sql: str, check: Sql, *, missing_ok: bool = False) -> Sql:
    """Return the statement that drops the CHECK constraint ``check`` from a table.

    A named check is dropped by name.  For an unnamed one, PostgreSQL's own
    text of the expression is obtained by adding it once more as a NOT VALID
    probe (no rows are read), and the constraint with that text is dropped.
    ``missing_ok``: nothing to drop is not an error (a statement run again).
    """
    name = constraint_name(check)
    if name:
        return _drop_named(table_sql, name, missing_ok)
    rc = _literal(table_sql) + "::regclass"
    body = f"""DECLARE
    wanted text;
    victim name;
BEGIN
    ALTER TABLE {table_sql} ADD CONSTRAINT datalayer_probe {check.text} NOT VALID;
    SELECT pg_get_constraintdef(oid) INTO wanted FROM pg_constraint
     WHERE conrelid = {rc} AND conname = 'datalayer_probe';
    ALTER TABLE {table_sql} DROP CONSTRAINT datalayer_probe;
    wanted := replace(wanted, ' NOT VALID', '');
    SELECT conname INTO victim FROM pg_constraint
     WHERE conrelid = {rc} AND contype = 'c'
       AND replace(pg_get_constraintdef(oid), ' NOT VALID', '') = wanted
     ORDER BY conname LIMIT 1;
    IF victim IS NULL THEN{_give_up(missing_ok)}
        RAISE EXCEPTION 'table {_pct(_literal(table)[1:-1])} has no constraint %%: the database '
            'does not match its migration history; compare them with datalayer migrate check',
            wanted;
    END IF;
    EXECUTE 'ALTER TABLE ' || {_literal(table_sql)} || ' DROP CONSTRAINT ' || quote_ident(victim);
END"""
    return _do(body, check.params).of("drop_constraint", table_sql).doing()


def _drop_named(table_sql: str, name: str, missing_ok: bool) -> Sql:
    drop = f"ALTER TABLE {table_sql} DROP CONSTRAINT {_if_exists(missing_ok)}{quote(name)}"
    return Sql(drop).of("drop_constraint", table_sql).doing()


def drop_foreign_key(
    table: str, table_sql: str, column: str, name: str | None, *, missing_ok: bool = False
) -> Sql:
    """Return the statement that drops the foreign key on ``column`` (found by column)."""
    if name:
        return _drop_named(table_sql, name, missing_ok)
    rc = _literal(table_sql) + "::regclass"
    body = f"""DECLARE
    victim name;
BEGIN
    SELECT k.conname INTO victim FROM pg_constraint k
      JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
     WHERE k.conrelid = {rc} AND k.contype = 'f' AND cardinality(k.conkey) = 1
       AND a.attname = {_literal(column)}
     ORDER BY k.conname LIMIT 1;
    IF victim IS NULL THEN{_give_up(missing_ok)}
        RAISE EXCEPTION 'table {_pct(_literal(table)[1:-1])} has no foreign key on column '
            '{_pct(_literal(column)[1:-1])}: the database does not match its migration history';
    END IF;
    EXECUTE 'ALTER TABLE ' || {_literal(table_sql)} || ' DROP CONSTRAINT ' || quote_ident(victim);
END"""
    return _do(body).of("drop_constraint", table_sql).doing()


def drop_constraint(
    table: str, table_sql: str, constraint: Sql, *, missing_ok: bool = False
) -> Sql:
    """Return the statement that drops a table constraint other than CHECK."""
    name = constraint_name(constraint)
    if name:
        return _drop_named(table_sql, name, missing_ok)
    if constraint.params:
        raise UnsupportedChange(
            f"{table}: cannot find the unnamed constraint {constraint.text!r} to drop it; "
            "name it (SQL('CONSTRAINT name ...')) in the model and in the database"
        )
    wanted = re.sub(r'[\s"]', "", constraint.text.replace("%%", "%").lower())
    rc = _literal(table_sql) + "::regclass"
    body = f"""DECLARE
    victim name;
BEGIN
    SELECT conname INTO victim FROM pg_constraint
     WHERE conrelid = {rc} AND contype <> 'c'
       AND regexp_replace(lower(pg_get_constraintdef(oid)), '[\\s"]', '', 'g') = {_literal(wanted)}
     ORDER BY conname LIMIT 1;
    IF victim IS NULL THEN{_give_up(missing_ok)}
        RAISE EXCEPTION 'table {_literal(table)[1:-1]} has no constraint '
            '{_literal(constraint.text)[1:-1]}; name it in the model (CONSTRAINT name ...)';
    END IF;
    EXECUTE 'ALTER TABLE ' || {_literal(table_sql)} || ' DROP CONSTRAINT ' || quote_ident(victim);
END"""
    return _do(_pct(body)).of("drop_constraint", table_sql).doing()


def _add_constraint(table: str, T: str, constraint: Sql, *, online: bool) -> list[Step]:
    """Return the statements that add a table constraint other than CHECK.

    The constraint is SQL written in the model: what it is, :func:`.spec.read_constraint`.
    """
    shape = read_constraint(constraint)
    plain: list[Step] = [Sql(f"ALTER TABLE {T} ADD ").of(shape.kind, T) + constraint]
    if not online or constraint.params:
        return plain
    if shape.foreign_key:
        add = Sql(f"ALTER TABLE {T} ADD ").of("add_foreign_key_not_valid", T)
        return [add + constraint + " NOT VALID"]
    if not shape.unique_columns:
        return plain
    columns = shape.unique_columns
    # The name PostgreSQL gives an unnamed UNIQUE constraint (without its collision numbering).
    name = shape.unique_name or f"{table}_{'_'.join(columns)}_key"
    if len(name.encode()) > _NAMEDATALEN:
        return plain
    cols = ", ".join(quote(c) for c in columns)
    body = f"""BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = {_literal(T)}::regclass AND conname = {_literal(name)}) THEN
        ALTER TABLE {T} ADD CONSTRAINT {quote(name)} UNIQUE USING INDEX {quote(name)};
    END IF;
END"""
    create = f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote(name)} ON {T} ({cols})"
    return [_unique_index(create, T, name, columns), _using_index(_do(_pct(body)).text, T)]


def set_not_null(table: str, T: str, column: str, *, online: bool) -> list[Step]:
    """Return the statements that make ``column`` NOT NULL.

    Online (PostgreSQL 12+): a ``CHECK (column IS NOT NULL) NOT VALID`` (a
    brief lock, no scan), validated in its own transaction (a scan that lets
    reads and writes through), then ``SET NOT NULL``, which PostgreSQL proves
    from the valid CHECK without a scan, then the CHECK dropped.  Each
    statement can run again.
    """
    c = quote(column)
    if not online:
        return [Sql(f"ALTER TABLE {T} ALTER COLUMN {c} SET NOT NULL").of("set_not_null", T)
                .doing(NotNull(T, column))]
    name = _short_name(f"{table}_{column}_not_null_dl")
    n, rc = quote(name), f"{_literal(T)}::regclass"
    exists = f"SELECT 1 FROM pg_constraint WHERE conrelid = {rc} AND conname = {_literal(name)}"
    add = f"""BEGIN
    IF NOT EXISTS ({exists}) AND NOT (SELECT attnotnull FROM pg_attribute
                    WHERE attrelid = {rc} AND attname = {_literal(column)}) THEN
        ALTER TABLE {T} ADD CONSTRAINT {n} CHECK ({c} IS NOT NULL) NOT VALID;
    END IF;
END"""
    validate = f"""BEGIN
    IF EXISTS ({exists} AND NOT convalidated) THEN
        ALTER TABLE {T} VALIDATE CONSTRAINT {n};
    END IF;
END"""
    # The CHECK is there for SET NOT NULL only: all of it belongs with SET NOT NULL, which
    # old code (writing NULLs) does not survive.
    return [
        _do(_pct(add)).of("add_check_not_valid", T).expanding(False)
        .doing(Check(T, f"{c} IS NOT NULL", name, not_valid=True)),
        _do(_pct(validate)).of("validate_constraint", T).expanding(False).doing(Validate(T, name)),
        Sql(f"ALTER TABLE {T} ALTER COLUMN {c} SET NOT NULL").of("set_not_null_checked", T)
        .doing(NotNull(T, column)),
        _drop_named(T, name, True).expanding(False),
    ]


def validate_constraints(T: str) -> Sql:
    """Return the statement that validates every NOT VALID CHECK and foreign key of a table.

    ``VALIDATE CONSTRAINT`` scans the rows under SHARE UPDATE EXCLUSIVE (reads
    and writes go on); a table with nothing to validate is left alone.
    """
    body = f"""DECLARE
    r record;
BEGIN
    FOR r IN SELECT conname FROM pg_constraint
              WHERE conrelid = {_literal(T)}::regclass AND contype IN ('c', 'f')
                AND NOT convalidated ORDER BY conname LOOP
        EXECUTE 'ALTER TABLE ' || {_literal(T)} || ' VALIDATE CONSTRAINT '
            || quote_ident(r.conname);
    END LOOP;
END"""
    return _do(_pct(body)).of("validate_constraint", T).doing(Validate(T))
