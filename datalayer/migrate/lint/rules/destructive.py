"""Rules for drops and renames: they break the application code still running."""

from __future__ import annotations

from collections.abc import Iterator

from .._nodes import alter_cmds, name_list, qualified
from .._pg import AlterTableType, DropBehavior, ObjectType, ast
from .._state import Context
from ._registry import Statement, rule

_OLD_CODE = (
    "during a rolling deploy the application version still running uses the old name"
)


@rule("ban-drop-column", "warning", "DROP COLUMN breaks code that still reads the column")
def ban_drop_column(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    for table, cmd in alter_cmds(stmt.node):
        if cmd.subtype != AlterTableType.AT_DropColumn or ctx.undoes(table, str(cmd.name)):
            continue
        if not ctx.is_new(table):
            yield (
                f"dropping {table}.{cmd.name}: queries of the application still running "
                "that name it fail, and its data is gone",
                "deploy code that no longer uses the column first (remove the field from "
                "the model), then drop it in a later migration",
            )


@rule("ban-drop-table", "warning", "DROP TABLE breaks code that still uses the table")
def ban_drop_table(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    node = stmt.node
    if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE:
        for names in node.objects or ():
            table = name_list(names)
            if not ctx.is_new(table) and not ctx.undoes(table):
                yield (
                    f"dropping table {table}: queries of the application still running fail, "
                    "and its data is gone",
                    "deploy code that no longer uses the table first, then drop it in a "
                    "later migration (keep a backup)",
                )


@rule("ban-drop-database", "error", "DROP DATABASE has no place in a migration")
def ban_drop_database(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    if isinstance(stmt.node, ast.DropdbStmt):
        yield (
            f"DROP DATABASE {stmt.node.dbname} in a migration",
            "remove it: drop databases by hand, never from a migration",
        )


@rule("renaming-column", "warning", "RENAME COLUMN breaks code that uses the old name")
def renaming_column(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    node = stmt.node
    if isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_COLUMN:
        table = qualified(node.relation)
        if not ctx.is_new(table):
            yield (
                f"renaming {table}.{node.subname} to {node.newname}: {_OLD_CODE}",
                "add the new column, write both, backfill, switch reads, then drop the old "
                "one; or rename when no old code runs (a maintenance window)",
            )


@rule("renaming-table", "warning", "RENAME TABLE breaks code that uses the old name")
def renaming_table(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    node = stmt.node
    if isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_TABLE:
        table = qualified(node.relation)
        if not ctx.is_new(table):
            yield (
                f"renaming table {table} to {node.newname}: {_OLD_CODE}",
                "rename, then CREATE VIEW old_name AS SELECT * FROM new_name in the same "
                "migration until no old code runs; or rename in a maintenance window",
            )


@rule("ban-truncate-cascade", "error", "TRUNCATE ... CASCADE empties every referencing table")
def ban_truncate_cascade(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    node = stmt.node
    if isinstance(node, ast.TruncateStmt) and node.behavior == DropBehavior.DROP_CASCADE:
        tables = ", ".join(qualified(r) for r in node.relations or ())
        yield (
            f"TRUNCATE {tables} CASCADE also empties every table with a foreign key to them",
            "TRUNCATE the tables you mean by name, without CASCADE",
        )


@rule("ban-set-schema", "warning", "SET SCHEMA breaks code that uses the table's old schema")
def ban_set_schema(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    node = stmt.node
    if (
        isinstance(node, ast.AlterObjectSchemaStmt)
        and node.objectType == ObjectType.OBJECT_TABLE
        and node.relation is not None
    ):
        table = qualified(node.relation)
        if not ctx.is_new(table):
            yield (
                f"moving table {table} to schema {node.newschema}: {_OLD_CODE} (and schema)",
                "move it, then CREATE VIEW in the old schema AS SELECT * FROM the moved table "
                "in the same migration until no old code runs; or move it in a maintenance "
                "window",
            )
