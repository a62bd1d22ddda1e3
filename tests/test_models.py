"""The model conventions, as the database catalog sees them, and bad input."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import peewee as pw
import pytest

from datalayer.db import Database
from datalayer.errors import ValidationError
from datalayer.models import MODELS, RefreshToken, Role, User

TOKEN_HASH = "a" * 64


def q(db: Database, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return list(db.execute_sql(sql, params).fetchall())


def make_user(email: str = "ada@example.com", **kw: Any) -> User:
    return User.create(email=email, password_hash="scrypt$x", **kw)


def make_token(owner: User, **kw: Any) -> RefreshToken:
    kw.setdefault("user", owner)
    kw.setdefault("token_hash", uuid.uuid4().hex + uuid.uuid4().hex)
    kw.setdefault("family_id", uuid.uuid4())
    kw.setdefault("expires_at", dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    return RefreshToken.create(**kw)


# -- the catalog -----------------------------------------------------------


def columns(db: Database, table: str) -> dict[str, tuple[str, str, str | None]]:
    rows = q(
        db,
        "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        table,
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_users_columns(db: Database) -> None:
    cols = columns(db, "users")
    assert cols["users_id"] == ("uuid", "NO", "gen_random_uuid()")
    assert cols["email"][:2] == ("character varying", "NO")
    assert cols["display_name"][1] == "YES"
    assert cols["role"][1:] == ("NO", "'user'::character varying")
    assert cols["is_active"][1:] == ("NO", "true")
    assert cols["last_login_at"][:2] == ("timestamp with time zone", "YES")
    for stamp in ("created_at", "updated_at"):
        assert cols[stamp] == ("timestamp with time zone", "NO", "now()")
    assert "password" not in cols


def test_refresh_tokens_columns_and_foreign_keys(db: Database) -> None:
    cols = columns(db, "refresh_tokens")
    assert cols["refresh_tokens_id"] == ("uuid", "NO", "gen_random_uuid()")
    assert cols["users_id"][:2] == ("uuid", "NO")
    assert cols["family_id"][:2] == ("uuid", "NO")
    assert cols["revoked_at"][1] == "YES" and cols["replaced_by"][1] == "YES"
    fks = q(
        db,
        "SELECT a.attname, c.confrelid::regclass::text, c.confdeltype FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
        "WHERE c.contype = 'f' AND c.conrelid = 'refresh_tokens'::regclass ORDER BY 1",
    )
    assert fks == [("replaced_by", "refresh_tokens", "n"), ("users_id", "users", "c")]


def test_unique_and_check_constraints_and_indexes(db: Database) -> None:
    indexes = {r[0]: r[1] for r in q(
        db, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
        "('users', 'refresh_tokens')")}
    assert "UNIQUE" in indexes["users_email"]
    assert "UNIQUE" in indexes["refresh_tokens_token_hash"]
    assert "refresh_tokens_users_id" in indexes
    checks = [r[0] for r in q(
        db, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'c' AND "
        "conrelid IN ('users'::regclass, 'refresh_tokens'::regclass)")]
    assert any("'user'" in c and "'admin'" in c for c in checks)
    assert any("lower" in c for c in checks)


def test_insert_naming_neither_id_nor_timestamps_succeeds(db: Database) -> None:
    row = q(
        db,
        "INSERT INTO users (email, password_hash) VALUES ('raw@example.com', 'h') "
        "RETURNING users_id, role, is_active, created_at, updated_at",
    )[0]
    assert isinstance(row[0], uuid.UUID) and row[1:3] == ("user", True)
    assert row[3] is not None and row[3] == row[4]


def test_server_rejects_what_the_models_forbid(db: Database) -> None:
    for stmt in (
        "INSERT INTO users (email, password_hash, role) VALUES ('r@x.io', 'h', 'root')",
        "INSERT INTO users (email, password_hash) VALUES ('UPPER@x.io', 'h')",
    ):
        with pytest.raises(pw.IntegrityError), db.atomic():
            db.execute_sql(stmt)


# -- behaviour -------------------------------------------------------------


def test_create_fills_server_defaults_and_normalises_email(db: Database) -> None:
    user = make_user(" Ada@Example.COM ")
    assert isinstance(user.id, uuid.UUID)
    assert user.email == "ada@example.com"
    fresh = User.get_by_id(user.id)
    assert fresh.email == "ada@example.com" and fresh.role is Role.USER and fresh.is_active
    assert fresh.created_at.tzinfo is not None


def test_email_is_unique_case_insensitively(db: Database) -> None:
    make_user("dup@example.com")
    with pytest.raises(pw.IntegrityError), db.atomic():
        make_user("DUP@example.com")
    assert User.get(User.email == "DuP@Example.com").email == "dup@example.com"


def test_updated_at_moves_on_save(db: Database) -> None:
    user = User.get_by_id(make_user().id)
    before = user.updated_at
    time.sleep(0.01)
    user.display_name = "Ada"
    user.save()
    after = User.get_by_id(user.id)
    assert after.updated_at > before and after.display_name == "Ada"
    assert after.created_at == user.created_at


def test_updated_at_moves_on_update_queries(db: Database) -> None:
    uid = make_user().id
    # now() is the transaction's start: put the row's stamp in the past to see it move.
    past = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    User.update(updated_at=past).where(User.id == uid).execute()
    assert User.get_by_id(uid).updated_at == past
    User.update(role=Role.ADMIN).where(User.id == uid).execute()
    fresh = User.get_by_id(uid)
    assert fresh.role is Role.ADMIN and fresh.updated_at > past


def test_updated_at_moves_on_bulk_update(db: Database) -> None:
    users = [make_user(f"u{i}@example.com") for i in range(3)]
    past = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    User.update(updated_at=past).execute()
    for u in users:
        u.display_name = f"name {u.email}"
    User.bulk_update(users, fields=[User.display_name])
    for u in users:
        fresh = User.get_by_id(u.id)
        assert fresh.display_name == f"name {u.email}" and fresh.updated_at > past


def test_deleting_a_user_deletes_its_tokens(db: Database) -> None:
    user = make_user()
    make_token(user)
    make_token(user)
    other = make_token(make_user("other@example.com"))
    assert RefreshToken.select().count() == 3
    user.delete_instance()
    assert [t.id for t in RefreshToken.select()] == [other.id]


def test_replaced_by_is_set_null_when_the_successor_goes(db: Database) -> None:
    user = make_user()
    old, new = make_token(user), make_token(user)
    RefreshToken.update(replaced_by=new.id).where(RefreshToken.id == old.id).execute()
    new.delete_instance()
    assert RefreshToken.get_by_id(old.id).replaced_by_id is None


def test_reprs_hide_secrets(db: Database) -> None:
    user = make_user()
    token = make_token(user, token_hash="b" * 64)
    assert "scrypt" not in repr(user) and "b" * 64 not in repr(token)


# -- bad input -------------------------------------------------------------

BAD_USERS: list[tuple[dict[str, Any], str]] = [
    ({"email": "x" * 250 + "@example.com"}, "email"),
    ({"email": 42}, "email"),
    ({"email": "nul\x00@example.com"}, "email"),
    ({"email": "surrogate\ud800@example.com"}, "email"),
    ({"email": None}, "email"),
    ({"display_name": "d" * 101}, "display_name"),
    ({"role": "root"}, "role"),
    ({"role": 1}, "role"),
    ({"is_active": "yes"}, "is_active"),
    ({"last_login_at": "yesterday"}, "last_login_at"),
    ({"id": "not-a-uuid"}, "id"),
    ({"id": 12345}, "id"),
    ({"password_hash": b"bytes"}, "password_hash"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_USERS)
def test_bad_user_input_names_the_field_and_writes_nothing(
    db: Database, overrides: dict[str, Any], field: str
) -> None:
    data = {"email": "ok@example.com", "password_hash": "h", **overrides}
    with db.atomic():  # the outer transaction stays usable: nothing reached the server
        with pytest.raises(ValidationError) as err:
            User.create(**data)
        assert err.value.field == field
        assert User.select().count() == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"token_hash": "x" * 65}, "token_hash"),
        ({"family_id": "nope"}, "family_id"),
        ({"expires_at": 0}, "expires_at"),
        ({"user_agent": "u\x00a"}, "user_agent"),
        ({"user": "not-a-uuid"}, "user"),
        ({"replaced_by": "zzz"}, "replaced_by"),
    ],
)
def test_bad_token_input(db: Database, overrides: dict[str, Any], field: str) -> None:
    user = make_user()
    with pytest.raises(ValidationError) as err:
        make_token(user, **overrides)
    assert err.value.field == field
    assert RefreshToken.select().count() == 0


def test_bad_input_to_update_queries_and_insert_many(db: Database) -> None:
    user = make_user()
    with pytest.raises(ValidationError, match="role"):
        User.update(role="superuser").where(User.id == user.id).execute()
    with pytest.raises(ValidationError, match="email"):
        User.insert_many([{"email": "a@b.c", "password_hash": "h"},
                          {"email": "\x00", "password_hash": "h"}]).execute()
    with pytest.raises(ValidationError, match="nope"):
        User.update(nope=1).execute()
    assert User.select().count() == 1
    assert User.get_by_id(user.id).role is Role.USER


def test_valid_values_are_normalised(db: Database) -> None:
    uid = uuid.uuid4()
    naive = dt.datetime(2030, 1, 1, 12, 0)
    user = User.create(id=str(uid), email="N@x.io", password_hash="h", role="admin",
                       last_login_at=naive)
    assert user.id == uid and user.role is Role.ADMIN
    assert User.get_by_id(uid).last_login_at == naive.replace(tzinfo=dt.UTC)


def test_models_list_is_in_dependency_order() -> None:
    assert (User, RefreshToken) == MODELS


# -- names that set nothing ----------------------------------------------------------


def test_create_with_an_unknown_field_is_refused_as_insert_is(db: Database) -> None:
    before = User.select().count()
    for make in (
        lambda: User.create(email="typo@example.com", password_hash="scrypt$x", emial="x"),
        lambda: User(email="typo@example.com", password_hash="scrypt$x", emial="x"),
        lambda: User.insert(email="typo@example.com", password_hash="scrypt$x", emial="x"),
        lambda: User.get_or_create(email="typo@example.com", emial="x"),
        lambda: User.get_or_create(email="typo@example.com", defaults={"emial": "x"}),
        lambda: User.update(emial="x"),
    ):
        with pytest.raises(ValidationError) as info:
            make()
        assert info.value.field == "emial"
        assert str(info.value).startswith("emial: is not a field of User; its fields are: ")
    assert User.select().count() == before


def test_what_create_accepts_besides_fields(db: Database) -> None:
    owner = make_user()
    token = make_token(owner, user=None, users_id=owner.id)  # the foreign key's id name
    assert token.users_id == owner.id
    with pytest.raises(ValidationError, match=r"^user_id: is not a field"):
        make_token(owner, user_id=owner.id)  # silently ignored before
    # Rows read with extra selected columns still come back as instances.
    row = User.select(User.id, pw.fn.length(User.email).alias("n")).where(
        User.id == owner.id).get()
    assert int(row.n) == len("ada@example.com")

    class Sketch(User):
        @property
        def shout(self) -> str:
            return str(self.display_name).upper()

        @shout.setter
        def shout(self, value: str) -> None:
            self.display_name = value.lower()

    assert Sketch(shout="HI").display_name == "hi"  # a property with a setter
    with pytest.raises(ValidationError, match=r"^save: is not a field"):
        User(save=1)  # a method is not something to set


def test_create_with_the_old_name_of_a_renamed_field_names_the_new_one(db: Database) -> None:
    """Old code calling create(old_name=...) after a rename: before, the old name was
    dropped silently and the server refused the row (a raw IntegrityError: NOT NULL)."""
    from datalayer import BaseModel, renamed_from

    class Person(BaseModel):
        id = pw.AutoField()
        full_name = renamed_from(pw.CharField(max_length=100), "name")

        class Meta:
            table_name = "people_renamed"

    with db.bind_ctx([Person]):
        Person.create_table()
        with pytest.raises(ValidationError) as info:
            Person.create(name="Ada")
        assert info.value.field == "name"
        assert "it was renamed to 'full_name' (use full_name=...)" in str(info.value)
        assert Person.select().count() == 0
        assert Person.create(full_name="Ada").full_name == "Ada"
