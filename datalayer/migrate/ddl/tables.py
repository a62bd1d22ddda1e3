"""Whole tables: create, drop, move to another schema, and the names PostgreSQL gave.

(A rename is :func:`.alter.plan_rename_table`: after it, the table is altered
like any other.)
"""

from __future__ import annotations

import re

from .spec import Sql, TableSpec, quote
from .steps import UNLISTED, Step, _do, _literal, _pct

__all__ = ["plan_create", "plan_drop", "plan_set_schema", "rename_auto_names"]


_AUTO_SUFFIX = "(?:pkey|fkey|check|key|excl)[0-9]*"


def rename_auto_names(table_sql: str, pattern: str, replacement: str) -> Sql:
    """Return a statement renaming the constraints and owned sequences whose names match.

    PostgreSQL keeps the names it generated (``users_pkey``, ``users_email_check``,
    ``users_id_seq``) when a table or column is renamed, while ``create_tables()``
    of the renamed model would generate new ones; this brings them in line.
    """
    rc = _literal(table_sql) + "::regclass"
    pat, rep = _literal(pattern), _literal(replacement)
    body = f"""DECLARE
    r record;
BEGIN
    FOR r IN SELECT conname FROM pg_constraint WHERE conrelid = {rc} AND conname ~ {pat} LOOP
        EXECUTE 'ALTER TABLE ' || {_literal(table_sql)} || ' RENAME CONSTRAINT '
            || quote_ident(r.conname) || ' TO '
            || quote_ident(regexp_replace(r.conname, {pat}, {rep}));
    END LOOP;
    FOR r IN SELECT s.oid, s.relname FROM pg_depend d
               JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
              WHERE d.refobjid = {rc} AND d.classid = 'pg_class'::regclass
                AND d.deptype IN ('a', 'i') AND s.relname ~ {pat} LOOP
        EXECUTE 'ALTER SEQUENCE ' || r.oid::regclass::text || ' RENAME TO '
            || quote_ident(regexp_replace(r.relname, {pat}, {rep}));
    END LOOP;
END"""
    return _do(_pct(body)).of("alter_table", table_sql).doing()


def _re(name: str) -> str:
    """Escape ``name`` for a PostgreSQL regular expression."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", name)


def plan_create(spec: TableSpec) -> list[Step]:
    """Return the statements ``create_tables()`` runs for one model (no IF NOT EXISTS).

    A model in a schema of its own (``Meta.schema``) creates the schema first if needed:
    ``create_tables()`` expects it to exist.
    """
    steps: list[Step] = []
    if spec.schema:
        steps.append(Sql(f"CREATE SCHEMA IF NOT EXISTS {quote(spec.schema)}", kind=UNLISTED)
                     .doing())
    return steps + list(spec.create)


def plan_set_schema(before: TableSpec, after: TableSpec) -> list[Step]:
    """Return the statements that move a table, with its rows, to the schema of ``after``.

    Its indexes, constraints and owned sequences move with it; a schema of None is
    ``public``.  The schema is created if needed and left in place when emptied.
    """
    target = after.schema or "public"
    return [
        Sql(f"CREATE SCHEMA IF NOT EXISTS {quote(target)}", kind=UNLISTED).doing(),
        Sql(f"ALTER TABLE {before.qualified} SET SCHEMA {quote(target)}").of(
            "set_schema", before.qualified).doing(),
    ]


def plan_drop(spec: TableSpec, *, cascade: bool = False) -> list[Step]:
    """Return the statement that drops the table; without ``cascade`` it fails if still used."""
    drop = Sql(f"DROP TABLE {spec.qualified}{' CASCADE' if cascade else ''}")
    return [drop.of("drop_table", spec.qualified).doing()]
