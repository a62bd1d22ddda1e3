"""Generate a migration from the models: the "diff" half of ``datalayer migrate``.

The migration history on disk is replayed in memory (peewee-migrate's fake
mode, :func:`.api._replay`) to know the schema it builds; that state is compared with the models,
table by table and column by column, as the DDL ``create_tables()`` would
run (:mod:`..ddl.spec`).  Each difference becomes one call of
:class:`~..operations.migrator.DatalayerMigrator` (a :mod:`.code` value), made
at once on the in-memory state so the next comparison sees it; the call
builds one :mod:`..operations` value, which carries the call
(``Operation.call``).  Those operations are the :class:`~.plan.Plan`: the
file text is rendered from their calls (:mod:`.render`), the statements, the
locks and the transactional split from the operations' facts (:mod:`.split`).
When all are planned the state must equal the models exactly, and each file's
rollback, planned the same way in the other direction, must restore the
state before it exactly; otherwise :class:`GenerationError` says what does
not match and nothing is written.

Changes to existing tables are planned in two phases unless ``unsafe``:
phase one, in a transaction, adds columns (nullable where a fill must come
first) and constraints ``NOT VALID``; phase two, in a file with ``atomic =
False``, builds and drops indexes concurrently, fills NULLs in batches,
validates, sets NOT NULL and adds UNIQUE constraints through their index.

Interface: :func:`plan_models` and :func:`diff_models` ``(sim, original,
models=None, *, postgres, unsafe, replay) -> Plan / Diff``, from a replayed
state; :mod:`.api` replays a router's history and calls them
(``create_migration``, ``compute_diff``, ``diff_source``).  ``models``
defaults to the project's models; abstract models (``__abstract__ = True``
in the class itself) are never tables.  Renames are declared with
:func:`datalayer.migrate.autogenerate.hints.renamed_from`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import peewee as pw

from ...errors import GenerationError
from ...project import DEFAULT_POSTGRES, MIN_POSTGRES
from ..ddl.alter import auto_base, is_volatile, rewrites_type, serial_base, serial_sequence
from ..ddl.indexes import index_changes
from ..ddl.spec import (
    ColumnSpec,
    Sql,
    TableSpec,
    UnsupportedChange,
    column_spec,
    constraint_name,
    database_of,
    index_entries,
    quote,
    rename_identifier,
    render,
    shadowed_indexes,
    sort_models,
    table_spec,
)
from ..ddl.tables import settings_parameters
from ..facts import parse_type
from ..operations.migrator import DatalayerMigrator
from .code import Dict, Expr, MethodCall, Step
from .hints import renamed_from_of
from .outcome import (
    Diff,
    Drop,
)
from .plan import Plan, PlannedMigration
from .render import diff_of as _diff_of
from .split import Chunk as _Chunk
from .split import apply_step as _apply
from .split import atomic as _atomic
from .split import groups as _groups
from .split import replay_calls as _replay_calls
from .writer import CodeWriter, Unwritable, constraint_keyword, plain

__all__ = ["diff_models", "plan_models"]

_ONLINE_KW: tuple[str, Any] = ("online", True)
_NOT_VALID = frozenset({"add_check_not_valid", "add_foreign_key_not_valid"})


# -- models and history ----------------------------------------------------------


def _default_models() -> list[type[pw.Model]]:
    from ...project import default_models

    return default_models()  # the project's: [tool.datalayer] models, else datalayer's


def _targets(models: Iterable[Any] | None) -> list[type[pw.Model]]:
    """Return the concrete models, once each, in dependency order."""
    found: list[type[pw.Model]] = []
    for model in _default_models() if models is None else models:
        if not (isinstance(model, type) and issubclass(model, pw.Model)):
            raise GenerationError(f"{model!r} is not a peewee model class")
        if vars(model).get("__abstract__") or model in found:
            continue
        found.append(model)
    for model in found:
        for field in model._meta.refs:
            rel = field.rel_model
            if rel is not model and rel not in found and not vars(rel).get("__abstract__"):
                raise GenerationError(
                    f"{model.__name__}.{field.name} refers to {rel.__name__} (table "
                    f"{rel._meta.table_name}), which is not among the models given; "
                    "pass it as well"
                )
    shadowed = [line for model in found for line in shadowed_indexes(model)]
    if shadowed:
        raise GenerationError("cannot generate this migration", shadowed)
    by_table: dict[str, type[pw.Model]] = {}
    for model in found:
        other = by_table.setdefault(model._meta.table_name, model)
        if other is not model:
            raise GenerationError(
                f"models {other.__module__}.{other.__name__} and {model.__module__}."
                f"{model.__name__} both use table {model._meta.table_name!r}; give one "
                "another Meta.table_name or mark a base class __abstract__ = True"
            )
    return sort_models(found)


# -- comparing ---------------------------------------------------------------------


def _state(migrator: DatalayerMigrator) -> dict[str, type[pw.Model]]:
    """Return the tables of the in-memory state by name.

    By table, not by class: peewee-migrate's ``orm`` iterates over models keyed by class
    name, so a new model named like an old one (``Person`` on a renamed table) hides it.
    """
    return dict(migrator.orm.__tables__)


def _columns(spec: TableSpec) -> dict[str, ColumnSpec]:
    return {c.name: c for c in spec.columns}


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


def _needs_using(old: Sql, new: Sql) -> bool:
    """Return True when PostgreSQL has no assignment cast from ``old`` to ``new``."""

    def base(t: str) -> str:
        auto = auto_base(t)  # serial and identity types: their integer type
        if auto:
            return auto
        t = _bare_type(t.upper()).strip()
        aliases = {
            "INT": "INTEGER", "INT4": "INTEGER", "SERIAL": "INTEGER", "BIGSERIAL": "BIGINT",
            "INT8": "BIGINT", "INT2": "SMALLINT", "BOOL": "BOOLEAN", "DECIMAL": "NUMERIC",
            "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE", "FLOAT": "DOUBLE PRECISION",
            "CHARACTER VARYING": "VARCHAR",
        }
        return aliases.get(t, t)

    if old.text.endswith("[]") != new.text.endswith("[]"):
        return True  # to or from an array: no assignment cast either way
    a, b = base(old.text), base(new.text)
    if a == b or b in ("TEXT", "VARCHAR", "CHAR"):
        return False  # same type, or any type to text: assignment casts exist
    numeric = {"SMALLINT", "INTEGER", "BIGINT", "NUMERIC", "REAL", "DOUBLE PRECISION"}
    if a in numeric and b in numeric:
        return False  # numeric types all cast to one another on assignment
    safe = {
        ("VARCHAR", "TEXT"), ("CHAR", "TEXT"), ("CHAR", "VARCHAR"),
        ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE"), ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP"),
        ("DATE", "TIMESTAMP"), ("DATE", "TIMESTAMP WITH TIME ZONE"), ("JSON", "JSONB"),
    }
    return (a, b) not in safe


def _bare_type(text: str, *, brackets: bool = True) -> str:
    """Return a type's text without its modifiers (``NUMERIC(12, 2)``) and array brackets.

    ``brackets``: also drop ``[]``.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "(" and ")" in text[i + 1:]:
            i = text.index(")", i + 1) + 1
        elif brackets and text.startswith("[]", i):
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


_INTEGERS = {"SMALLINT", "INTEGER", "BIGINT", "INT", "INT2", "INT4", "INT8"}


# -- the planner -------------------------------------------------------------------


_PLAIN, _ONLINE, _SAFE = "plain", "online", "safe"
_PRE, _TX, _NO_TX = "pre", "tx", "no-tx"


class _Planner:
    """Write operations from the current state (``sim``) towards ``to_models``.

    ``mode`` is ``"plain"`` (the forms ``create_tables()`` would use, one
    transaction), ``"online"`` (every operation in its online form, for a
    migration with ``atomic = False``) or ``"safe"`` (forward only: changes
    to existing tables in two phases, the transactional part with NOT VALID
    constraints first, then the concurrent indexes, validations, fills and
    NOT NULLs, which run outside a transaction).  In safe mode the indexes on
    columns that phase one drops, and the UNIQUE constraints that go, are
    dropped before it in a file of their own (``_PRE``, no transaction), so
    that phase one's rollback needs neither and that file's rollback builds
    them concurrently (:meth:`pre_drops`).

    ``tx_rollback``: the rollback of a transactional file, in the plain forms
    except that CHECKs and foreign keys are re-added ``NOT VALID`` where that
    needs nothing outside the transaction; :meth:`validations` then names the
    tables whose constraints the rollback of the file before must validate.
    """

    def __init__(
        self, sim: DatalayerMigrator, *, forward: bool, mode: str = _PLAIN, postgres: int = 12,
        tx_rollback: bool = False,
    ) -> None:
        self.sim = sim
        self.forward = forward
        self.mode = mode
        self.tx_rollback = tx_rollback
        self.postgres = postgres
        self.writer = CodeWriter("m")
        self.ops: list[_Chunk] = []
        self.drops: list[Drop] = []
        self.irreversible: list[str] = []  # rollback steps that cannot run on rows
        self.phase = _NO_TX if mode == _ONLINE else _TX
        self.deferred: list[Callable[[], None]] = []
        self.not_valid: set[str] = set()  # tables given NOT VALID constraints in phase one
        self.backfill: dict[str, list[str]] = {}  # table -> fields to fill in phase two
        # A transactional rollback's serial keys, re-added as plain integers: numbered and
        # made the key by the rollback of the file before (outside a transaction).
        self.serial_keys: list[tuple[str, pw.Field]] = []

    @property
    def warnings(self) -> list[str]:
        return self.writer.warnings

    def warn(self, message: str) -> None:
        if self.forward:
            self.writer.warnings.append(message)

    def online(self, *, phase_one: bool = False) -> list[tuple[str, Any]]:
        """Return ``[("online", True)]`` when the next operation is to be written online."""
        if self.mode == _ONLINE or (self.mode == _SAFE and (phase_one or self.phase == _NO_TX)):
            return [_ONLINE_KW]
        return []

    def emit(self, step: Step, *, table: str | None = None) -> None:
        """Apply the call ``step`` to the in-memory state, as the file will; plan its operation."""
        op = _apply(step, self.sim)
        chunk = _Chunk(op, self.phase, tuple(op.statements(postgres=self.postgres)))
        self.ops.append(chunk)
        if ((self.mode == _SAFE and self.phase == _TX) or self.tx_rollback) and (
            table is not None and any(s.kind in _NOT_VALID for s in chunk.statements)
        ):
            self.not_valid.add(table)

    def tx_online(self, ok: bool) -> list[tuple[str, Any]]:
        """Return ``[("online", True)]`` in a transactional rollback when ``ok``.

        (``ok``: no step of the operation would need to run outside a transaction.)
        """
        return [_ONLINE_KW] if self.tx_rollback and ok else []

    def validations(self) -> list[str]:
        """Return the tables (still there) whose constraints this plan added NOT VALID."""
        state = self.state()
        return sorted(t for t in self.not_valid if t in state)

    def state(self) -> dict[str, type[pw.Model]]:
        return _state(self.sim)

    # -- phases ---------------------------------------------------------------

    def run(
        self,
        to_models: Sequence[type[pw.Model]],
        table_renames: Mapping[str, str],
        column_renames: Mapping[str, Mapping[str, str]],
    ) -> None:
        w = self.writer
        to_map = {m._meta.table_name: m for m in to_models}
        if self.mode == _SAFE and self.forward:
            self.pre_drops(to_map, table_renames, column_renames)
        for old, new in table_renames.items():
            self.emit(w.call("rename_table", old, new), table=new)
        state = self.state()
        matched = [t for t in to_map if t in state]
        for t in matched:
            old_schema = state[t]._meta.schema or "public"
            if old_schema != (to_map[t]._meta.schema or "public"):
                new_schema = to_map[t]._meta.schema or "public"
                self.warn(
                    f"moves table {t} from schema {old_schema} to {new_schema}: like a rename, "
                    f"code still running that names {old_schema}.{t} (or finds it on the "
                    "search path) fails (lint rule ban-set-schema); deploy code that uses the "
                    "new schema first, or move it in a maintenance window"
                )
                self.emit(w.call("set_schema", t, to_map[t]._meta.schema))
        for t in matched:
            self.early(state[t], to_map[t], column_renames.get(t, {}))
        self._refuse_fk_to_new_unique(to_models)
        self._refuse_dropped_referenced_columns(to_map)
        self._refuse_key_moved_over_a_dropped_key(to_map)
        created = [m for m in to_models if m._meta.table_name not in state]
        # Tables that go and would stand in the way of what comes: dropped first.
        early = self._in_the_way(to_map, created)
        self._drop_tables([m for m in reversed(sort_models(self.state().values()))
                           if m in early], created)
        for t in matched:
            self._change_columns(t, to_map[t], keys_only=True)
        to_create = {m._meta.table_name for m in created}
        postponed: list[tuple[str, list[pw.Field]]] = []
        for model in created:
            to_create.discard(model._meta.table_name)
            # A foreign key to a table created later (a DeferredForeignKey in a cycle) is
            # added once that table exists.
            later = [f for f in model._meta.refs
                     if f.rel_model is not model and f.rel_model._meta.table_name in to_create]
            self.emit(w.model(model, skip={f.name for f in later}), table=model._meta.table_name)
            if later:
                postponed.append((model._meta.table_name, later))
        for t, fields in postponed:
            self.emit(
                w.call("add_fields", t, kw=[(f.name, w.field(f)) for f in fields]), table=t
            )
        for t in matched:
            self._refuse_unreferenced_rollback(state[t], to_map[t], to_map, created)
            self.late(self.state()[t], to_map[t])
        self._drop_tables([m for m in reversed(sort_models(self.state().values()))
                           if m._meta.table_name not in to_map], created)
        if self.deferred:
            self.phase = _NO_TX
            for step in self.deferred:
                step()

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

    def pre_drops(
        self,
        to_map: Mapping[str, type[pw.Model]],
        table_renames: Mapping[str, str],
        column_renames: Mapping[str, Mapping[str, str]],
    ) -> None:
        """Drop, before phase one and outside a transaction, what phase one's rollback rebuilds.

        The indexes on the columns phase one drops (``DROP COLUMN`` would drop them under
        its lock anyway) go concurrently, and the UNIQUE constraints that go away are
        dropped: so phase one's rollback re-adds the columns without them and the
        rollback of this file builds them concurrently, instead of a plain ``CREATE
        INDEX`` or ``ADD UNIQUE`` in phase one's rollback transaction.
        """
        w = self.writer
        self.phase = _PRE
        for t, fm in self.state().items():
            new = table_renames.get(t, t)
            tm = to_map.get(new)
            if tm is None:
                continue  # the table goes: its indexes go with it
            renamed = column_renames.get(new, {})
            tcols = {f.column_name for f in tm._meta.sorted_fields}
            dropped = {c for c in fm._meta.columns if c not in tcols and c not in renamed}
            for ix in table_spec(fm).indexes:
                if set(ix.columns) & dropped:
                    self.emit(w.call("drop_named_index", t, ix.name, kw=[_ONLINE_KW]), table=t)
            db = _render_db(fm)
            wanted = Counter(render(c, _render_db(tm)) for c in tm._meta.constraints or ())
            nodes = list(fm._meta.constraints or ())
            kept = []
            for node in nodes:
                sql = rename_identifier(render(node, db), renamed)
                if wanted[sql] > 0:
                    wanted[sql] -= 1
                elif _is_unique(sql):
                    continue
                kept.append(node)
            if len(kept) != len(nodes):
                items = w.constraints([render(n, db) for n in kept])
                self.emit(w.call("set_constraints", t, items, kw=[_ONLINE_KW]), table=t)
        self.phase = _TX

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

    def _drop_columns(
        self, table: str, dropped: Sequence[ColumnSpec], added: Sequence[pw.Field],
        added_specs: Mapping[str, ColumnSpec],
    ) -> None:
        """Record column drops, each paired with a same-typed added column if any."""
        free = list(added)
        for col in dropped:
            match = next((f for f in free if added_specs[f.column_name].type == col.type), None)
            if match is None:
                self.drops.append(Drop(table, col.name))
                continue
            # By identity: a peewee field's == builds an expression (always true), so
            # list.remove would take the first field, whichever it is.
            free = [f for f in free if f is not match]
            hint = (f"{match.name} = renamed_from({_field_class(match)}(...), "
                    f"{_py_str(col.name)})")
            self.drops.append(Drop(table, col.name, match.column_name, hint))

    def early(
        self, fm: type[pw.Model], tm: type[pw.Model], renames: Mapping[str, str]
    ) -> None:
        """Drop table constraints that go away, then rename columns."""
        w = self.writer
        t = fm._meta.table_name
        db = _render_db(fm)
        tcols = {f.column_name: f for f in tm._meta.sorted_fields}
        # A column renamed to the name of a column that stays in the models: that one
        # goes first (renamed_from on a field that keeps its column name).
        replaced = [new for new in renames.values()
                    if new in fm._meta.columns and new not in renames]
        dropping = bool(replaced) or any(
            c not in tcols and c not in renames for c in fm._meta.columns
        )
        if not (renames or dropping):
            # Nothing can invalidate a table constraint first: late() replaces them at once.
            self._rename_attributes(fm, tm)
            return
        wanted = Counter(render(c, _render_db(tm)) for c in tm._meta.constraints or ())
        kept_nodes = []
        for node in fm._meta.constraints or ():
            sql = rename_identifier(render(node, db), renames)
            if wanted[sql] > 0:
                wanted[sql] -= 1
                kept_nodes.append(node)
        if len(kept_nodes) != len(fm._meta.constraints or ()):
            items = w.constraints([render(n, db) for n in kept_nodes])
            self.emit(w.call("set_constraints", t, items), table=t)
        if replaced:
            by_new = {new: old for old, new in renames.items()}
            for col in replaced:
                self.warn(
                    f"drops column {t}.{col}: its data will be lost; {t}.{by_new[col]} is "
                    f"renamed to {col} in its place (renamed_from({by_new[col]!r}))"
                )
                self.drops.append(Drop(t, col))
            names = (fm._meta.columns[c].name for c in replaced)
            self.emit(w.call("remove_fields", t, *names), table=t)
        for old, new in renames.items():
            target = tcols[new]
            source = fm._meta.columns[old]
            default_attr = new if source.name == old else source.name
            kw = [("field_name", target.name)] if target.name != default_attr else []
            self.emit(w.call("rename_column", t, old, new, kw=kw), table=t)
        self._rename_attributes(fm, tm)

    def _rename_attributes(self, fm: type[pw.Model], tm: type[pw.Model]) -> None:
        """Rename model attributes whose column stays (no SQL, the state only)."""
        t = fm._meta.table_name
        for target in tm._meta.sorted_fields:
            source = fm._meta.columns.get(target.column_name)
            if source is not None and source.name != target.name:
                col = target.column_name
                self.emit(self.writer.call(
                    "rename_column", t, col, col, kw=[("field_name", target.name)]
                ), table=t)

    def late(self, fm: type[pw.Model], tm: type[pw.Model]) -> None:
        """Bring the columns, table constraints and indexes of one table in line.

        In safe mode this is phase one (transactional); what must wait for
        phase two is left out here and done by :meth:`late_online`.
        """
        w = self.writer
        t = fm._meta.table_name
        safe = self.mode == _SAFE
        fmeta, tmeta = fm._meta, tm._meta
        if fmeta.legacy_table_names != tmeta.legacy_table_names or (
            tmeta.legacy_table_names and fmeta.name != tmeta.name
        ):
            self.emit(w.call(
                "set_model_meta", t, kw=[("name", tmeta.name),
                                         ("legacy_table_names", tmeta.legacy_table_names)],
            ), table=t)
        fspec, tspec = table_spec(fm), table_spec(tm)
        if fspec.settings != tspec.settings:
            settings_parameters(t, fspec.settings, tspec.settings)  # WITH (...) only
            self.emit(w.call("set_model_meta", t, kw=[
                ("table_settings", list(tspec.settings))]), table=t)

        fcols = {f.column_name: f for f in fmeta.sorted_fields}
        tcols = {f.column_name: f for f in tmeta.sorted_fields}
        dropped = [f for c, f in fcols.items() if c not in tcols]
        added = [f for c, f in tcols.items() if c not in fcols]
        dropped_cols = {f.column_name for f in dropped}

        # The Meta.indexes entries that go, come and are renamed (field indexes: with
        # their fields), as the DDL finds them.
        gone, new, renamed = index_changes(_meta_indexes(fspec), _meta_indexes(tspec))
        for ix in gone:
            # Online, an index drop waits for phase two, unless a dropped column takes it.
            if safe and not any(quote(c) in ix.definition.text for c in dropped_cols):
                continue
            # In a file without a transaction (an online rollback): CONCURRENTLY IF EXISTS.
            self.emit(w.call("drop_named_index", t, ix.name, kw=self.online()), table=t)

        if dropped and fm._meta.composite_key and set(
            _key_fields(fm)) & {f.name for f in dropped}:
            self._set_primary_key(t, tm, plain=True)  # before its column goes
        if dropped:
            for f in dropped:
                self.warn(
                    f"drops column {t}.{f.column_name}: its data will be lost; if it was "
                    f"renamed, mark the new field with renamed_from(field, {f.column_name!r})"
                )
            before_cols = _columns(table_spec(fm))
            self._drop_columns(
                t, [before_cols[f.column_name] for f in dropped], added, _columns(tspec)
            )
            self.emit(
                w.call("remove_fields", t, *(f.name for f in dropped)), table=t
            )

        tcol_specs = _columns(tspec)
        if added:
            codes: list[tuple[str, Any]] = []
            for f in added:
                spec = tcol_specs[f.column_name]
                if not spec.null and spec.default is None and not _writable_default(f) and (
                    not auto_base(spec.type.text)  # serial, identity: numbered by PostgreSQL
                ):
                    self.warn(
                        f"adds {t}.{f.column_name} NOT NULL without a default: applying fails "
                        "if the table has rows; give the field a default or a server default"
                    )
                    if self.forward:
                        reason = (f"this migration adds {t}.{f.column_name} NOT NULL without "
                                  "a default to fill existing rows with")
                    else:
                        # The rollback re-adds a dropped column it has no values for.
                        reason = (f"this rollback re-adds {t}.{f.column_name} NOT NULL "
                                  "without a default")
                        self.irreversible.append(
                            f"the rollback cannot run while {t} has rows: it re-adds "
                            f"{t}.{f.column_name} NOT NULL without a default; `datalayer "
                            "migrate rollback` refuses it then (give the old field a default "
                            "in the rollback to make it reversible)"
                        )
                    # A clear error instead of PostgreSQL's NOT NULL violation, before any change.
                    self.emit(w.call("require_empty", t, reason), table=t)
                if not self.forward:
                    self._warn_refilled_check(t, f.column_name, spec, tspec)
                written = f
                if (safe or self.tx_rollback) and f.primary_key and serial_base(spec.type.text):
                    # A serial key in place of the table's key: added as a plain integer
                    # column (no rewrite); phase two numbers the rows, then makes it the key
                    # (in a rollback: the tail this file's rollback leaves, see serial_keys).
                    written = _plain_integer(f, serial_base(spec.type.text) or "INTEGER")
                    if self.tx_rollback:
                        self.serial_keys.append((t, f))
                elif safe:
                    volatile = is_volatile(spec.default)
                    # A constant Python default is added with the column (no fill).
                    fill = volatile or (spec.default is None and _writable_default(f)
                                        and callable(f.default))
                    written = _phase_one_field(
                        f, null=spec.null or fill, index=False,
                        drop_default=volatile,
                    )
                    if volatile and spec.null:
                        self.backfill.setdefault(t, []).append(f.name)
                codes.append((f.name, w.field(written)))
            flag = self.online(phase_one=True) or self.tx_online(all(
                _tx_safe_column(f, tcol_specs[f.column_name]) for f in added
            ))
            if flag and any(f.name == "online" for f in added):
                flag = []  # a field named "online" would clash with the option: plain form
            self.emit(w.call("add_fields", t, kw=[*codes, *flag]), table=t)

        self._change_columns(t, tm)
        if not safe:
            self._set_primary_key(t, tm)


        fspec = table_spec(self.state()[t])
        if Counter(fspec.checks + fspec.constraints) != Counter(tspec.checks + tspec.constraints):
            db = _render_db(tm)
            nodes = rest = list(tmeta.constraints or ())
            if safe or self.tx_rollback:
                # A new UNIQUE constraint waits for its concurrent index in phase two (in a
                # rollback: comes after the NOT VALID CHECKs and foreign keys, plainly).
                have = Counter(fspec.constraints)
                kept = []
                for node in nodes:
                    sql = render(node, db)
                    if have[sql] > 0:
                        have[sql] -= 1
                    elif _is_unique(sql):
                        continue
                    kept.append(node)
                nodes, rest = kept, nodes
            for group, flag in ((nodes, self.online(phase_one=True) or self.tx_online(True)),
                                (rest if self.tx_rollback else nodes, [])):
                now = table_spec(self.state()[t])
                if Counter(render(c, db) for c in group) == Counter(now.checks + now.constraints):
                    continue
                items = w.constraints([render(c, db) for c in group])
                self.emit(w.call("set_constraints", t, items, kw=flag), table=t)

        for old_ix, new_ix in renamed:
            self.emit(
                w.call("rename_index", t, old_ix.name, new_ix.name), table=t
            )
        if safe:
            self.deferred.append(lambda: self.late_online(t, tm))
            return
        entries = dict(_meta_index_entries(tm))
        for ix in new:
            self.emit(self._add_index(t, tm, entries[ix.origin]), table=t)

    def _warn_refilled_check(self, t: str, col: str, spec: ColumnSpec, tspec: TableSpec) -> None:
        """Announce a CHECK on a column the rollback re-adds (its values are gone).

        The column comes back filled with its default (or NULL), which the CHECK may
        refuse: the rollback fails then.
        """
        word = re.compile(rf'(?<![\w"]){re.escape(col)}(?![\w"])|{re.escape(quote(col))}')
        checks = [c.text for c in (*tspec.checks, *tspec.constraints)
                  if "CHECK" in c.text.upper() and word.search(c.text)]
        checks += [c.text for c in spec.checks]
        if checks:
            self.irreversible.append(
                f"the rollback re-adds {t}.{col} without its values (its default or NULL in "
                f"every row), and {', '.join(checks)} refers to it: the rollback fails if a "
                "row does not satisfy it then"
            )

    def _set_primary_key(
        self, t: str, tm: type[pw.Model], *, online: bool = False, plain: bool = False
    ) -> None:
        """Change a composite primary key into another one (other key changes: _change_columns).

        ``plain``: in the plain form, whatever the mode (before a key column is dropped).
        """
        fm = self.state()[t]
        # From a composite key, or from none (a serial key dropped with its column); or a
        # composite key given up, its columns kept (a table without a key, as peewee's
        # ``primary_key = False``).
        released = fm._meta.composite_key and not tm._meta.primary_key
        if not released and not (
            tm._meta.composite_key and (fm._meta.composite_key or not fm._meta.primary_key)
        ):
            return
        if table_spec(fm).primary_key == table_spec(tm).primary_key:
            return
        flag = [_ONLINE_KW] if (online or self.mode == _ONLINE) and not plain else []
        names = [] if released else _key_fields(tm)
        self.emit(self.writer.call("set_primary_key", t, *names, kw=flag), table=t)

    def _change_fields(
        self, t: str, codes: Sequence[tuple[str, Expr]], flag: Sequence[tuple[str, Any]]
    ) -> None:
        """Emit ``change_fields``; as ``alter_fields`` with a mapping when a field is "online"."""
        w = self.writer
        if flag and any(name == "online" for name, _ in codes):
            items = Dict(tuple((plain(name), code) for name, code in codes))
            self.emit(w.call("alter_fields", t, items, kw=flag), table=t)
            return
        self.emit(w.call("change_fields", t, kw=[*codes, *flag]), table=t)

    def late_online(self, t: str, tm: type[pw.Model]) -> None:
        """Phase two of a table in safe mode: what must not hold a lock or a transaction."""
        w = self.writer
        fm = self.state()[t]
        fspec, tspec = table_spec(fm), table_spec(tm)
        fmeta_ix = {i.name: i for i in fspec.indexes if i.origin.startswith("meta:")}
        tmeta_ix = {i.name: i for i in tspec.indexes if i.origin.startswith("meta:")}
        for name, ix in fmeta_ix.items():
            if name not in tmeta_ix or tmeta_ix[name] != ix:
                self.emit(w.call("drop_named_index", t, name, kw=[_ONLINE_KW]), table=t)

        fspec = table_spec(self.state()[t])
        fcols = {f.column_name: f for f in self.state()[t]._meta.sorted_fields}
        fcol_specs, tcol_specs = _columns(fspec), _columns(tspec)
        changed: list[tuple[str, Expr]] = []
        for col, target in {f.column_name: f for f in tm._meta.sorted_fields}.items():
            source = fcols[col]
            fidx = [i for i in fspec.indexes if i.origin == f"field:{source.name}"]
            tidx = [i for i in tspec.indexes if i.origin == f"field:{target.name}"]
            if fcol_specs[col] != tcol_specs[col] or fidx != tidx:
                changed.append((target.name, w.field(target)))
        if changed:
            self._change_fields(t, changed, [_ONLINE_KW])
        self._set_primary_key(t, tm, online=True)
        if self.backfill.get(t):
            self.emit(w.call("backfill", t, *self.backfill[t]), table=t)

        fspec = table_spec(self.state()[t])
        if Counter(fspec.checks + fspec.constraints) != Counter(tspec.checks + tspec.constraints):
            db = _render_db(tm)
            items = w.constraints([render(c, db) for c in tm._meta.constraints or ()])
            self.emit(w.call("set_constraints", t, items, kw=[_ONLINE_KW]), table=t)

        entries = dict(_meta_index_entries(tm))
        fspec = table_spec(self.state()[t])
        have = {i.name: i for i in fspec.indexes if i.origin.startswith("meta:")}
        for name, ix in tmeta_ix.items():
            if name not in have or have[name] != ix:
                self.emit(self._add_index(t, tm, entries[ix.origin], online=True), table=t)
        if t in self.not_valid:
            self.emit(w.call("validate_constraints", t), table=t)

    def _change_columns(self, t: str, tm: type[pw.Model], *, keys_only: bool = False) -> None:
        """Change the columns of table ``t`` that both sides have (only the key: ``keys_only``).

        The key is changed before new tables are created (their foreign keys take its type).
        In safe mode the indexes and NOT NULL of a column wait for phase two.
        """
        w = self.writer
        safe = self.mode == _SAFE and not keys_only
        fm = self.state()[t]
        fcols = {f.column_name: f for f in fm._meta.sorted_fields}
        tcols = {f.column_name: f for f in tm._meta.sorted_fields}
        fspec, tspec = table_spec(fm), table_spec(tm)
        fcol_specs, tcol_specs = _columns(fspec), _columns(tspec)
        plain_: list[tuple[str, Expr]] = []
        cast: list[tuple[str, Expr, str]] = []
        tx_ok = True  # no index built and no NOT NULL set: online needs no step outside
        for col, target in tcols.items():
            if col not in fcols:
                continue
            source = fcols[col]
            if keys_only and not (source.primary_key and target.primary_key):
                continue
            if keys_only and isinstance(target, pw.ForeignKeyField) and (
                target.rel_model._meta.table_name not in self.state()
            ):
                continue  # a key that refers to a table created later: late() changes it

            if any(t == kt and col == k.column_name for kt, k in self.serial_keys):
                continue  # numbered and made the key outside the transaction (run())
            before, after = fcol_specs[col], tcol_specs[col]
            fidx = [i for i in fspec.indexes if i.origin == f"field:{source.name}"]
            tidx = [i for i in tspec.indexes if i.origin == f"field:{target.name}"]
            if before == after and fidx == tidx:
                continue
            tx_ok = tx_ok and fidx == tidx and not (before.null and not after.null)
            narrowing = _narrowing(t, col, before, after)
            if narrowing is not None and narrowing not in self.warnings:
                self.warn(narrowing)
            if before.null and not after.null and after.default is None and (
                target.default is None and not auto_base(after.type.text)  # serial: numbered
            ):
                self.warn(
                    f"makes {t}.{col} NOT NULL without a default: applying fails if it holds "
                    "NULLs; give the field a default or a server default"
                )
            # A serial or identity column's type is its integer's (SERIAL to UUID rewrites).
            old_type, new_type = (Sql(auto_base(c.type.text) or c.type.text)
                                  for c in (before, after))
            if old_type != new_type and rewrites_type(old_type, new_type):
                self.warn(
                    f"changes the type of {t}.{col} from {before.type.text} to {after.type.text}, "
                    "which rewrites the table under ACCESS EXCLUSIVE (reads and writes wait; lint "
                    "rule changing-column-type). On a busy table do it by expand/contract instead: "
                    "add a new column, write both from the application, backfill it in batches, "
                    "switch reads to it, then drop the old one"
                )
            elif old_type != new_type and rewrites_type(new_type, old_type):
                # In place going forward; the rollback (a deploy too, linted too) narrows back.
                back = _narrowing(t, col, after, before)
                self.warn(
                    f"its rollback changes {t}.{col} back from {after.type.text} to "
                    f"{before.type.text}, which rewrites the table under ACCESS EXCLUSIVE (lint "
                    "rule changing-column-type, which reads rollbacks too: allow it in the file "
                    "if that rollback may run on this table)"
                    + (f"; rolling back {back.split('): ', 1)[1]}" if back else "")
                )
            written = target
            if safe and source.primary_key != target.primary_key:
                continue  # a unique column made the key (or back): phase two, online
            if safe:
                # NULL-ness stays as it was: SET NOT NULL needs its validated CHECK, and DROP
                # NOT NULL waits too, so that its rollback (SET NOT NULL again) is written in
                # that file's online form rather than as a scan under ACCESS EXCLUSIVE.
                written = _phase_one_field(
                    target, null=before.null, index=(source.index, source.unique),
                    drop_default=False,
                )
                if column_spec(written, _render_db(tm)) == before:
                    continue  # only indexes or NOT NULL change: phase two does them
            code: Expr = w.field(written)
            if before.type != after.type and _needs_using(before.type, after.type):
                using = self._using(fm, col, before, after, (source, target))
                cast.append((target.name, code, using))
            else:
                plain_.append((target.name, code))
        flag = (self.online(phase_one=True) or self.tx_online(tx_ok)) if not keys_only else []
        if plain_:
            self._change_fields(t, plain_, flag)
        for name, code, using in cast:
            self.emit(w.call(
                "alter_fields", t, Dict(((plain(name), code),)),
                kw=[("using", Dict(((plain(name), plain(using)),))), *flag],
            ), table=t)

    def _using(
        self, fm: type[pw.Model], col: str, before: ColumnSpec, after: ColumnSpec,
        fields: tuple[pw.Field, pw.Field] | None = None,
    ) -> str:
        """Return the USING expression of a type change that has no assignment cast.

        ``fields``: the column's field before and after (a ``TimestampField``'s resolution).

        A key that cannot be cast is renumbered: from its new sequence (to a serial type)
        or with ``gen_random_uuid()`` (integers to uuid); refused when foreign keys point
        at it, since their values would no longer match.
        """
        t = fm._meta.table_name
        source = auto_base(before.type.text) or before.type.text.upper()
        target = auto_base(after.type.text) or after.type.text.upper()
        renumber: str | None = None
        if auto_base(after.type.text) and not serial_base(after.type.text) and (
            source not in _INTEGERS
        ):
            raise GenerationError("cannot generate this migration", [
                f"{t}.{col} changes from {before.type.text} to an identity column, which "
                "has no cast: write this migration by hand (add the new column, fill it, "
                "then swap)"
            ])
        if serial_base(after.type.text) and source not in _INTEGERS:
            renumber = "nextval(" + repr(serial_sequence(t, fm._meta.schema, col)) + ")"
        elif target == "UUID" and source in _INTEGERS and before.primary_key:
            renumber = "gen_random_uuid()"
        json_using = _json_using(t, col, before.type.text, after.type.text)
        if json_using is not None:
            self.warn(
                f"changes the type of {t}.{col} from {before.type.text} to "
                f"{after.type.text} with USING {json_using}: every stored value must be "
                + ("a JSON array of numbers, booleans or nulls (another value fails the change)"
                   if json_using.startswith("translate(") else "convertible")
            )
            return json_using
        resolution = max(getattr(f, "resolution", 1) for f in fields or ())
        converted = _converted(col, before.type.text, after.type.text, resolution)
        if renumber is None and converted is not None:
            using, effect = converted
            self.warn(
                f"changes the type of {t}.{col} from {before.type.text} to "
                f"{after.type.text} with USING {using}: {effect}"
            )
            return using
        if renumber is None:
            using = f"{quote(col)}::{target}"
            self.warn(
                f"changes the type of {t}.{col} from {before.type.text} to "
                f"{after.type.text} with USING {using}: check that every existing value "
                "converts, or edit the USING expression"
            )
            return using
        for model in self.state().values():
            for field in model._meta.refs:
                if field.rel_model._meta.table_name == t and field.rel_field.column_name == col:
                    referrer = f"{model._meta.table_name}.{field.column_name}"
                    if self.forward:
                        raise GenerationError("cannot generate this migration", [
                            f"{t}.{col} changes from {before.type.text} to {after.type.text}, "
                            f"which has no cast: its values would be renumbered, but {referrer} "
                            "refers to them; write this migration by hand (add the new key "
                            "column, map the referencing columns to it, then swap)"
                        ])
                    # Planning the rollback: it undoes the type change (the state is the
                    # migration's result) while a foreign key this migration adds remains.
                    raise GenerationError("cannot generate this migration", [
                        f"its rollback would change {t}.{col} back from {before.type.text} to "
                        f"{after.type.text}, which has no cast, so the values would be "
                        f"renumbered while {referrer} (added by this migration) refers to "
                        f"them; make the type change of {t}.{col} and the foreign key to it "
                        "two migrations (change the key first, run diff, then add the "
                        "foreign key)"
                    ])
        self.warn(
            f"changes the type of {t}.{col} from {before.type.text} to {after.type.text}, "
            f"which has no cast: existing rows get new values (USING {renumber})"
        )
        return renumber

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


def _tx_safe_column(field: pw.Field, spec: ColumnSpec) -> bool:
    """True when adding ``field`` online needs no step outside a transaction (no index, no fill)."""
    needs_fill = spec.default is None and spec.py_default is not None
    constant = needs_fill and not callable(spec.py_default) and spec.db_value is not None
    fill = is_volatile(spec.default) or (not spec.null and needs_fill and not constant)
    return not (field.index or field.unique or fill)


def _phase_one_field(
    field: pw.Field, *, null: bool, index: bool | tuple[bool, bool], drop_default: bool
) -> pw.Field:
    """Return a copy of ``field`` as phase one of a safe migration adds or changes it.

    ``null``: the NULL-ness to write (NOT NULL comes in phase two); ``index``:
    False for no index, else the ``(index, unique)`` flags to keep (phase two
    builds the wanted ones concurrently); ``drop_default``: leave a volatile
    server default to phase two.
    """
    out = copy.copy(field)
    out.null = null
    if index is False:
        out.index = out.unique = False
    else:
        assert isinstance(index, tuple)
        out.index, out.unique = index
    if drop_default:
        db = database_of(field.model)
        out.constraints = [
            c for c in field.constraints or ()
            if not render(c, db).text.lstrip().upper().startswith("DEFAULT ")
        ] or None
    return out


def _plain_integer(field: pw.Field, base: str) -> pw.Field:
    """Return a nullable integer field of ``base`` type on ``field``'s column (not a key)."""
    cls = {"SMALLINT": pw.SmallIntegerField, "BIGINT": pw.BigIntegerField}.get(
        base, pw.IntegerField)
    out: pw.Field = cls(null=True, column_name=field.column_name)
    out.bind(field.model, field.name, False)  # as the model's, for rendering; not attached
    return out


_INTEGER_BYTES = {"int2": 2, "int4": 4, "int8": 8}


def _narrowing(table: str, col: str, before: ColumnSpec, after: ColumnSpec) -> str | None:
    """Return what changing ``before`` to ``after`` does to the stored data or indexes, if any.

    Numeric scale down rounds every value, precision down (integer digits) fails on
    larger values, a shorter varchar or integer type fails on longer or larger values,
    timestamp to date drops the time of day, a collation change rebuilds the column's
    indexes.
    """
    name = f"{table}.{col}"
    old, new = parse_type(before.type.text), parse_type(after.type.text)
    what = f"({before.type.text} to {after.type.text})"
    if old[2] == new[2]:
        if old[0] == new[0] == "numeric" and new[1]:
            p, s = new[1][0], new[1][1] if len(new[1]) > 1 else 0
            said = []
            if not old[1] or (old[1][1] if len(old[1]) > 1 else 0) > s:
                said.append(f"rounds every stored value of {name} to {s} decimal places")
            if not old[1] or old[1][0] - (old[1][1] if len(old[1]) > 1 else 0) > p - s:
                said.append(f"fails if a stored value has more than {p - s} digits before "
                            "the decimal point")
            if said:
                return f"narrows {name} {what}: " + "; ".join(said)
        if old[0] in ("varchar", "text", "bpchar") and new[0] in ("varchar", "bpchar") \
                and new[1] and (not old[1] or old[1][0] > new[1][0]):
            return (f"narrows {name} {what}: the change fails if a stored value is longer "
                    f"than {new[1][0]} characters; shorten those values first")
        if _INTEGER_BYTES.get(old[0], 0) > _INTEGER_BYTES.get(new[0], 8):
            top = 2 ** (8 * _INTEGER_BYTES[new[0]] - 1)
            return (f"narrows {name} {what}: the change fails if a stored value is outside "
                    f"{-top} to {top - 1}; change those values first")
        if old[0] in ("timestamp", "timestamptz") and new[0] == "date":
            return (f"narrows {name} {what}: the time of day of every stored value is "
                    "dropped (only the date is kept)")
    if (before.collation or None) != (after.collation or None):
        return (f"changes the collation of {name} from {before.collation or 'the default'} to "
                f"{after.collation or 'the default'}: every index on the column is rebuilt "
                "under ACCESS EXCLUSIVE (reads and writes wait), and the values sort in the "
                "new order")
    return None


_JSON_TYPES = {"JSON", "JSONB"}
_PLAIN_ELEMENTS = _INTEGERS | {"NUMERIC", "DECIMAL", "REAL", "DOUBLE PRECISION", "FLOAT",
                               "BOOLEAN", "BOOL"}


def _json_using(table: str, col: str, old: str, new: str) -> str | None:
    """Return the USING expression between JSON and an array type (None: neither way).

    PostgreSQL has no cast between them, and USING allows no subquery.  An array goes
    to JSON with ``to_jsonb``; a JSON array of numbers or booleans reads as an array
    literal once its brackets become braces.  A JSON array of strings does not (JSON
    and array literals escape differently, and a bracket inside a string would change
    it): that is refused with the way out.
    """
    source, target = old.upper(), new.upper()
    if target in _JSON_TYPES and source.endswith("[]"):
        return f"to_{target.lower()}({quote(col)})"
    if source not in _JSON_TYPES or not target.endswith("[]"):
        return None
    element = _bare_type(target).strip()
    if element in _PLAIN_ELEMENTS:
        return f"translate({quote(col)}::TEXT, '[]', '{{}}')::{target}"
    raise GenerationError("cannot generate this migration", [
        f"{table}.{col} changes from {old} to {new}, which PostgreSQL cannot cast (and a "
        "type change's USING allows no subquery): write this migration by hand: add the "
        f"new column, fill it with ARRAY(SELECT jsonb_array_elements_text({col})) in "
        "batches, then drop the old column and rename the new one"
    ])


_TIMESTAMPS = {"TIMESTAMP", "TIMESTAMP WITHOUT TIME ZONE", "TIMESTAMPTZ",
               "TIMESTAMP WITH TIME ZONE"}


def _converted(col: str, old: str, new: str, resolution: int) -> tuple[str, str] | None:
    """Return the USING expression and what it does, for types PostgreSQL has no cast for.

    A timestamp and an integer count of ``1 / resolution`` seconds since 1970 (peewee's
    ``TimestampField``) either way, a boolean and a smallint or bigint either way (only
    integer has a cast), and a uuid and its 16 bytes (``BinaryUUIDField``) either way;
    None for other types (``col::new`` is written then).
    """
    source = _bare_type(old.upper(), brackets=False).strip()
    target = _bare_type(new.upper(), brackets=False).strip()
    q = quote(col)
    naive = ("a timestamp without time zone is read as UTC (as TimestampField(utc=True) "
             "stores it; edit the USING expression if the application's local time is not "
             "UTC)")
    if source in _TIMESTAMPS and target in _INTEGERS:
        scaled = f"extract(epoch FROM {q})" + (f" * {resolution}" if resolution > 1 else "")
        zoned = "WITH TIME ZONE" in source or source == "TIMESTAMPTZ"
        return (f"round({scaled})::{target}",
                f"each value becomes its count of 1/{resolution} seconds since 1970-01-01 "
                "UTC (rounded)" + ("" if zoned else "; " + naive))
    if source in _INTEGERS and target in _TIMESTAMPS:
        seconds = f"{q} / {resolution}.0" if resolution > 1 else q
        zoned = "WITH TIME ZONE" in target or target == "TIMESTAMPTZ"
        return (f"to_timestamp({seconds})" + ("" if zoned else " AT TIME ZONE 'UTC'"),
                f"each value is read as a count of 1/{resolution} seconds since 1970-01-01 "
                "UTC" + ("" if zoned else ", the timestamp written in UTC"))
    if source in ("SMALLINT", "INT2", "BIGINT", "INT8") and target in ("BOOLEAN", "BOOL"):
        return f"{q} <> 0", "0 becomes false, any other number true"  # int4 alone casts
    if source in ("BOOLEAN", "BOOL") and target in ("SMALLINT", "INT2", "BIGINT", "INT8"):
        return f"{q}::INTEGER::{target}", "false becomes 0, true 1"
    if source == "UUID" and target == "BYTEA":
        return (f"decode(replace({q}::TEXT, '-', ''), 'hex')",
                "each value becomes its 16 bytes, as BinaryUUIDField stores it")
    if source == "BYTEA" and target == "UUID":
        return (f"encode({q}, 'hex')::UUID",
                "each value is read as the 16 bytes of a uuid (the change fails on a value of "
                "another length)")
    return None


def _unique_columns(model: type[pw.Model]) -> set[str]:
    """The columns of ``model`` unique on their own (the key, ``unique=True``)."""
    return {f.column_name for f in model._meta.sorted_fields if f.unique or f.primary_key}


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


def _key_fields(model: type[pw.Model]) -> list[str]:
    """Return the field names of ``model``'s composite primary key."""
    key: Any = model._meta.primary_key
    return list(key.field_names)


def _is_unique(sql: Sql) -> bool:
    return constraint_keyword(sql) == "UNIQUE"


def _render_db(model: type[pw.Model]) -> Any:
    return database_of(model)


def _writable_default(field: pw.Field) -> bool:
    """Return True when ``field`` has a Python default that a migration can write."""
    return field.default is not None and CodeWriter().default(field) is not None


def _object_names(spec: TableSpec) -> set[str]:
    """Return the names of the indexes and named constraints of a table (one namespace)."""
    names = {ix.name for ix in spec.indexes}
    names.update(n for n in map(constraint_name, spec.constraints) if n)
    return names


def _table_shape(spec: TableSpec) -> list[tuple[str, bool, bool]]:
    """Return the column types and nullability of a table, names aside (to spot renames)."""
    return sorted((c.type.text, c.null, c.primary_key) for c in spec.columns)


def _py_str(text: str) -> str:
    """Return ``text`` as a Python string literal, in double quotes when possible."""
    return f'"{text}"' if '"' not in text and "\\" not in text else repr(text)


def _field_class(field: pw.Field) -> str:
    """Return how a model module usually names ``field``'s class (``pw.CharField``)."""
    cls = type(field)
    prefix = {"peewee": "pw.", "playhouse.postgres_ext": "pw_pext."}.get(cls.__module__, "")
    return prefix + cls.__name__


def _meta_index_entries(model: type[pw.Model]) -> list[tuple[str, Any]]:
    """Return ``(origin, entry)`` for each ``Meta.indexes`` entry (tuples built into indexes)."""
    out = []
    for origin, index in index_entries(model):
        if origin.startswith("meta:"):
            entry = model._meta.indexes[int(origin.split(":", 1)[1])]
            out.append((origin, index if isinstance(entry, (list, tuple)) else entry))
    return out


# -- renames -------------------------------------------------------------------------


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


# -- entry points --------------------------------------------------------------------


def _verify(
    sim: DatalayerMigrator, wanted: Sequence[type[pw.Model]], what: str
) -> None:
    state = _state(sim)
    want = {m._meta.table_name: m for m in wanted}
    problems: list[str] = []
    for t in sorted(set(state) | set(want)):
        if t not in state:
            problems.append(f"table {t} is missing")
        elif t not in want:
            problems.append(f"table {t} is left over")
        else:
            a, b = table_spec(state[t]), table_spec(want[t])
            if _table_key(a) != _table_key(b):
                problems.extend(_explain(a, b))
    if problems:
        raise GenerationError(
            f"the generated {what} would not reproduce the expected schema (an unsupported "
            "change, or a bug in the generator; write this migration by hand)",
            problems,
        )




def _check_postgres(postgres: int) -> None:
    if not isinstance(postgres, int) or isinstance(postgres, bool) or postgres < MIN_POSTGRES:
        raise GenerationError(
            f"target PostgreSQL version {postgres!r} is not supported; give a major version "
            f"of {MIN_POSTGRES} or later (e.g. postgres = 15 under [tool.datalayer])"
        )


def plan_models(
    sim: DatalayerMigrator,
    original: DatalayerMigrator | None,
    models: Iterable[Any] | None = None,
    *,
    postgres: int = DEFAULT_POSTGRES,
    unsafe: bool = False,
    replay: Callable[[], DatalayerMigrator] | None = None,
) -> tuple[Plan, tuple[Drop, ...]]:
    """Return the plan from the state in ``sim`` to ``models`` (and the drops it makes).

    ``sim`` and ``original`` must hold the same state (two replays of one
    history); ``sim`` ends up in the state of the models, ``original`` is
    only read, and only when there is something to do: None replays it then.
    ``replay`` returns one more such state; it is needed when the plan has
    more than one migration (to plan each one's rollback), or no ``original``.
    """
    _check_postgres(postgres)
    targets = _targets(models)
    try:
        state = _state(sim)
        tables, columns = _renames(state, targets)
        forward = _Planner(sim, forward=True, mode=_PLAIN if unsafe else _SAFE, postgres=postgres)
        forward.run(targets, tables, columns)
        warnings = tuple(forward.warnings)
        if not forward.ops:
            return Plan((), warnings, postgres, not unsafe), tuple(forward.drops)
        _verify(sim, targets, "migration")
        groups = _groups(forward.ops)
        back_tables = {new: old for old, new in tables.items()}
        back_columns = {
            back_tables.get(t, t): {new: old for old, new in cols.items()}
            for t, cols in columns.items()
        }
        rollbacks: list[list[_Chunk]] = [[] for _ in groups]
        # The VALIDATE CONSTRAINTs a transactional file's rollback leaves to the rollback of
        # the file before it (runs next, outside a transaction): per file, or for a file
        # with nothing to do going forward, inserted before it.
        tails: list[list[_Chunk]] = [[] for _ in groups]
        heads: list[list[_Chunk]] = [[] for _ in groups]
        inserted: dict[int, list[_Chunk]] = {}
        irreversible: list[str] = []
        for k in reversed(range(len(groups))):
            # The renames are in the first transactional file (after the _PRE drops, if any).
            renaming = k == next((i for i, g in enumerate(groups) if g[0].phase != _PRE), 0)
            bt, bc = (back_tables, back_columns) if renaming else ({}, {})
            if k == 0 and original is not None:
                goal = original
            elif k == 0:
                if replay is None:
                    raise GenerationError("pass original= or replay= to plan the rollback")
                goal = replay()
            else:
                if replay is None:
                    raise GenerationError(
                        "this migration is written as several files; pass replay= to plan "
                        "their rollbacks (compute_diff does)"
                    )
                goal = replay()
                _replay_calls(goal, (c.op for g in groups[:k] for c in g))
            atomic = _atomic(groups[k], transactional_phase=_TX)
            backward = _Planner(sim, forward=False, mode=_PLAIN if atomic else _ONLINE,
                                postgres=postgres, tx_rollback=atomic and not unsafe)
            goal_models = sort_models(_state(goal).values())
            backward.run(goal_models, bt, bc)
            done = keyed = len(backward.ops)
            if atomic and (backward.validations() or backward.serial_keys):
                backward.phase = _NO_TX
                for t in backward.validations():
                    backward.emit(backward.writer.call("validate_constraints", t), table=t)
                keyed = len(backward.ops)
                for t, key in backward.serial_keys:  # numbered, then the key, concurrently
                    backward._change_fields(t, [(key.name, backward.writer.field(key))],
                                            [_ONLINE_KW])
            _verify(sim, goal_models, "rollback")
            tail = backward.ops[done:]
            rollbacks[k] = heads[k] + backward.ops[:done] + tails[k]
            irreversible.extend(backward.irreversible)
            if tail:
                if k > 0 and groups[k - 1][0].phase != _TX:
                    # The validations after that rollback; the serial keys before it (it was
                    # planned from the state they make).
                    tails[k - 1] = backward.ops[done:keyed]
                    heads[k - 1] = backward.ops[keyed:]
                else:
                    inserted[k] = tail
    except (UnsupportedChange, Unwritable) as exc:
        raise GenerationError("cannot generate this migration", [str(exc)]) from None
    files: list[tuple[bool, list[_Chunk], list[_Chunk]]] = []
    for k, group in enumerate(groups):
        if k in inserted:
            files.append((False, [], inserted[k]))
        files.append((_atomic(group, transactional_phase=_TX), group,
                      rollbacks[k]))
    migrations = tuple(
        PlannedMigration(
            suffix="" if k == 0 else f"_{k + 1}",
            atomic=atomic,
            operations=tuple(c.op for c in chunks),
            rollback=tuple(c.op for c in undo),
            postgres=postgres,
        )
        for k, (atomic, chunks, undo) in enumerate(files)
    )
    warnings += tuple(irreversible)
    return Plan(migrations, warnings, postgres, not unsafe), tuple(forward.drops)


def diff_models(
    sim: DatalayerMigrator,
    original: DatalayerMigrator | None,
    models: Iterable[Any] | None = None,
    *,
    postgres: int = DEFAULT_POSTGRES,
    unsafe: bool = False,
    replay: Callable[[], DatalayerMigrator] | None = None,
) -> Diff:
    """Return the migration(s) from the state in ``sim`` to ``models``, and the rollbacks.

    See :func:`plan_models`; ``Diff.plan`` holds the plan itself.
    """
    plan, drops = plan_models(
        sim, original, models, postgres=postgres, unsafe=unsafe, replay=replay
    )
    return _diff_of(plan, drops)
