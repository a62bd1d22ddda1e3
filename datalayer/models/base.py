"""The abstract base of every model: validation before SQL, and ``updated_at``.

``updated_at`` moves on every update made through the package:

* ``instance.save()`` sets it to the current UTC time;
* ``Model.update(...)`` queries set it to the server's ``now()`` unless the
  query sets it itself;
* ``Model.bulk_update(...)`` sets it on every instance and writes it.

Values given to ``save``, ``create``, ``insert``, ``insert_many``, ``update``
and ``bulk_update`` are validated first (see :mod:`.validation`), so bad input
raises :class:`~datalayer.errors.ValidationError` and nothing is sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import peewee as pw

from .._redact import redacted_does_not_exist
from ..db import database
from ..errors import ValidationError
from .validation import validate_value

__all__ = ["BaseModel"]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _settable(cls: type[pw.Model], name: str) -> bool:
    """Return True when ``name`` is a data descriptor of ``cls`` (a property with a setter,
    a field's or a foreign key's ``_id`` accessor)."""
    if name.startswith("__"):
        return False
    for klass in cls.__mro__:
        attr = vars(klass).get(name)
        if attr is not None:
            return hasattr(type(attr), "__set__") and getattr(attr, "fset", True) is not None
    return False


def _not_a_field(cls: type[pw.Model], name: str) -> str:
    """Say that ``name`` is not a field of ``cls``, naming the field it was renamed to."""
    from ..migrate.autogenerate.hints import renamed_from_of  # the error's path only

    for field in cls._meta.sorted_fields:
        if renamed_from_of(field) == name and field.name != name:
            return (f"is not a field of {cls.__name__}: it was renamed to {field.name!r} "
                    f"(use {field.name}=...)")
    known = ", ".join(f.name for f in cls._meta.sorted_fields)
    return f"is not a field of {cls.__name__}; its fields are: {known}"


class BaseModel(pw.Model):
    """Abstract: no table.  Subclasses declare their fields explicitly."""

    # Read by the migration tooling and the ER diagram: this class is never a table.
    # (A Meta option would be inherited by every model.)
    __abstract__ = True

    class Meta:
        database = database
        legacy_table_names = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A row read from the database (``__no_default__``) may carry extra selected
        # columns (``fn.COUNT(...).alias("n")``); values given by a caller may not.
        if not kwargs.get("__no_default__"):
            type(self)._check_names(kwargs)
        super().__init__(*args, **kwargs)

    @classmethod
    def _check_names(cls, values: Mapping[str, Any]) -> None:
        """Raise :class:`ValidationError` for a name in ``values`` that sets nothing.

        peewee's ``Model(**kw)`` (and so ``create``) sets any name as a plain
        attribute: a misspelt field, or the old name of a renamed one, was
        silently dropped and the row written without it.  Accepted: the fields,
        the ``<fk>_id`` names of foreign keys, and attributes with a setter
        (properties, peewee's accessors).
        """
        fields = cls._meta.fields
        for name in values:
            if name in fields or _settable(cls, name):
                continue
            raise ValidationError(name, _not_a_field(cls, name))

    # -- validation -------------------------------------------------------

    @classmethod
    def _normalize_data(cls, data: Any, kwargs: Mapping[str, Any]) -> Any:
        combined = cls._meta.combined
        for key in [*kwargs, *(data if isinstance(data, Mapping) else ())]:
            if isinstance(key, str) and key not in combined:
                raise ValidationError(key, _not_a_field(cls, key))
        return super()._normalize_data(data, kwargs)  # type: ignore[misc]

    @classmethod
    def get_or_create(cls, **kwargs: Any) -> tuple[Any, bool]:
        """peewee's ``get_or_create``; an unknown name is a ValidationError, not AttributeError."""
        cls._check_names({k: v for k, v in kwargs.items() if k != "defaults"})
        defaults = kwargs.get("defaults")
        if isinstance(defaults, Mapping):
            cls._check_names(defaults)
        result: tuple[Any, bool] = super().get_or_create(**kwargs)  # type: ignore[no-untyped-call]
        return result

    @classmethod
    def _validated(cls, data: Mapping[Any, Any]) -> dict[Any, Any]:
        """Return ``data`` (keys: fields or names) with every plain value validated."""
        fields = cls._meta.fields
        out: dict[Any, Any] = {}
        for key, value in data.items():
            field = key if isinstance(key, pw.Field) else fields.get(key)
            if field is None:
                if isinstance(key, str):
                    raise ValidationError(key, _not_a_field(cls, key))
                out[key] = value
                continue
            out[key] = validate_value(field, value)
        return out

    def validate(self) -> None:
        """Validate and normalise every value set on this instance (no SQL)."""
        data = self.__data__
        for name, value in list(data.items()):
            field = self._meta.fields.get(name)
            if field is not None:
                if value is None and field.primary_key:
                    continue
                data[name] = validate_value(field, value)

    # -- writes -------------------------------------------------------------

    def save(self, force_insert: bool = False, only: Any = None) -> int | bool:
        """Validate, move ``updated_at`` on updates, then save."""
        updating = self._pk is not None and not force_insert  # type: ignore[attr-defined]
        if updating and "updated_at" in self._meta.fields:
            self.updated_at = _utcnow()
            if only is not None:
                only = [*only, self._meta.fields["updated_at"]]
        self.validate()
        result: int | bool = super().save(force_insert=force_insert, only=only)
        return result

    @classmethod
    def insert(cls, __data: Any = None, **insert: Any) -> pw.ModelInsert:
        data = cls._validated(cls._normalize_data(__data, insert))
        return super().insert(data)

    @classmethod
    def insert_many(cls, rows: Iterable[Any], fields: Sequence[Any] | None = None) -> Any:
        checked: list[Any] = []
        for row in rows:
            if isinstance(row, Mapping):
                checked.append(cls._validated(row))
            elif fields is not None:
                values = [
                    validate_value(f if isinstance(f, pw.Field) else cls._meta.fields[f], v)
                    for f, v in zip(fields, row, strict=True)
                ]
                checked.append(tuple(values))
            elif isinstance(row, BaseModel):
                row.validate()
                checked.append(row.__data__)
            else:
                checked.append(row)
        return super().insert_many(checked, fields)

    @classmethod
    def update(cls, __data: Any = None, **update: Any) -> pw.ModelUpdate:
        data = cls._validated(cls._normalize_data(__data, update))
        stamp = cls._meta.fields.get("updated_at")
        if stamp is not None and stamp not in data and "updated_at" not in data:
            data[stamp] = pw.fn.now()
        return super().update(data)

    @classmethod
    def bulk_update(
        cls, model_list: Iterable[Any], fields: Sequence[Any], batch_size: int | None = None
    ) -> int:
        models = list(model_list)
        names = [f if isinstance(f, str) else f.name for f in fields]
        if "updated_at" in cls._meta.fields and "updated_at" not in names:
            names.append("updated_at")
            now = _utcnow()
            for model in models:
                model.updated_at = now
        for model in models:
            for name in names:
                field = cls._meta.fields.get(name)
                if field is None:
                    raise ValidationError(name, _not_a_field(cls, name))
                model.__data__[name] = validate_value(field, model.__data__.get(name))
        # peewee writes SET col = CASE pk WHEN ... THEN %s ...: PostgreSQL types that CASE
        # from its parameters, which psycopg2 sends as text for UUIDs (and NULL): a uuid or
        # timestamptz column then refuses it.  Each value is cast to the column's type, for
        # the call only.
        saved = [(m, n, m.__data__.get(n)) for m in models for n in names]
        for model, name, value in saved:
            if not isinstance(value, pw.Node):
                field = cls._meta.fields[name]
                model.__data__[name] = pw.Cast(field.to_value(value), field.field_type)
        try:
            result: int = super().bulk_update(  # type: ignore[no-untyped-call]
                models, names, batch_size=batch_size
            )
        finally:
            for model, name, value in saved:
                model.__data__[name] = value
        return result

    @classmethod
    def validate_model(cls) -> None:
        """Give the model a ``DoesNotExist`` whose message leaves out the query's parameters."""
        super().validate_model()
        cls.DoesNotExist = redacted_does_not_exist(cls.DoesNotExist)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._pk}>"  # type: ignore[attr-defined]

    __str__ = __repr__
