"""What a pending migration is about to do, read as data before any of it runs.

:func:`planned` runs the pending files' ``migrate()`` against a
:class:`~.recorder.Recorder` (nothing reaches the server), on a migrator
replayed to the applied history, and returns per file the list of its
statements in order; :func:`read` turns each statement into the
:class:`Action` objects the checks before DDL (:mod:`.prechecks`) and the
clean-up after a failure (:mod:`..online`) need: a UNIQUE index or
constraint, a CHECK, a foreign key, SET NOT NULL, a type change, a
validation, a write to a table's rows, or something that cannot be read
(Python code, SQL of another shape).

A statement the ddl planners wrote says what it does
(:meth:`..ddl.spec.Sql.doing`, the classes of :mod:`..ddl.actions`): its text is
not read.  Text is read only where a person wrote it: ``migrator.sql(...)``,
and the pieces of SQL a model writes that a planner wraps (a ``Check(...)``, a
constraint or an index given as SQL, an index with parameters).  It is first
printed by PostgreSQL's own parser when pglast (the ``lint`` extra) is
installed, in the usual forms read here.  Anything else (a ``DO`` block, a
function call) is :class:`Opaque`, and the checks after it are left to the
server.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from typing import Any

from .. import parser
from ..ddl.actions import (
    Action,
    AddColumn,
    Check,
    Fill,
    ForeignKey,
    NotNull,
    Opaque,
    Planned,
    TypeChange,
    Unique,
    Validate,
    Writes,
)

__all__ = [
    "Action",
    "AddColumn",
    "Check",
    "Fill",
    "ForeignKey",
    "NotNull",
    "Opaque",
    "Planned",
    "TypeChange",
    "Unique",
    "Validate",
    "Writes",
    "norm",
    "planned",
    "read",
    "split",
]

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_TABLE = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"


def norm(name: str) -> str:
    """Return a (maybe qualified) name as PostgreSQL folds it, for comparing two spellings."""
    parts = re.findall(rf"{_IDENT}", name)
    out = []
    for part in parts:
        out.append(part[1:-1].replace('""', '"') if part.startswith('"') else part.lower())
    return ".".join(out)


# -- splitting text --------------------------------------------------------------------

_DOLLAR_RE = re.compile(r"\$(?:[A-Za-z_]\w*)?\$")


def _scan(text: str) -> Iterator[tuple[int, str, int]]:
    """Yield ``(index, char, depth)`` of the characters outside quotes and dollar quotes."""
    i, depth, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            end = text.find(ch, i + 1)
            while end != -1 and end + 1 < n and text[end + 1] == ch:
                end = text.find(ch, end + 2)
            i = n if end == -1 else end + 1
            continue
        if ch == "$":
            m = _DOLLAR_RE.match(text, i)
            if m:
                end = text.find(m.group(), m.end())
                i = n if end == -1 else end + len(m.group())
                continue
        if ch == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end == -1 else end + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        yield i, ch, depth
        i += 1


def split(text: str, sep: str = ";") -> list[str]:
    """Split ``text`` at ``sep`` outside quotes, dollar quotes and parentheses."""
    parts, start = [], 0
    for i, ch, depth in _scan(text):
        if ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _group(text: str) -> tuple[str, str] | None:
    """Return (inside, after) of the parenthesised group ``text`` starts with."""
    text = text.lstrip()
    if not text.startswith("("):
        return None
    for i, ch, depth in _scan(text):
        if ch == ")" and depth == 0:
            return text[1:i].strip(), text[i + 1 :].strip()
    return None


# -- reading statements ------------------------------------------------------------------

_CREATE_UNIQUE_RE = re.compile(
    rf"^CREATE\s+UNIQUE\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{_IDENT})?"
    rf"\s*ON\s+(?:ONLY\s+)?(?P<table>{_TABLE})\s*(?:USING\s+\w+\s*)?(?P<rest>\(.*)$",
    re.I | re.S,
)
_ALTER_TABLE_RE = re.compile(
    rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>{_TABLE})\s+(?P<rest>.*)$",
    re.I | re.S,
)
_CONSTRAINT_RE = re.compile(rf"^ADD\s+(?:CONSTRAINT\s+(?P<name>{_IDENT})\s+)?(?P<rest>.*)$",
                            re.I | re.S)
_ALTER_COLUMN_RE = re.compile(rf"^ALTER\s+(?:COLUMN\s+)?(?P<col>{_IDENT})\s+(?P<rest>.*)$",
                              re.I | re.S)
_TYPE_RE = re.compile(r"^(?:SET\s+DATA\s+)?TYPE\s+(?P<rest>.*)$", re.I | re.S)
_ADD_COLUMN_RE = re.compile(
    rf"^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?P<col>{_IDENT})\s", re.I | re.S
)
_WRITE_RE = re.compile(
    rf"^(?:WITH\b.*?\)\s*)?(?:UPDATE\s+(?:ONLY\s+)?|DELETE\s+FROM\s+(?:ONLY\s+)?|INSERT\s+INTO\s+"
    rf"|TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?)(?P<table>{_TABLE})",
    re.I | re.S,
)
_HARMLESS_RE = re.compile(
    r"^(?:CREATE|DROP|COMMENT|GRANT|REVOKE|ALTER\s+(?:INDEX|SEQUENCE|SCHEMA|TYPE|VIEW)|"
    r"SELECT\s+setval|SELECT\s+1\b|SET\b|RESET\b|ANALYZE|--)",
    re.I,
)


def _columns(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in split(text, ","))


def _unique(table: str, name: str, rest: str, *, index: bool) -> Unique | None:
    found = _group(rest)
    if found is None:
        return None
    inside, after = found
    elements = []
    for element in _columns(inside):
        # Order and null placement do not change what is equal.
        element = re.sub(r"\s+(ASC|DESC|NULLS\s+(FIRST|LAST))\b.*$", "", element,
                         flags=re.I | re.S).strip()
        wrapped = _group(element)
        elements.append(wrapped[0] if wrapped and not wrapped[1] else element)
    if re.match(r"^INCLUDE\b", after, re.I):
        included = _group(after[len("INCLUDE"):])
        after = included[1] if included else ""
    distinct = not re.match(r"^NULLS\s+NOT\s+DISTINCT\b", after, re.I)
    where = ""
    if index:
        m = re.search(r"\bWHERE\s+(.*)$", after, re.I | re.S)
        where = m.group(1).strip() if m else ""
    return Unique(table, tuple(elements), name, where, distinct)


def _add_constraint(table: str, name: str, body: str) -> Action | None:
    not_valid = bool(re.search(r"\bNOT\s+VALID\s*$", body, re.I))
    body = re.sub(r"\s*\bNOT\s+VALID\s*$", "", body, flags=re.I)
    head = body.split("(", 1)[0].strip().upper()
    if head in ("UNIQUE", "UNIQUE NULLS NOT DISTINCT", "PRIMARY KEY"):
        if re.search(r"\bUSING\s+INDEX\b", body, re.I):
            return None  # the index was built (and checked) before
        found = _unique(table, name, body[body.index("("):], index=False)
        if found is None:
            return None
        return dataclasses.replace(found, primary_key=head == "PRIMARY KEY",
                                   nulls_distinct="NOT DISTINCT" not in head)
    if head == "CHECK":
        group = _group(body[len("CHECK"):])
        if group is None:
            return None
        return Check(table, group[0], name, not_valid)
    if head == "FOREIGN KEY":
        cols = _group(body[len("FOREIGN KEY"):].lstrip())
        if cols is None:
            return None
        m = re.match(rf"^REFERENCES\s+(?P<parent>{_TABLE})\s*(?P<rest>.*)$", cols[1], re.I | re.S)
        if not m:
            return None
        pcols = _group(m.group("rest"))  # None: the parent's primary key, found when checked
        return ForeignKey(table, _columns(cols[0]), m.group("parent"),
                          _columns(pcols[0]) if pcols else (), name, not_valid)
    return None


def _alter_table(table: str, rest: str) -> list[Planned]:
    out: list[Planned] = []
    for cmd in split(rest, ","):
        m = _CONSTRAINT_RE.match(cmd)
        if m and re.match(r"^ADD\s+(CONSTRAINT|UNIQUE|PRIMARY|CHECK|FOREIGN|EXCLUDE)\b", cmd, re.I):
            found = _add_constraint(table, norm(m.group("name") or ""), m.group("rest").strip())
            if found is not None:
                out.append(found)
            continue
        m = _ADD_COLUMN_RE.match(cmd)
        if m and re.match(r"^ADD\b", cmd, re.I):
            out.append(AddColumn(table, norm(m.group("col"))))
            continue
        m = _ALTER_COLUMN_RE.match(cmd)
        if m and not re.match(r"^ALTER\s+CONSTRAINT\b", cmd, re.I):
            col, what = norm(m.group("col")), m.group("rest").strip()
            if re.match(r"^SET\s+NOT\s+NULL$", what, re.I):
                out.append(NotNull(table, col))
            t = _TYPE_RE.match(what)
            if t:
                typ, using = _type_and_using(t.group("rest"))
                out.append(TypeChange(table, col, typ, using))
            continue
        m = re.match(rf"^VALIDATE\s+CONSTRAINT\s+(?P<name>{_IDENT})", cmd, re.I)
        if m:
            out.append(Validate(table, norm(m.group("name"))))
            continue
        m = re.match(rf"^RENAME\s+(?:TO\s+(?P<new>{_IDENT})|COLUMN\b|{_IDENT}\s+TO\b)", cmd,
                     re.I)
        if m:
            # What the names mean changes: what is checked afterwards would be the wrong rows.
            out.append(Writes(table))
            if m.group("new"):
                schema = table.rsplit(".", 1)[0] + "." if "." in norm(table) else ""
                out.append(Writes(schema + m.group("new")))
    return out


def _type_and_using(text: str) -> tuple[str, str]:
    """Split ``type [COLLATE x] [USING expr]`` into (type, using); the collation is dropped."""
    using = ""
    m = re.search(r"\s+USING\s+", text, re.I)
    if m:
        text, using = text[: m.start()], text[m.end():].strip()
    c = re.search(r"\s+COLLATE\s+", text, re.I)
    if c:
        text = text[: c.start()]
    return text.strip(), using


def _canonical(sql: str) -> list[str] | None:
    """Return the statements of hand-written ``sql`` as pglast prints them (None: no pglast).

    PostgreSQL's own parser reads what people write (comments, any case and
    spacing, ``SET DATA TYPE``, ``ONLY``) and prints it in the one form the
    readers below know; SQL it cannot parse is left to them as written.
    """
    pglast = parser.load()
    if pglast is None:
        return None
    from pglast.stream import RawStream

    try:
        return [str(RawStream()(raw.stmt)) for raw in pglast.parse_sql(sql) if raw.stmt]
    except Exception:  # not parsable (a psql meta-command, a newer syntax): read as written
        return None


def read(sql: str, *, hand_written: bool = False) -> list[Planned]:
    """Return what one statement (or several, ``;``-separated) does, in order.

    ``hand_written`` SQL goes through PostgreSQL's parser first when pglast
    (the ``lint`` extra) is installed; generated SQL is in datalayer's forms.
    """
    out: list[Planned] = []
    texts = _canonical(sql) if hand_written else None
    for text in texts if texts is not None else split(sql):
        text = text.strip()
        m = _CREATE_UNIQUE_RE.match(text)
        if m:
            found = _unique(m.group("table"), norm(m.group("name") or ""), m.group("rest"),
                            index=True)
            out.append(found if found is not None else Opaque(text))
            continue
        m = _ALTER_TABLE_RE.match(text)
        if m:
            out.extend(_alter_table(m.group("table"), m.group("rest")))
            continue
        m = _WRITE_RE.match(text)
        if m:
            out.append(Writes(m.group("table")))
            continue
        if _HARMLESS_RE.match(text):
            continue
        out.append(Opaque(text))
    return out


# -- the statements of pending migrations ------------------------------------------------


def _texts(op: Any, step: Any, recorder: Any) -> list[Planned] | None:
    """Return what one queued operation does (None: Python code).

    ``step`` is what it runs, as the operation that queued it recorded it (None:
    not a generated step).
    """
    from ..ddl.spec import Sql
    from ..ddl.steps import BatchFill, Online
    from .recorder import render

    if isinstance(step, BatchFill):
        return [Fill(step.table, norm(step.column))]
    if isinstance(step, Online):
        step = step.sql
    if isinstance(step, Sql):
        if step.does is not None:  # its planner said what it does: the text is not read
            return list(step.does)
        # A statement around SQL the model wrote (an index, a constraint): read as such.
        return read(render(step.text, step.params))
    from playhouse.migrate import Operation

    if not isinstance(op, Operation):
        return None
    recorder.take()
    try:
        op.run()
    except Exception:
        recorder.take()
        return None
    return [
        a for sql, params in recorder.take()
        for a in read(render(sql, params), hand_written=True)
    ]


def planned(
    router: Any, applied: Sequence[str], pending: Sequence[str], *, postgres: int = 12
) -> dict[str, list[Planned]]:
    """Return what each pending migration does, in order, without touching the database.

    A file that cannot be read this way (it reads the database while it is
    queued, or fails) gets ``[Opaque(...)]``, and so does every file after it.
    """
    from ..operations.migrator import bound
    from ..operations.recording import Owners
    from .files import call_migration
    from .recorder import Recorder, render

    out: dict[str, list[Planned]] = {}
    recorder = Recorder(postgres)
    try:
        migrator = router.migrator_class(recorder)
        router.replay(applied, migrator)
    except Exception as exc:
        return {name: [Opaque(f"replay failed: {exc}")] for name in pending}
    broken = ""
    for name in pending:
        if broken:
            out[name] = [Opaque(broken)]
            continue
        migrator.__ops__ = []
        take = getattr(migrator, "take_recorded", None)  # None: not datalayer's migrator
        if take is not None:
            take()
        recorder.take()
        try:
            with bound(migrator, recorder):
                call_migration(router.load(name).migrate, migrator, recorder, fake=False)
                found: list[Planned] = [
                    a for sql, params in recorder.take()
                    for a in read(render(sql, params), hand_written=True)
                ]
                owners = Owners(take() if take is not None else ())
                for entry in migrator.__ops__:
                    op = owners.queued(entry)  # the operation's own callable, not a wrapper
                    more = _texts(op, owners.step(entry), recorder)
                    if more is None:
                        if type(op).__name__ == "RowsGuard":
                            continue  # a check of its own: it writes nothing
                        found.append(Opaque(getattr(op, "__name__", "python code")))
                    else:
                        found.extend(more)
        except Exception as exc:  # left to the real run, which reports it
            broken = f"{name} could not be read: {type(exc).__name__}"
            out[name] = [Opaque(broken)]
            continue
        finally:
            migrator.__ops__ = []
        out[name] = found
    return out
