"""A run waiting for another run's migration lock says so, who holds it, and every so often."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from datalayer.config import Settings
from datalayer.migrate.runtime import apply as runner
from tests.migrate_runtime_support import cli_command, cli_env, history, make_tables
from tests.pgserver import Server


def _hold_lock(pg: Server, dbname: str) -> psycopg2.extensions.connection:
    settings = pg.settings(dbname).replace(application_name="lock-holder-test")
    conn = psycopg2.connect(**settings.connect_kwargs())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (runner.lock_key(),))
    return conn


def _pid(conn: psycopg2.extensions.connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def test_waiting_lines_name_the_holder_and_repeat(
    pg: Server, empty_db: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "WAIT_NOTICE_EVERY", 0.3)
    mdir = tmp_path / "migrations"
    names = make_tables(mdir, 1)
    holder = _hold_lock(pg, empty_db.dbname)
    lines: list[tuple[float, str]] = []
    done: list[object] = []

    def run() -> None:
        try:
            done.append(runner.apply(empty_db, mdir, lock_wait=120,
                                     on_wait=lambda line: lines.append((time.monotonic(), line))))
        except Exception as exc:  # surfaced by the assertions below
            done.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert history(pg, empty_db.dbname) == [], "nothing applied while the lock is held"
    finally:
        holder.close()  # frees the lock
        thread.join(120)
    assert done and not isinstance(done[0], Exception), done
    assert [r.name for r in done[0]] == names  # type: ignore[attr-defined]
    first = lines[0][1]
    assert first.startswith("waiting for the migration lock of migratehistory on "), first
    assert "application lock-holder-test" in first and "held by pid " in first
    later = [line for _, line in lines[1:]]
    assert len(later) >= 2 and all(x.startswith("still waiting for the migration lock")
                                   for x in later), lines
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(lines)]
    assert all(gap >= 0.25 for gap in gaps), f"one line per interval, not a flood: {gaps}"


def test_the_cli_says_it_waits_and_for_whom(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    mdir = tmp_path / "migrations"
    make_tables(mdir, 1)
    holder = _hold_lock(pg, empty_db.dbname)
    pid = _pid(holder)
    proc = subprocess.Popen(cli_command("migrate", "apply", "--wait", "120"),
                            env=cli_env(empty_db, mdir), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # blocks until the first line: the wait has started
        assert line.startswith("waiting for the migration lock of migratehistory on "), line
        assert f"held by pid {pid}, application lock-holder-test, for " in line
    finally:
        holder.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "applied 001_create_t1" in out
    assert "still waiting" not in err  # freed within 10 s: no second line


def test_no_line_when_the_lock_is_free(empty_db: Settings, tmp_path: Path) -> None:
    mdir = tmp_path / "migrations"
    make_tables(mdir, 1)
    lines: list[str] = []
    runner.apply(empty_db, mdir, on_wait=lines.append)
    assert lines == []
