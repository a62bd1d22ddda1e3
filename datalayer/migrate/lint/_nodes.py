"""Small readers of pglast's parse tree, shared by the lock analysis and the rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, NullTestType

__all__ = [
    "TypeKey",
    "alter_cmds",
    "coercible",
    "column_constraints",
    "is_not_null_check",
    "qualified",
    "type_key",
    "volatile",
]

TypeKey = tuple[str, tuple[int, ...], bool]
"""A column type: its name (``varchar``, ``numeric``...), its modifiers, whether an array."""


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


def has(column: ast.ColumnDef, contype: ConstrType) -> ast.Constraint | None:
    """Return the first constraint of kind ``contype`` on a column definition."""
    for c in column_constraints(column):
        if c.contype == contype:
            return c
    return None


def type_key(type_name: Any) -> TypeKey | None:
    """Return the :data:`TypeKey` of a TypeName node (None if it has none)."""
    if not isinstance(type_name, ast.TypeName) or not type_name.names:
        return None
    name = str(type_name.names[-1].sval).lower()
    mods: list[int] = []
    for mod in type_name.typmods or ():
        value = getattr(getattr(mod, "val", None), "ival", None)
        if value is None:
            return (name, (-1,), bool(type_name.arrayBounds))
        mods.append(int(value))
    return (name, tuple(mods), bool(type_name.arrayBounds))


_TEXTUAL = {"varchar", "text"}


def coercible(old: TypeKey | None, new: TypeKey | None) -> bool:
    """True when a type change from ``old`` to ``new`` needs no table rewrite.

    PostgreSQL changes these in place (binary-coercible, no narrowing):
    varchar(n) to varchar(m >= n), to varchar or to text; text to varchar;
    numeric(p, s) to numeric(q >= p, s) or to numeric; varbit(n) to varbit(m >= n).
    """
    if old is None or new is None or old[2] != new[2] or -1 in old[1] + new[1]:
        return False
    (a, amods, _), (b, bmods, _) = old, new
    if a == b and amods == bmods:
        return True
    if a in _TEXTUAL and b in _TEXTUAL:
        if b == "text" or not bmods:
            return True
        return a == "varchar" and bool(amods) and bmods[0] >= amods[0]
    if a == b == "numeric":
        if not bmods:
            return True
        if not amods:
            return False
        scale_a = amods[1] if len(amods) > 1 else 0
        scale_b = bmods[1] if len(bmods) > 1 else 0
        return scale_a == scale_b and bmods[0] >= amods[0]
    if a == b == "varbit":
        return not bmods or (bool(amods) and bmods[0] >= amods[0])
    return False


# Functions whose result does not change row to row (immutable or stable): a DEFAULT made of
# these is evaluated once when the column is added (PostgreSQL 11+), so the table is not
# rewritten.  Any other function is taken as volatile.
_NOT_VOLATILE = {
    "now", "transaction_timestamp", "statement_timestamp", "current_setting", "lower",
    "upper", "btrim", "ltrim", "rtrim", "length", "char_length", "abs", "round", "md5",
    "to_jsonb", "to_json", "jsonb_build_object", "jsonb_build_array", "json_build_object",
    "json_build_array", "array_length", "make_interval", "make_date", "to_timestamp", "date",
}


def _walk(node: Any) -> Iterator[Any]:
    if isinstance(node, ast.Node):
        yield node
        for name in node:  # pglast nodes iterate over their attribute names
            yield from _walk(getattr(node, name))
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item)


def volatile(expr: Any) -> str | None:
    """Return the first volatile function called in ``expr`` (None: the value is constant)."""
    for node in _walk(expr):
        if isinstance(node, ast.FuncCall):
            name = name_list(node.funcname).rsplit(".", 1)[-1].lower()
            if name not in _NOT_VOLATILE:
                return name + "()"
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
