"""Turn the difference between two :class:`~.spec.TableSpec` into SQL statements.

Pure functions: no database is touched.  The migrator calls them with the
state of a table before and after one of its operations and queues the
statements; the same statements therefore run whether the migration was
written by the generator or by hand.

:func:`plan_alter` orders a table's changes; what each change is written as
lives with what it changes: :mod:`.columns` (add, retype, default, NULL, fill),
:mod:`.serials` (serial and identity columns), :mod:`.constraints` (CHECK,
foreign keys, UNIQUE, SET NOT NULL, validation), :mod:`.keys` (primary keys),
:mod:`.indexes`, :mod:`.tables` (create, drop, set schema), on the pieces of
:mod:`.steps`.

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
import operator
from collections import Counter
from collections.abc import Mapping
from typing import Any

from .actions import ForeignKey, Writes
from .columns import (
    _add_column,
    _alter_column,
    fill_nulls,
    is_volatile,
    rewrites_type,
    type_change,
)
from .constraints import (
    _add_constraint,
    drop_check,
    drop_constraint,
    drop_foreign_key,
    set_not_null,
    validate_constraints,
)
from .indexes import (
    concurrent_create,
    create_index,
    drop_indexes,
    index_changes,
    rename_indexes,
)
from .keys import _add_primary_key, _key_moved, _replace_primary_key, _serial_key, drop_key
from .serials import auto_base, identity_of, serial_base, serial_sequence
from .spec import (
    ColumnSpec,
    Sql,
    TableSpec,
    UnsupportedChange,
    plain_unique_definition,
    quote,
    rename_identifier,
)
from .steps import UNLISTED, BatchFill, Online, Step
from .tables import (
    _AUTO_SUFFIX,
    _re,
    plan_create,
    plan_drop,
    plan_set_schema,
    plan_settings,
    rename_auto_names,
)

__all__ = [
    "UNLISTED",
    "BatchFill",
    "Online",
    "Step",
    "auto_base",
    "concurrent_create",
    "drop_check",
    "drop_constraint",
    "drop_foreign_key",
    "fill_nulls",
    "identity_of",
    "is_volatile",
    "plan_alter",
    "plan_create",
    "plan_drop",
    "plan_rename_table",
    "plan_set_schema",
    "rename_auto_names",
    "rewrites_type",
    "serial_base",
    "serial_sequence",
    "set_not_null",
    "type_change",
    "validate_constraints",
]


def plan_rename_table(before: TableSpec, after: TableSpec) -> list[Step]:
    """Return the statements that rename a table and everything named after it."""
    if before.schema != after.schema:
        raise UnsupportedChange(
            f"{before.name}: moving a table to another schema is not supported; "
            "write that migration by hand"
        )
    old, new = before.name, after.name
    rename = Sql(f"ALTER TABLE {before.qualified} RENAME TO {quote(new)}")
    # What the names mean changes: a check of either name would read the wrong rows.
    renamed = f"{quote(before.schema)}.{quote(new)}" if before.schema else quote(new)
    steps: list[Step] = [rename.of("rename_table", before.qualified).doing(
        Writes(before.qualified), Writes(renamed))]
    steps.append(rename_auto_names(
        after.qualified,
        f"^{_re(old)}_((.*_)?{_AUTO_SUFFIX}|.*_seq)$",
        f"{new}_\\1",
    ))
    # A foreign key to the table itself follows it (PostgreSQL keeps it on the renamed
    # table): the same constraint, not one to drop and add again with a scan.
    moved = dataclasses.replace(before, name=new, columns=tuple(
        c.fk_retargeted(after.qualified)
        if c.fk_text is not None and c.fk_text.table == before.qualified else c
        for c in before.columns
    ))
    steps.extend(plan_alter(moved, after))
    return steps


def _foreign_key(T: str, col: ColumnSpec, add: Sql, not_valid: bool) -> Sql:
    """Return ``add`` (``ADD`` the foreign key of ``col``) saying what it checks.

    Known when peewee rendered the key from the field (its parent table in ``refs``);
    a key whose text was rewritten (a rename) is read from its text.
    """
    fk = col.fk
    if fk is None or len(fk.refs) != 1 or col.fk_column is None or fk.params:
        return add
    return add.doing(ForeignKey(T, (quote(col.name),), fk.refs[0], (quote(col.fk_column),),
                                col.fk_name or "", not_valid))


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
        cols.append(dataclasses.replace(
            col,
            name=new,
            checks=tuple(rename_identifier(c, {col.name: new}) for c in col.checks),
            fk=col.fk_renamed(new),
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
    """Return the columns dropped, those added, and (before, after) of each changed column.

    A column whose spec is the same object (a field unchanged: its memoized spec)
    needs nothing (no foreign key, no ALTER COLUMN): it is left out, most columns
    of a table.  C loops: this runs for every operation.
    """
    name = operator.attrgetter("name")
    bcols = dict(zip(map(name, before.columns), before.columns, strict=True))
    acols = dict(zip(map(name, after.columns), after.columns, strict=True))
    dropped = [c for c in before.columns if c.name not in acols]
    added = [c for c in after.columns if c.name not in bcols]
    get = bcols.get
    changed = [(b, c) for c in after.columns if (b := get(c.name)) is not None and b is not c]
    return dropped, added, changed


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
        steps.append(rename.of("rename_column", T).doing(Writes(T)))
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
    gone, new_ix, renamed = index_changes(before, after)
    # A unique index on the new key's columns becomes the primary key (USING INDEX).
    key_index = next((ix for ix in gone if moved and after.primary_key and ix.unique
                      and ix.definition == plain_unique_definition(after.primary_key[0])), None)
    if key_index is not None:
        gone.remove(key_index)
    if moved and before.primary_key:
        # The key given up for a unique index: online, that index is built first.
        for ix in [ix for ix in new_ix if online and ix.unique]:
            new_ix.remove(ix)
            steps.append(create_index(ix, online=True))
        steps.append(drop_key(before, T))
    steps.extend(drop_indexes(gone, after.schema, online=online))
    steps.extend(rename_indexes(renamed, after.schema))

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
        steps.append(drop_key(before, T))
    for col in dropped:
        drop = Sql(f"ALTER TABLE {T} DROP COLUMN {quote(col.name)}{' CASCADE' if cascade else ''}")
        steps.append(drop.of("drop_column", T).doing())

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
            steps.append(_foreign_key(T, col, add_fk + col.fk + not_valid, online))
    for old_col, new_col in both:
        if new_col.fk is not None and old_col.fk != new_col.fk:
            steps.append(_foreign_key(T, new_col, add_fk + new_col.fk + not_valid, online))

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
            steps.extend(_add_primary_key(after, T, key_index, online=online,
                                          replaces=bool(before.primary_key)))
        else:
            steps.extend(_replace_primary_key(after, T, online=online))
    steps.extend(create_index(ix, online=online) for ix in new_ix)
    steps.extend(plan_settings(before, after))
    return steps
