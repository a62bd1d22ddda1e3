"""Indexes: which changed between two tables, and how each is built, dropped or renamed.

Online, an index is built and dropped ``CONCURRENTLY`` (an :class:`.steps.Online`
step, outside a transaction block), each statement safe to run again.
"""

from __future__ import annotations

import re

from .spec import IndexSpec, Sql, TableSpec, UnsupportedChange, quote
from .steps import Online, Step

__all__ = ["concurrent_create", "index_changes"]


# Index SQL a model wrote as text (``SQL('CREATE INDEX ...')``): a person's text.
_CREATE_INDEX_RE = re.compile(r"^CREATE (UNIQUE )?INDEX (IF NOT EXISTS )?", re.IGNORECASE)


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
    return Sql(text, create.params, does=create.does).of("create_index_concurrently",
                                                         *create.tables)


def index_changes(
    before: TableSpec, after: TableSpec
) -> tuple[list[IndexSpec], list[IndexSpec], list[tuple[IndexSpec, IndexSpec]]]:
    """Return the indexes of ``before`` to drop, those of ``after`` to create, and renames.

    An index is dropped and created again when its definition changed; one whose
    definition stays under a new name is renamed (old, new).
    """
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
    return gone, new_ix, renamed


def drop_indexes(gone: list[IndexSpec], schema: str | None, *, online: bool) -> list[Step]:
    """Return the statements dropping the indexes ``gone`` (of a table in ``schema``)."""
    prefix = f"{quote(schema)}." if schema else ""
    steps: list[Step] = []
    for ix in gone:
        index = f"{prefix}{quote(ix.name)}"  # the lock is the index's table's
        if online:
            drop = Sql(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
            steps.append(Online(drop.of("drop_index_concurrently", index).doing()))
        else:
            steps.append(Sql(f"DROP INDEX {index}").of("drop_index", index).doing())
    return steps


def rename_indexes(renamed: list[tuple[IndexSpec, IndexSpec]], schema: str | None) -> list[Step]:
    """Return the statements renaming each index (old, new) of a table in ``schema``."""
    prefix = f"{quote(schema)}." if schema else ""
    steps: list[Step] = []
    for old_ix, new_ix in renamed:
        index = f"{prefix}{quote(old_ix.name)}"
        rename = Sql(f"ALTER INDEX {index} RENAME TO {quote(new_ix.name)}")
        steps.append(rename.of("alter_index", index).doing())
    return steps


def create_index(ix: IndexSpec, *, online: bool) -> Step:
    """Return the statement building ``ix`` (concurrently when ``online``)."""
    return Online(concurrent_create(ix)) if online else ix.create
