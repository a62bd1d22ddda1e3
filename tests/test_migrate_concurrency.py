"""Many `datalayer migrate apply` processes at once, and a process killed mid-migration."""

from __future__ import annotations

import os
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

PROCESSES = 8


def _count_rows(pg: Server, dbname: str, sql: str) -> list[tuple[object, ...]]:
    conn = pg.raw(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def test_eight_concurrent_applies_apply_each_migration_exactly_once(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    mdir = tmp_path / "migrations"
    # 001 creates a ledger; every later migration appends one row to it, so a
    # migration applied twice shows as two rows (DDL alone could hide it behind IF NOT EXISTS).
    write_migration(mdir, "001_ledger", migrate="""
        migrator.sql("CREATE TABLE ledger (name text NOT NULL, pid int NOT NULL)")
        migrator.sql("SELECT pg_sleep(1)")  # hold the lock while the others arrive
    """)
    names = ["001_ledger"]
    for i in range(2, 7):
        name = f"{i:03d}_step{i}"
        write_table_migration(
            mdir, name, f"step{i}",
            extra=f'migrator.sql("INSERT INTO ledger VALUES (\'{name}\', pg_backend_pid())")',
        )
        names.append(name)
    write_sum(mdir)
    env = cli_env(empty_db, mdir)
    procs = [
        subprocess.Popen(
            cli_command("migrate", "apply"), env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(PROCESSES)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0] * PROCESSES, outputs
    applied_lines = [
        line for out, _ in outputs for line in out.splitlines() if line.startswith("applied ")
    ]
    assert sorted(line.split()[1] for line in applied_lines) == names, outputs
    rows = history(pg, empty_db.dbname)
    assert [r[0] for r in rows] == names, "one history row per migration, in order"
    ledger = _count_rows(pg, empty_db.dbname, "SELECT name, count(*) FROM ledger GROUP BY name")
    assert sorted(ledger) == [(n, 1) for n in names[1:]]
    assert {f"step{i}" for i in range(2, 7)} <= tables(pg, empty_db.dbname)


def _wait_for_query(pg: Server, dbname: str, needle: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _count_rows(
            pg, "postgres",
            f"SELECT pid FROM pg_stat_activity WHERE datname = '{dbname}' "
            f"AND query LIKE '%{needle}%' AND pid <> pg_backend_pid() AND state = 'active'",
        )
        if rows:
            return int(rows[0][0])  # type: ignore[call-overload]
        time.sleep(0.05)
    raise AssertionError(f"no backend ran {needle!r} within {timeout} s")


def test_process_killed_mid_migration_leaves_nothing_partial(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    mdir = tmp_path / "migrations"
    marker = tmp_path / "sleep-marker"
    marker.write_text("")
    write_table_migration(mdir, "001_first", "first")
    # 002 creates a table, writes into 001's, then sleeps (while the marker exists)
    # inside its transaction: the process is killed there.
    write_migration(mdir, "002_slow", header="import os", migrate=f"""
        migrator.sql("CREATE TABLE half_done (id int)")
        migrator.sql("INSERT INTO first (note) VALUES ('from 002')")
        if os.path.exists({str(marker)!r}):
            migrator.sql("SELECT pg_sleep(60) /* killed here */")
    """)
    write_table_migration(mdir, "003_last", "last")
    write_sum(mdir)
    env = cli_env(empty_db, mdir)
    proc = subprocess.Popen(
        cli_command("migrate", "apply"), env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for_query(pg, empty_db.dbname, "killed here")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    marker.unlink()

    # Nothing of 002 is visible: its transaction never committed.
    assert [r[0] for r in history(pg, empty_db.dbname)] == ["001_first"]
    assert "half_done" not in tables(pg, empty_db.dbname)
    assert _count_rows(pg, empty_db.dbname, "SELECT count(*) FROM first") == [(0,)]

    # The orphaned backend may still hold the migration lock and 002's table locks for
    # a moment; the next run waits for it rather than failing, and completes.
    start = time.monotonic()
    done = subprocess.run(
        cli_command("migrate", "apply"), env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    waited = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert "applied 002_slow" in done.stdout and "applied 003_last" in done.stdout
    assert [r[0] for r in history(pg, empty_db.dbname)] == ["001_first", "002_slow", "003_last"]
    assert _count_rows(pg, empty_db.dbname, "SELECT note FROM first") == [("from 002",)]
    # client_connection_check_interval lets the server drop the orphan within seconds,
    # not after the 60 s sleep.
    assert waited < 30, f"the next apply waited {waited:.1f} s for the orphaned backend"
