"""The live catalog and the one schema comparison (``check``, ``drift``, ``baseline``).

:mod:`.catalog` reads a live database into dataclasses (:func:`snapshot`,
:func:`snapshot_catalog`); :mod:`.comparison` compares two of them
(:func:`differences`, rendered as ``check``'s lines by :func:`compare`).
Nothing here imports the rest of ``datalayer.migrate``.
"""

from __future__ import annotations

from .catalog import (
    DEFAULT_IGNORE,
    Catalog,
    Check,
    Column,
    ForeignKey,
    Index,
    Key,
    Schema,
    Table,
    history_tables,
    snapshot,
    snapshot_catalog,
    user_schemas,
)
from .comparison import KINDS, Difference, compare, differences

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
    "history_tables",
    "snapshot",
    "snapshot_catalog",
    "user_schemas",
]
