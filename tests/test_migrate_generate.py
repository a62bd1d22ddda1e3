"""Generated migrations reproduce ``create_tables()`` exactly, for every kind of model change.

For each change kind (the table ``CASES``): models v1 and v2 are defined
here (test-local, not the package's).  Migration 1 is generated from v1 and
applied, rows are inserted, migration 2 is generated for v2 and applied.
Then the live schema must equal ``create_tables()`` of v2 in a fresh
database, a second diff must find nothing, the rows must have survived, and
rolling migration 2 back must restore the v1 schema exactly.

Migrations are applied with peewee-migrate's own Router and plain
``Migrator`` (only the file mask is widened to see 1000+), which is what
``pw_migrate migrate`` uses: the generated files must not depend on
datalayer's Router.
"""

from __future__ import annotations

import dataclasses
import decimal
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import peewee_migrate
import pytest
from playhouse.postgres_ext import DateTimeTZField, PostgresqlExtDatabase

from datalayer.errors import GenerationError
from datalayer.migrate.autogenerate.compare import (
    DiffResult,
    compute_diff,
    create_migration,
    diff_source,
)
from datalayer.migrate.autogenerate.hints import renamed_from
from datalayer.migrate.inspect import Schema, compare, snapshot
from datalayer.migrate.runtime.names import next_name
from datalayer.models.fields import created_at_field, uuid_pk
from tests.pgserver import Server

Models = list[type[pw.Model]]


class PlainRouter(peewee_migrate.Router):  # type: ignore[misc]
    """peewee-migrate's Router and plain Migrator; only 1000+ files are seen and numbered."""

    filemask = re.compile(r"^\d{3,}_[^.]+\.py$")

    @property
    def todo(self) -> list[str]:
        names = [p.stem for p in Path(self.migrate_dir).iterdir() if self.filemask.match(p.name)]
        return sorted(names, key=lambda n: int(n.split("_", 1)[0]))

    def compile(self, name: str, migrate: str = "", rollback: str = "", num: Any = None) -> str:
        from peewee_migrate.template import TEMPLATE

        full = next_name(self.todo, name)
        path = Path(self.migrate_dir) / f"{full}.py"
        path.write_text(TEMPLATE.format(migrate=migrate, rollback=rollback, name=path.name))
        return full


def open_db(pg: Server, name: str) -> PostgresqlExtDatabase:
    kwargs = pg.settings(name).connect_kwargs()
    kwargs.pop("dbname")
    return PostgresqlExtDatabase(name, **kwargs)


def model(class_name: str, table: str, /, *, indexes: Any = (), constraints: Any = (),
          **fields: Any) -> type[pw.Model]:
    """Return a model class named ``name`` for ``table`` (names indexes after the table)."""
    meta = type("Meta", (), {
        "table_name": table,
        "legacy_table_names": False,
        "indexes": list(indexes),
        "constraints": list(constraints),
    })
    return type(class_name, (pw.Model,), {"Meta": meta, "__module__": __name__, **fields})


def item(**extra: Any) -> type[pw.Model]:
    """The base table of most cases: items(item_id uuid default, name, created_at now())."""
    fields = {"id": uuid_pk("item_id"), "name": pw.CharField(max_length=50, default="-")}
    fields.update(extra)
    fields.setdefault("created_at", created_at_field())
    return model("Item", "items", **fields)


def rows(db: pw.Database, sql: str) -> list[tuple[Any, ...]]:
    return list(db.execute_sql(sql).fetchall())


def fails(db: pw.Database, sql: str) -> bool:
    """Return True when ``sql`` is refused by the database (e.g. a CHECK)."""
    try:
        with db.atomic():
            db.execute_sql(sql)
    except pw.DatabaseError:
        return True
    return False


@dataclasses.dataclass
class Case:
    """One kind of change: the models before and after, data, and what must hold."""

    id: str
    v1: Callable[[], Models]
    v2: Callable[[], Models]
    seed: str = ""
    after: Callable[[pw.Database], None] | None = None
    after_rollback: Callable[[pw.Database], None] | None = None
    warns: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    present: tuple[str, ...] = ()
    allow_drop: bool = False


SEED_ITEMS = "INSERT INTO items (name) VALUES ('alpha'), ('beta')"

# -- the change kinds -------------------------------------------------------------


def _server_defaults_v2() -> Models:
    return [
        item(
            updated_at=DateTimeTZField(constraints=[pw.SQL("DEFAULT now()")]),
            code=pw.UUIDField(constraints=[pw.SQL("DEFAULT gen_random_uuid()")]),
        ),
        model("Tag", "tags", id=uuid_pk("tag_id"), created_at=created_at_field()),
    ]


def _server_defaults_after(db: pw.Database) -> None:
    got = rows(db, "SELECT updated_at IS NOT NULL, code FROM items")
    assert len(got) == 2 and all(r[0] for r in got)
    assert len({r[1] for r in got}) == 2  # a volatile default is evaluated per row
    db.execute_sql("INSERT INTO tags DEFAULT VALUES")
    assert rows(db, "SELECT count(*) FROM tags WHERE tag_id IS NOT NULL")[0][0] == 1


def _default_changed_v1() -> Models:
    return [item(
        status=pw.CharField(max_length=10, constraints=[pw.SQL("DEFAULT 'new'")]),
        priority=pw.IntegerField(constraints=[pw.SQL("DEFAULT 1")]),
        note=pw.CharField(max_length=10, null=True),
    )]


def _default_changed_v2() -> Models:
    return [item(
        status=pw.CharField(max_length=10, constraints=[pw.SQL("DEFAULT 'open'")]),
        priority=pw.IntegerField(),
        note=pw.CharField(max_length=10, null=True, constraints=[pw.SQL("DEFAULT 'n/a'")]),
    )]


def _default_changed_after(db: pw.Database) -> None:
    db.execute_sql("INSERT INTO items (name, priority) VALUES ('g', 5)")
    assert rows(db, "SELECT status, note FROM items WHERE name = 'g'") == [("open", "n/a")]
    assert fails(db, "INSERT INTO items (name) VALUES ('no-priority')")


def _check_field_v1() -> Models:
    return [item(
        qty=pw.IntegerField(constraints=[pw.Check("qty >= 0")]),
        price=pw.IntegerField(constraints=[pw.Check("price > 0")]),
    )]


def _check_field_v2() -> Models:
    return [item(
        name=pw.CharField(max_length=50, constraints=[pw.Check("length(name) > 0")]),
        qty=pw.IntegerField(constraints=[pw.Check("qty >= 1")]),
        price=pw.IntegerField(),
    )]


def _check_field_after(db: pw.Database) -> None:
    assert fails(db, "INSERT INTO items (name, qty, price) VALUES ('x', 0, 1)")
    assert fails(db, "INSERT INTO items (name, qty, price) VALUES ('', 1, 1)")
    assert not fails(db, "INSERT INTO items (name, qty, price) VALUES ('x', 1, -5)")


def _check_meta_v1() -> Models:
    return [item(lo=pw.IntegerField(), hi=pw.IntegerField(),
                 constraints=[pw.Check("lo <= hi"), pw.Check("lo >= 0")])]


def _check_meta_v2() -> Models:
    return [item(lo=pw.IntegerField(), hi=pw.IntegerField(),
                 constraints=[pw.Check("lo < hi"), pw.Check("hi < 1000")])]


def _check_meta_after(db: pw.Database) -> None:
    assert fails(db, "INSERT INTO items (name, lo, hi) VALUES ('x', 3, 3)")
    assert fails(db, "INSERT INTO items (name, lo, hi) VALUES ('x', 1, 1000)")
    assert not fails(db, "INSERT INTO items (name, lo, hi) VALUES ('x', -1, 3)")


def _users_tokens(on_delete: str, *, null: bool = False, on_update: str | None = None) -> Models:
    user = model("User", "users", id=uuid_pk("users_id"),
                 email=pw.CharField(max_length=100, unique=True))
    token = model("Token", "tokens", id=uuid_pk("tokens_id"),
                  user=pw.ForeignKeyField(user, column_name="users_id", on_delete=on_delete,
                                          on_update=on_update, null=null, backref="+"),
                  value=pw.CharField(max_length=20, index=True))
    return [user, token]


SEED_USERS = (
    "INSERT INTO users (users_id, email) VALUES ('00000000-0000-0000-0000-000000000001', 'a@x');"
    "INSERT INTO tokens (users_id, value) VALUES ('00000000-0000-0000-0000-000000000001', 't1')"
)


def _on_delete_after(db: pw.Database) -> None:
    db.execute_sql("DELETE FROM users")
    assert rows(db, "SELECT users_id FROM tokens") == [(None,)]


def _unique_v1() -> Models:
    return [item(email=pw.CharField(max_length=50, unique=True), code=pw.CharField(max_length=5))]


def _unique_v2() -> Models:
    return [item(email=pw.CharField(max_length=50), code=pw.CharField(max_length=5, unique=True))]


def _unique_after(db: pw.Database) -> None:
    assert not fails(db, "INSERT INTO items (name, email, code) VALUES ('x', 'same', 'c1'),"
                         " ('y', 'same', 'c2')")
    assert fails(db, "INSERT INTO items (name, email, code) VALUES ('z', 'q', 'c1')")


def _meta_index_v1() -> Models:
    return [item(a=pw.IntegerField(), b=pw.IntegerField(), indexes=[(("a", "b"), False)])]


def _meta_index_v2() -> Models:
    return [item(a=pw.IntegerField(), b=pw.IntegerField(), c=pw.IntegerField(null=True),
                 indexes=[(("a", "b"), False), (("b", "c"), True)])]


def _meta_index_drop_v2() -> Models:
    return [item(a=pw.IntegerField(), b=pw.IntegerField(), indexes=[(("b",), True)])]


def _partial_new_model_v2() -> Models:
    order = model("Order", "orders", id=uuid_pk("order_id"),
                  ref=pw.CharField(max_length=20), status=pw.CharField(max_length=10))
    order.add_index(pw.ModelIndex(order, (order.ref,), unique=True,
                                  where=pw.SQL("status = 'open'"), name="orders_open_ref"))
    order.add_index(pw.ModelIndex(order, (pw.fn.lower(order.ref),), name="orders_ref_lower"))
    return [item(), order]


def _partial_after(table: str, column: str) -> Callable[[pw.Database], None]:
    name = "name, " if table == "items" else ""
    value = "'n', " if table == "items" else ""

    def check(db: pw.Database) -> None:
        db.execute_sql(f"INSERT INTO {table} ({name}status, {column}) VALUES "
                       f"({value}'closed', 'k'), ({value}'closed', 'k'), ({value}'open', 'k')")
        assert fails(db, f"INSERT INTO {table} ({name}status, {column}) VALUES "
                         f"({value}'open', 'k')")
        if table == "orders":  # the expression index is there too
            assert rows(db, "SELECT indexdef FROM pg_indexes WHERE indexname = "
                            "'orders_ref_lower'")[0][0].endswith("(lower((ref)::text))")

    return check


def _partial_added(where: str | None) -> Callable[[], Models]:
    def models() -> Models:
        m = item(status=pw.CharField(max_length=10), code=pw.CharField(max_length=10))
        if where:
            m.add_index(pw.ModelIndex(m, (m.code,), unique=True, where=pw.SQL(where),
                                      name="items_open_code"))
        return [m]

    return models


def _partial_changed_after(db: pw.Database) -> None:
    db.execute_sql("INSERT INTO items (name, status, code) VALUES ('1', 'open', 'k'), "
                   "('2', 'open', 'k'), ('3', 'live', 'j')")
    assert fails(db, "INSERT INTO items (name, status, code) VALUES ('4', 'live', 'j')")


def _new_model_fk_v2() -> Models:
    category = model("Category", "categories", id=uuid_pk("category_id"),
                     title=pw.CharField(max_length=20, unique=True))
    return [item(category=pw.ForeignKeyField(category, column_name="category_id", null=True,
                                             on_delete="SET NULL", backref="+")), category]


def _not_null_defaults_v2() -> Models:
    return [item(
        flag=pw.BooleanField(default=False),
        token=pw.UUIDField(default=uuid.uuid4, unique=True),
        seen_at=DateTimeTZField(constraints=[pw.SQL("DEFAULT now()")]),
        level=pw.IntegerField(default=3, constraints=[pw.Check("level > 0")]),
    )]


def _not_null_defaults_after(db: pw.Database) -> None:
    got = rows(db, "SELECT flag, token, seen_at IS NOT NULL, level FROM items")
    assert [(r[0], r[2], r[3]) for r in got] == [(False, True, 3), (False, True, 3)]
    assert len({r[1] for r in got}) == 2 and None not in {r[1] for r in got}


def _null_to_not_null_v1() -> Models:
    return [item(
        note=pw.CharField(max_length=10, null=True, constraints=[pw.SQL("DEFAULT 'x'")]),
        label=pw.CharField(max_length=10, null=True),
        keep=pw.CharField(max_length=10, default="k"),
    )]


def _null_to_not_null_v2() -> Models:
    return [item(
        note=pw.CharField(max_length=10, constraints=[pw.SQL("DEFAULT 'x'")]),
        label=pw.CharField(max_length=10, default="y"),
        keep=pw.CharField(max_length=10, null=True),
    )]


def _type_v1() -> Models:
    return [item(
        code=pw.CharField(max_length=10),
        amount=pw.IntegerField(),
        ref=pw.CharField(max_length=20),
        level=pw.CharField(max_length=5, constraints=[pw.SQL("DEFAULT '1'")]),
    )]


def _type_v2() -> Models:
    return [item(
        code=pw.CharField(max_length=40),
        amount=pw.BigIntegerField(),
        ref=pw.IntegerField(),
        level=pw.IntegerField(constraints=[pw.SQL("DEFAULT 1")]),
    )]


def _type_after(db: pw.Database) -> None:
    assert rows(db, "SELECT ref, level FROM items ORDER BY ref") == [(7, 2), (42, 2)]


def _column_rename_v1() -> Models:
    return [item(
        label=pw.CharField(max_length=20, index=True, constraints=[pw.Check("length(label) > 0")]),
        kind=pw.CharField(max_length=5),
        indexes=[(("label", "kind"), False)],
    )]


def _column_rename_v2() -> Models:
    return [item(
        title=renamed_from(  # renamed, and made longer in the same migration
            pw.CharField(max_length=30, index=True, constraints=[pw.Check("length(title) > 0")]),
            "label",
        ),
        kind=pw.CharField(max_length=5, column_name="category"),  # attribute kept, column renamed
        indexes=[(("title", "kind"), False)],
    )]


def _column_rename_after(db: pw.Database) -> None:
    got = rows(db, "SELECT title, category FROM items ORDER BY title")
    assert got == [("a", "k1"), ("b", "k2")]
    assert fails(db, "INSERT INTO items (name, title, category) VALUES ('x', '', 'k')")


def _column_rename_rolled_back(db: pw.Database) -> None:
    assert rows(db, "SELECT label, kind FROM items ORDER BY label") == [("a", "k1"), ("b", "k2")]


def _table_rename_v2() -> Models:
    @renamed_from("users")
    class Account(pw.Model):
        id = uuid_pk("users_id")
        mail = renamed_from(pw.CharField(max_length=100, unique=True), "email")

        class Meta:
            table_name = "accounts"
            legacy_table_names = False

    token = model("Token", "tokens", id=uuid_pk("tokens_id"),
                  user=pw.ForeignKeyField(Account, column_name="users_id", on_delete="CASCADE",
                                          backref="+"),
                  value=pw.CharField(max_length=20, index=True))
    return [Account, token]


def _table_rename_after(db: pw.Database) -> None:
    assert rows(db, "SELECT mail FROM accounts") == [("a@x",)]
    assert fails(db, "INSERT INTO accounts (mail) VALUES ('a@x')")  # unique index kept
    db.execute_sql("DELETE FROM accounts")
    assert rows(db, "SELECT count(*) FROM tokens") == [(0,)]  # FK follows the rename


def _table_rename_rolled_back(db: pw.Database) -> None:
    assert rows(db, "SELECT email FROM users") == [("a@x",)]


def _serial_v1() -> Models:
    counter = model("Counter", "counters", id=pw.AutoField(), hits=pw.IntegerField(default=0))
    return [counter, item(counter=pw.ForeignKeyField(counter, null=True, backref="+",
                                                     column_name="counter_id"))]


def _serial_v2() -> Models:
    counter = renamed_from(
        model("Counter", "tallies", id=pw.AutoField(), hits=pw.IntegerField(default=0)),
        "counters",
    )
    return [counter, item(counter=pw.ForeignKeyField(counter, null=True, backref="+",
                                                     column_name="counter_id"))]


def _serial_after(db: pw.Database) -> None:
    db.execute_sql("INSERT INTO tallies (hits) VALUES (5)")
    assert rows(db, "SELECT id, hits FROM tallies ORDER BY id") == [(1, 0), (2, 5)]


def _pk_rename_v1() -> Models:
    return _users_tokens("CASCADE")


def _pk_rename_v2() -> Models:
    user = model("User", "users", id=renamed_from(uuid_pk("user_id"), "users_id"),
                 email=pw.CharField(max_length=100, unique=True))
    token = model("Token", "tokens", id=uuid_pk("tokens_id"),
                  user=pw.ForeignKeyField(user, column_name="users_id", on_delete="CASCADE",
                                          backref="+"),
                  value=pw.CharField(max_length=20, index=True))
    return [user, token]


def _pk_rename_after(db: pw.Database) -> None:
    db.execute_sql("DELETE FROM users WHERE user_id = '00000000-0000-0000-0000-000000000001'")
    assert rows(db, "SELECT count(*) FROM tokens") == [(0,)]


def _legacy(class_name: str, **fields: Any) -> type[pw.Model]:
    """A model as pw.Model makes it by default: indexes named after the class, not the table."""
    meta = type("Meta", (), {"table_name": "things"})
    base = {"id": pw.AutoField(), "code": pw.CharField(max_length=5, unique=True)}
    return type(class_name, (pw.Model,), {"Meta": meta, "__module__": __name__, **base, **fields})


def _postgres_types_v2() -> Models:
    from playhouse.postgres_ext import ArrayField, BinaryJSONField

    return [item(
        data=BinaryJSONField(null=True),
        tags=ArrayField(pw.CharField, field_kwargs={"max_length": 10}, null=True, index=False),
        ip=pw.IPField(null=True),
    )]


def _constraints_v1() -> Models:
    return [item(a=pw.IntegerField(), b=pw.IntegerField(),
                 note=pw.CharField(max_length=20, constraints=[pw.Check("note <> 'a note'")]),
                 constraints=[pw.Check("a < 100", name="a_small"), pw.SQL("UNIQUE (a, b)")])]


def _constraints_v2() -> Models:
    return [item(a=pw.IntegerField(), b=pw.IntegerField(),
                 remark=renamed_from(pw.CharField(
                     max_length=20, constraints=[pw.Check("remark <> 'a note'")]), "note"),
                 constraints=[pw.Check("a < 50", name="a_small"), pw.SQL("UNIQUE (b, a)")])]


def _constraints_after(db: pw.Database) -> None:
    assert fails(db, "INSERT INTO items (name, a, b, remark) VALUES ('x', 60, 1, 'r')")
    assert fails(db, "INSERT INTO items (name, a, b, remark) VALUES ('x', 1, 2, 'a note')")
    assert fails(db, "INSERT INTO items (name, a, b, remark) VALUES ('x', 1, 2, 'r')")  # unique


def _decimal_v1() -> Models:
    return [item(price=pw.DecimalField(max_digits=10, decimal_places=2))]


def _decimal_v2() -> Models:
    return [item(price=pw.DecimalField(max_digits=12, decimal_places=4),
                 fee=pw.DecimalField(max_digits=6, decimal_places=2,
                                     default=decimal.Decimal("0.50")))]


def _decimal_after(db: pw.Database) -> None:
    assert rows(db, "SELECT price, fee FROM items WHERE name = 'd'") == [
        (decimal.Decimal("1.2500"), decimal.Decimal("0.50"))
    ]


def _drops_v1() -> Models:
    return [item(extra=pw.CharField(max_length=5, null=True)),
            model("Note", "notes", id=uuid_pk("note_id"), body=pw.TextField())]


def _index_flag_v1() -> Models:
    return [item(code=pw.CharField(max_length=5), slot=pw.IntegerField(index=True))]


def _index_flag_v2() -> Models:
    return [item(code=pw.CharField(max_length=5, index=True), slot=pw.IntegerField())]


def _remove_fk_target_v1() -> Models:
    category = model("Category", "categories", id=uuid_pk("category_id"))
    return [item(category=pw.ForeignKeyField(category, column_name="category_id", null=True,
                                             backref="+")), category]


def _not_null_to_null_drop_fk_v2() -> Models:
    return _users_tokens("CASCADE", null=True)


CASES = [
    Case("server_defaults", lambda: [item()], _server_defaults_v2, SEED_ITEMS,
         after=_server_defaults_after, present=("DEFAULT gen_random_uuid()", "DEFAULT now()")),
    Case("server_default_changed", _default_changed_v1, _default_changed_v2,
         "INSERT INTO items (name) VALUES ('a')", after=_default_changed_after),
    Case("check_field", _check_field_v1, _check_field_v2,
         "INSERT INTO items (name, qty, price) VALUES ('a', 5, 5)", after=_check_field_after),
    Case("check_meta", _check_meta_v1, _check_meta_v2,
         "INSERT INTO items (name, lo, hi) VALUES ('a', 1, 2)", after=_check_meta_after),
    Case("on_delete_changed", lambda: _users_tokens("CASCADE", null=True),
         lambda: _users_tokens("SET NULL", null=True), SEED_USERS, after=_on_delete_after),
    Case("unique_add_remove", _unique_v1, _unique_v2,
         "INSERT INTO items (name, email, code) VALUES ('a', 'e', 'c')", after=_unique_after),
    Case("meta_indexes_no_spurious_change", _meta_index_v1, _meta_index_v2,
         "INSERT INTO items (name, a, b) VALUES ('a', 1, 2)", absent=("change_fields",)),
    Case("meta_index_dropped", _meta_index_v1, _meta_index_drop_v2,
         "INSERT INTO items (name, a, b) VALUES ('a', 1, 2)"),
    Case("partial_index_new_model", lambda: [item()], _partial_new_model_v2,
         after=_partial_after("orders", "ref"), absent=("ModelIndex object at",)),
    Case("partial_index_added", _partial_added(None), _partial_added("status = 'open'"),
         SEED_ITEMS.replace("(name)", "(name, status, code)").replace("')", "', 'x', 'y')"),
         after=_partial_after("items", "code")),
    Case("partial_index_where_changed", _partial_added("status = 'open'"),
         _partial_added("status = 'live'"), after=_partial_changed_after),
    Case("new_model_and_fk_to_it", lambda: [item()], _new_model_fk_v2, SEED_ITEMS),
    Case("not_null_with_defaults", lambda: [item()], _not_null_defaults_v2, SEED_ITEMS,
         after=_not_null_defaults_after),
    Case("null_to_not_null_backfill", _null_to_not_null_v1, _null_to_not_null_v2,
         "INSERT INTO items (name, note, label, keep) VALUES ('a', NULL, NULL, 'k')",
         after=lambda db: (assert_rows(db, "SELECT note, label, keep FROM items",
                                       [("x", "y", "k")]))),
    Case("type_changes_with_using", _type_v1, _type_v2,
         "INSERT INTO items (name, code, amount, ref, level) VALUES "
         "('a', 'c', 1, '42', '2'), ('b', 'd', 2, '7', '2')",
         after=_type_after, warns=("with USING",)),
    Case("column_rename_with_hint", _column_rename_v1, _column_rename_v2,
         "INSERT INTO items (name, label, kind) VALUES ('1', 'a', 'k1'), ('2', 'b', 'k2')",
         after=_column_rename_after, after_rollback=_column_rename_rolled_back,
         absent=("remove_fields", "add_fields")),
    Case("table_rename_with_hint", lambda: _users_tokens("CASCADE"), _table_rename_v2, SEED_USERS,
         after=_table_rename_after, after_rollback=_table_rename_rolled_back,
         absent=("remove_model", "create_model")),
    Case("table_rename_serial_sequence", _serial_v1, _serial_v2,
         "INSERT INTO counters (hits) VALUES (0)", after=_serial_after,
         absent=("remove_model", "create_model")),
    Case("pk_column_rename_with_fk_to_it", _pk_rename_v1, _pk_rename_v2, SEED_USERS,
         after=_pk_rename_after, absent=("remove_fields",)),
    Case("legacy_index_names_unique_changes",
         lambda: [_legacy("Thing", slot=pw.IntegerField(index=True))],
         lambda: [_legacy("Thing", slot=pw.IntegerField(unique=True),
                          code=pw.CharField(max_length=5, index=True))],
         "INSERT INTO things (code, slot) VALUES ('a', 1)"),
    Case("legacy_model_class_renamed",
         lambda: [_legacy("Thing", slot=pw.IntegerField(index=True))],
         lambda: [_legacy("Gadget", slot=pw.IntegerField(index=True))],
         "INSERT INTO things (code, slot) VALUES ('a', 1)", present=("set_model_meta",)),
    Case("on_update_changed", lambda: _users_tokens("CASCADE"),
         lambda: _users_tokens("CASCADE", on_update="CASCADE"), SEED_USERS),
    Case("postgres_types_jsonb_array_inet", lambda: [item()], _postgres_types_v2, SEED_ITEMS),
    Case("named_check_table_unique_and_literal_in_renamed_check", _constraints_v1,
         _constraints_v2, "INSERT INTO items (name, a, b, note) VALUES ('x', 1, 2, 'n')",
         after=_constraints_after),
    Case("decimal_fields", _decimal_v1, _decimal_v2,
         "INSERT INTO items (name, price) VALUES ('d', 1.25)", after=_decimal_after),
    Case("drops_are_called_out", _drops_v1, lambda: [item()],
         "INSERT INTO items (name, extra) VALUES ('a', 'e')",
         warns=("drops column items.extra", "drops table notes"), allow_drop=True),
    Case("index_flag_changed", _index_flag_v1, _index_flag_v2,
         "INSERT INTO items (name, code, slot) VALUES ('a', 'c', 1)"),
    Case("model_removed_with_fk_to_it", _remove_fk_target_v1, lambda: [item()], SEED_ITEMS,
         warns=("drops column items.category_id", "drops table categories"), allow_drop=True),
    Case("not_null_dropped", lambda: _users_tokens("CASCADE"), _not_null_to_null_drop_fk_v2,
         SEED_USERS),
]


def assert_rows(db: pw.Database, sql: str, expected: list[tuple[Any, ...]]) -> None:
    assert rows(db, sql) == expected


# -- the harness ---------------------------------------------------------------------


def reset_schema(db: pw.Database) -> None:
    db.execute_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


def declared(db: pw.Database, models: Models) -> Schema:
    """Return the schema that ``create_tables()`` gives for ``models`` on an empty ``db``."""
    reset_schema(db)
    with db.bind_ctx(models):
        db.create_tables(models)
    return snapshot(db)


@pytest.fixture(scope="module")
def ref_db(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    """A database for ``create_tables()``; :func:`declared` empties it before each use."""
    with pg.database("dlref") as name:
        db = open_db(pg, name)
        try:
            yield db
        finally:
            db.close()


@pytest.fixture
def dbs(
    pg: Server, ref_db: PostgresqlExtDatabase
) -> Iterator[tuple[PostgresqlExtDatabase, PostgresqlExtDatabase]]:
    """A new database for the migrations, and the ``create_tables()`` one."""
    with pg.database("dlgen") as mig_name:
        mig = open_db(pg, mig_name)
        try:
            yield mig, ref_db
        finally:
            mig.close()


def file_text(result: DiffResult | None) -> str:
    """Return the code of a written migration (the functions, not the template's docstring).

    A migration written as several files (a part that runs outside a transaction)
    gives the code of all of them.
    """
    assert result is not None, "a migration was expected"
    out = []
    for path in result.paths or (Path(result),):
        text = path.read_text()
        out.append(text[text.index("def migrate("):])
    return "\n".join(out)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_change_kind(
    case: Case, dbs: tuple[PostgresqlExtDatabase, PostgresqlExtDatabase], tmp_path: Path
) -> None:
    mig, ref = dbs
    router = PlainRouter(mig, tmp_path)

    first = create_migration(router, "v1", case.v1())
    assert "No changes" not in file_text(first)
    router.run()
    assert compare(declared(ref, case.v1()), snapshot(mig)) == []
    if case.seed:
        mig.execute_sql(case.seed)
    before = snapshot(mig)

    second = create_migration(router, "v2", case.v2(), allow_drop=case.allow_drop)
    text = file_text(second)
    assert second is not None and second.name == "002_v2"
    router.run()
    assert router.done == ["001_v1", *second.names]

    assert compare(declared(ref, case.v2()), snapshot(mig)) == []
    assert diff_source(router, case.v2()) is None, "a second diff must find nothing"
    for needle in case.warns:
        assert any(needle in w for w in second.warnings), (needle, second.warnings)
    if not case.warns:
        assert not [w for w in second.warnings if w.startswith("drops")], second.warnings
    for needle in case.absent:
        assert needle not in text
    for needle in (*case.present, "extend(migrator)"):
        assert needle in text + file_text(first)
    if case.after is not None:
        with mig.atomic() as txn:  # rows written by the checks go, so v1 can come back
            case.after(mig)
            txn.rollback()

    for _ in second.names:
        router.rollback()
    assert router.done == ["001_v1"]
    assert compare(before, snapshot(mig)) == [], "rollback must restore the v1 schema"
    if case.after_rollback is not None:
        case.after_rollback(mig)


# -- single behaviours -------------------------------------------------------------------


def test_nothing_changed_writes_nothing(
    dbs: tuple[PostgresqlExtDatabase, PostgresqlExtDatabase], tmp_path: Path
) -> None:
    mig, _ = dbs
    router = PlainRouter(mig, tmp_path)
    assert create_migration(router, "v1", [item()]) is not None
    assert create_migration(router, "again", [item()]) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001_v1.py"]
    # Only the files are read: nothing was applied, and the diff still knows the state.
    assert router.done == []


def test_pending_changes_accumulate_in_later_migrations(
    dbs: tuple[PostgresqlExtDatabase, PostgresqlExtDatabase], tmp_path: Path
) -> None:
    """Three migrations written before any is applied still apply in one run."""
    mig, ref = dbs
    router = PlainRouter(mig, tmp_path)
    create_migration(router, "a", [item()])
    create_migration(router, "b", _type_v1())
    create_migration(router, "c", _type_v2())
    router.run()
    assert compare(declared(ref, _type_v2()), snapshot(mig)) == []
    for _ in range(3):
        router.rollback()
    assert snapshot(mig).tables == {}


def test_migration_1000_is_numbered_and_seen(tmp_path: Path) -> None:
    for n in (1, 2, 999):
        (tmp_path / f"{n:03d}_m.py").write_text("")
    assert next_name([p.stem for p in tmp_path.iterdir()], "next") == "1000_next"
    assert next_name(["1000_a", "999_b", "0999_c"], "x") == "1001_x"
    assert next_name([], "first") == "001_first"
    assert next_name(["002_b.py", "notes"], "c") == "003_c"
    with pytest.raises(GenerationError, match="letters, digits and underscores"):
        next_name([], "bad name")


def test_thousandth_migration_applies(
    dbs: tuple[PostgresqlExtDatabase, PostgresqlExtDatabase], tmp_path: Path
) -> None:
    mig, ref = dbs
    router = PlainRouter(mig, tmp_path)
    create_migration(router, "items", [item()])
    body = Path(tmp_path / "001_items.py").read_text()
    empty = re.sub(r"(def migrate\(.*?\n    \"\"\".*?\"\"\"\n).*?(?=\n\ndef rollback)",
                   r"\1    pass\n", body, flags=re.S)
    for n in range(2, 1000):
        (tmp_path / f"{n:03d}_noop.py").write_text(empty)
    # How long the replay takes is measured by `python -m benchmarks migrate`, not here.
    result = create_migration(router, "add_code", [item(code=pw.CharField(max_length=5,
                                                                            null=True))])
    assert result is not None and result.name == "1000_add_code", result
    router.run()
    assert router.done[-1] == "1000_add_code"
    assert compare(declared(ref, [item(code=pw.CharField(max_length=5, null=True))]),
                   snapshot(mig)) == []


def test_generated_file_replays_without_a_database(
    dbs: tuple[PostgresqlExtDatabase, PostgresqlExtDatabase], tmp_path: Path
) -> None:
    """peewee-migrate replays files with execute_sql mocked: the operations must not query."""
    mig, _ = dbs
    router = PlainRouter(mig, tmp_path)
    create_migration(router, "v1", _column_rename_v1())
    create_migration(router, "v2", _column_rename_v2())
    migrator = peewee_migrate.Migrator(mig)
    for name in router.todo:
        router.run_one(name, migrator, fake=True)
    assert router.done == []
    items = migrator.orm["items"]
    assert {f.column_name for f in items._meta.sorted_fields} >= {"title", "category"}


HAND_WRITTEN = '''
def migrate(migrator, database, *, fake=False):
    from datalayer.migrate.ops import extend

    m = extend(migrator)
    m.add_index("items", "name", "created_at", unique=True)
    m.drop_index("items", "code")
    m.rename_field("items", "name", "title")
    m.remove_fields("items", "extra", cascade=True)


def rollback(migrator, database, *, fake=False):
    pass
'''


def test_hand_written_operations_use_real_names(
    dbs: tuple[PostgresqlExtDatabase, PostgresqlExtDatabase], tmp_path: Path
) -> None:
    """peewee-migrate's own operation names, through extend(): right index names, CASCADE."""
    mig, ref = dbs
    router = PlainRouter(mig, tmp_path)
    create_migration(router, "v1", [item(code=pw.CharField(max_length=5, index=True),
                                         extra=pw.IntegerField(null=True))])
    router.run()
    mig.execute_sql("INSERT INTO items (name, code) VALUES ('kept', 'c')")
    mig.execute_sql("CREATE VIEW extras AS SELECT extra FROM items")
    (tmp_path / "002_by_hand.py").write_text(HAND_WRITTEN)
    router.run()
    want = model("Item", "items", id=uuid_pk("item_id"), title=pw.CharField(max_length=50),
                 created_at=created_at_field(), code=pw.CharField(max_length=5),
                 indexes=[(("title", "created_at"), True)])
    assert compare(declared(ref, [want]), snapshot(mig)) == []
    assert rows(mig, "SELECT title FROM items") == [("kept",)]
    assert diff_source(router, [want]) is None


def test_unsupported_change_is_refused_with_a_reason(tmp_path: Path, pg: Server) -> None:
    with pg.database("dlgen") as name:
        db = open_db(pg, name)
        router = PlainRouter(db, tmp_path)
        create_migration(router, "v1", [item()])
        changed_pk = model("Item", "items", id=pw.UUIDField(primary_key=True, column_name="uid"),
                           name=pw.CharField(max_length=50), created_at=created_at_field())
        with pytest.raises(GenerationError, match="primary key"):
            create_migration(router, "v2", [changed_pk])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["001_v1.py"]
        db.close()


def test_abstract_models_are_not_tables(tmp_path: Path, pg: Server) -> None:
    class Base(pw.Model):
        __abstract__ = True

    class Thing(Base):
        id = uuid_pk("thing_id")

        class Meta:
            table_name = "things"

    with pg.database("dlgen") as name:
        db = open_db(pg, name)
        diff = compute_diff(PlainRouter(db, tmp_path), [Base, Thing])
        assert "things" in diff.migrate and "class Base" not in diff.migrate
        db.close()


def test_hint_validation() -> None:
    with pytest.raises(TypeError, match="old column or table name"):
        renamed_from(pw.CharField(), "")
    field = renamed_from(pw.CharField(), "old")
    from datalayer.migrate.autogenerate.hints import renamed_from_of

    assert renamed_from_of(field) == "old"

    @renamed_from("old_things")
    class Parent(pw.Model):
        pass

    class Child(Parent):
        pass

    assert renamed_from_of(Parent) == "old_things"
    assert renamed_from_of(Child) is None  # not inherited


def test_compare_reports_differences_by_table_and_column(
    dbs: tuple[PostgresqlExtDatabase, PostgresqlExtDatabase],
) -> None:
    mig, ref = dbs
    want = declared(ref, _check_field_v1())
    reset_schema(mig)
    models = _check_field_v1()
    with mig.bind_ctx(models):
        mig.create_tables(models)
    mig.execute_sql("ALTER TABLE items ALTER COLUMN name TYPE varchar(60)")
    mig.execute_sql("ALTER TABLE items ALTER COLUMN created_at DROP DEFAULT")
    mig.execute_sql("ALTER TABLE items DROP CONSTRAINT items_qty_check")
    mig.execute_sql("CREATE INDEX items_extra ON items (qty)")
    mig.execute_sql("ALTER TABLE items ADD COLUMN spare int")
    mig.execute_sql("CREATE TABLE migratehistory (id int)")  # ignored
    got = compare(want, snapshot(mig))
    text = "\n".join(got)
    assert "items.name: expected character varying(50) NOT NULL" in text
    assert "items.created_at: expected timestamp with time zone NOT NULL DEFAULT now()" in text
    assert "items: missing CHECK ((qty >= 0))" in text
    assert "unexpected index items_extra" in text
    assert "items.spare: unexpected column" in text
    assert len(got) == 5, got
    assert compare(want, want) == []


def test_snapshot_accepts_a_psycopg2_connection(pg: Server) -> None:
    with pg.database("dlgen") as name:
        conn = pg.raw(name)
        try:
            conn.cursor().execute("CREATE TABLE t (id serial PRIMARY KEY, v text CHECK (v <> ''))")
            snap = snapshot(conn)
        finally:
            conn.close()
    table = snap.tables["t"]
    assert table.primary_key is not None and table.primary_key.name == "t_pkey"
    assert table.sequences == ("t_id_seq",)
    assert [c.definition for c in table.checks] == ["CHECK ((v <> ''::text))"]


def test_migration_error_on_mismatched_database(
    dbs: tuple[PostgresqlExtDatabase, PostgresqlExtDatabase], tmp_path: Path
) -> None:
    """A CHECK the history knows but the database lacks: the drop says so, by table."""
    mig, _ = dbs
    router = PlainRouter(mig, tmp_path)
    create_migration(router, "v1", _check_field_v1())
    router.run()
    mig.execute_sql("ALTER TABLE items DROP CONSTRAINT items_qty_check")
    create_migration(router, "v2", _check_field_v2())
    with pytest.raises(pw.DatabaseError, match="does not match its migration history"):
        router.run()
    # 002_v2 does nothing going forward (its rollback validates what 003's re-adds NOT
    # VALID): the file that failed, 003, is not recorded.
    assert router.done == ["001_v1", "002_v2"]
