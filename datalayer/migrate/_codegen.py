"""Write peewee models and fields as Python code for a migration file.

Unlike peewee-migrate's serialiser, everything that reaches the DDL is kept:
server defaults and CHECKs (``constraints=[...]``), ``on_delete`` /
``on_update``, explicit index names, partial and expression indexes, table
constraints, ``legacy_table_names``.  Custom field classes are written as the
peewee class they derive from (their column type kept with ``m.typed`` when
it differs).  Python-side defaults are kept when they can be written
(literals, importable callables); they only matter to fill existing rows.

Generated code uses ``pw`` and ``pw_pext`` (imported by peewee-migrate's
template) and ``m``, the extended migrator.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import importlib
import math
import re
import uuid
from collections.abc import Collection
from typing import Any

import peewee as pw

from ._spec import Sql, _untyped, database_of, deferred_fk_name, render

__all__ = ["CodeWriter"]

_MODULES = {"peewee": "pw", "playhouse.postgres_ext": "pw_pext"}
_CHECK_ONLY = re.compile(r"^CHECK \((.*)\)$", re.DOTALL)


def _plain_data(value: Any) -> bool:
    """Return True when ``repr(value)`` is a Python literal that rebuilds it (JSON-like data)."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_plain_data(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_data(v) for k, v in value.items())
    return False


def _base_class(field: pw.Field) -> type[pw.Field]:
    for cls in type(field).__mro__:
        if cls.__module__ in _MODULES and issubclass(cls, pw.Field):
            return cls
    return pw.Field  # pragma: no cover - every field derives from pw.Field


def _class_ref(cls: type[Any]) -> str:
    return f"{_MODULES[cls.__module__]}.{cls.__name__}"


def _defaults_of(cls: type[pw.Field]) -> pw.Field | None:
    """Return a default instance of ``cls`` to tell explicit options from defaults."""
    if issubclass(cls, pw.ForeignKeyField):
        return None
    try:
        return cls()
    except Exception:
        return None


class CodeWriter:
    """Render fields, indexes and models; collect warnings about what cannot be written."""

    def __init__(self, model_var: str = "m") -> None:
        self.m = model_var
        self.warnings: list[str] = []

    # -- values ---------------------------------------------------------------

    def sql(self, sql: Sql) -> str:
        """Return code for a ``pw.SQL`` node with this text and parameters."""
        if sql.params:
            params = ", ".join(self.literal(p, context=sql.text) for p in sql.params)
            return f"pw.SQL({sql.text!r}, [{params}])"
        return f"pw.SQL({sql.text!r})"

    def constraint(self, sql: Sql) -> str:
        """Return code for one constraint (``pw.Check(...)`` when it is a plain CHECK)."""
        m = _CHECK_ONLY.match(sql.text)
        if m and not sql.params and "%" not in sql.text:
            return f"pw.Check({m.group(1)!r})"
        return self.sql(sql)

    def literal(self, value: Any, *, context: str) -> str:
        """Return a Python literal for ``value`` (used for SQL parameters and defaults)."""
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, float) and not math.isfinite(value):
            return f"float({str(value)!r})"  # repr() gives nan / inf, which are not names
        if value is None or isinstance(value, (bool, int, float, str, bytes)):
            return repr(value)
        if isinstance(value, (dict, list, tuple)) and _plain_data(value):
            return repr(value)
        if isinstance(value, (decimal.Decimal, uuid.UUID, dt.date, dt.time, dt.timedelta)):
            return repr(str(value))
        self.warnings.append(
            f"{context}: cannot write the value {value!r} into a migration; it was written as "
            "its text, check the generated file"
        )
        return repr(str(value))

    def default(self, field: pw.Field) -> str | None:
        """Return code for a field's Python default; None when it has none or cannot be written."""
        value = field.default
        where = f"{field.model._meta.table_name}.{field.column_name}"
        if value is None:
            return None
        if callable(value):
            module = getattr(value, "__module__", None)
            owner = getattr(value, "__self__", None)
            if module is None and isinstance(owner, type):
                # A builtin class method (datetime.datetime.now, date.today): no __module__.
                module = owner.__module__
            qualname = getattr(value, "__qualname__", "")
            if module and qualname and "<" not in qualname:
                try:
                    obj: Any = importlib.import_module(module)
                    for part in qualname.split("."):
                        obj = getattr(obj, part)
                except (ImportError, AttributeError):
                    obj = None
                # == as well as is: a bound method is a new object at each attribute access.
                if obj is value or (obj is not None and obj == value):
                    return f"{self.m}.ref({module!r}, {qualname!r})"
            kind = (
                "a lambda or a local function" if "<" in qualname
                else "not importable under its own name"
            )
            self.warnings.append(
                f"{where}: its default {value!r} cannot be written into a migration ({kind}), "
                "so the migration has no default to fill existing rows with; give it a "
                "module-level function or a server default"
            )
            return None
        if isinstance(value, (dict, list, tuple)):
            # A JSON or array default: the Python value itself (db_value would wrap it).
            return self.literal(value, context=where)
        try:
            convert: Any = field.db_value
            value = convert(value)
        except Exception:
            pass
        if isinstance(value, pw.Node):
            self.warnings.append(f"{where}: its default is an SQL expression; use a server default")
            return None
        return self.literal(value, context=where)

    # -- fields -----------------------------------------------------------------

    def field_kwargs(self, field: pw.Field, *, with_default: bool = True) -> list[str]:
        """Return ``name=value`` strings that rebuild ``field``'s column."""
        base = _base_class(field)
        defaults = _defaults_of(base)
        db = database_of(field.model)
        kw: list[str] = []
        if isinstance(field, pw.ForeignKeyField):
            rel = field.rel_model
            target = "'self'" if rel is field.model else f"{self.m}.orm[{rel._meta.table_name!r}]"
            kw.append(f"model={target}")
            kw.append(f"field={field.rel_field.name!r}")
        if vars(field).get("max_length") is not None:
            kw.append(f"max_length={vars(field)['max_length']!r}")
        if isinstance(field, pw.DecimalField):
            kw.append(f"max_digits={field.max_digits!r}")
            kw.append(f"decimal_places={field.decimal_places!r}")
            kw.append(f"auto_round={field.auto_round!r}")
            kw.append(f"rounding={str(field.rounding)!r}")
        inner = vars(field).get("_ArrayField__field")
        if inner is not None:
            kw.append(f"field_class={_class_ref(_base_class(inner))}")
            if getattr(inner, "max_length", None) is not None:
                kw.append(f"field_kwargs={{'max_length': {inner.max_length!r}}}")
            kw.append(f"dimensions={vars(field).get('dimensions', 1)!r}")
        kw.append(f"column_name={field.column_name!r}")
        for attr in ("null", "primary_key", "unique", "index", "index_type", "collation"):
            value = getattr(field, attr, None)
            if isinstance(field, pw.ForeignKeyField):
                implicit = {"null": False, "primary_key": False, "unique": False,
                            "index": not field.unique, "index_type": None, "collation": None}
                default = implicit[attr]
            else:
                default = getattr(defaults, attr, None) if defaults is not None else None
            if value != default and not (attr == "primary_key" and base is pw.AutoField):
                kw.append(f"{attr}={value!r}")
        if isinstance(field, pw.ForeignKeyField):
            for attr in ("on_delete", "on_update", "deferrable", "constraint_name"):
                value = getattr(field, attr, None)
                if attr == "constraint_name" and not value and field.deferred:
                    value = deferred_fk_name(field)  # as create_foreign_key() names it
                if value:
                    kw.append(f"{attr}={value!r}")
            kw.append("backref='+'")
        if field.constraints:
            items = ", ".join(self.constraint(render(c, db)) for c in field.constraints)
            kw.append(f"constraints=[{items}]")
        if with_default:
            code = self.default(field)
            if code is not None:
                kw.append(f"default={code}")
        return kw

    def field(self, field: pw.Field) -> str:
        """Return code that builds an unbound copy of ``field``."""
        base = _base_class(field)
        code = f"{_class_ref(base)}({', '.join(self.field_kwargs(field))})"
        derived = isinstance(field, pw.ForeignKeyField) or "_ArrayField__field" in vars(field)
        if not derived and field.field_type != base.field_type:
            code = f"{self.m}.typed({code}, {field.field_type!r})"
        return code

    # -- indexes and models -------------------------------------------------------

    def index_expression(self, expr: Any, model_var: str | None, db: pw.Database) -> str:
        """Return code for one index expression."""
        if isinstance(expr, pw.Field):
            return f"{model_var}.{expr.name}" if model_var else repr(expr.name)
        if isinstance(expr, str):
            return f"pw.SQL({expr!r})"
        return self.sql(render(expr, db, values_scope=True))

    def index_options(self, index: Any, db: pw.Database) -> list[str]:
        """Return the keyword arguments of a named index."""
        kw = [f"name={index._name!r}"]
        if index._unique:
            kw.append("unique=True")
        if index._where is not None:
            kw.append(f"where={self.sql(render(index._where, db, values_scope=True))}")
        if index._using:
            kw.append(f"using={index._using!r}")
        if index._nulls_distinct is not None:
            kw.append(f"nulls_distinct={index._nulls_distinct!r}")
        return kw

    def model(self, model: type[pw.Model], skip: Collection[str] = ()) -> list[str]:
        """Return the lines that define ``model`` and create it with ``m.create_model``.

        Fields named in ``skip`` are left out (a foreign key to a table created later).
        """
        meta = model._meta
        db = database_of(model)
        name = model.__name__
        lines = [f"class {name}(pw.Model):"]
        for field in meta.sorted_fields:
            if field.name not in skip:
                lines.append(f"    {field.name} = {self.field(field)}")
        lines += ["", "    class Meta:", f"        table_name = {meta.table_name!r}"]
        if meta.schema:
            lines.append(f"        schema = {meta.schema!r}")
        if not meta.legacy_table_names:
            lines.append("        legacy_table_names = False")
        if meta.composite_key:
            composite: Any = meta.primary_key
            names = ", ".join(repr(n) for n in composite.field_names)
            lines.append(f"        primary_key = pw.CompositeKey({names})")
        elif meta.primary_key is False:
            lines.append("        primary_key = False")
        tuples = [e for e in meta.indexes if isinstance(e, (list, tuple))]
        if tuples:
            rendered = []
            for parts, unique in tuples:
                items = ", ".join(
                    repr(p) if isinstance(p, str) else self.sql(render(p, db, values_scope=True))
                    for p in parts
                )
                rendered.append(f"(({items},), {bool(unique)!r})")
            lines.append(f"        indexes = [{', '.join(rendered)}]")
        if meta.constraints:
            items = ", ".join(self.constraint(render(c, db)) for c in meta.constraints)
            lines.append(f"        constraints = [{items}]")
        lines.append("")
        for entry in meta.indexes:
            if isinstance(entry, (list, tuple)):
                continue
            if isinstance(entry, pw.Index):
                entry = _untyped(entry)
                exprs = ", ".join(self.index_expression(e, name, db) for e in entry._expressions)
                opts = ", ".join(self.index_options(entry, db))
                lines.append(f"{name}.add_index(pw.ModelIndex({name}, ({exprs},), {opts}))")
            else:
                lines.append(f"{name}.add_index({self.sql(render(entry, db))})")
        lines.append(f"{self.m}.create_model({name})")
        return lines

    def call(self, method: str, *args: str) -> str:
        """Return ``m.method(args...)`` wrapped one argument per line when long."""
        one = f"{self.m}.{method}({', '.join(args)})"
        if len(one) <= 92:
            return one
        inner = ",\n    ".join(args)
        return f"{self.m}.{method}(\n    {inner},\n)"

