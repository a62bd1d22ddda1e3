"""A value of the wrong type given to any public auth operation is a ValidationError.

Before: a User object given as an e-mail address reached the driver
(``peewee.ProgrammingError: can't adapt type 'User'``), ``create_user`` raised
``TypeError`` and ``db="..."`` an ``AttributeError``.  Now each is one line that
names the argument and the type it expects, and nothing is written.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from datalayer.auth import passwords, tokens, users
from datalayer.db import Database
from datalayer.errors import ValidationError
from datalayer.models import RefreshToken, User

PASSWORD = "correct horse battery staple"


class Thing:
    """An object of no type the package knows."""


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "DEFAULT_PARAMS", passwords.ScryptParams(ln=4))


USER = "a saved User"  # replaced by one in the test
WRONG: list[Any] = [USER, b"bytes", 42, 4.2, ["a", "list"], Thing()]

# operation, argument, how to call it with ``bad`` there (``ok``: a saved user, its token)
Call = Callable[[Any, User, str], Any]
CASES: list[tuple[str, str, Call, list[Any]]] = [
    ("create_user", "email", lambda bad, ok, t: users.create_user(bad, PASSWORD), WRONG),
    ("create_user", "password", lambda bad, ok, t: users.create_user("n@x.test", bad), WRONG),
    ("create_user", "password_hash",
     lambda bad, ok, t: users.create_user("n@x.test", password_hash=bad), WRONG),
    ("create_user", "display_name",
     lambda bad, ok, t: users.create_user("n@x.test", PASSWORD, display_name=bad), WRONG),
    ("create_user", "role",
     lambda bad, ok, t: users.create_user("n@x.test", PASSWORD, role=bad), WRONG),
    ("create_user", "is_active",
     lambda bad, ok, t: users.create_user("n@x.test", PASSWORD, is_active=bad), WRONG),
    ("get_user", "user_id", lambda bad, ok, t: users.get_user(bad), WRONG[1:]),
    ("get_user_by_email", "email", lambda bad, ok, t: users.get_user_by_email(bad), WRONG),
    ("authenticate", "email", lambda bad, ok, t: users.authenticate(bad, PASSWORD), WRONG),
    ("authenticate", "password", lambda bad, ok, t: users.authenticate(ok.email, bad), WRONG),
    ("deactivate_user", "user", lambda bad, ok, t: users.deactivate_user(bad), WRONG[1:]),
    ("delete_user", "user", lambda bad, ok, t: users.delete_user(bad), WRONG[1:]),
    ("import_users", "rows", lambda bad, ok, t: users.import_users(bad), [b"bytes", 42, Thing()]),
    ("import_users", "row", lambda bad, ok, t: users.import_users([bad]), WRONG),
    ("import_users", "email",
     lambda bad, ok, t: users.import_users([{"email": bad, "password": PASSWORD}]), WRONG),
    ("import_users", "display_name",
     lambda bad, ok, t: users.import_users([{"email": "i@x.test", "password": PASSWORD,
                                             "display_name": bad}]), WRONG),
    ("import_users", "password_hash",
     lambda bad, ok, t: users.import_users([{"email": "i@x.test", "password_hash": bad}]), WRONG),
    ("issue_token", "user", lambda bad, ok, t: tokens.issue_token(bad), WRONG[1:]),
    ("issue_token", "ttl", lambda bad, ok, t: tokens.issue_token(ok, ttl=bad), WRONG),
    ("issue_token", "user_agent",
     lambda bad, ok, t: tokens.issue_token(ok, user_agent=bad), WRONG),
    ("issue_token", "ip", lambda bad, ok, t: tokens.issue_token(ok, ip=bad), WRONG),
    ("rotate_token", "token", lambda bad, ok, t: tokens.rotate_token(bad), WRONG),
    ("rotate_token", "ttl", lambda bad, ok, t: tokens.rotate_token(t, ttl=bad), WRONG),
    ("revoke_token", "token", lambda bad, ok, t: tokens.revoke_token(bad), WRONG),
    ("revoke_all_for_user", "user", lambda bad, ok, t: tokens.revoke_all_for_user(bad),
     WRONG[1:]),
    ("purge_expired", "batch_size", lambda bad, ok, t: tokens.purge_expired(bad),
     [w for w in WRONG if not isinstance(w, int)]),
    ("purge_expired", "max_batches",
     lambda bad, ok, t: tokens.purge_expired(max_batches=bad),
     [w for w in WRONG if not isinstance(w, int)]),
    ("hash_password", "password", lambda bad, ok, t: passwords.hash_password(bad), WRONG),
]
DB_CASES: list[tuple[str, Call]] = [
    ("create_user", lambda bad, ok, t: users.create_user("n@x.test", PASSWORD, db=bad)),
    ("get_user", lambda bad, ok, t: users.get_user(ok.id, db=bad)),
    ("get_user_by_email", lambda bad, ok, t: users.get_user_by_email(ok.email, db=bad)),
    ("authenticate", lambda bad, ok, t: users.authenticate(ok.email, PASSWORD, db=bad)),
    ("deactivate_user", lambda bad, ok, t: users.deactivate_user(ok, db=bad)),
    ("delete_user", lambda bad, ok, t: users.delete_user(ok, db=bad)),
    ("import_users", lambda bad, ok, t: users.import_users([], db=bad)),
    ("issue_token", lambda bad, ok, t: tokens.issue_token(ok, db=bad)),
    ("rotate_token", lambda bad, ok, t: tokens.rotate_token(t, db=bad)),
    ("revoke_token", lambda bad, ok, t: tokens.revoke_token(t, db=bad)),
    ("revoke_all_for_user", lambda bad, ok, t: tokens.revoke_all_for_user(ok, db=bad)),
    ("purge_expired", lambda bad, ok, t: tokens.purge_expired(db=bad)),
]
PARAMS = [
    pytest.param(op, arg, call, bad, id=f"{op}-{arg}-{type(bad).__name__}")
    for op, arg, call, values in CASES
    for bad in values
] + [
    pytest.param(op, "db", call, bad, id=f"{op}-db-{type(bad).__name__}")
    for op, call in DB_CASES
    for bad in ["postgresql://localhost/db", 42, Thing(), USER]
]


def _state() -> tuple[Any, ...]:
    return (
        tuple(User.select(User.id, User.email, User.is_active, User.last_login_at)
              .order_by(User.id).tuples()),
        tuple(RefreshToken.select(RefreshToken.id, RefreshToken.revoked_at)
              .order_by(RefreshToken.id).tuples()),
    )


@pytest.mark.parametrize(("op", "arg", "call", "bad"), PARAMS)
def test_a_wrong_type_is_a_validation_error_naming_the_argument(
    db: Database, op: str, arg: str, call: Call, bad: Any
) -> None:
    user = users.create_user("ok@x.test", PASSWORD)
    token = tokens.issue_token(user).token
    if bad is USER:
        bad = user
    before = _state()
    with pytest.raises(ValidationError) as info:
        call(bad, user, token)
    message = str(info.value)
    assert info.value.field == arg, message
    assert "\n" not in message and message.startswith(f"{arg}: ")
    assert "must be" in message or "is not" in message, message
    # The expected type is named, and never the value itself.
    assert PASSWORD not in message and "ok@x.test" not in message and token not in message
    assert _state() == before  # nothing written


def test_none_is_still_a_refused_sign_in(db: Database) -> None:
    """None (a missing form field) is a refused sign-in, as before: not a programming error."""
    from datalayer.errors import AuthenticationError

    users.create_user("none@x.test", PASSWORD)
    for email, password in [(None, PASSWORD), ("none@x.test", None)]:
        with pytest.raises(AuthenticationError):
            users.authenticate(email, password)  # type: ignore[arg-type]


def test_ids_of_the_wrong_kind_name_the_argument(db: Database) -> None:
    with pytest.raises(ValidationError, match=r"^user_id: .*UUID"):
        users.get_user(uuid.uuid4().int)
    with pytest.raises(ValidationError, match=r"^user: must be a User, a UUID"):
        tokens.issue_token(dt.datetime.now())  # type: ignore[arg-type]
