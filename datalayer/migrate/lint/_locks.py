"""Which lock a statement takes on which table, and whether it scans or rewrites it.

From PostgreSQL's documentation ("Explicit Locking", and each command's
page).  A lock is held until the transaction ends: in a migration that runs
in one transaction, until the migration commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import facts as _facts
from ..facts import Lock
from ._nodes import (
    alter_cmds,
    collation,
    column_constraints,
    has_option,
    is_add_column,
    is_add_constraint,
    name_list,
    qualified,
    type_key,
    volatile,
)
from ._pg import AlterTableType, ConstrType, ObjectType, ast
from ._state import Context

__all__ = ["Facts", "analyse", "type_change"]


@dataclass
class Facts:
    """The locks, scan and rewrite of one statement."""

    kind: str
    locks: dict[str, str] = field(default_factory=dict)
    scans: bool = False
    rewrites: bool = False
    notes: list[str] = field(default_factory=list)

    def lock(self, table: str, mode: str) -> None:
        self.locks[table] = max(self.locks.get(table, "ACCESS SHARE"), mode, key=Lock.of)

    def apply(self, table: str, kind: str, ctx: Context) -> None:
        """Record a statement of ``kind`` (a key of :data:`.facts.EFFECTS`) on ``table``."""
        effect = _facts.effect(kind, postgres=ctx.postgres)
        self.lock(table, effect.lock.sql_name)
        self.scans |= effect.scans
        self.rewrites |= effect.rewrites
        if effect.rebuilds_indexes and not effect.rewrites:
            self.notes.append(f"rebuilds the indexes on the changed column of {table}")

    def merge(self, other: Facts) -> None:
        for table, mode in other.locks.items():
            self.lock(table, mode)
        self.scans |= other.scans
        self.rewrites |= other.rewrites
        self.notes.extend(other.notes)


def _kind(node: Any) -> str:
    return type(node).__name__.removesuffix("Stmt") or type(node).__name__


def _add_column(facts: Facts, ctx: Context, table: str, column: ast.ColumnDef) -> None:
    kind = "add_column"
    for con in column_constraints(column):
        if con.contype == ConstrType.CONSTR_DEFAULT:
            if ctx.postgres < 11 or volatile(con.raw_expr):
                kind = "add_column_rewriting"
        elif con.contype in (ConstrType.CONSTR_GENERATED, ConstrType.CONSTR_IDENTITY):
            kind = "add_column_rewriting"
        elif con.contype == ConstrType.CONSTR_FOREIGN and con.pktable is not None:
            facts.apply(qualified(con.pktable), "references", ctx)
            facts.apply(table, "add_column_checked", ctx)
        elif con.contype in (
            ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_CHECK
        ):
            facts.apply(table, "add_column_checked", ctx)
    key = type_key(column.typeName)
    if key is not None and key[0] in _facts.SERIALS:
        kind = "add_column_rewriting"
    facts.apply(table, kind, ctx)


def _add_constraint(facts: Facts, ctx: Context, table: str, con: ast.Constraint) -> None:
    if con.contype == ConstrType.CONSTR_FOREIGN:
        facts.apply(table, "add_foreign_key_not_valid" if con.skip_validation
                    else "add_foreign_key", ctx)
        if con.pktable is not None:
            facts.apply(qualified(con.pktable), "references", ctx)
    elif con.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY):
        if con.indexname:
            facts.apply(table, "add_constraint_using_index", ctx)
            if con.contype == ConstrType.CONSTR_PRIMARY:
                facts.notes.append(
                    "PRIMARY KEY USING INDEX scans to SET NOT NULL if a column allows NULL"
                )
        else:
            facts.apply(table, "add_unique", ctx)
    else:
        facts.apply(table, "add_check_not_valid" if con.skip_validation else "add_check", ctx)


def type_change(ctx: Context, table: str, cmd: Any) -> _facts.TypeChange:
    """Return what ``ALTER COLUMN ... TYPE`` (``cmd``) does, given the schema so far."""
    definition = cmd.def_ if isinstance(cmd.def_, ast.ColumnDef) else None
    new = type_key(definition.typeName) if definition is not None else None
    using = definition is not None and definition.raw_default is not None
    column = (table, str(cmd.name))
    return _facts.type_change(
        ctx.state.columns.get(column), new, using=using,
        old_collation=ctx.state.collations.get(column),
        new_collation=collation(definition),
    )


# ALTER TABLE subcommands by the name of pglast's AlterTableType member.
_WEAK = frozenset({
    "AT_SetStatistics", "AT_SetOptions", "AT_ResetOptions", "AT_ClusterOn", "AT_DropCluster",
    "AT_SetRelOptions", "AT_ResetRelOptions",
})
_TRIGGERS = frozenset({
    "AT_EnableTrig", "AT_DisableTrig", "AT_EnableAlwaysTrig", "AT_EnableReplicaTrig",
    "AT_EnableTrigAll", "AT_DisableTrigAll", "AT_EnableTrigUser", "AT_DisableTrigUser",
})
_SIMPLE = {
    "AT_ValidateConstraint": "validate_constraint",
    "AT_SetLogged": "set_logged",
    "AT_SetUnLogged": "set_logged",
    "AT_DropColumn": "drop_column",
    "AT_DropConstraint": "drop_constraint",
    "AT_ColumnDefault": "set_default",
}


def _alter(facts: Facts, ctx: Context, node: Any) -> None:
    for table, cmd in alter_cmds(node):
        sub = AlterTableType(cmd.subtype)
        if is_add_column(cmd):
            _add_column(facts, ctx, table, cmd.def_)
        elif is_add_constraint(cmd):
            _add_constraint(facts, ctx, table, cmd.def_)
        elif sub == AlterTableType.AT_SetNotNull:
            checked = ctx.has_valid_not_null_check(table, str(cmd.name))
            facts.apply(table, "set_not_null_checked" if checked else "set_not_null", ctx)
        elif sub == AlterTableType.AT_AlterColumnType:
            facts.apply(table, type_change(ctx, table, cmd).kind, ctx)
        elif sub.name in _SIMPLE:
            facts.apply(table, _SIMPLE[sub.name], ctx)
        elif sub.name in _WEAK:
            facts.apply(table, "set_options", ctx)
        elif sub.name in _TRIGGERS:
            facts.apply(table, "alter_trigger", ctx)
        else:
            facts.apply(table, "alter_table", ctx)


def _drop(facts: Facts, ctx: Context, node: ast.DropStmt) -> None:
    if node.removeType == ObjectType.OBJECT_INDEX:
        kind = "drop_index_concurrently" if node.concurrent else "drop_index"
        for names in node.objects or ():
            index = name_list(names)
            facts.apply(ctx.state.indexes.get(index, f"(table of index {index})"), kind, ctx)
    elif node.removeType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW,
                             ObjectType.OBJECT_MATVIEW):
        for names in node.objects or ():
            facts.apply(name_list(names), "drop_table", ctx)


def _dml(facts: Facts, ctx: Context, node: Any) -> None:
    if isinstance(node, ast.SelectStmt):
        for item in node.fromClause or ():
            if isinstance(item, ast.RangeVar):
                facts.apply(qualified(item), "select", ctx)
        return
    table = qualified(node.relation)
    kind = _kind(node).lower()
    if isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)) and node.whereClause is None:
        kind += "_all"
        facts.notes.append(f"{_kind(node).upper()} without WHERE touches every row of {table}")
    facts.apply(table, kind, ctx)


def analyse(node: Any, ctx: Context) -> Facts:
    """Return the locks, scan and rewrite of statement ``node`` given what ``ctx`` knows.

    The lock, scan and rewrite of each kind of statement are :data:`.facts.EFFECTS`'s.
    """
    facts = Facts(_kind(node))
    if isinstance(node, ast.CreateStmt):
        table = qualified(node.relation)
        facts.apply(table, "create_table", ctx)
        for element in node.tableElts or ():
            cons = (
                column_constraints(element) if isinstance(element, ast.ColumnDef)
                else [element] if isinstance(element, ast.Constraint) else []
            )
            for con in cons:
                if con.contype == ConstrType.CONSTR_FOREIGN and con.pktable is not None:
                    other = qualified(con.pktable)
                    if other != table:
                        facts.apply(other, "references", ctx)
        facts.notes.append(f"{table} is new: nothing else uses it yet")
    elif isinstance(node, ast.IndexStmt):
        kind = "create_index_concurrently" if node.concurrent else "create_index"
        facts.apply(qualified(node.relation), kind, ctx)
    elif isinstance(node, ast.AlterTableStmt):
        _alter(facts, ctx, node)
    elif isinstance(node, ast.AlterObjectSchemaStmt) and node.relation is not None:
        facts.apply(qualified(node.relation), "set_schema", ctx)
    elif isinstance(node, ast.DropStmt):
        _drop(facts, ctx, node)
    elif isinstance(node, ast.RenameStmt) and node.relation is not None:
        target = qualified(node.relation)
        if node.renameType == ObjectType.OBJECT_INDEX:
            owner = ctx.state.indexes.get(target, f"(table of index {target})")
            facts.apply(owner, "alter_index", ctx)
        elif node.renameType == ObjectType.OBJECT_COLUMN:
            facts.apply(target, "rename_column", ctx)
        elif node.renameType == ObjectType.OBJECT_TABLE:
            facts.apply(target, "rename_table", ctx)
        else:
            facts.apply(target, "alter_table", ctx)
    elif isinstance(node, ast.TruncateStmt):
        for rel in node.relations or ():
            facts.apply(qualified(rel), "truncate", ctx)
    elif isinstance(node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.SelectStmt)):
        _dml(facts, ctx, node)
    elif isinstance(node, ast.ReindexStmt) and node.relation is not None:
        kind = "reindex_concurrently" if has_option(node.params, "concurrently") else "reindex"
        facts.apply(qualified(node.relation), kind, ctx)
    elif isinstance(node, ast.VacuumStmt):
        kind = "vacuum_full" if has_option(node.options, "full") else "vacuum"
        for rel in node.rels or ():
            relation = getattr(rel, "relation", None)
            if relation is not None:
                facts.apply(qualified(relation), kind, ctx)
        facts.scans = True
    elif isinstance(node, ast.ClusterStmt) and node.relation is not None:
        facts.apply(qualified(node.relation), "cluster", ctx)
    elif isinstance(node, ast.RefreshMatViewStmt) and node.relation is not None:
        kind = "refresh_matview_concurrently" if node.concurrent else "refresh_matview"
        facts.apply(qualified(node.relation), kind, ctx)
    elif isinstance(node, ast.CreateTrigStmt) and node.relation is not None:
        facts.apply(qualified(node.relation), "create_trigger", ctx)
    return facts
