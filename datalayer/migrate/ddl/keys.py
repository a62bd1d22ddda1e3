"""Primary keys: a key moved to a unique column, a serial key, a composite key changed.

Online, the new key's unique index is built concurrently first and the key
swapped ``USING INDEX`` (a short ACCESS EXCLUSIVE lock, no scan).
"""

from __future__ import annotations

from .actions import Unique
from .constraints import _drop_named
from .serials import auto_base, serial_base
from .spec import IndexSpec, Sql, TableSpec, quote
from .steps import Step, _do, _literal, _pct, _short_name, _unique_index, _using_index

__all__ = ["drop_key"]


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
    after: TableSpec, T: str, index: IndexSpec | None, *, online: bool, replaces: bool = False
) -> list[Step]:
    """Return the statements that make the one column ``after.primary_key`` the primary key.

    Through its unique index when it has one (renamed to the key's name), else a
    concurrent unique index first when ``online``; ``USING INDEX`` takes a short
    ACCESS EXCLUSIVE lock and no scan (the column is NOT NULL by then).
    ``replaces``: the key moves from another column (dropped just before, see
    :func:`drop_key`): the contract part, like that drop.
    """
    name = f"{after.name}_pkey"
    key = ", ".join(quote(c) for c in after.primary_key)
    add = f"ALTER TABLE {T} ADD CONSTRAINT {quote(name)} PRIMARY KEY"
    if index is not None:
        return [_using_index(f"{add} USING INDEX {quote(index.name)}", T).expanding(
            not replaces)]
    if not online:
        unique = Unique(T, tuple(quote(c) for c in after.primary_key), name, primary_key=True)
        return [Sql(f"{add} ({key})").of("add_unique", T).doing(unique)]
    return [
        _unique_index(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote(name)} ON {T} ({key})", T,
            name, after.primary_key),
        _using_index(f"{add} USING INDEX {quote(name)}", T).expanding(not replaces),
    ]


def drop_key(before: TableSpec, T: str) -> Sql:
    """Return the statement that drops ``before``'s primary key (its columns stay).

    The contract part of a migration: code of the release before may rely on the key
    (``ON CONFLICT`` on its columns, their uniqueness), though dropping another
    constraint expands.
    """
    return _drop_named(T, before.name + "_pkey", False).expanding(False)


def _replace_primary_key(after: TableSpec, T: str, *, online: bool) -> list[Step]:
    """Return the statements that make ``after.primary_key`` the table's primary key.

    Online: a concurrent unique index first, then the key swapped ``USING INDEX``
    (a short ACCESS EXCLUSIVE lock, no scan: the key's columns are NOT NULL).
    """
    name = f"{after.name}_pkey"
    cols = ", ".join(quote(c) for c in after.primary_key)
    drop = f"ALTER TABLE {T} DROP CONSTRAINT {quote(name)}, ADD CONSTRAINT {quote(name)} "
    # The old key goes (code of the release before may rely on it: ON CONFLICT on its
    # columns, their uniqueness) and the new one narrows what may be written: the
    # contract part, in both forms; the online form's unique index is built before.
    if not online:
        unique = Unique(T, tuple(quote(c) for c in after.primary_key), name, primary_key=True)
        return [Sql(f"{drop}PRIMARY KEY ({cols})").of("add_unique", T).doing(unique)]
    new = _short_name(f"{after.name}_pkey_new")
    where = f"{quote(after.schema)}.{quote(new)}" if after.schema else quote(new)
    body = f"""BEGIN
    IF to_regclass({_literal(where)}) IS NOT NULL THEN
        {drop}PRIMARY KEY USING INDEX {quote(new)};
    END IF;
END"""
    return [
        _unique_index(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote(new)} ON {T} ({cols})", T,
            new, after.primary_key),
        _using_index(_do(_pct(body)).text, T).expanding(False),
    ]
