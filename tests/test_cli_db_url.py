"""`datalayer db url --show-password`: a URL that upstream `pw_migrate` can use.

The documented `pw_migrate migrate --database "$DATABASE_URL"` fails where
DATABASE_URL is unset (DB_* settings, the embedded default) and `db url` masks the
password; `--show-password` prints it for a command substitution, never to a terminal.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from datalayer.config import Settings
from tests.migrate_runtime_support import cli_command, history, write_table_migration
from tests.pgserver import Server


@pytest.fixture
def with_password(pg: Server, empty_db: Settings) -> Iterator[Settings]:
    """``empty_db`` owned by a role of its own with a password that needs percent-encoding."""
    role = f"dl_pw_{uuid.uuid4().hex[:8]}"
    password = "s3cr/t?#@:" + uuid.uuid4().hex[:6]
    admin = pg.raw()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (password,))
        cur.execute(f'ALTER DATABASE "{empty_db.dbname}" OWNER TO {role}')
    try:
        yield empty_db.replace(user=role, password=password)
    finally:
        own = pg.raw(empty_db.dbname)
        own.autocommit = True
        with own.cursor() as cur:
            cur.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
            cur.execute(f'ALTER DATABASE "{empty_db.dbname}" OWNER TO CURRENT_USER')
        own.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP ROLE {role}")
        admin.close()


def _db_env(settings: Settings) -> dict[str, str]:
    """The database named by DB_* variables (no DATABASE_URL), as in many deployments."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DB_", "DATABASE_URL", "DATALAYER_"))}
    assert settings.host is not None
    env.update(DB_HOST=settings.host, DB_PORT=str(settings.port), DB_USER=settings.user,
               DB_PASSWORD=settings.password or "", DB_NAME=settings.dbname)
    return env


def test_show_password_feeds_pw_migrate(
    pg: Server, with_password: Settings, tmp_path: Path
) -> None:
    empty_db = with_password
    env = _db_env(empty_db)
    masked = subprocess.run(cli_command("db", "url"), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert masked.returncode == 0 and ":***@" in masked.stdout, masked.stdout + masked.stderr
    shown = subprocess.run(cli_command("db", "url", "--show-password"), env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    url = shown.stdout.strip()
    assert url == empty_db.url(masked=False)
    mdir = tmp_path / "migrations"
    write_table_migration(mdir, "001_a", "a")
    pw_migrate = shutil.which("pw_migrate", path=str(Path(sys.executable).parent)) or "pw_migrate"
    done = subprocess.run([pw_migrate, "migrate", "--database", url, "--directory", str(mdir)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [row[0] for row in history(pg, empty_db.dbname)] == ["001_a"]


def test_show_password_is_refused_on_a_terminal(with_password: Settings, tmp_path: Path) -> None:
    empty_db = with_password
    env = _db_env(empty_db)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(cli_command("db", "url", "--show-password"), env=env,
                              cwd=tmp_path, stdout=follower, stderr=subprocess.PIPE,
                              text=True, timeout=60)
        os.close(follower)
        follower = -1
        printed = b""
        try:
            while chunk := os.read(leader, 4096):
                printed += chunk
        except OSError:  # the terminal's other side is closed: all read
            pass
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 1, proc.stderr
    assert "--show-password does not print to a terminal" in proc.stderr
    assert empty_db.password
    assert empty_db.password not in printed.decode(errors="replace") + proc.stderr
