"""Rename hints: tell the migration generator that a column or table was renamed.

Without a hint, a field whose column name changed looks like one column
dropped and another added, and the data of the old one would be lost.  With
one, the generated migration renames the column (or table) in place, keeps
its data, indexes and constraints, and its rollback renames it back::

    class User(BaseModel):
        full_name = renamed_from(pw.CharField(max_length=100), "name")

    @renamed_from("people")
    class Person(BaseModel):
        ...

The hint names the old *column* (or table) name as it is in the database.
It is only read while the old name still exists in the migration history, so
it may stay in the model after the migration is written.  This module imports
nothing from the rest of the package, so models can use it freely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

__all__ = ["HINT_ATTRIBUTE", "renamed_from", "renamed_from_of"]

HINT_ATTRIBUTE = "__datalayer_renamed_from__"
"""Attribute that holds the old name on a field or in a model class's own namespace."""

T = TypeVar("T")


@overload
def renamed_from(target: str) -> Callable[[T], T]: ...


@overload
def renamed_from(target: T, old_name: str) -> T: ...


def renamed_from(target: Any, old_name: str | None = None) -> Any:
    """Mark a field or a model as renamed from ``old_name``; return it unchanged.

    ``renamed_from(field, "old_column")`` for a field, and either
    ``renamed_from(Model, "old_table")`` or the decorator form
    ``@renamed_from("old_table")`` for a model.

    :raises TypeError: when ``old_name`` is missing or not a non-empty string.
    """
    if isinstance(target, str) and old_name is None:
        old = target

        def decorate(obj: T) -> T:
            result: T = renamed_from(obj, old)
            return result

        return decorate
    if not isinstance(old_name, str) or not old_name:
        raise TypeError(
            "renamed_from needs the old column or table name as a non-empty string, e.g. "
            "renamed_from(pw.CharField(), 'old_name')"
        )
    setattr(target, HINT_ATTRIBUTE, old_name)
    return target


def renamed_from_of(obj: Any) -> str | None:
    """Return the old name recorded on a field, or on a model class itself (not inherited)."""
    if isinstance(obj, type):
        value = vars(obj).get(HINT_ATTRIBUTE)
    else:
        value = getattr(obj, HINT_ATTRIBUTE, None)
    return value if isinstance(value, str) else None
