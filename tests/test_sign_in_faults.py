"""A sign-in while the server restarts: it rides the restart out, or says to try again.

``authenticate`` only reads, then records the sign-in (``last_login_at``, and an
upgraded hash of the same password): writes that are safe to lose or to make
twice.  Before, a lost reply to that write raised ``CommitUnknown`` with advice
("check before running it again") that fits no sign-in.  Faults are made with
:class:`tests._proxy.LossyProxy` (a lost reply) and with an embedded server of the
test's own (a real restart); the shared server is never touched.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from datalayer import _outcome, retry
from datalayer.auth import passwords, users
from datalayer.db import Database, database
from datalayer.errors import CommitUnknown, DatabaseUnavailable
from datalayer.models import User
from tests._faults_helpers import OwnServer, own_server
from tests._proxy import LossyProxy

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
RELEASE_0_1_HASH = (
    "scrypt$ln=14,r=8,p=1$aiF3lFtXsF7SMiKZQu9QGg$ijHGUnXQUt7l2ErKHBE_Q9Knw7ll_P0XRojUb1gM59o"
)


@pytest.fixture
def proxied(isolated_db: Database) -> Iterator[tuple[Database, LossyProxy]]:
    settings = isolated_db.settings
    assert settings.host is not None
    with LossyProxy(settings.host, settings.port) as proxy:
        db = Database(settings.replace(host=proxy.host, port=proxy.port))
        try:
            yield db, proxy
        finally:
            db.close_pool()


@pytest.fixture
def server_gone_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the package sees in a restart: the old server process cannot be waited for."""
    monkeypatch.setattr(_outcome, "SETTLE_TIMEOUT", 0.0)
    monkeypatch.setattr(_outcome, "_ACTIVITY", _outcome.Statement.text(
        "SELECT 1 WHERE %s IS NOT NULL", "pid"))


def test_a_lost_reply_to_the_sign_in_record_is_ridden_out(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], server_gone_away: None
) -> None:
    db, proxy = proxied
    user = users.create_user("restart@example.com", password_hash=RELEASE_0_1_HASH,
                             db=isolated_db)
    proxy.lose_reply_to(b'UPDATE "users"')
    signed_in = users.authenticate("restart@example.com", PASSWORD, db=db)  # CommitUnknown before
    assert proxy.answered == [True]  # the reply was lost, after the server had run it
    with isolated_db.checkout():
        row = User.select().where(User.id == user.id).get()
    assert row.last_login_at is not None and row.last_login_at == signed_in.last_login_at
    assert row.password_hash == signed_in.password_hash  # the upgrade, written once more
    assert row.password_hash.startswith("$argon2id$")
    assert passwords.verify_password(PASSWORD, row.password_hash)


def test_a_server_that_stays_away_means_try_the_sign_in_again(
    isolated_db: Database, proxied: tuple[Database, LossyProxy], server_gone_away: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, proxy = proxied
    users.create_user("away@example.com", PASSWORD, db=isolated_db)
    monkeypatch.setattr(users, "SIGN_IN_RETRY", retry.RetryPolicy(deadline=1.0))
    take = proxy._take

    def take_and_stop_listening(data: bytes) -> bool:
        lose = take(data)
        if lose:  # from the lost write on, no new connection gets through
            proxy._listener.shutdown(socket.SHUT_RDWR)  # (close() alone leaves accept() on)
            proxy._listener.close()
        return lose

    monkeypatch.setattr(proxy, "_take", take_and_stop_listening)
    proxy.lose_reply_to(b'UPDATE "users"')
    with pytest.raises(DatabaseUnavailable) as info:
        users.authenticate("away@example.com", PASSWORD, db=db)
    assert proxy.answered == [True]
    assert not isinstance(info.value, CommitUnknown)
    message = str(info.value)
    assert message.endswith("try the sign-in again") and "\n" not in message
    assert "check before" not in message and PASSWORD not in message
    assert "away@example.com" not in message


@pytest.fixture(scope="module")
def srv() -> Iterator[OwnServer]:
    with own_server("datalayer-signin-") as server:
        yield server


def test_sign_ins_across_real_restarts_succeed(
    srv: OwnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four threads sign in without a pause while the server restarts three times."""
    monkeypatch.setattr(passwords, "DEFAULT_PARAMS", passwords.ScryptParams(ln=4))
    db = database.configure(srv.settings(connect_timeout=2))
    try:
        for i in range(4):
            users.create_user(f"r{i}@restart.test", PASSWORD)
        stop = threading.Event()
        done: list[int] = [0] * 4
        failures: list[BaseException] = []

        def sign_in(index: int) -> None:
            while not stop.is_set():
                try:
                    users.authenticate(f"r{index}@restart.test", PASSWORD)
                    done[index] += 1
                except Exception as exc:  # counted: the test requires none
                    failures.append(exc)

        threads = [threading.Thread(target=sign_in, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(3):
                time.sleep(0.5)
                srv.restart()
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        assert failures == [], [f"{type(f).__name__}: {f}" for f in failures][:5]
        assert min(done) > 0, done
    finally:
        db.close_pool()
        srv.start()


