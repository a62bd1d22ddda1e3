"""Correctness cases found by replaying the model histories of real Peewee projects (issue 15).

Each case either generates a migration that applies on a table with rows, passes ``check``,
re-diffs empty and rolls back (in the safe forms and in the plain ones), or is refused with a
message that names the cause and the way out.  The harness is the one of
``test_migrate_generate_cases`` (peewee-migrate's Router applies the files).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from playhouse.postgres_ext import ArrayField, BinaryJSONField, PostgresqlExtDatabase

from datalayer.migrate.autogenerate.compare import (
    DropRefused,
    GenerationError,
    compute_diff,
    create_migration,
)
from datalayer.migrate.autogenerate.hints import renamed_from
from datalayer.migrate.runtime.files import Router
from tests._migrate_cases import (  # noqa: F401 (the two fixtures: pytest finds them here)
    Case,
    Models,
    both_forms,
    check_passes,
    fails_sql,
    mig_fixture,
    ref_db_fixture,
    run_case,
)
from tests.pgserver import Server
from tests.test_migrate_generate import item, model, rows


def _diff(v1: Models, v2: Models, tmp_path: Path, **options: Any) -> Any:
    """Return ``compute_diff`` from v1's history to ``v2`` (no database needed)."""
    router = Router(PostgresqlExtDatabase(None), tmp_path / "gen")
    assert create_migration(router, "v1", v1) is not None
    return compute_diff(router, v2, **options)


def _refusal(v1: Models, v2: Models, tmp_path: Path, **options: Any) -> str:
    """Return the text of the GenerationError that generating v1 -> v2 raises."""
    with pytest.raises(GenerationError) as err:
        _diff(v1, v2, tmp_path, **options)
    return "\n".join([str(err.value), *err.value.problems])


# -- 1: a class renamed with renamed_from, a warm cache, 8 files or more -------------------


def _people(n: int, cls: str = "Person", hint: str | None = None) -> Models:
    fields: dict[str, Any] = {"name": pw.CharField(max_length=20, default="-")}
    fields.update({f"c{i}": pw.IntegerField(null=True) for i in range(n)})
    meta = type("Meta", (), {})  # peewee's default table names: the class name, lower case
    m = type(cls, (pw.Model,), {"Meta": meta, "__module__": __name__, **fields})
    return [renamed_from(m, hint) if hint else m]


def test_a_renamed_class_stays_renamed_with_a_warm_cache(
    pg: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It did (the replayed state was cached); now only data is, keyed by the files."""
    from datalayer.db import Database
    from datalayer.migrate.check import check
    from datalayer.migrate.lint import lint
    from datalayer.migrate.runtime.cache import MIN_FILES
    from datalayer.migrate.runtime.checksum import write_sum

    monkeypatch.setenv("DATALAYER_CACHE_DIR", str(tmp_path / "cache"))
    settings = pg.settings("postgres").replace(dev_database_url=pg.admin.url(masked=False))
    directory = tmp_path / "migrations"
    for n in range(MIN_FILES):
        assert create_migration(Router(Database(), directory), f"v{n}", _people(n)) is not None
    renamed = _people(MIN_FILES, "Human", "person")
    assert create_migration(Router(Database(), directory), "renamed", renamed) is not None
    write_sum(directory)
    assert lint(directory).errors == []  # keeps each file's SQL in the cache
    assert list((tmp_path / "cache").iterdir()), "the cache is warm"
    later = _people(MIN_FILES + 1, "Human", "person")
    for _ in range(2):
        diff = compute_diff(Router(Database(), directory), later)
        assert "set_model_meta" not in diff.migrate and "add_fields" in diff.migrate
    assert create_migration(Router(Database(), directory), "later", later) is not None
    write_sum(directory)
    assert check(settings, directory, later) == []
    assert not compute_diff(Router(Database(), directory), later)


# -- 2: an unhinted table rename whose referrer's key is the foreign key -------------------


def _account(table: str, hint: str | None = None) -> Callable[[], Models]:
    def models() -> Models:
        user = model("User", table, id=pw.AutoField(), name=pw.CharField(max_length=20))
        if hint:
            user = renamed_from(user, hint)
        profile = model("Profile", "profiles", bio=pw.TextField(default=""),
                        user=pw.ForeignKeyField(user, primary_key=True, column_name="user_id",
                                                backref="+", on_delete="CASCADE"))
        return [user, profile]
    return models


SEED_ACCOUNTS = ("INSERT INTO users (name) VALUES ('ada'), ('bob'); "
                 "INSERT INTO profiles (user_id, bio) SELECT id, name FROM users")


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
def test_an_unhinted_rename_of_a_table_whose_referrer_keys_on_it_is_suggested(
    tmp_path: Path, unsafe: bool
) -> None:
    router = Router(PostgresqlExtDatabase(None), tmp_path)
    assert create_migration(router, "v1", _account("users")()) is not None
    with pytest.raises(DropRefused) as err:
        create_migration(router, "v2", _account("accounts")(), unsafe=unsafe)
    assert [(d.table, d.renamed_to) for d in err.value.drops] == [("users", "accounts")]
    assert '@renamed_from("users") above class User' in str(err.value)
    # --allow-drop: the old table goes, the new one comes, the key follows it.
    assert create_migration(router, "v2", _account("accounts")(), unsafe=unsafe,
                            allow_drop=True) is not None


def _accounts_after(db: pw.Database) -> None:
    assert rows(db, "SELECT a.name, p.bio FROM accounts a JOIN profiles p ON p.user_id = a.id "
                    "ORDER BY 1") == [("ada", "ada"), ("bob", "bob")]
    assert fails_sql(db, "INSERT INTO profiles (user_id) VALUES (99)")


# -- 3: a Meta.indexes entry that repeats a foreign key's own index name ------------------


def _owned(meta_index: bool, unique: bool = False, **extra: Any) -> Callable[[], Models]:
    def models() -> Models:
        owner = model("Owner", "owners", id=pw.AutoField())
        indexes = [(("owner",), unique)] if meta_index else []
        return [owner, model("Thing", "things", indexes=indexes, id=pw.AutoField(),
                             owner=pw.ForeignKeyField(owner, column_name="owner_id",
                                                      backref="+"), **extra)]
    return models


def test_a_meta_index_repeating_a_field_index_changes_nothing(tmp_path: Path) -> None:
    """create_tables() skips it (CREATE INDEX IF NOT EXISTS): the table is the same."""
    assert not _diff(_owned(False)(), _owned(True)(), tmp_path)


SEED_THINGS = ("INSERT INTO owners DEFAULT VALUES; "
               "INSERT INTO things (owner_id) SELECT id FROM owners")


def _one_owner_index(db: pw.Database) -> None:
    assert rows(db, "SELECT indexname FROM pg_indexes WHERE tablename = 'things' "
                    "ORDER BY 1") == [("things_owner_id",), ("things_pkey",)]


def test_a_meta_index_named_like_a_field_index_but_different_is_refused(
    tmp_path: Path
) -> None:
    for v1 in (_owned(False)()[:1], _owned(False)()):
        text = _refusal(v1, _owned(True, unique=True)(), tmp_path / str(len(v1)))
        assert "things_owner_id" in text and "Meta.indexes" in text, text
        assert "field owner" in text and "name=" in text, text


# -- 4: a table replaced by another whose index has the same name -------------------------


def _replaced(table: str, column: str) -> Callable[[], Models]:
    def models() -> Models:
        fields = {"id": pw.AutoField(), column: pw.CharField(max_length=9, default="-")}
        m = model(table.title(), table, **fields)
        m._meta.indexes = [pw.ModelIndex(m, (getattr(m, column),), name="lookup_code")]
        return [m]
    return models


# -- 5: renamed_from names a column whose name the field takes over ----------------------


def _price(v2: bool) -> Callable[[], Models]:
    if v2:
        return lambda: [item(price=renamed_from(pw.IntegerField(null=True), "price_new"))]
    return lambda: [item(price=pw.CharField(max_length=10, null=True),
                         price_new=pw.IntegerField(null=True))]


def _price_after(db: pw.Database) -> None:
    assert rows(db, "SELECT name, price FROM items ORDER BY name") == [("a", 10), ("b", None)]


# -- 6: JSONB to an array type ------------------------------------------------------------


def _tags(array: bool) -> Callable[[], Models]:
    if array:
        return lambda: [item(tags=ArrayField(pw.BigIntegerField, null=True))]
    return lambda: [item(tags=BinaryJSONField(null=True))]


def _tags_after(db: pw.Database) -> None:
    assert rows(db, "SELECT name, tags FROM items ORDER BY name") == [
        ("a", [1, 2]), ("b", None), ("c", [])]


def test_jsonb_to_a_text_array_is_refused_with_the_way_out(tmp_path: Path) -> None:
    text = _refusal([item(tags=BinaryJSONField(null=True))],
                    [item(tags=ArrayField(pw.TextField, null=True))], tmp_path)
    assert "items.tags" in text and "JSONB" in text and "TEXT[]" in text, text
    assert "jsonb_array_elements_text" in text, text


# -- 7: renamed columns listed in another order -------------------------------------------


def test_every_rename_is_suggested_whatever_the_field_order(tmp_path: Path) -> None:
    router = Router(PostgresqlExtDatabase(None), tmp_path)
    create_migration(router, "v1", [item(a=pw.IntegerField(null=True),
                                          b=pw.TextField(null=True))])
    with pytest.raises(DropRefused) as err:
        create_migration(router, "v2", [item(bb=pw.TextField(null=True),
                                             aa=pw.IntegerField(null=True))])
    assert sorted((d.column, d.renamed_to) for d in err.value.drops) == [
        ("a", "aa"), ("b", "bb")]
    assert 'bb = renamed_from(pw.TextField(...), "b")' in str(err.value)


# -- 8: a composite key replaced by a serial id -------------------------------------------


def _membership(serial: bool) -> Callable[[], Models]:
    def models() -> Models:
        fields: dict[str, Any] = {"user": pw.IntegerField(), "org": pw.IntegerField()}
        attrs: dict[str, Any] = {"table_name": "members", "legacy_table_names": False}
        if serial:
            fields["id"] = pw.AutoField()
            attrs["indexes"] = [(("user", "org"), True)]
        else:
            attrs["primary_key"] = pw.CompositeKey("user", "org")
        return [type("Member", (pw.Model,), {"Meta": type("Meta", (), attrs),
                                            "__module__": __name__, **fields})]
    return models


SEED_MEMBERSHIP = 'INSERT INTO members ("user", org) VALUES (1, 1), (1, 2), (2, 1)'


def _serial_members(db: pw.Database) -> None:
    assert rows(db, "SELECT count(DISTINCT id) FROM members WHERE id IS NOT NULL") == [(3,)]
    db.execute_sql('INSERT INTO members ("user", org) VALUES (3, 3)')
    assert fails_sql(db, 'INSERT INTO members ("user", org) VALUES (1, 1)')


# -- 9: a key type change beside a new foreign key to the key -----------------------------


def _keyed(pk: Callable[[], pw.Field], *, toys: bool) -> Callable[[], Models]:
    def models() -> Models:
        parent = model("Parent", "parents", id=pk(), name=pw.CharField(max_length=20))
        out = [parent]
        if toys:
            out.append(model("Toy", "toys", id=pw.AutoField(),
                             parent=pw.ForeignKeyField(parent, column_name="parent_id",
                                                       null=True, backref="+")))
        return out
    return models


def _uuid_key() -> pw.Field:
    return pw.UUIDField(primary_key=True, default=uuid.uuid4,
                        constraints=[pw.SQL("DEFAULT gen_random_uuid()")])


def _toys_after(db: pw.Database) -> None:
    db.execute_sql("INSERT INTO toys (parent_id) SELECT id FROM parents")
    assert rows(db, "SELECT count(*) FROM toys t JOIN parents p ON p.id = t.parent_id") == [(2,)]


def test_a_key_change_refusal_names_the_direction_and_the_referring_column(
    tmp_path: Path
) -> None:
    """The rollback cannot renumber parents.id back while children.parent_id refers to it."""
    v1 = _keyed(_uuid_key, toys=False)()
    v2 = _keyed(pw.AutoField, toys=False)()
    kid = model("Kid", "kids", id=pw.AutoField(),
                parent=pw.ForeignKeyField(v2[0], column_name="parent_id", null=True,
                                          backref="+"))
    text = _refusal([*v1, model("Kid", "kids", id=pw.AutoField())], [*v2, kid], tmp_path)
    assert "rollback" in text and "back from SERIAL to UUID" in text, text
    assert "kids.parent_id" in text and "created in" not in text, text
    assert "two migrations" in text, text


# -- the table of cases -------------------------------------------------------------------


HISTORY_CASES = [
    # Tables renamed, created and dropped: one form (nothing is done online to them).
    Case("table_renamed_whose_referrer_keys_on_it", _account("users"),
         _account("accounts", "users"), SEED_ACCOUNTS, after=_accounts_after),
    Case("meta_index_repeating_a_foreign_key_index_new_table", lambda: _owned(False)()[:1],
         _owned(True), after=_one_owner_index),
    Case("table_replaced_by_one_with_the_same_index_name", _replaced("olds", "code"),
         _replaced("news", "label"), "INSERT INTO olds (code) VALUES ('a')", allow_drop=True,
         rollback_keeps_rows=False),
    *both_forms(
        Case("meta_index_repeating_a_foreign_key_index_existing_table", _owned(False),
             _owned(True, note=pw.CharField(max_length=9, null=True)), SEED_THINGS,
             after=_one_owner_index),
        Case("renamed_from_a_column_whose_name_the_field_takes", _price(False), _price(True),
             "INSERT INTO items (name, price, price_new) VALUES ('a', '10', 10), "
             "('b', 'x', NULL)", allow_drop=True, after=_price_after),
        Case("jsonb_to_bigint_array", _tags(False), _tags(True),
             "INSERT INTO items (name, tags) VALUES ('a', '[1, 2]'), ('b', NULL), ('c', '[]')",
             after=_tags_after),
        Case("composite_key_replaced_by_a_serial_id", _membership(False), _membership(True),
             SEED_MEMBERSHIP, after=_serial_members),
        Case("key_type_change_beside_a_new_foreign_key_to_it", _keyed(_uuid_key, toys=False),
             _keyed(pw.AutoField, toys=True), "INSERT INTO parents (name) VALUES ('a'), ('b')",
             after=_toys_after),
    ),
]


@pytest.mark.parametrize("case", HISTORY_CASES, ids=[c.id for c in HISTORY_CASES])
def test_history_case(
    case: Case, pg: Server, mig: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    (tmp_path / "plain").mkdir()
    run_case(case, mig, ref_db, tmp_path / "plain")
    if not case.unsafe:  # the plain forms are for small tables: the lint flags them
        check_passes(pg, tmp_path, case.v1(), case.v2(), allow_drop=case.allow_drop)

