"""Checks before DDL: the rows a migration's statements would reject, found before any runs.

Before ``apply`` runs a migration, each of its statements that the live
rows could make fail is checked with a query that only reads: duplicates
for a UNIQUE index or constraint (or a primary key), NULLs for SET NOT NULL
(unless the migration fills them first), rows violating a CHECK or a
foreign key (a NOT VALID one when the run validates it), values that do not
convert for a type change, and rows a narrowing would reject or round
(``varchar(n)``, ``numeric(p, s)``).  The first check that finds rows stops
the run with :class:`PrecheckFailed`: one line naming the table, the
column, the number of rows and up to 5 of their primary keys (never the
values themselves, which may be secrets); nothing was run or recorded.

The checks are derived from what the migration does
(:mod:`.statements`).  A check whose table the migration writes before the
statement (an UPDATE, a fill of that column, Python code) is left to the
server, which then rejects the statement itself; so is one naming a table
or column the migration creates.  They run in one READ ONLY transaction,
each in a savepoint, that is rolled back.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import peewee as pw

from ...errors import MigrationError, TableMissing
from .. import facts
from ..ddl.spec import quote
from . import statements as st
from .run import _pgerror

__all__ = ["KEYS_SHOWN", "Precheck", "PrecheckFailed", "derive", "verify"]

logger = logging.getLogger("datalayer.migrate")

KEYS_SHOWN = 5
"""How many offending rows a failed check names (by primary key)."""


class PrecheckFailed(MigrationError):
    """Rows of a table would make a statement of a migration fail; nothing ran."""

    def __init__(self, message: str, *, table: str, columns: str, count: int,
                 keys: Sequence[str], rows: str = "", fix: str = "") -> None:
        super().__init__(message)
        self.table, self.columns, self.count, self.keys = table, columns, count, tuple(keys)
        self.rows = rows
        """What is wrong: "7 rows of table items have NULL in column note (item_id ...)"."""
        self.fix = fix
        """What to do about it."""


@dataclasses.dataclass(frozen=True)
class Precheck:
    """One condition the live rows must meet before a migration runs."""

    kind: str  # nulls | duplicates | check | foreign key | convert | length | numeric | validate
    table: str  # as the statement writes it
    columns: str  # what the message names
    condition: str = ""  # SQL on alias dl_t selecting the offending rows
    rule: str = ""  # the statement's rule, for the message
    action: Any = None  # the statement read (TypeChange, Validate)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, st.norm(self.table), self.columns, self.condition)


def _bare(element: str) -> str | None:
    """Return the column an index element names, None for an expression."""
    m = re.fullmatch(r'\s*("(?:[^"]|"")+"|[A-Za-z_][\w$]*)\s*', element)
    return st.norm(m.group(1)) if m else None


def _col(name: str) -> str:
    return "dl_t." + quote(name)


def _nulls(table: str, column: str) -> Precheck:
    return Precheck("nulls", table, column, f"{_col(column)} IS NULL", "SET NOT NULL")


def _orphans(action: st.ForeignKey, parent_columns: Sequence[str]) -> str:
    """Return the condition of rows whose key the parent lacks ("": its columns not known)."""
    if not parent_columns:
        return ""
    cols = [st.norm(c) for c in action.columns]
    pcols = [st.norm(c) for c in parent_columns]
    present = " AND ".join(f"{_col(c)} IS NOT NULL" for c in cols)
    match = " AND ".join(
        f"dl_p.{quote(p)} = {_col(c)}" for c, p in zip(cols, pcols, strict=False)
    )
    return f"{present} AND NOT EXISTS (SELECT 1 FROM {action.parent} AS dl_p WHERE {match})"


def _check_of(action: st.Planned) -> list[Precheck]:
    """Return the checks one statement needs (before the skip rules)."""
    if isinstance(action, st.NotNull):
        return [_nulls(action.table, action.column)]
    if isinstance(action, st.Check):
        m = re.fullmatch(r'\(?\s*("(?:[^"]|"")+"|[A-Za-z_][\w$]*)\s+IS\s+NOT\s+NULL\s*\)?',
                         action.expression.strip(), re.I)
        if m:
            return [_nulls(action.table, st.norm(m.group(1)))]
        rule = f"CHECK ({action.expression})"
        named = ", ".join(sorted(set(re.findall(r'"((?:[^"]|"")+)"', action.expression)))) or "-"
        return [Precheck("check", action.table, named, f"NOT ({action.expression})", rule)]
    if isinstance(action, st.ForeignKey):
        cols = [st.norm(c) for c in action.columns]
        rule = f"FOREIGN KEY ({', '.join(cols)}) REFERENCES {st.norm(action.parent)}"
        return [Precheck("foreign key", action.table, ", ".join(cols),
                         _orphans(action, action.parent_columns), rule, action)]
    if isinstance(action, st.Unique):
        shown = ", ".join(_bare(e) or e for e in action.elements)
        what = "PRIMARY KEY" if action.primary_key else "UNIQUE index"
        rule = f"{what} {action.name}".strip() + f" ({shown})"
        out = [Precheck("duplicates", action.table, shown, "", rule, action)]
        if action.primary_key:
            out += [_nulls(action.table, c) for c in map(_bare, action.elements) if c]
        return out
    if isinstance(action, st.TypeChange):
        return [Precheck("convert", action.table, action.column, "", action.type, action)]
    if isinstance(action, st.Validate):
        return [Precheck("validate", action.table, action.name or "-", "", "", action)]
    return []


def derive(plans: Mapping[str, Sequence[st.Planned]]) -> dict[str, list[Precheck]]:
    """Return the checks each migration of ``plans`` (in run order) needs before it runs.

    A NOT VALID CHECK or foreign key is checked only when this migration or
    a later one of the run validates its table (else the rows are not
    checked by PostgreSQL either: adding one NOT VALID over old rows on
    purpose stays possible).
    """
    names = list(plans)
    validated_after: dict[str, set[str]] = {}
    later: set[str] = set()
    for name in reversed(names):
        later = later | {st.norm(a.table) for a in plans[name] if isinstance(a, st.Validate)}
        validated_after[name] = later
    out: dict[str, list[Precheck]] = {}
    checked_not_valid: set[str] = set()  # tables whose NOT VALID additions an earlier file checked
    for name in names:
        wrote: set[str] = set()
        filled: set[tuple[str, str]] = set()
        opaque = False
        later_checked: set[str] = set()
        found: dict[tuple[str, str, str, str], Precheck] = {}
        for action in plans[name]:
            if isinstance(action, st.Opaque):
                opaque = True
                continue
            table = st.norm(action.table)
            if isinstance(action, st.Writes):
                wrote.add(table)
                continue
            if isinstance(action, (st.Fill, st.AddColumn)):
                filled.add((table, action.column))
                continue
            if opaque or table in wrote:
                continue  # the rows change before the statement: the server checks them
            if isinstance(action, (st.Check, st.ForeignKey)) and action.not_valid and (
                table not in validated_after[name]
            ):
                continue
            if isinstance(action, st.ForeignKey) and st.norm(action.parent) in wrote:
                continue
            if isinstance(action, st.Validate) and table in checked_not_valid:
                continue  # checked when added NOT VALID, which new rows have met since
            if isinstance(action, (st.Check, st.ForeignKey)) and action.not_valid:
                later_checked.add(table)
            for check in _check_of(action):
                if check.kind == "nulls" and (table, check.columns) in filled:
                    continue
                if check.kind in ("foreign key", "duplicates") and any(
                    (table, c.strip()) in filled for c in check.columns.split(",")
                ):
                    continue
                found.setdefault(check.key, check)
        out[name] = list(found.values())
        checked_not_valid |= later_checked
    return out


# -- running the checks --------------------------------------------------------------


def _pct(text: str) -> str:
    return text.replace("%", "%%")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _primary_key(db: Any, table: str) -> list[str] | None:
    """Return the primary key columns of ``table`` ([]: none; None: no such table)."""
    row = db.execute_sql("SELECT to_regclass(%s)::oid", (table,)).fetchone()
    if row is None or row[0] is None:
        return None
    return [r[0] for r in db.execute_sql(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
        "WHERE i.indrelid = %s AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
        (row[0],),
    ).fetchall()]


def _key(db: Any, table: str) -> tuple[str, str] | None:
    """Return (SQL of the key as text on alias dl_t, its label); None: no such table."""
    cols = _primary_key(db, table)
    if cols is None:
        return None
    if not cols:
        return "dl_t.ctid::text", "ctid"
    label = cols[0] if len(cols) == 1 else "(" + ", ".join(cols) + ")"
    sql = " || ', ' || ".join(f"coalesce({_col(c)}::text, 'NULL')" for c in cols)
    return (sql if len(cols) == 1 else f"'(' || {sql} || ')'"), label


def _skipped(code: str | None) -> bool:
    """Whether a check that failed with ``code`` is left to the server (True) or stops apply.

    An undefined table, column or function (made by the migration itself), an
    expression this module could not rewrite, an expression that fails on some
    row (the statement itself will say so), a statement_timeout: the statement
    is then checked by the server as it runs.  A lost connection or a shutdown
    (class 08, 57P0x) stops the run.
    """
    return bool(code) and not str(code).startswith(("08", "57P0"))


def _offending(db: Any, check: Precheck, key: str) -> tuple[int, list[str]]:
    """Return (count, up to KEYS_SHOWN keys) of the rows failing ``check``."""
    T = check.table
    if check.kind == "duplicates":
        action = check.action
        parts = ", ".join(action.elements)
        where = [f"({e}) IS NOT NULL" for e in action.elements] if action.nulls_distinct else []
        if action.where:
            where.append(f"({action.where})")
        cond = " AND ".join(where) or "true"
        sql = (
            f"SELECT dl_k, count(*) OVER () FROM (SELECT {key} AS dl_k, "
            f"count(*) OVER (PARTITION BY {parts}) AS dl_n FROM {T} AS dl_t WHERE {cond}) dl_s "
            f"WHERE dl_n > 1 LIMIT {KEYS_SHOWN}"
        )
    else:
        sql = (f"SELECT {key}, count(*) OVER () FROM {T} AS dl_t WHERE {check.condition} "
               f"LIMIT {KEYS_SHOWN}")
    rows = db.execute_sql(_pct(sql)).fetchall()
    return (int(rows[0][1]) if rows else 0), [str(r[0]) for r in rows]


def _narrowing(typ: str, category: str, c: str) -> tuple[str, str] | None:
    """Return (kind, condition) of the values of column ``c`` (of pg_type ``category``) that
    a change to ``typ`` would reject or round, when ``typ`` is a ``varchar(n)``/``char(n)``
    or ``numeric(p[, s])``; None: other types are checked by casting every value.

    The type is read by :func:`..facts.parse_type`, as the generator and the lint read it.
    """
    name, mods, array = facts.parse_type(typ)
    if array or -1 in mods:  # an array, or a modifier that is not a plain number
        return None
    if name in ("varchar", "bpchar") and len(mods) == 1 and category == "S":
        return "length", f"char_length({c}) > {mods[0]}"
    if name == "numeric" and len(mods) in (1, 2) and category == "N":
        p, s, v = mods[0], (mods[1] if len(mods) == 2 else 0), f"{c}::numeric"
        rounded = f"round({v}, {s})"
        return "numeric", f"({v} <> {rounded} OR abs({rounded}) >= 10::numeric ^ {p - s})"
    return None


def _convert(db: Any, check: Precheck, key: str) -> tuple[Precheck, int, list[str]] | None:
    """Check a type change: narrowing by condition, anything else by casting every value."""
    change: st.TypeChange = check.action
    T, c = check.table, _col(change.column)
    category = db.execute_sql(
        "SELECT t.typcategory FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
        (T, change.column),
    ).fetchone()
    if category is None:
        return None  # a column this migration adds or renames first
    typ = " ".join(change.type.split())
    found = None if change.using else _narrowing(typ, category[0], c)
    if found is not None:
        narrowed = dataclasses.replace(check, kind=found[0], condition=found[1])
        return narrowed, *_offending(db, narrowed, key)
    expr = change.using or c
    try:
        with db.atomic():
            db.execute_sql(_pct(f"SELECT count(({expr})::{typ}) FROM {T} AS dl_t"))
        return check, 0, []
    except pw.DatabaseError as exc:
        code = getattr(_pgerror(exc), "pgcode", "") or ""
        if not code.startswith(("22", "23", "P0")):
            raise
    # Some value does not convert: try each row on its own to name them.
    body = f"""DECLARE
    r record;
    n bigint := 0;
    keys text[] := '{{}}';
BEGIN
    FOR r IN SELECT dl_t.ctid AS dl_ctid, {key} AS dl_k FROM {T} AS dl_t LOOP
        BEGIN
            PERFORM count(({expr})::{typ}) FROM {T} AS dl_t WHERE dl_t.ctid = r.dl_ctid;
        EXCEPTION WHEN others THEN
            n := n + 1;
            IF n <= {KEYS_SHOWN} THEN keys := keys || r.dl_k; END IF;
        END;
    END LOOP;
    RAISE EXCEPTION USING ERRCODE = 'DL001', MESSAGE = n::text,
        DETAIL = array_to_string(keys, chr(31));
END"""
    try:
        with db.atomic():
            db.execute_sql(_pct(f"DO $dl_check$\n{body}\n$dl_check$"))
    except pw.DatabaseError as exc:
        err = _pgerror(exc)
        if getattr(err, "pgcode", None) != "DL001":
            raise
        diag = err.diag
        keys = (diag.message_detail or "").split(chr(31))
        return check, int(diag.message_primary or 0), [k for k in keys if k]
    return check, 0, []


def _validations(db: Any, check: Precheck) -> list[Precheck]:
    """Return the checks of the NOT VALID constraints a VALIDATE statement will check."""
    action: st.Validate = check.action
    rows = db.execute_sql(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(%s) AND contype IN ('c', 'f') AND NOT convalidated "
        "AND (%s = '' OR conname = %s) ORDER BY conname",
        (check.table, action.name, action.name),
    ).fetchall()
    out: list[Precheck] = []
    for name, definition in rows:
        for read in st.read(f"ALTER TABLE {check.table} ADD CONSTRAINT "
                            f"{quote(name)} {definition}"):
            out.extend(_check_of(read))
    return out


def _run_one(
    db: Any, check: Precheck, todo: list[Precheck]
) -> tuple[Precheck, int, list[str], str] | None:
    """Run one check: (the check as run, rows found, keys shown, key label); None: not run."""
    if check.kind == "validate":
        todo[:0] = _validations(db, check)
        return None
    found = _key(db, check.table)
    if found is None:
        return None  # a table this migration creates
    key, label = found
    if check.kind == "foreign key" and not check.condition:  # REFERENCES parent: its key
        parent_key = _primary_key(db, check.action.parent)
        if not parent_key:
            return None
        check = dataclasses.replace(check, condition=_orphans(check.action, parent_key))
    if check.kind != "convert":
        return check, *_offending(db, check, key), label
    result = _convert(db, check, key)
    return None if result is None else (*result, label)


def verify(db: Any, path: Any, checks: Sequence[Precheck], *, kept: str = "") -> None:
    """Run ``checks`` on ``db`` (reads only); raise :class:`PrecheckFailed` at the first that fails.

    A check that cannot run (its table or column does not exist yet, an
    expression this module cannot rewrite) is skipped: the server checks the
    statement itself.
    """
    if not checks:
        return
    failure: PrecheckFailed | None = None
    with db.atomic() as txn:
        db.execute_sql("SET TRANSACTION READ ONLY")
        todo = list(checks)
        while todo and failure is None:
            check = todo.pop(0)
            try:
                with db.atomic():
                    outcome = _run_one(db, check, todo)
            except (pw.DatabaseError, TableMissing) as exc:  # TableMissing: the pool's 42P01
                err = _pgerror(exc)
                code = getattr(err, "pgcode", None)
                if not _skipped(code):
                    raise
                logger.info("check before DDL skipped (%s): %s on %s", code, check.kind,
                            check.table)
                continue
            if outcome is not None and outcome[1]:
                failure = _failed(path, *outcome, kept)
        txn.rollback()
    if failure is not None:
        raise failure


_PROBLEM = {
    "nulls": ("have NULL in column {columns}, which SET NOT NULL rejects",
              "give those rows a value (UPDATE {table} SET {columns} = ... WHERE {columns} IS "
              "NULL) or give the field a default, which the migration then fills in"),
    "duplicates": ("share their ({columns}) with another row, which the {rule} rejects",
                   "remove or change the duplicate rows"),
    "check": ("violate {rule}", "change those rows so that the check holds"),
    "foreign key": ("have a value in column {columns} that {parent} does not have, which "
                    "the {rule} rejects",
                    "point them at existing rows, set them to NULL or delete them"),
    "convert": ("have a value in column {columns} that does not convert to {rule}",
                "change those values, or give the type change a USING expression that "
                "converts them (m.alter_fields(..., using={{...}}))"),
    "length": ("have a value in column {columns} longer than {rule} allows",
               "shorten those values, or keep the longer type"),
    "numeric": ("have a value in column {columns} that {rule} would round or cannot hold",
                "round or change those values first, or keep the wider type"),
}


def _failed(
    path: Any, check: Precheck, count: int, keys: Sequence[str], label: str, kept: str
) -> PrecheckFailed:
    table = st.norm(check.table)
    parent = st.norm(check.rule.split(" REFERENCES ", 1)[1]) if " REFERENCES " in check.rule else ""
    problem, fix = _PROBLEM[check.kind]
    fmt = {"columns": check.columns, "rule": check.rule, "table": table, "parent": parent}
    shown = ", ".join(keys)
    more = f" and {count - len(keys)} more" if count > len(keys) else ""
    rows = "1 row" if count == 1 else f"{count} rows"
    what = problem.format(**fmt)
    if count == 1:
        what = re.sub(r"^(have|share their|violate)\b",
                      lambda m: {"have": "has", "share their": "shares its",
                                 "violate": "violates"}[m.group(1)], what)
    found = f"{rows} of table {table} {what} ({label} {shown}{more})"
    message = (
        f"{path} was not run: {found}; nothing of it ran and it is not recorded{kept}. "
        f"To go on: {fix.format(**fmt)}, then run the command again"
    )
    return PrecheckFailed(message, table=table, columns=check.columns, count=count, keys=keys,
                          rows=found, fix=fix.format(**fmt))
