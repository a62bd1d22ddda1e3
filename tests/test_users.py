"""Operations on users (datalayer.auth.users) and password hashing (datalayer.auth.passwords).

Each test runs in the ``db`` fixture's transaction, rolled back afterwards;
the tests that need commits use ``isolated_db``.  Hashing uses cheap scrypt
parameters (the format and the checks are the same).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from typing import Any

import pytest

import datalayer
from datalayer.auth import passwords, tokens, users
from datalayer.db import Database
from datalayer.errors import (
    AuthenticationError,
    DuplicateError,
    NotFound,
    ValidationError,
)
from datalayer.models import RefreshToken, Role, User
from tests.pgserver import Server

PASSWORD = "correct horse battery staple"
CHEAP = passwords.ScryptParams(ln=4, r=8, p=1)


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "DEFAULT_PARAMS", CHEAP)


def count(model: Any) -> int:
    return int(model.select().count())


# -- passwords ---------------------------------------------------------------------


def test_hash_is_salted_scrypt_with_its_parameters() -> None:
    first = passwords.hash_password(PASSWORD)
    second = passwords.hash_password(PASSWORD)
    assert first != second  # a new salt each time
    assert first.startswith("scrypt$ln=4,r=8,p=1$")
    assert PASSWORD not in first
    assert passwords.verify_password(PASSWORD, first)
    assert passwords.verify_password(PASSWORD, second)
    assert not passwords.verify_password(PASSWORD + "!", first)
    assert passwords.is_password_hash(first)


def test_verify_reads_the_parameters_from_the_hash() -> None:
    old = passwords.hash_password(PASSWORD, params=passwords.ScryptParams(ln=5, r=4, p=2))
    assert passwords.verify_password(PASSWORD, old)  # DEFAULT_PARAMS differ
    assert passwords.needs_rehash(old)
    assert not passwords.needs_rehash(passwords.hash_password(PASSWORD))


@pytest.mark.parametrize(
    "stored",
    ["", "plain text", "scrypt$ln=4,r=8,p=1$%%%$%%%", "scrypt$ln=0,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$"
     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "bcrypt$2b$12$abc"],
)
def test_a_stored_value_that_is_no_hash_never_matches(stored: str) -> None:
    assert not passwords.verify_password(PASSWORD, stored)
    assert passwords.needs_rehash(stored)


@pytest.mark.parametrize("bad", ["", "x" * (passwords.MAX_PASSWORD_LENGTH + 1), None, 12, b"pw",
                                 "\ud800"])
def test_bad_passwords_are_refused_without_being_shown(bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        passwords.hash_password(bad)
    assert info.value.field == "password"
    if isinstance(bad, str) and bad:
        assert bad not in str(info.value)


# -- create / get ------------------------------------------------------------------------


def test_create_user_stores_a_lower_cased_address_and_only_a_hash(db: Database) -> None:
    user = users.create_user(" Ada@Example.COM ", PASSWORD, display_name="Ada")
    assert isinstance(user, User)
    assert isinstance(user.id, uuid.UUID)
    assert user.email == "ada@example.com"
    assert user.role is Role.USER and user.is_active is True
    assert user.created_at is not None and user.last_login_at is None
    assert PASSWORD not in user.password_hash
    stored = User.get_by_id(user.id)
    assert stored.email == "ada@example.com"
    assert passwords.verify_password(PASSWORD, stored.password_hash)
    assert stored.display_name == "Ada" and stored.role is Role.USER
    assert not user._dirty  # a clean instance, as peewee's own queries return


def test_create_user_with_a_prepared_hash_and_a_role(db: Database) -> None:
    prepared = passwords.hash_password(PASSWORD)
    user = users.create_user("admin@example.com", password_hash=prepared, role="admin",
                             is_active=False)
    assert user.password_hash == prepared
    assert user.role is Role.ADMIN and user.is_active is False


@pytest.mark.parametrize(
    ("password", "password_hash"),
    [(None, None), (PASSWORD, "x")],
)
def test_create_user_needs_exactly_one_of_password_and_hash(
    db: Database, password: str | None, password_hash: str | None
) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        users.create_user("a@example.com", password, password_hash=password_hash)
    assert count(User) == 0


def test_a_password_passed_as_hash_is_refused(db: Database) -> None:
    with pytest.raises(ValidationError, match="hash_password") as info:
        users.create_user("a@example.com", password_hash=PASSWORD)
    assert PASSWORD not in str(info.value)
    assert count(User) == 0


@pytest.mark.parametrize(
    "email",
    ["", "no-at-sign", "a@", "@b", "a b@example.com", "a@@b", "x\x00@example.com",
     "a" * 250 + "@b.cd", 42, None],
)
def test_bad_addresses_are_refused_and_nothing_is_written(db: Database, email: Any) -> None:
    with pytest.raises(ValidationError) as info:
        users.create_user(email, PASSWORD)
    assert info.value.field == "email"
    if isinstance(email, str) and len(email) > 3:
        assert email not in str(info.value)
    assert count(User) == 0


def test_a_taken_address_is_a_duplicate_whatever_its_case(db: Database) -> None:
    users.create_user("ada@example.com", PASSWORD)
    with pytest.raises(DuplicateError) as info:
        users.create_user("ADA@Example.com", PASSWORD)
    assert "ada@example.com" not in str(info.value).lower()
    # The caller's transaction is still usable (no aborted statement).
    assert count(User) == 1


def test_get_user_by_email_ignores_case_and_blanks(db: Database) -> None:
    created = users.create_user("grace@example.com", PASSWORD)
    for form in ("grace@example.com", "GRACE@EXAMPLE.COM", "  Grace@Example.com\t"):
        found = users.get_user_by_email(form)
        assert found.id == created.id
        assert found.__data__ == created.__data__


def test_get_user_by_email_not_found_does_not_repeat_the_address(db: Database) -> None:
    with pytest.raises(NotFound) as info:
        users.get_user_by_email("nobody@example.com")
    assert "nobody" not in str(info.value)


def test_get_user_by_id(db: Database) -> None:
    created = users.create_user("id@example.com", PASSWORD)
    assert users.get_user(created.id).email == "id@example.com"
    assert users.get_user(str(created.id)).id == created.id
    with pytest.raises(NotFound):
        users.get_user(uuid.uuid4())
    with pytest.raises(ValidationError):
        users.get_user("not-a-uuid")


def test_a_returned_user_works_as_a_model(db: Database) -> None:
    user = users.create_user("model@example.com", PASSWORD)
    user.display_name = "Renamed"
    user.save()
    assert User.get_by_id(user.id).display_name == "Renamed"
    assert "model@example.com" not in repr(user) and user.password_hash not in repr(user)


# -- authenticate ----------------------------------------------------------------------------


def test_authenticate_returns_the_user_and_records_the_sign_in(db: Database) -> None:
    created = users.create_user("sign@example.com", PASSWORD)
    user = users.authenticate("SIGN@example.com", PASSWORD)
    assert user.id == created.id
    assert user.last_login_at is not None
    assert User.get_by_id(created.id).last_login_at == user.last_login_at


def test_unknown_user_wrong_password_and_inactive_give_the_same_error(db: Database) -> None:
    users.create_user("active@example.com", PASSWORD)
    users.create_user("inactive@example.com", PASSWORD, is_active=False)
    messages = set()
    for email, password in [
        ("nobody@example.com", PASSWORD),
        ("active@example.com", PASSWORD + "!"),
        ("inactive@example.com", PASSWORD),
        ("not an address", PASSWORD),
        ("active@example.com", ""),
        ("active@example.com", None),
    ]:
        with pytest.raises(AuthenticationError) as info:
            users.authenticate(email, password)  # type: ignore[arg-type]
        messages.add(str(info.value))
    assert len(messages) == 1
    (message,) = messages
    assert "example.com" not in message and PASSWORD not in message
    assert User.get(User.email == "active@example.com").last_login_at is None


def test_authenticate_upgrades_a_hash_made_with_older_parameters(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = users.create_user("upgrade@example.com", PASSWORD)
    assert "ln=4," in user.password_hash
    stronger = passwords.ScryptParams(ln=5, r=8, p=1)
    monkeypatch.setattr(passwords, "DEFAULT_PARAMS", stronger)
    signed_in = users.authenticate("upgrade@example.com", PASSWORD)
    stored = User.get_by_id(user.id).password_hash
    assert stored == signed_in.password_hash and "ln=5," in stored
    assert passwords.verify_password(PASSWORD, stored)
    assert users.authenticate("upgrade@example.com", PASSWORD).password_hash == stored


# -- deactivate / delete ---------------------------------------------------------------------


def test_deactivate_user_blocks_sign_in_and_revokes_live_tokens(db: Database) -> None:
    user = users.create_user("leaving@example.com", PASSWORD)
    issued = [tokens.issue_token(user) for _ in range(3)]
    tokens.revoke_token(issued[0].token)
    assert users.deactivate_user(user) == 2
    assert user.is_active is False
    assert User.get_by_id(user.id).is_active is False
    live = RefreshToken.select().where(RefreshToken.revoked_at.is_null()).count()
    assert live == 0
    with pytest.raises(AuthenticationError):
        users.authenticate("leaving@example.com", PASSWORD)
    with pytest.raises(NotFound):
        users.deactivate_user(uuid.uuid4())


def test_delete_user_takes_the_tokens_with_it(db: Database) -> None:
    user = users.create_user("gone@example.com", PASSWORD)
    keep = users.create_user("stays@example.com", PASSWORD)
    tokens.issue_token(user)
    tokens.issue_token(keep)
    users.delete_user(user.id)
    assert not User.select().where(User.id == user.id).exists()
    assert [t.users_id for t in RefreshToken.select()] == [keep.id]
    with pytest.raises(NotFound):
        users.delete_user(user)


# -- bulk import -------------------------------------------------------------------------------


def _rows(n: int, prefix: str = "bulk") -> list[dict[str, Any]]:
    prepared = passwords.hash_password(PASSWORD)
    return [{"email": f"{prefix}{i}@Example.com", "password_hash": prepared} for i in range(n)]


def test_import_users_copies_every_row(db: Database) -> None:
    rows = _rows(250)
    rows[0].update(display_name="Tab\there, new\nline, back\\slash, ünïcode", role=Role.ADMIN)
    rows[1].update(is_active=False, role="user", display_name=None)
    assert users.import_users(iter(rows)) == 250  # any iterable
    assert count(User) == 250
    first = users.get_user_by_email("bulk0@example.com")
    assert first.display_name == "Tab\there, new\nline, back\\slash, ünïcode"
    assert first.role is Role.ADMIN and first.is_active
    second = users.get_user_by_email("bulk1@example.com")
    assert second.is_active is False and second.display_name is None
    assert users.authenticate("bulk7@example.com", PASSWORD).email == "bulk7@example.com"


def test_import_hashes_plain_passwords_when_given(db: Database) -> None:
    assert users.import_users([{"email": "plain@example.com", "password": PASSWORD}]) == 1
    stored = User.get(User.email == "plain@example.com").password_hash
    assert PASSWORD not in stored and passwords.verify_password(PASSWORD, stored)


def test_import_nothing_is_zero(db: Database) -> None:
    assert users.import_users([]) == 0


def test_import_duplicates_within_the_rows_name_both_rows(db: Database) -> None:
    rows = _rows(5)
    rows[3]["email"] = "BULK1@example.com"
    with pytest.raises(DuplicateError, match="rows 2 and 4") as info:
        users.import_users(rows)
    assert "bulk1" not in str(info.value).lower()
    assert count(User) == 0


def test_import_of_a_taken_address_names_the_row_and_imports_nothing(db: Database) -> None:
    users.create_user("bulk3@example.com", PASSWORD)
    with pytest.raises(DuplicateError, match="row 4") as info:
        users.import_users(_rows(10))
    assert "bulk3" not in str(info.value)
    assert count(User) == 1  # and the caller's transaction goes on


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "no-at"}, "email"),
        ({"email": None}, "email"),
        ({"email": "nul\x00@example.com"}, "email"),
        ({"password_hash": "hunter2"}, "password_hash"),
        ({"password_hash": None}, "password_hash"),
        ({"display_name": "x" * 101}, "display_name"),
        ({"display_name": "nul\x00"}, "display_name"),
        ({"role": "root"}, "role"),
        ({"is_active": "yes"}, "is_active"),
        ({"unknown": 1}, "unknown"),
        ({"password": "pw"}, "password"),  # and a password_hash as well
    ],
)
def test_import_validates_every_row_first(db: Database, change: dict[str, Any], field: str) -> None:
    rows = _rows(6)
    rows[4].update(change)
    with pytest.raises(ValidationError, match=r"\(row 5\)") as info:
        users.import_users(rows)
    assert info.value.field == field
    assert count(User) == 0


def test_import_refuses_a_row_that_is_no_mapping(db: Database) -> None:
    with pytest.raises(ValidationError, match=r"row 2"):
        users.import_users([_rows(1)[0], ("a@example.com", "x")])  # type: ignore[list-item]


def test_import_outside_a_transaction_is_all_or_nothing(isolated_db: Database) -> None:
    users.import_users(_rows(3, prefix="first"))
    taken = {"email": "first1@example.com", "password_hash": _rows(1)[0]["password_hash"]}
    rows = [*_rows(50, prefix="second"), taken]
    with pytest.raises(DuplicateError, match="row 51"):
        users.import_users(rows)
    with isolated_db.checkout():
        assert count(User) == 3
    assert isolated_db.pool_stats().in_use == 0


# -- no secrets, light import ---------------------------------------------------------------


def test_no_password_or_hash_reaches_the_log(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = users.create_user("logs@example.com", PASSWORD)
    users.authenticate("logs@example.com", PASSWORD)
    with pytest.raises(AuthenticationError):
        users.authenticate("logs@example.com", PASSWORD + "x")
    users.import_users([{"email": "logs2@example.com", "password_hash": user.password_hash}])
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert PASSWORD not in text and user.password_hash not in text


def test_operations_do_not_load_the_migration_tooling_or_the_cli() -> None:
    code = (
        "import sys, datalayer\n"
        "datalayer.create_user, datalayer.rotate_token, datalayer.import_users\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('peewee_migrate', 'click')\n"
        "       or m.startswith(('datalayer.cli', 'datalayer.migrate'))]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_names() -> None:
    for name in ("create_user", "get_user", "get_user_by_email", "authenticate",
                 "deactivate_user", "delete_user", "import_users", "hash_password",
                 "verify_password"):
        assert name in datalayer.__all__
        assert callable(getattr(datalayer, name))


def test_operations_run_on_the_database_they_are_given(pg: Server, template_db: str) -> None:
    with pg.database("dlother", template=template_db) as name:
        other = Database(pg.settings(name))
        try:
            user = users.create_user("other@example.com", PASSWORD, db=other)
            assert users.get_user_by_email("other@example.com", db=other).id == user.id
            issued = tokens.issue_token(user, db=other)
            assert tokens.rotate_token(issued.token, db=other).family_id == issued.family_id
            assert other.pool_stats().in_use == 0
            conn = pg.raw(name)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM refresh_tokens")
                    assert cur.fetchone()[0] == 2
            finally:
                conn.close()
        finally:
            other.close_pool()


# -- lost connections ---------------------------------------------------------------------


def _backend_pid(db: Database) -> int:
    with db.checkout():
        return int(db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])


def _terminate(pg: Server, pid: int) -> None:
    conn = pg.raw()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        conn.close()


def test_an_operation_runs_again_once_on_a_connection_found_dead(
    isolated_db: Database, pg: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    users.create_user("survivor@example.com", PASSWORD)
    pid = _backend_pid(isolated_db)
    _terminate(pg, pid)
    # Make the pool hand the dead connection out, as after a restart between its
    # check and the statement: the operation must replace it and run once more.
    monkeypatch.setattr(type(isolated_db.pool), "_usable", lambda self, entry, now: True)
    assert users.get_user_by_email("survivor@example.com").email == "survivor@example.com"
    assert _backend_pid(isolated_db) != pid
    stats = isolated_db.pool_stats()
    assert stats.in_use == 0 and stats.open == 1


def test_a_held_connection_lost_fails_once_then_recovers(
    isolated_db: Database, pg: Server
) -> None:
    users.create_user("held@example.com", PASSWORD)
    with isolated_db.checkout():
        pid = int(isolated_db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])
        _terminate(pg, pid)
        with pytest.raises(datalayer.ConnectionLost, match="Retry"):
            users.get_user_by_email("held@example.com")
        assert users.get_user_by_email("held@example.com").email == "held@example.com"
    assert isolated_db.pool_stats().in_use == 0
