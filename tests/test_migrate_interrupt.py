"""Ctrl-C during `migrate apply` / `rollback` cancels the running statement and says what stays.

Before, SIGINT waited for the statement to end (psycopg2 waits inside libpq, where
Python's handler cannot run), then printed only `Aborted!`.  Each test sends SIGINT
while a migration sleeps for 600 s: the command must end long before that (a 60 s
limit, far from any timing noise), with exit 130 and a line saying what was recorded.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from datalayer.config import Settings
from datalayer.migrate.runtime.checksum import write_sum
from tests.migrate_runtime_support import (
    cli_command,
    cli_env,
    history,
    tables,
    write_migration,
    write_table_migration,
)
from tests.pgserver import Server

pytestmark = pytest.mark.slow

LIMIT = 60.0  # seconds: the sleep is 600 s, an uncancelled statement ends far later


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


def _sleeping(pg: Server, dbname: str) -> bool:
    conn = pg.raw(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE %s AND pid <> pg_backend_pid() AND datname = current_database()",
                ("%pg_sleep(600)%",),
            )
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


def _interrupt(
    settings: Settings, directory: Path, ready: object, *args: str
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        cli_command(*args), env=cli_env(settings, directory), cwd=directory.parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(ready, "the migration start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("atomic", [True, False])
def test_ctrl_c_cancels_the_running_statement(
    pg: Server, empty_db: Settings, tmp_path: Path, atomic: bool
) -> None:
    mdir = tmp_path / "migrations"
    write_table_migration(mdir, "001_a", "a")
    write_migration(
        mdir, "002_slow",
        migrate='migrator.sql("CREATE TABLE b (id int)")\nmigrator.sql("SELECT pg_sleep(600)")',
        header="" if atomic else "atomic = False",
    )
    write_sum(mdir)
    result = _interrupt(
        empty_db, mdir, lambda: _sleeping(pg, empty_db.dbname), "migrate", "apply"
    )
    assert result.returncode == 130, result.stderr
    assert "Aborted!" not in result.stderr and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted (Ctrl-C): migration "), line
    assert "002_slow.py" in line and "canceling statement due to user request" in line
    assert "nothing of it was recorded as applied" in line
    assert "the 1 migration(s) before it in this run stay applied" in line
    assert [row[0] for row in history(pg, empty_db.dbname)] == ["001_a"]
    assert not _sleeping(pg, empty_db.dbname), "the statement was cancelled, not left running"
    if atomic:
        assert "none of it took effect" in line
        assert "b" not in tables(pg, empty_db.dbname)
    else:
        assert "`atomic = False`, so statements before the failure stay in effect" in line
        assert "b" in tables(pg, empty_db.dbname)


def test_ctrl_c_in_python_code_of_a_migration(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    mdir = tmp_path / "migrations"
    marker = tmp_path / "started"
    write_migration(mdir, "001_py", migrate=f"""
        import time
        migrator.sql("CREATE TABLE c (id int)")
        migrator.run(lambda: (open({str(marker)!r}, "w").close(), time.sleep(600)))
    """)
    write_sum(mdir)
    result = _interrupt(empty_db, mdir, marker.exists, "migrate", "apply")
    assert result.returncode == 130, result.stderr
    assert "Aborted!" not in result.stderr and "Traceback" not in result.stderr
    stopped = "interrupted (Ctrl-C): stopped; a migration that was being applied was rolled back"
    assert stopped in result.stderr, result.stderr
    assert history(pg, empty_db.dbname) == []
    assert "c" not in tables(pg, empty_db.dbname)


def test_ctrl_c_during_a_rollback(pg: Server, empty_db: Settings, tmp_path: Path) -> None:
    mdir = tmp_path / "migrations"
    write_migration(
        mdir, "001_a", migrate='migrator.sql("CREATE TABLE a (id int)")',
        rollback='migrator.sql("SELECT pg_sleep(600)")\nmigrator.sql("DROP TABLE a")',
    )
    write_sum(mdir)
    subprocess.run(cli_command("migrate", "apply"), env=cli_env(empty_db, mdir), check=True,
                   cwd=tmp_path, capture_output=True)
    result = _interrupt(
        empty_db, mdir, lambda: _sleeping(pg, empty_db.dbname), "migrate", "rollback"
    )
    assert result.returncode == 130, result.stderr
    assert "nothing of it was recorded as rolled back" in result.stderr, result.stderr
    assert [row[0] for row in history(pg, empty_db.dbname)] == ["001_a"]
    assert "a" in tables(pg, empty_db.dbname)
