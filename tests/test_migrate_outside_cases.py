"""Model changes real Peewee projects make, tried from outside as issue 15 item 6 tries them.

Same harness and same checks as :mod:`tests.test_migrate_more_cases`: each case is
generated, applied on tables with rows, must reproduce ``create_tables()``, re-diff
empty, roll back keeping the rows and apply again, in the safe forms and with
``--unsafe``; the lint of every file (forward and rollback) is clean but for the rules
``diff`` announced.  A change the generator cannot write correctly in one file is
refused with a message that names the cause and the way out (``test_refused`` and the
``test_*_is_refused`` tests), and that way out, two migrations, is run the same way
(``test_way_out_of_a_refusal``, ``test_*_in_two_migrations``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from playhouse.postgres_ext import (
    ArrayField,
    BinaryJSONField,
    DateTimeTZField,
    IdentityField,
    IntervalField,
    JSONField,
    TSVectorField,
)

from datalayer.errors import GenerationError
from datalayer.migrate.autogenerate.api import create_migration, diff_source
from datalayer.migrate.autogenerate.hints import renamed_from
from datalayer.migrate.autogenerate.outcome import DropRefused
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
from tests.test_migrate_generate import PlainRouter, item, model

SEED = "INSERT INTO items (name) VALUES ('a'), ('b')"


def _members(key: tuple[str, ...] | None, **extra: Any) -> Callable[[], Models]:
    """members(user, org, role): a serial ``id`` key (None), a composite one, or none (())."""
    def models() -> Models:
        fields: dict[str, Any] = {"user": pw.IntegerField(), "org": pw.IntegerField(),
                                  "role": pw.CharField(max_length=10, default="member")}
        if key is None:
            fields["id"] = pw.AutoField()
        fields.update(extra)
        meta = type("Meta", (), {"table_name": "members", "legacy_table_names": False,
                                 "primary_key": pw.CompositeKey(*key) if key else False})
        if key is None:
            del meta.primary_key
        return [type("Member", (pw.Model,), {"Meta": meta, "__module__": __name__, **fields})]
    return models


SEED_MEMBERS = ("INSERT INTO members (\"user\", org, role) "
                "VALUES (1, 1, 'a'), (1, 2, 'b'), (2, 1, 'c')")


def _owner() -> type[pw.Model]:
    return model("Owner", "owners", id=uuid_pk("owner_id"), code=pw.CharField(max_length=5))


def _with_owner() -> Models:
    owner = _owner()
    return [owner, item(owner=pw.ForeignKeyField(owner, column_name="owner_id", null=True,
                                                 backref="+"))]


SEED_OWNERS = ("INSERT INTO owners (code) VALUES ('o1'); "
               "INSERT INTO items (name, owner_id) SELECT 'a', owner_id FROM owners; "
               "INSERT INTO items (name) VALUES ('b')")



def _owned(**fk: Any) -> Callable[[], Models]:
    def models() -> Models:
        owner = _owner()
        return [owner, item(owner=pw.ForeignKeyField(owner, column_name="owner_id", null=True,
                                                     backref="+", **fk))]
    return models


def _coded(fk: bool, null: bool = False) -> Callable[[], Models]:
    """owners.code UNIQUE; with ``fk``, items.owner_code refers to it (not to the key)."""
    def models() -> Models:
        owner = model("Owner", "owners", id=uuid_pk("owner_id"),
                      code=pw.CharField(max_length=5, unique=True, null=null))
        if not fk:
            return [owner, item()]
        return [owner, item(owner=pw.ForeignKeyField(owner, field=owner.code, null=True,
                                                     column_name="owner_code", backref="+"))]
    return models


def _coded_plain() -> Models:
    """owners.code without UNIQUE, items without a foreign key."""
    return [model("Owner", "owners", id=uuid_pk("owner_id"), code=pw.CharField(max_length=5)),
            item()]


def _indexed(*indexes: Callable[[type[pw.Model]], pw.ModelIndex], **fields: Any
             ) -> Callable[[], Models]:
    def models() -> Models:
        m = item(a=pw.IntegerField(default=0), b=pw.IntegerField(default=0), **fields)
        for index in indexes:
            m.add_index(index(m))
        return [m]
    return models


SEED_AB = "INSERT INTO items (name, a, b) VALUES ('a', 1, 2), ('b', 2, 1)"


def _status(values: Sequence[str]) -> Callable[[], Models]:
    allowed = ", ".join(f"'{v}'" for v in values)
    return _items(status=pw.CharField(max_length=10, default=values[0],
                                      constraints=[pw.Check(f"status IN ({allowed})")]))


def _in_schema(schema: str | None) -> Callable[[], Models]:
    def models() -> Models:
        meta = type("Meta", (), {"table_name": "notes", "legacy_table_names": False,
                                 "schema": schema})
        return [type("Note", (pw.Model,), {"Meta": meta, "__module__": __name__,
                                           "body": pw.TextField(default="")})]
    return models


def _deferred() -> Models:
    it = item(owner=pw.DeferredForeignKey("Owner", column_name="owner_id", null=True,
                                          backref="+"))
    return [it, _owner()]


def _m2m(linked: bool) -> Callable[[], Models]:
    def models() -> Models:
        tag = model("Tag", "tags", id=pw.AutoField(), label=pw.CharField(max_length=10))
        if not linked:
            return [item(), tag]
        it = item(tags=pw.ManyToManyField(tag, backref="items"))
        return [it, tag, it.tags.get_through_model()]
    return models


def _counter(table: str, column: str, hint: bool) -> Callable[[], Models]:
    def models() -> Models:
        n = pw.IntegerField(default=0)
        m = model("Counter", table, id=pw.AutoField(),
                  **{column: renamed_from(n, "n") if hint else n})
        return [renamed_from(m, "counters") if hint else m]
    return models


def _ledger(owner: type[pw.Model]) -> type[pw.Model]:
    meta = type("Meta", (), {"table_name": "ledger", "legacy_table_names": False,
                             "schema": "app"})
    return type("Ledger", (pw.Model,), {
        "Meta": meta, "__module__": __name__, "amount": pw.IntegerField(default=0),
        "owner": pw.ForeignKeyField(owner, column_name="owner_id", backref="+")})


def _renamed_in_unique_together() -> Models:
    m = item(a=pw.IntegerField(default=0), c=renamed_from(pw.IntegerField(default=0), "b"))
    m.add_index(m.index(m.a, m.c, unique=True))
    return [m]


def _serial_owned(key: type[pw.Field]) -> Callable[[], Models]:
    def models() -> Models:
        group = model("Group", "groups", id=key(), label=pw.CharField(max_length=9))
        return [group, item(group=pw.ForeignKeyField(group, column_name="group_id", null=True,
                                                     backref="+"))]
    return models


def _indexed_counter(table: str, hint: bool) -> Callable[[], Models]:
    def models() -> Models:
        m = model("Counter", table, id=pw.AutoField(), n=pw.IntegerField(default=0, index=True),
                  code=pw.CharField(max_length=5, unique=True))
        return [renamed_from(m, "counters") if hint else m]
    return models


def _m2m_renamed(hint: bool = True) -> Models:
    tag = model("Tag", "labels", id=pw.AutoField(), label=pw.CharField(max_length=10))
    renamed_from(tag, "tags")
    it = item(tags=pw.ManyToManyField(tag, backref="items"))
    # peewee names the through table after both sides: it is renamed too (the hint
    # that diff's refusal asks for without it: test_through_table_rename_hint).
    through = it.tags.get_through_model()
    return [it, tag, renamed_from(through, "items_tags_through") if hint else through]


def _settings_table() -> type[pw.Model]:
    meta = type("Meta", (), {"table_name": "cached", "legacy_table_names": False,
                             "table_settings": ["WITH (fillfactor=70)"]})
    return type("Cached", (pw.Model,), {"Meta": meta, "__module__": __name__,
                                        "key": pw.CharField(max_length=9, unique=True)})


def _tree(table: str, hint: bool) -> Callable[[], Models]:
    def models() -> Models:
        m = model("Node", table, id=pw.AutoField(), parent=pw.ForeignKeyField(
            "self", null=True, column_name="parent_id", backref="+"))
        return [item(), renamed_from(m, "nodes") if hint else m]
    return models


def _named_note(table: str, schema: str | None) -> type[pw.Model]:
    meta = type("Meta", (), {"table_name": table, "legacy_table_names": False,
                             "schema": schema})
    return type("Note", (pw.Model,), {"Meta": meta, "__module__": __name__,
                                      "body": pw.TextField(default="")})


def _tupled(unique: bool) -> Callable[[], Models]:
    """items(a, b) with ``Meta.indexes`` in peewee's tuple form."""
    return lambda: [model("Item", "items", id=uuid_pk("item_id"),
                          name=pw.CharField(max_length=50, default="-"),
                          a=pw.IntegerField(default=0), b=pw.IntegerField(default=0),
                          indexes=((("a", "b"), unique),))]


def _renamed_in_partial_index() -> Models:
    m = item(a=pw.IntegerField(default=0), c=renamed_from(pw.IntegerField(default=0), "b"))
    m.add_index(m.index(m.a, unique=True, where=m.c > 0))
    return [m]


def _titled() -> Models:
    m = item(title=pw.CharField(max_length=20, default=""))
    m.add_index(m.index(pw.fn.lower(m.title), name="items_title_ci"))
    return [m]


def _renamed_in_expression_index() -> Models:
    m = item(label=renamed_from(pw.CharField(max_length=20, default=""), "title"))
    m.add_index(m.index(pw.fn.lower(m.label), name="items_title_ci"))
    return [m]


def _partial_on_boolean() -> Models:
    m = item(active=pw.BooleanField(default=True), code=pw.CharField(max_length=5, null=True))
    m.add_index(m.index(m.code, unique=True, where=m.active))
    return [m]


def _owned_in_app() -> Models:
    owner = model("Owner", "owners", id=uuid_pk("owner_id"), code=pw.CharField(max_length=5))
    owner._meta.schema = "app"
    return [owner, item(owner=pw.ForeignKeyField(owner, column_name="owner_id", null=True,
                                                 backref="+"))]


def _big_ab_plain() -> Models:
    m = item(a=pw.BigIntegerField(default=0), b=pw.IntegerField(default=0))
    m.add_index(m.index(m.a, m.b))
    return [m]


def _renamed_in_index() -> Models:
    m = item(a=pw.IntegerField(default=0), c=renamed_from(pw.IntegerField(default=0), "b"))
    m.add_index(m.index(m.a, m.c))
    return [m]


def _holders() -> Models:
    owner = renamed_from(model("Owner", "holders", id=uuid_pk("owner_id"),
                               code=pw.CharField(max_length=5)), "owners")
    return [owner, item(owner=pw.ForeignKeyField(owner, column_name="owner_id", null=True,
                                                 backref="+"))]


CASES = (
    # -- keys -------------------------------------------------------------------------
    Case("serial_key_replaced_by_composite_key", _members(None), _members(("user", "org")),
         SEED_MEMBERS, allow_drop=True),
    # With a unique column dropped too: the file before the transactional one (the unique
    # index dropped concurrently) numbers the serial key back in its rollback.
    Case("serial_key_and_a_unique_column_replaced_by_composite_key",
         _members(None, code=pw.CharField(max_length=5, null=True, unique=True)),
         _members(("user", "org")), SEED_MEMBERS, allow_drop=True),
    Case("serial_key_dropped_leaving_no_key", _members(None), _members(()), SEED_MEMBERS,
         allow_drop=True),
    Case("bigserial_key_replaced_by_composite_key", _members(None, id=pw.BigAutoField()),
         _members(("user", "org")), SEED_MEMBERS, allow_drop=True),
    Case("composite_key_replaced_by_serial_key", _members(("user", "org")), _members(None),
         SEED_MEMBERS),
    # -- foreign keys -----------------------------------------------------------------
    Case("fk_to_a_unique_non_key_field_added", _coded(False), _coded(True),
         "INSERT INTO owners (code) VALUES ('o1'); INSERT INTO items (name) VALUES ('a')",
         after=_refused("INSERT INTO items (name, owner_code) VALUES ('b', 'zz')")),
    Case("self_referential_fk_added", lambda: [item()],
         _items(parent=pw.ForeignKeyField("self", column_name="parent_id", null=True,
                                          backref="+")), SEED,
         after=_refused("INSERT INTO items (name, parent_id) VALUES ('c', gen_random_uuid())")),
    Case("fk_on_update_cascade_added", _owned(), _owned(on_update="CASCADE"), SEED_OWNERS,
         after=_eq("UPDATE owners SET owner_id = gen_random_uuid(); SELECT count(*) FROM items "
                   "JOIN owners USING (owner_id)", [(1,)])),
    Case("deferred_fk_added", lambda: [item(), _owner()], _deferred,
         "INSERT INTO owners (code) VALUES ('o1'); INSERT INTO items (name) VALUES ('a')",
         after=_refused("INSERT INTO items (name, owner_id) VALUES ('b', gen_random_uuid())")),
    Case("fk_made_not_null", _owned(),
         lambda: [o := _owner(), item(owner=pw.ForeignKeyField(o, column_name="owner_id",
                                                               backref="+"))],
         "INSERT INTO owners (code) VALUES ('o1'); "
         "INSERT INTO items (name, owner_id) SELECT 'a', owner_id FROM owners",
         after=_refused("INSERT INTO items (name) VALUES ('no owner')")),
    Case("referenced_table_renamed", _owned(), _holders, SEED_OWNERS,
         after=_refused("INSERT INTO items (name, owner_id) VALUES ('b', gen_random_uuid())")),
    Case("many_to_many_added", _m2m(False), _m2m(True),
         "INSERT INTO tags (label) VALUES ('t'); INSERT INTO items (name) VALUES ('a')"),
    # -- indexes ----------------------------------------------------------------------
    Case("multi_column_index_extended", _indexed(lambda m: m.index(m.a, m.b)),
         _indexed(lambda m: m.index(m.a, m.b, m.name)), SEED_AB),
    Case("partial_index_condition_changed",
         _indexed(lambda m: m.index(m.a, unique=True, where=m.b > 0)),
         _indexed(lambda m: m.index(m.a, unique=True, where=m.b > 1)),
         "INSERT INTO items (name, a, b) VALUES ('x', 1, 0), ('y', 1, 2)",
         after=_refused("INSERT INTO items (name, a, b) VALUES ('z', 1, 5)")),
    Case("expression_index_changed",
         _indexed(lambda m: m.index(pw.fn.lower(m.name), name="items_name_ci")),
         _indexed(lambda m: m.index(pw.fn.upper(m.name), name="items_name_ci")), SEED_AB),
    Case("partial_multi_column_unique_added", _indexed(),
         _indexed(lambda m: m.index(m.a, m.b, unique=True, where=m.b > 0)), SEED_AB,
         after=_refused("INSERT INTO items (name, a, b) VALUES ('z', 1, 2)")),
    Case("index_made_unique", _items(code=pw.CharField(max_length=5, null=True, index=True)),
         _items(code=pw.CharField(max_length=5, null=True, unique=True)),
         "INSERT INTO items (name, code) VALUES ('a', 'x'), ('b', 'y')",
         after=_refused("INSERT INTO items (name, code) VALUES ('c', 'x')")),
    Case("unique_made_plain_index", _items(code=pw.CharField(max_length=5, null=True,
                                                              unique=True)),
         _items(code=pw.CharField(max_length=5, null=True, index=True)),
         "INSERT INTO items (name, code) VALUES ('a', 'x')",
         after=lambda db: db.execute_sql("INSERT INTO items (name, code) VALUES ('c', 'x')")),
    Case("index_type_to_brin", _items(n=pw.IntegerField(default=0, index=True)),
         _items(n=pw.IntegerField(default=0, index=True, index_type="BRIN")),
         "INSERT INTO items (name, n) VALUES ('a', 1)"),
    Case("jsonb_gin_index_added", _items(doc=BinaryJSONField(null=True, index=False)),
         _items(doc=BinaryJSONField(null=True)),
         "INSERT INTO items (name, doc) VALUES ('a', '{\"k\": 1}')"),
    # -- checks and defaults ----------------------------------------------------------
    Case("field_check_edited",
         _items(n=pw.IntegerField(default=1, constraints=[pw.Check("n > 0")])),
         _items(n=pw.IntegerField(default=1, constraints=[pw.Check("n >= 0")])),
         "INSERT INTO items (name, n) VALUES ('a', 1)",
         after=_refused("UPDATE items SET n = -1")),
    Case("enum_check_widened", _status(["new", "done"]), _status(["new", "done", "gone"]),
         "INSERT INTO items (name, status) VALUES ('a', 'new'), ('b', 'done')",
         after=lambda db: db.execute_sql("UPDATE items SET status = 'gone'")),
    Case("server_default_to_python_default",
         _items(n=pw.IntegerField(constraints=[pw.SQL("DEFAULT 5")])),
         _items(n=pw.IntegerField(default=5)), SEED),
    Case("python_default_to_server_default", _items(n=pw.IntegerField(default=5)),
         _items(n=pw.IntegerField(constraints=[pw.SQL("DEFAULT 5")])),
         "INSERT INTO items (name, n) VALUES ('a', 5)",
         after=_eq("INSERT INTO items (name) VALUES ('b') RETURNING n", [(5,)])),
    Case("boolean_null_to_not_null_with_default", _items(ok=pw.BooleanField(null=True)),
         _items(ok=pw.BooleanField(default=False)),
         "INSERT INTO items (name, ok) VALUES ('a', true), ('b', NULL)",
         after=_eq("SELECT name, ok FROM items ORDER BY name", [("a", True), ("b", False)])),
    # -- renames and schemas ----------------------------------------------------------
    Case("model_and_column_renamed", _counter("counters", "n", False),
         _counter("tallies", "total", True), "INSERT INTO counters (n) VALUES (4)",
         after=_eq("SELECT total FROM tallies", [(4,)])),
    Case("new_table_in_a_schema", lambda: [item()], lambda: [item(), *_in_schema("app")()],
         SEED),
    # -- types ------------------------------------------------------------------------
    Case("varchar_to_text", _items(code=pw.CharField(max_length=8, null=True)),
         _items(code=pw.TextField(null=True)),
         "INSERT INTO items (name, code) VALUES ('a', 'abc')"),
    Case("text_to_uuid", _items(ref=pw.CharField(max_length=36, null=True)),
         _items(ref=pw.UUIDField(null=True)),
         f"INSERT INTO items (name, ref) VALUES ('a', '{uuid.UUID(int=5)}')",
         after=_eq("SELECT ref FROM items", [(uuid.UUID(int=5),)])),
    Case("integer_to_double", _items(n=pw.IntegerField(null=True)),
         _items(n=pw.DoubleField(null=True)), "INSERT INTO items (name, n) VALUES ('a', 3)",
         after=_eq("SELECT n FROM items", [(3.0,)])),
    Case("fixed_char_to_varchar", _items(code=pw.FixedCharField(max_length=3, null=True)),
         _items(code=pw.CharField(max_length=3, null=True)),
         "INSERT INTO items (name, code) VALUES ('a', 'ab')"),
    # -- round 2 ----------------------------------------------------------------------
    Case("table_moved_to_a_schema", _in_schema(None), _in_schema("app"),
         "INSERT INTO notes (body) VALUES ('x')"),
    Case("datetime_to_timestamp_field", _items(at=pw.DateTimeField(null=True)),
         _items(at=pw.TimestampField(null=True, utc=True)),
         "INSERT INTO items (name, at) VALUES ('a', '2024-01-01 10:30')",
         warns=("with USING round(extract(epoch FROM \"at\"))::BIGINT: each value becomes its "
                "count of 1/1 seconds since 1970-01-01 UTC",),
         after=_eq("SELECT at FROM items", [(1704105000,)]),
         after_rollback=_eq("SELECT at FROM items", [(dt.datetime(2024, 1, 1, 10, 30),)])),
    Case("timestamptz_to_millisecond_timestamp_field", _items(at=DateTimeTZField(null=True)),
         _items(at=pw.TimestampField(null=True, resolution=3)),
         "INSERT INTO items (name, at) VALUES ('a', '2024-01-01 10:30:00.25+00')",
         after=_eq("SELECT at FROM items", [(1704105000250,)]),
         after_rollback=_eq("SELECT at = '2024-01-01 10:30:00.25+00' FROM items", [(True,)])),
    Case("uuid_to_binary_uuid", _items(ref=pw.UUIDField(null=True)),
         _items(ref=pw.BinaryUUIDField(null=True)),
         f"INSERT INTO items (name, ref) VALUES ('a', '{uuid.UUID(int=5)}')",
         after=_eq("SELECT ref = decode('00000000000000000000000000000005', 'hex') FROM items",
                   [(True,)]),
         after_rollback=_eq("SELECT ref FROM items", [(uuid.UUID(int=5),)])),
    Case("meta_check_edited",
         _indexed(constraints=[pw.Check("a < 100")]), _indexed(constraints=[pw.Check("a < 1000")]),
         SEED_AB, after=_refused("UPDATE items SET a = 1000")),
    Case("serial_key_to_bigserial", lambda: [model("Thing", "things", id=pw.AutoField(),
                                                   n=pw.IntegerField(default=0))],
         lambda: [model("Thing", "things", id=pw.BigAutoField(), n=pw.IntegerField(default=0))],
         "INSERT INTO things (n) VALUES (1), (2)",
         after=lambda db: db.execute_sql("INSERT INTO things (n) VALUES (3)")),
    Case("fk_retargeted_to_another_table", _owned(),
         lambda: [_owner(), g := model("Group", "groups", id=uuid_pk("group_id")),
                  item(owner=pw.ForeignKeyField(g, column_name="owner_id", null=True,
                                                backref="+"))],
         "INSERT INTO owners (code) VALUES ('o1'); INSERT INTO items (name) VALUES ('a')",
         after=_refused("INSERT INTO items (name, owner_id) SELECT 'b', owner_id FROM owners")),
    Case("column_of_a_multi_column_index_dropped",
         _indexed(lambda m: m.index(m.a, m.b)),
         lambda: [item(a=pw.IntegerField(default=0))], SEED_AB, allow_drop=True),
    Case("unique_column_added_with_callable_default", lambda: [item()],
         _items(token=pw.UUIDField(default=uuid.uuid4, unique=True)), SEED,
         after=_eq("SELECT count(DISTINCT token) FROM items", [(2,)])),
    Case("column_in_unique_together_renamed", _indexed(lambda m: m.index(m.a, m.b, unique=True)),
         _renamed_in_unique_together, SEED_AB,
         after=_refused("INSERT INTO items (name, a, c) VALUES ('z', 1, 2)")),
    Case("callable_default_to_now_server_default",
         _items(at=pw.DateTimeField(default=dt.datetime.now)),
         _items(at=pw.DateTimeField(constraints=[pw.SQL("DEFAULT now()")])),
         "INSERT INTO items (name, at) VALUES ('a', now())",
         after=_eq("INSERT INTO items (name) VALUES ('b') RETURNING at IS NOT NULL", [(True,)])),
    Case("not_null_column_with_index_made_nullable_and_unindexed",
         _items(n=pw.IntegerField(default=0, index=True)), _items(n=pw.IntegerField(null=True)),
         "INSERT INTO items (name, n) VALUES ('a', 1)"),
    Case("fk_on_delete_added_not_null",
         lambda: [o := _owner(), item(owner=pw.ForeignKeyField(o, column_name="owner_id",
                                                               backref="+"))],
         lambda: [o := _owner(), item(owner=pw.ForeignKeyField(o, column_name="owner_id",
                                                               backref="+",
                                                               on_delete="CASCADE"))],
         "INSERT INTO owners (code) VALUES ('o1'); "
         "INSERT INTO items (name, owner_id) SELECT 'a', owner_id FROM owners",
         after=_eq("DELETE FROM owners; SELECT count(*) FROM items", [(0,)])),
    Case("new_table_in_a_schema_referring_to_public", lambda: [_owner()],
         lambda: [o := _owner(), _ledger(o)], "INSERT INTO owners (code) VALUES ('o1')"),
    # -- round 3 ----------------------------------------------------------------------
    Case("referenced_serial_key_to_bigserial", _serial_owned(pw.AutoField),
         _serial_owned(pw.BigAutoField),
         "INSERT INTO groups (label) VALUES ('g'); "
         "INSERT INTO items (name, group_id) SELECT 'a', id FROM groups",
         after=_eq("SELECT data_type FROM information_schema.columns WHERE table_name = "
                   "'items' AND column_name = 'group_id'", [("bigint",)])),
    Case("indexed_varchar_to_text", _items(code=pw.CharField(max_length=8, index=True,
                                                              null=True)),
         _items(code=pw.TextField(index=True, null=True)),
         "INSERT INTO items (name, code) VALUES ('a', 'abc')"),
    Case("self_referencing_table_dropped",
         lambda: [item(), model("Node", "nodes", id=pw.AutoField(), parent=pw.ForeignKeyField(
             "self", null=True, column_name="parent_id", backref="+"))],
         lambda: [item()],
         "INSERT INTO nodes (parent_id) VALUES (NULL); "
         "INSERT INTO nodes (parent_id) SELECT id FROM nodes", allow_drop=True,
         rollback_keeps_rows=False),
    Case("table_with_indexes_renamed", _indexed_counter("counters", False),
         _indexed_counter("tallies", True), "INSERT INTO counters (n, code) VALUES (1, 'x')",
         after=_refused("INSERT INTO tallies (n, code) VALUES (2, 'x')")),
    Case("array_element_type_widened", _items(nums=ArrayField(pw.IntegerField, null=True)),
         _items(nums=ArrayField(pw.BigIntegerField, null=True)),
         "INSERT INTO items (name, nums) VALUES ('a', '{1,2}')",
         after=_eq("SELECT nums FROM items", [([1, 2],)])),
    Case("unique_expression_index_added", _indexed(),
         _indexed(lambda m: m.index(pw.fn.lower(m.name), unique=True, name="items_name_ci")),
         SEED_AB, after=_refused("INSERT INTO items (name) VALUES ('A')")),
    Case("reserved_word_columns_added", lambda: [item()],
         _items(order=pw.IntegerField(default=0, index=True),
                user=pw.CharField(max_length=5, null=True, unique=True)), SEED),
    Case("mixed_case_column_renamed", _items(code=pw.CharField(max_length=5, null=True,
                                                                column_name="Code", index=True)),
         _items(label=renamed_from(pw.CharField(max_length=5, null=True, column_name="Label",
                                                index=True), "Code")),
         "INSERT INTO items (name, \"Code\") VALUES ('a', 'x')",
         after=_eq("SELECT \"Label\" FROM items", [("x",)])),
    Case("mixed_case_table_added", lambda: [item()],
         lambda: [item(), model("Audit", "AuditLog", id=pw.AutoField(),
                                what=pw.CharField(max_length=9, index=True))], SEED),
    Case("fk_made_nullable_with_set_null",
         lambda: [o := _owner(), item(owner=pw.ForeignKeyField(o, column_name="owner_id",
                                                               backref="+"))],
         _owned(on_delete="SET NULL"),
         "INSERT INTO owners (code) VALUES ('o1'); "
         "INSERT INTO items (name, owner_id) SELECT 'a', owner_id FROM owners",
         after=_eq("DELETE FROM owners; SELECT count(*) FROM items WHERE owner_id IS NULL",
                   [(1,)])),
    Case("referenced_key_column_renamed", _owned(),
         lambda: [o := model("Owner", "owners", id=renamed_from(uuid_pk("id"), "owner_id"),
                             code=pw.CharField(max_length=5)),
                  item(owner=pw.ForeignKeyField(o, column_name="owner_id", null=True,
                                                backref="+"))], SEED_OWNERS,
         after=_refused("INSERT INTO items (name, owner_id) VALUES ('b', gen_random_uuid())")),
    Case("decimal_to_integer", _items(price=pw.DecimalField(8, 2, null=True)),
         _items(price=pw.IntegerField(null=True)),
         "INSERT INTO items (name, price) VALUES ('a', 12.00)",
         after=_eq("SELECT price FROM items", [(12,)])),
    Case("m2m_side_renamed", _m2m(True), _m2m_renamed,
         "INSERT INTO tags (label) VALUES ('t'); INSERT INTO items (name) VALUES ('a')"),
    Case("table_settings_on_a_new_table", lambda: [item()],
         lambda: [item(), _settings_table()], SEED,
         after=_eq("SELECT reloptions FROM pg_class WHERE relname = 'cached'",
                   [(["fillfactor=70"],)])),
    # -- round 4 ----------------------------------------------------------------------
    Case("smallint_to_boolean", _items(ok=pw.SmallIntegerField(null=True)),
         _items(ok=pw.BooleanField(null=True)),
         "INSERT INTO items (name, ok) VALUES ('a', 1), ('b', 0)",
         after=_eq("SELECT name, ok FROM items ORDER BY name", [("a", True), ("b", False)]),
         after_rollback=_eq("SELECT name, ok FROM items ORDER BY name", [("a", 1), ("b", 0)])),
    Case("integer_to_boolean", _items(ok=pw.IntegerField(null=True)),
         _items(ok=pw.BooleanField(null=True)), "INSERT INTO items (name, ok) VALUES ('a', 1)",
         after=_eq("SELECT ok FROM items", [(True,)])),
    Case("json_to_jsonb_with_its_gin_index", _items(doc=JSONField(null=True)),
         _items(doc=BinaryJSONField(null=True)),
         "INSERT INTO items (name, doc) VALUES ('a', '{\"k\": 1}')"),
    Case("tsvector_and_interval_added", lambda: [item()],
         _items(search=TSVectorField(null=True), span=IntervalField(null=True)), SEED),
    Case("real_to_double_to_decimal", _items(x=pw.FloatField(null=True)),
         _items(x=pw.DecimalField(10, 3, null=True)),
         "INSERT INTO items (name, x) VALUES ('a', 1.5)",
         after=_eq("SELECT x::text FROM items", [("1.500",)])),
    Case("column_renamed_and_widened", _items(qty=pw.IntegerField(default=0)),
         _items(quantity=renamed_from(pw.BigIntegerField(default=0), "qty")),
         "INSERT INTO items (name, qty) VALUES ('a', 3)",
         after=_eq("SELECT quantity FROM items", [(3,)])),
    Case("column_renamed_and_made_not_null", _items(qty=pw.IntegerField(null=True)),
         _items(quantity=renamed_from(pw.IntegerField(), "qty")),
         "INSERT INTO items (name, qty) VALUES ('a', 3)",
         after=_refused("INSERT INTO items (name) VALUES ('no quantity')")),
    Case("two_fks_to_one_table_added", lambda: [_owner(), item()],
         lambda: [o := _owner(), item(
             made_by=pw.ForeignKeyField(o, column_name="made_by", null=True, backref="+"),
             changed_by=pw.ForeignKeyField(o, column_name="changed_by", null=True,
                                           backref="+", on_delete="SET NULL"))],
         "INSERT INTO owners (code) VALUES ('o1'); INSERT INTO items (name) VALUES ('a')"),
    Case("self_referencing_table_renamed", _tree("nodes", False), _tree("tree_nodes", True),
         "INSERT INTO nodes (parent_id) VALUES (NULL); "
         "INSERT INTO nodes (parent_id) SELECT id FROM nodes",
         after=_refused("INSERT INTO tree_nodes (parent_id) VALUES (999)")),
    Case("checked_column_widened",
         _items(n=pw.IntegerField(default=1, constraints=[pw.Check("n > 0")])),
         _items(n=pw.BigIntegerField(default=1, constraints=[pw.Check("n > 0")])),
         "INSERT INTO items (name, n) VALUES ('a', 2)", after=_refused("UPDATE items SET n = 0")),
    Case("fk_column_renamed_and_on_delete_changed", _owned(),
         lambda: [o := _owner(), item(holder=renamed_from(pw.ForeignKeyField(
             o, column_name="holder_id", null=True, backref="+", on_delete="CASCADE"),
             "owner_id"))], SEED_OWNERS,
         after=_eq("DELETE FROM owners; SELECT count(*) FROM items", [(1,)])),
    Case("table_renamed_into_a_schema", _in_schema(None),
         lambda: [renamed_from(_named_note("memos", "app"), "notes")],
         "INSERT INTO notes (body) VALUES ('x')"),
    # -- round 5 ----------------------------------------------------------------------
    Case("serial_key_to_identity", lambda: [model("Thing", "things", id=pw.AutoField(),
                                                  n=pw.IntegerField(default=0))],
         lambda: [model("Thing", "things", id=IdentityField(), n=pw.IntegerField(default=0))],
         "INSERT INTO things (n) VALUES (1), (2)",
         after=_eq("INSERT INTO things (n) VALUES (3) RETURNING id > 2", [(True,)])),
    Case("identity_table_added", lambda: [item()],
         lambda: [item(), model("Event", "events", id=IdentityField(),
                                kind=pw.CharField(max_length=9))], SEED,
         after=_eq("INSERT INTO events (kind) VALUES ('k') RETURNING id", [(1,)])),
    Case("tuple_index_made_unique", _tupled(False), _tupled(True), SEED_AB,
         after=_refused("INSERT INTO items (name, a, b) VALUES ('z', 1, 2)")),
    Case("column_of_a_tuple_index_renamed", _tupled(True),
         lambda: [model("Item", "items", id=uuid_pk("item_id"), name=pw.CharField(
             max_length=50, default="-"), a=pw.IntegerField(default=0),
             c=renamed_from(pw.IntegerField(default=0), "b"),
             indexes=((("a", "c"), True),))], SEED_AB,
         after=_refused("INSERT INTO items (name, a, c) VALUES ('z', 1, 2)")),
    Case("meta_unique_constraint_added", _indexed(),
         _indexed(constraints=[pw.SQL("CONSTRAINT items_a_b_key UNIQUE (a, b)")]), SEED_AB,
         after=_refused("INSERT INTO items (name, a, b) VALUES ('z', 1, 2)")),
    Case("check_with_a_function_added", lambda: [item()],
         lambda: [item(constraints=[pw.Check("char_length(name) > 0")])], SEED,
         after=_refused("UPDATE items SET name = ''")),
    Case("jsonb_server_default_added", _items(doc=BinaryJSONField(null=True, index=False)),
         _items(doc=BinaryJSONField(index=False,
                                    constraints=[pw.SQL("DEFAULT '{}'::jsonb")])),
         "INSERT INTO items (name, doc) VALUES ('a', '{\"k\": 1}'), ('b', NULL)",
         after=_eq("SELECT doc::text FROM items ORDER BY name", [('{"k": 1}',), ("{}",)])),
    Case("new_table_with_a_deferred_fk_and_its_index", lambda: [_owner()],
         lambda: [o := _owner(), model("Task", "tasks", id=pw.AutoField(),
                                       owner=pw.ForeignKeyField(o, column_name="owner_id",
                                                                backref="+"),
                                       note=pw.DeferredForeignKey("Note", null=True,
                                                                  backref="+")),
                  _named_note("notes", None)],
         "INSERT INTO owners (code) VALUES ('o1')"),
    Case("fk_to_a_unique_field_and_the_unique_removed_together", _coded(True), _coded_plain,
         "INSERT INTO owners (code) VALUES ('o1'); "
         "INSERT INTO items (name, owner_code) VALUES ('a', 'o1')", allow_drop=True),
    # -- round 6 ----------------------------------------------------------------------
    Case("keyless_table_given_a_serial_key", _members(()), _members(None), SEED_MEMBERS,
         after=_eq("SELECT count(DISTINCT id) FROM members", [(3,)])),
    Case("date_to_timestamptz", _items(on=pw.DateField(null=True)),
         _items(on=DateTimeTZField(null=True)),
         "INSERT INTO items (name, \"on\") VALUES ('a', '2024-01-01')"),
    # -- round 7 ----------------------------------------------------------------------
    Case("meta_index_same_name_other_column", _indexed(lambda m: m.index(m.a, name="items_k")),
         _indexed(lambda m: m.index(m.b, name="items_k")), SEED_AB,
         after=_eq("SELECT strpos(indexdef, '(b)') > 0 FROM pg_indexes "
                   "WHERE indexname = 'items_k'", [(True,)])),
    Case("indexed_unique_column_added", lambda: [item()],
         _items(slug=pw.CharField(max_length=9, null=True, index=True, unique=True)), SEED),
    Case("null_to_not_null_with_a_server_default_on_nulls", _items(n=pw.IntegerField(null=True)),
         _items(n=pw.IntegerField(constraints=[pw.SQL("DEFAULT 0")])),
         "INSERT INTO items (name, n) VALUES ('a', 1), ('b', NULL)",
         after=_eq("SELECT name, n FROM items ORDER BY name", [("a", 1), ("b", 0)])),
    Case("varchar_shortened_with_fitting_data", _items(code=pw.CharField(max_length=20,
                                                                          null=True)),
         _items(code=pw.CharField(max_length=5, null=True)),
         "INSERT INTO items (name, code) VALUES ('a', 'abc')",
         warns=("fails if a stored value is longer than 5 characters",)),
    Case("column_added_to_a_composite_key_table", _members(("user", "org")),
         _members(("user", "org"), since=pw.DateField(null=True)), SEED_MEMBERS),
    # The rollback re-adds b as 0 in every row: a row with a > 0 would fail the CHECK then.
    Case("meta_check_dropped_with_its_column",
         _indexed(constraints=[pw.Check("a <= b")]), lambda: [item(a=pw.IntegerField(default=0))],
         "INSERT INTO items (name, a, b) VALUES ('a', 0, 2)", allow_drop=True,
         warns=("the rollback re-adds items.b without its values (its default or NULL in every "
                "row), and CHECK (a <= b) refers to it: the rollback fails if a row does not "
                "satisfy it then",)),
    Case("checked_column_dropped", _items(n=pw.IntegerField(default=1, constraints=[
        pw.Check("n > 0")])), lambda: [item()], "INSERT INTO items (name, n) VALUES ('a', 5)",
         allow_drop=True, warns=("the rollback re-adds items.n without its values",)),
    Case("partial_index_on_a_boolean", _items(active=pw.BooleanField(default=True),
                                              code=pw.CharField(max_length=5, null=True)),
         _partial_on_boolean, "INSERT INTO items (name, active, code) VALUES ('a', true, 'x'), "
         "('b', false, 'x')", after=_refused("INSERT INTO items (name, active, code) "
                                             "VALUES ('c', true, 'x')")),
    # -- round 8 ----------------------------------------------------------------------
    Case("fk_made_one_to_one", _owned(), _owned(unique=True),
         "INSERT INTO owners (code) VALUES ('o1'); "
         "INSERT INTO items (name, owner_id) SELECT 'a', owner_id FROM owners",
         after=_refused("INSERT INTO items (name, owner_id) SELECT 'b', owner_id FROM owners")),
    Case("referenced_table_moved_to_a_schema", _owned(), _owned_in_app, SEED_OWNERS,
         after=_refused("INSERT INTO items (name, owner_id) VALUES ('b', gen_random_uuid())")),
    # owners comes back empty in the rollback (its rows are gone), items.owner_id NULL.
    Case("referenced_table_dropped_with_the_fk_column", _owned(), lambda: [item()], SEED_OWNERS,
         allow_drop=True, rollback_keeps_rows=False),
    Case("deferred_fk_to_a_new_table_on_an_existing_one", lambda: [item()], _deferred, SEED),
    Case("column_in_a_multi_column_index_retyped", _indexed(lambda m: m.index(m.a, m.b)),
         _big_ab_plain, SEED_AB),
    Case("column_in_a_multi_column_index_renamed", _indexed(lambda m: m.index(m.a, m.b)),
         _renamed_in_index, SEED_AB),
    # -- round 9: the narrowings issue 15 names, from outside --------------------------
    Case("numeric_scale_down", _items(price=pw.DecimalField(10, 4, null=True)),
         _items(price=pw.DecimalField(10, 2, null=True)),
         "INSERT INTO items (name, price) VALUES ('a', 1.2345)", warns=("round",),
         after=_eq("SELECT price::text FROM items", [("1.23",)])),
    Case("timestamptz_to_date", _items(at=DateTimeTZField(null=True)),
         _items(at=pw.DateField(null=True)),
         "INSERT INTO items (name, at) VALUES ('a', '2024-01-01 10:30+00')",
         warns=("time of day",)),
    Case("collation_added_to_an_indexed_column",
         _items(code=pw.CharField(max_length=5, null=True, index=True)),
         _items(code=pw.CharField(max_length=5, null=True, index=True, collation='"C"')),
         "INSERT INTO items (name, code) VALUES ('a', 'x')", warns=("collation",)),
    Case("column_in_a_partial_index_condition_renamed",
         _indexed(lambda m: m.index(m.a, unique=True, where=m.b > 0)),
         _renamed_in_partial_index, "INSERT INTO items (name, a, b) VALUES ('x', 1, 0), "
         "('y', 1, 2)", after=_refused("INSERT INTO items (name, a, c) VALUES ('z', 1, 5)")),
    Case("column_in_an_expression_index_renamed",
         _titled, _renamed_in_expression_index,
         "INSERT INTO items (name, title) VALUES ('a', 'T')",
         after=_eq("SELECT strpos(indexdef, 'lower((label)') > 0 FROM pg_indexes "
                   "WHERE indexname = 'items_title_ci'", [(True,)])),
)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_model_change(
    case: Case, pg: Server, module_db: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    """The safe forms, then the plain ones, each in the module's database emptied."""
    for form in both_forms(case):
        (tmp_path / form.id).mkdir()
        run_case(form, emptied(module_db), ref_db, tmp_path / form.id, reapply=True)
    check_passes(pg, tmp_path, case.v1(), case.v2(), allow_drop=case.allow_drop,
                 lint_only=case.id not in FULL_CHECK)


# The whole of ``datalayer migrate check`` (the history applied from its offline SQL in a
# scratch database, compared there with create_tables()) for these; check's lint for all.
FULL_CHECK = {"serial_key_replaced_by_composite_key", "datetime_to_timestamp_field"}


def test_referenced_table_dropped_with_its_foreign_key_is_refused(
    module_db: pw.Database, tmp_path: Path
) -> None:
    """Dropping owners and the foreign key of a kept items.owner_id in one diff is refused.

    Its rollback would re-create owners empty and fail to add the foreign key back while
    items.owner_id holds values; the message names the cause and the way out.
    """
    router = PlainRouter(emptied(module_db), tmp_path)
    assert create_migration(router, "v1", _with_owner()) is not None
    router.run()
    for unsafe in (False, True):
        with pytest.raises(GenerationError) as refused:
            create_migration(router, "v2", [item(owner_id=pw.UUIDField(null=True))],
                             allow_drop=True, unsafe=unsafe)
        message = str(refused.value)
        assert ("items.owner_id keeps its values but its foreign key to owners goes with the "
                "table owners: the rollback would re-create owners empty and could not add "
                "the foreign key back while items.owner_id holds values. Drop the foreign key "
                "first") in message, message
        assert "then remove the model of owners and run diff --allow-drop" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001_v1.py"], "nothing written"


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
def test_referenced_table_dropped_in_two_migrations(
    unsafe: bool, pg: Server, module_db: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    """The way out the refusal names: the foreign key dropped first, then the table.

    Each is a case of its own: applied on rows, rolled back keeping them, applied again.
    """
    plain_fk = lambda: [_owner(), item(owner=pw.UUIDField(column_name="owner_id",  # noqa: E731
                                                          null=True))]
    first = Case("fk_dropped_column_kept", _with_owner, plain_fk, SEED_OWNERS, unsafe=unsafe)
    (tmp_path / "first").mkdir()
    run_case(first, emptied(module_db), ref_db, tmp_path / "first", reapply=True)
    second = Case("table_dropped", plain_fk, lambda: [item(owner=pw.UUIDField(
        column_name="owner_id", null=True))], SEED_OWNERS, allow_drop=True, unsafe=unsafe,
                  rollback_keeps_rows=False)  # owners comes back empty
    (tmp_path / "second").mkdir()
    run_case(second, emptied(module_db), ref_db, tmp_path / "second", reapply=True)
    if not unsafe:  # each file's lint, forward and rollback
        for k, case in enumerate((first, second)):
            check_passes(pg, tmp_path / f"lint{k}", case.v1(), case.v2(),
                         allow_drop=case.allow_drop, lint_only=True)


def test_through_table_rename_hint(module_db: pw.Database, tmp_path: Path) -> None:
    """A side of a many-to-many renamed renames peewee's through table: the hint says how.

    The through model has no class in the project to decorate: the refusal names the
    call that marks it.
    """
    router = PlainRouter(emptied(module_db), tmp_path)
    assert create_migration(router, "v1", _m2m(True)()) is not None
    router.run()
    with pytest.raises(DropRefused) as refused:
        create_migration(router, "v2", _m2m_renamed(hint=False))
    assert ("drops table items_tags_through and its rows; it looks renamed to table "
            "items_labels_through (same column types and nullability), and without a hint the "
            "rows are not carried over: if it was renamed, add renamed_from("
            "Item.tags.get_through_model(), \"items_tags_through\") where the models are "
            "listed") in str(refused.value), str(refused.value)


def test_python_default_changes_need_no_migration(module_db: pw.Database, tmp_path: Path) -> None:
    """A Python-side default (constant or callable) lives in the application, not the table.

    Changing one (constant to constant, constant to callable and back) finds no change, as
    ``create_tables()`` writes none of them.
    """
    router = PlainRouter(emptied(module_db), tmp_path)
    v1 = [item(n=pw.IntegerField(default=0), at=pw.DateTimeField(default=dt.datetime.now))]
    assert create_migration(router, "v1", v1) is not None
    router.run()
    for v2 in ([item(n=pw.IntegerField(default=1), at=pw.DateTimeField(default=dt.datetime.now))],
               [item(n=pw.IntegerField(default=lambda: 3),
                     at=pw.DateTimeField(default=dt.datetime(2020, 1, 1)))]):
        assert diff_source(router, v2) is None


def test_fk_to_a_column_made_unique_in_the_same_diff_is_refused(
    module_db: pw.Database, tmp_path: Path
) -> None:
    """owners.code made unique and items' foreign key to it in one diff: refused.

    PostgreSQL needs the unique index first; the safe forms build it concurrently after
    the transactional part that adds the foreign key (the file failed on apply with
    "there is no unique constraint matching given keys", in the plain forms too).
    """
    router = PlainRouter(emptied(module_db), tmp_path)
    assert create_migration(router, "v1", _coded_plain()) is not None
    router.run()
    for unsafe in (False, True):
        with pytest.raises(GenerationError) as refused:
            create_migration(router, "v2", _coded(True)(), unsafe=unsafe)
        assert ("the foreign key of items.owner_code refers to owners.code, which this "
                "migration makes unique: PostgreSQL needs that unique index before a foreign "
                "key can refer to it. Make owners.code unique first (run diff without the "
                "foreign key), then add the foreign key in the next diff"
                ) in str(refused.value), str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001_v1.py"], "nothing written"


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
def test_fk_to_a_column_made_unique_in_two_migrations(
    unsafe: bool, pg: Server, module_db: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    """The way out the refusal names: unique first, then the foreign key; rows kept."""
    seed = "INSERT INTO owners (code) VALUES ('o1'); INSERT INTO items (name) VALUES ('a')"
    first = Case("unique_first", _coded_plain, _coded(False), seed, unsafe=unsafe)
    second = Case("fk_next", _coded(False), _coded(True), seed, unsafe=unsafe,
                  after=_refused("INSERT INTO items (name, owner_code) VALUES ('b', 'zz')"))
    for k, case in enumerate((first, second)):
        (tmp_path / case.id).mkdir()
        run_case(case, emptied(module_db), ref_db, tmp_path / case.id, reapply=True)
        if not unsafe:
            check_passes(pg, tmp_path / f"lint{k}", case.v1(), case.v2(), lint_only=True)


def _thing(key: str | None) -> Callable[[], Models]:
    """things(code UNIQUE) keyed by a serial id ("id"), by code ("code") or by nothing."""
    def models() -> Models:
        fields: dict[str, Any] = {"code": pw.CharField(max_length=5, unique=key != "code",
                                                       primary_key=key == "code")}
        meta: dict[str, Any] = {"table_name": "things", "legacy_table_names": False}
        if key == "id":
            fields["id"] = pw.AutoField()
        elif key is None:
            meta["primary_key"] = False
        return [type("Thing", (pw.Model,), {"Meta": type("Meta", (), meta),
                                            "__module__": __name__, **fields})]
    return models


def _owner_only() -> Models:
    return [model("Owner", "owners", id=uuid_pk("owner_id")), item()]


REFUSED = (
    # things.code made the key while the serial id goes: ALTER of the key refused deep in
    # the DDL ("changing PRIMARY KEY is not supported; write that migration by hand").
    ("key_moved_onto_a_unique_column_over_a_dropped_serial_key", _thing("id"), _thing("code"),
     "things.code becomes the primary key in the migration that drops the key things.id: "
     "make it two migrations: first drop id (Meta.primary_key = False on the model) and run "
     "diff --allow-drop; then make code the key and run diff"),
    # owners.code dropped while items.owner_code's foreign key refers to it: the file failed
    # on apply (its unique index dropped first: "cannot drop index owners_code because other
    # objects depend on it"), with the referring column kept or dropped too.
    ("referenced_column_dropped_with_the_fk_column_kept", _coded(True),
     lambda: [model("Owner", "owners", id=uuid_pk("owner_id")),
              item(owner_code=pw.CharField(max_length=5, null=True))],
     "owners.code goes while the foreign key of items.owner_code refers to it: PostgreSQL "
     "cannot drop its unique index before that foreign key, and the rollback could not add "
     "the foreign key back to a re-added, empty column. Remove the foreign key first (the "
     "field, or make it a plain field) and run diff; then drop owners.code in the next diff"),
    ("referenced_column_dropped_with_the_fk_column", _coded(True), _owner_only,
     "owners.code goes while the foreign key of items.owner_code refers to it"),
)


@pytest.mark.parametrize("refusal", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(refusal: tuple[str, Callable[[], Models], Callable[[], Models], str],
                 module_db: pw.Database, tmp_path: Path) -> None:
    """Changes diff cannot write correctly in one file: refused, naming cause and way out."""
    _, v1, v2, message = refusal
    router = PlainRouter(emptied(module_db), tmp_path)
    assert create_migration(router, "v1", v1()) is not None
    router.run()
    for unsafe in (False, True):
        with pytest.raises(GenerationError) as refused:
            create_migration(router, "v2", v2(), unsafe=unsafe, allow_drop=True)
        assert message in str(refused.value), str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001_v1.py"], "nothing written"


WAYS_OUT = (
    ("key_moved_in_two_migrations",
     Case("serial_key_dropped", _thing("id"), _thing(None),
          "INSERT INTO things (code) VALUES ('a'), ('b')", allow_drop=True),
     Case("unique_column_made_the_key", _thing(None), _thing("code"),
          "INSERT INTO things (code) VALUES ('a'), ('b')",
          after=_refused("INSERT INTO things (code) VALUES ('a')"))),
    ("referenced_column_dropped_in_two_migrations",
     Case("fk_removed", _coded(True, null=True),
          lambda: [*_coded(False, null=True)()[:1],
                   item(owner_code=pw.CharField(max_length=5, null=True))],
          "INSERT INTO owners (code) VALUES ('o1'); "
          "INSERT INTO items (name, owner_code) VALUES ('a', 'o1')"),
     Case("referenced_column_dropped",
          lambda: [*_coded(False, null=True)()[:1],
                   item(owner_code=pw.CharField(max_length=5, null=True))],
          lambda: [model("Owner", "owners", id=uuid_pk("owner_id")),
                   item(owner_code=pw.CharField(max_length=5, null=True))],
          "INSERT INTO owners (code) VALUES ('o1'); "
          "INSERT INTO items (name, owner_code) VALUES ('a', 'o1')", allow_drop=True)),
)


@pytest.mark.parametrize("way", WAYS_OUT, ids=[w[0] for w in WAYS_OUT])
def test_way_out_of_a_refusal(
    way: tuple[str, Case, Case], pg: Server, module_db: pw.Database, ref_db: pw.Database,
    tmp_path: Path
) -> None:
    """The two migrations a refusal names: each applied on rows, rolled back, applied again.

    In both forms; the lint of each (forward and rollback) is clean.
    """
    for case in way[1:]:
        for form in both_forms(case):
            (tmp_path / form.id).mkdir()
            run_case(form, emptied(module_db), ref_db, tmp_path / form.id, reapply=True)
        check_passes(pg, tmp_path / f"lint_{case.id}", case.v1(), case.v2(),
                     allow_drop=case.allow_drop, lint_only=True)
