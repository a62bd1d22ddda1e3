"""The planner: from the replayed state towards the models, table by table, in order.

Renames and schema moves first, then for each table the constraints that go and the
column renames (:meth:`Planner.early`), the tables in the way dropped, the keys changed,
new tables created, the columns, constraints and indexes brought in line
(:meth:`Planner.late`; in the safe form phase two waits: :meth:`Planner.late_online`),
and the tables that go dropped last.  The parts it is made of: :mod:`.emitter`,
:mod:`.refusals`, :mod:`.tables`, :mod:`.columns`, :mod:`.keys`, :mod:`.indexes`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import peewee as pw

from ..ddl.alter import auto_base, is_volatile, serial_base
from ..ddl.indexes import index_changes
from ..ddl.spec import Sql, quote, rename_identifier, render, sort_models, table_spec
from ..ddl.tables import settings_parameters
from .code import Expr
from .columns import Columns, _phase_one_field, _plain_integer, _tx_safe_column, _writable_default
from .emitter import _NO_TX, _ONLINE_KW, _PRE, _SAFE, _TX, _columns, _render_db
from .indexes import Indexes, _meta_index_entries, _meta_indexes
from .keys import Keys, _key_fields
from .outcome import Drop
from .refusals import Refusals
from .tables import Tables
from .writer import constraint_keyword


class Planner(Refusals, Tables, Columns, Keys, Indexes):
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

    def run(
        self,
        to_models: Sequence[type[pw.Model]],
        table_renames: Mapping[str, str],
        column_renames: Mapping[str, Mapping[str, str]],
    ) -> None:
        w = self.writer
        to_map = {m._meta.table_name: m for m in to_models}
        moved = self._moved_fks(to_map, table_renames)
        start = len(self.ops)
        if self.mode == _SAFE and self.forward:
            self.pre_drops(to_map, table_renames, column_renames)
        self._guard_moved_fks(moved, start)
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
            self._refuse_unreferenced_rollback(state[t], to_map[t], to_map)
            self.late(self.state()[t], to_map[t])
        self._drop_tables([m for m in reversed(sort_models(self.state().values()))
                           if m._meta.table_name not in to_map], created)
        if self.deferred:
            self.phase = _NO_TX
            for step in self.deferred:
                step()

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


_Planner = Planner


def _is_unique(sql: Sql) -> bool:
    return constraint_keyword(sql) == "UNIQUE"

