"""Index rules: build and drop indexes without blocking writes."""

from __future__ import annotations

from collections.abc import Iterator

from .._nodes import has_option, name_list, qualified
from .._pg import ObjectType, ast
from .._state import Context
from ._registry import Statement, rule

_CONCURRENT_FIX = (
    "build it with CREATE INDEX CONCURRENTLY in a migration of its own with `atomic = False` "
    "(SHARE UPDATE EXCLUSIVE: reads and writes go on); if the build fails it leaves an "
    "INVALID index: DROP INDEX CONCURRENTLY IF EXISTS it and build again"
)


@rule(
    "require-concurrent-index-creation",
    "error",
    "CREATE INDEX on an existing table without CONCURRENTLY blocks writes while it builds",
)
def require_concurrent_index_creation(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    node = stmt.node
    if isinstance(node, ast.IndexStmt) and not node.concurrent:
        table = qualified(node.relation)
        if not ctx.is_new(table):
            name = node.idxname or "(unnamed)"
            yield (
                f"CREATE INDEX {name} takes a SHARE lock on {table}: every write to {table} "
                "waits until the whole table is read and the index built",
                _CONCURRENT_FIX,
            )


@rule(
    "require-concurrent-index-deletion",
    "error",
    "DROP INDEX without CONCURRENTLY blocks reads and writes of its table",
)
def require_concurrent_index_deletion(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    node = stmt.node
    if (
        isinstance(node, ast.DropStmt)
        and node.removeType == ObjectType.OBJECT_INDEX
        and not node.concurrent
    ):
        for names in node.objects or ():
            index = name_list(names)
            table = ctx.state.indexes.get(index)
            if table is not None and ctx.is_new(table):
                continue
            yield (
                f"DROP INDEX {index} takes an ACCESS EXCLUSIVE lock on "
                f"{table or 'its table'}: reads and writes wait behind it (and it waits for "
                "every running query on the table first)",
                "DROP INDEX CONCURRENTLY IF EXISTS in a migration with `atomic = False`",
            )


def _concurrently(node: object) -> str | None:
    if isinstance(node, ast.IndexStmt) and node.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if isinstance(node, ast.DropStmt) and node.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if isinstance(node, ast.ReindexStmt) and has_option(node.params, "concurrently"):
        return "REINDEX CONCURRENTLY"
    return None


@rule(
    "ban-concurrent-index-creation-in-transaction",
    "error",
    "CONCURRENTLY cannot run inside a transaction: the migration fails",
)
def ban_concurrent_index_creation_in_transaction(
    stmt: Statement, ctx: Context
) -> Iterator[tuple[str, str]]:
    what = _concurrently(stmt.node)
    if what is not None and ctx.in_transaction:
        yield (
            f"{what} in a migration that runs in a transaction fails (PostgreSQL refuses it "
            "inside a transaction block)",
            "set `atomic = False` at the top level of the migration file, and keep the "
            "statements that need a transaction in another migration",
        )
