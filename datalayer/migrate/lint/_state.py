"""What lint knows while it walks the migrations: the schema so far and the current file.

``SchemaState`` lives across migrations (column types, index owners, the
``CHECK (col IS NOT NULL)`` constraints and whether each is validated);
``Context`` is what a rule sees for one statement: the target PostgreSQL
version, whether the statement runs inside the migration's transaction, the
tables created earlier in the same migration (changes to those need no safe
form: nobody uses them yet) and the constraints added NOT VALID in the
current transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._nodes import (
    TypeKey,
    alter_cmds,
    collation,
    column_constraints,
    is_add_column,
    is_add_constraint,
    is_not_null_check,
    name_list,
    qualified,
    type_key,
)
from ._pg import AlterTableType, ObjectType, ast

__all__ = ["Context", "SchemaState", "track"]


@dataclass
class SchemaState:
    """The schema as the migrations so far left it (as far as their SQL tells)."""

    columns: dict[tuple[str, str], TypeKey | None] = field(default_factory=dict)
    collations: dict[tuple[str, str], str | None] = field(default_factory=dict)
    not_null_checks: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)

    def copy(self) -> SchemaState:
        """Return an independent copy (the values are immutable: copying the dicts suffices).

        A deep copy per migration made linting a long history quadratic in
        Python-level work (every key tuple copied again for every file).
        """
        return SchemaState(
            dict(self.columns), dict(self.collations), dict(self.not_null_checks),
            dict(self.indexes),
        )


@dataclass
class Context:
    """What a rule knows about the statement it looks at, besides the statement."""

    postgres: int
    atomic: bool
    state: SchemaState
    created: set[str] = field(default_factory=set)
    not_valid: set[tuple[str, str]] = field(default_factory=set)
    added: set[tuple[str, str]] = field(default_factory=set)  # columns added to old tables
    undoing: Context | None = None  # in a rollback: the context of the migration it undoes

    @property
    def in_transaction(self) -> bool:
        """True when the statement runs inside the migration's transaction."""
        return self.atomic

    def is_new(self, table: str) -> bool:
        """True when ``table`` was created earlier in this migration."""
        return table in self.created

    def undoes(self, table: str, column: str | None = None) -> bool:
        """True in a rollback that removes what its migration made (the table or column).

        The application version that runs before a rollback is the one from
        before the migration: it never used what the migration added.
        """
        made = self.undoing
        if made is None:
            return False
        return table in made.created or (column is not None and (table, column) in made.added)

    def has_valid_not_null_check(self, table: str, column: str) -> bool:
        """True when a validated ``CHECK (column IS NOT NULL)`` exists on ``table``."""
        return any(
            t == table and col == column and valid
            for (t, _), (col, valid) in self.state.not_null_checks.items()
        )

    def end_transaction(self) -> None:
        """Forget what only the current transaction holds."""
        self.not_valid.clear()


def _rename_table(state: SchemaState, old: str, new: str) -> None:
    state.columns = {((new if t == old else t), c): v for (t, c), v in state.columns.items()}
    state.collations = {
        ((new if t == old else t), c): v for (t, c), v in state.collations.items()
    }
    state.not_null_checks = {
        ((new if t == old else t), n): v for (t, n), v in state.not_null_checks.items()
    }
    state.indexes = {i: (new if t == old else t) for i, t in state.indexes.items()}


def _drop_table(state: SchemaState, table: str) -> None:
    state.columns = {k: v for k, v in state.columns.items() if k[0] != table}
    state.collations = {k: v for k, v in state.collations.items() if k[0] != table}
    state.not_null_checks = {k: v for k, v in state.not_null_checks.items() if k[0] != table}
    state.indexes = {i: t for i, t in state.indexes.items() if t != table}


def _add_constraint(ctx: Context, table: str, con: ast.Constraint, *, valid: bool) -> None:
    column = is_not_null_check(con)
    if column is not None and con.conname:
        ctx.state.not_null_checks[(table, str(con.conname))] = (column, valid)
    if not valid and con.conname:
        ctx.not_valid.add((table, str(con.conname)))


def _track_alter(ctx: Context, node: Any) -> None:
    state = ctx.state
    for table, cmd in alter_cmds(node):
        sub = cmd.subtype
        if is_add_column(cmd):
            column = cmd.def_
            state.columns[(table, str(column.colname))] = type_key(column.typeName)
            if table not in ctx.created:
                ctx.added.add((table, str(column.colname)))
            state.collations[(table, str(column.colname))] = collation(column)
        elif sub == AlterTableType.AT_DropColumn and cmd.name:
            state.columns.pop((table, str(cmd.name)), None)
            state.collations.pop((table, str(cmd.name)), None)
            state.not_null_checks = {
                k: v for k, v in state.not_null_checks.items()
                if not (k[0] == table and v[0] == cmd.name)
            }
        elif sub == AlterTableType.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
            state.columns[(table, str(cmd.name))] = type_key(cmd.def_.typeName)
            state.collations[(table, str(cmd.name))] = collation(cmd.def_)
        elif is_add_constraint(cmd):
            _add_constraint(ctx, table, cmd.def_, valid=not cmd.def_.skip_validation)
        elif sub == AlterTableType.AT_ValidateConstraint and cmd.name:
            key = (table, str(cmd.name))
            if key in state.not_null_checks:
                state.not_null_checks[key] = (state.not_null_checks[key][0], True)
        elif sub == AlterTableType.AT_DropConstraint and cmd.name:
            state.not_null_checks.pop((table, str(cmd.name)), None)


def _track_create(ctx: Context, node: ast.CreateStmt) -> None:
    table = qualified(node.relation)
    _drop_table(ctx.state, table)
    ctx.created.add(table)
    for element in node.tableElts or ():
        if isinstance(element, ast.ColumnDef):
            ctx.state.columns[(table, str(element.colname))] = type_key(element.typeName)
            ctx.state.collations[(table, str(element.colname))] = collation(element)
            for con in column_constraints(element):
                _add_constraint(ctx, table, con, valid=True)
        elif isinstance(element, ast.Constraint):
            _add_constraint(ctx, table, element, valid=not element.skip_validation)


def track(ctx: Context, node: Any) -> None:
    """Update ``ctx`` (and its schema state) with what statement ``node`` did."""
    state = ctx.state
    if isinstance(node, ast.CreateStmt):
        _track_create(ctx, node)
    elif isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
        ctx.created.add(qualified(node.into.rel))
    elif isinstance(node, ast.AlterTableStmt):
        _track_alter(ctx, node)
    elif isinstance(node, ast.IndexStmt) and node.idxname:
        schema = node.relation.schemaname if node.relation is not None else None
        name = f"{schema}.{node.idxname}" if schema else str(node.idxname)
        state.indexes[name] = qualified(node.relation)
    elif isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE:
        for names in node.objects or ():
            table = name_list(names)
            _drop_table(state, table)
            ctx.created.discard(table)
    elif isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_INDEX:
        for names in node.objects or ():
            state.indexes.pop(name_list(names), None)
    elif isinstance(node, ast.RenameStmt):
        _track_rename(ctx, node)
    elif (
        isinstance(node, ast.AlterObjectSchemaStmt)
        and node.objectType == ObjectType.OBJECT_TABLE
        and node.relation is not None
    ):
        old = qualified(node.relation)
        new = str(node.newschema) + "." + str(node.relation.relname)
        _rename_table(state, old, new.removeprefix("public."))


def _track_rename(ctx: Context, node: ast.RenameStmt) -> None:
    state = ctx.state
    relation = node.relation
    table = qualified(relation) if relation is not None else None
    if node.renameType == ObjectType.OBJECT_TABLE and relation is not None and table:
        schema = relation.schemaname
        new = f"{schema}.{node.newname}" if schema else str(node.newname)
        _rename_table(state, table, new)
        if table in ctx.created:
            ctx.created.discard(table)
            ctx.created.add(new)
    elif node.renameType == ObjectType.OBJECT_COLUMN and table is not None:
        old, new = str(node.subname), str(node.newname)
        if (table, old) in state.columns:
            state.columns[(table, new)] = state.columns.pop((table, old))
        if (table, old) in state.collations:
            state.collations[(table, new)] = state.collations.pop((table, old))
        state.not_null_checks = {
            k: ((new, v[1]) if k[0] == table and v[0] == old else v)
            for k, v in state.not_null_checks.items()
        }
    elif node.renameType == ObjectType.OBJECT_INDEX and table is not None:
        owner = state.indexes.pop(table, None)
        if owner is not None:
            state.indexes[str(node.newname)] = owner
    elif node.renameType == ObjectType.OBJECT_TABCONSTRAINT and table is not None:
        key = (table, str(node.subname))
        if key in state.not_null_checks:
            state.not_null_checks[(table, str(node.newname))] = state.not_null_checks.pop(key)


