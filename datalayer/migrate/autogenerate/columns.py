"""Columns that both sides have: type, NULL-ness, default, collation, indexes of the field.

A type without an assignment cast gets a ``USING`` expression (:mod:`.casts`), a narrowing
a warning that says what happens to the data; in the safe form a column is written as
phase one adds or changes it (:func:`_phase_one_field`), its NOT NULL and indexes left
to phase two.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import peewee as pw

from ...errors import GenerationError
from ..ddl.alter import auto_base, is_volatile, rewrites_type, serial_base, serial_sequence
from ..ddl.spec import (
    ColumnSpec,
    Sql,
    TableSpec,
    column_spec,
    database_of,
    quote,
    render,
    table_spec,
)
from .casts import _INTEGERS, _converted, _json_using, _narrowing, _needs_using
from .code import Dict, Expr
from .emitter import _SAFE, Emitter, _columns, _render_db
from .names import _field_class, _py_str
from .outcome import Drop
from .writer import CodeWriter, plain


class Columns(Emitter):
    """Changes, renames and drops of columns."""

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


def _writable_default(field: pw.Field) -> bool:
    """Return True when ``field`` has a Python default that a migration can write."""
    return field.default is not None and CodeWriter().default(field) is not None

