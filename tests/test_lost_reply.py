"""A write whose reply is lost never turns into a wrong answer.

Every test talks to the server through :class:`tests._proxy.LossyProxy`,
which lets one statement through, waits for the server to answer it, throws
the answer away and closes the connection: the write ran (and, outside a
transaction, committed) but the package never heard back.  The operation
must return what it did (found by the hash it made, or by asking the server
whether its transaction committed) or raise ``CommitUnknown``; never
``DuplicateError`` for its own insert, ``TokenReuseError`` for its own
rotation, ``NotFound`` for its own delete or False for its own revocation.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from datalayer import retry
from datalayer.auth import passwords, tokens, users
from datalayer.db import Database
from datalayer.errors import CommitUnknown, ConnectionLost
from datalayer.models import RefreshToken, User
from tests._proxy import LossyProxy

RT = RefreshToken

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pw_hash() -> str:
    return passwords.hash_password("a password")  # once: hashing is slow on purpose


@pytest.fixture
def proxied(isolated_db: Database) -> Iterator[tuple[Database, LossyProxy]]:
    """A second Database on the same test database, through a proxy that can lose a reply."""
    settings = isolated_db.settings
    assert settings.host is not None
    with LossyProxy(settings.host, settings.port) as proxy:
        db = Database(settings.replace(host=proxy.host, port=proxy.port))
        try:
            yield db, proxy
        finally:
            db.close_pool()


def one(db: Database, sql: str, *params: Any) -> Any:
    """Run ``sql`` on the direct (unproxied) database and return its first row."""
    with db.checkout():
        return db.execute_sql(sql, params).fetchone()


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def assert_lost(proxy: LossyProxy, times: int = 1) -> None:
    """The proxy did lose ``times`` replies in all, each one the server had sent."""
    assert proxy.answered == [True] * times, proxy.answered


# -- single statements: found by what only they can have written ---------------------------------


def test_create_user_returns_its_own_row_not_a_duplicate(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    db, proxy = proxied
    proxy.lose_reply_to(b'INSERT INTO "users"')
    user = users.create_user("lost-create@example.com", password_hash=pw_hash, db=db)
    assert_lost(proxy)
    assert one(isolated_db, "SELECT count(*), min(users_id::text) FROM users") == (1, str(user.id))
    assert user.email == "lost-create@example.com" and user.created_at is not None


def test_create_user_still_says_duplicate_for_someone_elses_row(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    db, proxy = proxied
    users.create_user("taken@example.com", password_hash=pw_hash, db=isolated_db)
    proxy.lose_reply_to(b'INSERT INTO "users"')
    with pytest.raises(users.DuplicateError):
        users.create_user("taken@example.com", password_hash=passwords.hash_password("x"), db=db)
    assert_lost(proxy)


def test_issue_token_returns_its_token_not_a_raw_integrity_error(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    db, proxy = proxied
    user = users.create_user("lost-issue@example.com", password_hash=pw_hash, db=isolated_db)
    proxy.lose_reply_to(b'INSERT INTO "refresh_tokens"')
    issued = tokens.issue_token(user, db=db)
    assert_lost(proxy)
    assert one(isolated_db, "SELECT count(*) FROM refresh_tokens WHERE token_hash = %s",
               sha256(issued.token)) == (1,)
    assert tokens.rotate_token(issued.token, db=isolated_db).family_id == issued.family_id


def _rotation_setup(isolated_db: Database, pw_hash: str, email: str) -> tokens.IssuedToken:
    user = users.create_user(email, password_hash=pw_hash, db=isolated_db)
    return tokens.issue_token(user, db=isolated_db)


def _assert_rotated_once(isolated_db: Database, old: tokens.IssuedToken,
                         new: tokens.IssuedToken) -> None:
    """``new`` is ``old``'s one successor, live; nothing of the family was revoked as reuse."""
    assert new.family_id == old.family_id and new.id != old.id
    live = one(isolated_db, "SELECT count(*), min(token_hash) FROM refresh_tokens "
               "WHERE family_id = %s AND revoked_at IS NULL", old.family_id)
    assert live == (1, sha256(new.token))
    assert one(isolated_db, "SELECT count(*) FROM refresh_tokens WHERE family_id = %s",
               old.family_id) == (2,)
    tokens.rotate_token(new.token, db=isolated_db)  # the successor works


def test_rotate_token_returns_its_successor_not_token_reuse(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    db, proxy = proxied
    old = _rotation_setup(isolated_db, pw_hash, "lost-rotate@example.com")
    proxy.lose_reply_to(b'"old"')
    new = tokens.rotate_token(old.token, db=db)
    assert_lost(proxy)
    _assert_rotated_once(isolated_db, old, new)


def test_rotate_token_through_retry_run(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    db, proxy = proxied
    old = _rotation_setup(isolated_db, pw_hash, "lost-retry@example.com")
    proxy.lose_reply_to(b'"old"')
    new = retry.run(lambda: tokens.rotate_token(old.token, db=db), db=db)
    assert_lost(proxy)
    _assert_rotated_once(isolated_db, old, new)


def test_rotate_token_through_run_transaction_lost_statement_reply(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    # Inside a transaction the server rolls the lost attempt back: retrying it is right.
    db, proxy = proxied
    old = _rotation_setup(isolated_db, pw_hash, "lost-txn@example.com")
    proxy.lose_reply_to(b'"old"')
    new = retry.run_transaction(lambda: tokens.rotate_token(old.token, db=db), db=db)
    assert_lost(proxy)
    _assert_rotated_once(isolated_db, old, new)


def test_rotate_token_through_run_transaction_lost_commit_reply(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    # The caller's COMMIT: the rotation left a witness (its successor's hash), found
    # once the old server process is gone, so commit() knows the transaction committed.
    db, proxy = proxied
    old = _rotation_setup(isolated_db, pw_hash, "lost-commit@example.com")
    proxy.lose_reply_to(b"COMMIT")
    new = retry.run_transaction(lambda: tokens.rotate_token(old.token, db=db), db=db)
    assert_lost(proxy)
    _assert_rotated_once(isolated_db, old, new)


def test_create_and_issue_in_one_transaction_lost_commit_reply(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    db, proxy = proxied

    def sign_up() -> tokens.IssuedToken:
        user = users.create_user("lost-signup@example.com", password_hash=pw_hash, db=db)
        return tokens.issue_token(user, db=db)

    proxy.lose_reply_to(b"COMMIT")
    issued = retry.run_transaction(sign_up, db=db)
    assert_lost(proxy)
    assert one(isolated_db, "SELECT count(*) FROM users") == (1,)
    assert tokens.rotate_token(issued.token, db=isolated_db).family_id == issued.family_id


def test_a_lost_commit_of_a_transaction_without_a_witness_is_commit_unknown(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    # Nothing written by the operations: the package cannot tell, says so, does not retry.
    db, proxy = proxied
    user = users.create_user("plain@example.com", password_hash=pw_hash, db=isolated_db)

    def rename() -> None:
        User.update(display_name="renamed").where(User.id == user.id).execute()

    proxy.lose_reply_to(b"COMMIT")
    with User.bind_ctx(db), pytest.raises(CommitUnknown, match="unknown"):
        retry.run_transaction(rename, db=db)
    assert_lost(proxy)
    assert one(isolated_db, "SELECT display_name FROM users") == ("renamed",)


# -- transactions of their own: txid_status() says whether they committed ------------------------


@pytest.mark.parametrize("marker", [b'UPDATE "refresh_tokens"', b"COMMIT"])
def test_revoke_token_returns_true_for_its_own_revocation(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str, marker: bytes
) -> None:
    db, proxy = proxied
    issued = _rotation_setup(isolated_db, pw_hash, "lost-revoke@example.com")
    proxy.lose_reply_to(marker)
    assert tokens.revoke_token(issued.token, db=db) is True
    assert_lost(proxy)
    assert one(isolated_db, "SELECT revoked_at IS NOT NULL FROM refresh_tokens "
               "WHERE token_hash = %s", sha256(issued.token)) == (True,)


@pytest.mark.parametrize("marker", [b'UPDATE "refresh_tokens"', b"COMMIT"])
def test_revoke_all_and_deactivate_count_their_own_revocations(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str, marker: bytes
) -> None:
    db, proxy = proxied
    user = users.create_user("lost-all@example.com", password_hash=pw_hash, db=isolated_db)
    for _ in range(3):
        tokens.issue_token(user, db=isolated_db)
    proxy.lose_reply_to(marker)
    assert tokens.revoke_all_for_user(user, db=db) == 3
    assert_lost(proxy)
    for _ in range(2):
        tokens.issue_token(user, db=isolated_db)
    proxy.lose_reply_to(marker)
    assert users.deactivate_user(user.id, db=db) == 2
    assert_lost(proxy, 2)
    assert one(isolated_db, "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == (0,)
    assert one(isolated_db, "SELECT is_active FROM users") == (False,)


@pytest.mark.parametrize("marker", [b'DELETE FROM "users"', b"COMMIT"])
def test_delete_user_does_not_say_not_found_for_its_own_delete(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str, marker: bytes
) -> None:
    db, proxy = proxied
    user = users.create_user("lost-delete@example.com", password_hash=pw_hash, db=isolated_db)
    tokens.issue_token(user, db=isolated_db)
    proxy.lose_reply_to(marker)
    assert users.delete_user(user, db=db) is None
    assert_lost(proxy)
    assert one(isolated_db, "SELECT count(*) FROM users") == (0,)
    assert one(isolated_db, "SELECT count(*) FROM refresh_tokens") == (0,)


@pytest.mark.parametrize("marker", [b"import-lost-2@example.com", b"COMMIT"])
def test_import_users_counts_its_own_import(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str, marker: bytes
) -> None:
    db, proxy = proxied
    rows = [{"email": f"import-lost-{i}@example.com", "password_hash": pw_hash} for i in range(3)]
    proxy.lose_reply_to(marker)
    assert users.import_users(rows, db=db) == 3
    assert_lost(proxy)
    assert one(isolated_db, "SELECT count(*) FROM users") == (3,)


# -- the generic paths: no re-run of a write, and a message that tells the truth ------------------


@pytest.fixture
def scratch_table(isolated_db: Database) -> Iterator[str]:
    name = f"lost_{uuid.uuid4().hex[:8]}"
    with isolated_db.checkout():
        isolated_db.execute_sql(f"CREATE TABLE {name} (x int)")  # no key: a re-run would show
    yield name


def test_a_lost_write_outside_a_transaction_is_not_run_again(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], scratch_table: str
) -> None:
    db, proxy = proxied
    proxy.lose_reply_to(b"INSERT INTO " + scratch_table.encode())
    with db.checkout(), pytest.raises(CommitUnknown, match="may have run and committed"):
        db.execute_sql(f"INSERT INTO {scratch_table} VALUES (1)")
    assert_lost(proxy)
    assert one(isolated_db, f"SELECT count(*) FROM {scratch_table}") == (1,)


def test_a_lost_write_inside_a_transaction_says_none_of_it_committed(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], scratch_table: str
) -> None:
    db, proxy = proxied
    proxy.lose_reply_to(b"INSERT INTO " + scratch_table.encode())
    with db.checkout():
        with pytest.raises(ConnectionLost, match="none of it was committed") as info, db.atomic():
            db.execute_sql(f"INSERT INTO {scratch_table} VALUES (1)")
        assert not isinstance(info.value, CommitUnknown)
    assert_lost(proxy)
    assert one(isolated_db, f"SELECT count(*) FROM {scratch_table}") == (0,)


def test_a_lost_read_says_nothing_was_changed(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    db, proxy = proxied
    users.create_user("reader@example.com", password_hash=pw_hash, db=isolated_db)
    with db.checkout():
        db.execute_sql("SELECT 1")  # the checkout is no longer fresh: no silent re-run
        proxy.lose_reply_to(b'FROM "users"')
        with pytest.raises(ConnectionLost, match="only reads, so nothing was changed"):
            users.get_user_by_email("reader@example.com", db=db)
    assert_lost(proxy)
    # A read on a fresh checkout is simply run again.
    proxy.lose_reply_to(b'FROM "users"')
    assert users.get_user_by_email("reader@example.com", db=db).email == "reader@example.com"
    assert_lost(proxy, 2)


def test_a_lost_reply_leaves_no_connection_checked_out(
    proxied: tuple[Database, LossyProxy], pw_hash: str
) -> None:
    db, proxy = proxied
    proxy.lose_reply_to(b'INSERT INTO "users"')
    users.create_user("pool@example.com", password_hash=pw_hash, db=db)
    assert_lost(proxy)
    assert db.pool_stats().in_use == 0


@pytest.mark.parametrize(
    ("sql", "read_only"),
    [
        ('SELECT "t1"."email" FROM "users" AS "t1" WHERE ("t1"."email" = %s)', True),
        ("  select 1", True),
        ("SHOW server_version", True),
        ("SELECT updated_at FROM users", True),  # a column named like a keyword is fine
        ("SELECT 1 FROM users FOR UPDATE", False),
        ("SELECT 1 FROM users FOR SHARE", False),
        ('WITH "old" AS (UPDATE t SET x = 1 RETURNING x) SELECT x FROM "old"', False),
        ("SELECT nextval('s')", False),
        ("SELECT pg_advisory_lock(1)", False),
        ("SELECT txid_current()", False),
        ("SELECT * INTO copy_of_users FROM users", False),
        ("INSERT INTO t VALUES (1)", False),
        ("UPDATE t SET x = 1", False),
        ("COPY t FROM STDIN", False),
        ("BEGIN", False),
        ("", False),
    ],
)
def test_only_statements_that_cannot_have_changed_anything_count_as_reads(
    sql: str, read_only: bool
) -> None:
    from datalayer._sql import is_read_only

    assert is_read_only(sql) is read_only


def test_the_read_check_of_ascii_text_agrees_with_the_write_words_pattern() -> None:
    # ASCII text is checked word by word (no pattern to compile at a script's start);
    # it must say what the pattern says, on the words, their parts and their neighbours.
    import itertools
    import re

    from datalayer._sql import _WRITE_WORDS, is_read_only

    words = ["insert", "Update", "DELETE", "merge", "copy", "into", "lock", "share", "nextval",
             "setval", "set_config", "txid_current", "pg_current_xact_id", "pg_advisory",
             "pg_advisory_xact_lock", "PG_TRY_ADVISORY_LOCK", "pg_terminate_backend",
             "pg_cancel_backend", "pg_notify", "lo_", "lo_import", "lo", "dblink",
             "dblink_exec", "shared", "locks", "inserted", "x_insert", "updated_at",
             "into2", "1lock", "pglo_x", "lo_x_", "email", "users"]
    joints = [" ", ".", "(", "_", "1", "\"", "'", "\n", ""]
    for a, b, joint in itertools.product(words, ["t", "lock", "lo_1", "x"], joints):
        sql = f"SELECT {a}{joint}{b} FROM users"
        expected = re.search(_WRITE_WORDS, sql, re.IGNORECASE) is None
        assert is_read_only(sql) is expected, sql
    assert is_read_only("SELECT 'İNSERT'") is False  # not ASCII: the pattern decides


def test_what_cannot_be_found_out_is_commit_unknown_and_not_run_again(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], pw_hash: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As when the old server process does not exit within SETTLE_TIMEOUT.
    from datalayer import _outcome

    db, proxy = proxied
    old = _rotation_setup(isolated_db, pw_hash, "unknown@example.com")
    monkeypatch.setattr(_outcome, "SETTLE_TIMEOUT", 0.0)
    monkeypatch.setattr(_outcome, "_ACTIVITY", _outcome.Statement.text(
        "SELECT 1 WHERE %s IS NOT NULL", "pid"))  # the old process never seems to exit
    proxy.lose_reply_to(b'"old"')
    with pytest.raises(CommitUnknown, match="may have run and committed"):
        tokens.rotate_token(old.token, db=db)
    assert_lost(proxy)
    live = one(isolated_db, "SELECT count(*) FROM refresh_tokens "
               "WHERE family_id = %s AND revoked_at IS NULL", old.family_id)
    assert live == (1,)  # not run again, so not taken for reuse
