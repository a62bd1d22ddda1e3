"""Every operation through Debian's PgBouncer in transaction-pooling mode.

The test starts its own pgbouncer (free port, config in a temporary directory,
``auth_type = trust``, ``ignore_startup_parameters = extra_float_digits,options``
because the package sends its timeouts as libpq ``options``) in front of the
test server, and skips with the reason when pgbouncer is not installed
(``apt-get install pgbouncer``; .ci/run installs it).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import peewee
import psycopg2
import pytest

from datalayer import retry
from datalayer._pooler import pooler_detected, require_direct_connection
from datalayer.auth import tokens, users
from datalayer.config import Settings
from datalayer.db import Database, database
from datalayer.errors import AuthenticationError, MigrationError, NotFound, TokenReuseError
from datalayer.models import RefreshToken, User
from tests._faults_helpers import PgBouncer, pgbouncer_binary, run_threads
from tests.pgserver import Server

BINARY = pgbouncer_binary()
pytestmark = pytest.mark.skipif(
    BINARY is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
)
POOL_SIZE = 5


@pytest.fixture(scope="module")
def bouncer(pg: Server) -> Iterator[PgBouncer]:
    assert BINARY is not None
    directory = Path(tempfile.mkdtemp(prefix="datalayer-pgbouncer-"))
    host = pg.admin.host or "127.0.0.1"
    proc = PgBouncer(BINARY, directory / "pgb", host, pg.admin.port, pool_size=POOL_SIZE)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def via_bouncer(pg: Server, template_db: str, bouncer: PgBouncer) -> Iterator[tuple[Database, str]]:
    """The package's database, reached through pgbouncer, on a new database with the tables."""
    with pg.database("dlpgb", template=template_db) as name:
        settings = Settings.from_url(
            bouncer.url(name), application_name="datalayer-pgb", max_open_conns=25,
            max_idle_conns=5,
        )
        database.configure(settings)
        try:
            yield database, name
        finally:
            database.close_pool()


def test_pooler_is_detected_through_pgbouncer_only(
    via_bouncer: tuple[Database, str], pg: Server
):
    db, name = via_bouncer
    with db.checkout():
        assert pooler_detected(db) is True
        with pytest.raises(MigrationError, match="direct connection"):
            require_direct_connection(db)
    direct = pg.raw(name)
    try:
        assert pooler_detected(direct) is False
        require_direct_connection(direct)
    finally:
        direct.close()


def test_every_operation_works_through_pgbouncer(via_bouncer: tuple[Database, str]):
    db, _ = via_bouncer
    user = users.create_user("Bouncer@Example.test", "correct horse battery staple",
                             display_name="Bo")
    assert users.get_user(user.id).email == "bouncer@example.test"
    assert users.get_user_by_email("BOUNCER@example.test").id == user.id
    assert users.authenticate("bouncer@example.test", "correct horse battery staple").id == user.id
    with pytest.raises(AuthenticationError):
        users.authenticate("bouncer@example.test", "wrong")
    first = tokens.issue_token(user, user_agent="pytest", ip="::1")
    second = tokens.rotate_token(first.token)
    assert second.family_id == first.family_id
    with pytest.raises(TokenReuseError):
        tokens.rotate_token(first.token)  # reuse: the family is revoked
    with pytest.raises(TokenReuseError):
        tokens.rotate_token(second.token)
    third = tokens.issue_token(user)
    assert tokens.revoke_token(third.token) is True
    tokens.issue_token(user)
    assert tokens.revoke_all_for_user(user) == 1
    expired = tokens.issue_token(user, ttl=dt.timedelta(microseconds=1))
    assert expired.token
    assert tokens.purge_expired(batch_size=2) >= 1
    assert users.import_users(
        [{"email": f"imp{i}@example.test", "password_hash": user.password_hash} for i in range(50)]
    ) == 50
    assert users.deactivate_user(user) == 0
    users.delete_user(user)
    with pytest.raises(NotFound):
        users.get_user(user.id)
    # The models and transactions, savepoints included.
    with db.checkout(), db.atomic():
        u = User.create(email="model@example.test", password_hash=user.password_hash)
        with db.atomic() as sp:
            User.update(display_name="rolled back").where(User.id == u.id).execute()
            sp.rollback()
        u.display_name = "saved"
        u.save()
    with db.checkout():
        assert User.get(User.email == "model@example.test").display_name == "saved"
        assert User.select().count() == 51
        assert RefreshToken.select().count() == 0
    assert retry.run_transaction(lambda: User.select().count()) == 51


def test_many_threads_share_a_small_server_pool(via_bouncer: tuple[Database, str], pg: Server):
    db, name = via_bouncer
    threads, units = 12, 15
    pw_hash = users.create_user("seed@example.test", "password-123").password_hash
    peak: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        conn = pg.raw()
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
                    )
                    peak.append(int(cur.fetchone()[0]))
                    stop.wait(0.02)
        finally:
            conn.close()

    sampler = threading.Thread(target=sample)
    sampler.start()

    def work(index: int) -> None:
        for j in range(units):
            def unit(index: int = index, j: int = j) -> None:
                u = User.create(email=f"t{index}-{j}@example.test", password_hash=pw_hash)
                RefreshToken.create(
                    user=u, token_hash=f"{index:032x}{j:032x}", family_id=u.id,
                    expires_at=dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
                )
            retry.run_transaction(unit)

    try:
        assert run_threads(threads, work) == []
    finally:
        stop.set()
        sampler.join()
    with db.checkout():
        assert User.select().where(User.email.startswith("t")).count() == threads * units
        assert RefreshToken.select().count() == threads * units
    # Up to 25 client connections, but the server never saw more than pgbouncer's pool.
    assert max(peak) <= POOL_SIZE, max(peak)
    stats = db.pool_stats()
    assert stats.in_use == 0
    print(f"pgbouncer: {threads} threads x {units} units, 0 failed; {threads * units} users and "
          f"tokens checked; client connections opened {stats.opened_total}, server sessions "
          f"peak {max(peak)} (pgbouncer pool {POOL_SIZE}) over {len(peak)} samples")


def test_timeouts_behind_pgbouncer_come_from_the_server_side(
    via_bouncer: tuple[Database, str], pg: Server
):
    db, _ = via_bouncer
    # pgbouncer drops the libpq `options` the package sends: the session has the defaults.
    with db.checkout():
        value = db.execute_sql("SHOW idle_in_transaction_session_timeout").fetchone()[0]
    assert value == "0"
    # The documented way: set them on the database (or role) on the server; a new
    # database here, so that pgbouncer has no server session to it from before.
    with pg.database("dlpgbto") as other:
        admin = pg.raw()
        try:
            with admin.cursor() as cur:
                cur.execute(f"ALTER DATABASE \"{other}\" SET statement_timeout = '500ms'")
        finally:
            admin.close()
        database.configure(db.settings.replace(dbname=other))
        with db.checkout(), pytest.raises(peewee.OperationalError) as info:
            db.execute_sql("SELECT pg_sleep(3)")
        assert isinstance(info.value.orig, psycopg2.errors.QueryCanceled)
        database.close_pool()


def _cli(args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATALAYER_"))}
    env["DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-c", "from datalayer.cli import run; run()", *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=120,
    )


def test_migrate_apply_through_pgbouncer_refuses_with_a_clear_message(
    pg: Server, bouncer: PgBouncer, tmp_path: Path
):
    from tests.migrate_runtime_support import make_tables

    mdir = tmp_path / "migrations"
    names = make_tables(mdir, 2)
    with pg.database("dlpgbmig") as name:
        pooled = _cli(["migrate", "--dir", str(mdir), "apply"], bouncer.url(name), tmp_path)
        assert pooled.returncode == 1, pooled.stdout + pooled.stderr
        assert "needs a direct connection" in pooled.stderr
        assert "Traceback" not in pooled.stderr
        direct_url = pg.settings(name).url(masked=False)
        direct = _cli(["migrate", "--dir", str(mdir), "apply"], direct_url, tmp_path)
        assert direct.returncode == 0, direct.stdout + direct.stderr
        # Reading the status through the pooler is fine: up to date, exit 0.
        status = _cli(["migrate", "--dir", str(mdir), "status"], bouncer.url(name), tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        assert all(n in status.stdout for n in names)
