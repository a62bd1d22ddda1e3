"""Column rules: add, constrain and retype columns without long locks or rewrites."""

from __future__ import annotations

from collections.abc import Iterator

from ...facts import SERIALS
from .._locks import type_change
from .._nodes import alter_cmds, collation, column_constraints, is_add_column, type_key, volatile
from .._pg import AlterTableType, ConstrType, ast
from .._state import Context
from ._registry import Statement, rule


@rule(
    "adding-not-nullable-field",
    "error",
    "SET NOT NULL scans the table under ACCESS EXCLUSIVE",
)
def adding_not_nullable_field(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    for table, cmd in alter_cmds(stmt.node):
        if cmd.subtype != AlterTableType.AT_SetNotNull or ctx.is_new(table):
            continue
        column = str(cmd.name)
        if ctx.postgres >= 12 and ctx.has_valid_not_null_check(table, column):
            continue
        if ctx.postgres >= 12:
            fix = (
                f"ADD CONSTRAINT {column}_not_null CHECK ({column} IS NOT NULL) NOT VALID; "
                "VALIDATE CONSTRAINT it in a later transaction; then SET NOT NULL (PostgreSQL "
                "12+ uses the validated CHECK and skips the scan) and DROP the CHECK"
            )
        else:
            fix = (
                f"PostgreSQL {ctx.postgres} has no scan-free SET NOT NULL: keep a validated "
                f"CHECK ({column} IS NOT NULL) instead, or run this when {table} is small"
            )
        yield (
            f"SET NOT NULL on {table}.{column} reads every row while holding ACCESS EXCLUSIVE: "
            "reads and writes wait",
            fix,
        )


@rule(
    "adding-required-field",
    "error",
    "ADD COLUMN ... NOT NULL without a DEFAULT fails on a table that has rows",
)
def adding_required_field(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    for table, cmd in alter_cmds(stmt.node):
        if not is_add_column(cmd) or ctx.is_new(table):
            continue
        column = cmd.def_
        kinds = {c.contype for c in column_constraints(column)}
        key = type_key(column.typeName)
        filled = kinds & {
            ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED
        } or (key is not None and key[0] in SERIALS)
        if (ConstrType.CONSTR_NOTNULL in kinds or ConstrType.CONSTR_PRIMARY in kinds) and not (
            filled
        ):
            yield (
                f"adding {table}.{column.colname} NOT NULL without a DEFAULT fails as soon as "
                f"{table} has a row",
                "give it a constant DEFAULT, or add it nullable, backfill in batches, then "
                "make it NOT NULL through a validated CHECK (col IS NOT NULL)",
            )


def _default_problem(column: ast.ColumnDef, postgres: int) -> str | None:
    key = type_key(column.typeName)
    if key is not None and key[0] in SERIALS:
        return f"a {key[0]} column fills every row from a sequence (nextval() is volatile)"
    for con in column_constraints(column):
        if con.contype == ConstrType.CONSTR_GENERATED:
            return "a stored generated column computes every row"
        if con.contype == ConstrType.CONSTR_IDENTITY:
            return "an identity column fills every row from its sequence"
        if con.contype == ConstrType.CONSTR_DEFAULT:
            if postgres < 11:
                return "before PostgreSQL 11 any DEFAULT is written into every row"
            func = volatile(con.raw_expr)
            if func is not None:
                return f"the DEFAULT calls {func}, which is volatile: it is evaluated per row"
    return None


@rule(
    "adding-field-with-default",
    "error",
    "ADD COLUMN with a volatile DEFAULT (any DEFAULT before PostgreSQL 11) rewrites the table",
)
def adding_field_with_default(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    for table, cmd in alter_cmds(stmt.node):
        if not is_add_column(cmd) or ctx.is_new(table):
            continue
        problem = _default_problem(cmd.def_, ctx.postgres)
        if problem is not None:
            yield (
                f"adding {table}.{cmd.def_.colname}: {problem}, so {table} is rewritten while "
                "ACCESS EXCLUSIVE is held: reads and writes wait",
                "add the column nullable without the default, SET DEFAULT for new rows, "
                "backfill existing rows in batches outside the DDL's transaction, then make "
                "it NOT NULL through a validated CHECK if needed",
            )


@rule(
    "changing-column-type",
    "error",
    "a type change that is not binary-coercible rewrites the table under ACCESS EXCLUSIVE",
)
def changing_column_type(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    for table, cmd in alter_cmds(stmt.node):
        if cmd.subtype != AlterTableType.AT_AlterColumnType or ctx.is_new(table):
            continue
        if not type_change(ctx, table, cmd).rewrites:  # facts' rule, as the generator's
            continue
        definition = cmd.def_ if isinstance(cmd.def_, ast.ColumnDef) else None
        new = type_key(definition.typeName) if definition is not None else None
        old = ctx.state.columns.get((table, str(cmd.name)))
        why = (
            "with USING every row is converted"
            if definition is not None and definition.raw_default is not None
            else "the old type is not known from the migrations"
            if old is None
            else f"{old[0]} to {new[0] if new else '?'} is not binary-coercible"
        )
        yield (
            f"changing the type of {table}.{cmd.name}: {why}, so {table} (and its indexes) "
            "is rewritten while ACCESS EXCLUSIVE is held: reads and writes wait",
            "expand and contract: add a new column of the new type, write both from the "
            "application, backfill in batches, switch reads, then drop the old column "
            "(widening varchar(n) to varchar(m > n) or text needs no rewrite)",
        )


@rule(
    "changing-column-collation",
    "warning",
    "a collation change rebuilds the column's indexes under ACCESS EXCLUSIVE",
)
def changing_column_collation(stmt: Statement, ctx: Context) -> Iterator[tuple[str, str]]:
    for table, cmd in alter_cmds(stmt.node):
        if cmd.subtype != AlterTableType.AT_AlterColumnType or ctx.is_new(table):
            continue
        change = type_change(ctx, table, cmd)
        if change.kind != "alter_collation":
            continue  # a rewrite is changing-column-type's; no change of collation: nothing
        old = ctx.state.collations.get((table, str(cmd.name))) or "the type's default"
        new = collation(cmd.def_) or "the type's default"
        yield (
            f"changing the collation of {table}.{cmd.name} from {old} to {new}: the rows stay, "
            f"but every index on the column is rebuilt while ACCESS EXCLUSIVE is held on "
            f"{table} (reads and writes wait), and the order and uniqueness of its values "
            "follow the new collation",
            "on a large indexed column: expand and contract (a new column with the new "
            "collation, its indexes built CONCURRENTLY, backfill, switch, drop the old one); "
            "else allow it with the reason",
        )
