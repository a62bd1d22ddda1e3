"""``Meta.indexes`` entries: added (plainly or concurrently) from the model's own index objects.

Which entries go, come or are renamed is :func:`..ddl.indexes.index_changes`'s finding;
a field's index changes with its field (:mod:`.columns`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import peewee as pw

from ...errors import GenerationError
from ..ddl.spec import TableSpec, index_entries, render
from .code import MethodCall
from .emitter import _ONLINE, _ONLINE_KW, Emitter, _render_db


class Indexes(Emitter):
    """Adds ``Meta.indexes`` entries."""

    def _add_index(
        self, table: str, tm: type[pw.Model], entry: Any, *, online: bool = False
    ) -> MethodCall:
        """Return the step that adds the ``Meta.indexes`` entry ``entry`` of ``tm``."""
        w = self.writer
        db = _render_db(tm)
        if not isinstance(entry, pw.Index):
            raise GenerationError(
                "cannot generate this migration",
                [f"{table}: an index given as raw SQL in Meta.indexes ({render(entry, db).text!r}) "
                 "can only be created with its table; use Model.index(...) or "
                 "ModelIndex(..., name=...) instead"],
            )
        index: Any = entry
        args = [w.index_expression(e, None, db) for e in index._expressions]
        kw: list[tuple[str, Any]] = [*w.index_options(index, db)[1:]]
        if online or self.mode == _ONLINE:
            kw.append(_ONLINE_KW)
        return w.call("add_named_index", table, index._name, *args, kw=kw)


def _meta_indexes(spec: TableSpec) -> TableSpec:
    """Return ``spec`` with only the indexes of its ``Meta.indexes`` entries."""
    return dataclasses.replace(
        spec, indexes=tuple(i for i in spec.indexes if i.origin.startswith("meta:")))


def _meta_index_entries(model: type[pw.Model]) -> list[tuple[str, Any]]:
    """Return ``(origin, entry)`` for each ``Meta.indexes`` entry (tuples built into indexes)."""
    out = []
    for origin, index in index_entries(model):
        if origin.startswith("meta:"):
            entry = model._meta.indexes[int(origin.split(":", 1)[1])]
            out.append((origin, index if isinstance(entry, (list, tuple)) else entry))
    return out

