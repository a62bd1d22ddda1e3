"""Changes the generator refuses, each with its cause and the way out, and one it guards.

Each refusal is a change that one migration cannot make correctly on a table with rows,
or whose rollback could not run: the way out is two migrations (or a rename hint), each
of which is generated.  Checked going forward only (a rollback undoes what was allowed).
A foreign key moved off a table that goes works only while its column holds no values:
it is written with a check first (:meth:`Refusals._guard_moved_fks`), both ways.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import peewee as pw

from ..ddl.spec import UnsupportedChange
from .emitter import Emitter
from .names import _py_str


def _unique_columns(model: type[pw.Model]) -> set[str]:
    """The columns of ``model`` unique on their own (the key, ``unique=True``)."""
    return {f.column_name for f in model._meta.sorted_fields if f.unique or f.primary_key}


class Refusals(Emitter):
    """The refusals, checked on the state before the changes."""

    def _refuse_fk_to_new_unique(self, to_models: Sequence[type[pw.Model]]) -> None:
        """Refuse a new foreign key to a column that this same migration makes unique.

        PostgreSQL needs the unique index before a foreign key can refer to the column
        (even NOT VALID), and both the safe split (the index is built concurrently after
        the transactional part) and the order of the tables can put it after.
        """
        if not self.forward:
            return
        state = self.state()
        for tm in to_models:
            t = tm._meta.table_name
            for f in tm._meta.refs:
                rt, col = f.rel_model._meta.table_name, f.rel_field.column_name
                if rt not in state or f.rel_field.primary_key or col not in _unique_columns(
                    f.rel_model) or col in _unique_columns(state[rt]):
                    continue
                old = state[t]._meta.columns.get(f.column_name) if t in state else None
                if isinstance(old, pw.ForeignKeyField) and (
                    old.rel_model._meta.table_name, old.rel_field.column_name) == (rt, col):
                    continue
                raise UnsupportedChange(
                    f"the foreign key of {t}.{f.column_name} refers to {rt}.{col}, which this "
                    f"migration makes unique: PostgreSQL needs that unique index before a "
                    f"foreign key can refer to it. Make {rt}.{col} unique first (run diff "
                    f"without the foreign key), then add the foreign key in the next diff"
                )

    def _refuse_dropped_referenced_columns(self, to_map: Mapping[str, type[pw.Model]]) -> None:
        """Refuse to drop a column that a foreign key still refers to.

        Its unique index goes first (concurrently, in a file before the transactional
        part), which PostgreSQL refuses while the foreign key depends on it; and the
        rollback could not add the foreign key back to the re-added, empty column.
        """
        if not self.forward:
            return
        state = self.state()
        for t, m in state.items():
            for f in m._meta.refs:
                rt, col = f.rel_model._meta.table_name, f.rel_field.column_name
                if rt not in to_map or col in to_map[rt]._meta.columns:
                    continue
                raise UnsupportedChange(
                    f"{rt}.{col} goes while the foreign key of {t}.{f.column_name} refers to "
                    f"it: PostgreSQL cannot drop its unique index before that foreign key, "
                    f"and the rollback could not add the foreign key back to a re-added, "
                    f"empty column. Remove the foreign key first (the field, or make it a "
                    f"plain field) and run diff; then drop {rt}.{col} in the next diff"
                )

    def _refuse_key_moved_over_a_dropped_key(self, to_map: Mapping[str, type[pw.Model]]) -> None:
        """Refuse an existing column made the key in the migration that drops the old key.

        In two migrations each step is generated: the old key dropped (a table without
        a key, ``primary_key = False``), then the column made the key.
        """
        if not self.forward:
            return
        state = self.state()
        for t, tm in to_map.items():
            fm = state.get(t)
            new, old = tm._meta.primary_key, fm._meta.primary_key if fm else None
            if (fm is None or not new or not old or tm._meta.composite_key
                    or fm._meta.composite_key or new.column_name == old.column_name):
                continue
            if new.column_name in fm._meta.columns and old.column_name not in tm._meta.columns:
                raise UnsupportedChange(
                    f"{t}.{new.column_name} becomes the primary key in the migration that "
                    f"drops the key {t}.{old.column_name}: make it two migrations: first drop "
                    f"{old.column_name} (Meta.primary_key = False on the model) and run diff "
                    f"--allow-drop; then make {new.column_name} the key and run diff"
                )

    def _refuse_unreferenced_rollback(
        self, fm: type[pw.Model], tm: type[pw.Model], to_map: Mapping[str, type[pw.Model]]
    ) -> None:
        """Refuse to drop a table in the migration that drops a foreign key to it, column kept.

        The rollback would re-create that table empty and add the foreign key back, which
        fails while the column holds values: in two migrations each rollback works.  A
        foreign key moved to another table (an unhinted rename under ``--allow-drop``)
        is written, guarded (:meth:`_guard_moved_fks`).
        """
        if not self.forward:
            return
        t = fm._meta.table_name
        for f in fm._meta.refs:
            target = f.rel_model._meta.table_name
            if target not in to_map and f.column_name in tm._meta.columns:
                if isinstance(tm._meta.columns[f.column_name], pw.ForeignKeyField):
                    continue  # moved to another table: guarded (_guard_moved_fks)
                raise UnsupportedChange(
                    f"{t}.{f.column_name} keeps its values but its foreign key to {target} "
                    f"goes with the table {target}: the rollback would re-create {target} "
                    f"empty and could not add the foreign key back while {t}.{f.column_name} "
                    f"holds values. Drop the foreign key first: keep the model of {target}, "
                    f"change {t}.{f.column_name} to a plain field (or drop it) and run diff; "
                    f"then remove the model of {target} and run diff --allow-drop"
                )

    def _moved_fks(
        self, to_map: Mapping[str, type[pw.Model]], table_renames: Mapping[str, str]
    ) -> list[tuple[str, str, str, type[pw.Model]]]:
        """Return each foreign key that moves off a table that goes, to another table.

        As (table, column, the table it refers to, the model it will refer to), by the
        names of the state (before renames): an unhinted rename under ``--allow-drop``.
        """
        state = self.state()
        out = []
        for t, fm in state.items():
            tm = to_map.get(table_renames.get(t, t))
            if tm is None:
                continue
            for f in fm._meta.refs:
                target = f.rel_model._meta.table_name
                if target in to_map or target in table_renames:
                    continue
                moved = tm._meta.columns.get(f.column_name)
                if isinstance(moved, pw.ForeignKeyField):
                    out.append((t, f.column_name, target, moved.rel_model))
        return out

    def _guard_moved_fks(
        self, moved: Sequence[tuple[str, str, str, type[pw.Model]]], start: int
    ) -> None:
        """Stop the migration (or its rollback) first while a moved foreign key has values.

        The column's values refer to rows of the table that goes, and the table the key
        moves to comes empty: adding the key would fail (in the safe form after the
        transactional part committed).  A check at the start (:meth:`.migrator.
        DatalayerMigrator.require_empty` on the column) stops it while nothing changed;
        ``start``: where the plan's first operation is (the checks go before it, in its
        file).  Going forward the warning says so and names the ways out.
        """
        w = self.writer
        state = self.state()
        first = len(self.ops)
        for t, col, target, new in moved:
            name = new._meta.table_name
            created = name not in state
            if self.forward:
                self._warn_fk_moved(t, col, target, new, created=created)
            if created:
                reason = (f"this {'migration' if self.forward else 'rollback'} moves the "
                          f"foreign key of {t}.{col} from {target}, which goes, to {name}, "
                          "created empty")
                self.emit(w.call("require_empty", t, reason, kw=[("column", col)]), table=t)
        checks = self.ops[first:]
        if checks and first > start:  # after what came first (pre_drops): before it, in its file
            del self.ops[first:]
            phase = self.ops[start].phase
            self.ops[start:start] = [dataclasses.replace(c, phase=phase) for c in checks]

    def _warn_fk_moved(
        self, t: str, col: str, target: str, new: type[pw.Model], *, created: bool
    ) -> None:
        """Say what ``t.col``'s foreign key moved from ``target`` (which goes) to ``new`` needs.

        Adding it fails while the column holds values it does not have (when ``new``
        comes with this migration, ``created``, any value: the migration stops first, see
        :meth:`_guard_moved_fks`, and the hint is a rename), and so does the rollback's,
        to ``target`` re-created empty.
        """
        name = new._meta.table_name
        back = (f"its rollback, which re-creates {target} empty and adds the foreign key back, "
                f"stops first while {t}.{col} holds values")
        if not created:
            self.warn(
                f"moves the foreign key of {t}.{col} from {target}, which goes, to {name}: "
                f"applying fails while {t}.{col} holds values that {name} does not have, and "
                f"{back}; set {t}.{col} to keys of {name} or NULL before applying, and to "
                "NULL before rolling back"
            )
            return
        self.warn(
            f"moves the foreign key of {t}.{col} from {target}, which goes, to {name}, "
            f"created empty: while {t}.{col} holds values (they refer to rows of {target}) "
            f"the migration stops first, nothing changed, and {back}; if {target} was renamed "
            f"to {name}, mark it instead: @renamed_from({_py_str(target)}) above class "
            f"{new.__name__} (rows and keys are carried over); otherwise set {t}.{col} to "
            "NULL before applying and before rolling back"
        )
