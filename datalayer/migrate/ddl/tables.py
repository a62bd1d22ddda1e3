"""Whole tables: create, drop, move to another schema, and the names PostgreSQL gave.

(A rename is :func:`.alter.plan_rename_table`: after it, the table is altered
like any other.)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from .spec import Sql, TableSpec, UnsupportedChange, quote
from .steps import UNLISTED, Step, _do, _literal, _pct

__all__ = [
    "plan_create",
    "plan_drop",
    "plan_set_schema",
    "plan_settings",
    "rename_auto_names",
    "settings_parameters",
    "storage_parameters",
]


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


def storage_parameters(setting: str) -> dict[str, str] | None:
    """Return the storage parameters of a ``WITH (name = value, ...)`` table setting.

    (A name without a value stands for true, as PostgreSQL reads it.)  None when
    ``setting`` is anything else (``TABLESPACE``, ``INHERITS``, ``PARTITION BY``, ...).
    """
    text = setting.strip()
    head, _, rest = text.partition("(")
    if head.strip().upper() != "WITH" or not rest.rstrip().endswith(")"):
        return None
    body = rest.rstrip()[:-1]
    params: dict[str, str] = {}
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(body):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    for part in parts:
        name, eq, value = part.partition("=")
        if not name.strip() or (eq and not value.strip()):
            return None
        params[name.strip().lower()] = value.strip() if eq else "true"
    return params


def settings_parameters(table: str, before: Sequence[str], after: Sequence[str]) -> tuple[
        dict[str, str], dict[str, str]]:
    """Return the storage parameters of two ``Meta.table_settings``, before and after.

    :raises UnsupportedChange: when a setting that differs is not ``WITH (...)``:
        PostgreSQL has no in-place form for most (``INHERITS``, ``PARTITION BY``), and
        diff writes none for the others.
    """
    old, new = Counter(before), Counter(after)
    for setting in [*(old - new).elements(), *(new - old).elements()]:
        if storage_parameters(setting) is None:
            raise UnsupportedChange(
                f"{table}: Meta.table_settings changes from {list(before)!r} to "
                f"{list(after)!r}, and {setting!r} is not changed in place by diff: only WITH "
                "(...) storage parameters are changed in place: create a new model with the "
                "settings, copy the rows, then drop the old one (or write the migration by hand)"
            )

    def merged(settings: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for setting in settings:
            out.update(storage_parameters(setting) or {})
        return out

    return merged(before), merged(after)


def plan_settings(before: TableSpec, after: TableSpec) -> list[Step]:
    """Return the statements that change the table's storage parameters in place.

    ``ALTER TABLE ... SET (...)`` for those new or changed, ``RESET (...)`` for those
    gone (SHARE UPDATE EXCLUSIVE for the usual ones: fillfactor, autovacuum_*).
    """
    if before.settings == after.settings:
        return []
    old, new = settings_parameters(after.name, before.settings, after.settings)
    T = after.qualified
    steps: list[Step] = []
    gone = [k for k in old if k not in new]
    changed = [f"{k}={v}" for k, v in new.items() if old.get(k) != v]
    for verb, items in (("RESET", gone), ("SET", changed)):
        if items:
            # Old code keeps working: storage parameters change how rows are stored only.
            text = _pct(f"ALTER TABLE {T} {verb} ({', '.join(items)})")
            steps.append(Sql(text).of("set_options", T).expanding(True).doing())
    return steps
