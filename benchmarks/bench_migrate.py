"""Migration status and apply times for 100 and 1000 trivial migrations, next to upstream.

``python -m benchmarks.bench_migrate`` (or ``python -m benchmarks migrate``).
Uses DATABASE_URL / DB_* when set, else the embedded server; every apply
runs on a fresh scratch database of its own, dropped afterwards.

Both sides do the same work on the same files in the same run, rounds
interleaved (the side that goes first alternates):

* ``status``: datalayer's ``runner.status`` (connect, read the history,
  hash the files, check migrations.sum) versus upstream's ``Router.todo`` +
  ``Router.done`` + ``Router.diff`` (what ``pw_migrate list`` computes), on a
  database where every migration is applied;
* ``apply``: datalayer's ``runner.apply`` (verify the checksums, take the
  advisory lock, one transaction per migration with its hash recorded)
  versus upstream's ``Router.run()`` (one transaction per migration), on an
  empty database.

The migrations are numbered 000..999 so that upstream's three-digit file
mask sees all 1000 of them (it never sees ``1000_*.py``).  This is a
benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from datalayer.config import Settings

SIZES = (100, 1000)
ROUNDS = {100: 5, 1000: 3}

_TRIVIAL = '''\
def migrate(migrator, database, *, fake=False):
    migrator.sql("SELECT 1")


def rollback(migrator, database, *, fake=False):
    pass
'''


def write_migrations(directory: Path, count: int) -> None:
    """Write ``count`` trivial migrations and their checksum file into ``directory``."""
    from datalayer.migrate.checksum import write_sum

    directory.mkdir(parents=True, exist_ok=True)
    first = 0 if count >= 1000 else 1
    for i in range(first, first + count):
        (directory / f"{i:03d}_trivial_{i}.py").write_text(_TRIVIAL, encoding="utf-8")
    write_sum(directory)


def _upstream_db(settings: Settings) -> object:
    from playhouse.postgres_ext import PostgresqlExtDatabase

    kwargs = settings.connect_kwargs()
    return PostgresqlExtDatabase(kwargs.pop("dbname"), **kwargs)


def upstream_status(settings: Settings, directory: Path) -> tuple[int, int]:
    """Compute what ``pw_migrate list`` shows: (applied, pending)."""
    from peewee_migrate import Router

    db = _upstream_db(settings)
    try:
        router = Router(db, migrate_dir=directory)
        return len(router.done), len(router.diff)
    finally:
        db.close()  # type: ignore[attr-defined]


def upstream_apply(settings: Settings, directory: Path) -> int:
    """Apply with upstream's Router; return how many ran."""
    from peewee_migrate import Router

    db = _upstream_db(settings)
    try:
        return len(Router(db, migrate_dir=directory).run())
    finally:
        db.close()  # type: ignore[attr-defined]


def ours_status(settings: Settings, directory: Path) -> tuple[int, int]:
    """Return (applied, pending) from datalayer's status."""
    from datalayer.migrate.runner import status

    result = status(settings, directory)
    return len(result.applied), len(result.pending)


def ours_apply(settings: Settings, directory: Path) -> int:
    """Apply with datalayer's runner; return how many ran."""
    from datalayer.migrate.runner import apply

    return len(apply(settings, directory))


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def measure(server: Settings, count: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Return {operation: (datalayer median s, upstream median s)} for ``count`` migrations."""
    from benchmarks._common import scratch_database

    times: dict[str, tuple[list[float], list[float]]] = {"apply": ([], []), "status": ([], [])}
    with tempfile.TemporaryDirectory(prefix="datalayer-bench-") as tmp:
        directory = Path(tmp) / "migrations"
        write_migrations(directory, count)
        for i in range(rounds):
            sides = [("ours", 0), ("upstream", 1)]
            if i % 2:
                sides.reverse()
            for side, index in sides:
                with scratch_database(server, "datalayer_bench_mig") as settings:
                    apply_fn = ours_apply if side == "ours" else upstream_apply
                    status_fn = ours_status if side == "ours" else upstream_status
                    seconds, ran = _timed(lambda: apply_fn(settings, directory))  # noqa: B023
                    if ran != count:
                        raise SystemExit(f"{side} applied {ran} of {count} migrations")
                    times["apply"][index].append(seconds)
                    seconds, seen = _timed(lambda: status_fn(settings, directory))  # noqa: B023
                    if seen != (count, 0):
                        raise SystemExit(f"{side} status saw {seen}, expected ({count}, 0)")
                    times["status"][index].append(seconds)
    return {op: (statistics.median(a), statistics.median(b)) for op, (a, b) in times.items()}


def main() -> int:
    """Run the benchmark and print the table."""
    from benchmarks._common import server_settings

    logging.getLogger("peewee_migrate").setLevel(logging.WARNING)
    server = server_settings()
    print(f"server: {server.describe()}")
    header = (
        f"{'migrations':>10}  {'operation':<9} {'datalayer':>11} {'peewee-migrate':>15} "
        f"{'datalayer/upstream':>19}"
    )
    print(header)
    print("-" * len(header))
    for count in SIZES:
        for op, (ours, upstream) in measure(server, count, ROUNDS[count]).items():
            print(
                f"{count:>10}  {op:<9} {ours * 1e3:>8.1f} ms {upstream * 1e3:>12.1f} ms "
                f"{ours / upstream:>18.2f}x"
            )
        sys.stdout.flush()
    print(
        "medians of interleaved rounds; a fresh database per apply. datalayer's apply also "
        "verifies migrations.sum, takes the advisory lock and records each file's hash; its "
        "status also hashes every file"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
