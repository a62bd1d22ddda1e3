"""Which lock a statement takes on which table, and whether it scans or rewrites it.

From PostgreSQL's documentation ("Explicit Locking", and each command's
page).  A lock is held until the transaction ends: in a migration that runs
in one transaction, until the migration commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType

from ._nodes import (
    alter_cmds,
    coercible,
    column_constraints,
    is_add_column,
    is_add_constraint,
    name_list,
    qualified,
    type_key,
    volatile,
)
from ._state import Context

__all__ = ["LEVELS", "Facts", "analyse", "blocks", "strongest"]

ACCESS_SHARE = "ACCESS SHARE"
ROW_SHARE = "ROW SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
SHARE = "SHARE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
EXCLUSIVE = "EXCLUSIVE"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"

LEVELS = (
    ACCESS_SHARE, ROW_SHARE, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE,
    SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE,
)
"""Table lock modes, weakest first."""


def strongest(locks: Iterable[str]) -> str | None:
    """Return the strongest of ``locks`` (None for none)."""
    found = [lock for lock in locks if lock in LEVELS]
    return max(found, key=LEVELS.index) if found else None


def blocks(lock: str | None) -> list[str]:
    """Return what ``lock`` blocks on its table: ``reads``, ``writes``, ``DDL``.

    Reads (SELECT, ACCESS SHARE) wait only for ACCESS EXCLUSIVE; writes
    (INSERT/UPDATE/DELETE, ROW EXCLUSIVE) wait for SHARE and stronger; every
    lock holds off some schema change (ALTER TABLE needs ACCESS EXCLUSIVE).
    """
    if lock is None:
        return []
    rank = LEVELS.index(lock)
    out = []
    if lock == ACCESS_EXCLUSIVE:
        out.append("reads")
    if rank >= LEVELS.index(SHARE):
        out.append("writes")
    out.append("DDL")
    return out


@dataclass
class Facts:
    """The locks, scan and rewrite of one statement."""

    kind: str
    locks: dict[str, str] = field(default_factory=dict)
    scans: bool = False
    rewrites: bool = False
    notes: list[str] = field(default_factory=list)

    def lock(self, table: str, mode: str) -> None:
        self.locks[table] = strongest([self.locks.get(table, ACCESS_SHARE), mode]) or mode

    def merge(self, other: Facts) -> None:
        for table, mode in other.locks.items():
            self.lock(table, mode)
        self.scans |= other.scans
        self.rewrites |= other.rewrites
        self.notes.extend(other.notes)


def _kind(node: Any) -> str:
    return type(node).__name__.removesuffix("Stmt") or type(node).__name__


def _add_column(facts: Facts, ctx: Context, table: str, column: ast.ColumnDef) -> None:
    facts.lock(table, ACCESS_EXCLUSIVE)
    for con in column_constraints(column):
        if con.contype == ConstrType.CONSTR_DEFAULT:
            if ctx.postgres < 11 or volatile(con.raw_expr):
                facts.rewrites = True
        elif con.contype in (ConstrType.CONSTR_GENERATED, ConstrType.CONSTR_IDENTITY):
            facts.rewrites = True
        elif con.contype == ConstrType.CONSTR_FOREIGN and con.pktable is not None:
            facts.lock(qualified(con.pktable), SHARE_ROW_EXCLUSIVE)
            facts.scans = True
        elif con.contype in (
            ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_CHECK
        ):
            facts.scans = True
    key = type_key(column.typeName)
    if key is not None and key[0] in ("serial", "serial4", "bigserial", "serial8", "smallserial"):
        facts.rewrites = True


def _add_constraint(facts: Facts, table: str, con: ast.Constraint) -> None:
    if con.contype == ConstrType.CONSTR_FOREIGN:
        facts.lock(table, SHARE_ROW_EXCLUSIVE)
        if con.pktable is not None:
            facts.lock(qualified(con.pktable), SHARE_ROW_EXCLUSIVE)
        facts.scans |= not con.skip_validation
    elif con.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY):
        facts.lock(table, ACCESS_EXCLUSIVE)
        if con.indexname:
            if con.contype == ConstrType.CONSTR_PRIMARY:
                facts.notes.append(
                    "PRIMARY KEY USING INDEX scans to SET NOT NULL if a column allows NULL"
                )
        else:
            facts.scans = True
    else:
        facts.lock(table, ACCESS_EXCLUSIVE)
        facts.scans |= not con.skip_validation


def _alter(facts: Facts, ctx: Context, node: Any) -> None:
    weak = {
        AlterTableType.AT_SetStatistics, AlterTableType.AT_SetOptions,
        AlterTableType.AT_ResetOptions, AlterTableType.AT_ClusterOn,
        AlterTableType.AT_DropCluster, AlterTableType.AT_SetRelOptions,
        AlterTableType.AT_ResetRelOptions,
    }
    triggers = {
        AlterTableType.AT_EnableTrig, AlterTableType.AT_DisableTrig,
        AlterTableType.AT_EnableAlwaysTrig, AlterTableType.AT_EnableReplicaTrig,
        AlterTableType.AT_EnableTrigAll, AlterTableType.AT_DisableTrigAll,
        AlterTableType.AT_EnableTrigUser, AlterTableType.AT_DisableTrigUser,
    }
    for table, cmd in alter_cmds(node):
        sub = cmd.subtype
        if is_add_column(cmd):
            _add_column(facts, ctx, table, cmd.def_)
        elif is_add_constraint(cmd):
            _add_constraint(facts, table, cmd.def_)
        elif sub == AlterTableType.AT_ValidateConstraint:
            facts.lock(table, SHARE_UPDATE_EXCLUSIVE)
            facts.scans = True
        elif sub == AlterTableType.AT_SetNotNull:
            facts.lock(table, ACCESS_EXCLUSIVE)
            if not (ctx.postgres >= 12 and ctx.has_valid_not_null_check(table, str(cmd.name))):
                facts.scans = True
        elif sub == AlterTableType.AT_AlterColumnType:
            facts.lock(table, ACCESS_EXCLUSIVE)
            new = type_key(cmd.def_.typeName) if isinstance(cmd.def_, ast.ColumnDef) else None
            using = isinstance(cmd.def_, ast.ColumnDef) and cmd.def_.raw_default is not None
            old = ctx.state.columns.get((table, str(cmd.name)))
            if using or not coercible(old, new):
                facts.rewrites = True
        elif sub in (AlterTableType.AT_SetLogged, AlterTableType.AT_SetUnLogged):
            facts.lock(table, ACCESS_EXCLUSIVE)
            facts.rewrites = True
        elif sub in weak:
            facts.lock(table, SHARE_UPDATE_EXCLUSIVE)
        elif sub in triggers:
            facts.lock(table, SHARE_ROW_EXCLUSIVE)
        else:
            facts.lock(table, ACCESS_EXCLUSIVE)


def _drop(facts: Facts, ctx: Context, node: ast.DropStmt) -> None:
    if node.removeType == ObjectType.OBJECT_INDEX:
        mode = SHARE_UPDATE_EXCLUSIVE if node.concurrent else ACCESS_EXCLUSIVE
        for names in node.objects or ():
            index = name_list(names)
            facts.lock(ctx.state.indexes.get(index, f"(table of index {index})"), mode)
    elif node.removeType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW,
                             ObjectType.OBJECT_MATVIEW):
        for names in node.objects or ():
            facts.lock(name_list(names), ACCESS_EXCLUSIVE)


def _dml(facts: Facts, node: Any) -> None:
    if isinstance(node, ast.SelectStmt):
        for item in node.fromClause or ():
            if isinstance(item, ast.RangeVar):
                facts.lock(qualified(item), ACCESS_SHARE)
        return
    table = qualified(node.relation)
    facts.lock(table, ROW_EXCLUSIVE)
    if isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)) and node.whereClause is None:
        facts.scans = True
        facts.notes.append(f"{_kind(node).upper()} without WHERE touches every row of {table}")


def analyse(node: Any, ctx: Context) -> Facts:
    """Return the locks, scan and rewrite of statement ``node`` given what ``ctx`` knows."""
    facts = Facts(_kind(node))
    if isinstance(node, ast.CreateStmt):
        table = qualified(node.relation)
        facts.lock(table, ACCESS_EXCLUSIVE)
        for element in node.tableElts or ():
            cons = (
                column_constraints(element) if isinstance(element, ast.ColumnDef)
                else [element] if isinstance(element, ast.Constraint) else []
            )
            for con in cons:
                if con.contype == ConstrType.CONSTR_FOREIGN and con.pktable is not None:
                    other = qualified(con.pktable)
                    if other != table:
                        facts.lock(other, SHARE_ROW_EXCLUSIVE)
        facts.notes.append(f"{table} is new: nothing else uses it yet")
    elif isinstance(node, ast.IndexStmt):
        facts.lock(qualified(node.relation),
                   SHARE_UPDATE_EXCLUSIVE if node.concurrent else SHARE)
        facts.scans = True
    elif isinstance(node, ast.AlterTableStmt):
        _alter(facts, ctx, node)
    elif isinstance(node, ast.DropStmt):
        _drop(facts, ctx, node)
    elif isinstance(node, ast.RenameStmt) and node.relation is not None:
        target = qualified(node.relation)
        if node.renameType == ObjectType.OBJECT_INDEX:
            owner = ctx.state.indexes.get(target, f"(table of index {target})")
            facts.lock(owner, SHARE_UPDATE_EXCLUSIVE if ctx.postgres >= 12 else ACCESS_EXCLUSIVE)
        else:
            facts.lock(target, ACCESS_EXCLUSIVE)
    elif isinstance(node, ast.TruncateStmt):
        for rel in node.relations or ():
            facts.lock(qualified(rel), ACCESS_EXCLUSIVE)
    elif isinstance(node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.SelectStmt)):
        _dml(facts, node)
    elif isinstance(node, ast.ReindexStmt) and node.relation is not None:
        concurrently = any(getattr(p, "defname", "") == "concurrently" for p in node.params or ())
        facts.lock(qualified(node.relation), SHARE_UPDATE_EXCLUSIVE if concurrently else SHARE)
        facts.scans = True
    elif isinstance(node, ast.VacuumStmt):
        full = any(getattr(p, "defname", "") == "full" for p in node.options or ())
        for rel in node.rels or ():
            relation = getattr(rel, "relation", None)
            if relation is not None:
                mode = ACCESS_EXCLUSIVE if full else SHARE_UPDATE_EXCLUSIVE
                facts.lock(qualified(relation), mode)
        facts.scans = True
        facts.rewrites = full
    elif isinstance(node, ast.ClusterStmt) and node.relation is not None:
        facts.lock(qualified(node.relation), ACCESS_EXCLUSIVE)
        facts.rewrites = True
    elif isinstance(node, ast.RefreshMatViewStmt) and node.relation is not None:
        facts.lock(qualified(node.relation), EXCLUSIVE if node.concurrent else ACCESS_EXCLUSIVE)
        facts.scans = True
    elif isinstance(node, ast.CreateTrigStmt) and node.relation is not None:
        facts.lock(qualified(node.relation), SHARE_ROW_EXCLUSIVE)
    return facts
