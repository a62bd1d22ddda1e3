"""Background data migrations: ``backfill(..., background=True)`` and ``migrate jobs``.

Each job walks its table by primary key in batches; the cursor moves in each
batch's own transaction, so a run killed at any point resumes after the last
committed batch and never applies one twice.  The rows count how often they
were updated (``n = n + 1``): every row must end at exactly 1.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from datalayer.cli import main
from datalayer.config import Settings
from datalayer.db import Database
from datalayer.errors import MigrationError
from datalayer.migrate.operations.background import JobSpec, register
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime import jobs
from datalayer.migrate.runtime.checksum import write_sum
from tests.migrate_runtime_support import cli_command, cli_env, write_migration
from tests.pgserver import Server

ITEMS = '''\
@migrator.create_model
class Item(pw.Model):
    id = pw.AutoField()
    n = pw.IntegerField(default=0)
    note = pw.CharField(max_length=20, null=True)

    class Meta:
        table_name = "items"
'''


def _project(tmp_path: Path, job: str, *later: tuple[str, str]) -> Path:
    """001 creates items; 002 declares ``job``; ``later`` are (name, body) migrations."""
    mdir = tmp_path / "migrations"
    write_migration(mdir, "001_items", ITEMS, 'migrator.remove_model("items")',
                    header="import peewee as pw")
    write_migration(mdir, "002_fill", job)
    for name, body in later:
        write_migration(mdir, name, body)
    write_sum(mdir)
    return mdir


def _rows(pg: Server, dbname: str, count: int) -> None:
    conn = pg.raw(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO items (n) SELECT 0 FROM generate_series(1, %s)", (count,))
    finally:
        conn.close()


def _query(pg: Server, dbname: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    conn = pg.raw(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def _counts(pg: Server, dbname: str) -> dict[int, int]:
    """How many rows were updated how many times: {n: rows}."""
    return dict(_query(pg, dbname, "SELECT n, count(*) FROM items GROUP BY n"))


def _job_row(pg: Server, dbname: str) -> tuple[Any, ...]:
    if _query(pg, dbname, "SELECT to_regclass('migratehistory_jobs')") == [(None,)]:
        return ()
    rows = _query(pg, dbname, "SELECT state, rows_done, rows_total, cursor, batches "
                  "FROM migratehistory_jobs ORDER BY id")
    return rows[0] if rows else ()


class Recorded:
    """A reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.progressed: list[int] = []

    def progress(self, job: jobs.Job, rate: float | None) -> None:
        self.progressed.append(job.rows_done)

    def note(self, line: str) -> None:
        self.lines.append(line)

    def finished(self, job: jobs.Job) -> None:
        self.lines.append(jobs.progress_line(job))


FILL = 'migrator.backfill("items", update={"n": "n + 1", "note": "\'x\' || id"}, ' \
    'background=True, batch_size=40)'


def test_apply_runs_the_job_before_the_contract_that_needs_it(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    # 003 makes note NOT NULL: it fails unless 002's job filled every row first.
    mdir = _project(tmp_path, FILL, ("003_note_required", 'migrator.add_not_null("items", '
                                                           '"note")'))
    runner.apply(empty_db, mdir, to="001_items")
    _rows(pg, empty_db.dbname, 250)
    seen = Recorded()
    applied = runner.apply(empty_db, mdir, jobs=jobs.JobOptions(reporter=seen))
    assert [a.name for a in applied] == ["002_fill", "003_note_required"]
    assert _counts(pg, empty_db.dbname) == {1: 250}
    assert _job_row(pg, empty_db.dbname)[:3] == ("done", 250, 250)
    assert seen.lines[-1].startswith("job 002_fill:items_n_note: done, 250 rows walked, "
                                     "250 updated, in ")
    # The jobs table is the history's, not the schema's: drift and check do not see it.
    db = Database(empty_db)
    try:
        with db.checkout():
            assert jobs.pending_jobs(db, ["002_fill"]) == []
            assert [j.label for j in jobs.list_jobs(db)] == ["002_fill:items_n_note"]
    finally:
        db.close_pool()


def test_throttle_sleeps_between_batches_and_lag_pauses(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    mdir = _project(tmp_path, FILL)
    runner.apply(empty_db, mdir, to="001_items")
    _rows(pg, empty_db.dbname, 100)
    slept: list[float] = []
    lags = iter([9.0, 9.0])  # a replica 9 s behind twice, then caught up
    seen = Recorded()
    options = jobs.JobOptions(
        throttle=0.25, max_lag=1.0, poll=0.5, sleep=slept.append, reporter=seen,
        lag=lambda: next(lags, 0.0),
    )
    runner.apply(empty_db, mdir, jobs=options)
    assert _counts(pg, empty_db.dbname) == {1: 100}
    # Two polls while paused, then 40 + 40 + 20 rows with the throttle after each batch.
    assert slept == [0.5, 0.5, 0.25, 0.25, 0.25]
    assert seen.lines[0] == "job 002_fill:items_n_note: paused, a replica replays 9.0 s behind " \
        "(limit 1 s)"


def test_a_killed_run_resumes_and_applies_every_batch_once(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    total = 600
    mdir = _project(tmp_path, FILL.replace("batch_size=40", "batch_size=20"))
    runner.apply(empty_db, mdir, to="001_items")
    _rows(pg, empty_db.dbname, total)
    env = cli_env(empty_db, mdir)
    for command, at_least in ((("migrate", "apply", "--throttle", "0.05"), 100),
                              (("migrate", "jobs", "--run", "--throttle", "0.05"), 300)):
        proc = subprocess.Popen(cli_command(*command), env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (_job_row(pg, empty_db.dbname) or (None, 0))[1] >= at_least:
                assert proc.poll() is None, "the job ended before it could be killed"
                assert time.monotonic() < deadline, "the job never got going"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        state, done, _, cursor, _ = _job_row(pg, empty_db.dbname)
        assert 0 < done < total and state == "running"
        # Exactly the rows up to the cursor were updated, each once: nothing half-done.
        assert _counts(pg, empty_db.dbname) == {1: done, 0: total - done}
        assert _query(pg, empty_db.dbname, "SELECT max(id) FROM items WHERE n = 1") == [
            (int(cursor),)
        ]
    result = subprocess.run(cli_command("migrate", "jobs", "--run"), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert _counts(pg, empty_db.dbname) == {1: total}
    assert _job_row(pg, empty_db.dbname)[:3] == ("done", total, total)
    assert "job 002_fill:items_n_note: done, 600 rows walked" in result.stderr


def test_waits_for_the_runner_that_holds_the_job(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    mdir = _project(tmp_path, FILL)
    runner.apply(empty_db, mdir, to="001_items")
    _rows(pg, empty_db.dbname, 50)
    db = Database(empty_db)
    other = pg.raw(empty_db.dbname)
    try:
        with db.checkout():
            register(db, "002_fill", JobSpec("fill", '"items"', "id", "n = n + 1",
                                             None, 40))
            job = jobs.list_jobs(db)[0]
            key = jobs._lock_key("migratehistory_jobs", job.id)
            with other.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(%s), pg_backend_pid()", (key,))
                pid = cur.fetchone()[1]

            def release(seconds: float) -> None:  # the other runner dies while we wait
                other.close()

            seen = Recorded()
            done = jobs.wait_for_jobs(
                db, ["002_fill"], jobs.JobOptions(reporter=seen, sleep=release, poll=0.01)
            )
        assert [j.state for j in done] == ["done"]
        assert re.fullmatch(
            rf"job 002_fill:fill: run by pid {pid}, application \S+; waiting for it \(0/\? rows\)",
            seen.lines[0],
        )
        assert _counts(pg, empty_db.dbname) == {1: 50}
    finally:
        other.close()
        db.close_pool()


def _job(**kw: Any) -> jobs.Job:
    base: dict[str, Any] = {
        "id": 1, "migration": "002_fill", "name": "items_n", "table": '"items"', "key": "id",
        "set_sql": "n = n + 1", "where_sql": None, "batch_size": 1000, "state": "running",
        "cursor": None, "rows_total": 1_000_000, "rows_done": 0, "rows_updated": 0,
        "batches": 0, "seconds": 0.0, "error": None, "started_at": None, "finished_at": None,
    }
    base.update(kw)
    return jobs.Job(**base)


def test_progress_lines_every_ten_seconds_or_a_bar_on_a_terminal() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = jobs.Progress(out, tty=False, clock=lambda: now[0])
    for t, done in ((0, 0), (4, 40_000), (10, 100_000), (15, 150_000), (20, 200_000)):
        now[0] = t
        progress.progress(_job(rows_done=done), done / t if t else None)
    progress.finished(_job(state="done", rows_done=1_000_000, rows_updated=999_000,
                           seconds=100.0))
    assert out.getvalue().splitlines() == [
        "job 002_fill:items_n: 0/1,000,000 rows (0.0%), ? rows/s, ? left",
        "job 002_fill:items_n: 100,000/1,000,000 rows (10.0%), 10,000 rows/s, 1m30s left",
        "job 002_fill:items_n: 200,000/1,000,000 rows (20.0%), 10,000 rows/s, 1m20s left",
        "job 002_fill:items_n: done, 1,000,000 rows walked, 999,000 updated, in 1m40s "
        "(10,000 rows/s)",
    ]
    tty = io.StringIO()
    bar = jobs.Progress(tty, tty=True, clock=lambda: now[0])
    bar.progress(_job(rows_done=450_000), 9_000.0)
    assert tty.getvalue() == (
        "\r[#########-----------] job 002_fill:items_n: 450,000/1,000,000 rows (45.0%), "
        "9,000 rows/s, 1m01s left\x1b[K"
    )


def test_migrate_jobs_lists_runs_and_prints_json(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    mdir = _project(tmp_path, FILL)
    runner.apply(empty_db, mdir)
    db = Database(empty_db)
    try:
        with db.checkout():
            register(db, "002_fill", JobSpec("late", '"items"', "id", "note = NULL",
                                             "note IS NOT NULL", 1000))
    finally:
        db.close_pool()
    # "running" in its row, but no process holds it (killed): listed as stopped.
    _query(pg, empty_db.dbname, "UPDATE migratehistory_jobs SET state = 'running' "
           "WHERE name = 'late' RETURNING 1")
    cli = CliRunner()
    env = {"DATABASE_URL": empty_db.url(masked=False), "DATALAYER_MIGRATIONS_DIR": str(mdir)}
    listed = cli.invoke(main, ["migrate", "jobs"], env=env)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert re.match(r"^JOB +STATE +ROWS +DONE +RATE +LEFT$", lines[0])
    assert re.match(r"^002_fill:items_n_note +done +0/0 +100\.0% +\? rows/s +-$", lines[1])
    assert re.match(r"^002_fill:late +stopped +0/\? +- +\? rows/s +\?$", lines[2])
    assert lines[3] == "1 job not done: `datalayer migrate jobs --run` resumes them"
    ran = cli.invoke(main, ["migrate", "jobs", "002_fill", "--run", "--json"], env=env)
    assert ran.exit_code == 0, ran.output
    found = json.loads(ran.stdout)
    assert [(j["job"], j["state"]) for j in found] == [
        ("002_fill:items_n_note", "done"), ("002_fill:late", "done")
    ]
    bad = cli.invoke(main, ["migrate", "jobs", "--throttle", "soon"], env=env)
    assert bad.exit_code == 2 and "'soon' is not a number of seconds" in bad.output


def test_a_background_backfill_without_background_is_refused(
    empty_db: Settings, tmp_path: Path
) -> None:
    mdir = _project(tmp_path, 'migrator.backfill("items", update={"n": "1"})')
    with pytest.raises(MigrationError, match="declare a background job; add background=True"):
        runner.apply(empty_db, mdir)


def test_a_failing_batch_marks_the_job_and_says_how_to_resume(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    mdir = _project(tmp_path, FILL.replace("n + 1", "n / (id - 45)"))
    runner.apply(empty_db, mdir, to="001_items")
    _rows(pg, empty_db.dbname, 100)
    with pytest.raises(MigrationError) as failed:
        runner.apply(empty_db, mdir)
    assert str(failed.value).startswith(
        "background job 002_fill:items_n_note failed after 40 rows: division by zero. "
    )
    assert "`datalayer migrate jobs --run`" in str(failed.value)
    assert _job_row(pg, empty_db.dbname)[:2] == ("failed", 40)




def test_ctrl_c_stops_a_job_that_resumes_later(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    mdir = _project(tmp_path, FILL.replace("batch_size=40", "batch_size=10"))
    runner.apply(empty_db, mdir, to="001_items")
    _rows(pg, empty_db.dbname, 400)
    db = Database(empty_db)
    try:
        with db.checkout():  # registered only: `jobs --run` is what runs it here
            register(db, "002_fill", JobSpec("fill", '"items"', "id", "n = n + 1",
                                             None, 10))
    finally:
        db.close_pool()
    env = cli_env(empty_db, mdir)
    proc = subprocess.Popen(cli_command("migrate", "jobs", "--run", "--throttle", "0.1"),
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while (_job_row(pg, empty_db.dbname) or (None, 0))[1] < 50:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    # Between two batches, or a batch cancelled in flight: either way, how to resume.
    assert last.startswith("interrupted (Ctrl-C): "), err
    assert last.endswith((
        "`datalayer migrate jobs --run` resumes where it stopped",
        "Run `datalayer migrate jobs --run` to resume where it stopped",
    )), err
    done = _job_row(pg, empty_db.dbname)[1]
    assert 0 < done < 400 and _counts(pg, empty_db.dbname) == {1: done, 0: 400 - done}
    listed = CliRunner().invoke(main, ["migrate", "jobs"], env=env)
    assert re.search(r"^002_fill:fill +stopped ", listed.output, re.M), listed.output
    resumed = CliRunner().invoke(main, ["migrate", "jobs", "--run"], env=env)
    assert resumed.exit_code == 0, resumed.output
    assert _counts(pg, empty_db.dbname) == {1: 400}


def test_upstream_pw_migrate_registers_the_job_for_migrate_jobs(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    from peewee_migrate import Router as Upstream
    from playhouse.db_url import connect

    header = "from datalayer.migrate.ops import extend"
    mdir = tmp_path / "migrations"
    write_migration(mdir, "001_items", "migrator = extend(migrator)\n" + ITEMS,
                    header=f"import peewee as pw\n{header}")
    write_migration(mdir, "002_fill", "migrator = extend(migrator)\n" + FILL, header=header)
    upstream_db = connect(empty_db.url(masked=False))
    try:
        Upstream(upstream_db, migrate_dir=mdir).run("001_items")
        _rows(pg, empty_db.dbname, 90)
        Upstream(upstream_db, migrate_dir=mdir).run()
    finally:
        upstream_db.close()
    assert _job_row(pg, empty_db.dbname)[:2] == ("pending", 0)  # registered, not run
    db = Database(empty_db)
    try:
        with db.checkout():
            assert [j.label for j in jobs.run_jobs(db)] == ["002_fill:items_n_note"]
    finally:
        db.close_pool()
    assert _counts(pg, empty_db.dbname) == {1: 90}


def test_the_contract_phase_finishes_its_migrations_jobs_first(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    # One migration: the job is its expand part, SET NOT NULL of the column it fills its contract.
    mdir = _project(tmp_path, FILL + '\nmigrator.add_not_null("items", "note")')
    runner.apply(empty_db, mdir, to="001_items")
    _rows(pg, empty_db.dbname, 120)
    runner.apply(empty_db, mdir, phase="expand")
    assert _counts(pg, empty_db.dbname) == {1: 120}  # run once its expand part committed
    # As if that run had been killed before its job ran: the contract must not start without it.
    _query(pg, empty_db.dbname, "UPDATE items SET n = 0, note = NULL RETURNING 1")
    _query(pg, empty_db.dbname, "UPDATE migratehistory_jobs SET state = 'running', "
           "cursor = NULL, rows_done = 0, rows_updated = 0 RETURNING 1")
    seen = Recorded()
    applied = runner.apply(empty_db, mdir, phase="contract", jobs=jobs.JobOptions(reporter=seen))
    assert [(a.name, a.phase) for a in applied] == [("002_fill", "contract")]
    assert _counts(pg, empty_db.dbname) == {1: 120}
    assert _query(pg, empty_db.dbname, "SELECT count(*) FROM items WHERE note IS NULL") == [(0,)]
    assert seen.lines[-1].startswith("job 002_fill:items_n_note: done, 120 rows walked")
