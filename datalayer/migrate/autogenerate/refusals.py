"""Changes the generator refuses, each with its cause and the way out.

Each is a change that one migration cannot make correctly on a table with rows, or
whose rollback could not run: the way out is two migrations (or a rename hint), each
of which is generated.  Checked going forward only (a rollback undoes what was allowed).
"""

from __future__ import annotations

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
        self, fm: type[pw.Model], tm: type[pw.Model], to_map: Mapping[str, type[pw.Model]],
        created: Sequence[type[pw.Model]],
    ) -> None:
        """Refuse to drop a table in the migration that drops a foreign key to it, column kept.

        The rollback would re-create that table empty and add the foreign key back, which
        fails while the column holds values: in two migrations each rollback works.  A
        foreign key moved to another table (an unhinted rename under ``--allow-drop``)
        fails the same way going forward (the column's values refer to rows of the table
        that goes): refused too, with the rename hint and the steps.
        """
        if not self.forward:
            return
        t = fm._meta.table_name
        for f in fm._meta.refs:
            target = f.rel_model._meta.table_name
            if target not in to_map and f.column_name in tm._meta.columns:
                moved = tm._meta.columns[f.column_name]
                if isinstance(moved, pw.ForeignKeyField):
                    self._refuse_fk_moved(t, f.column_name, target, moved.rel_model,
                                          created=moved.rel_model in created)
                raise UnsupportedChange(
                    f"{t}.{f.column_name} keeps its values but its foreign key to {target} "
                    f"goes with the table {target}: the rollback would re-create {target} "
                    f"empty and could not add the foreign key back while {t}.{f.column_name} "
                    f"holds values. Drop the foreign key first: keep the model of {target}, "
                    f"change {t}.{f.column_name} to a plain field (or drop it) and run diff; "
                    f"then remove the model of {target} and run diff --allow-drop"
                )

    def _refuse_fk_moved(
        self, t: str, col: str, target: str, new: type[pw.Model], *, created: bool
    ) -> None:
        """Refuse ``t.col``'s foreign key moved from ``target`` (which goes) to ``new``.

        Adding it fails while the column holds values (they refer to rows of
        ``target``), and so does the rollback's, to ``target`` re-created empty.
        ``created``: ``new`` is created by this migration (the hint: a rename).
        """
        name = new._meta.table_name
        hint = (f"If {target} was renamed to {name}, mark it: @renamed_from({_py_str(target)}) "
                f"above class {new.__name__} (rows and keys are carried over). Otherwise, in "
                "steps: " if created else "In steps: ")
        raise UnsupportedChange(
            f"the foreign key of {t}.{col} moves from {target}, which goes, to {name}"
            + (", which is created empty" if created else "")
            + f": adding it fails while {t}.{col} holds values (they refer to rows of "
            f"{target}), and so would the rollback's. {hint}change {t}.{col} to a plain field "
            f"and run diff; then remove the model of {target} and run diff --allow-drop; once "
            f"{t}.{col} holds keys of {name} (or NULL), make it a foreign key to {name} and "
            "run diff"
        )
