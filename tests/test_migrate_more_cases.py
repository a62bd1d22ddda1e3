"""More model changes than the issues name, tried the way issue 15 item 6 tries its cases.

Each case generates its migration, applies it on tables with rows, reproduces
``create_tables()``, re-diffs empty, rolls back (rows kept) and applies again, in
the safe forms and in the plain ones (``--unsafe``); in the safe forms the lint of
``datalayer migrate check`` passes on every file datalayer's Router writes, forward
and rollback (only a rule that ``diff`` announced for the change may need an allow
comment), and for the cases in ``FULL_CHECK`` the whole of ``check``.  The harness is
:mod:`tests._migrate_cases`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from playhouse.postgres_ext import ArrayField, BinaryJSONField, DateTimeTZField

from datalayer.migrate.autogenerate.hints import renamed_from
from datalayer.models.fields import uuid_pk
from tests._migrate_cases import (  # noqa: F401 (the two fixtures: pytest finds them here)
    Case,
    Models,
    both_forms,
    check_passes,
    emptied,
    fails_sql,
    module_db_fixture,
    ref_db_fixture,
    run_case,
)
from tests._migrate_cases import (
    items_with as _items,
)
from tests._migrate_cases import (
    refused as _refused,
)
from tests._migrate_cases import (
    rows_equal as _eq,
)
from tests.pgserver import Server
from tests.test_migrate_generate import item, model

SEED = "INSERT INTO items (name) VALUES ('a'), ('b')"
SEED_AB = "INSERT INTO items (name, a, b) VALUES ('a', 1, 2), ('b', 2, 1)"


def _indexed(*indexes: Callable[[type[pw.Model]], pw.ModelIndex], **fields: Any
             ) -> Callable[[], Models]:
    def models() -> Models:
        m = item(a=pw.IntegerField(default=0), b=pw.IntegerField(default=0), **fields)
        for index in indexes:
            m.add_index(index(m))
        return [m]
    return models


def _owner(**fields: Any) -> type[pw.Model]:
    return model("Owner", "owners", id=uuid_pk("owner_id"), code=pw.CharField(max_length=5),
                 **fields)


def _with_owner(**fk: Any) -> Callable[[], Models]:
    def models() -> Models:
        owner = _owner()
        return [owner, item(owner=pw.ForeignKeyField(owner, column_name="owner_id",
                                                     backref="+", **fk))]
    return models


SEED_OWNERS = ("INSERT INTO owners (code) VALUES ('o1'); "
               "INSERT INTO items (name, owner_id) SELECT 'a', owner_id FROM owners; "
               "INSERT INTO items (name) VALUES ('b')")


def _status(values: Sequence[str]) -> Callable[[], Models]:
    allowed = ", ".join(f"'{v}'" for v in values)
    return _items(status=pw.CharField(max_length=10, default=values[0],
                                      constraints=[pw.Check(f"status IN ({allowed})")]))


def _member(*key: str, **extra: Any) -> Callable[[], Models]:
    def models() -> Models:
        fields: dict[str, Any] = {"user": pw.IntegerField(), "org": pw.IntegerField(),
                                  "role": pw.CharField(max_length=10, default="member")}
        fields.update(extra)
        meta = type("Meta", (), {"table_name": "members", "legacy_table_names": False,
                                 "primary_key": pw.CompositeKey(*key) if key else False})
        return [type("Member", (pw.Model,), {"Meta": meta, "__module__": __name__, **fields})]
    return models


SEED_MEMBERS = ("INSERT INTO members (\"user\", org, role) "
                "VALUES (1, 1, 'a'), (1, 2, 'b'), (2, 1, 'c')")


def _keyed(pk: Callable[[], pw.Field]) -> Callable[[], Models]:
    return lambda: [model("Thing", "things", id=pk(), name=pw.CharField(max_length=20,
                                                                        default="-"))]


def _referenced_code(column: str, hint: str | None = None) -> Callable[[], Models]:
    """owners.<column> UNIQUE, referred to by items.owner_code (a to_field foreign key)."""
    def models() -> Models:
        field = pw.CharField(max_length=5, unique=True, column_name=column)
        owner = model("Owner", "owners", id=uuid_pk("owner_id"),
                      code=renamed_from(field, hint) if hint else field)
        return [owner, item(owner=pw.ForeignKeyField(
            owner, field=owner.code, column_name="owner_code", null=True, backref="+"))]
    return models


def _serial_table(table: str, hint: str | None = None) -> Callable[[], Models]:
    def models() -> Models:
        m = model("Counter", table, id=pw.AutoField(), n=pw.IntegerField(default=0))
        return [renamed_from(m, hint) if hint else m]
    return models


def _two_cycle() -> Models:
    left = model("Left", "lefts", id=pw.AutoField(),
                 right=pw.DeferredForeignKey("Right", column_name="right_id", null=True,
                                             backref="+"))
    right = model("Right", "rights", id=pw.AutoField(),
                  left=pw.ForeignKeyField(left, column_name="left_id", null=True, backref="+"))
    return [item(), left, right]


def _big_ab() -> Models:
    m = item(a=pw.BigIntegerField(default=0), b=pw.IntegerField(default=0))
    m.add_index(m.index(m.a, m.b, unique=True))
    return [m]


def _m2m() -> Models:
    tag = model("Tag", "tags", id=pw.AutoField(), label=pw.CharField(max_length=10))
    it = item(tags=pw.ManyToManyField(tag, backref="items"))
    return [it, tag, it.tags.get_through_model()]


CASES = (
    # -- types ------------------------------------------------------------------------
    # In place; its rollback rewrites (and the lint says so): diff announces it.
    Case("varchar_lengthened", _items(code=pw.CharField(max_length=5, index=True)),
         _items(code=pw.CharField(max_length=50, index=True)),
         "INSERT INTO items (name, code) VALUES ('a', 'abc')",
         warns=("its rollback changes items.code back from VARCHAR(50) to VARCHAR(5), which "
                "rewrites the table under ACCESS EXCLUSIVE (lint rule changing-column-type",
                "rolling back the change fails if a stored value is longer than 5 characters")),
    Case("text_to_varchar", _items(code=pw.TextField(null=True)),
         _items(code=pw.CharField(max_length=8, null=True)),
         "INSERT INTO items (name, code) VALUES ('a', 'abc')",
         warns=("fails if a stored value is longer than 8 characters",),
         after=_refused("INSERT INTO items (name, code) VALUES ('b', '123456789')")),
    Case("numeric_precision_up", _items(price=pw.DecimalField(6, 2)),
         _items(price=pw.DecimalField(12, 2)),
         "INSERT INTO items (name, price) VALUES ('a', 1234.5)",
         warns=("its rollback changes items.price back from NUMERIC(12, 2) to NUMERIC(6, 2)",
                "rolling back fails if a stored value has more than 4 digits before")),
    Case("numeric_scale_up", _items(price=pw.DecimalField(8, 2)),
         _items(price=pw.DecimalField(10, 4)),
         "INSERT INTO items (name, price) VALUES ('a', 1234.5)",
         after=_eq("SELECT price FROM items", [(decimal.Decimal("1234.5000"),)])),
    Case("int_to_bigint", _items(n=pw.IntegerField(default=0)),
         _items(n=pw.BigIntegerField(default=0)),
         "INSERT INTO items (name, n) VALUES ('a', 7)",
         after=_eq("SELECT n FROM items", [(7,)])),
    Case("bigint_to_int", _items(n=pw.BigIntegerField(default=0)),
         _items(n=pw.IntegerField(default=0)), "INSERT INTO items (name, n) VALUES ('a', 7)",
         warns=("narrows items.n (BIGINT to INTEGER): the change fails if a stored value is "
                "outside -2147483648 to 2147483647",)),
    Case("smallint_to_int", _items(n=pw.SmallIntegerField(null=True)),
         _items(n=pw.IntegerField(null=True)), "INSERT INTO items (name, n) VALUES ('a', 7)"),
    Case("timestamp_to_timestamptz", _items(at=pw.DateTimeField(null=True)),
         _items(at=DateTimeTZField(null=True)),
         "INSERT INTO items (name, at) VALUES ('a', '2024-01-01 10:30')"),
    Case("timestamptz_to_timestamp", _items(at=DateTimeTZField(null=True)),
         _items(at=pw.DateTimeField(null=True)),
         "INSERT INTO items (name, at) VALUES ('a', '2024-01-01 10:30+00')"),
    Case("date_to_timestamp", _items(on=pw.DateField(null=True)),
         _items(on=pw.DateTimeField(null=True)),
         "INSERT INTO items (name, \"on\") VALUES ('a', '2024-01-01')",
         after=_eq("SELECT \"on\" FROM items", [(dt.datetime(2024, 1, 1),)])),
    Case("uuid_to_text", _items(ref=pw.UUIDField(null=True)), _items(ref=pw.TextField(null=True)),
         "INSERT INTO items (name, ref) VALUES ('a', gen_random_uuid())"),
    Case("varchar_to_integer_with_index", _items(n=pw.CharField(max_length=9, index=True,
                                                                 default="0")),
         _items(n=pw.IntegerField(index=True, default=0)),
         "INSERT INTO items (name, n) VALUES ('a', '42')",
         after=_eq("SELECT n FROM items", [(42,)])),
    # -- defaults ---------------------------------------------------------------------
    Case("server_default_added", _items(active=pw.BooleanField(null=True)),
         _items(active=pw.BooleanField(null=True, constraints=[pw.SQL("DEFAULT true")])),
         "INSERT INTO items (name) VALUES ('a')",
         after=_eq("INSERT INTO items (name) VALUES ('n') RETURNING active", [(True,)])),
    Case("text_server_default_changed",
         _items(note=pw.TextField(constraints=[pw.SQL("DEFAULT 'it''s'")])),
         _items(note=pw.TextField(constraints=[pw.SQL("DEFAULT 'new'")])), SEED,
         after=_eq("SELECT DISTINCT note FROM items", [("it's",)])),
    Case("int_server_default_removed",
         _items(n=pw.IntegerField(constraints=[pw.SQL("DEFAULT 5")])),
         _items(n=pw.IntegerField()), SEED,
         after=_refused("INSERT INTO items (name) VALUES ('no n')")),
    Case("constant_text_default_with_a_quote",
         lambda: [item()], _items(note=pw.CharField(max_length=9, default="it's")), SEED,
         after=_eq("SELECT DISTINCT note FROM items", [("it's",)])),
    Case("constant_default_on_new_indexed_column",
         lambda: [item()], _items(rank=pw.IntegerField(default=3, index=True)), SEED,
         after=_eq("SELECT DISTINCT rank FROM items", [(3,)])),
    Case("jsonb_constant_default", lambda: [item()],
         _items(doc=BinaryJSONField(default={})), SEED,
         after=_eq("SELECT DISTINCT doc::text FROM items", [("{}",)])),
    Case("callable_uuid_default_new_column", lambda: [item()],
         _items(token=pw.UUIDField(default=uuid.uuid4)), SEED,
         after=_eq("SELECT count(DISTINCT token) FROM items", [(2,)])),
    Case("callable_now_default_new_column", lambda: [item()],
         _items(seen=pw.DateTimeField(default=dt.datetime.now)), SEED,
         after=_eq("SELECT count(*) FROM items WHERE seen IS NULL", [(0,)])),
    Case("timestamptz_now_server_default_added", _items(at=DateTimeTZField(null=True)),
         _items(at=DateTimeTZField(constraints=[pw.SQL("DEFAULT now()")])),
         "INSERT INTO items (name, at) VALUES ('a', now())"),
    # -- NULL -------------------------------------------------------------------------
    Case("nullable_to_not_null_without_default", _items(n=pw.IntegerField(null=True)),
         _items(n=pw.IntegerField()), "INSERT INTO items (name, n) VALUES ('a', 1)",
         after=_refused("INSERT INTO items (name) VALUES ('no n')")),
    Case("not_null_to_nullable", _items(n=pw.IntegerField(default=0)),
         _items(n=pw.IntegerField(null=True)), "INSERT INTO items (name, n) VALUES ('a', 1)",
         after=_eq("INSERT INTO items (name) VALUES ('null n') RETURNING n", [(None,)])),
    # -- unique and indexes -----------------------------------------------------------
    Case("unique_added", _items(code=pw.CharField(max_length=5, null=True)),
         _items(code=pw.CharField(max_length=5, null=True, unique=True)),
         "INSERT INTO items (name, code) VALUES ('a', 'x'), ('b', 'y')",
         after=_refused("INSERT INTO items (name, code) VALUES ('c', 'x')")),
    Case("unique_dropped", _items(code=pw.CharField(max_length=5, null=True, unique=True)),
         _items(code=pw.CharField(max_length=5, null=True)),
         "INSERT INTO items (name, code) VALUES ('a', 'x')"),
    Case("unique_together_added", _indexed(), _indexed(lambda m: m.index(m.a, m.b, unique=True)),
         "INSERT INTO items (name, a, b) VALUES ('x', 1, 2), ('y', 2, 1)",
         after=_refused("INSERT INTO items (name, a, b) VALUES ('z', 1, 2)")),
    Case("unique_together_order_changed", _indexed(lambda m: m.index(m.a, m.b, unique=True)),
         _indexed(lambda m: m.index(m.b, m.a, unique=True)),
         "INSERT INTO items (name, a, b) VALUES ('x', 1, 2)"),
    Case("unique_together_removed", _indexed(lambda m: m.index(m.a, m.b, unique=True)),
         _indexed(), "INSERT INTO items (name, a, b) VALUES ('x', 1, 2)"),
    Case("partial_unique_index_added", _indexed(),
         _indexed(lambda m: m.index(m.a, unique=True, where=m.b > 0)),
         "INSERT INTO items (name, a, b) VALUES ('x', 1, 0), ('y', 1, 0)",
         after=_refused("INSERT INTO items (name, a, b) VALUES ('z', 1, 1), ('w', 1, 1)")),
    Case("expression_index_added", _indexed(),
         _indexed(lambda m: m.index(pw.fn.lower(m.name), name="items_lower_name")), SEED_AB),
    Case("descending_index_added", _indexed(), _indexed(lambda m: m.index(m.a.desc(), m.b)),
         SEED_AB),
    Case("field_index_renamed_with_its_column", _items(code=pw.CharField(max_length=5,
                                                                          index=True)),
         _items(label=renamed_from(pw.CharField(max_length=5, index=True), "code")),
         "INSERT INTO items (name, code) VALUES ('a', 'x')",
         after=_eq("SELECT label FROM items", [("x",)])),
    # -- foreign keys -----------------------------------------------------------------
    Case("fk_dropped_with_its_column", _with_owner(null=True), lambda: [_owner(), item()],
         SEED_OWNERS, allow_drop=True, rollback_keeps_rows=True),
    Case("fk_column_renamed", _with_owner(null=True),
         lambda: [o := _owner(), item(holder=renamed_from(pw.ForeignKeyField(
             o, column_name="holder_id", null=True, backref="+"), "owner_id"))],
         SEED_OWNERS),
    Case("self_referential_fk_on_delete_changed",
         _items(parent=pw.ForeignKeyField("self", column_name="parent_id", null=True,
                                          backref="+", on_delete="CASCADE")),
         _items(parent=pw.ForeignKeyField("self", column_name="parent_id", null=True,
                                          backref="+", on_delete="SET NULL")),
         "INSERT INTO items (name) VALUES ('a'); "
         "INSERT INTO items (name, parent_id) SELECT 'b', item_id FROM items"),
    Case("two_new_tables_referring_to_each_other", lambda: [item()], _two_cycle, SEED),
    Case("referenced_column_renamed", _referenced_code("code"),
         _referenced_code("ref", "code"),
         "INSERT INTO owners (code) VALUES ('o1'); "
         "INSERT INTO items (name, owner_code) VALUES ('a', 'o1')",
         after=_refused("INSERT INTO items (name, owner_code) VALUES ('b', 'zz')")),
    # A table dropped with the foreign key to it, its column kept, is refused (its rollback
    # could not add the foreign key back): test_migrate_outside_cases.test_referenced_table_*.
    Case("many_to_many_removed", _m2m, lambda: [item()], SEED, allow_drop=True),
    # -- checks -----------------------------------------------------------------------
    Case("check_values_removed", _status(["new", "done", "gone"]), _status(["new", "done"]),
         "INSERT INTO items (name, status) VALUES ('a', 'new'), ('b', 'done')",
         after=_refused("UPDATE items SET status = 'gone'")),
    # -- tables and keys --------------------------------------------------------------
    Case("serial_table_renamed", _serial_table("counters"),
         _serial_table("tallies", "counters"), "INSERT INTO counters (n) VALUES (1), (2)",
         after=lambda db: db.execute_sql("INSERT INTO tallies (n) VALUES (3)")),
    Case("serial_key_column_renamed", lambda: [model("Counter", "counters", id=pw.AutoField(),
                                                     n=pw.IntegerField(default=0))],
         lambda: [model("Counter", "counters", key=renamed_from(pw.AutoField(), "id"),
                        n=pw.IntegerField(default=0))],
         "INSERT INTO counters (n) VALUES (1), (2)",
         after=lambda db: db.execute_sql("INSERT INTO counters (n) VALUES (3)")),
    Case("composite_key_added_to_a_keyless_table", _member(), _member("user", "org"),
         SEED_MEMBERS),
    Case("composite_key_dropped", _member("user", "org"), _member(), SEED_MEMBERS,
         after=lambda db: db.execute_sql("INSERT INTO members VALUES (1, 1, 'a')")),
    Case("composite_key_column_widened", _member("user", "org"),
         _member("user", "org", user=pw.BigIntegerField()), SEED_MEMBERS),
    Case("composite_key_column_renamed", _member("user", "org"),
         lambda: _member("account", "org", account=renamed_from(pw.IntegerField(), "user"),
                         user=None)(), SEED_MEMBERS),
    Case("fk_to_field_changed",
         lambda: [o := model("Owner", "owners", id=uuid_pk("owner_id"),
                             code=pw.CharField(max_length=5, unique=True)),
                  item(owner=pw.ForeignKeyField(o, column_name="owner_ref", null=True,
                                                backref="+"))],
         _referenced_code("code"), "INSERT INTO owners (code) VALUES ('o1')"),
    Case("renamed_table_and_referenced_column",
         _referenced_code("code"),
         lambda: [o := renamed_from(model("Owner", "holders", id=uuid_pk("owner_id"),
                                          ref=renamed_from(pw.CharField(
                                              max_length=5, unique=True), "code")), "owners"),
                  item(owner=pw.ForeignKeyField(o, field=o.ref, column_name="owner_code",
                                                null=True, backref="+"))],
         "INSERT INTO owners (code) VALUES ('o1'); "
         "INSERT INTO items (name, owner_code) VALUES ('a', 'o1')"),
    Case("composite_key_replaced", _member("user", "org"), _member("org", "role"),
         SEED_MEMBERS),
    Case("serial_key_to_uuid", _keyed(pw.AutoField), _keyed(lambda: uuid_pk("id")),
         "INSERT INTO things (name) VALUES ('a'), ('b')",
         warns=("changes the type of things.id from SERIAL to UUID, which rewrites the table "
                "under ACCESS EXCLUSIVE (reads and writes wait; lint rule changing-column-type)",
                "existing rows get new values (USING gen_random_uuid())")),
    Case("array_field_added", lambda: [item()],
         _items(tags=ArrayField(pw.TextField, default=list)), SEED),
    Case("fk_made_deferrable", _with_owner(null=True),
         _with_owner(null=True, deferrable="INITIALLY DEFERRED"), SEED_OWNERS),
    Case("hash_index_added", _indexed(), _indexed(lambda m: m.index(m.a, using="hash")),
         SEED_AB),
    Case("named_meta_check_added", lambda: [item(n=pw.IntegerField(default=1))],
         lambda: [item(n=pw.IntegerField(default=1),
                       constraints=[pw.SQL("CONSTRAINT items_n_positive CHECK (n > 0)")])],
         "INSERT INTO items (name, n) VALUES ('a', 1)", after=_refused("UPDATE items SET n = 0")),
    Case("integer_to_varchar", _items(n=pw.IntegerField(null=True)),
         _items(n=pw.CharField(max_length=12, null=True)),
         "INSERT INTO items (name, n) VALUES ('a', 42)",
         after=_eq("SELECT n FROM items", [("42",)])),
    Case("boolean_to_text", _items(ok=pw.BooleanField(null=True)),
         _items(ok=pw.TextField(null=True)), "INSERT INTO items (name, ok) VALUES ('a', true)",
         after=_eq("SELECT ok FROM items", [("true",)])),
    Case("array_constant_default", lambda: [item()],
         _items(nums=ArrayField(pw.IntegerField, default=[1, 2])), SEED,
         after=_eq("SELECT DISTINCT nums FROM items", [([1, 2],)])),
    Case("constant_default_with_a_percent", lambda: [item()],
         _items(note=pw.CharField(max_length=9, default="100%")), SEED,
         after=_eq("SELECT DISTINCT note FROM items", [("100%",)])),
    Case("server_default_with_a_percent", lambda: [item()],
         _items(note=pw.CharField(max_length=9, constraints=[pw.SQL("DEFAULT '5%%'")])), SEED,
         after=_eq("SELECT DISTINCT note FROM items", [("5%",)])),
    Case("tz_datetime_constant_default", lambda: [item()],
         _items(since=DateTimeTZField(default=dt.datetime(2020, 1, 2, 3, 4,
                                                          tzinfo=dt.UTC))), SEED,
         after=_eq("SELECT DISTINCT since = '2020-01-02 03:04+00' FROM items", [(True,)])),
    Case("time_and_uuid_constant_defaults", lambda: [item()],
         _items(at=pw.TimeField(default=dt.time(8, 30)),
                ref=pw.UUIDField(default=uuid.UUID(int=7))), SEED,
         after=_eq("SELECT DISTINCT at, ref FROM items", [(dt.time(8, 30), uuid.UUID(int=7))])),
    Case("new_column_with_check_and_constant_default", lambda: [item()], _status(["new", "x"]),
         SEED, after=_eq("SELECT DISTINCT status FROM items", [("new",)])),
    Case("check_on_a_renamed_column",
         _items(qty=pw.IntegerField(default=0, constraints=[pw.Check("qty >= 0")])),
         _items(quantity=renamed_from(pw.IntegerField(default=0, constraints=[
             pw.Check("quantity >= 0")]), "qty")),
         "INSERT INTO items (name, qty) VALUES ('a', 1)",
         after=_refused("UPDATE items SET quantity = -1")),
    Case("referenced_column_widened", _referenced_code("code"),
         lambda: [o := model("Owner", "owners", id=uuid_pk("owner_id"),
                             code=pw.CharField(max_length=10, unique=True)),
                  item(owner=pw.ForeignKeyField(o, field=o.code, column_name="owner_code",
                                                null=True, backref="+"))],
         "INSERT INTO owners (code) VALUES ('o1'); "
         "INSERT INTO items (name, owner_code) VALUES ('a', 'o1')"),
    Case("type_change_in_a_unique_together", _indexed(lambda m: m.index(m.a, m.b, unique=True)),
         _big_ab, SEED_AB),
    Case("jsonb_gin_index_dropped", _items(doc=BinaryJSONField(null=True)),
         _items(doc=BinaryJSONField(null=True, index=False)),
         "INSERT INTO items (name, doc) VALUES ('a', '{\"k\": 1}')"),
    Case("fk_index_dropped", _with_owner(null=True), _with_owner(null=True, index=False),
         SEED_OWNERS),
    Case("meta_index_renamed", _indexed(lambda m: m.index(m.a, name="items_a_one")),
         _indexed(lambda m: m.index(m.a, name="items_a_two")), SEED_AB),
    Case("not_null_dropped_with_its_server_default",
         _items(n=pw.IntegerField(constraints=[pw.SQL("DEFAULT 1")])),
         _items(n=pw.IntegerField(null=True)), SEED),
)


# The whole of ``datalayer migrate check`` (the history applied from its offline SQL in a
# scratch database, compared there with create_tables()) for these.
FULL_CHECK = {"varchar_lengthened", "bigint_to_int", "serial_key_to_uuid",
              "composite_key_added_to_a_keyless_table", "referenced_column_renamed",
              "two_new_tables_referring_to_each_other", "array_constant_default",
              "composite_key_column_renamed", "fk_to_field_changed"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_model_change(
    case: Case, pg: Server, module_db: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    """The safe forms, then the plain ones, each in the module's database emptied."""
    for form in both_forms(case):
        (tmp_path / form.id).mkdir()
        run_case(form, emptied(module_db), ref_db, tmp_path / form.id, reapply=True)
    # The plain forms are for small tables (the lint flags them): check the safe ones.
    # run_case compared the schema and re-diffed: for most cases only check's lint is
    # left to run (check's scratch databases cost seconds each on a busy server).
    check_passes(pg, tmp_path, case.v1(), case.v2(), allow_drop=case.allow_drop,
                 lint_only=case.id not in FULL_CHECK)

