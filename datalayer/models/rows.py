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
    steps: tuple[tuple[str, dict[Any, Any] | None, Callable[[Any], Any], type], ...] = tuple(
        (field.name, _enum_members(field), field.python_value, _driver_type(field))
        for field in fields
        if not _passthrough(field)
    )
    new = model.__new__

    def build(row: Sequence[Any]) -> M:
        # The row straight into the instance's data, then the few columns that need a
        # conversion fixed in place (a copy of the row as a list cost a fifth of the build).
        data = dict(zip(names, row, strict=True))
        for name, members, convert, plain in steps:
            value = data[name]
            if value is None:
                continue
            if members is not None:
                member = members.get(value)
                data[name] = member if member is not None else convert(value)
            elif type(value) is not plain:
                data[name] = convert(value)
        obj = new(model)
        obj.__dict__ = {"__data__": data, "_dirty": set(), "__rel__": {}}
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
