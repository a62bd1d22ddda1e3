"""Small readers of pglast's parse tree, shared by the lock analysis and the rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import facts
from ..facts import TypeKey
from ._pg import AlterTableType, ConstrType, NullTestType, ast

__all__ = [
    "TypeKey",
    "added_constraints",
    "alter_cmds",
    "collation",
    "column_constraints",
    "has_option",
    "is_not_null_check",
    "qualified",
    "type_key",
    "volatile",
]


def qualified(relation: Any) -> str:
    """Return ``schema.table`` (or ``table``) of a RangeVar, as PostgreSQL folds names."""
    if relation is None:
        return "?"
    name = str(relation.relname)
    return f"{relation.schemaname}.{name}" if relation.schemaname else name


def name_list(names: Any) -> str:
    """Return a dotted name from a tuple of String nodes."""
    return ".".join(str(getattr(n, "sval", n)) for n in names or ())


def alter_cmds(node: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``(table, command)`` for each subcommand of an ALTER TABLE (an AlterTableCmd)."""
    if isinstance(node, ast.AlterTableStmt):
        table = qualified(node.relation)
        for cmd in node.cmds or ():
            if isinstance(cmd, ast.AlterTableCmd):
                yield table, cmd


def is_add_column(cmd: Any) -> bool:
    """True when ``cmd`` is ``ADD COLUMN``."""
    return bool(cmd.subtype == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef))


def is_add_constraint(cmd: Any) -> bool:
    """True when ``cmd`` is ``ADD CONSTRAINT``."""
    return bool(
        cmd.subtype == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint)
    )


def column_constraints(column: ast.ColumnDef) -> list[ast.Constraint]:
    """Return the constraints written on a column definition."""
    return [c for c in column.constraints or () if isinstance(c, ast.Constraint)]


def added_constraints(cmd: Any) -> list[ast.Constraint]:
    """Return the constraints an ``ADD CONSTRAINT`` or ``ADD COLUMN`` subcommand adds."""
    if is_add_constraint(cmd):
        return [cmd.def_]
    return column_constraints(cmd.def_) if is_add_column(cmd) else []


def has_option(options: Any, name: str) -> bool:
    """True when a statement's options (DefElem nodes) include ``name``."""
    return any(getattr(p, "defname", "") == name for p in options or ())


def type_key(type_name: Any) -> TypeKey | None:
    """Return the :data:`TypeKey` of a TypeName node (None if it has none)."""
    if not isinstance(type_name, ast.TypeName) or not type_name.names:
        return None
    name = facts.normal_name(str(type_name.names[-1].sval))
    mods: list[int] = []
    for mod in type_name.typmods or ():
        value = getattr(getattr(mod, "val", None), "ival", None)
        if value is None:
            return (name, (-1,), bool(type_name.arrayBounds))
        mods.append(int(value))
    return (name, tuple(mods), bool(type_name.arrayBounds))


def collation(column: Any) -> str | None:
    """Return the ``COLLATE`` of a ColumnDef (None: the type's default collation)."""
    clause = getattr(column, "collClause", None)
    if clause is None or not clause.collname:
        return None
    return name_list(clause.collname)


def _walk(node: Any) -> Iterator[Any]:
    if isinstance(node, ast.Node):
        yield node
        for name in node:  # pglast nodes iterate over their attribute names
            yield from _walk(getattr(node, name))
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item)


def volatile(expr: Any) -> str | None:
    """Return the first volatile function called in ``expr`` (None: the value is constant).

    Which functions are volatile is :data:`.facts.NOT_VOLATILE`'s (shared with the generator).
    """
    for node in _walk(expr):
        if isinstance(node, ast.FuncCall):
            found = facts.first_volatile([name_list(node.funcname)])
            if found is not None:
                return found + "()"
        elif isinstance(node, ast.SubLink):
            return "a subquery"
    return None


def is_not_null_check(constraint: ast.Constraint) -> str | None:
    """Return the column of a ``CHECK (col IS NOT NULL)`` constraint, else None."""
    if constraint.contype != ConstrType.CONSTR_CHECK:
        return None
    expr = constraint.raw_expr
    if isinstance(expr, ast.NullTest) and expr.nulltesttype == NullTestType.IS_NOT_NULL:
        arg = expr.arg
        fields = arg.fields if isinstance(arg, ast.ColumnRef) else None
        if fields is not None and len(fields) == 1:
            field = fields[0]
            if isinstance(field, ast.String):
                return str(field.sval)
    return None
