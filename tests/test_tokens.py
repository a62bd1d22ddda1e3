"""Refresh tokens (datalayer.auth.tokens): issue, rotate, reuse detection, revoke, purge.

Single-threaded tests run in the ``db`` fixture's rolled-back transaction; the
rotation race uses ``isolated_db`` and real threads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import uuid
from typing import Any

import pytest

from datalayer.auth import passwords, tokens, users
from datalayer.db import Database
from datalayer.errors import AuthenticationError, NotFound, TokenReuseError, ValidationError
from datalayer.models import RefreshToken, User

RT = RefreshToken


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "DEFAULT_PARAMS", passwords.ScryptParams(ln=4))


@pytest.fixture
def user(db: Database) -> User:
    return users.create_user("tokens@example.com", "a password")


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def row(token: str) -> Any:
    return RT.get(RT.token_hash == sha256(token))


def expire(token: str) -> None:
    RT.update(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).where(
        RT.token_hash == sha256(token)
    ).execute()


# -- issue ----------------------------------------------------------------------------------


def test_issue_returns_the_raw_token_once_and_stores_only_its_hash(user: User) -> None:
    before = dt.datetime.now(dt.UTC)
    issued = tokens.issue_token(user, ttl=dt.timedelta(hours=2), user_agent="curl/8",
                                ip="2001:DB8::1")
    assert len(issued.token) >= 43 and issued.token not in repr(issued)
    assert issued.token not in str(issued)
    stored = RT.get_by_id(issued.id)
    assert stored.token_hash == sha256(issued.token) != issued.token
    assert stored.users_id == user.id == issued.user_id
    assert stored.family_id == issued.family_id
    assert stored.user_agent == "curl/8" and stored.ip == "2001:db8::1"
    assert stored.revoked_at is None and stored.replaced_by is None
    assert before + dt.timedelta(hours=2) <= stored.expires_at <= issued.expires_at + dt.timedelta(
        seconds=1)
    assert issued.token not in repr(stored)


def test_every_issue_starts_a_new_family_with_a_new_token(user: User) -> None:
    a, b = tokens.issue_token(user.id), tokens.issue_token(str(user.id))
    assert a.token != b.token and a.family_id != b.family_id


def test_issue_for_a_missing_or_inactive_user(db: Database, user: User) -> None:
    with pytest.raises(NotFound):
        tokens.issue_token(uuid.uuid4())
    User.update(is_active=False).where(User.id == user.id).execute()
    with pytest.raises(AuthenticationError, match="deactivated"):
        tokens.issue_token(user)
    assert RT.select().count() == 0  # and the transaction goes on


def test_issue_on_its_own_checkout_refuses_a_missing_or_inactive_user(
    isolated_db: Database,
) -> None:
    # No connection held: the insert runs on a checkout of its own and its row count
    # (it returns no row) says whether the user was there and active.
    db = isolated_db
    user = users.create_user("own-checkout@example.com", "a password", db=db)
    with pytest.raises(NotFound):
        tokens.issue_token(uuid.uuid4(), db=db)
    users.deactivate_user(user, db=db)
    with pytest.raises(AuthenticationError, match="deactivated"):
        tokens.issue_token(user, db=db)
    with db.checkout():
        assert RT.select().count() == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ttl": dt.timedelta(0)}, "ttl"),
        ({"ttl": 3600}, "ttl"),
        ({"ip": "999.1.1.1"}, "ip"),
        ({"ip": "localhost"}, "ip"),
        ({"user_agent": 42}, "user_agent"),
    ],
)
def test_issue_validates_its_arguments(user: User, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        tokens.issue_token(user, **kwargs)
    assert info.value.field == field
    assert RT.select().count() == 0


def test_a_long_or_odd_user_agent_is_cut_to_fit(user: User) -> None:
    issued = tokens.issue_token(user, user_agent="Mozilla\x00/5.0 " + "x" * 1000)
    stored = RT.get_by_id(issued.id).user_agent
    assert len(stored) == 512 and "\x00" not in stored and stored.startswith("Mozilla/5.0 ")


# -- rotate -----------------------------------------------------------------------------------


def test_rotate_revokes_the_old_token_and_issues_the_next_in_the_family(user: User) -> None:
    first = tokens.issue_token(user, user_agent="app/1", ip="10.0.0.1")
    second = tokens.rotate_token(first.token, ttl=dt.timedelta(minutes=5))
    assert second.token != first.token
    assert second.family_id == first.family_id and second.user_id == user.id
    old, new = row(first.token), row(second.token)
    assert old.revoked_at is not None and old.replaced_by_id == new.id == second.id
    assert new.revoked_at is None and new.replaced_by is None
    assert new.user_agent == "app/1" and new.ip == "10.0.0.1"  # carried over
    assert new.expires_at <= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    third = tokens.rotate_token(second.token, user_agent="app/2", ip="10.0.0.2")
    assert row(third.token).user_agent == "app/2" and row(third.token).ip == "10.0.0.2"
    assert RT.select().where(RT.family_id == first.family_id).count() == 3


def test_reusing_a_rotated_token_revokes_the_whole_family(
    user: User, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = tokens.issue_token(user)
    second = tokens.rotate_token(first.token)
    other_family = tokens.issue_token(user)
    with pytest.raises(TokenReuseError, match="Sign in again") as info:
        tokens.rotate_token(first.token)
    assert first.token not in str(info.value) and sha256(first.token) not in str(info.value)
    family = list(RT.select().where(RT.family_id == first.family_id))
    assert len(family) == 2 and all(t.revoked_at is not None for t in family)
    assert row(other_family.token).revoked_at is None  # other families are untouched
    with pytest.raises(TokenReuseError):
        tokens.rotate_token(second.token)  # the successor is revoked too
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "reuse" in logged or "presented again" in logged
    for secret in (first.token, second.token, sha256(first.token), sha256(second.token)):
        assert secret not in logged


def test_reusing_a_revoked_token_also_counts_as_reuse(user: User) -> None:
    first = tokens.issue_token(user)
    assert tokens.revoke_token(first.token) is True
    with pytest.raises(TokenReuseError):
        tokens.rotate_token(first.token)


def test_unknown_and_expired_tokens_are_refused_without_revoking(user: User) -> None:
    with pytest.raises(AuthenticationError, match="unknown") as info:
        tokens.rotate_token("not-a-token-we-issued")
    assert not isinstance(info.value, TokenReuseError)
    issued = tokens.issue_token(user)
    expire(issued.token)
    with pytest.raises(AuthenticationError, match="expired") as info2:
        tokens.rotate_token(issued.token)
    assert not isinstance(info2.value, TokenReuseError)
    assert row(issued.token).revoked_at is None


def test_a_token_of_a_deactivated_user_does_not_rotate(user: User) -> None:
    issued = tokens.issue_token(user)
    User.update(is_active=False).where(User.id == user.id).execute()  # behind the package's back
    with pytest.raises(AuthenticationError, match="deactivated"):
        tokens.rotate_token(issued.token)
    assert row(issued.token).revoked_at is None


@pytest.mark.parametrize("bad", [None, 42, b"bytes", "x" * 10_000])
def test_rotate_and_revoke_refuse_what_is_no_token(db: Database, bad: Any) -> None:
    with pytest.raises(ValidationError):
        tokens.rotate_token(bad)
    with pytest.raises(ValidationError):
        tokens.revoke_token(bad)


def test_eight_threads_rotating_one_token_get_exactly_one_successor(
    isolated_db: Database,
) -> None:
    """The race the DESIGN names: exactly one caller wins, the others see reuse."""
    victim = users.create_user("race@example.com", password_hash=passwords.hash_password("pw"))
    for _ in range(5):  # a few rounds: a lucky schedule should not hide a bug
        issued = tokens.issue_token(victim)
        barrier = threading.Barrier(8)
        results: list[Any] = []
        lock = threading.Lock()

        def rotate(token: str = issued.token, barrier: threading.Barrier = barrier,
                   results: list[Any] = results, lock: threading.Lock = lock) -> None:
            barrier.wait()
            try:
                outcome: Any = tokens.rotate_token(token)
            except Exception as exc:
                outcome = exc
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=rotate) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 8
        winners = [r for r in results if isinstance(r, tokens.IssuedToken)]
        losers = [r for r in results if isinstance(r, TokenReuseError)]
        assert len(winners) == 1, results
        assert len(losers) == 7, results
        with isolated_db.checkout():
            family = list(RT.select().where(RT.family_id == issued.family_id))
            assert len(family) == 2  # the old token and one successor, never more
            old = next(t for t in family if t.id == issued.id)
            assert old.replaced_by_id == winners[0].id
            # The losers presented a revoked token: the family is revoked, successor included.
            assert all(t.revoked_at is not None for t in family)
    assert isolated_db.pool_stats().in_use == 0


# -- revoke / purge ------------------------------------------------------------------------------


def test_revoke_token_is_idempotent(user: User) -> None:
    issued = tokens.issue_token(user)
    assert tokens.revoke_token(issued.token) is True
    assert row(issued.token).revoked_at is not None
    assert tokens.revoke_token(issued.token) is False
    assert tokens.revoke_token("never-issued") is False


def test_revoke_all_for_user_counts_live_tokens_only(user: User) -> None:
    other = users.create_user("other@example.com", "a password")
    live = [tokens.issue_token(user) for _ in range(3)]
    tokens.revoke_token(live[0].token)
    expire(tokens.issue_token(user).token)
    untouched = tokens.issue_token(other)
    assert tokens.revoke_all_for_user(user) == 2
    assert tokens.revoke_all_for_user(user.id) == 0
    assert row(untouched.token).revoked_at is None


def test_purge_expired_deletes_in_batches(user: User) -> None:
    expired = [tokens.issue_token(user) for _ in range(25)]
    for issued in expired:
        expire(issued.token)
    kept = [tokens.issue_token(user) for _ in range(3)]
    tokens.revoke_token(kept[0].token)  # revoked but not expired: kept for reuse detection
    assert tokens.purge_expired(batch_size=10, max_batches=1) == 10
    assert tokens.purge_expired(batch_size=10) == 15
    assert tokens.purge_expired(batch_size=10) == 0
    assert {t.id for t in RT.select()} == {k.id for k in kept}


@pytest.mark.parametrize(
    ("batch_size", "max_batches"), [(0, None), (-1, None), (1.5, None), (True, None), (10, 0)]
)
def test_purge_expired_refuses_bad_sizes(db: Database, batch_size: Any, max_batches: Any) -> None:
    with pytest.raises(ValidationError):
        tokens.purge_expired(batch_size, max_batches=max_batches)


def test_operations_return_their_connection(isolated_db: Database) -> None:
    victim = users.create_user("conn@example.com", password_hash=passwords.hash_password("pw"))
    issued = tokens.issue_token(victim)
    tokens.rotate_token(issued.token)
    with pytest.raises(TokenReuseError):
        tokens.rotate_token(issued.token)
    tokens.revoke_all_for_user(victim)
    tokens.purge_expired()
    users.deactivate_user(victim)
    users.delete_user(victim)
    stats = isolated_db.pool_stats()
    assert stats.in_use == 0 and stats.open >= 1
    assert isolated_db.is_closed()
