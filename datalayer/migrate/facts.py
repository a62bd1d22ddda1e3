"""What PostgreSQL does when a migration statement runs: one table of facts.

The generator's statements (:mod:`.plan`, :mod:`._ddl`), the code writer's
warnings (:mod:`.generate`) and the lint (:mod:`.lint`) all read these
facts, so that they cannot disagree:

* :class:`Lock`: PostgreSQL's table lock modes, weakest first, and what
  each one holds up (:attr:`Lock.blocks`);
* :data:`EFFECTS`: per kind of statement, the lock it takes on its table,
  whether it reads every row (scans), writes a new copy of the table
  (rewrites), whether it can run inside a transaction block, and whether
  the release before it keeps working once it ran (``expands``: it belongs
  to a migration's expand part, :mod:`.runtime.phases`);
* :func:`type_change`: whether changing a column's type (and collation)
  rewrites the table or only rebuilds the column's indexes;
* :data:`NOT_VOLATILE` / :func:`first_volatile`: the functions a DEFAULT
  may call and still be evaluated once (PostgreSQL 11+ then adds the
  column without a rewrite).

From PostgreSQL's documentation ("Explicit Locking", and each command's
page), checked against PostgreSQL 12 to 17.  A leaf module: it imports
nothing from datalayer.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Protocol

__all__ = [
    "EFFECTS",
    "NOT_VOLATILE",
    "SERIALS",
    "Effect",
    "Lock",
    "Origin",
    "StatementFacts",
    "TypeChange",
    "TypeKey",
    "effect",
    "first_volatile",
    "parse_type",
    "type_change",
]


class Lock(enum.IntEnum):
    """A PostgreSQL table lock mode, ordered from weakest to strongest."""

    NONE = 0
    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def sql_name(self) -> str:
        """Return the mode as PostgreSQL spells it (``ACCESS EXCLUSIVE``)."""
        return self.name.replace("_", " ")

    @classmethod
    def of(cls, sql_name: str) -> Lock:
        """Return the mode PostgreSQL spells ``sql_name`` (``"SHARE UPDATE EXCLUSIVE"``)."""
        return cls[sql_name.strip().upper().replace(" ", "_")]

    @property
    def blocks(self) -> tuple[str, ...]:
        """Return what the lock holds up while it is held: ``reads``, ``writes``, ``DDL``.

        Reads (SELECT: ACCESS SHARE) wait only for ACCESS EXCLUSIVE; writes
        (INSERT/UPDATE/DELETE: ROW EXCLUSIVE) wait for SHARE and stronger;
        every lock holds off ALTER TABLE (ACCESS EXCLUSIVE).
        """
        if self is Lock.NONE:
            return ()
        if self >= Lock.ACCESS_EXCLUSIVE:
            return ("reads", "writes", "DDL")
        if self >= Lock.SHARE:
            return ("writes", "DDL")
        return ("DDL",)


@dataclass(frozen=True)
class Effect:
    """What one kind of statement does to the table it names."""

    lock: Lock
    scans: bool = False  # reads every row while holding ``lock``
    rewrites: bool = False  # writes a new copy of the table and its indexes
    transactional: bool = True  # False: refused inside a transaction block
    rebuilds_indexes: bool = False  # rebuilds the indexes on the column(s) it changes
    # True: code of the previous release keeps working once it ran (the expand part of a
    # migration); False: it removes or narrows what that code may use (the contract part).
    # A statement whose planner knows better says so itself (``Sql.expands``).
    expands: bool = False


_AE, _SUE, _SRE = Lock.ACCESS_EXCLUSIVE, Lock.SHARE_UPDATE_EXCLUSIVE, Lock.SHARE_ROW_EXCLUSIVE

EFFECTS: Mapping[str, Effect] = MappingProxyType({
    # tables
    "create_table": Effect(_AE, expands=True),
    "drop_table": Effect(_AE),
    "truncate": Effect(_AE),
    "rename_table": Effect(_AE),
    "set_schema": Effect(_AE),
    "references": Effect(_SRE),  # the table a new foreign key points to
    # indexes
    "create_index": Effect(Lock.SHARE, scans=True, expands=True),
    "create_index_concurrently": Effect(_SUE, scans=True, transactional=False, expands=True),
    "drop_index": Effect(_AE),
    "drop_index_concurrently": Effect(_SUE, transactional=False),
    "alter_index": Effect(_SUE),  # ALTER INDEX ... RENAME (PostgreSQL 12+), SET (...)
    "reindex": Effect(Lock.SHARE, scans=True),
    "reindex_concurrently": Effect(_SUE, scans=True, transactional=False),
    # columns
    "add_column": Effect(_AE, expands=True),
    # (a NOT NULL column without a DEFAULT does not expand: its planner says so)
    "add_column_rewriting": Effect(_AE, rewrites=True, expands=True),  # volatile DEFAULT, serial
    "add_column_checked": Effect(_AE, scans=True, expands=True),  # UNIQUE / PRIMARY KEY / CHECK
    "drop_column": Effect(_AE),
    "rename_column": Effect(_AE),
    "alter_type": Effect(_AE, scans=True, rewrites=True),
    "alter_type_in_place": Effect(_AE, expands=True),  # binary-coercible: the catalog only
    "alter_collation": Effect(_AE, scans=True, rebuilds_indexes=True),
    "set_not_null": Effect(_AE, scans=True),
    "set_not_null_checked": Effect(_AE),  # PostgreSQL 12+ with a validated CHECK
    "set_default": Effect(_AE, expands=True),  # DROP DEFAULT too, which its planner contracts
    "set_logged": Effect(_AE, rewrites=True),  # SET LOGGED / UNLOGGED
    "set_options": Effect(_SUE),  # SET STATISTICS, SET (...), CLUSTER ON, ...
    "alter_trigger": Effect(_SRE),  # ENABLE / DISABLE TRIGGER
    "alter_table": Effect(_AE),  # any other ALTER TABLE (DROP NOT NULL: its planner expands)
    # constraints
    "add_foreign_key": Effect(_SRE, scans=True),  # on both tables
    "add_foreign_key_not_valid": Effect(_SRE, expands=True),
    "add_check": Effect(_AE, scans=True),
    "add_check_not_valid": Effect(_AE, expands=True),
    "add_unique": Effect(_AE, scans=True),  # builds its index under the lock
    "add_constraint_using_index": Effect(_AE, expands=True),
    "validate_constraint": Effect(_SUE, scans=True, expands=True),
    "drop_constraint": Effect(_AE, expands=True),
    # rows and maintenance
    "select": Effect(Lock.ACCESS_SHARE),
    "insert": Effect(Lock.ROW_EXCLUSIVE),
    "update": Effect(Lock.ROW_EXCLUSIVE),
    "update_all": Effect(Lock.ROW_EXCLUSIVE, scans=True),  # no WHERE: every row
    "delete": Effect(Lock.ROW_EXCLUSIVE),
    "delete_all": Effect(Lock.ROW_EXCLUSIVE, scans=True),
    "batch_fill": Effect(Lock.ROW_EXCLUSIVE, scans=True, expands=True),
    "vacuum": Effect(_SUE, scans=True),
    "vacuum_full": Effect(_AE, scans=True, rewrites=True),
    "cluster": Effect(_AE, rewrites=True),
    "refresh_matview": Effect(_AE, scans=True),
    "refresh_matview_concurrently": Effect(Lock.EXCLUSIVE, scans=True),
    "create_trigger": Effect(_SRE),
})
"""The effect of each kind of statement (keys are the kinds the generator and lint use)."""


Origin = Literal["generated", "hand-written"]


class StatementFacts(Protocol):
    """What the lint needs to know about one statement without parsing its SQL.

    The generator knows these facts for every statement it writes (today
    :class:`.ddl.effects.Statement`; the operation objects of the engine's rework
    implement the same): the lint reads them when pglast is not installed, and
    parses only what is ``hand-written`` (``migrator.sql(...)``).
    """

    @property
    def sql(self) -> str: ...  # the statement as it runs

    @property
    def kind(self) -> str: ...  # a key of EFFECTS ("": not recognised)

    @property
    def lock(self) -> Lock: ...  # the strongest lock it takes

    @property
    def table(self) -> str | None: ...  # the table it changes (for an index: the index)

    @property
    def tables(self) -> tuple[str, ...]: ...  # every table it locks

    @property
    def scans(self) -> bool: ...

    @property
    def rewrites(self) -> bool: ...

    @property
    def transactional(self) -> bool: ...  # False: refused inside a transaction block

    @property
    def origin(self) -> str: ...  # "generated" or "hand-written" (an Origin)


def effect(kind: str, *, postgres: int = 12) -> Effect:
    """Return the effect of a statement of ``kind`` on PostgreSQL ``postgres``."""
    if kind == "alter_index" and postgres < 12:
        return Effect(_AE)  # RENAME of an index took ACCESS EXCLUSIVE before 12
    if kind == "set_not_null_checked" and postgres < 12:
        return EFFECTS["set_not_null"]
    return EFFECTS[kind]


# -- type changes ------------------------------------------------------------------------

TypeKey = tuple[str, tuple[int, ...], bool]
"""A column type: its name (``varchar``, ``numeric``...), its modifiers, whether an array.

A modifier that is not a number (an expression) is ``-1``: nothing is
known about it.
"""

_ALIASES = {
    "character varying": "varchar",
    "char varying": "varchar",
    "decimal": "numeric",
    "bit varying": "varbit",
    "int": "int4",
    "integer": "int4",
    "bigint": "int8",
    "smallint": "int2",
    "character": "bpchar",
    "char": "bpchar",
}
_TYPE_RE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*(?:\(\s*([^)]*)\))?\s*((?:\[\s*\d*\s*\]\s*)*)$"
)


def normal_name(name: str) -> str:
    """Return a type name as PostgreSQL's parser folds it (``DECIMAL`` → ``numeric``)."""
    folded = " ".join(name.lower().split()).removeprefix("pg_catalog.")
    return _ALIASES.get(folded, folded)


def parse_type(text: str) -> TypeKey:
    """Return the :data:`TypeKey` of a type written as SQL (``VARCHAR(50)``, ``int[]``)."""
    m = _TYPE_RE.match(text)
    if m is None:  # a quoted or schema-qualified name: equal only to itself
        return " ".join(text.split()), (), False
    mods: list[int] = []
    for part in (m.group(2) or "").split(",") if m.group(2) else ():
        part = part.strip()
        mods.append(int(part) if part.isdigit() else -1)
    return normal_name(m.group(1)), tuple(mods), bool(m.group(3))


_TEXTUAL = frozenset({"varchar", "text"})


def _in_place(old: TypeKey, new: TypeKey) -> bool:
    """True when PostgreSQL changes ``old`` to ``new`` in the catalog only (binary-coercible).

    varchar(n) to varchar(m >= n), to varchar or to text; text to varchar;
    numeric(p, s) to numeric(q >= p, s) or to numeric; varbit(n) to
    varbit(m >= n) or to varbit; the same type.
    """
    if old[2] != new[2] or -1 in old[1] + new[1]:
        return False
    (a, amods, _), (b, bmods, _) = old, new
    if a == b and amods == bmods:
        return True
    if a in _TEXTUAL and b in _TEXTUAL:
        if b == "text" or not bmods:
            return True
        return a == "varchar" and bool(amods) and bmods[0] >= amods[0]
    if a == b == "numeric":
        if not bmods:
            return True
        if not amods:
            return False
        scale_a = amods[1] if len(amods) > 1 else 0
        scale_b = bmods[1] if len(bmods) > 1 else 0
        return scale_a == scale_b and bmods[0] >= amods[0]
    if a == b == "varbit":
        return not bmods or (bool(amods) and bmods[0] >= amods[0])
    return False


@dataclass(frozen=True)
class TypeChange:
    """What ``ALTER COLUMN ... TYPE`` does, from the old and new type and collation."""

    kind: str  # a key of EFFECTS: alter_type, alter_type_in_place or alter_collation
    rewrites: bool
    rebuilds_indexes: bool


def type_change(
    old: TypeKey | None,
    new: TypeKey | None,
    *,
    old_collation: str | None = None,
    new_collation: str | None = None,
    using: bool = False,
) -> TypeChange:
    """Return what changing a column from ``old`` to ``new`` does to its table.

    A change that is not binary-coercible (or has ``USING``, or an unknown old
    type) rewrites the table and its indexes.  A collation change alone keeps
    the rows where they are but rebuilds every index on the column, under
    ACCESS EXCLUSIVE (checked: the table's file stays, the index's is new).
    """
    if using or old is None or new is None or not _in_place(old, new):
        return TypeChange("alter_type", True, True)
    if (old_collation or None) != (new_collation or None):
        return TypeChange("alter_collation", False, True)
    return TypeChange("alter_type_in_place", False, False)


# -- volatile functions ----------------------------------------------------------------

NOT_VOLATILE: frozenset[str] = frozenset({
    # stable: evaluated once per statement
    "now", "current_timestamp", "current_date", "current_time", "localtimestamp",
    "localtime", "transaction_timestamp", "statement_timestamp", "current_setting",
    "current_user", "current_schema", "session_user", "to_jsonb", "to_json",
    "to_timestamp", "date",
    # immutable
    "lower", "upper", "btrim", "ltrim", "rtrim", "length", "char_length", "abs", "round",
    "md5", "jsonb_build_object", "jsonb_build_array", "json_build_object",
    "json_build_array", "array_length", "make_interval", "make_date",
    # syntax that looks like a call
    "array", "row", "coalesce", "nullif", "greatest", "least",
})
"""Functions whose result does not change row to row (immutable or stable).

A DEFAULT made only of these is evaluated once when the column is added
(PostgreSQL 11+), so the table is not rewritten; any other function counts
as volatile (``random()``, ``gen_random_uuid()``, ``clock_timestamp()``,
``nextval()``, and every function this list does not know).
"""


SERIALS: frozenset[str] = frozenset({
    "smallserial", "serial2", "serial", "serial4", "bigserial", "serial8",
})
"""PostgreSQL's serial pseudo-types: a column of one is filled from a sequence (``nextval()``,
volatile), so adding it to a table writes every row."""


def first_volatile(calls: Iterable[str]) -> str | None:
    """Return the first function of ``calls`` (names, maybe schema-qualified) that is volatile."""
    for name in calls:
        if name.rsplit(".", 1)[-1].lower() not in NOT_VOLATILE:
            return name.rsplit(".", 1)[-1].lower()
    return None


_CALL_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*\(")
_STRING_RE = re.compile(r"'(?:[^']|'')*'")


def calls_in(sql: str) -> list[str]:
    """Return the names of the functions an SQL expression calls (string literals skipped)."""
    return [m.group(1) for m in _CALL_RE.finditer(_STRING_RE.sub("''", sql))]
