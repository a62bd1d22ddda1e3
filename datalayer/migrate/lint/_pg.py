"""pglast, PostgreSQL's own parser (libpg_query), when the ``lint`` extra is installed.

Only the parts of the lint that read SQL text use it, and only when they
run: without pglast the modules still import, :data:`AVAILABLE` is False,
generated statements are linted from their facts (:mod:`._generated`), and
hand-written SQL is reported as not analysed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "AVAILABLE",
    "AlterTableType",
    "ConstrType",
    "DropBehavior",
    "NullTestType",
    "ObjectType",
    "TransactionStmtKind",
    "ast",
    "pglast",
]

if TYPE_CHECKING:
    import pglast
    from pglast import ast
    from pglast.enums import (
        AlterTableType,
        ConstrType,
        DropBehavior,
        NullTestType,
        ObjectType,
        TransactionStmtKind,
    )
else:
    try:
        import pglast
        from pglast import ast
        from pglast.enums import (
            AlterTableType,
            ConstrType,
            DropBehavior,
            NullTestType,
            ObjectType,
            TransactionStmtKind,
        )
    except ImportError:  # the lint extra is not installed
        pglast = ast = None
        AlterTableType = ConstrType = DropBehavior = NullTestType = None
        ObjectType = TransactionStmtKind = None

AVAILABLE = pglast is not None
"""True when pglast is installed: hand-written SQL can be analysed."""
