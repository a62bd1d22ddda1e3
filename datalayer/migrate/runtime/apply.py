"""Apply pending migrations: the library behind ``datalayer migrate apply``.

Rolling back is :mod:`.rollback`, reporting :mod:`.status`, the lock
:mod:`.lock`, running one file :mod:`.run` (``datalayer.migrate.runner``
hands out all of them).  Nothing here prints or exits; every function returns data or raises a
:class:`~datalayer.errors.MigrationError` whose message says what to do.

``apply``:

1. verifies ``migrations.sum`` (:func:`.checksum.verify`);
2. takes a PostgreSQL advisory lock (session level, polling
   ``pg_try_advisory_lock`` for at most ``lock_wait`` seconds, then
   :class:`~datalayer.errors.LockTimeout`), so any number of concurrent runs
   apply each migration exactly once, and a waiting run never holds a
   snapshot that a ``CREATE INDEX CONCURRENTLY`` would wait for;
3. re-reads the history under the lock, refuses applied files that are
   missing or changed since they were applied, and pending files that sort
   before an applied one;
4. checks, before each pending migration runs, the live rows its statements
   would reject (:mod:`.runtime.prechecks`), and stops with one line naming
   them before anything is written;
5. applies each pending migration in its own transaction, history row
   included, with ``lock_timeout`` / ``statement_timeout`` set for it, and
   runs it again with back-off when its lock is not granted (55P03); a file
   with ``atomic = False`` runs without a transaction (``CREATE INDEX
   CONCURRENTLY``) and is recorded only when the indexes it builds are valid
   (an INVALID one is dropped, see :mod:`.online`), and when one of its
   statements fails, what it added that the running application's writes
   would meet is undone (:func:`.online.undo`); ``dry_run`` runs them all
   in one transaction that is rolled back and returns the SQL.

While it holds the lock the session sets ``client_connection_check_interval``
(PostgreSQL 14+), so if the process dies mid-migration the server notices
within a second, rolls its transaction back and frees the lock; the next run
waits for that instead of failing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee as pw

from ...config import Settings
from ...errors import DatalayerError, MigrationError
from ..operations import Phase
from . import checksum as _checksum
from . import jobs as _jobs
from . import online, prechecks
from . import phases as _phases
from .files import MIGRATE_TABLE, Router, _set_config, session_settings
from .history import _check_history, _replaced
from .lock import DEFAULT_LOCK_WAIT, _migration_lock, lock_key
from .names import _resolve_to, require_dir, sort_key
from .run import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    Applied,
    _dry_run,
    _find_error,
    _first_line,
    _kept,
    _pgcode,
    _postgres_major,
    _run,
    _timeouts,
)
from .target import Target, _connected, _default_dir, _describe

__all__ = [
    "DEFAULT_LOCK_RETRIES",
    "Retry",
    "apply",
]

logger = logging.getLogger("datalayer.migrate")


DEFAULT_LOCK_RETRIES = 10
"""How many times ``apply`` runs a migration again after its lock was not granted (55P03),
with jittered exponential back-off (0.25 s doubling, capped at 15 s): with the default
lock_timeout about 100 s in all before it gives up."""


@dataclass(frozen=True)
class Retry:
    """A migration attempt that did not get its lock (or left an INVALID index); it runs again."""

    name: str
    attempt: int
    """Attempts made so far (1 after the first)."""
    attempts: int
    """Most attempts ``apply`` makes (``lock_retries + 1``)."""
    delay: float
    """Seconds before the next attempt."""
    reason: str
    dropped: tuple[str, ...] = ()
    """INVALID indexes the failed attempt left, dropped before the next one."""

    def describe(self) -> str:
        """Return the one line the CLI prints for it."""
        dropped = f"; dropped INVALID index {', '.join(self.dropped)}" if self.dropped else ""
        return (
            f"retry {self.name}: {self.reason} (attempt {self.attempt} of {self.attempts})"
            f"{dropped}; next attempt in {self.delay:.1f} s"
        )


# -- the operations ---------------------------------------------------------------


def apply(
    target: Target,
    directory: str | Path | None = None,
    to: str | None = None,
    dry_run: bool = False,
    *,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
    statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
    migrate_table: str = MIGRATE_TABLE,
    on_applied: Callable[[Applied], None] | None = None,
    verify_checksums: bool = True,
    lock_retries: int = DEFAULT_LOCK_RETRIES,
    on_retry: Callable[[Retry], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    jobs: _jobs.JobOptions | None = None,
    phase: str | None = None,
    release: str | None = None,
    release_wait: float = 0.0,
    force: bool = False,
) -> list[Applied]:
    """Apply the pending migrations in ``directory`` (default: the settings' one), in order.

    ``to`` stops after that migration (a name, or its number).  ``dry_run``
    runs them in a transaction that is rolled back and returns their SQL in
    ``Applied.sql``; files with ``atomic = False`` are then only recorded, not
    run.  ``on_applied`` is called after each migration (the CLI prints there).
    ``verify_checksums=False`` skips the checksum file (``check`` reports it itself).
    ``on_wait`` gets a line when the run starts waiting for another run's lock
    (who holds it) and one every :data:`WAIT_NOTICE_EVERY` seconds.

    Background jobs (``backfill(..., background=True)``, :mod:`.runtime.jobs`) run
    after the migration that declares them commits, before the next one, as
    ``jobs`` says (throttle, replica lag, progress); jobs left unfinished by an
    earlier run are finished first.

    A migration whose lock is not granted within ``lock_timeout`` (55P03) is
    rolled back and run again up to ``lock_retries`` times, after a jittered
    exponential back-off (:func:`.online.backoff`); ``on_retry`` is called
    before each wait.  A non-transactional migration whose concurrent index
    build failed or was killed leaves an INVALID index: it is dropped
    (``DROP INDEX CONCURRENTLY``) and, when the failure was a lock timeout or
    the leftover of an earlier run, the migration runs again; it is never
    recorded while one of its indexes is INVALID.

    ``phase`` (``"expand"`` or ``"contract"``) runs only that part of each
    pending migration (:mod:`.runtime.phases`); without it a migration runs
    whole, or only its contract part when its expand part is applied.  Before
    a contract part runs, connections announcing a release other than
    ``release`` (default: the settings' DB_RELEASE) make it wait up to
    ``release_wait`` seconds and then refuse (:mod:`.runtime.releases`), unless
    ``force``; ``on_wait`` gets the lines saying who is left.

    :raises ChecksumError: when the files do not match ``migrations.sum``.
    :raises LockTimeout: when another run holds the lock for more than ``lock_wait`` s.
    :raises MigrationError: when a migration fails (it is rolled back) or the
        history does not match the files.
    """
    directory = require_dir(directory if directory is not None else _default_dir(target))
    if verify_checksums:
        _checksum.verify(directory)
    results: list[Applied] = []
    with _connected(target) as db:
        router = Router(db, directory, migrate_table=migrate_table)
        if to is not None:
            _resolve_to(to, router.todo, directory)  # an unknown --to creates nothing
        with _migration_lock(db, lock_key(migrate_table), lock_wait, migrate_table, on_wait):
            if not dry_run:
                router.ensure_history()
            rows = router.history()  # read again now that no one else can write it
            _check_history(router, rows)
            replaced = _replaced(router)
            applied = [n for n in router.done if n not in replaced]
            applied_set = set(applied)
            pending = [n for n in router.todo if n not in applied_set]
            if to is not None:
                target_name = _resolve_to(to, router.todo, directory)
                if target_name in applied_set:
                    pending = []
                else:
                    pending = pending[: pending.index(target_name) + 1]
            if applied and pending:
                last = max(applied, key=sort_key)
                early = [n for n in pending if sort_key(n) < sort_key(last)]
                if early:
                    raise MigrationError(
                        f"{router.path(early[0])} is pending but sorts before {last}, which is "
                        f"already applied; rename it to come after {last} and run "
                        "`datalayer migrate hash`"
                    )
            if not dry_run:
                router.backfill_checksums(rows)
            if not dry_run:  # what later migrations build on: an earlier run's unfinished jobs
                _jobs.run_jobs(db, applied, jobs, migrate_table=migrate_table)
            half = _half_applied(router)
            steps = _phases.plan(pending, half, phase)
            if not steps:
                return results
            if not dry_run and any(p is not None for _, p in steps):
                _phases.ensure_table(router)
            migrator = router.migrator_class(db)
            router.replay(applied, migrator)
            if any(p is Phase.CONTRACT for _, p in steps):
                _wait_for_old_releases(db, target, release, release_wait, force, on_wait)
            parts = dict(steps)
            with session_settings(db, _timeouts(lock_timeout, statement_timeout)):
                if dry_run:
                    results = _dry_run(router, migrator, pending, on_applied, phases=parts)
                else:
                    state = _Online(router, migrator, applied, lock_retries, lock_timeout)
                    checks = state.checks = _checks_before_ddl(router, db, applied, pending)
                    for name in pending:
                        if name not in parts:  # its expand part is applied: in the state only
                            router.replay([name], state.migrator)
                            state.applied.append(name)
                            continue
                        if parts[name] is Phase.CONTRACT:
                            _wait_before_contract(router, name, jobs)
                        mine = {name: _phases.checks_of_phase(checks.get(name, []), parts[name])}
                        _check_rows(router, db, name, mine, results)
                        results.append(state.apply(name, results, on_retry, parts[name]))
                        if on_applied is not None:
                            on_applied(results[-1])
                        _jobs.wait_for_jobs(db, [name], jobs, migrate_table=migrate_table)
    return results


# -- phases (see runtime/phases.py) -------------------------------------------------


def _half_applied(router: Router) -> list[str]:
    """Return the migrations with only their expand part applied; refuse edited ones."""
    half = _phases.expanded(router)
    for name, checksum in half.items():
        if not router.path(name).is_file():
            raise MigrationError(
                f"{router.path(name)} has its expand phase applied but is not on disk; "
                "restore it (git checkout) and run the contract phase"
            )
        if checksum is not None and checksum != router.checksum(name):
            raise MigrationError(
                f"{router.path(name)} changed after its expand phase was applied; restore it "
                "and run `datalayer migrate apply --phase contract` (a change is a new migration)"
            )
    return list(half)


def _wait_for_old_releases(
    db: Any,
    target: Target,
    release: str | None,
    wait: float,
    force: bool,
    on_wait: Callable[[str], None] | None,
) -> None:
    """Before a contract part: wait for connections announcing another release to leave."""
    from .releases import wait_for_old_releases

    if release is None:
        settings = target if isinstance(target, Settings) else getattr(db, "_settings", None)
        release = settings.release if isinstance(settings, Settings) else None
    went_past = wait_for_old_releases(
        db, release, wait=wait, force=force, where=_describe(db), on_notice=on_wait
    )
    if went_past:
        logger.warning("contract phase forced past %d old-release connection(s)", len(went_past))


def _wait_before_contract(router: Router, name: str, jobs: _jobs.JobOptions | None) -> None:
    """What migration ``name``'s contract part waits for besides old releases: its jobs.

    Its background jobs (registered by its expand part) finish first: run here, or
    waited for while another process runs them (:func:`.runtime.jobs.wait_for_jobs`).
    """
    _jobs.wait_for_jobs(router.database, [name], jobs, migrate_table=router.migrate_table)


def _checks_before_ddl(
    router: Router, db: Any, applied: list[str], pending: list[str]
) -> dict[str, list[prechecks.Precheck]]:
    """Return the checks of live rows each pending migration needs (:mod:`.runtime.prechecks`)."""
    from .statements import planned

    return prechecks.derive(planned(router, applied, pending, postgres=_postgres_major(db)))


def _check_rows(
    router: Router,
    db: Any,
    name: str,
    checks: dict[str, list[prechecks.Precheck]],
    results: list[Applied],
) -> None:
    """Stop before ``name`` runs when rows of its tables would make one of its statements fail."""
    kept = (
        f" (the {len(results)} migration(s) before it in this run stay applied)" if results else ""
    )
    prechecks.verify(db, router.path(name), checks.get(name, []), kept=kept)


def _remember(db: Any) -> online.Before | None:
    """Note the constraints, indexes and NOT NULLs before a non-transactional migration."""
    try:
        return online.remember(db)
    except (pw.DatabaseError, DatalayerError):
        return None


UNDO_ATTEMPTS = 5
"""How many times ``apply`` tries to undo what a failed migration added (a DROP waits for
its table lock under lock_timeout, and lock contention may be why the migration failed)."""


def _undo_added(db: Any, before: online.Before | None) -> tuple[list[str], list[str]]:
    """Undo what a failed non-transactional migration added that old code's writes would meet.

    What could not be undone (its lock not granted) is tried again after a back-off:
    :func:`.online.undo` finds what is still there each time.
    """
    if before is None:
        return [], []
    done: list[str] = []
    left: list[str] = []
    for attempt in range(1, UNDO_ATTEMPTS + 1):
        try:
            more, left = online.undo(db, before)
        except (pw.DatabaseError, DatalayerError) as exc:
            logger.warning("could not undo what the failed migration added: %s",
                           _first_line(exc))
            break
        done += more
        if not left:
            break
        if attempt < UNDO_ATTEMPTS:
            time.sleep(online.backoff(attempt))
    return done, left


def _fix_for(code: str | None) -> str:
    """Say what to fix after a statement of a non-transactional migration failed with ``code``."""
    return {
        "23505": "remove the duplicate rows (rows that came in after the checks before DDL)",
        "23514": "change the rows that violate the check",
        "23503": "change the rows whose key has no match in the referenced table",
        "23502": "give the NULL rows a value",
        "55P03": (
            "find the session that held a lock on the table for longer than the lock_timeout "
            "(pg_stat_activity, pg_locks), or raise --lock-timeout"
        ),
        "57014": "let it run (raise --statement-timeout, 0: none) or find who cancelled it",
    }.get(code or "", "fix the cause")


class _Online:
    """Runs pending migrations one by one, retrying lock timeouts and INVALID index builds."""

    def __init__(
        self,
        router: Router,
        migrator: Any,
        applied: list[str],
        retries: int,
        lock_timeout: float | None,
    ) -> None:
        self.router = router
        self.migrator = migrator
        self.applied = list(applied)
        self.retries = max(0, retries)
        self.lock_timeout = lock_timeout
        self.reconnected = False
        self.checks: dict[str, list[prechecks.Precheck]] = {}

    def apply(
        self,
        name: str,
        results: list[Applied],
        on_retry: Callable[[Retry], None] | None,
        phase: Phase | None = None,
    ) -> Applied:
        router, db = self.router, self.router.database
        atomic = router.load(name).atomic
        start = time.monotonic()
        attempt = 1
        before = None if atomic else _remember(db)
        while True:
            ran: list[str] = []
            part = None if phase is None else _phases.PhaseRun(router, name, phase)
            try:
                done = _run(router, self.migrator, name, results, False, statements=ran,
                            part=part)
            except MigrationError as exc:
                failure = exc
            else:
                self.applied.append(name)
                if part is not None:
                    part.after()
                return dataclasses.replace(
                    done, attempts=attempt, phase=None if phase is None else phase.value
                )
            code = _pgcode(failure)
            if not atomic and not self._connected_again(failure):
                raise failure  # the lock went with the connection and another run has it now
            dropped, drop_blocked = ([], False) if atomic else self._drop_invalid(name, ran)
            retry = (
                code == "55P03"
                or drop_blocked
                or isinstance(failure, online.InvalidIndexes)
                or (code == "42P07" and bool(dropped))  # the killed run's index was in the way
            )
            if not retry or attempt > self.retries:
                undone = _undo_added(db, before)
                if undone[0] or undone[1]:
                    raise self._undone(name, failure, dropped, results, undone) from failure
            if not retry:
                if dropped:
                    raise self._build_failed(name, failure, dropped, results) from failure
                raise failure
            if attempt > self.retries:
                raise self._gave_up(name, failure, attempt, time.monotonic() - start, results)
            delay = online.backoff(attempt)
            reason = (
                f"lock not granted within {self.lock_timeout:g} s"
                if code == "55P03" and self.lock_timeout
                else _first_line(failure.__cause__ or failure)
            )
            retry_note = Retry(name, attempt, self.retries + 1, delay, reason, tuple(dropped))
            logger.warning("%s", retry_note.describe())
            if on_retry is not None:
                on_retry(retry_note)
            time.sleep(delay)
            # The failed attempt changed the migrator's picture of the schema: rebuild it.
            self.migrator = router.migrator_class(db)
            router.replay(self.applied, self.migrator)
            attempt += 1

    def _drop_invalid(self, name: str, ran: list[str]) -> tuple[list[str], bool]:
        """Drop the INVALID indexes ``ran``'s concurrent builds left; (dropped, drop timed out)."""
        db = self.router.database
        dropped: list[str] = []
        for index in online.invalid_indexes(db, online.concurrent_indexes(ran)):
            try:
                online.drop_index(db, index)
            except pw.DatabaseError as exc:
                if _pgcode(exc) == "55P03":
                    return dropped, True  # still there: found and dropped on the next attempt
                raise MigrationError(
                    f"{self.router.path(name)} left the INVALID index {index.qualified}, and "
                    f"dropping it failed: {_first_line(exc)}. To go on: run DROP INDEX "
                    f"CONCURRENTLY {index.qualified}; then run the command again"
                ) from exc
            logger.warning("dropped INVALID index %s left by %s", index.qualified, name)
            dropped.append(index.qualified)
        return dropped, False

    def _connected_again(self, failure: BaseException) -> bool:
        """After a lost connection, take a new one and the migration lock again.

        Returns False when another run took the lock in between (then what this
        run left is that run's to find).  The session settings go on the new
        connection too.
        """
        from ...errors import ConnectionLost

        db = self.router.database
        conn = getattr(getattr(db, "_state", None), "conn", None)
        closed = conn is not None and bool(getattr(conn, "closed", False))
        if not closed and _find_error(failure, ConnectionLost) is None:
            return True
        self.reconnected = True
        try:
            with contextlib.suppress(Exception):
                db.close()
            db.connect(reuse_if_open=True)
            key = lock_key(self.router.migrate_table)
            got = db.execute_sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            _set_config(db, _timeouts(self.lock_timeout, None), local=False)
        except Exception as exc:  # the server is gone too: the message says what may be left
            logger.warning("could not connect again to undo the failed migration: %s",
                           _first_line(exc))
            return False
        return bool(got)

    def _undone(
        self,
        name: str,
        failure: MigrationError,
        dropped: list[str],
        results: list[Applied],
        undone: tuple[list[str], list[str]],
    ) -> MigrationError:
        """Say how a non-transactional migration failed and what of it was undone."""
        done, left = undone
        what = list(done)
        if dropped:
            what.insert(0, f"dropped the INVALID index {', '.join(dropped)}")
        detail = _first_line(failure.__cause__ or failure)
        undid = f"was undone: {', '.join(what)}" if what else "was not undone"
        if left:
            undid += (
                f"{'; the rest' if what else ''} could not be (no lock, or no connection): "
                f"run by hand {'; '.join(left)}"
            )
        fix = (
            "nothing to fix if the session was ended on purpose (pg_terminate_backend) or the "
            "server restarted; else find out why the connection was lost"
            if self.reconnected else _fix_for(_pgcode(failure))
        )
        try:  # the checks before DDL again: which rows came in since, if any
            prechecks.verify(self.router.database, self.router.path(name),
                             self.checks.get(name, []))
        except prechecks.PrecheckFailed as rows:
            fix = f"{rows.rows}: {rows.fix}"
        except (pw.DatabaseError, DatalayerError):
            pass
        return MigrationError(
            f"migration {self.router.path(name)} failed: {detail}; so that the running "
            "application works as before, what it added that the application's writes would "
            f"meet {undid} (what only adds, "
            "such as a new nullable column, a plain index or filled rows, stays); the "
            f"migration was not recorded{_kept(results, False)}. To go on: {fix}, and run the "
            "command again (the migration runs again as it is)"
        )

    def _build_failed(
        self, name: str, failure: MigrationError, dropped: list[str], results: list[Applied]
    ) -> MigrationError:
        unique = (
            " (a unique index: remove the duplicate rows first)"
            if _pgcode(failure) == "23505"
            else ""
        )
        return MigrationError(
            f"migration {self.router.path(name)} failed: "
            f"{_first_line(failure.__cause__ or failure)}; the INVALID index "
            f"{', '.join(dropped)} its concurrent build left was dropped and "
            f"the migration was not recorded{_kept(results, False)}. To go on: fix the "
            f"cause{unique} and run the command again"
        )

    def _gave_up(
        self,
        name: str,
        failure: MigrationError,
        attempts: int,
        elapsed: float,
        results: list[Applied],
    ) -> MigrationError:
        if isinstance(failure, online.InvalidIndexes):
            return failure
        atomic = self.router.load(name).atomic
        took = (
            "it was rolled back each time, so none of it took effect"
            if atomic
            else "statements before the one that timed out stay in effect (atomic = False)"
        )
        limit = f" within the lock_timeout of {self.lock_timeout:g} s" if self.lock_timeout else ""
        tries = f"{attempts} attempt{'' if attempts == 1 else 's'}"
        return MigrationError(
            f"migration {self.router.path(name)} did not get its table lock{limit} in "
            f"{tries} over {elapsed:.0f} s; {took}{_kept(results, False)}. "
            "To go on: find the session holding a lock on its table (pg_stat_activity, "
            "pg_locks) and run the command again when it is done, or allow more attempts "
            "(--lock-retries) or a longer --lock-timeout"
        )


