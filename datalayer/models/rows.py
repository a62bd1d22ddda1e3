"""Rows into model instances, fast: :func:`row_builder`.

The statement layer (:mod:`datalayer._sql`) returns rows; turning a row into
a model instance is the models' business, so it lives here, beside the field
types it has to know (:class:`~datalayer.models.fields.EnumField`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import peewee as pw

from .fields import EnumField

M = TypeVar("M", bound=pw.Model)

__all__ = ["row_builder"]


def row_builder(model: type[M], fields: Sequence[pw.Field]) -> Callable[[Sequence[Any]], M]:
    """Return a function turning a row of ``fields`` into a ``model`` instance.

    Does what peewee's cursor wrapper does (``python_value`` per column, an
    instance with no dirty fields) in a function generated for these fields,
    as ``dataclasses`` does for ``__init__``: a row becomes an instance in
    well under a microsecond, against several for a generic loop.  The call
    is skipped where psycopg2 already returned the type peewee would make.
    """
    names = [f.name for f in fields]
    if any(not n.isidentifier() for n in names):
        raise ValueError(f"unexpected field names in {names!r}")
    env: dict[str, Any] = {"new": model.__new__, "model": model}
    values = [f"v{i}" for i in range(len(fields))]
    body = [f"    {', '.join(values)}, = row"]
    for i, field in enumerate(fields):
        if _passthrough(field):
            continue
        env[f"c{i}"] = field.python_value
        members = _enum_members(field)
        if members is not None:
            env[f"m{i}"] = members
            body.append(f"    if v{i} is not None:")
            body.append(f"        m = m{i}.get(v{i})")
            body.append(f"        v{i} = m if m is not None else c{i}(v{i})")
        else:
            env[f"t{i}"] = _driver_type(field)
            body.append(f"    if v{i} is not None and type(v{i}) is not t{i}:")
            body.append(f"        v{i} = c{i}(v{i})")
    data = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names))
    body.append("    obj = new(model)")
    body.append(f'    obj.__dict__ = {{"__data__": {{{data}}}, "_dirty": set(), "__rel__": {{}}}}')
    body.append("    return obj")
    source = "def build(row):\n" + "\n".join(body) + "\n"
    exec(compile(source, f"<row_builder {model.__name__}>", "exec"), env)
    build: Callable[[Sequence[Any]], M] = env["build"]
    return build


def _enum_members(field: pw.Field) -> dict[Any, Any] | None:
    """Return value -> member for an enum field whose python_value is the stock one."""
    enum_cls = getattr(field, "enum_cls", None)
    if enum_cls is None or type(field).python_value is not EnumField.python_value:
        return None
    return {m.value: m for m in enum_cls}


_IDENTITY_PYTHON_VALUE = (
    pw.CharField.python_value,
    pw.TextField.python_value,
    pw.BooleanField.python_value,
    pw.DateTimeField.python_value,
)


_PASSTHROUGH_FIELDS = (pw.CharField, pw.TextField, pw.BooleanField, pw.DateTimeField)


def _passthrough(field: pw.Field) -> bool:
    """Return True when psycopg2 already returns what the field's python_value would."""
    return isinstance(field, _PASSTHROUGH_FIELDS) and (
        type(field).python_value in _IDENTITY_PYTHON_VALUE
    )


def _driver_type(field: pw.Field) -> type:
    """Return the type that needs no conversion for ``field`` (``NoneType``: always convert)."""
    target = field.rel_field if isinstance(field, pw.ForeignKeyField) else field
    if isinstance(target, pw.UUIDField):
        return uuid.UUID  # peewee registers psycopg2's UUID adapter
    return type(None)
