"""Whole tables: how a table of the state differs from its model, and the tables that go.

A table that goes is dropped after the others stop referring to it, unless it stands
in the way of what comes (:meth:`Tables._in_the_way`); each drop is recorded with the
new table it may have been renamed to.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import peewee as pw

from ..ddl.spec import TableSpec, column_spec, table_spec
from .casts import _needs_using
from .emitter import Emitter, _columns, _render_db
from .names import _object_names, _py_str, _table_shape, _through_hint
from .outcome import Drop


def _table_key(spec: TableSpec) -> tuple[Any, ...]:
    """Return what makes a table: column order aside, CHECKs pooled wherever declared."""
    columns = sorted(
        (dataclasses.replace(c, checks=()) for c in spec.columns), key=lambda c: c.name
    )
    checks = Counter(spec.checks + tuple(c for col in spec.columns for c in col.checks))
    return (
        spec.name,
        spec.schema or "public",
        columns,
        spec.primary_key,
        checks,
        Counter(spec.constraints),
        sorted(spec.indexes, key=lambda i: i.name),
        spec.settings,
    )


def _explain(a: TableSpec, b: TableSpec) -> list[str]:
    """Return short lines saying how table spec ``a`` (state) differs from ``b`` (models)."""
    out: list[str] = []
    if a.schema != b.schema:
        out.append(f"{b.name}: in schema {a.schema or 'public'} in the state, "
                   f"{b.schema or 'public'} in the models")
    ac, bc = _columns(a), _columns(b)
    for name in sorted(set(ac) | set(bc)):
        x, y = ac.get(name), bc.get(name)
        if x != y:
            out.append(f"{b.name}.{name}: state {x and x.ddl.text!r}, models {y and y.ddl.text!r}")
    ai = {i.name: i.definition.text for i in a.indexes}
    bi = {i.name: i.definition.text for i in b.indexes}
    if ai != bi:
        out.append(f"{b.name}: indexes {sorted(ai)} vs {sorted(bi)}")
    if Counter(a.constraints) != Counter(b.constraints):
        out.append(f"{b.name}: constraints differ")
    if a.settings != b.settings:
        out.append(f"{b.name}: Meta.table_settings {list(a.settings)!r} in the state, "
                   f"{list(b.settings)!r} in the models")
    return out or [f"{b.name}: table definitions differ"]


class Tables(Emitter):
    """Orders and drops the tables that go."""

    def _in_the_way(
        self, to_map: Mapping[str, type[pw.Model]], created: Sequence[type[pw.Model]]
    ) -> list[type[pw.Model]]:
        """Return the tables that go and must go before the others change or come.

        A table that goes is dropped last (the tables that stay stop referring to
        it first), unless it holds an index or constraint name that a new table
        takes (the names are one namespace per schema), or refers to a key whose
        values are renumbered (a type without a cast; its rollback too).  Only
        those that no table staying (or going later) refers to.
        """
        state = self.state()
        taken: set[tuple[str, str]] = set()
        for new in created:
            spec = table_spec(new)
            taken.update((spec.schema or "public", n) for n in _object_names(spec))
        renumbered: set[str] = set()
        for t, tm in to_map.items():
            key = tm._meta.primary_key
            if t not in state or not key or tm._meta.composite_key:
                continue
            # By column: after a change of its type, _meta.primary_key is the old field.
            source = state[t]._meta.columns.get(key.column_name)
            if source is not None and source.primary_key:
                old = column_spec(source, _render_db(tm)).type
                new_type = column_spec(key, _render_db(tm)).type
                if old != new_type and _needs_using(old, new_type):
                    renumbered.add(t)
        early = []
        for model in state.values():
            if model._meta.table_name in to_map:
                continue
            spec = table_spec(model)
            names = {(spec.schema or "public", n) for n in _object_names(spec)}
            refers = any(f.rel_model._meta.table_name in renumbered for f in model._meta.refs)
            if names & taken or refers:
                early.append(model)
        while True:  # keep those that nothing left in place refers to
            kept = [m for m in early if not any(
                f.rel_model is m for other in state.values() if other is not m
                and other not in early for f in other._meta.refs)]
            if len(kept) == len(early):
                return kept
            early = kept

    def _drop_tables(
        self, models: Sequence[type[pw.Model]], created: Sequence[type[pw.Model]]
    ) -> None:
        """Drop the tables of ``models`` (in this order), recording each drop."""
        w = self.writer
        doomed = list(models)
        for i, model in enumerate(doomed):
            t = model._meta.table_name
            self.warn(
                f"drops table {t}: its rows will be lost; if it was renamed, decorate the "
                f"new model with @renamed_from({t!r})"
            )
            self._drop_table(model, created)
            # In a cycle of foreign keys, a table dropped later may still refer to this one:
            # CASCADE drops those constraints (only them: that table goes next).
            cycle = any(f.rel_model is model for other in doomed[i + 1:]
                        for f in other._meta.refs if other is not model)
            self.emit(w.call("remove_model", t, kw=[("cascade", True)] if cycle else []), table=t)

    def _drop_table(self, model: type[pw.Model], created: Sequence[type[pw.Model]]) -> None:
        """Record the drop of ``model``'s table, paired with a same-shaped new table if any."""
        t = model._meta.table_name
        shape = _table_shape(table_spec(model))
        taken = {d.renamed_to for d in self.drops if d.column is None}
        for new in created:
            name = new._meta.table_name
            if name not in taken and _table_shape(table_spec(new)) == shape:
                hint = _through_hint(new, t) or (
                    f"@renamed_from({_py_str(t)}) above class {new.__name__}")
                self.drops.append(Drop(t, None, name, hint))
                return
        self.drops.append(Drop(t))
