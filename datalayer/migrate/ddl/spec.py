"""Describe a peewee model as the DDL that ``create_tables()`` would run for it.

The generator compares two such descriptions (the state that the migration
history builds in memory, and the models) and the migrator turns the
difference between two of them into ALTER statements.  Everything is rendered
by peewee itself, in a PostgreSQL context, so that "equal specs" means "equal
DDL": a column's type as ``field.ddl_datatype``, its constraints as written
(``DEFAULT now()``, ``CHECK (...)``), a foreign key as
``field.foreign_key_constraint()``, an index as its ``CREATE INDEX``.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import peewee as pw
from playhouse.postgres_ext import PostgresqlExtDatabase

from ...project import sort_models
from .actions import Unique

__all__ = [
    "ColumnSpec",
    "ForeignKeyText",
    "IndexSpec",
    "Sql",
    "TableSpec",
    "UnsupportedChange",
    "qualified",
    "quote",
    "render",
    "sort_models",
    "table_settings",
    "table_spec",
]

_PG = PostgresqlExtDatabase(None)
_PLACEHOLDER_TABLE = "__datalayer_table__"
_PLACEHOLDER_INDEX = "__datalayer_index__"
_INDEX_NAME_RE = re.compile(r'INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?"?([^"\s(]+)"?', re.IGNORECASE)


class UnsupportedChange(ValueError):
    """A model change that cannot be turned into a migration automatically."""


@dataclasses.dataclass(frozen=True)
class Sql:
    """SQL text with its parameters, as peewee renders it for psycopg2.

    A statement the ddl planners write also says what it is, for the table of facts
    (:data:`..facts.EFFECTS`): its ``kind``, the ``tables`` it locks and the tables a
    foreign key in it ``refs`` (each as written), and ``expands`` when the planner knows
    better than its kind whether the previous release survives it (None: the kind's
    :attr:`..facts.Effect.expands`), and what it ``does`` that the rows could make fail
    (:mod:`.actions`, for the checks before DDL; None: not said, its text is read).
    None of these is compared.
    """

    text: str
    params: tuple[Any, ...] = ()
    kind: str = dataclasses.field(default="", compare=False)
    tables: tuple[str, ...] = dataclasses.field(default=(), compare=False)
    refs: tuple[str, ...] = dataclasses.field(default=(), compare=False)
    expands: bool | None = dataclasses.field(default=None, compare=False)
    does: tuple[Any, ...] | None = dataclasses.field(default=None, compare=False)

    def __str__(self) -> str:
        return self.text

    def __add__(self, other: Sql | str) -> Sql:
        if isinstance(other, str):
            return dataclasses.replace(self, text=self.text + other)
        does = None if self.does is None and other.does is None else (
            (self.does or ()) + (other.does or ()))
        return Sql(self.text + other.text, self.params + other.params, self.kind or other.kind,
                   self.tables or other.tables, self.refs + other.refs,
                   other.expands if self.expands is None else self.expands, does)

    def __radd__(self, other: str) -> Sql:
        return dataclasses.replace(self, text=other + self.text)

    def of(self, kind: str, *tables: str) -> Sql:
        """Return this statement as one of ``kind`` (a key of the facts) locking ``tables``."""
        return dataclasses.replace(self, kind=kind, tables=tables)

    def expanding(self, expands: bool) -> Sql:
        """Return this statement as one the previous release survives (or not), whatever its kind.

        For a statement whose kind's :attr:`..facts.Effect.expands` does not hold:
        ``DROP DEFAULT`` (a ``set_default``), ``DROP NOT NULL`` (an ``alter_table``), a
        NOT NULL column added without a DEFAULT, the CHECK behind an online SET NOT NULL.
        """
        return dataclasses.replace(self, expands=expands)

    def doing(self, *actions: Any) -> Sql:
        """Return this statement saying what it does (:mod:`.actions`; none: nothing checkable).

        The checks before DDL read these instead of the text, which is then never
        parsed back.
        """
        return dataclasses.replace(self, does=actions)


def quote(name: str) -> str:
    """Return ``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def qualified(table: str, schema: str | None = None) -> str:
    """Return the quoted, optionally schema-qualified, name of ``table``."""
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


def _untyped(obj: Any) -> Any:
    """Return ``obj`` typed as Any, to reach peewee attributes its stubs do not declare."""
    return obj


def database_of(model: type[pw.Model]) -> pw.Database:
    """Return the PostgreSQL database that renders ``model`` (its own if it is one)."""
    db = model._meta.database
    if isinstance(db, pw.Proxy):
        db = db.obj
    return db if isinstance(db, pw.PostgresqlDatabase) else _PG


def render(node: Any, db: pw.Database | None = None, *, values_scope: bool = False) -> Sql:
    """Render a peewee node (or a field's DDL piece) to :class:`Sql`."""
    ctx = (db or _PG).get_sql_context()
    if values_scope:
        # How Index.__sql__ renders its expressions: bare column names.
        with ctx.scope_values(subquery=True):
            ctx.sql(node)
    else:
        ctx.sql(node)
    text, params = ctx.query()
    return Sql(text, tuple(params))


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    """One column: what ``CREATE TABLE`` says about it."""

    name: str
    field_name: str
    type: Sql
    null: bool
    primary_key: bool
    default: Sql | None
    checks: tuple[Sql, ...]
    other: tuple[Sql, ...]
    collation: str | None
    fk: Sql | None
    fk_name: str | None
    # Not part of the comparison: how to add the column, how to fill it.
    ddl: Sql = dataclasses.field(compare=False)
    ddl_nullable: Sql = dataclasses.field(compare=False)
    py_default: Any = dataclasses.field(default=None, compare=False)
    db_value: Callable[[Any], Any] | None = dataclasses.field(default=None, compare=False)
    # The column ``fk`` refers to (in the table ``fk.refs`` names), for the checks before DDL.
    fk_column: str | None = dataclasses.field(default=None, compare=False)
    # ``fk``'s text around the names a rename changes (this column's, the table's it
    # refers to): the same key for either renamed, without reading ``fk`` back.
    fk_text: ForeignKeyText | None = dataclasses.field(default=None, compare=False)

    def fk_renamed(self, new: str) -> Sql | None:
        """Return ``fk`` as it reads once this column is renamed ``new`` (None: no fk)."""
        if self.fk is None:
            return None
        if self.fk_text is None:
            raise UnsupportedChange(f"cannot rename {self.name}: its foreign key is not known")
        return Sql(self.fk_text.text(new), self.fk.params)

    def fk_retargeted(self, table: str) -> ColumnSpec:
        """Return this column with its foreign key referring to ``table`` (quoted) instead."""
        if self.fk is None or self.fk_text is None:
            raise UnsupportedChange(f"cannot retarget the foreign key of {self.name}")
        fk_text = dataclasses.replace(self.fk_text, table=table)
        return dataclasses.replace(self, fk=Sql(fk_text.text(self.name), self.fk.params),
                                   fk_text=fk_text)


@dataclasses.dataclass(frozen=True)
class ForeignKeyText:
    """A column's foreign key as peewee renders it, around the names a rename changes."""

    head: str  # up to the column's quoted name: ``[CONSTRAINT "name" ]FOREIGN KEY (``
    table: str  # the table it refers to, quoted (and schema-qualified)
    tail: str  # after it: ``("id")[ ON DELETE ...]``

    def text(self, column: str) -> str:
        """Return the key's text for the column named ``column``."""
        return f"{self.head}{quote(column)}) REFERENCES {self.table} {self.tail}"


@dataclasses.dataclass(frozen=True)
class IndexSpec:
    """One index: its name and its definition apart from name and table."""

    name: str
    definition: Sql
    unique: bool
    origin: str = dataclasses.field(compare=False)
    columns: tuple[str, ...] = dataclasses.field(compare=False)
    create: Sql = dataclasses.field(compare=False)
    # The words peewee starts ``create`` with (``CREATE [UNIQUE] INDEX ``); "" when
    # ``create`` is SQL text the model wrote (``SQL('CREATE INDEX ...')``).
    head: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One table: columns, table constraints and indexes, as ``create_tables()`` makes them."""

    name: str
    schema: str | None
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    checks: tuple[Sql, ...]
    constraints: tuple[Sql, ...]
    indexes: tuple[IndexSpec, ...]
    create: tuple[Sql, ...] = dataclasses.field(compare=False)
    # ``Meta.table_settings``, each as written (after the column list of CREATE TABLE).
    settings: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return qualified(self.name, self.schema)

    def column(self, name: str) -> ColumnSpec | None:
        """Return the column named ``name``, if any."""
        for col in self.columns:
            if col.name == name:
                return col
        return None

    def index(self, name: str) -> IndexSpec | None:
        """Return the index named ``name``, if any."""
        for idx in self.indexes:
            if idx.name == name:
                return idx
        return None


def _classify(nodes: Iterable[Any], db: pw.Database) -> tuple[Sql | None, list[Sql], list[Sql]]:
    """Split a field's ``constraints`` into (server default, CHECKs, anything else)."""
    default: Sql | None = None
    checks: list[Sql] = []
    other: list[Sql] = []
    for node in nodes:
        sql = render(node, db)
        head = sql.text.lstrip().upper()
        if head.startswith("DEFAULT "):
            default = Sql(sql.text.lstrip()[len("DEFAULT "):].strip(), sql.params)
        elif is_check(sql):
            checks.append(sql)
        else:
            other.append(dataclasses.replace(sql, refs=references_in(sql.text)))
    return default, checks, other


_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_REFERENCES_RE = re.compile(rf"REFERENCES\s+({_IDENT}(?:\s*\.\s*{_IDENT})?)", re.IGNORECASE)


def references_in(text: str) -> tuple[str, ...]:
    """Return the tables a constraint written in a model (SQL text) references, as written."""
    return tuple(m.group(1) for m in _REFERENCES_RE.finditer(text))


def is_check(sql: Sql) -> bool:
    """Return True for ``CHECK (...)`` and ``CONSTRAINT name CHECK (...)``."""
    return read_constraint(sql).keyword == "CHECK"


_UNIQUE_RE = re.compile(
    r'^\s*(?:CONSTRAINT\s+("(?:[^"]|"")+"|\S+)\s+)?UNIQUE\s*\(([^()]*)\)\s*$', re.IGNORECASE
)
_FOREIGN_RE = re.compile(
    r'^\s*(?:CONSTRAINT\s+("(?:[^"]|"")+"|\S+)\s+)?FOREIGN\s+KEY\b', re.IGNORECASE
)


@dataclasses.dataclass(frozen=True)
class TableConstraint:
    """What a table constraint a model wrote as SQL text (``Meta.constraints``) is.

    Read from that text (a person's, not the generator's), here only.
    """

    kind: str  # of the statement adding it: add_foreign_key, add_unique, add_check, alter_table
    foreign_key: bool  # ``[CONSTRAINT name] FOREIGN KEY ...``: can be added NOT VALID
    unique_name: str | None = None  # of ``[CONSTRAINT name] UNIQUE (col, ...)``, if named
    unique_columns: tuple[str, ...] = ()  # of ``[CONSTRAINT name] UNIQUE (col, ...)``
    name: str | None = None  # of ``CONSTRAINT name ...``
    keyword: str = ""  # the word after the optional ``CONSTRAINT name``, upper case (UNIQUE)
    check_body: str | None = None  # the expression of a constraint exactly ``CHECK (expr)``


def _after_name(text: str) -> tuple[str | None, str]:
    """Return (the name of ``CONSTRAINT name``, the text after it); (None, text) without one.

    A quoted name may hold spaces and ``""``; whitespace must follow the name.
    """
    text = text.lstrip()
    if text[:10].upper() != "CONSTRAINT" or not text[10:11].isspace():
        return None, text
    rest = text[10:].lstrip()
    end = 0
    if rest.startswith('"'):
        end = 1
        while end < len(rest):
            if rest[end] == '"':
                if rest[end + 1:end + 2] != '"':
                    break
                end += 1
            end += 1
        end += 1
    else:
        while end < len(rest) and not rest[end].isspace():
            end += 1
    if not rest[end:end + 1].isspace():
        return None, ""  # no whitespace after the name: not a constraint this reads
    return _unquote(rest[:end]), rest[end:].lstrip()


def _unquote(name: str) -> str:
    name = name.strip()
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def read_constraint(sql: Sql) -> TableConstraint:
    """Return what the table constraint ``sql`` (written in a model) is."""
    upper = " ".join(sql.text.upper().split())
    fk = "FOREIGN KEY" in upper or " REFERENCES " in f" {upper}"
    kind = ("add_foreign_key" if fk
            else "add_unique" if re.search(r"\b(UNIQUE|PRIMARY KEY|EXCLUDE)\b", upper)
            else "add_check" if re.search(r"\bCHECK\b", upper) else "alter_table")
    m = _UNIQUE_RE.match(sql.text)
    name, rest = _after_name(sql.text)
    word = 0
    while word < len(rest) and (rest[word].isalnum() or rest[word] == "_"):
        word += 1
    text = sql.text.removesuffix("\n")
    body = (text[len("CHECK ("):-1] if text.startswith("CHECK (") and text.endswith(")")
            else None)
    return TableConstraint(
        kind,
        bool(_FOREIGN_RE.match(sql.text)),
        (_unquote(m.group(1)) if m and m.group(1) else None),
        tuple(_unquote(c) for c in m.group(2).split(",")) if m else (),
        name,
        rest[:word].upper(),
        body,
    )


def constraint_name(sql: Sql) -> str | None:
    """Return the explicit name of ``CONSTRAINT name ...``, or None."""
    return read_constraint(sql).name


def column_spec(field: pw.Field, db: pw.Database | None = None) -> ColumnSpec:
    """Return what ``CREATE TABLE`` says about ``field``'s column."""
    return _column_spec(field, db or database_of(field.model))


def deferred_fk_name(field: pw.ForeignKeyField) -> str:
    """Return the name peewee's ``create_foreign_key()`` gives a DeferredForeignKey's constraint."""
    truncate: Any = _untyped(pw)._truncate_constraint_name
    name: str = truncate(field.get_constraint_name())
    return name


_PLAIN = (str, int, float, bool, type(None))
_REFERRING = (pw.ForeignKeyField, pw.DeferredForeignKey)
_MEMO_ATTR = "_datalayer_column_specs"
"""The memo's attribute on a model's ``_meta``: render key -> id(field) -> its entry.

On the model, not in a module-level dict: a spec holds its field (``db_value`` is
the field's bound method), so a global memo would keep every field, and its
model, alive for good.  On the model, the memo goes with it.
"""


def _render_key(db: pw.Database) -> tuple[Any, ...]:
    """Return what SQL rendered by ``db`` depends on (its SQL context's options).

    Not the object itself: a migration runs on a view of the database
    (:func:`.runtime.recorder.watched`), a new object each time that renders alike.
    """
    options: dict[str, Any] = db.get_context_options()
    # Scalars as they are, other values by identity (lists and tuples: and their items');
    # a loop of its own, as this runs a few times for every operation.
    key: list[Any] = [id(db.context_class)]
    append, plain, seq = key.append, _PLAIN, (list, tuple)
    for k, v in options.items():
        v = getattr(v, "__func__", v)  # a bound method is new each time: its function is not
        if isinstance(v, plain):
            append((k, v))
        elif isinstance(v, seq):
            append((k, (id(v), tuple(map(id, v)))))
        else:
            append((k, id(v)))
    return tuple(key)


def _memo_entry(field: pw.Field, spec: ColumnSpec) -> tuple[Any, ...]:
    """Return the memo entry of ``field``'s ``spec``: (field, class, names, values, lists, spec).

    A later lookup is a hit only while the field is as it was: same class,
    same attribute names, the same values (compared by identity, never by a
    value's ``__eq__``, which peewee overloads) and, for each list value
    (``constraints`` ...), the same items: a field changed in place (``null``,
    ``default``, a constraint appended ...) is rendered again.  The entry
    holds the values and the items, so no identity can be taken by another
    object while it lives.
    """
    attrs = vars(field)
    values = tuple(attrs.values())
    lists = tuple((v, tuple(v)) for v in values if type(v) is list)
    return (field, type(field), tuple(attrs), values, lists, spec)


def _column_spec(
    field: pw.Field, db: pw.Database, db_key: tuple[Any, ...] | None = None
) -> ColumnSpec:
    """Return ``field``'s column spec, rendered once per state of the field.

    Rendering goes through peewee's SQL builder (about 0.1 ms a column); an
    operation compares its table's spec before and after, so without the memo
    a history of N one-column files rendered its tables' columns N times over.
    A foreign key is rendered each time: its type and constraint depend on
    the table it refers to, which other operations rename or change.
    """
    if isinstance(field, (pw.ForeignKeyField, pw.DeferredForeignKey)):
        return _render_column_spec(field, db)
    model = getattr(field, "model", None)
    if model is None:  # a field of no model: nowhere to keep it
        return _render_column_spec(field, db)
    if db_key is None:
        db_key = _render_key(db)
    return _column_specs(model._meta, (field,), db, db_key)[0]


def _column_specs(
    meta: Any, fields: Sequence[pw.Field], db: pw.Database, db_key: tuple[Any, ...]
) -> tuple[ColumnSpec, ...]:
    """Return the column specs of ``fields`` (of the model of ``meta``), from its memo.

    The memo (see :data:`_MEMO_ATTR`) is per rendering key: a database whose
    SQL renders otherwise starts it afresh.
    """
    memos: dict[tuple[Any, ...], dict[int, tuple[Any, ...]]] | None = getattr(
        meta, _MEMO_ATTR, None
    )
    if memos is None or len(memos) > 4:  # a handful of render keys in practice
        memos = {}
        setattr(meta, _MEMO_ATTR, memos)
    memo = memos.get(db_key)
    if memo is None:
        memo = memos[db_key] = {}
    out: list[ColumnSpec] = []
    get, is_ = memo.get, operator.is_
    for field in fields:
        # A hit while the field is as it was (see _memo_entry); C loops, as this runs
        # for every column of every operation.
        hit = get(id(field))
        if hit is not None and hit[0] is field:
            attrs = vars(field)
            values = hit[3]
            if (
                len(attrs) == len(values)
                and all(map(is_, attrs.values(), values))
                and tuple(attrs) == hit[2]
                and type(field) is hit[1]
                and (not hit[4] or all(
                    len(v) == len(was) and all(map(is_, v, was)) for v, was in hit[4]
                ))
            ):
                out.append(hit[5])
                continue
        if isinstance(field, _REFERRING):  # never memoized: see _column_spec
            out.append(_render_column_spec(field, db))
            continue
        spec = _render_column_spec(field, db)
        if len(memo) > 2 * len(meta.fields) + 16:  # fields the model no longer has: let them go
            known = meta.fields
            for k, entry in list(memo.items()):
                if known.get(entry[0].name) is not entry[0]:
                    del memo[k]
        memo[id(field)] = _memo_entry(field, spec)
        out.append(spec)
    return tuple(out)


def _render_column_spec(field: pw.Field, db: pw.Database) -> ColumnSpec:
    if getattr(field, "sequence", None):
        raise UnsupportedChange(
            f"{field.model.__name__}.{field.name} uses a sequence (sequence=...); the migration "
            "tooling does not handle those: use an AutoField or a server default instead"
        )
    ctx = db.get_sql_context()
    dtype = field.ddl_datatype(ctx)
    default, checks, other = _classify(field.constraints or (), db)
    fk: Sql | None = None
    fk_name: str | None = None
    fk_column: str | None = None
    fk_text: ForeignKeyText | None = None
    if isinstance(field, pw.ForeignKeyField):
        # A resolved DeferredForeignKey too: its constraint is the one peewee's
        # create_foreign_key() adds once both tables exist, which names it explicitly.
        node = field.foreign_key_constraint(bool(field.deferred))
        fk = render(node, db, values_scope=True)
        fk_text = _fk_text(node, field, db, fk)
        rel = field.rel_model._meta
        fk = dataclasses.replace(fk, refs=(qualified(rel.table_name, rel.schema),))
        fk_name = field.constraint_name or (deferred_fk_name(field) if field.deferred else None)
        fk_column = field.rel_field.column_name
    refs = tuple(r for o in other for r in o.refs)
    ddl = dataclasses.replace(render(field.ddl(db.get_sql_context()), db), refs=refs)
    if field.null:  # the column as it is, rendered once
        ddl_nullable = ddl
    else:
        null_saved = field.null
        try:
            field.null = True
            ddl_nullable = dataclasses.replace(
                render(field.ddl(db.get_sql_context()), db), refs=refs
            )
        finally:
            field.null = null_saved
    return ColumnSpec(
        name=field.column_name,
        field_name=field.name,
        type=render(dtype, db) if dtype is not None else Sql(""),
        null=bool(field.null),
        primary_key=bool(field.primary_key),
        default=default,
        checks=tuple(checks),
        other=tuple(other),
        collation=field.collation,
        fk=fk,
        fk_name=fk_name,
        ddl=ddl,
        ddl_nullable=ddl_nullable,
        py_default=field.default,
        db_value=field.db_value,
        fk_column=fk_column,
        fk_text=fk_text,
    )


def _fk_text(node: Any, field: pw.Field, db: pw.Database, fk: Sql) -> ForeignKeyText | None:
    """Return the text of the foreign key ``node`` around ``field`` and the table it refers to.

    Rendered from the nodes peewee's ``foreign_key_constraint()`` lists: ``[CONSTRAINT
    name] FOREIGN KEY (field) REFERENCES table (column) [ON ...]``; None when that is
    not how it reads.
    """
    nodes = list(getattr(node, "nodes", ()))
    at = next((i for i, n in enumerate(nodes) if isinstance(n, pw.NodeList) and n.parens
               and len(n.nodes) == 1 and n.nodes[0] is field), None)
    if at is None or len(nodes) < at + 4:
        return None
    head = render(pw.NodeList(nodes[:at]), db, values_scope=True).text
    table = render(nodes[at + 2], db, values_scope=True).text
    tail = render(pw.NodeList(nodes[at + 3:]), db, values_scope=True).text
    found = ForeignKeyText((head + " " if head else "") + "(", table, tail)
    if found.text(field.column_name) != fk.text:
        return None
    return found


def _unique_of(index: Any, table: str, db: pw.Database) -> tuple[Unique, ...] | None:
    """Return what a peewee index checks of the rows: () for a plain index, its Unique.

    Rendered as ``Index.__sql__`` renders the pieces; for a piece with parameters,
    None: not said (the statement's text is then read).
    """
    if not index._unique:
        return ()
    parts = [render(pw.SQL(e) if isinstance(e, str) else
                    e.node if isinstance(e, pw.Ordering) else e, db, values_scope=True)
             for e in index._expressions]
    where = render(index._where, db, values_scope=True) if index._where is not None else Sql("")
    if any(p.params for p in parts) or where.params:
        return None
    distinct = getattr(index, "_nulls_distinct", None) is not False
    return (Unique(table, tuple(p.text for p in parts), index._name, where.text, distinct),)


def _index_spec(model: type[pw.Model], index: Any, origin: str, db: pw.Database) -> IndexSpec:
    meta = model._meta
    # peewee's index attributes are private (and untyped): read them through Any.
    if isinstance(index, pw.Index):
        index = _untyped(index)
        # The definition without the index's and the table's names, so that a
        # renamed index (or an index of a renamed table) is recognised.
        neutral = copy.copy(index)
        neutral._name = _PLACEHOLDER_INDEX
        neutral._table = pw.Entity(_PLACEHOLDER_TABLE)
        neutral._safe = False
        definition = render(neutral, db)
        concrete = copy.copy(index)
        concrete._table = meta.table
        concrete._safe = False
        create = render(concrete, db).of("create_index", qualified(meta.table_name, meta.schema))
        checked = _unique_of(index, create.tables[0], db)
        if checked is not None:
            create = create.doing(*checked)
        head = "CREATE UNIQUE INDEX " if index._unique else "CREATE INDEX "  # Index.__sql__'s
        columns = tuple(
            e.column_name for e in index._expressions if isinstance(e, pw.Field)
        )
        return IndexSpec(
            name=index._name,
            definition=definition,
            unique=bool(index._unique),
            origin=origin,
            columns=columns,
            create=create,
            head=head if create.text.startswith(head) else "",
        )
    sql = render(index, db)
    m = _INDEX_NAME_RE.search(sql.text)
    if not m:
        raise UnsupportedChange(
            f"{model.__name__}: cannot find the name in index SQL {sql.text!r}; "
            "use Model.index(...) or ModelIndex(..., name=...) instead"
        )
    return IndexSpec(
        name=m.group(1),
        definition=Sql(sql.text.replace(m.group(1), _PLACEHOLDER_INDEX), sql.params),
        unique=" UNIQUE " in f" {sql.text.upper()} ",
        origin=origin,
        columns=(),
        create=sql,
    )


def plain_unique_definition(column: str) -> Sql:
    """Return the :attr:`IndexSpec.definition` of a plain unique index on ``column`` alone."""
    index: Any = pw.Index(_PLACEHOLDER_INDEX, pw.Table(_PLACEHOLDER_TABLE), [pw.Entity(column)],
                          unique=True)
    index._table = pw.Entity(_PLACEHOLDER_TABLE)  # as _index_spec renders it: no table object
    return render(index)


def index_entries(model: type[pw.Model]) -> list[tuple[str, Any]]:
    """Return ``(origin, index)`` for each index of ``model``, as ``fields_to_index()`` lists them.

    ``origin`` is ``field:<name>`` for an index made by ``index=True`` /
    ``unique=True`` on a field, ``meta:<position>`` for an entry of
    ``Meta.indexes``.
    """
    meta = model._meta
    out: list[tuple[str, Any]] = []
    for f in meta.sorted_fields:
        if not f.primary_key and (f.index or f.unique):
            out.append((f"field:{f.name}", None))
    for pos, _ in enumerate(meta.indexes):
        out.append((f"meta:{pos}", None))
    built = meta.fields_to_index()
    if len(built) != len(out):  # pragma: no cover - peewee changed fields_to_index
        raise RuntimeError("peewee's fields_to_index() no longer matches its fields and indexes")
    return [(origin, idx) for (origin, _), idx in zip(out, built, strict=True)]


def table_spec(model: type[pw.Model], *, create: bool = True) -> TableSpec:
    """Return what ``create_tables()`` would create for ``model``.

    ``create=False`` leaves :attr:`TableSpec.create` empty (not rendered), for
    a caller that compares specs only (an ALTER is planned from two specs).
    """
    meta = model._meta
    db = database_of(model)
    db_key = _render_key(db)
    columns = _column_specs(meta, meta.sorted_fields, db, db_key)
    pk: tuple[str, ...]
    if meta.composite_key:
        composite: Any = meta.primary_key
        pk = tuple(meta.fields[n].column_name for n in composite.field_names)
    elif meta.primary_key:
        pk = (meta.primary_key.column_name,)
    else:
        pk = ()
    checks: list[Sql] = []
    constraints: list[Sql] = []
    refs = [r for c in columns if c.ddl.refs for r in c.ddl.refs]
    if any(c.fk is not None for c in columns):
        refs += [r for f, c in zip(meta.sorted_fields, columns, strict=True) if c.fk is not None
                 and not getattr(f, "deferred", False) for r in c.fk.refs]
    for node in meta.constraints or ():
        sql = render(node, db)
        sql = dataclasses.replace(sql, refs=references_in(sql.text))
        refs += sql.refs
        (checks if is_check(sql) else constraints).append(sql)
    indexes = _distinct_names(
        [_index_spec(model, idx, origin, db) for origin, idx in index_entries(model)]
    )
    statements: list[Sql] = []
    if create:
        table = _create_table(model, db, db_key, columns, checks + constraints)
        statements.append(dataclasses.replace(
            table, kind="create_table", tables=(qualified(meta.table_name, meta.schema),),
            refs=tuple(refs), does=(),  # a new table: no rows
        ))
        statements.extend(ix.create for ix in indexes)
    return TableSpec(
        name=meta.table_name,
        schema=meta.schema,
        columns=columns,
        primary_key=pk,
        checks=tuple(checks),
        constraints=tuple(constraints),
        indexes=indexes,
        create=tuple(statements),
        settings=table_settings(model),
    )


def table_settings(model: type[pw.Model]) -> tuple[str, ...]:
    """Return ``model``'s ``Meta.table_settings`` (one string or several) as a tuple."""
    found = model._meta.table_settings
    if not found:
        return ()
    return (found,) if isinstance(found, str) else tuple(found)


_CREATE_MEMO_ATTR = "_datalayer_create_tables"
"""The memo's attribute on a model's ``_meta`` (on the model: its specs hold its fields)."""
_CREATE_MEMO_SIZE = 16


def _create_table(
    model: type[pw.Model],
    db: pw.Database,
    db_key: tuple[Any, ...],
    columns: tuple[ColumnSpec, ...],
    constraints: Sequence[Sql],
) -> Sql:
    """Return ``model``'s ``CREATE TABLE`` statement, rendered once per state of the table.

    What peewee renders it from: the table's name and schema, each column's
    definition (the column specs, which are the same objects while their
    fields do not change; a foreign key's spec is new each time, so a table
    with one is rendered each time), the composite key, the table
    constraints and options.  The memo (on the model) keeps the specs it was
    keyed by alive, so their identities cannot be reused by others.
    """
    meta = model._meta
    composite: Any = meta.primary_key if meta.composite_key else None
    key = (
        db_key,
        meta.table_name,
        meta.schema,
        tuple(map(id, columns)),
        tuple(composite.field_names) if composite is not None else None,
        tuple((c.text, repr(c.params)) for c in constraints),
        repr(meta.table_settings),
        repr(meta.options),
        bool(meta.strict_tables),
        bool(meta.without_rowid),
    )
    memo: dict[tuple[Any, ...], tuple[tuple[ColumnSpec, ...], Sql]] | None = getattr(
        meta, _CREATE_MEMO_ATTR, None
    )
    if memo is None:
        memo = {}
        setattr(meta, _CREATE_MEMO_ATTR, memo)
    hit = memo.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], columns, strict=True)):
        return hit[1]
    # A schema manager of our own: the model may be bound to no database at all.
    manager: Any = pw.SchemaManager(model, db)
    sql = render(manager._create_table(safe=False), db)
    if len(memo) >= _CREATE_MEMO_SIZE:
        memo.pop(next(iter(memo), ()), None)
    memo[key] = (columns, sql)
    return sql


def _distinct_names(indexes: Sequence[IndexSpec]) -> tuple[IndexSpec, ...]:
    """Return ``indexes`` without those named like an earlier one, as ``create_tables()`` does.

    It creates indexes with ``IF NOT EXISTS``: a ``Meta.indexes`` entry that repeats the
    name of a field's index (``<table>_<column>`` of a foreign key) is skipped.
    """
    seen: set[str] = set()
    out = []
    for ix in indexes:
        if ix.name not in seen:
            seen.add(ix.name)
            out.append(ix)
    return tuple(out)


def shadowed_indexes(model: type[pw.Model]) -> list[str]:
    """Return a line for each index of ``model`` that ``create_tables()`` skips unlike its twin.

    An index named like an earlier one of the table is skipped; when the two differ
    (columns, uniqueness, condition), the model asks for an index it never gets.
    """
    db = database_of(model)
    first: dict[str, IndexSpec] = {}
    out = []
    for origin, idx in index_entries(model):
        ix = _index_spec(model, idx, origin, db)
        twin = first.setdefault(ix.name, ix)
        if twin is not ix and twin.definition != ix.definition:
            def what(spec: IndexSpec) -> str:
                kind, where = spec.origin.split(":", 1)
                return f"field {where}" if kind == "field" else f"Meta.indexes entry {where}"
            out.append(
                f"{model._meta.table_name}: index {ix.name} of {what(ix)} has the name of the "
                f"index of {what(twin)} but another definition, and create_tables() skips it "
                "(CREATE INDEX IF NOT EXISTS); give it a name of its own "
                "(ModelIndex(..., name=...)) or remove it"
            )
    return out


_STRING_LITERAL = re.compile(r"('(?:[^']|'')*')")


def rename_identifier(sql: Sql, renames: Mapping[str, str]) -> Sql:
    """Return ``sql`` with the column names in ``renames`` replaced (quoted or bare words).

    String literals are left alone, as PostgreSQL leaves them when it renames
    a column that an expression mentions.
    """
    parts = _STRING_LITERAL.split(sql.text)
    for i in range(0, len(parts), 2):  # even parts are outside string literals
        text = parts[i]
        for old, new in renames.items():
            text = text.replace(quote(old), quote(new))
            text = re.sub(rf'(?<![\w"$.]){re.escape(old)}(?![\w"$])', new, text)
        parts[i] = text
    return Sql("".join(parts), sql.params)
