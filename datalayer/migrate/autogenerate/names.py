"""Renames: the ones the models declare (:func:`.hints.renamed_from`), and the hints for the others.

A table or column that goes while one of the same shape comes looks renamed: the
refusal to drop it names the decorator or call that says so (:class:`.outcome.Drop`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import peewee as pw

from ..ddl.spec import TableSpec, constraint_name
from .hints import renamed_from_of


def _renames(
    state: Mapping[str, type[pw.Model]], targets: Sequence[type[pw.Model]]
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Return (table renames old -> new, column renames per new table name: old -> new)."""
    target_tables = {m._meta.table_name for m in targets}
    tables: dict[str, str] = {}
    for model in targets:
        new = model._meta.table_name
        old = renamed_from_of(model)
        if old and old != new and old in state and new not in state and old not in target_tables:
            tables[old] = new
    columns: dict[str, dict[str, str]] = {}
    reverse = {new: old for old, new in tables.items()}
    for model in targets:
        t: str = model._meta.table_name
        source = state.get(reverse.get(t, t))
        if source is None:
            continue
        scols = {f.column_name: f for f in source._meta.sorted_fields}
        tcols = {f.column_name for f in model._meta.sorted_fields}
        found: dict[str, str] = {}
        for field in model._meta.sorted_fields:
            old = renamed_from_of(field)
            if old and old not in scols and old in source._meta.fields:
                old = source._meta.fields[old].column_name
            if field.column_name in scols:
                # The hint names another column that goes: it takes this column's name,
                # and the column of that name goes (expand/contract's last step).
                if old and old in scols and old not in tcols and old not in found:
                    found[old] = field.column_name
                continue
            if not old:
                same = source._meta.fields.get(field.name)
                old = same.column_name if same is not None else None
            if old and old in scols and old not in tcols and old not in found:
                found[old] = field.column_name
        if found:
            columns[t] = found
    return tables, columns


def _table_shape(spec: TableSpec) -> list[tuple[str, bool, bool]]:
    """Return the column types and nullability of a table, names aside (to spot renames)."""
    return sorted((c.type.text, c.null, c.primary_key) for c in spec.columns)


def _object_names(spec: TableSpec) -> set[str]:
    """Return the names of the indexes and named constraints of a table (one namespace)."""
    names = {ix.name for ix in spec.indexes}
    names.update(n for n in map(constraint_name, spec.constraints) if n)
    return names


def _through_hint(through: type[pw.Model], old: str) -> str | None:
    """The rename hint of a many-to-many through model peewee made (no class to decorate).

    peewee names its table after both sides, so renaming one side renames it too.
    """
    for fk in through._meta.refs:
        side = fk.rel_model
        for m2m in side._meta.manytomany.values():
            if m2m.through_model is through:
                return (f"renamed_from({side.__name__}.{m2m.name}.get_through_model(), "
                        f"{_py_str(old)}) where the models are listed (peewee names the "
                        "through table after both sides)")
    return None


def _py_str(text: str) -> str:
    """Return ``text`` as a Python string literal, in double quotes when possible."""
    return f'"{text}"' if '"' not in text and "\\" not in text else repr(text)


def _field_class(field: pw.Field) -> str:
    """Return how a model module usually names ``field``'s class (``pw.CharField``)."""
    cls = type(field)
    prefix = {"peewee": "pw.", "playhouse.postgres_ext": "pw_pext."}.get(cls.__module__, "")
    return prefix + cls.__name__

