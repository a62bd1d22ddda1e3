"""Expand and contract: run one part of a migration while the previous release still serves.

A migration's operations (:mod:`..operations`) are split into an *expand* part,
which old and new code both survive (new tables, nullable or defaulted columns,
indexes, NOT VALID constraints and their validation, backfills, DROP NOT NULL,
binary-coercible type changes), and a *contract* part, which removes or
narrows what old code may use (drops, SET NOT NULL, DROP DEFAULT, rewriting or
narrowing type changes, hand-written SQL and Python).  Two kinds are rewritten:

* a **rename** (``rename_column`` / ``rename_field``): expand adds the new
  column, a trigger keeping old and new in step both ways and a batched
  backfill; contract drops the trigger and the old column, then gives the new
  column its NOT NULL, default and indexes;
* a **column drop**: expand drops NOT NULL from a NOT NULL column without a
  default (so the new release's INSERTs, which leave it out, keep working);
  contract drops it.

The state of a migration between its phases is kept in a table of its own,
``<history table>_phases`` (name, phase, checksum, applied_at): the history
table gets a row only when a migration is fully applied, so upstream
``pw_migrate`` never takes a half-applied migration for an applied one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import peewee as pw

from ...errors import MigrationError
from .. import operations as ops
from ..ddl.columns import _column_ddl
from ..ddl.constraints import set_not_null
from ..ddl.effects import statement_of
from ..ddl.spec import ColumnSpec, Sql, TableSpec, quote
from ..ddl.steps import BatchFill, Online, _short_name
from ..operations import Operation, Phase
from ..operations.recording import Owners

__all__ = [
    "PHASES",
    "PhaseRun",
    "checks_of_phase",
    "ensure_table",
    "expanded",
    "has_table",
    "phase_of_step",
    "phases_table",
    "plan",
    "split",
]

PHASES = ("expand", "contract")
"""The values ``apply --phase`` takes."""

_SUFFIX = "_phases"
_BATCH = 1000

# -- which phase each statement belongs to ------------------------------------------


def phase_of_step(step: Any) -> Phase:
    """Return the phase of one queued step of an ALTER-like operation.

    From what the step's planner says of it: its kind's
    :attr:`..facts.Effect.expands`, or its own (:meth:`..ddl.spec.Sql.expanding`),
    never from its text.  Anything not known to keep old code working (a step
    with no kind, a queued callable) is :attr:`Phase.CONTRACT`.
    """
    if not isinstance(step, (Sql, Online, BatchFill)):
        return Phase.CONTRACT
    return Phase.EXPAND if statement_of(step).expands else Phase.CONTRACT


_MIXED = (ops.AlterColumns, ops.AddColumns, ops.SetConstraints, ops.AddNotNull)
"""Kinds whose statements are classified one by one (the rest take the kind's phase)."""


@dataclasses.dataclass
class Split:
    """One operation's queued callables by phase, and work to run once expand committed."""

    expand: list[Any] = dataclasses.field(default_factory=list)
    contract: list[Any] = dataclasses.field(default_factory=list)
    after_expand: list[Callable[[], None]] = dataclasses.field(default_factory=list)


def _named(fn: Callable[[], None], name: str) -> Callable[[], None]:
    fn.__name__ = name
    return fn


def _sql_call(db: Any, sql: Sql | str, name: str = "phase_sql") -> Callable[[], None]:
    text, params = (sql.text, list(sql.params) or None) if isinstance(sql, Sql) else (sql, None)

    def run() -> None:
        db.execute_sql(text, params)

    return _named(run, name)


def split(
    op: Operation, queued: Sequence[Any], steps: Sequence[Any], db: Any, later: Any = None
) -> Split:
    """Return ``op``'s ``queued`` callables (and rewrites) by phase.

    ``steps[i]`` is what ``queued[i]`` runs, as the operation recorded it
    (:class:`..operations.migrator.Recorded`; None: not a step).  ``db`` runs the
    rewrites within the migration; ``later`` (default ``db``) the work that waits
    for the expand part to commit.
    """
    out = Split()
    if isinstance(op, ops.RenameColumn) and op.before is not None:
        return _split_rename(op, db, db if later is None else later)
    if isinstance(op, ops.DropColumns) and op.before is not None:
        before, after = op.specs()
        kept = {c.name for c in after.columns}
        for col in before.columns:
            if col.name not in kept and not col.null and col.default is None:
                out.expand.append(_sql_call(
                    db, f"ALTER TABLE {before.qualified} ALTER COLUMN {quote(col.name)} "
                    "DROP NOT NULL", f"drop_not_null_{col.name}"))
        out.contract.extend(queued)
        return out
    if not isinstance(op, _MIXED):
        (out.expand if op.phase is Phase.EXPAND else out.contract).extend(queued)
        return out
    phases = [phase_of_step(step) for step in steps]
    narrows = Phase.CONTRACT in phases
    for entry, step, phase in zip(queued, steps, phases, strict=True):
        if phase is Phase.EXPAND:
            out.expand.append(entry)
        if phase is Phase.CONTRACT or (narrows and isinstance(step, BatchFill)):
            # A fill before SET NOT NULL runs again: old code wrote NULLs in between.
            out.contract.append(entry)
    return out


# -- a rename, in two phases ---------------------------------------------------------


def _renamed(op: ops.RenameColumn) -> tuple[TableSpec, TableSpec, ColumnSpec, ColumnSpec]:
    before, after = op.specs()
    after_names = {c.name for c in after.columns}
    before_names = {c.name for c in before.columns}
    olds = [c for c in before.columns if c.name not in after_names]
    news = [c for c in after.columns if c.name not in before_names]
    if len(olds) != 1 or len(news) != 1:
        raise MigrationError(
            f"cannot split the rename of {op.old} to {op.new} on {op.table} into phases: "
            "apply it without --phase"
        )
    old, new = olds[0], news[0]
    why = (
        "it is part of the primary key" if old.primary_key
        else "it has a foreign key" if old.fk is not None
        else "it has a CHECK constraint" if old.checks
        else "it has column constraints" if old.other
        else ""
    )
    if why:
        raise MigrationError(
            f"cannot rename {op.table}.{old.name} to {new.name} in phases: {why}, which the "
            "phased form (a copy kept in step by a trigger) does not carry; apply that "
            "migration without --phase, at a time when the old release is gone"
        )
    return before, after, old, new


def _trigger_names(table: str, new: str, schema: str | None) -> tuple[str, str]:
    """Return the (schema-qualified) sync function and the trigger of a phased rename."""
    name = _short_name(f"{table}_{new}_sync_dl")
    return (f"{quote(schema)}.{quote(name)}" if schema else quote(name)), quote(name)


def _sync_function(fn: str, old: str, new: str) -> str:
    o, n = quote(old), quote(new)
    # INSERT: the new column wins when given (the new release), else it copies the old one
    # (the old release).  UPDATE: whichever column changed is copied to the other.
    return f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $dl$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.{n} IS NULL THEN
            NEW.{n} := NEW.{o};
        ELSE
            NEW.{o} := NEW.{n};
        END IF;
    ELSIF NEW.{o} IS DISTINCT FROM OLD.{o} THEN
        NEW.{n} := NEW.{o};
    ELSIF NEW.{n} IS DISTINCT FROM OLD.{n} THEN
        NEW.{o} := NEW.{n};
    END IF;
    RETURN NEW;
END $dl$"""


def backfill_copy(db: Any, table: str, key: str | None, old: str, new: str,
                  batch_size: int = _BATCH) -> int:
    """Copy ``old`` into ``new`` where they differ, ``batch_size`` rows at a time by ``key``.

    Each batch is its own statement (its own transaction under autocommit); a
    table without a single-column key is done in one UPDATE.  Returns the rows changed.
    """
    o, n = quote(old), quote(new)
    differ = f"{n} IS DISTINCT FROM {o}"
    if key is None:
        cursor = db.execute_sql(f"UPDATE {table} SET {n} = {o} WHERE {differ}")
        return max(cursor.rowcount or 0, 0)
    kq, done, last = quote(key), 0, None
    while True:
        after = "" if last is None else f"WHERE {kq} > %s "
        rows = db.execute_sql(
            f"SELECT {kq} FROM {table} {after}ORDER BY {kq} LIMIT {int(batch_size)}",
            [] if last is None else [last],
        ).fetchall()
        if not rows:
            return done
        first, last = rows[0][0], rows[-1][0]
        cursor = db.execute_sql(
            f"UPDATE {table} SET {n} = {o} WHERE {kq} >= %s AND {kq} <= %s AND {differ}",
            [first, last],
        )
        done += max(cursor.rowcount or 0, 0)


def _split_rename(op: ops.RenameColumn, db: Any, later: Any) -> Split:
    before, after, old, new = _renamed(op)
    T = before.qualified
    fn, trigger = _trigger_names(before.name, new.name, before.schema)
    key = before.primary_key[0] if len(before.primary_key) == 1 else None
    out = Split()
    add = Sql(f"ALTER TABLE {T} ADD COLUMN ") + _column_ddl(
        new, null=True, default=False, checks=False
    )
    out.expand += [
        _sql_call(db, add, f"add_{new.name}"),
        _sql_call(db, _sync_function(fn, old.name, new.name), f"sync_function_{new.name}"),
        _sql_call(db, f"DROP TRIGGER IF EXISTS {trigger} ON {T}", "drop_old_trigger"),
        _sql_call(db, f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {T} "
                      f"FOR EACH ROW EXECUTE FUNCTION {fn}()", f"sync_trigger_{new.name}"),
    ]
    before_indexes = {ix.name for ix in before.indexes}
    moved = [ix for ix in after.indexes if new.name in ix.columns]
    # An index with a new name is built beside the old one; one whose name stays is
    # rebuilt once the old column (and its index with it) is gone.
    out.expand += [_sql_call(db, ix.create, f"index_{ix.name}") for ix in moved
                   if ix.name not in before_indexes]

    def copy_later() -> None:
        backfill_copy(later, T, key, old.name, new.name)

    def copy() -> None:
        backfill_copy(db, T, key, old.name, new.name)

    out.after_expand.append(_named(copy_later, f"backfill_{new.name}"))
    out.contract += [
        _named(copy, f"backfill_{new.name}"),  # rows the trigger missed: none, unless killed
        _sql_call(db, f"DROP TRIGGER IF EXISTS {trigger} ON {T}", "drop_sync_trigger"),
        _sql_call(db, f"DROP FUNCTION IF EXISTS {fn}()", "drop_sync_function"),
        _sql_call(db, f"ALTER TABLE {T} DROP COLUMN {quote(old.name)}", f"drop_{old.name}"),
    ]
    if new.default is not None:
        out.contract.append(_sql_call(
            db, Sql(f"ALTER TABLE {T} ALTER COLUMN {quote(new.name)} SET DEFAULT ") + new.default,
            f"default_{new.name}"))
    if not new.null:
        out.contract += [_sql_call(db, s, f"not_null_{new.name}")
                         for s in set_not_null(before.name, T, new.name, online=True)
                         if isinstance(s, Sql)]
    out.contract += [_sql_call(db, ix.create, f"index_{ix.name}") for ix in moved
                     if ix.name in before_indexes]
    return out


_EXPAND_CHECKS = frozenset({"duplicates", "check", "foreign key", "validate"})
"""Checks before DDL (:mod:`.prechecks`) of statements of the expand part: a unique index,
a NOT VALID constraint and its validation.  NULLs for SET NOT NULL and values a type
change would reject belong to the contract part."""


def checks_of_phase(checks: Sequence[Any], phase: Phase | None) -> list[Any]:
    """Return the checks before DDL that the part ``phase`` of a migration needs.

    The expand part needs those of its own statements; the contract part (and a
    whole migration) all of them: rows written in between may break any.
    """
    if phase is Phase.EXPAND:
        return [c for c in checks if getattr(c, "kind", None) in _EXPAND_CHECKS]
    return list(checks)


# -- which migrations run which part ------------------------------------------------


def plan(
    pending: Sequence[str], expanded_names: Iterable[str], phase: str | None
) -> list[tuple[str, Phase | None]]:
    """Return what to do with each pending migration: its phase, or None for all of it.

    Without ``phase`` a migration whose expand part is applied gets its
    contract part, any other all of it (as before phases).  ``expand`` runs the
    expand part of those that have none applied; ``contract`` the contract
    part of those whose expand part is applied.  A migration left out is not
    in the list.

    :raises MigrationError: ``contract`` while a pending migration has no expand part applied.
    """
    half = set(expanded_names)
    if phase is None:
        return [(n, Phase.CONTRACT if n in half else None) for n in pending]
    if phase == "expand":
        return [(n, Phase.EXPAND) for n in pending if n not in half]
    if phase != "contract":
        raise MigrationError(f"--phase {phase}: give expand or contract")
    missing = [n for n in pending if n not in half]
    if missing:
        raise MigrationError(
            f"{missing[0]} has not had its expand phase: run `datalayer migrate apply "
            "--phase expand` first, deploy the new release, then --phase contract; nothing "
            "was applied"
        )
    return [(n, Phase.CONTRACT) for n in pending]


# -- the table of half-applied migrations ------------------------------------------


def phases_table(router: Any) -> str:
    """Return the quoted name of ``router``'s phase table (``<history table>_phases``)."""
    parts = [router.schema, router.migrate_table + _SUFFIX] if router.schema else [
        router.migrate_table + _SUFFIX]
    quoted: str = router.database.get_sql_context().sql(pw.Entity(*parts)).query()[0]
    return quoted


def ensure_table(router: Any) -> None:
    """Create the phase table if it is missing (writes)."""
    router.database.execute_sql(
        f"CREATE TABLE IF NOT EXISTS {phases_table(router)} (id SERIAL PRIMARY KEY, "
        "name VARCHAR(255) NOT NULL, phase VARCHAR(16) NOT NULL, checksum VARCHAR(64), "
        "applied_at TIMESTAMP NOT NULL)"
    )


def has_table(router: Any) -> bool:
    """Return True when the phase table exists (a phase was ever run here; reads only)."""
    found = router.database.execute_sql(
        "SELECT to_regclass(%s)", (phases_table(router),)
    ).fetchone()
    return bool(found and found[0] is not None)


def expanded(router: Any) -> dict[str, str | None]:
    """Return ``{name: checksum}`` of the migrations with only their expand part applied.

    Reads only; none when the table does not exist.
    """
    db = router.database
    table = phases_table(router)
    if not has_table(router):
        return {}
    rows = db.execute_sql(
        f"SELECT name, checksum FROM {table} WHERE phase = 'expand' ORDER BY id"
    ).fetchall()
    return {name: checksum for name, checksum in rows}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class PhaseRun:
    """One part of one migration: picks its callables, records it, runs what follows commit.

    :meth:`select` is given to :meth:`.router.Router.execute` (after the file
    queued its operations, before they run) and :meth:`record` as its
    bookkeeping; :meth:`after` runs once the part committed.
    """

    def __init__(self, router: Any, name: str, phase: Phase) -> None:
        self.router, self.name, self.phase = router, name, phase
        self.pending_after: list[Callable[[], None]] = []

    def select(self, migrator: Any) -> None:
        """Keep only this phase's callables in ``migrator``'s queue (rewrites included)."""
        queue = list(migrator.__ops__)
        owners = Owners(migrator.take_recorded())
        byop: dict[int, dict[int, tuple[int, Any]]] = {}  # record -> id -> (its place, entry)
        for entry in queue:
            hit = owners.find(entry)
            if hit is not None:
                byop.setdefault(hit[0], {}).setdefault(id(entry), (hit[1], entry))
        owner: dict[int, Split] = {}
        firsts: dict[int, Split] = {}
        for n, entries in byop.items():  # the entries of each operation, in its order
            rec = owners.recorded[n]
            places = sorted(entries.values(), key=lambda pair: pair[0])
            mine = [entry for _, entry in places]
            steps = [rec.steps[i] for i, _ in places]
            parts = split(rec.operation, mine, steps, migrator.__database__,
                          self.router.database)
            for entry in mine:
                owner[id(entry)] = parts
            firsts[id(mine[0])] = parts
        kept: list[Any] = []
        for entry in queue:
            found = firsts.get(id(entry))
            if found is not None:
                parts = found
                chosen = parts.expand if self.phase is Phase.EXPAND else parts.contract
                kept.extend(chosen)
                if self.phase is Phase.EXPAND:
                    self.pending_after.extend(parts.after_expand)
            elif id(entry) not in owner and self.phase is Phase.CONTRACT:
                kept.append(entry)  # queued by no known operation: when old code is gone
        migrator.__ops__ = kept

    def record(self) -> None:
        """Write what is now applied: a phase row after expand, the history row after contract."""
        router = self.router
        table = phases_table(router)
        checksum = router.checksum(self.name)
        if self.phase is Phase.EXPAND:
            router.database.execute_sql(
                f"INSERT INTO {table} (name, phase, checksum, applied_at) "
                "VALUES (%s, 'expand', %s, %s)",
                (self.name, checksum, _utcnow()),
            )
            return
        router.record(self.name, checksum)
        router.database.execute_sql(f"DELETE FROM {table} WHERE name = %s", (self.name,))

    def after(self) -> None:
        """Run what waits for the expand part to commit (a rename's batched backfill).

        :raises MigrationError: when it fails; the expand part stays applied and the
            contract part runs the backfill again before it drops anything.
        """
        todo, self.pending_after = self.pending_after, []
        for fn in todo:
            try:
                fn()
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise MigrationError(
                    f"{self.router.path(self.name)}: its expand phase is applied, but "
                    f"{fn.__name__} stopped: {first}. The application keeps working (the "
                    "trigger keeps old and new columns in step); run `datalayer migrate "
                    "apply --phase contract` once the old release is gone: it finishes the "
                    "backfill before it drops anything"
                ) from exc
