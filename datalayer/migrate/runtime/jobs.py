"""Background data migrations: a batched UPDATE that resumes where it stopped.

A migration declares one with ``migrator.backfill(model, update={...},
background=True)`` (see :meth:`~datalayer.migrate.operations.migrator.DatalayerMigrator.backfill`).
Applying the migration only *registers* the job: a row in the history
database's jobs table (``migratehistory_jobs``, next to ``migratehistory``),
written in the migration's own transaction.  The rows are changed afterwards,
outside the migration's transaction and its locks, by :func:`run_jobs`:

* the table is walked by its primary key, ``batch_size`` keys at a time; each
  batch is one transaction that locks the job row, reads the cursor (the last
  key done), updates the rows of the next key range and moves the cursor, so
  a run killed at any point resumes after the last committed batch and no
  batch is ever applied twice;
* one runner per job (a session advisory lock); another runner waits for it,
  and takes the job over if that runner dies;
* ``throttle`` seconds of sleep between batches; a batch whose row lock is not
  granted within ``lock_timeout`` is rolled back and tried again;
* while a replica (``DB_REPLICA_URLS``) replays more than ``max_lag`` seconds
  behind, the job pauses.

``apply`` runs the jobs of the migrations it applies before the next migration
(and before a contract phase: :func:`wait_for_jobs`); ``datalayer migrate
jobs`` lists them and ``--run`` resumes them.  Rows inserted after the walk
passed their key are not visited: the release that starts writing the new
value must write it itself, as with any online backfill.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TextIO

import peewee as pw

from ...errors import MigrationError
from ..ddl.spec import quote as _q
from ..operations.background import _HISTORY, jobs_table
from .lock import holder
from .run import _first_line, _pgcode

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "PROGRESS_EVERY",
    "Job",
    "JobOptions",
    "Progress",
    "Reporter",
    "describe_rate",
    "list_jobs",
    "pending_jobs",
    "progress_line",
    "run_jobs",
    "wait_for_jobs",
]

DEFAULT_LOCK_TIMEOUT = 2.0
"""Seconds a batch waits for a row lock before it is rolled back and tried again."""

PROGRESS_EVERY = 10.0
"""Seconds between progress lines when the output is not a terminal."""

# -- the jobs table -----------------------------------------------------------------------


_COLUMNS = (
    "id, migration, name, table_name, key_column, set_sql, where_sql, batch_size, state, "
    "cursor, rows_total, rows_done, rows_updated, batches, seconds, error, started_at, "
    "finished_at"
)


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as its row in the jobs table says."""

    id: int
    migration: str
    name: str
    table: str
    key: str
    set_sql: str
    where_sql: str | None
    batch_size: int
    state: str  # pending, running, stopped (its runner died), done, failed
    cursor: str | None
    rows_total: int | None
    rows_done: int
    rows_updated: int
    batches: int
    seconds: float
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @property
    def label(self) -> str:
        """``migration:name``: how the CLI names the job."""
        return f"{self.migration}:{self.name}"

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def rate(self) -> float | None:
        """Rows walked per second of running time (None before the first batch)."""
        return self.rows_done / self.seconds if self.seconds > 0 and self.rows_done else None

    @property
    def left(self) -> float | None:
        """Seconds left at the current rate (None when unknown)."""
        rate = self.rate
        if self.done:
            return 0.0
        if rate is None or self.rows_total is None:
            return None
        return max(0, self.rows_total - self.rows_done) / rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.label,
            "migration": self.migration,
            "name": self.name,
            "table": self.table,
            "state": self.state,
            "rows_done": self.rows_done,
            "rows_total": self.rows_total,
            "rows_updated": self.rows_updated,
            "batches": self.batches,
            "rate": self.rate,
            "seconds_left": self.left,
            "error": self.error,
        }


def _exists(db: Any, table: str) -> bool:
    row = db.execute_sql("SELECT to_regclass(%s)", (_q(table),)).fetchone()
    return bool(row and row[0])


def list_jobs(
    db: Any, migrations: Iterable[str] | None = None, *, migrate_table: str = _HISTORY
) -> list[Job]:
    """Return the jobs (of ``migrations``, default all) in the order they were registered."""
    table = jobs_table(migrate_table)
    if not _exists(db, table):
        return []
    sql = f"SELECT {_COLUMNS} FROM {_q(table)}"
    params: tuple[Any, ...] = ()
    if migrations is not None:
        wanted = list(migrations)
        if not wanted:
            return []
        sql += " WHERE migration = ANY(%s)"
        params = (wanted,)
    rows = db.execute_sql(sql + " ORDER BY id", params).fetchall()
    found = [Job(*row) for row in rows]
    if any(j.state == "running" for j in found):  # and its runner still there?
        held = _held_keys(db)
        found = [
            dataclasses.replace(j, state="stopped")
            if j.state == "running" and _lock_key(table, j.id) not in held
            else j
            for j in found
        ]
    return found


def _held_keys(db: Any) -> set[int]:
    """Return the bigint advisory locks held on this database (by any session)."""
    rows = db.execute_sql(
        "SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' "
        "AND granted AND objsubid = 1 AND database = (SELECT oid FROM pg_database "
        "WHERE datname = current_database())"
    ).fetchall()
    held = set()
    for classid, objid in rows:
        key = (int(classid) << 32) | int(objid)
        held.add(key - (1 << 64) if key >= 1 << 63 else key)
    return held


def pending_jobs(
    db: Any, migrations: Iterable[str] | None = None, *, migrate_table: str = _HISTORY
) -> list[Job]:
    """Return the jobs of ``migrations`` (default: all) that are not done."""
    return [j for j in list_jobs(db, migrations, migrate_table=migrate_table) if not j.done]


# -- reporting ------------------------------------------------------------------------------


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def describe_rate(rate: float | None) -> str:
    return "? rows/s" if rate is None else f"{rate:,.0f} rows/s"


def progress_line(job: Job, rate: float | None = None) -> str:
    """One line of progress: ``job M:N: 4,000/10,000 rows (40.0%), 1,234 rows/s, 5 s left``."""
    rate = job.rate if rate is None else rate
    if job.done:
        took = _duration(job.seconds)
        return (
            f"job {job.label}: done, {_count(job.rows_done)} rows walked, "
            f"{_count(job.rows_updated)} updated, in {took} ({describe_rate(job.rate)})"
        )
    pct = (
        f" ({100.0 * job.rows_done / job.rows_total:.1f}%)"
        if job.rows_total
        else ""
    )
    left = (
        None if rate is None or job.rows_total is None
        else max(0, job.rows_total - job.rows_done) / rate
    )
    return (
        f"job {job.label}: {_count(job.rows_done)}/{_count(job.rows_total)} rows{pct}, "
        f"{describe_rate(rate)}, {_duration(left)} left"
    )


class Reporter(Protocol):
    """What :func:`run_jobs` tells as it goes (the CLI prints; tests record)."""

    def progress(self, job: Job, rate: float | None) -> None: ...

    def note(self, line: str) -> None: ...

    def finished(self, job: Job) -> None: ...


class Progress:
    """Progress on ``stream``: a bar redrawn in place on a terminal, else a line every 10 s.

    Lines look like :func:`progress_line`'s; the bar adds ``[#####-----]`` in front.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        every: float = PROGRESS_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every
        self.clock = clock
        self._last: dict[int, float] = {}
        self._drawn = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _end_bar(self) -> None:
        if self._drawn:
            self._write("\n")
            self._drawn = False

    def progress(self, job: Job, rate: float | None) -> None:
        now = self.clock()
        last = self._last.get(job.id)
        if self.tty:
            if last is not None and now - last < 0.1:
                return
            self._last[job.id] = now
            width = 20
            share = (job.rows_done / job.rows_total) if job.rows_total else 0.0
            filled = min(width, int(share * width))
            bar = "#" * filled + "-" * (width - filled)
            line = progress_line(job, rate)
            self._write(f"\r[{bar}] {line}\x1b[K")
            self._drawn = True
            return
        if last is not None and now - last < self.every:
            return
        self._last[job.id] = now
        self._write(progress_line(job, rate) + "\n")

    def note(self, line: str) -> None:
        self._end_bar()
        self._write(line + "\n")

    def finished(self, job: Job) -> None:
        self._end_bar()
        self._last.pop(job.id, None)
        self._write(progress_line(job) + "\n")


class _Silent:
    def progress(self, job: Job, rate: float | None) -> None:
        return None

    def note(self, line: str) -> None:
        return None

    def finished(self, job: Job) -> None:
        return None


# -- running ---------------------------------------------------------------------------------


@dataclasses.dataclass
class JobOptions:
    """How :func:`run_jobs` runs: throttle, lag limit, lock timeout, where it reports."""

    throttle: float = 0.0
    """Seconds of sleep between two batches."""
    max_lag: float | None = None
    """Pause while a replica lags more than this (s); None: half of DB_REPLICA_MAX_LAG."""
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    reporter: Reporter | None = None
    poll: float = 1.0
    """Seconds between two looks while paused or waiting for another runner."""
    sleep: Callable[[float], None] = time.sleep
    lag: Callable[[], float | None] | None = None
    """The replicas' replay lag in seconds (None: none measured); default: the database's."""


def _lock_key(table: str, job_id: int) -> int:
    digest = hashlib.sha256(f"datalayer.job:{table}:{job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _replica_lag(db: Any) -> Callable[[], float | None] | None:
    replicas = getattr(db, "_replicas", None)
    if replicas is None or not getattr(replicas, "replicas", None):
        return None

    def lag() -> float | None:
        worst: float | None = None
        for replica in replicas.replicas:
            state = replica.check(log=False)
            if state.lag is not None and (worst is None or state.lag > worst):
                worst = state.lag
        return worst

    return lag


def _max_lag(db: Any, options: JobOptions) -> float:
    if options.max_lag is not None:
        return options.max_lag
    settings = getattr(db, "settings", None)
    return float(getattr(settings, "replica_max_lag", 5.0) or 5.0) / 2


_RETRY = {"55P03", "40P01", "40001"}  # lock not granted, deadlock, serialization


def _reload(db: Any, table: str, job_id: int) -> Job:
    row = db.execute_sql(f"SELECT {_COLUMNS} FROM {_q(table)} WHERE id = %s", (job_id,)).fetchone()
    return Job(*row)


def _key_type(db: Any, job: Job) -> str:
    row = db.execute_sql(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped",
        (job.table, job.key),
    ).fetchone()
    if row is None:
        raise MigrationError(
            f"background job {job.label}: table {job.table} has no column {job.key!r} any "
            "more; it was dropped or renamed after the job was registered"
        )
    return str(row[0])


def _batch(db: Any, table: str, job: Job, key_type: str, lock_timeout: float) -> Job:
    """Run the next batch of ``job`` in one transaction with its cursor; return the job after."""
    t, k = job.table, _q(job.key)
    setter = job.set_sql.replace("%", "%%")
    where = f" AND ({job.where_sql.replace('%', '%%')})" if job.where_sql else ""
    with db.atomic():
        db.execute_sql(
            "SELECT set_config('lock_timeout', %s, true)",
            (str(max(1, round(lock_timeout * 1000))) if lock_timeout else "0",),
        )
        row = db.execute_sql(
            f"SELECT cursor, state FROM {_q(table)} WHERE id = %s FOR UPDATE", (job.id,)
        ).fetchone()
        cursor, state = row
        if state == "done":
            return _reload(db, table, job.id)
        after, params = ("", []) if cursor is None else (f"WHERE {k} > %s::{key_type} ", [cursor])
        count, high = db.execute_sql(
            f"SELECT count(*), max({k})::text FROM (SELECT {k} FROM {t} {after}"
            f"ORDER BY {k} LIMIT {int(job.batch_size)}) s",
            params,
        ).fetchone()
        if not count:
            db.execute_sql(
                f"UPDATE {_q(table)} SET state = 'done', finished_at = now(), updated_at = now(), "
                "error = NULL WHERE id = %s",
                (job.id,),
            )
            return _reload(db, table, job.id)
        low = "" if cursor is None else f"{k} > %s::{key_type} AND "
        updated = db.execute_sql(
            f"UPDATE {t} SET {setter} WHERE {low}{k} <= %s::{key_type}{where}",
            [*params, high],
        ).rowcount
        db.execute_sql(
            f"UPDATE {_q(table)} SET cursor = %s, rows_done = rows_done + %s, "
            "rows_updated = rows_updated + %s, batches = batches + 1, updated_at = now() "
            "WHERE id = %s",
            (high, int(count), max(0, updated or 0), job.id),
        )
    return _reload(db, table, job.id)


def _add_seconds(db: Any, table: str, job_id: int, seconds: float) -> None:
    db.execute_sql(
        f"UPDATE {_q(table)} SET seconds = seconds + %s WHERE id = %s", (seconds, job_id)
    )


def _run_one(db: Any, table: str, job: Job, options: JobOptions, reporter: Reporter) -> Job:
    """Run ``job`` to its end; the caller holds its advisory lock."""
    db.execute_sql(
        f"UPDATE {_q(table)} SET state = 'running', error = NULL, updated_at = now(), "
        "started_at = COALESCE(started_at, now()) WHERE id = %s AND state <> 'done'",
        (job.id,),
    )
    job = _reload(db, table, job.id)
    if job.done:
        return job
    if job.rows_total is None:
        total = db.execute_sql(f"SELECT count(*) FROM {job.table}").fetchone()[0]
        db.execute_sql(
            f"UPDATE {_q(table)} SET rows_total = %s WHERE id = %s", (int(total), job.id)
        )
        job = _reload(db, table, job.id)
    key_type = _key_type(db, job)
    lag = options.lag if options.lag is not None else _replica_lag(db)
    limit = _max_lag(db, options)
    started, walked_here = time.monotonic(), 0
    reporter.progress(job, job.rate)
    last = time.monotonic()
    retries = 0
    while True:
        if lag is not None:
            paused_since: float | None = None
            paused = False
            while True:
                behind = lag()
                if behind is None or behind <= limit:
                    break
                now = time.monotonic()
                if paused_since is None or now - paused_since >= PROGRESS_EVERY:
                    reporter.note(
                        f"job {job.label}: paused, a replica replays {behind:.1f} s behind "
                        f"(limit {limit:g} s)"
                    )
                    paused_since = now
                paused = True
                options.sleep(options.poll)
            if paused:  # time paused is not running time (the rate is of running time)
                last = time.monotonic()
        before = job.rows_done
        try:
            job = _batch(db, table, job, key_type, options.lock_timeout)
        except pw.DatabaseError as exc:
            code = _pgcode(exc)
            if code in _RETRY and retries < 100:
                retries += 1
                options.sleep(min(5.0, 0.1 * 2 ** min(retries, 6)))
                continue
            if code == "57014":  # cancelled (Ctrl-C, pg_cancel_backend, statement_timeout)
                raise MigrationError(
                    f"background job {job.label} stopped after {job.rows_done:,} rows: "
                    f"{_first_line(exc)}; the batch in flight was rolled back. Run "
                    "`datalayer migrate jobs --run` to resume where it stopped"
                ) from exc
            with contextlib.suppress(Exception):
                db.execute_sql(
                    f"UPDATE {_q(table)} SET state = 'failed', error = %s, updated_at = now() "
                    "WHERE id = %s",
                    (_first_line(exc)[:500], job.id),
                )
            raise MigrationError(
                f"background job {job.label} failed after {job.rows_done:,} rows: "
                f"{_first_line(exc)}. The rows done so far stay done; fix the cause and "
                "run `datalayer migrate jobs --run` to resume where it stopped"
            ) from exc
        retries = 0
        now = time.monotonic()
        _add_seconds(db, table, job.id, now - last)
        last = now
        walked_here += job.rows_done - before
        if job.done:
            job = _reload(db, table, job.id)
            reporter.finished(job)
            return job
        elapsed = now - started
        reporter.progress(job, walked_here / elapsed if elapsed > 0 and walked_here else None)
        if options.throttle > 0:
            options.sleep(options.throttle)


def _holder(db: Any, key: int) -> str:
    found = holder(db, key)
    return "another session" if found is None else "pid {}, application {}".format(*found[:2])


def run_jobs(
    db: Any,
    migrations: Sequence[str] | None = None,
    options: JobOptions | None = None,
    *,
    migrate_table: str = _HISTORY,
) -> list[Job]:
    """Run every unfinished job of ``migrations`` (default: all) to its end, in order.

    A job another session is running is waited for (and taken over if that
    session ends before it is done).  Returns the jobs, all done.

    :raises MigrationError: when a batch fails (the job is marked failed and
        resumes from its cursor on the next run).
    """
    options = options or JobOptions()
    reporter: Reporter = options.reporter or _Silent()
    table = jobs_table(migrate_table)
    finished: list[Job] = []
    for job in pending_jobs(db, migrations, migrate_table=migrate_table):
        key = _lock_key(table, job.id)
        waiting_since: float | None = None
        while True:
            if db.execute_sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                try:
                    job = _run_one(db, table, _reload(db, table, job.id), options, reporter)
                finally:
                    with contextlib.suppress(Exception):
                        db.execute_sql("SELECT pg_advisory_unlock(%s)", (key,))
                break
            job = _reload(db, table, job.id)
            if job.done:
                break
            now = time.monotonic()
            if waiting_since is None or now - waiting_since >= PROGRESS_EVERY:
                reporter.note(
                    f"job {job.label}: run by {_holder(db, key)}; waiting for it "
                    f"({_count(job.rows_done)}/{_count(job.rows_total)} rows)"
                )
                waiting_since = now
            options.sleep(options.poll)
        finished.append(job)
    return finished


def wait_for_jobs(
    db: Any,
    migrations: Sequence[str],
    options: JobOptions | None = None,
    *,
    migrate_table: str = _HISTORY,
) -> list[Job]:
    """Return once every job of ``migrations`` is done: run them here, or wait for their runner.

    Call it before the contract phase of ``migrations`` (what it removes or
    narrows may depend on the rows the jobs change).
    """
    return run_jobs(db, list(migrations), options, migrate_table=migrate_table)
