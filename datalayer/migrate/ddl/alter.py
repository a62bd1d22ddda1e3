"""Turn the difference between two :class:`~._spec.TableSpec` into SQL statements.

Pure functions: no database is touched.  The migrator calls them with the
state of a table before and after one of its operations and queues the
statements; the same statements therefore run whether the migration was
written by the generator or by hand.

Objects whose names PostgreSQL chose (unnamed CHECK and foreign key
constraints) are found at run time from the catalog, by definition or by
column, in a ``DO`` block, so that a migration never depends on guessing
those names.

With ``online=True`` the same changes come out in the forms that do not
block the application's reads and writes on a table that has rows: indexes
built and dropped ``CONCURRENTLY`` (:class:`Online` steps, which cannot run
in a transaction block), foreign keys and CHECKs added ``NOT VALID`` (a
later ``VALIDATE CONSTRAINT`` checks the rows under a weak lock), ``SET NOT
NULL`` behind a validated ``CHECK (col IS NOT NULL)``, UNIQUE constraints
through a concurrent unique index and ``USING INDEX``, NULLs filled in
batches (:class:`BatchFill`), each statement safe to run again after an
interruption (``IF [NOT] EXISTS``, or a ``DO`` block that looks first).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from .. import facts
from .spec import (
    ColumnSpec,
    IndexSpec,
    Sql,
    TableSpec,
    UnsupportedChange,
    constraint_name,
    plain_unique_definition,
    quote,
    read_constraint,
    rename_identifier,
)

__all__ = [
    "BatchFill",
    "Online",
    "Step",
    "concurrent_create",
    "fill_nulls",
    "is_volatile",
    "plan_alter",
    "plan_create",
    "plan_drop",
    "plan_rename_table",
    "plan_set_schema",
    "rewrites_type",
    "set_not_null",
    "validate_constraints",
]


@dataclasses.dataclass(frozen=True)
class Online:
    """A statement that cannot run inside a transaction block (``CONCURRENTLY``)."""

    sql: Sql

    def __str__(self) -> str:
        return self.sql.text


@dataclasses.dataclass(frozen=True)
class BatchFill:
    """Fill the NULLs of a column in batches of ``batch_size`` rows, walking the primary key.

    The value is the column's server default (``source="default"``), one
    literal (``"value"``), or a Python callable called once per row
    (``"callable"``).  With ``online`` every batch is its own short
    transaction, run outside the migration's transaction and lock; without,
    the batches run in the migration's transaction.
    """

    table: str  # qualified and quoted
    column: str
    key: str | None  # the single-column primary key, None: the table has none
    source: str
    value: Any = None
    factory: Callable[[], Any] | None = None
    db_value: Callable[[Any], Any] | None = None
    batch_size: int = 1000
    online: bool = False

    def __str__(self) -> str:
        what = {
            "default": "its DEFAULT",
            "value": repr(self.value),
            "callable": f"{getattr(self.factory, '__qualname__', self.factory)}() per row",
        }[self.source]
        by = f"by {quote(self.key)}" if self.key else "by ctid"
        mode = ", one transaction per batch" if self.online else ""
        return (
            f"-- fill NULLs of {self.table}.{quote(self.column)} with {what}, "
            f"{self.batch_size} rows at a time {by}{mode}"
        )


Step = Sql | Online | BatchFill

UNLISTED = "unlisted"
"""The kind of a statement that takes no table lock the facts list (CREATE SCHEMA, sequences)."""
_AUTO_SUFFIX = "(?:pkey|fkey|check|key|excl)[0-9]*"


def _literal(text: str) -> str:
    """Return ``text`` as a SQL string literal (also safe inside a DO block)."""
    return "'" + text.replace("'", "''") + "'"


def _pct(text: str) -> str:
    """Escape ``%`` for psycopg2, which formats every statement peewee sends."""
    return text.replace("%", "%%")


def _do(body: str, params: tuple[Any, ...] = ()) -> Sql:
    return Sql(f"DO $datalayer$\n{body}\n$datalayer$", params)


def _if_exists(missing_ok: bool) -> str:
    return "IF EXISTS " if missing_ok else ""


def _give_up(missing_ok: bool) -> str:
    """Return what a ``DO`` block does when the object to drop is not there."""
    return "\n        RETURN;  -- already gone: this statement ran before" if missing_ok else ""


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
    return _do(body, check.params).of("drop_constraint", table_sql)


def _drop_named(table_sql: str, name: str, missing_ok: bool) -> Sql:
    drop = f"ALTER TABLE {table_sql} DROP CONSTRAINT {_if_exists(missing_ok)}{quote(name)}"
    return Sql(drop).of("drop_constraint", table_sql)


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
    return _do(body).of("drop_constraint", table_sql)


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
    return _do(_pct(body)).of("drop_constraint", table_sql)


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
    return _do(_pct(body)).of("alter_table", table_sql)


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
        steps.append(Sql(f"CREATE SCHEMA IF NOT EXISTS {quote(spec.schema)}", kind=UNLISTED))
    return steps + list(spec.create)


def plan_set_schema(before: TableSpec, after: TableSpec) -> list[Step]:
    """Return the statements that move a table, with its rows, to the schema of ``after``.

    Its indexes, constraints and owned sequences move with it; a schema of None is
    ``public``.  The schema is created if needed and left in place when emptied.
    """
    target = after.schema or "public"
    return [
        Sql(f"CREATE SCHEMA IF NOT EXISTS {quote(target)}", kind=UNLISTED),
        Sql(f"ALTER TABLE {before.qualified} SET SCHEMA {quote(target)}").of(
            "set_schema", before.qualified),
    ]


def plan_drop(spec: TableSpec, *, cascade: bool = False) -> list[Step]:
    """Return the statement that drops the table; without ``cascade`` it fails if still used."""
    drop = Sql(f"DROP TABLE {spec.qualified}{' CASCADE' if cascade else ''}")
    return [drop.of("drop_table", spec.qualified)]


def plan_rename_table(before: TableSpec, after: TableSpec) -> list[Step]:
    """Return the statements that rename a table and everything named after it."""
    if before.schema != after.schema:
        raise UnsupportedChange(
            f"{before.name}: moving a table to another schema is not supported; "
            "write that migration by hand"
        )
    old, new = before.name, after.name
    rename = Sql(f"ALTER TABLE {before.qualified} RENAME TO {quote(new)}")
    steps: list[Step] = [rename.of("rename_table", before.qualified)]
    steps.append(rename_auto_names(
        after.qualified,
        f"^{_re(old)}_((.*_)?{_AUTO_SUFFIX}|.*_seq)$",
        f"{new}_\\1",
    ))
    moved = dataclasses.replace(before, name=new)
    steps.extend(plan_alter(moved, after))
    return steps


def _rename_before(before: TableSpec, renames: Mapping[str, str]) -> TableSpec:
    """Return ``before`` as it reads once the columns in ``renames`` are renamed."""
    if not renames:
        return before
    cols = []
    for col in before.columns:
        new = renames.get(col.name)
        if new is None:
            cols.append(col)
            continue
        fk = col.fk and Sql(col.fk.text.replace(quote(col.name), quote(new), 1), col.fk.params)
        cols.append(dataclasses.replace(
            col,
            name=new,
            checks=tuple(rename_identifier(c, {col.name: new}) for c in col.checks),
            fk=fk,
        ))
    return dataclasses.replace(
        before,
        columns=tuple(cols),
        primary_key=tuple(renames.get(c, c) for c in before.primary_key),
        checks=tuple(rename_identifier(c, renames) for c in before.checks),
        indexes=tuple(
            dataclasses.replace(ix, definition=rename_identifier(ix.definition, renames))
            for ix in before.indexes
        ),
    )


def _key(sql: Sql) -> tuple[str, tuple[Any, ...]]:
    return (sql.text, sql.params)


def _changed_columns(
    before: TableSpec, after: TableSpec
) -> tuple[list[ColumnSpec], list[ColumnSpec], list[tuple[ColumnSpec, ColumnSpec]]]:
    bcols = {c.name: c for c in before.columns}
    acols = {c.name: c for c in after.columns}
    dropped = [c for c in before.columns if c.name not in acols]
    added = [c for c in after.columns if c.name not in bcols]
    both = [(bcols[c.name], c) for c in after.columns if c.name in bcols]
    return dropped, added, both


def plan_alter(
    before: TableSpec,
    after: TableSpec,
    *,
    renames: Mapping[str, str] | None = None,
    using: Mapping[str, str] | None = None,
    online: bool = False,
    cascade: bool = False,
) -> list[Step]:
    """Return the statements that turn table ``before`` into table ``after``.

    ``renames`` maps old column names to new ones (the columns are renamed,
    not dropped and added); ``using`` maps a column to the ``USING``
    expression of its type change; ``online`` writes the forms that do not
    block reads and writes (see the module's docstring); ``cascade`` drops
    columns with what depends on them (views, other tables' foreign keys).

    :raises UnsupportedChange: for a change of primary key or of a column
        constraint other than DEFAULT and CHECK.
    """
    renames = dict(renames or {})
    using = dict(using or {})
    T = after.qualified
    table = after.name
    steps: list[Step] = []

    for old, new in renames.items():
        if before.column(old) is None:
            raise UnsupportedChange(f"{table}: no column {old!r} to rename to {new!r}")
        rename = Sql(f"ALTER TABLE {T} RENAME COLUMN {quote(old)} TO {quote(new)}")
        steps.append(rename.of("rename_column", T))
        steps.append(rename_auto_names(
            T,
            f"^{_re(table)}_{_re(old)}_({_AUTO_SUFFIX}|seq)$",
            f"{table}_{new}_\\1",
        ))
    before = _rename_before(before, renames)

    composite = len(before.primary_key) > 1 and len(after.primary_key) > 1
    moved = _key_moved(before, after)
    dropped, added, both = _changed_columns(before, after)
    dropped_names = {c.name for c in dropped}
    added_names = {c.name for c in added}
    # A new serial column made the key (the old key's columns stay, as plain columns);
    # the key dropped with its column(s); columns that stay made the key of a table
    # without one (the two steps of the way back).
    serial_key = _serial_key(after, before, added_names)
    key_dropped = bool(before.primary_key) and not after.primary_key and all(
        c in dropped_names for c in before.primary_key)
    # The key given up, its column(s) kept (a serial key's way back, online).
    key_released = bool(before.primary_key) and not after.primary_key and not (
        key_dropped or moved)
    key_added = not (moved or before.primary_key) and bool(after.primary_key) and all(
        before.column(c) is not None for c in after.primary_key)
    if before.primary_key != after.primary_key and not (
        composite or moved or serial_key or key_dropped or key_released or key_added
    ):
        raise UnsupportedChange(
            f"{table}: changing the primary key ({', '.join(before.primary_key) or 'none'} -> "
            f"{', '.join(after.primary_key) or 'none'}) is not supported; write that migration "
            "by hand"
        )

    # Indexes: drop the removed and the changed ones, rename those that only
    # changed name, create the new ones last (after the columns exist).
    bidx = {ix.name: ix for ix in before.indexes}
    aidx = {ix.name: ix for ix in after.indexes}
    gone = [ix for n, ix in bidx.items() if n not in aidx or aidx[n].definition != ix.definition]
    new_ix = [ix for n, ix in aidx.items() if n not in bidx or bidx[n].definition != ix.definition]
    renamed: list[tuple[IndexSpec, IndexSpec]] = []
    for ix in list(gone):
        if ix.name in aidx:
            continue
        match = next(
            (n for n in new_ix if n.definition == ix.definition and n.name not in bidx), None
        )
        if match is not None:
            renamed.append((ix, match))
            gone.remove(ix)
            new_ix.remove(match)
    schema_prefix = f"{quote(after.schema)}." if after.schema else ""
    # A unique index on the new key's columns becomes the primary key (USING INDEX).
    key_index = next((ix for ix in gone if moved and after.primary_key and ix.unique
                      and ix.definition == plain_unique_definition(after.primary_key[0])), None)
    if key_index is not None:
        gone.remove(key_index)
    if moved and before.primary_key:
        # The key given up for a unique index: online, that index is built first.
        for ix in [ix for ix in new_ix if online and ix.unique]:
            new_ix.remove(ix)
            steps.append(Online(concurrent_create(ix)))
        steps.append(_drop_named(T, before.name + "_pkey", False))
    for ix in gone:
        index = f"{schema_prefix}{quote(ix.name)}"  # the lock is the index's table's
        if online:
            drop = Sql(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
            steps.append(Online(drop.of("drop_index_concurrently", index)))
        else:
            steps.append(Sql(f"DROP INDEX {index}").of("drop_index", index))
    for old_ix, new_ix_spec in renamed:
        index = f"{schema_prefix}{quote(old_ix.name)}"
        rename = Sql(f"ALTER INDEX {index} RENAME TO {quote(new_ix_spec.name)}")
        steps.append(rename.of("alter_index", index))

    # CHECK constraints, wherever they were declared (field or Meta), as a multiset.
    def checks(spec: TableSpec, skip: set[str]) -> Counter[tuple[str, tuple[Any, ...]]]:
        out: Counter[tuple[str, tuple[Any, ...]]] = Counter(_key(c) for c in spec.checks)
        for col in spec.columns:
            if col.checks and col.name not in skip:
                out.update(_key(c) for c in col.checks)
        return out

    bchecks = checks(before, dropped_names)  # a dropped column takes its checks along
    # An added column brings its checks inline; online, they are added NOT VALID after it.
    achecks = checks(after, set() if online else added_names)
    # CHECKs and foreign keys are dropped in a migration's transactional part: a
    # missing one means the database and its history disagree, which must be said.
    for text, params in sorted((bchecks - achecks).elements()):
        steps.append(drop_check(table, T, Sql(text, params)))

    for old_col, new_col in both:
        if old_col.fk is not None and old_col.fk != new_col.fk:
            steps.append(drop_foreign_key(table, T, old_col.name, old_col.fk_name))

    bcons, acons = Counter(map(_key, before.constraints)), Counter(map(_key, after.constraints))
    for text, params in sorted((bcons - acons).elements()):
        steps.append(drop_constraint(table, T, Sql(text, params), missing_ok=online))

    if (serial_key in added_names and before.primary_key) or key_released:
        steps.append(_drop_named(T, before.name + "_pkey", False))
    for col in dropped:
        drop = Sql(f"ALTER TABLE {T} DROP COLUMN {quote(col.name)}{' CASCADE' if cascade else ''}")
        steps.append(drop.of("drop_column", T))

    pk = after.primary_key[0] if len(after.primary_key) == 1 else None
    for col in added:
        steps.extend(_add_column(table, T, col, online=online, key=pk,
                                 new_key=serial_key is not None))

    for old_col, new_col in both:
        steps.extend(_alter_column(
            table, T, old_col, new_col, using.get(new_col.name), online=online, key=pk,
            key_moved=moved or new_col.name == serial_key or (
                key_released and old_col.name in before.primary_key),
        ))

    not_valid = " NOT VALID" if online else ""
    check = "add_check_not_valid" if online else "add_check"
    for text, params in sorted((achecks - bchecks).elements()):
        steps.append(Sql(f"ALTER TABLE {T} ADD ").of(check, T) + Sql(text, params) + not_valid)

    add_fk = Sql(f"ALTER TABLE {T} ADD ").of(
        "add_foreign_key_not_valid" if online else "add_foreign_key", T)
    for col in added:
        if col.fk is not None:
            steps.append(add_fk + col.fk + not_valid)
    for old_col, new_col in both:
        if new_col.fk is not None and old_col.fk != new_col.fk:
            steps.append(add_fk + new_col.fk + not_valid)

    for text, params in sorted((acons - bcons).elements()):
        steps.extend(_add_constraint(table, T, Sql(text, params), online=online))

    if key_added:
        steps.extend(_add_primary_key(after, T, None, online=online))
    elif serial_key and serial_key not in added_names:
        steps.extend(_replace_primary_key(after, T, online=online))  # numbered, NOT NULL now
    elif serial_key or key_dropped or key_released:
        pass  # the key comes with its column, or went (with it)
    elif before.primary_key != after.primary_key and after.primary_key:  # the columns exist now
        if moved:
            steps.extend(_add_primary_key(after, T, key_index, online=online))
        else:
            steps.extend(_replace_primary_key(after, T, online=online))
    for ix in new_ix:
        steps.append(Online(concurrent_create(ix)) if online else ix.create)
    return steps


def _using_index(text: str, T: str) -> Sql:
    return Sql(text).of("add_constraint_using_index", T)


def _unique_index(text: str, T: str) -> Online:
    return Online(Sql(text).of("create_index_concurrently", T))


def _serial_key(after: TableSpec, before: TableSpec, added: set[str]) -> str | None:
    """Return the serial column that is ``after``'s key in place of ``before``'s, if so.

    A composite key replaced by a serial ``id``: the old key's columns stay. The
    column is new (in ``added``), or ``before`` has it as a plain column of the
    serial's integer type (the safe form adds it so first, numbers the rows, then
    makes it the key).
    """
    if len(after.primary_key) != 1 or after.primary_key == before.primary_key:
        return None
    name = after.primary_key[0]
    col, old = after.column(name), before.column(name)
    base = serial_base(col.type.text) if col is not None else None
    if base is None:
        return None
    if name not in added and (old is None or old.type.text.upper() != base):
        return None
    if any(after.column(c) is None for c in before.primary_key):
        return None
    return name


def _key_moved(before: TableSpec, after: TableSpec) -> bool:
    """True when the key goes to (or from) one column that both sides have, unchanged in type.

    (A unique column made the primary key, or the key given up for a unique column.)
    """
    if before.primary_key == after.primary_key or max(
        len(before.primary_key), len(after.primary_key)) != 1:
        return False
    for name in before.primary_key + after.primary_key:
        old, new = before.column(name), after.column(name)
        if old is None or new is None or old.type != new.type or auto_base(old.type.text):
            return False
    return True


def _add_primary_key(
    after: TableSpec, T: str, index: IndexSpec | None, *, online: bool
) -> list[Step]:
    """Return the statements that make the one column ``after.primary_key`` the primary key.

    Through its unique index when it has one (renamed to the key's name), else a
    concurrent unique index first when ``online``; ``USING INDEX`` takes a short
    ACCESS EXCLUSIVE lock and no scan (the column is NOT NULL by then).
    """
    name = f"{after.name}_pkey"
    key = ", ".join(quote(c) for c in after.primary_key)
    add = f"ALTER TABLE {T} ADD CONSTRAINT {quote(name)} PRIMARY KEY"
    if index is not None:
        return [_using_index(f"{add} USING INDEX {quote(index.name)}", T)]
    if not online:
        return [Sql(f"{add} ({key})").of("add_unique", T)]
    return [
        _unique_index(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote(name)} ON {T} ({key})", T),
        _using_index(f"{add} USING INDEX {quote(name)}", T),
    ]


def _replace_primary_key(after: TableSpec, T: str, *, online: bool) -> list[Step]:
    """Return the statements that make ``after.primary_key`` the table's primary key.

    Online: a concurrent unique index first, then the key swapped ``USING INDEX``
    (a short ACCESS EXCLUSIVE lock, no scan: the key's columns are NOT NULL).
    """
    name = f"{after.name}_pkey"
    cols = ", ".join(quote(c) for c in after.primary_key)
    drop = f"ALTER TABLE {T} DROP CONSTRAINT {quote(name)}, ADD CONSTRAINT {quote(name)} "
    if not online:
        # The key swapped in one statement, as the online form's USING INDEX: an expand step.
        return [Sql(f"{drop}PRIMARY KEY ({cols})").of("add_unique", T).expanding(True)]
    new = _short_name(f"{after.name}_pkey_new")
    where = f"{quote(after.schema)}.{quote(new)}" if after.schema else quote(new)
    body = f"""BEGIN
    IF to_regclass({_literal(where)}) IS NOT NULL THEN
        {drop}PRIMARY KEY USING INDEX {quote(new)};
    END IF;
END"""
    return [
        _unique_index(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote(new)} ON {T} ({cols})", T),
        _using_index(_do(_pct(body)).text, T),
    ]


# Index SQL a model wrote as text (``SQL('CREATE INDEX ...')``): a person's text.
_CREATE_INDEX_RE = re.compile(r"^CREATE (UNIQUE )?INDEX (IF NOT EXISTS )?", re.IGNORECASE)
_NAMEDATALEN = 63


def concurrent_create(index: IndexSpec) -> Sql:
    """Return ``index``'s ``CREATE [UNIQUE] INDEX`` as ``... INDEX CONCURRENTLY IF NOT EXISTS``.

    From the words peewee starts it with (:attr:`.IndexSpec.head`); an index the model
    wrote as SQL text is read (the only text read here: a person wrote it).
    """
    create = index.create
    if index.head:
        text = (f"{index.head}CONCURRENTLY IF NOT EXISTS "
                f"{create.text[len(index.head):]}")
    else:
        text, n = _CREATE_INDEX_RE.subn(
            lambda m: f"CREATE {m.group(1) or ''}INDEX CONCURRENTLY IF NOT EXISTS ",
            create.text, 1,
        )
        if not n:
            raise UnsupportedChange(f"cannot build {create.text!r} concurrently")
    return Sql(text, create.params).of("create_index_concurrently", *create.tables)


def _short_name(name: str) -> str:
    """Return ``name``, or a name under PostgreSQL's 63-byte limit derived from it."""
    if len(name.encode()) <= _NAMEDATALEN:
        return name
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return name.encode()[: _NAMEDATALEN - 11].decode(errors="ignore") + "_" + digest


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
    return [_unique_index(create, T), _using_index(_do(_pct(body)).text, T)]


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


_SERIALS = {"SMALLSERIAL": "SMALLINT", "SERIAL": "INTEGER", "BIGSERIAL": "BIGINT"}
_INTEGER_TYPES = {"SMALLINT", "INTEGER", "BIGINT", "INT", "INT2", "INT4", "INT8"}


def _integers(*types: str) -> bool:
    return all((serial_base(t) or t.strip().upper()) in _INTEGER_TYPES for t in types)


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


def serial_base(type_text: str) -> str | None:
    """Return the integer type under a serial pseudo-type (``BIGSERIAL``: ``BIGINT``), or None."""
    return _SERIALS.get(type_text.strip().upper())


_IDENTITY_RE = re.compile(
    r"^\s*(\w+)\s+GENERATED\s+(ALWAYS|BY\s+DEFAULT)\s+AS\s+IDENTITY\s*$", re.IGNORECASE
)


def identity_of(type_text: str) -> tuple[str, str] | None:
    """Return (integer type, ``ALWAYS`` or ``BY DEFAULT``) of an identity column's type."""
    m = _IDENTITY_RE.match(type_text)
    if not m:
        return None
    base = {"INT": "INTEGER", "INT4": "INTEGER", "INT8": "BIGINT", "INT2": "SMALLINT"}
    kind = re.sub(r"\s+", " ", m.group(2).upper())
    return base.get(m.group(1).upper(), m.group(1).upper()), kind


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
    return dataclasses.replace(_do(_pct(body)), kind=UNLISTED)


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
                "alter_type", T))
            steps.append(_serial_sequence_of(T, new.name, f"ALTER SEQUENCE %s AS {new_base}"))
        if old_ident and new_ident and old_ident[1] != new_ident[1]:
            generated = Sql(f"ALTER TABLE {T} ALTER COLUMN {c} SET GENERATED {new_ident[1]}")
            steps.append(generated.of("alter_table", T))
        return steps
    # Leave the old numbering.
    if old_serial:
        steps.append(_drop_default(T, c))
        steps.append(_serial_sequence_of(T, new.name, "DROP SEQUENCE %s"))
    elif old_ident:
        steps.append(Sql(f"ALTER TABLE {T} ALTER COLUMN {c} DROP IDENTITY").of("alter_table", T))
    elif old.default is not None:
        steps.append(_drop_default(T, c))
    seq: str | None = None
    if new_serial:
        # The sequence first: a USING may number the rows from it.
        schema = T.split(".", 1)[0][1:-1].replace('""', '"') if "." in T else None
        seq = serial_sequence(table, schema, new.name)
        steps.append(Sql(f"CREATE SEQUENCE {seq} AS {new_base}", kind=UNLISTED))
    if old_base != new_base or using:
        stmt = Sql(f"ALTER TABLE {T} ALTER COLUMN {c} TYPE {new_base}").of("alter_type", T)
        steps.append(stmt + f" USING {using}" if using else stmt)
    if seq is not None:
        steps.append(Sql(f"ALTER SEQUENCE {seq} OWNED BY {T}.{c}", kind=UNLISTED))
        steps.append(Sql(
            f"ALTER TABLE {T} ALTER COLUMN {c} SET DEFAULT nextval({_literal(seq)}::regclass)"
        ).of("set_default", T))
        steps.append(Sql(
            f"SELECT setval({_literal(seq)}, COALESCE(max({c}), 1), max({c}) IS NOT NULL) "
            f"FROM {T}", kind=UNLISTED,
        ))
    elif new_ident:
        steps.append(Sql(f"ALTER TABLE {T} ALTER COLUMN {c} ADD GENERATED {new_ident[1]} "
                         "AS IDENTITY").of("alter_table", T))
        steps.append(Sql(
            f"SELECT setval(pg_get_serial_sequence({_literal(T)}, {_literal(new.name)}), "
            f"COALESCE(max({c}), 1), max({c}) IS NOT NULL) FROM {T}", kind=UNLISTED,
        ))
    return steps



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
        return [Sql(f"ALTER TABLE {T} ALTER COLUMN {c} SET NOT NULL").of("set_not_null", T)]
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
        _do(_pct(add)).of("add_check_not_valid", T).expanding(False),
        _do(_pct(validate)).of("validate_constraint", T).expanding(False),
        Sql(f"ALTER TABLE {T} ALTER COLUMN {c} SET NOT NULL").of("set_not_null_checked", T),
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
    return _do(_pct(body)).of("validate_constraint", T)


def _drop_default(T: str, c: str) -> Sql:
    # Old code that leaves the column out of its INSERTs relies on the default.
    drop = Sql(f"ALTER TABLE {T} ALTER COLUMN {c} DROP DEFAULT").of("set_default", T)
    return drop.expanding(False)


def _add_column_sql(T: str, col: ColumnSpec, *, checks: bool, required: bool = False) -> Sql:
    """Return ``ALTER TABLE T ADD COLUMN `` (a scan when the column comes with its CHECKs).

    ``required``: the column comes NOT NULL without a DEFAULT, which old code's INSERTs
    (that leave it out) do not survive.
    """
    kind = "add_column_checked" if checks and col.checks else "add_column"
    add = Sql(f"ALTER TABLE {T} ADD COLUMN ").of(kind, T)
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
            Sql(f"ALTER TABLE {T} ALTER COLUMN {c} SET NOT NULL").of("set_not_null", T),
        ]
    return [_add_column_sql(T, col, checks=True, required=_required(col)) + col.ddl]


def _required(col: ColumnSpec) -> bool:
    """True when ``col``'s definition makes it NOT NULL without a DEFAULT."""
    return not col.null and col.default is None


def _set_default(T: str, c: str) -> Sql:
    return Sql(f"ALTER TABLE {T} ALTER COLUMN {c} SET DEFAULT ").of("set_default", T)


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
        steps.append(stmt.of(type_change(old, new, using).kind, T))
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
        drop = Sql(f"ALTER TABLE {T} ALTER COLUMN {c} DROP NOT NULL").of("alter_table", T)
        steps.append(drop.expanding(True))  # a constraint less: old code's writes still pass
    return steps
