"""Hostile input to every public operation and every model field (hypothesis).

Arbitrary unicode (NUL and lone surrogates included), huge strings, SQL
metacharacters, out-of-range numbers, durations and dates, bad UUIDs and
values of the wrong type.  Only the package's own errors may come out
(``ValidationError``, ``NotFound``, ``AuthenticationError``, ...: a
:class:`~datalayer.errors.DatalayerError`) — never a peewee, psycopg2 or bare
Python error — and when one does, the tables are exactly as before (a
checksum of every row, taken inside the same transaction, so that half a
write would show).  Each example runs in a transaction rolled back at the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import peewee
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datalayer.auth import passwords, tokens, users
from datalayer.db import Database, database
from datalayer.errors import DatalayerError, ValidationError
from datalayer.models import RefreshToken, Role, User
from tests.pgserver import Server

pytestmark = pytest.mark.slow

# DATALAYER_HYPOTHESIS_EXAMPLES=5000 explores further, with random examples.
EXAMPLES = int(os.environ.get("DATALAYER_HYPOTHESIS_EXAMPLES", "0")) or None
BOUNDED = settings(
    max_examples=EXAMPLES or 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
    derandomize=EXAMPLES is None,  # by default the same examples every run: CI reproduces
    database=None,
)
# Operations that hash a password (scrypt, tens of ms each) get fewer.
FEW = settings(BOUNDED, max_examples=max(25, (EXAMPLES or 0) // 10))

META = [
    "\x00", "\ud800", "\udfff", "'", '"', "\\", "%", "_", "$$", ";", "--", "/*", "*/",
    "'; DROP TABLE users; --", "' OR '1'='1", "E'\\x00'", "\u202e", "\ufeff", "\U0010ffff",
    "\r\n", "\t", "@", "@@", " ", "", "NULL", "\\N", "\x1b[31m", "%s", "%(email)s", "{0}",
]
CHARS = st.characters(codec=None, exclude_categories=())
TEXT = st.one_of(
    st.text(CHARS, max_size=40),
    st.builds(lambda a, m, b: a + m + b, st.text(CHARS, max_size=10), st.sampled_from(META),
              st.text(CHARS, max_size=10)),
    st.sampled_from(META),
    st.builds(lambda n, c: c * n, st.sampled_from([255, 256, 513, 1025, 100_001, 1_000_001]),
              st.sampled_from(["a", "é", "\x00", "'", "😀"])),
)
EMAILISH = st.one_of(
    TEXT,
    st.builds(lambda a, b: f"{a}@{b}", TEXT, TEXT),
    st.builds(lambda a: f"user{a}@example.test", st.sampled_from(META)),
)
NUMBERS = st.one_of(
    st.integers(), st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1, 10**100]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True), st.just(decimal.Decimal("1e400")),
)
WHEN = st.one_of(
    st.datetimes(), st.datetimes(timezones=st.timezones()), st.dates(),
    st.sampled_from([dt.datetime.min, dt.datetime.max, dt.date.min, dt.time(1)]),
)
DURATIONS = st.one_of(
    st.timedeltas(), st.sampled_from([dt.timedelta.max, dt.timedelta.min, dt.timedelta(0)])
)
UUIDISH = st.one_of(
    st.uuids(), st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: str(u)[:-1] + "g"), st.uuids().map(lambda u: str(u) + "\x00"),
    st.uuids().map(lambda u: u.hex), st.uuids().map(lambda u: u.bytes),
)
ANY = st.one_of(
    TEXT, EMAILISH, NUMBERS, WHEN, DURATIONS, UUIDISH, st.none(), st.booleans(),
    st.binary(max_size=20), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(list(Role)), st.just(object()),
)


def _checksum(db: Database) -> tuple[str, str, int, int]:
    row = db.execute_sql(
        "SELECT (SELECT md5(coalesce(string_agg(u::text, '|' ORDER BY u.users_id), '')) "
        "FROM users u), (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY "
        "t.refresh_tokens_id), '')) FROM refresh_tokens t), "
        "(SELECT count(*) FROM users), (SELECT count(*) FROM refresh_tokens)"
    ).fetchone()
    return (str(row[0]), str(row[1]), int(row[2]), int(row[3]))


class Seed:
    """Rows every example can aim at (committed once for the module)."""

    def __init__(self) -> None:
        self.user = users.create_user("seed@hostile.test", "seed password 123")
        self.other = users.create_user("other@hostile.test", "seed password 456")
        self.token = tokens.issue_token(self.user)
        self.pw_hash = self.user.password_hash


@pytest.fixture(scope="module")
def seeded(pg: Server, template_db: str) -> Iterator[Seed]:
    with pg.database("dlhostile", template=template_db) as name:
        database.configure(pg.settings(name))
        try:
            yield Seed()
        finally:
            database.close_pool()


def check(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a transaction rolled back afterwards; only our errors, no changes."""
    if database._pool is None:
        pytest.fail("the database was closed under the test")
    with database.checkout(), database.atomic() as txn:
        before = _checksum(database)
        try:
            result = call()
        except DatalayerError as exc:
            after = _checksum(database)  # raises if the transaction was aborted by an error
            assert after == before, f"{type(exc).__name__} but the tables changed"
            text = str(exc)
            assert text and "Traceback" not in text
            result = exc
        finally:
            txn.rollback()
    return result


# -- users ------------------------------------------------------------------------------


@FEW
@given(email=EMAILISH, password=st.one_of(TEXT, ANY), display_name=st.one_of(st.none(), TEXT, ANY),
       role=st.one_of(st.sampled_from(["user", "admin", "ADMIN", "root"]), ANY),
       is_active=st.one_of(st.booleans(), ANY))
def test_create_user(seeded: Seed, email: Any, password: Any, display_name: Any, role: Any,
                     is_active: Any):
    result = check(lambda: users.create_user(
        email, password, display_name=display_name, role=role, is_active=is_active
    ))
    if isinstance(result, User):
        assert result.display_name == display_name


@BOUNDED
@given(email=EMAILISH, pw_hash=st.one_of(TEXT, ANY, st.just("seed")))
def test_create_user_with_hash(seeded: Seed, email: Any, pw_hash: Any):
    value = seeded.pw_hash if pw_hash == "seed" else pw_hash
    check(lambda: users.create_user(email, password_hash=value))
    check(lambda: users.create_user(email, seeded.pw_hash, password_hash=value))


@BOUNDED
@given(value=st.one_of(ANY, UUIDISH, EMAILISH))
def test_lookups_and_user_changes(seeded: Seed, value: Any):
    for op in (users.get_user, users.get_user_by_email, users.deactivate_user, users.delete_user,
               tokens.revoke_all_for_user, tokens.revoke_token):
        check(lambda op=op: op(value))


@FEW
@given(email=st.one_of(EMAILISH, st.just("seed@hostile.test")), password=st.one_of(TEXT, ANY))
def test_authenticate(seeded: Seed, email: Any, password: Any):
    result = check(lambda: users.authenticate(email, password))
    assert isinstance(result, DatalayerError)  # the seed's password is never generated


ROW_VALUES = st.fixed_dictionaries(
    {"email": EMAILISH},
    optional={
        "password_hash": st.one_of(TEXT, ANY, st.just("seed")),
        "display_name": st.one_of(TEXT, ANY),
        "role": st.one_of(st.sampled_from(["user", "admin", "x"]), ANY),
        "is_active": ANY,
        "password": st.sampled_from(["", "\x00", "\ud800", "p" * 2000]),
        "unknown": ANY,
    },
)


@BOUNDED
@given(rows=st.one_of(
    st.lists(ROW_VALUES, max_size=4),
    st.lists(st.one_of(ROW_VALUES, ANY), max_size=3),
    ANY,
))
def test_import_users(seeded: Seed, rows: Any):
    def fix(row: Any) -> Any:
        if isinstance(row, dict) and row.get("password_hash") == "seed":
            return {**row, "password_hash": seeded.pw_hash}
        return row

    if isinstance(rows, list):
        rows = [fix(r) for r in rows]
    check(lambda: users.import_users(rows))


# -- tokens -----------------------------------------------------------------------------


@BOUNDED
@given(user=st.one_of(ANY, st.just("seed")), ttl=st.one_of(DURATIONS, ANY),
       user_agent=st.one_of(st.none(), TEXT, ANY), ip=st.one_of(st.none(), TEXT, ANY))
def test_issue_token(seeded: Seed, user: Any, ttl: Any, user_agent: Any, ip: Any):
    target = seeded.user.id if user == "seed" else user
    check(lambda: tokens.issue_token(target, ttl=ttl, user_agent=user_agent, ip=ip))


@BOUNDED
@given(token=st.one_of(TEXT, ANY, st.just("seed")), ttl=st.one_of(DURATIONS, ANY),
       user_agent=st.one_of(st.none(), TEXT, ANY), ip=st.one_of(st.none(), TEXT, ANY))
def test_rotate_token(seeded: Seed, token: Any, ttl: Any, user_agent: Any, ip: Any):
    raw = seeded.token.token if token == "seed" else token
    check(lambda: tokens.rotate_token(raw, ttl=ttl, user_agent=user_agent, ip=ip))


@BOUNDED
@given(batch_size=st.one_of(NUMBERS, ANY), max_batches=st.one_of(st.none(), NUMBERS, ANY))
def test_purge_expired(seeded: Seed, batch_size: Any, max_batches: Any):
    check(lambda: tokens.purge_expired(batch_size, max_batches=max_batches))


# -- model fields -------------------------------------------------------------------------

USER_FIELDS = ["id", "email", "password_hash", "display_name", "role", "is_active",
               "last_login_at", "created_at", "updated_at"]
TOKEN_FIELDS = ["id", "user", "token_hash", "family_id", "expires_at", "revoked_at",
                "replaced_by", "user_agent", "ip", "created_at", "updated_at"]


def _user_values(seed: Seed) -> dict[str, Any]:
    return {"email": f"m{uuid.uuid4().hex}@hostile.test", "password_hash": seed.pw_hash}


def _token_values(seed: Seed) -> dict[str, Any]:
    return {"user": seed.user.id, "token_hash": uuid.uuid4().hex * 2,
            "family_id": uuid.uuid4(), "expires_at": dt.datetime(2100, 1, 1, tzinfo=dt.UTC)}


def _model_write(seed: Seed, model: type[Any], name: str, value: Any, how: str) -> Any:
    base = _user_values(seed) if model is User else _token_values(seed)
    data = {**base, name: value}
    if how == "create":
        return model.create(**data)
    if how == "insert":
        return model.insert(**data).execute()
    if how == "insert_many":
        return model.insert_many([data]).execute()
    target = seed.other if model is User else RefreshToken.get_by_id(seed.token.id)
    if how == "update":
        return model.update(**{name: value}).where(model.id == target.id).execute()
    # save / bulk_update: a fresh instance each time, so a refused value stays behind on
    # nothing that the next example uses.
    target = type(target).get_by_id(target.id)
    setattr(target, name, value)
    if how == "save":
        return target.save()
    if how == "bulk_update":
        return model.bulk_update([target], [name])
    raise AssertionError(how)


@BOUNDED
@given(model_field=st.one_of(st.tuples(st.just(User), st.sampled_from(USER_FIELDS)),
                             st.tuples(st.just(RefreshToken), st.sampled_from(TOKEN_FIELDS))),
       value=ANY,
       how=st.sampled_from(["create", "insert", "insert_many", "update", "save", "bulk_update"]))
def test_model_fields(seeded: Seed, model_field: tuple[type[Any], str], value: Any, how: str):
    model, name = model_field

    def write() -> Any:
        if how in ("save", "bulk_update") and name == "id":
            return None  # changing a primary key in place is not a write of the field
        return _model_write(seeded, model, name, value, how)

    def write_in_savepoint() -> Any:
        # The model layer checks types and forms; whether a referenced row exists or a
        # unique value is free only the server knows: those two come back as peewee's
        # IntegrityError (23503 / 23505), in a savepoint so the transaction goes on.
        try:
            with database.atomic():
                return write()
        except peewee.IntegrityError as exc:
            code = getattr(exc.orig, "pgcode", None)
            assert code in ("23503", "23505"), f"{code}: {exc}"
            return exc

    result = check(write_in_savepoint)
    if isinstance(result, DatalayerError):
        assert isinstance(result, ValidationError), repr(result)


def test_hostile_values_really_reach_the_checks(seeded: Seed):
    """A canary: the property tests above would pass vacuously if everything were refused."""
    u = check(lambda: users.create_user("o'brien%_$$@hostile.test", "pw pw pw pw 1",
                                        display_name="Robert'); DROP TABLE users;--"))
    assert isinstance(u, User)
    assert isinstance(check(lambda: users.create_user("nul\x00@hostile.test", "pw")),
                      ValidationError)
    assert passwords.is_password_hash(seeded.pw_hash)


REGRESSIONS: list[tuple[str, Callable[[Seed], Any]]] = [
    ("ttl past year 9999", lambda s: tokens.issue_token(s.user.id, ttl=dt.timedelta.max)),
    ("rotate ttl past 9999", lambda s: tokens.rotate_token(s.token.token, ttl=dt.timedelta.max)),
    ("purge LIMIT past bigint", lambda s: tokens.purge_expired(2**63)),
    ("purge max_batches=True", lambda s: tokens.purge_expired(10, max_batches=True)),
    ("import_users(None)", lambda s: users.import_users(None)),  # type: ignore[arg-type]
    ("import_users(a string)", lambda s: users.import_users("rows")),  # type: ignore[arg-type]
    ("offset -23:00 at datetime.max", lambda s: RefreshToken.update(
        expires_at=dt.datetime.max.replace(tzinfo=dt.timezone(-dt.timedelta(hours=23)))
    ).where(RefreshToken.id == s.token.id).execute()),
    ("malformed token_hash", lambda s: RefreshToken.update(token_hash="Z" * 64).where(
        RefreshToken.id == s.token.id).execute()),
]


@pytest.mark.parametrize("call", [c for _, c in REGRESSIONS], ids=[n for n, _ in REGRESSIONS])
def test_found_by_hypothesis_now_validation_errors(seeded: Seed, call: Callable[[Seed], Any]):
    assert isinstance(check(lambda: call(seeded)), ValidationError)


@pytest.mark.parametrize("name", ["user", "family_id", "replaced_by", "revoked_at", "ip"])
def test_bulk_update_of_uuid_and_null_columns(seeded: Seed, name: str):
    """peewee's CASE for bulk_update typed UUIDs and all-NULL columns as text."""
    def write() -> int:
        token = RefreshToken.get_by_id(seeded.token.id)
        value = {"user": seeded.other.id, "family_id": uuid.uuid4()}.get(name)
        setattr(token, name, value)
        assert RefreshToken.bulk_update([token], [name]) == 1
        again = RefreshToken.get_by_id(token.id)
        assert again.__data__[name] == value
        return 1

    assert check(write) == 1


@FEW
@given(password=st.one_of(TEXT, ANY), stored=st.one_of(TEXT, ANY, st.just("seed")))
def test_password_helpers(seeded: Seed, password: Any, stored: Any):
    """hash_password / verify_password (public) take anything without a driver-level error."""
    value = seeded.pw_hash if stored == "seed" else stored
    for call in (lambda: passwords.hash_password(password),
                 lambda: passwords.verify_password(password, value)):
        with contextlib.suppress(DatalayerError):
            call()
