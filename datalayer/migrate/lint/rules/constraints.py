"""Constraint rules: add CHECK, FOREIGN KEY, UNIQUE and PRIMARY KEY without long locks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._nodes import (
    added_constraints,
    alter_cmds,
    column_constraints,
    is_add_column,
    is_add_constraint,
    qualified,
)
from .._pg import AlterTableType, ConstrType
from .._state import Context
from ._registry import Statement, rule

_NOT_VALID_FIX = (
    "ADD CONSTRAINT ... NOT VALID (a brief lock, no scan), then ALTER TABLE ... VALIDATE "
    "CONSTRAINT in a later transaction (SHARE UPDATE EXCLUSIVE: reads and writes go on)"
)


def _what(con: Any) -> str:
    kind = {
        ConstrType.CONSTR_CHECK: "CHECK",
        ConstrType.CONSTR_FOREIGN: "FOREIGN KEY",
        ConstrType.CONSTR_UNIQUE: "UNIQUE",
        ConstrType.CONSTR_PRIMARY: "PRIMARY KEY",
    }.get(con.contype, "constraint")
    return f"{kind} {con.conname}" if con.conname else kind


@rule(
    "constraint-missing-not-valid",
    "error",
    "ADD CHECK / FOREIGN KEY without NOT VALID scans the table under a lock",
)
def constraint_missing_not_valid(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    for table, cmd in alter_cmds(stmt.node):
        if ctx.is_new(table):
            continue
        if is_add_constraint(cmd):
            con = cmd.def_
            if con.contype in (ConstrType.CONSTR_CHECK, ConstrType.CONSTR_FOREIGN) and not (
                con.skip_validation
            ):
                lock = (
                    "SHARE ROW EXCLUSIVE (writes wait)"
                    if con.contype == ConstrType.CONSTR_FOREIGN
                    else "ACCESS EXCLUSIVE (reads and writes wait)"
                )
                yield (
                    f"adding {_what(con)} to {table} reads every row to check it while "
                    f"holding {lock}",
                    _NOT_VALID_FIX,
                )
        elif (
            cmd.subtype == AlterTableType.AT_ValidateConstraint
            and ctx.in_transaction
            and (table, str(cmd.name)) in ctx.not_valid
        ):
            yield (
                f"VALIDATE CONSTRAINT {cmd.name} runs in the transaction that added it NOT "
                f"VALID: the ADD's lock on {table} is held through the whole scan",
                "move VALIDATE CONSTRAINT to a later migration (or make this one `atomic = "
                "False` so each statement commits on its own)",
            )


@rule(
    "adding-foreign-key-constraint",
    "error",
    "a FOREIGN KEY added without NOT VALID blocks writes to both tables while it is checked",
)
def adding_foreign_key_constraint(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    for table, cmd in alter_cmds(stmt.node):
        if ctx.is_new(table):
            continue
        for con in added_constraints(cmd):
            if con.contype == ConstrType.CONSTR_FOREIGN and not con.skip_validation:
                other = qualified(con.pktable)
                yield (
                    f"adding a FOREIGN KEY from {table} to {other} takes SHARE ROW EXCLUSIVE "
                    f"on both and checks every row of {table}: writes to both wait",
                    "add the column without REFERENCES, then ADD CONSTRAINT ... FOREIGN KEY "
                    "... NOT VALID, then VALIDATE CONSTRAINT in a later transaction",
                )


@rule(
    "disallowed-unique-constraint",
    "error",
    "ADD UNIQUE builds its index under ACCESS EXCLUSIVE",
)
def disallowed_unique_constraint(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    fix = (
        "CREATE UNIQUE INDEX CONCURRENTLY name ON table (cols) in a migration with `atomic = "
        "False`, then ALTER TABLE table ADD CONSTRAINT name UNIQUE USING INDEX name"
    )
    for table, cmd in alter_cmds(stmt.node):
        if ctx.is_new(table):
            continue
        if is_add_constraint(cmd):
            con = cmd.def_
            if con.contype == ConstrType.CONSTR_UNIQUE and not con.indexname:
                yield (
                    f"adding {_what(con)} to {table} builds a unique index while holding "
                    "ACCESS EXCLUSIVE: reads and writes wait for the whole build",
                    fix,
                )
        elif is_add_column(cmd):
            for con in column_constraints(cmd.def_):
                if con.contype == ConstrType.CONSTR_UNIQUE:
                    yield (
                        f"adding column {cmd.def_.colname} UNIQUE to {table} builds a unique "
                        "index while holding ACCESS EXCLUSIVE",
                        "add the column without UNIQUE; then " + fix,
                    )


@rule(
    "adding-serial-primary-key-field",
    "error",
    "ADD PRIMARY KEY builds its index (and may set NOT NULL) under ACCESS EXCLUSIVE",
)
def adding_serial_primary_key_field(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    fix = (
        "CREATE UNIQUE INDEX CONCURRENTLY name ON table (cols) in a migration with `atomic = "
        "False` (the columns already NOT NULL), then ALTER TABLE table ADD CONSTRAINT name "
        "PRIMARY KEY USING INDEX name"
    )
    for table, cmd in alter_cmds(stmt.node):
        if ctx.is_new(table):
            continue
        for con in added_constraints(cmd):
            if con.contype == ConstrType.CONSTR_PRIMARY and not con.indexname:
                yield (
                    f"adding a PRIMARY KEY to {table} builds its index while holding ACCESS "
                    "EXCLUSIVE: reads and writes wait for the whole build",
                    fix,
                )
