"""Transaction rules: the runner owns the migration's transaction."""

from __future__ import annotations

from collections.abc import Iterator

from .._pg import ast
from .._state import Context
from ._registry import Statement, rule

_KINDS = {  # by the name of the statement's kind (pglast's TransactionStmtKind)
    "TRANS_STMT_BEGIN": "BEGIN",
    "TRANS_STMT_START": "START TRANSACTION",
    "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK",
}


@rule(
    "transaction-nesting",
    "error",
    "BEGIN / COMMIT / ROLLBACK inside a migration break the runner's transaction",
)
def transaction_nesting(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    node = stmt.node
    if not isinstance(node, ast.TransactionStmt):
        return
    kind = _KINDS.get(node.kind.name) if node.kind is not None else None
    if kind is not None:
        where = (
            "the migration's transaction, so the statements after it and the history row "
            "are no longer applied together"
            if ctx.in_transaction
            else "autocommit: a transaction left open here spans the following statements"
        )
        yield (
            f"{kind} in a migration: the runner already manages {where}",
            "remove it: a migration runs in one transaction unless its file sets `atomic = "
            "False`; split work that must commit separately into its own migration",
        )
