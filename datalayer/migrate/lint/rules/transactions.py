"""Transaction rules: the runner owns the migration's transaction."""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import TransactionStmtKind

from .._state import Context
from ._registry import Statement, rule

_KINDS = {
    TransactionStmtKind.TRANS_STMT_BEGIN: "BEGIN",
    TransactionStmtKind.TRANS_STMT_START: "START TRANSACTION",
    TransactionStmtKind.TRANS_STMT_COMMIT: "COMMIT",
    TransactionStmtKind.TRANS_STMT_ROLLBACK: "ROLLBACK",
}


@rule(
    "transaction-nesting",
    "error",
    "BEGIN / COMMIT / ROLLBACK inside a migration break the runner's transaction",
)
def transaction_nesting(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    node = stmt.node
    if isinstance(node, ast.TransactionStmt) and node.kind in _KINDS:
        where = (
            "the migration's transaction, so the statements after it and the history row "
            "are no longer applied together"
            if ctx.in_transaction
            else "autocommit: a transaction left open here spans the following statements"
        )
        yield (
            f"{_KINDS[node.kind]} in a migration: the runner already manages {where}",
            "remove it: a migration runs in one transaction unless its file sets `atomic = "
            "False`; split work that must commit separately into its own migration",
        )
