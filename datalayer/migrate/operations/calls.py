"""What each migrator method records: ``(migrator, *its arguments) -> Operation``.

Each function takes the arguments of the migrator method of the same name
(``migrator`` first) and returns the operation that call performs.  The
migrator applies them with its ``_records`` decorator.
"""

from __future__ import annotations

from typing import Any

import peewee as pw

from . import kinds as k
from .base import Operation

M = Any  # a DatalayerMigrator (not imported: the migrator imports this module)


def _table(m: M, model: Any) -> str:
    name: str = m._get(model)._meta.table_name
    return name


def _server_default(field: pw.Field) -> bool:
    return any("DEFAULT" in str(getattr(c, "sql", "")).upper() for c in field.constraints or ())


def create_model(m: M, model: Any, *a: Any, **kw: Any) -> Operation:
    return k.CreateTable(model._meta.table_name)


def remove_model(m: M, model: Any, *a: Any, **kw: Any) -> Operation:
    return k.DropTable(_table(m, model))


def rename_table(m: M, model: Any, new_name: str, *a: Any, **kw: Any) -> Operation:
    return k.RenameTable(new_name, old=_table(m, model))


def set_schema(m: M, model: Any, schema: str | None, *a: Any, **kw: Any) -> Operation:
    old = m._get(model)._meta.schema
    return k.SetSchema(_table(m, model), schema=schema, old_schema=old)


def set_model_meta(m: M, model: Any, **options: Any) -> Operation:
    return k.SetModelMeta(_table(m, model), options=tuple(sorted(options.items())))


def set_constraints(m: M, model: Any, constraints: Any, *a: Any, **kw: Any) -> Operation:
    return k.SetConstraints(_table(m, model), count=len(constraints))


def set_primary_key(m: M, model: Any, *names: str, **kw: Any) -> Operation:
    return k.SetPrimaryKey(_table(m, model), columns=tuple(names))


def require_empty(m: M, model: Any, reason: str, *a: Any, **kw: Any) -> Operation:
    return k.RequireEmpty(_table(m, model), reason=reason)


def add_fields(m: M, model: Any, *a: Any, **kw: Any) -> Operation:
    fields = {name: f for name, f in kw.items() if isinstance(f, pw.Field)}
    return k.AddColumns(
        _table(m, model),
        columns=tuple(f.column_name or name for name, f in fields.items()),
        old_code_safe=all(f.null or _server_default(f) for f in fields.values()),
    )


def remove_fields(m: M, model: Any, *names: str, **kw: Any) -> Operation:
    return k.DropColumns(_table(m, model), columns=tuple(names))


def change_fields(m: M, model: Any, *a: Any, **kw: Any) -> Operation:
    columns = tuple(name for name, f in kw.items() if isinstance(f, pw.Field))
    return k.AlterColumns(_table(m, model), columns=columns)


def alter_fields(m: M, model: Any, fields: Any, *a: Any, **kw: Any) -> Operation:
    return k.AlterColumns(_table(m, model), columns=tuple(fields))


def rename_column(m: M, model: Any, old: str, new: str, *a: Any, **kw: Any) -> Operation:
    return k.RenameColumn(_table(m, model), old=old, new=new)


def rename_field(m: M, model: Any, old: str, new: str) -> Operation:
    return k.RenameColumn(_table(m, model), old=old, new=new)


def add_not_null(m: M, model: Any, *names: str, **kw: Any) -> Operation:
    return k.AddNotNull(_table(m, model), columns=tuple(names))


def drop_not_null(m: M, model: Any, *names: str) -> Operation:
    return k.DropNotNull(_table(m, model), columns=tuple(names))


def backfill(m: M, model: Any, *names: str, **kw: Any) -> Operation:
    if kw.get("background") or kw.get("update") is not None:
        columns = tuple(kw.get("update") or names)
        return k.BackgroundBackfill(_table(m, model), columns=columns, name=kw.get("name") or "")
    return k.Backfill(_table(m, model), columns=tuple(names))


def validate_constraints(m: M, model: Any) -> Operation:
    return k.ValidateConstraints(_table(m, model))


def add_index(m: M, model: Any, *columns: str, unique: bool = False, **kw: Any) -> Operation:
    return k.AddIndex(_table(m, model), name=str(kw.get("name") or ""), unique=unique)


def drop_index(m: M, model: Any, *columns: str) -> Operation:
    return k.DropIndex(_table(m, model), name=f"({', '.join(columns)})")


def add_named_index(
    m: M, model: Any, name: str, *e: Any, unique: bool = False, **kw: Any
) -> Operation:
    return k.AddIndex(_table(m, model), name=name, unique=unique)


def drop_named_index(m: M, model: Any, name: str, **kw: Any) -> Operation:
    return k.DropIndex(_table(m, model), name=name)


def rename_index(m: M, model: Any, old: str, new: str) -> Operation:
    return k.RenameIndex(_table(m, model), old=old, new=new)


def sql(m: M, text: str, *params: Any) -> Operation:
    return k.RawSql("", sql=text)


def run(m: M, func: Any, *a: Any, **kw: Any) -> Operation:
    return k.PythonFunction("", name=str(getattr(func, "__name__", None) or repr(func)))
