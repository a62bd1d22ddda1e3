"""A background backfill killed three times: exactly-once, and the application's p99 beside it.

``python -m benchmarks backfill`` (or ``python -m benchmarks.bench_backfill``).
Uses DATABASE_URL / DB_* when set, else the embedded server.

A table ``items`` of DATALAYER_BACKFILL_ROWS rows (default 1,000,000) is made by
a first migration; a second declares the job
``migrator.backfill("items", update={"n": "n + 1"}, background=True)``: every
row's counter goes up by one per update, so a batch applied twice leaves a 2.

The application is 4 threads, each on its own connection, looping with a
DATALAYER_BACKFILL_PAUSE pause (default 5 ms): a read by random id, then an
update of another column of a random row.  Its latency is measured for
DATALAYER_BACKFILL_SECONDS (default 20, half before and half after) without
the backfill (the baseline), and while the backfill runs: ``datalayer migrate apply`` applies
the second migration and runs its job in a subprocess, which is killed with
SIGKILL at three random points; ``datalayer migrate jobs --run`` resumes it
each time, until it is done.  DATALAYER_BACKFILL_THROTTLE (default 0.05 s)
and DATALAYER_BACKFILL_BATCH (default 500) are the job's throttle and batch.

Printed: the kill points, the job's rows per second, the counters (every row
must be 1), and the application's p50/p99 latency without and with the
backfill with their ratio (target: p99 within 1.2x).  This is a benchmark,
not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2

from datalayer.config import Settings

TARGET = 1.2
APP_THREADS = 4

ITEMS = """\
import peewee as pw


def migrate(migrator, database, *, fake=False):
    @migrator.create_model
    class Item(pw.Model):
        id = pw.BigAutoField()
        n = pw.IntegerField(default=0)
        touched = pw.IntegerField(default=0)
        payload = pw.CharField(max_length=100, null=True)

        class Meta:
            table_name = "items"


def rollback(migrator, database, *, fake=False):
    migrator.remove_model("items")
"""

FILL = """\
def migrate(migrator, database, *, fake=False):
    migrator.backfill("items", update={{"n": "n + 1"}}, background=True, batch_size={batch})


def rollback(migrator, database, *, fake=False):
    return
"""


def _env(settings: Settings, directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DB_", "DATABASE_URL", "DATALAYER_"))}
    env["DATABASE_URL"] = settings.url(masked=False)
    env["DATALAYER_MIGRATIONS_DIR"] = str(directory)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from datalayer.cli import run; run()", *args]


def _connect(settings: Settings) -> Any:
    conn = psycopg2.connect(**settings.connect_kwargs())
    conn.autocommit = True
    return conn


class App:
    """The application: threads reading and updating random rows, their latencies kept."""

    def __init__(self, settings: Settings, rows: int, pause: float) -> None:
        self.settings, self.rows, self.pause = settings, rows, pause
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _loop(self, seed: int) -> None:
        rng = random.Random(seed)
        conn = _connect(self.settings)
        mine: list[float] = []
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    for sql in ("SELECT n, payload FROM items WHERE id = %s",
                                "UPDATE items SET touched = touched + 1 WHERE id = %s"):
                        start = time.perf_counter()
                        try:
                            cur.execute(sql, (rng.randint(1, self.rows),))
                            if cur.description:
                                cur.fetchall()
                        except psycopg2.Error:
                            with self._lock:
                                self.errors += 1
                        mine.append(time.perf_counter() - start)
                    time.sleep(self.pause)
        finally:
            conn.close()
            with self._lock:
                self.latencies.extend(mine)

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True)
                         for i in range(APP_THREADS)]
        for t in self._threads:
            t.start()

    def stop(self) -> list[float]:
        self._stop.set()
        for t in self._threads:
            t.join()
        found, self.latencies = self.latencies, []
        return found


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    conn = _connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def _rows_done(settings: Settings) -> int:
    if _query(settings, "SELECT to_regclass('migratehistory_jobs')") == [(None,)]:
        return 0
    found = _query(settings, "SELECT rows_done FROM migratehistory_jobs")
    return int(found[0][0]) if found else 0


def run(settings: Settings, rows: int, work: Path) -> int:
    """Build, measure, kill and resume; print the figures."""
    from datalayer.migrate.runtime import apply as runner
    from datalayer.migrate.runtime.checksum import write_sum

    throttle = os.environ.get("DATALAYER_BACKFILL_THROTTLE", "0.05")
    batch = int(os.environ.get("DATALAYER_BACKFILL_BATCH", "500"))
    seconds = float(os.environ.get("DATALAYER_BACKFILL_SECONDS", "20"))
    pause = float(os.environ.get("DATALAYER_BACKFILL_PAUSE", "0.005"))
    mdir = work / "migrations"
    mdir.mkdir()
    (mdir / "001_items.py").write_text(ITEMS)
    write_sum(mdir)
    runner.apply(settings, mdir)
    print(f"filling items with {rows:,} rows ...", flush=True)
    conn = _connect(settings)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO items (n, touched, payload) SELECT 0, 0, md5(i::text) "
                    "FROM generate_series(1, %s) i", (rows,))
        cur.execute("VACUUM ANALYZE items")
    conn.close()
    (mdir / "002_fill.py").write_text(textwrap.dedent(FILL.format(batch=batch)))
    write_sum(mdir)

    app = App(settings, rows, pause)
    print(f"application alone for {seconds / 2:g} s before and {seconds / 2:g} s after ...",
          flush=True)
    app.start()
    time.sleep(seconds / 2)
    alone = app.stop()

    rng = random.Random()
    kills = sorted(rng.uniform(0.05, 0.95) for _ in range(3))
    env = _env(settings, mdir)
    log = open(work / "job.log", "w")  # noqa: SIM115 - the subprocesses write to it
    app.start()
    started = time.monotonic()
    for i, share in enumerate(kills):
        command = ("migrate", "apply") if i == 0 else ("migrate", "jobs", "--run")
        proc = subprocess.Popen(_cli(*command, "--throttle", throttle), env=env,
                                stdout=log, stderr=log)
        at = int(share * rows)
        while _rows_done(settings) < at and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        print(f"  killed `datalayer {' '.join(command)}` with SIGKILL at "
              f"{_rows_done(settings):,} rows ({share:.0%} wanted)", flush=True)
    final = subprocess.run(_cli("migrate", "jobs", "--run", "--throttle", throttle), env=env,
                           stdout=log, stderr=log)
    took = time.monotonic() - started
    beside = app.stop()
    log.close()
    app.start()  # the other half of the baseline, after: the machine's drift shows on both sides
    time.sleep(seconds / 2)
    alone += app.stop()
    counts = dict(_query(settings, "SELECT n, count(*) FROM items GROUP BY n ORDER BY n"))
    state = _query(settings, "SELECT state, rows_done, rows_updated, batches "
                   "FROM migratehistory_jobs")
    once = counts == {1: rows}
    print(f"\nbackfill of {rows:,} rows, batch {batch}, throttle {throttle} s: "
          f"{took:.1f} s with 3 kills ({rows / took:,.0f} rows/s); resumed run exit "
          f"{final.returncode}; job row {state[0] if state else None}")
    print(f"rows by update count: {counts} -> every row updated exactly once: "
          f"{'yes' if once else 'NO'}")
    base99, with99 = _p(alone, 0.99), _p(beside, 0.99)
    ratio = with99 / base99 if base99 else float("nan")
    print(f"application ({APP_THREADS} threads, read + update by id, {pause * 1000:g} ms pause):")
    print(f"  without the backfill: {len(alone):,} queries, p50 "
          f"{statistics.median(alone) * 1000:.2f} ms, p99 {base99 * 1000:.2f} ms")
    print(f"  beside the backfill:  {len(beside):,} queries, p50 "
          f"{statistics.median(beside) * 1000:.2f} ms, p99 {with99 * 1000:.2f} ms, "
          f"{app.errors} errors")
    print(f"  p99 ratio {ratio:.2f}x (target <= {TARGET:g}x): "
          f"{'met' if ratio <= TARGET else 'NOT met'}")
    return 0


def main() -> int:
    from benchmarks._common import scratch_database, server_settings

    rows = int(os.environ.get("DATALAYER_BACKFILL_ROWS", "1000000"))
    with scratch_database(server_settings(), "datalayer_bench_backfill") as settings, \
            tempfile.TemporaryDirectory(prefix="datalayer-bench-backfill-") as tmp:
        return run(settings, rows, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
