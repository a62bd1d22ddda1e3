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
    instance with no dirty fields) with the per-field decisions taken once,
    here, instead of per row: the conversion is skipped where psycopg2 already
    returned the type peewee would make.  No code is generated or run.
    """
    names = tuple(f.name for f in fields)
    steps: tuple[tuple[int, dict[Any, Any] | None, Callable[[Any], Any], type], ...] = tuple(
        (i, _enum_members(field), field.python_value, _driver_type(field))
        for i, field in enumerate(fields)
        if not _passthrough(field)
    )
    new = model.__new__

    def build(row: Sequence[Any]) -> M:
        values = list(row)
        for i, members, convert, plain in steps:
            value = values[i]
            if value is None:
                continue
            if members is not None:
                member = members.get(value)
                values[i] = member if member is not None else convert(value)
            elif type(value) is not plain:
                values[i] = convert(value)
        obj = new(model)
        obj.__dict__ = {"__data__": dict(zip(names, values, strict=True)),
                        "_dirty": set(), "__rel__": {}}
        return obj

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
