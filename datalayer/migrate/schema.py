"""Kept importable: the live catalog and the comparison live in :mod:`datalayer.migrate.inspect`.

``from datalayer.migrate.schema import snapshot, compare`` (and every name
below) keeps working; new code imports :mod:`datalayer.migrate.inspect`.
"""

from __future__ import annotations

from .inspect import (
    DEFAULT_IGNORE,
    KINDS,
    Catalog,
    Check,
    Column,
    Difference,
    ForeignKey,
    Index,
    Key,
    Schema,
    Table,
    compare,
    differences,
    snapshot,
    snapshot_catalog,
    user_schemas,
)

__all__ = [
    "DEFAULT_IGNORE",
    "KINDS",
    "Catalog",
    "Check",
    "Column",
    "Difference",
    "ForeignKey",
    "Index",
    "Key",
    "Schema",
    "Table",
    "compare",
    "differences",
    "snapshot",
    "snapshot_catalog",
    "user_schemas",
]
