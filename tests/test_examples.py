"""The examples run as a user would run them: subprocesses configured by the environment."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from datalayer import embedded
from datalayer.config import Settings
from tests.conftest import ENV_PREFIXES
from tests.pgserver import Server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Return the environment without any database configuration, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    env.update(extra)
    env["DATALAYER_EMBEDDED_DIR"] = extra.get("DATALAYER_EMBEDDED_DIR", str(tmp_path / "pg"))
    return env


def query(conn: psycopg2.extensions.connection, sql: str) -> object:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


@pytest.fixture
def tables_db(pg: Server, template_db: str) -> Iterator[tuple[Settings, str]]:
    """A database with the tables; yields its settings and its name."""
    with pg.database("dlexample", template=template_db) as name:
        yield pg.settings(name), name


# -- worker ------------------------------------------------------------------------------


def seed_tokens(conn: psycopg2.extensions.connection, expired: int, live: int) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO users (email, password_hash) VALUES ('worker@example.com', 'x') "
            "RETURNING users_id"
        )
        user_id = cur.fetchone()[0]
        for i in range(expired + live):
            when = "now() - interval '1 hour'" if i < expired else "now() + interval '1 day'"
            cur.execute(
                "INSERT INTO refresh_tokens (users_id, token_hash, family_id, expires_at) "
                f"VALUES (%s, md5(%s) || md5(%s), gen_random_uuid(), {when})",
                (user_id, f"a{i}", f"b{i}"),
            )


def test_worker_purges_expired_tokens_and_stops_cleanly_on_sigterm(
    pg: Server, tables_db: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, name = tables_db
    conn = pg.raw(name)
    try:
        seed_tokens(conn, expired=23, live=4)
        env = example_env(tmp_path, DATABASE_URL=settings.url(masked=False),
                          WORKER_INTERVAL="0.2", WORKER_BATCH_SIZE="5", LOG_LEVEL="DEBUG")
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "worker.py")], env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while query(conn, "SELECT count(*) FROM refresh_tokens WHERE expires_at < now()"):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the worker did not purge in time"
                time.sleep(0.1)
            time.sleep(0.5)  # a few idle passes
            assert proc.poll() is None
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
            stopped_in = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert stopped_in < 5, f"took {stopped_in:.1f}s to stop after SIGTERM"
        assert "worker started" in err and "SIGTERM" in err and "worker stopped" in err
        assert "purged 23 expired token(s)" in err
        assert query(conn, "SELECT count(*) FROM refresh_tokens") == 4  # the live ones stay
        # Nothing left connected once it exited.
        assert query(conn, f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' "
                           "AND pid <> pg_backend_pid()") == 0
    finally:
        conn.close()


def test_worker_once_and_bad_configuration(
    tables_db: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, _ = tables_db
    env = example_env(tmp_path, DATABASE_URL=settings.url(masked=False))
    once = subprocess.run([sys.executable, str(EXAMPLES / "worker.py"), "--once"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    assert "worker stopped" in once.stderr
    bad = subprocess.run(
        [sys.executable, str(EXAMPLES / "worker.py")],
        env={**env, "WORKER_INTERVAL": "soon", "WORKER_BATCH_SIZE": "-1"},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 1
    assert "WORKER_INTERVAL" in bad.stderr and "WORKER_BATCH_SIZE" in bad.stderr


def test_worker_once_on_an_empty_database_says_to_migrate(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    env = example_env(tmp_path, DATABASE_URL=empty_db.url(masked=False))
    once = subprocess.run([sys.executable, str(EXAMPLES / "worker.py"), "--once"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert once.returncode == 1
    assert "in one pass (--once)" in once.stderr and "every 60s" not in once.stderr
    assert "run `datalayer migrate apply`" in once.stderr
    assert "retrying" not in once.stderr and "Traceback" not in once.stderr
    errors = [line for line in once.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, once.stderr


# -- walkthrough ---------------------------------------------------------------------------


def run_walkthrough(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / "walkthrough.py")], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def assert_walked_through(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for expected in ("create a user", "authenticate", "TokenReuseError", "revoke_all_for_user",
                     "purge_expired: deleted 3", "imported 1000 users", "DuplicateError",
                     "deactivate_user", "rolled back"):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert "correct horse" not in out and "scrypt$" not in out and "argon2id$" not in out


def test_walkthrough_leaves_the_database_as_it_was(
    pg: Server, tables_db: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, name = tables_db
    done = run_walkthrough(example_env(tmp_path, DATABASE_URL=settings.url(masked=False)),
                           tmp_path)
    assert_walked_through(done)
    conn = pg.raw(name)
    try:
        assert query(conn, "SELECT count(*) FROM users") == 0
        assert query(conn, "SELECT count(*) FROM refresh_tokens") == 0
    finally:
        conn.close()


def test_walkthrough_on_an_empty_database_creates_nothing(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    done = run_walkthrough(example_env(tmp_path, DATABASE_URL=empty_db.url(masked=False)),
                           tmp_path)
    assert_walked_through(done)
    conn = pg.raw(empty_db.dbname)
    try:
        assert query(conn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    finally:
        conn.close()


@pytest.mark.slow
def test_examples_run_on_the_embedded_default(tmp_path: Path) -> None:
    # Not under tmp_path: as root the server runs as another user, and a concurrent
    # pytest session chmods /tmp/pytest-of-<user> to 0700 (see tests/test_embedded.py).
    base = Path(tempfile.mkdtemp(prefix="datalayer-examples-"))
    datadir = base / "pg"
    env = example_env(tmp_path, DATALAYER_EMBEDDED_DIR=str(datadir))
    try:
        assert_walked_through(run_walkthrough(env, tmp_path))
        once = subprocess.run([sys.executable, str(EXAMPLES / "worker.py"), "--once"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        # No migrations applied on this fresh server: the pass fails, says why, exit 1.
        assert once.returncode == 1
        assert "datalayer migrate apply" in once.stderr and "worker stopped" in once.stderr
    finally:
        embedded.remove_server(datadir)
        shutil.rmtree(base, ignore_errors=True)
