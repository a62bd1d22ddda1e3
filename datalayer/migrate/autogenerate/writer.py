"""Peewee models and fields as code objects (:mod:`.code`) for a migration file.

Unlike peewee-migrate's serialiser, everything that reaches the DDL is kept:
server defaults and CHECKs (``constraints=[...]``), ``on_delete`` /
``on_update``, explicit index names, partial and expression indexes, table
constraints, ``legacy_table_names``.  Custom field classes are written as the
peewee class they derive from (their column type kept with ``m.typed`` when
it differs).  Python-side defaults are kept when they can be written
(literals, importable callables); they only matter to fill existing rows.

Literals are written from the value's own type (an ``int`` subclass as the
``int`` it holds), never through its ``repr()``: a custom ``__repr__`` can
neither break the file nor put code in it.

Generated code uses ``pw`` and ``pw_pext`` (imported by the file's template)
and ``m``, the extended migrator.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import importlib
import keyword
import math
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import peewee as pw

from ..ddl.spec import Sql, _untyped, database_of, deferred_fk_name, read_constraint, render
from .code import Attr, Call, Dict, Expr, Item, MethodCall, ModelDef, Module, Name, Seq, Value

__all__ = ["CodeWriter", "Unwritable", "check_body", "constraint_keyword", "literal", "plain"]

_MODULES = {"peewee": "pw", "playhouse.postgres_ext": "pw_pext"}


def constraint_keyword(sql: Sql) -> str:
    """Return the keyword a table constraint starts with, upper case (``UNIQUE``, ``CHECK``).

    After its optional ``CONSTRAINT name``; "" when there is none.  The kind of a
    constraint the models declare as SQL text, as :func:`..ddl.spec.read_constraint`
    reads it.
    """
    return read_constraint(sql).keyword


def check_body(sql: Sql) -> str | None:
    """Return the expression of a constraint that is exactly ``CHECK (expr)`` (else None)."""
    return read_constraint(sql).check_body


class Unwritable(ValueError):
    """A value (or a name) that has no literal form in a migration file."""


# Names the steps of a migration body use: a model class named so would hide them.
_TAKEN = frozenset({"m", "pw", "pw_pext"})


def _name(name: str, what: str, *, taken: frozenset[str] = frozenset()) -> str:
    """Return ``name`` when it can be written as a Python name in the file, else refuse."""
    if not name.isidentifier() or keyword.iskeyword(name) or name in taken:
        raise Unwritable(
            f"{what} {name!r} cannot be written into a migration file (it is not a Python "
            "name, or the file uses it for something else); rename it"
        )
    return name


def plain(value: Any) -> Value:
    """Return the literal of JSON-like ``value`` (None, bools, numbers, strings, containers).

    Built from the value's type, not its ``repr()``: subclasses are written as the
    base value they hold, and ``Value.value`` is exactly what the text evaluates to.

    :raises Unwritable: when ``value`` (or an item of it) is not such data.
    """
    if value is None or isinstance(value, bool):
        return Value(value, repr(value))
    if isinstance(value, int):
        number = int.__int__(value)
        return Value(number, int.__repr__(number))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unwritable(value)
        real = float.__float__(value)
        return Value(real, float.__repr__(real))
    if isinstance(value, str):
        text = str.__str__(value)
        return Value(text, str.__repr__(text))
    if isinstance(value, bytes):
        data = bytes.__bytes__(value)
        return Value(data, bytes.__repr__(data))
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        inner = ", ".join(i.text for i in items)
        if isinstance(value, list):
            return Value([i.value for i in items], f"[{inner}]")
        return Value(tuple(i.value for i in items), f"({inner},)" if len(items) == 1
                     else f"({inner})")
    if isinstance(value, dict):
        pairs = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise Unwritable(value)
            pairs.append((plain(k), plain(v)))
        return Value({k.value: v.value for k, v in pairs},
                     "{" + ", ".join(f"{k.text}: {v.text}" for k, v in pairs) + "}")
    raise Unwritable(value)


def _literal_or_none(value: Any) -> Value | None:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, float) and not math.isfinite(value):
        text = str(float.__float__(value))  # nan / inf are not names: float('nan')
        return Value(float(text), f"float({text!r})")
    if isinstance(value, (decimal.Decimal, uuid.UUID, dt.date, dt.time, dt.timedelta)):
        return plain(str(value))
    try:
        return plain(value)
    except Unwritable:
        return None


def literal(value: Any) -> Value:
    """Return the literal for ``value``: plain data, or the text of a Decimal, UUID, date ...

    :raises Unwritable: for any other value.
    """
    found = _literal_or_none(value)
    if found is None:
        raise Unwritable(value)
    return found


def arg(value: Any) -> Expr:
    """Return ``value`` as an expression: an expression as it is, plain data as a literal."""
    return value if isinstance(value, Expr) else plain(value)


def _base_class(field: pw.Field) -> type[pw.Field]:
    for cls in type(field).__mro__:
        if cls.__module__ in _MODULES and issubclass(cls, pw.Field):
            return cls
    return pw.Field  # pragma: no cover - every field derives from pw.Field


def class_ref(cls: type[Any]) -> Attr:
    """Return ``pw.Name`` / ``pw_pext.Name`` for a peewee (or postgres_ext) class."""
    return Attr(Module(_MODULES[cls.__module__]), cls.__name__)


PW = Module("pw")


def pw_call(name: str, *args: Expr, kwargs: Sequence[tuple[str, Expr]] = ()) -> Call:
    """Return ``pw.name(*args, **kwargs)``."""
    return Call(Attr(PW, name), tuple(args), tuple(kwargs))


def _defaults_of(cls: type[pw.Field]) -> pw.Field | None:
    """Return a default instance of ``cls`` to tell explicit options from defaults."""
    if issubclass(cls, pw.ForeignKeyField):
        return None
    try:
        return cls()
    except Exception:
        return None


class CodeWriter:
    """Build code for fields, indexes and models; collect warnings about what cannot be written."""

    def __init__(self, model_var: str = "m") -> None:
        self.m = model_var
        self.warnings: list[str] = []

    def migrator(self, attr: str) -> Attr:
        """Return ``m.attr``."""
        return Attr(Name(self.m), attr)

    # -- values ---------------------------------------------------------------

    def sql(self, sql: Sql) -> Call:
        """Return ``pw.SQL(text)`` (with its parameters)."""
        if sql.params:
            params = Seq(tuple(self.literal(p, context=sql.text) for p in sql.params))
            return pw_call("SQL", plain(sql.text), params)
        return pw_call("SQL", plain(sql.text))

    def constraint(self, sql: Sql) -> Call:
        """Return one constraint (``pw.Check(...)`` when it is a plain CHECK)."""
        body = check_body(sql)
        if body is not None and not sql.params and "%" not in sql.text:
            return pw_call("Check", plain(body))
        return self.sql(sql)

    def constraints(self, sqls: Sequence[Sql]) -> Seq:
        """Return ``[constraint, ...]``."""
        return Seq(tuple(self.constraint(s) for s in sqls))

    def literal(self, value: Any, *, context: str) -> Value:
        """Return a literal for ``value`` (SQL parameters and defaults); else its text, warned."""
        found = _literal_or_none(value)
        if found is not None:
            return found
        self.warnings.append(
            f"{context}: cannot write the value {value!r} into a migration; it was written as "
            "its text, check the generated file"
        )
        return plain(str(value))

    def default(self, field: pw.Field) -> Expr | None:
        """Return a field's Python default; None when it has none or cannot be written."""
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
            if (isinstance(module, str) and isinstance(qualname, str) and module and qualname
                    and "<" not in qualname):
                try:
                    obj: Any = importlib.import_module(module)
                    for part in qualname.split("."):
                        obj = getattr(obj, part)
                except (ImportError, AttributeError):
                    obj = None
                # == as well as is: a bound method is a new object at each attribute access.
                if obj is value or (obj is not None and obj == value):
                    return Call(self.migrator("ref"), (plain(module), plain(qualname)))
            kind = (
                "a lambda or a local function" if "<" in str(qualname)
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

    def field_kwargs(self, field: pw.Field) -> list[tuple[str, Expr]]:
        """Return the keyword arguments that rebuild ``field``'s column."""
        base = _base_class(field)
        defaults = _defaults_of(base)
        db = database_of(field.model)
        kw: list[tuple[str, Expr]] = []
        where = f"{field.model._meta.table_name}.{field.column_name}"
        if isinstance(field, pw.ForeignKeyField):
            rel = field.rel_model
            target: Expr = (plain("self") if rel is field.model
                            else Item(self.migrator("orm"), plain(rel._meta.table_name)))
            kw.append(("model", target))
            kw.append(("field", plain(field.rel_field.name)))
        if vars(field).get("max_length") is not None:
            kw.append(("max_length", self._option(vars(field)["max_length"], where)))
        if isinstance(field, pw.DecimalField):
            kw.append(("max_digits", self._option(field.max_digits, where)))
            kw.append(("decimal_places", self._option(field.decimal_places, where)))
            kw.append(("auto_round", self._option(field.auto_round, where)))
            kw.append(("rounding", plain(str(field.rounding))))
        if isinstance(field, pw.TimestampField):  # what a type change's USING converts by
            if field.resolution != 1:
                kw.append(("resolution", self._option(field.resolution, where)))
            if field.utc:
                kw.append(("utc", self._option(True, where)))
        inner = vars(field).get("_ArrayField__field")
        if inner is not None:
            kw.append(("field_class", class_ref(_base_class(inner))))
            if getattr(inner, "max_length", None) is not None:
                kw.append(("field_kwargs",
                           Dict(((plain("max_length"), self._option(inner.max_length, where)),))))
            kw.append(("dimensions", self._option(vars(field).get("dimensions", 1), where)))
        kw.append(("column_name", plain(field.column_name)))
        for attr in ("null", "primary_key", "unique", "index", "index_type", "collation"):
            value = getattr(field, attr, None)
            if isinstance(field, pw.ForeignKeyField):
                implicit = {"null": False, "primary_key": False, "unique": False,
                            "index": not field.unique, "index_type": None, "collation": None}
                default = implicit[attr]
            else:
                default = getattr(defaults, attr, None) if defaults is not None else None
            if value != default and not (attr == "primary_key" and base is pw.AutoField):
                kw.append((attr, self._option(value, where)))
        if isinstance(field, pw.ForeignKeyField):
            for attr in ("on_delete", "on_update", "deferrable", "constraint_name"):
                value = getattr(field, attr, None)
                if attr == "constraint_name" and not value and field.deferred:
                    value = deferred_fk_name(field)  # as create_foreign_key() names it
                if value:
                    kw.append((attr, self._option(value, where)))
            kw.append(("backref", plain("+")))
        if field.constraints:
            kw.append(("constraints",
                       self.constraints([render(c, db) for c in field.constraints])))
        code = self.default(field)
        if code is not None:
            kw.append(("default", code))
        return kw

    def _option(self, value: Any, where: str) -> Value:
        """Return the literal of a field option (a number, a flag, a name)."""
        try:
            return plain(value)
        except Unwritable:
            raise Unwritable(
                f"{where}: the field option {value!r} cannot be written into a migration; "
                "give it a plain value (a number, True/False or a string)"
            ) from None

    def field(self, field: pw.Field) -> Call:
        """Return the code that builds an unbound copy of ``field``."""
        base = _base_class(field)
        code = Call(class_ref(base), (), tuple(self.field_kwargs(field)))
        derived = isinstance(field, pw.ForeignKeyField) or "_ArrayField__field" in vars(field)
        if not derived and field.field_type != base.field_type:
            code = Call(self.migrator("typed"), (code, plain(field.field_type)))
        return code

    # -- indexes and models -------------------------------------------------------

    def index_expression(self, expr: Any, model_var: str | None, db: pw.Database) -> Expr:
        """Return one index expression."""
        if isinstance(expr, pw.Field):
            return Attr(Name(model_var), expr.name) if model_var else plain(expr.name)
        if isinstance(expr, str):
            return pw_call("SQL", plain(expr))
        return self.sql(render(expr, db, values_scope=True))

    def index_options(self, index: Any, db: pw.Database) -> list[tuple[str, Expr]]:
        """Return the keyword arguments of a named index."""
        kw: list[tuple[str, Expr]] = [("name", plain(index._name))]
        if index._unique:
            kw.append(("unique", plain(True)))
        if index._where is not None:
            kw.append(("where", self.sql(render(index._where, db, values_scope=True))))
        if index._using:
            kw.append(("using", plain(index._using)))
        if index._nulls_distinct is not None:
            kw.append(("nulls_distinct", plain(index._nulls_distinct)))
        return kw

    def model(self, model: type[pw.Model], skip: Collection[str] = ()) -> ModelDef:
        """Return the statement that defines ``model`` and creates it with ``m.create_model``.

        Fields named in ``skip`` are left out (a foreign key to a table created later).
        """
        meta = model._meta
        db = database_of(model)
        name = _name(model.__name__, "model class", taken=_TAKEN)
        fields = tuple(
            (_name(field.name, f"field of {name}"), self.field(field))
            for field in meta.sorted_fields if field.name not in skip
        )
        opts: list[tuple[str, Expr]] = [("table_name", plain(meta.table_name))]
        if meta.schema:
            opts.append(("schema", plain(meta.schema)))
        if not meta.legacy_table_names:
            opts.append(("legacy_table_names", plain(False)))
        if meta.table_settings:  # after the column list of CREATE TABLE: WITH (...), ...
            settings = meta.table_settings
            opts.append(("table_settings", self.literal(
                [settings] if isinstance(settings, str) else list(settings),
                context=meta.table_name)))
        if meta.composite_key:
            composite: Any = meta.primary_key
            opts.append(("primary_key",
                         pw_call("CompositeKey", *(plain(n) for n in composite.field_names))))
        elif meta.primary_key is False:
            opts.append(("primary_key", plain(False)))
        tuples = [e for e in meta.indexes if isinstance(e, (list, tuple))]
        if tuples:
            rendered = []
            for parts, unique in tuples:
                items = tuple(
                    plain(p) if isinstance(p, str) else self.sql(render(p, db, values_scope=True))
                    for p in parts
                )
                rendered.append(Seq((Seq(items, is_tuple=True, trailing=True),
                                     plain(bool(unique))), is_tuple=True))
            opts.append(("indexes", Seq(tuple(rendered))))
        if meta.constraints:
            opts.append(("constraints",
                         self.constraints([render(c, db) for c in meta.constraints])))
        indexes: list[Expr] = []
        for entry in meta.indexes:
            if isinstance(entry, (list, tuple)):
                continue
            if isinstance(entry, pw.Index):
                entry = _untyped(entry)
                exprs = Seq(tuple(self.index_expression(e, name, db) for e in entry._expressions),
                            is_tuple=True, trailing=True)
                indexes.append(pw_call("ModelIndex", Name(name), exprs,
                                       kwargs=self.index_options(entry, db)))
            else:
                indexes.append(self.sql(render(entry, db)))
        return ModelDef(name, fields, tuple(opts), tuple(indexes))

    def call(
        self, method: str, *args: Any, kw: Sequence[tuple[str, Any]] = ()
    ) -> MethodCall:
        """Return ``m.method(*args, **kw)``; plain values are written as literals."""
        return MethodCall(
            method, tuple(arg(a) for a in args),
            tuple((_name(k, "field"), arg(v)) for k, v in kw),
        )
