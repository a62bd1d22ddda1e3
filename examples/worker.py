"""A small worker that embeds datalayer: it purges expired refresh tokens.

    python examples/worker.py            # runs until SIGTERM / Ctrl-C
    python examples/worker.py --once     # one pass, then exit (cron)

Configuration comes from the environment, like every datalayer program:
DATABASE_URL or DB_* (the embedded server when neither is set; see
docs/configuration.md), plus the worker's own

    WORKER_INTERVAL     seconds between passes (default 60)
    WORKER_BATCH_SIZE   rows deleted per statement (default 1000)
    LOG_LEVEL           DEBUG, INFO (default), WARNING, ...

SIGTERM or SIGINT stops it cleanly: the batch in flight finishes, the pool
is closed, and the exit status is 0.  A failed pass (the server restarting,
say) is logged and retried at the next interval.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

import datalayer

logger = logging.getLogger("datalayer.examples.worker")

MAX_BATCHES_PER_STEP = 10  # then check whether to stop


@dataclass(frozen=True)
class WorkerConfig:
    """The worker's own settings (the database's come from datalayer.load_settings)."""

    interval: float = 60.0
    batch_size: int = 1000
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WorkerConfig:
        """Read WORKER_INTERVAL, WORKER_BATCH_SIZE and LOG_LEVEL; raise naming every bad one."""
        problems = []
        interval, batch_size = cls.interval, cls.batch_size
        try:
            interval = float(env.get("WORKER_INTERVAL", interval))
            if interval <= 0:
                raise ValueError
        except ValueError:
            problems.append("WORKER_INTERVAL: expected a number of seconds > 0")
        try:
            batch_size = int(env.get("WORKER_BATCH_SIZE", batch_size))
            if batch_size <= 0:
                raise ValueError
        except ValueError:
            problems.append("WORKER_BATCH_SIZE: expected a whole number > 0")
        level = env.get("LOG_LEVEL", cls.log_level).upper()
        if not isinstance(logging.getLevelName(level), int):
            problems.append("LOG_LEVEL: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
        if problems:
            raise SystemExit("invalid configuration:\n  " + "\n  ".join(problems))
        return cls(interval=interval, batch_size=batch_size, log_level=level)


def _sqlstate(exc: BaseException) -> str | None:
    """Return the SQLSTATE of a driver error wrapped by peewee (or a DatalayerError), if any."""
    seen: set[int] = set()
    item: BaseException | None = exc
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        code = getattr(item, "pgcode", None)
        if isinstance(code, str):
            return code
        item = getattr(item, "orig", None) or item.__cause__ or item.__context__
    return None


NO_TABLES = (
    "the tables do not exist in this database: run `datalayer migrate apply` (with the "
    "same DATABASE_URL / DB_*) first"
)


def purge_pass(config: WorkerConfig, stop: threading.Event) -> int:
    """Purge expired tokens until none are left or ``stop`` is set; return how many."""
    total = 0
    full_step = config.batch_size * MAX_BATCHES_PER_STEP
    while not stop.is_set():
        deleted = datalayer.purge_expired(config.batch_size, max_batches=MAX_BATCHES_PER_STEP)
        total += deleted
        if deleted < full_step:
            break
    return total


def run(config: WorkerConfig, stop: threading.Event, *, once: bool = False) -> int:
    """Run passes every ``config.interval`` seconds until ``stop`` is set; return exit status."""
    db = datalayer.connect()  # DATABASE_URL / DB_*, else the embedded server
    every = "in one pass (--once)" if once else f"every {config.interval:g}s"
    logger.info(
        "worker started on %s: purging expired tokens %s, %d per batch",
        db.settings.describe(), every, config.batch_size,
    )
    retry = "" if once else f"; retrying in {config.interval:g}s"
    status = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                purged = purge_pass(config, stop)
            except Exception as exc:
                status = 1
                if _sqlstate(exc) == "42P01":  # undefined_table: not something a retry fixes
                    logger.error("%s%s", NO_TABLES, retry)
                elif isinstance(exc, datalayer.DatalayerError):  # e.g. the server restarting
                    logger.warning("purge failed (%s)%s", exc, retry)
                else:
                    logger.exception("purge failed%s", retry)
            else:
                status = 0
                logger.log(logging.INFO if purged else logging.DEBUG,
                           "purged %d expired token(s) in %.3fs", purged,
                           time.monotonic() - started)
            if once:
                break
            stop.wait(config.interval)
    finally:
        datalayer.close()
        logger.info("worker stopped")
    return status if once else 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, set up logging and signals, run the worker."""
    parser = argparse.ArgumentParser(description="Purge expired refresh tokens.")
    parser.add_argument("--once", action="store_true", help="run one pass, then exit")
    args = parser.parse_args(argv)
    config = WorkerConfig.from_env()
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s; stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return run(config, stop, once=args.once)
    except datalayer.DatalayerError as exc:  # bad configuration, no server, ...
        logger.error("%s", exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
