"""Apply, roll back and report migrations: the library behind ``datalayer migrate``.

Nothing here prints or exits; every function returns data or raises a
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
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee as pw

from ...config import Settings
from ...errors import DatalayerError, LockTimeout, MigrationError
from ..operations import Phase
from ..operations.background import current_migration
from . import checksum as _checksum
from . import jobs as _jobs
from . import online, prechecks
from . import phases as _phases
from .files import (
    MIGRATE_TABLE,
    HistoryRow,
    Router,
    _set_config,
    _without_transaction,
    call_migration,
    session_settings,
)
from .names import content_hash, number, require_dir, sort_key
from .recorder import Recorder, render

__all__ = [
    "DEFAULT_LOCK_RETRIES",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_LOCK_WAIT",
    "WAIT_NOTICE_EVERY",
    "Applied",
    "Retry",
    "Status",
    "Target",
    "apply",
    "lock_key",
    "rollback",
    "status",
]

logger = logging.getLogger("datalayer.migrate")

DEFAULT_LOCK_WAIT = 300.0
"""Seconds ``apply`` waits for another run's migration lock before :class:`LockTimeout`."""

DEFAULT_LOCK_TIMEOUT = 2.0
"""Server ``lock_timeout`` (seconds) for each migration: DDL waiting longer for a table
lock gives up (and ``apply`` retries it) instead of queueing every query behind it.
``None``/0: no limit."""

DEFAULT_LOCK_RETRIES = 10
"""How many times ``apply`` runs a migration again after its lock was not granted (55P03),
with jittered exponential back-off (0.25 s doubling, capped at 15 s): with the default
lock_timeout about 100 s in all before it gives up."""

DEFAULT_STATEMENT_TIMEOUT: float | None = None
"""Server ``statement_timeout`` for each migration; ``None``: no limit (the
application's DB_STATEMENT_TIMEOUT is meant for its own queries, not for DDL)."""

Target = Settings | pw.Database
"""What the functions accept: settings (a private pool is opened and closed) or a database."""


@dataclass(frozen=True)
class Applied:
    """One migration run (or rolled back, or dry-run) and how long it took."""

    name: str
    seconds: float
    transactional: bool = True
    sql: tuple[str, ...] = ()
    attempts: int = 1
    phase: str | None = None
    """``"expand"`` or ``"contract"`` when only that part ran; None: all of it."""


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


@dataclass(frozen=True)
class Status:
    """Where a database stands against the migration files; every list holds names."""

    applied: list[str]
    pending: list[str]
    modified: list[str]
    missing: list[str]
    checksum_problems: list[str] = field(default_factory=list)
    invalid_indexes: list[online.InvalidIndex] = field(default_factory=list)
    """INVALID indexes of the schemas in use (a failed concurrent build, or one in progress)."""
    not_valid_constraints: list[online.NotValidConstraint] = field(default_factory=list)
    """Constraints added NOT VALID and not validated yet."""
    expanded: list[str] = field(default_factory=list)
    """Pending migrations whose expand phase is applied (their contract phase is not)."""
    connections: list[Any] = field(default_factory=list)
    """Other connections to the database (:class:`.runtime.releases.Connection`): who runs
    which release (DB_RELEASE)."""
    phased: bool = False
    """A phase was ever run on this database (its phase table exists)."""

    def phases(self) -> dict[str, list[str]]:
        """Return the applied phases of each migration on disk or applied."""
        half = set(self.expanded)
        out = {name: list(_phases.PHASES) for name in self.applied}
        out.update({name: ["expand"] if name in half else [] for name in self.pending})
        return out

    @property
    def up_to_date(self) -> bool:
        """True when nothing is pending, modified or missing."""
        return not (self.pending or self.modified or self.missing)

    def to_dict(self) -> dict[str, Any]:
        """Return the lists (the shape of ``datalayer migrate status --json``).

        ``problems`` holds what is wrong with the files versus ``migrations.sum``
        (one message each, as ``status`` prints them on stderr).  ``phases`` (each
        migration's applied phases) is there once a phase has run on the database,
        ``connections`` once a connection announces a release (DB_RELEASE).
        """
        out: dict[str, Any] = {
            "applied": list(self.applied),
            "pending": list(self.pending),
            "modified": list(self.modified),
            "missing": list(self.missing),
            "problems": list(self.checksum_problems),
            "invalid_indexes": [i.to_dict() for i in self.invalid_indexes],
            "not_valid_constraints": [c.to_dict() for c in self.not_valid_constraints],
        }
        # Present once the database has seen phases / a process announced a release, so the
        # shape scripts knew before phases stays as it was where phases are not used.
        if self.phased:
            out["phases"] = self.phases()
        if any(c.release for c in self.connections):
            out["connections"] = [c.to_dict() for c in self.connections]
        return out


def lock_key(migrate_table: str = MIGRATE_TABLE) -> int:
    """Return the advisory-lock key (a signed 64-bit integer) used for ``migrate_table``."""
    digest = hashlib.sha256(f"datalayer.migrate:{migrate_table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# -- connections ----------------------------------------------------------------


def _describe(db: Any) -> str:
    settings = getattr(db, "_settings", None)
    if isinstance(settings, Settings):
        return settings.describe()
    return f"database {db.database!r}"


def _default_dir(target: Target) -> Path:
    from ...project import default_migrations_dir

    settings = target if isinstance(target, Settings) else getattr(target, "_settings", None)
    return default_migrations_dir(settings if isinstance(settings, Settings) else None)


@contextlib.contextmanager
def _connected(target: Target) -> Iterator[Any]:
    """Yield a peewee database with a connection checked out for this thread.

    The pool's client timeout (DB_CLIENT_TIMEOUT, by default DB_STATEMENT_TIMEOUT
    + 5 s) is lifted for that connection: it is meant for the application's
    queries, while migrations run under timeouts of their own (``lock_timeout``,
    ``statement_timeout``, none by default) and may legitimately take far longer.
    """
    if isinstance(target, Settings):
        from ...db import Database, resolve

        db = Database(resolve(target))
        try:
            with db.checkout(), db.client_timeout(None):
                yield db
        finally:
            db.close_pool()
        return
    checkout = getattr(target, "checkout", None)
    if checkout is not None:
        unlimited = getattr(target, "client_timeout", None)
        with checkout(), (unlimited(None) if unlimited else contextlib.nullcontext()):
            yield target
        return
    opened = target.connect(reuse_if_open=True)
    try:
        yield target
    finally:
        if opened and not target.in_transaction():
            target.close()


def _pgcode(exc: BaseException) -> str | None:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        code = getattr(item, "pgcode", None)
        if code:
            return str(code)
        todo.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
        todo.extend([item.__cause__, item.__context__])
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _ms(seconds: float | None) -> str:
    return "0" if not seconds else str(max(1, round(seconds * 1000)))


WAIT_NOTICE_EVERY = 10.0
"""Seconds between the "still waiting for the migration lock" lines (``on_wait``)."""


class _WaitNotices:
    """Tell ``on_wait`` once when a run starts waiting for the lock, then every ``every`` s.

    Any wait loop calls :meth:`tick` whenever it wakes; the first call says who
    holds the lock (pid, application_name, for how long).
    """

    def __init__(
        self,
        db: Any,
        key: int,
        table: str,
        on_wait: Callable[[str], None] | None,
        every: float = WAIT_NOTICE_EVERY,
    ) -> None:
        self.db, self.key, self.table, self.on_wait, self.every = db, key, table, on_wait, every
        self.started: float | None = None
        self.last = 0.0

    def tick(self) -> None:
        if self.on_wait is None:
            return
        now = time.monotonic()
        if self.started is None:
            self.started = self.last = now
            holder = _lock_holder(self.db, self.key)
            who = f"held by {holder}" if holder else "its holder is not visible to this user"
            self.on_wait(
                f"waiting for the migration lock of {self.table} on {_describe(self.db)}: {who}"
            )
        elif now - self.last >= self.every:
            self.last = now
            self.on_wait(
                f"still waiting for the migration lock of {self.table} "
                f"({now - self.started:.0f} s so far)"
            )


def _lock_holder(db: Any, key: int) -> str | None:
    """Return "pid N, application A, for S s" of the session holding lock ``key``, if seen."""
    classid, objid = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    with contextlib.suppress(Exception):
        row = db.execute_sql(
            "SELECT a.pid, a.application_name, "
            "EXTRACT(EPOCH FROM now() - COALESCE(a.xact_start, a.backend_start)) "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
            "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())",
            (classid, objid),
        ).fetchone()
        if row:
            pid, app, age = row
            return f"pid {pid}, application {app or '?'}, for {float(age or 0):.0f} s"
    return None


@contextlib.contextmanager
def _migration_lock(
    db: Any,
    key: int,
    wait: float,
    table: str,
    on_wait: Callable[[str], None] | None = None,
    notice_every: float | None = None,
) -> Iterator[None]:
    """Hold the session-level advisory lock ``key``; wait at most ``wait`` seconds for it.

    ``on_wait`` gets one line when the wait starts (who holds the lock) and one
    every ``notice_every`` seconds (default :data:`WAIT_NOTICE_EVERY`) while it lasts.

    :raises MigrationError: behind a transaction-pooling pooler (PgBouncer), where
        a session lock would not stay with this session.
    """
    from ..._pooler import require_direct_connection

    require_direct_connection(db, what="datalayer migrate", where=_describe(db))
    check_interval = (getattr(db, "server_version", 0) or 0) >= 140000
    if check_interval:
        # A dead client is noticed within a second even mid-statement: its transaction
        # is rolled back and this lock freed, so the next run does not wait for long.
        db.execute_sql("SELECT set_config('client_connection_check_interval', '1000', false)")
    try:
        every = WAIT_NOTICE_EVERY if notice_every is None else notice_every
        notices = _WaitNotices(db, key, table, on_wait, every)
        if not _poll_advisory_lock(db, key, wait, notices.tick):
            raise _lock_timeout(db, key, wait, table)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            try:
                db.execute_sql("SELECT pg_advisory_unlock(%s)", (key,))
            except Exception:
                # Never hand a connection that may still hold the lock back to a pool.
                with contextlib.suppress(Exception):
                    db.connection().close()
                if not failed:  # a lost connection took the lock with it: keep the real error
                    raise
    finally:
        if check_interval:
            with contextlib.suppress(Exception):
                db.execute_sql("RESET client_connection_check_interval")


def _poll_advisory_lock(
    db: Any, key: int, wait: float, tick: Callable[[], None] | None = None
) -> bool:
    """Take advisory lock ``key`` with ``pg_try_advisory_lock``, polling for up to ``wait`` s.

    Never a blocking ``pg_advisory_lock``: a session waiting in one keeps a
    snapshot open, and every ``CREATE INDEX CONCURRENTLY`` (the lock holder's
    own, or the application's) waits for it to end.  Between polls this
    session is idle, outside any transaction; ``tick`` is called after each
    failed poll (the waiting notices).
    """
    deadline = time.monotonic() + wait
    pause = 0.05
    while True:
        if db.execute_sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            return True
        if tick is not None:
            tick()
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 1.0)


def _lock_timeout(db: Any, key: int, wait: float, table: str) -> LockTimeout:
    found = _lock_holder(db, key)
    holder = ""
    if found:
        pid = found.split(",", 1)[0].removeprefix("pid ")
        holder = (
            f" (held by {found}; if that process is gone, end it with "
            f"SELECT pg_terminate_backend({pid}))"
        )
    return LockTimeout(
        f"another migration run holds the migration lock of {table} on {_describe(db)}"
        f"{holder}; waited {wait:g} s. Let it finish and retry, or wait longer (--wait)"
    )


# -- SQL capture for dry runs ----------------------------------------------------


def _capture(db: Any, out: list[str]) -> Callable[[str, Any], None]:
    """Return a hook that appends the text of each statement sent to ``db`` to ``out``."""

    def before(sql: str, params: Any) -> None:
        if _SAVEPOINT_RE.match(sql):  # peewee's nesting, not the migration's SQL
            return
        try:
            text = db.connection().cursor().mogrify(sql, params or None).decode()
        except Exception:
            text = render(sql, params)
        out.append(text.rstrip().rstrip(";") + ";")

    return before


_SAVEPOINT_RE = re.compile(r"^\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b", re.I)


# -- the operations ---------------------------------------------------------------


def _postgres_major(db: Any) -> int:
    version = getattr(db, "server_version", None)
    return int(version) // 10000 if isinstance(version, int) and version else 12


def _resolve_to(to: str, names: Sequence[str], directory: Path) -> str:
    wanted = to.removesuffix(".py")
    matches = [n for n in names if n == wanted]
    if not matches and number(wanted) is not None:
        matches = [n for n in names if sort_key(n)[0] == number(wanted)]
    if len(matches) != 1:
        which = "several migrations match" if matches else "there is no migration"
        raise MigrationError(
            f"--to {to}: {which} {to!r} in {directory}; give a full name as listed by "
            "`datalayer migrate status`"
        )
    return matches[0]


def _timeouts(lock_timeout: float | None, statement_timeout: float | None) -> list[tuple[str, str]]:
    return [("lock_timeout", _ms(lock_timeout)), ("statement_timeout", _ms(statement_timeout))]


def _replaced(router: Router) -> dict[str, str]:
    """Return ``{folded name: squashed migration}`` for the squashed files on disk."""
    from .history import replaced_names

    return replaced_names({f"{n}.py": router.source(n) for n in router.todo})


def _check_history(router: Router, rows: list[HistoryRow], *, modified_ok: bool = False) -> None:
    on_disk = set(router.todo)
    replaced = _replaced(router)
    for row in rows:
        path = router.path(row.name)
        if row.name in replaced and row.name not in on_disk:
            continue  # folded into a squashed migration that is on disk
        if row.name not in on_disk:
            raise MigrationError(
                f"{path} was applied ({row.name}) but is not on disk; restore it (git "
                "checkout) - migrations are replayed to know the schema, and applied ones "
                "must stay"
            )
        if (
            not modified_ok
            and row.checksum is not None
            and row.checksum != router.checksum(row.name)
        ):
            raise MigrationError(
                f"{path} changed after it was applied; restore it and add a new migration "
                "instead (`datalayer migrate status` lists every modified file)"
            )


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


def _refuse_rollback_between_phases(router: Router) -> None:
    """Refuse a rollback while a migration has only its expand phase applied."""
    half = list(_phases.expanded(router))
    if half:
        raise MigrationError(
            f"{router.path(half[0])} has only its expand phase applied; run `datalayer migrate "
            "apply --phase contract` first (rollback undoes whole migrations), or undo its "
            "expand part by hand. Nothing was rolled back"
        )


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
        kept = f"; the {len(results)} migration(s) before it in this run stay applied"
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
            f"migration was not recorded{kept if results else ''}. To go on: {fix}, and run the "
            "command again (the migration runs again as it is)"
        )

    def _build_failed(
        self, name: str, failure: MigrationError, dropped: list[str], results: list[Applied]
    ) -> MigrationError:
        kept = f"; the {len(results)} migration(s) before it in this run stay applied"
        unique = (
            " (a unique index: remove the duplicate rows first)"
            if _pgcode(failure) == "23505"
            else ""
        )
        return MigrationError(
            f"migration {self.router.path(name)} failed: "
            f"{_first_line(failure.__cause__ or failure)}; the INVALID index "
            f"{', '.join(dropped)} its concurrent build left was dropped and "
            f"the migration was not recorded{kept if results else ''}. To go on: fix the "
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
        kept = f"; the {len(results)} migration(s) before it in this run stay applied"
        took = (
            "it was rolled back each time, so none of it took effect"
            if atomic
            else "statements before the one that timed out stay in effect (atomic = False)"
        )
        limit = f" within the lock_timeout of {self.lock_timeout:g} s" if self.lock_timeout else ""
        tries = f"{attempts} attempt{'' if attempts == 1 else 's'}"
        return MigrationError(
            f"migration {self.router.path(name)} did not get its table lock{limit} in "
            f"{tries} over {elapsed:.0f} s; {took}{kept if results else ''}. "
            "To go on: find the session holding a lock on its table (pg_stat_activity, "
            "pg_locks) and run the command again when it is done, or allow more attempts "
            "(--lock-retries) or a longer --lock-timeout"
        )


def _run(
    router: Router,
    migrator: Any,
    name: str,
    done_so_far: list[Applied],
    downgrade: bool,
    statements: list[str] | None = None,
    part: _phases.PhaseRun | None = None,
) -> Applied:
    start = time.perf_counter()
    atomic = router.load(name).atomic
    try:
        with current_migration(name, router.migrate_table):  # background jobs it declares
            if part is None:
                router.execute(name, migrator, downgrade=downgrade, statements=statements)
            else:
                router.execute(name, migrator, statements=statements, select=part.select,
                               record=part.record)
    except MigrationError:
        raise
    except Exception as exc:
        lost = _lost_connection(router, name, exc, done_so_far, downgrade, atomic)
        if lost is not None:
            raise lost from exc
        verb = "rollback of" if downgrade else "migration"
        earlier = len(done_so_far)
        kept = (
            f"; the {earlier} migration(s) before it in this run stay "
            + ("rolled back" if downgrade else "applied")
            if earlier
            else ""
        )
        if atomic:
            what = (
                f"{verb} {router.path(name)} failed and was rolled back, so none of it took "
                "effect"
            )
            todo = (
                "fix it (it never completed, so editing it is fine), run `datalayer migrate "
                "hash`, and run the command again"
            )
            if downgrade:
                todo = (
                    "the migration stays applied; fix its rollback() (the file shows as "
                    "modified until it is rolled back), run `datalayer migrate hash`, and roll "
                    "back again"
                )
        else:
            what = (
                f"{verb} {router.path(name)} failed; it has `atomic = False`, so statements "
                "before the failure stay in effect"
            )
            todo = (
                "check the schema by hand, make the migration safe to re-run (IF NOT EXISTS), "
                "run `datalayer migrate hash`, and run the command again"
            )
        code = _pgcode(exc)
        if code == "57014" and "user request" in str(exc):  # Ctrl-C, pg_cancel_backend
            todo = (
                "its running statement was cancelled (Ctrl-C, or pg_cancel_backend), so "
                "nothing of it was recorded as "
                + ("rolled back" if downgrade else "applied")
                + "; run the command again when ready"
            )
        elif code == "57014":  # query_canceled: the statement_timeout fired
            todo = (
                "a statement ran longer than the migration statement_timeout; raise "
                "--statement-timeout (0: none) and run the command again"
            )
        if code == "55P03":
            todo = (
                "another session held a table lock for longer than the migration lock_timeout; "
                "retry when traffic is lower, or raise --lock-timeout"
            )
        if code in _ALREADY_THERE and not downgrade:
            todo = _already_there(router)
        detail = _first_line(exc)
        if code == "42P01":  # not TableMissing's "run migrate apply": this is apply
            detail = _undefined_table(exc, _describe(router.database))
        raise MigrationError(f"{what}: {detail}{kept}. To go on: {todo}") from exc
    return Applied(name, time.perf_counter() - start, atomic)


_LITERAL_RE = re.compile(r"'(?:[^']|'')*'")


def _undefined_table(exc: BaseException, where: str) -> str:
    """Say which statement of a migration named a table that does not exist."""
    found = _find_error(exc, Exception, lambda e: getattr(e, "pgcode", None) == "42P01")
    diag = getattr(found, "diag", None)
    what = getattr(diag, "message_primary", None) or "a table it names does not exist"
    query = getattr(getattr(found, "cursor", None), "query", None)
    if isinstance(query, bytes):
        query = query.decode(errors="replace")
    statement = " ".join(str(query).split()) if query else ""
    statement = _LITERAL_RE.sub("'...'", statement)  # values may be secrets: never shown
    if len(statement) > 200:
        statement = statement[:197] + "..."
    at = f"the statement `{statement}` failed" if statement else "a statement failed"
    return (
        f"{at}: {what} on {where} (the table it names does not exist there: misspelled, in "
        "another schema, or made by a later migration?)"
    )


_ALREADY_THERE = {"42P07", "42710", "42701", "42P06"}
"""duplicate_table, duplicate_object, duplicate_column, duplicate_schema."""


def _already_there(router: Router) -> str:
    """Advice for a migration that creates what the database has already."""
    try:
        first = not router.done
    except Exception:  # the connection is gone: say both
        first = True
    if first:
        return (
            "the database already has these tables (made by create_tables(), another tool or "
            "by hand) and no migration is recorded: do not edit the migration; run `datalayer "
            "migrate baseline`, which checks that the schema is what the migrations build and "
            "records them as applied"
        )
    return (
        "the database has it already, made outside the migrations: drop or rename what is in "
        "the way (if nothing needs it) and run the command again; `datalayer migrate drift` "
        "lists every difference from what the applied migrations build"
    )


def _find_error(
    exc: BaseException,
    kind: type[BaseException],
    test: Callable[[BaseException], bool] | None = None,
) -> BaseException | None:
    """Return ``exc`` or the first exception of ``kind`` (passing ``test``) in its chain."""
    seen: set[int] = set()
    item: BaseException | None = exc
    while item is not None and id(item) not in seen:
        if isinstance(item, kind) and (test is None or test(item)):
            return item
        seen.add(id(item))
        item = item.__cause__ or item.__context__
    return None


def _recorded(router: Router, name: str, unknown: BaseException) -> bool | None:
    """After a lost connection: is ``name``'s history row there?  None when it cannot be known.

    Asked on another connection, once the server process of the lost one has
    exited when its id is known (so nothing of it can still commit; without it,
    after a loss before COMMIT, the open transaction's row is invisible and never
    commits): the history row is written in
    the migration's own transaction (or last, for ``atomic = False``), so it is
    there exactly when the migration was recorded as applied.
    """
    from ... import _outcome
    from ..._sql import Statement
    from ...db import Database
    from ...errors import DatabaseUnavailable

    db = router.database
    if not isinstance(db, Database):  # a plain peewee database: no pool to ask another on
        return None
    try:
        if not _outcome.settle(db, getattr(unknown, "backend_pid", None)):
            return None
        row = _outcome._aside(
            db,
            Statement.text(f"SELECT count(*) FROM {router._quoted_table()} WHERE name = %s", "n"),
            {"n": name},
        )
    except (DatabaseUnavailable, pw.DatabaseError):
        return None
    return None if row is None else bool(row[0])


def _lost_connection(
    router: Router,
    name: str,
    exc: BaseException,
    done_so_far: list[Applied],
    downgrade: bool,
    atomic: bool,
) -> MigrationError | None:
    """Say what a migration whose connection was lost did, found out on a new connection.

    Returns None when ``exc`` is not a lost connection.  The migration lock went
    with the connection, so the run stops here in every case.
    """
    from ...errors import ConnectionLost

    lost = _find_error(exc, ConnectionLost)
    if lost is None:
        # A plain peewee database: the driver's error, and a connection now closed.
        conn = getattr(getattr(router.database, "_state", None), "conn", None)
        if not (isinstance(exc, (pw.OperationalError, pw.InterfaceError)) and conn is not None
                and getattr(conn, "closed", False)):
            return None
        lost = exc
    path = router.path(name)
    verb = "rollback of" if downgrade else "migration"
    earlier = len(done_so_far)
    kept = (
        f"; the {earlier} migration(s) before it in this run stay "
        + ("rolled back" if downgrade else "applied")
        if earlier
        else ""
    )
    again = (
        "the migration lock went with the connection, so this run stopped here; run the "
        "command again"
    )
    # Lost before COMMIT, the server rolls the transaction back and its row never shows;
    # lost during COMMIT (CommitUnknown), the server process is waited for first.
    recorded = _recorded(router, name, lost)
    partly = "" if atomic else "; it has `atomic = False`, so statements it ran stay in effect"
    if recorded is None:
        return MigrationError(
            f"lost the connection to {_describe(router.database)} during the {verb} {path} "
            f"and could not find out whether it committed{partly}{kept}. Do not edit or re-run "
            "anything yet: once the server answers, `datalayer migrate status` shows "
            f"{name} as applied if it committed; then run the command again"
        )
    if recorded != downgrade:
        done = "rolled back" if downgrade else "applied"
        return MigrationError(
            f"lost the connection to {_describe(router.database)} during the {verb} {path}, "
            f"but it committed: {name} is {done} (its history row "
            f"{'is gone' if downgrade else 'is there'}){kept}. Keep the file as it is; "
            f"{again}"
        )
    what = (
        "it did not commit: it stays applied" if downgrade
        else "it did not commit: none of it took effect and it is not recorded as applied"
        if atomic
        else f"it is not recorded as applied{partly}"
    )
    return MigrationError(
        f"lost the connection to {_describe(router.database)} during the {verb} {path}; "
        f"{what}{kept}. {again[0].upper()}{again[1:]}"
    )


def _dry_run(
    router: Router,
    migrator: Any,
    pending: list[str],
    on_applied: Callable[[Applied], None] | None,
    *,
    downgrade: bool = False,
    phases: dict[str, Phase | None] | None = None,
) -> list[Applied]:
    db = router.database
    results: list[Applied] = []
    with db.atomic() as txn:
        for name in pending:
            if phases is not None and name not in phases:
                router.replay([name], migrator)  # its expand part is applied
                continue
            phase = phases.get(name) if phases is not None else None
            part = None if phase is None else _phases.PhaseRun(router, name, phase)
            loaded = router.load(name)
            statements: list[str] = []
            start = time.perf_counter()
            try:
                from ..operations.migrator import bound

                fn = loaded.rollback if downgrade else loaded.migrate
                if loaded.atomic:
                    router.execute(
                        name,
                        migrator,
                        downgrade=downgrade,
                        bookkeeping=False,
                        on_statement=_capture(db, statements),
                        select=part.select if part is not None else None,
                    )
                else:
                    # Cannot run inside the dry run's transaction: render only.
                    recorder = Recorder(_postgres_major(db))
                    with bound(migrator, recorder), _without_transaction(migrator):
                        call_migration(fn, migrator, recorder, fake=False)
                        if part is not None:
                            part.select(migrator)
                        migrator()
                    statements.extend(
                        text.rstrip().rstrip(";") + ";" for text in recorder.statements
                    )
            except MigrationError:
                raise
            except Exception as exc:
                detail = (
                    _undefined_table(exc, _describe(db)) if _pgcode(exc) == "42P01"
                    else _first_line(exc)
                )
                raise MigrationError(
                    f"dry run: {router.path(name)} fails: {detail}; nothing was "
                    "changed. Fix the migration before applying it"
                ) from exc
            results.append(
                Applied(name, time.perf_counter() - start, loaded.atomic, tuple(statements),
                        phase=phase.value if phase is not None else None)
            )
            if on_applied is not None:
                on_applied(results[-1])
        txn.rollback()
    return results


def rollback(
    target: Target,
    directory: str | Path | None = None,
    steps: int = 1,
    *,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
    statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
    migrate_table: str = MIGRATE_TABLE,
    on_applied: Callable[[Applied], None] | None = None,
    dry_run: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> list[Applied]:
    """Undo the last ``steps`` applied migrations, newest first, each in its own transaction.

    ``dry_run`` runs the rollbacks in one transaction that is rolled back and
    returns their SQL in ``Applied.sql`` (as :func:`apply` does); ``on_wait``
    as for :func:`apply`.

    :raises ChecksumError: when the files do not match ``migrations.sum``.
    :raises MigrationError: when fewer than ``steps`` are applied, a file is
        missing or changed since it was applied, or one of them has no
        ``rollback()`` (or an empty one): then nothing is rolled back.
    """
    if steps < 1:
        raise MigrationError(f"--steps {steps}: give a number of migrations >= 1")
    directory = require_dir(directory if directory is not None else _default_dir(target))
    _checksum.verify(directory)
    results: list[Applied] = []
    with _connected(target) as db:
        router = Router(db, directory, migrate_table=migrate_table)
        with _migration_lock(db, lock_key(migrate_table), lock_wait, migrate_table, on_wait):
            rows = router.history()
            _refuse_rollback_between_phases(router)
            replaced = _replaced(router)
            applied = [n for n in router.done if n not in replaced]
            if len(applied) < steps:
                raise MigrationError(
                    f"cannot roll back {steps} migration(s): {len(applied)} applied on "
                    f"{_describe(db)}; use --steps {len(applied)} or fewer"
                    if applied
                    else f"nothing to roll back: no migration is applied on {_describe(db)}"
                )
            # A broken rollback() may be fixed in place: only missing files stop it.
            _check_history(router, rows, modified_ok=True)
            undo = list(reversed(applied[-steps:]))
            _require_rollbacks(router, undo)
            migrator = router.migrator_class(db)
            router.replay(applied, migrator)
            _refuse_blocked_rollbacks(router, db, applied, steps)
            with session_settings(db, _timeouts(lock_timeout, statement_timeout)):
                if dry_run:
                    return _dry_run(router, migrator, undo, on_applied, downgrade=True)
                for name in undo:
                    results.append(_run(router, migrator, name, results, True))
                    if on_applied is not None:
                        on_applied(results[-1])
    return results


def _require_rollbacks(router: Router, names: Sequence[str]) -> None:
    """Refuse, before anything runs, to roll back a migration that has nothing to undo it."""
    for name in names:
        if not router.load(name).reversible:
            later = names[: names.index(name)]
            steps = f"; --steps {len(later)} rolls back only the ones after it" if later else ""
            raise MigrationError(
                f"{router.path(name)} cannot be rolled back: it has no rollback(), or one that "
                "does nothing, so its history row would go and its changes stay; write a "
                "rollback() that undoes migrate() (or, if nothing needs undoing, one whose body "
                f"is `return`), run `datalayer migrate hash`, and roll back again{steps}. "
                "Nothing was rolled back"
            )


def _refuse_blocked_rollbacks(router: Router, db: Any, applied: list[str], steps: int) -> None:
    """Refuse, before anything runs, rollbacks whose guards (``m.require_empty``) would stop.

    The rollbacks are queued without running (on a replayed state, against a recorder that
    runs nothing) to find their :class:`~.migrator.RowsGuard` operations; each is then
    checked on the real database.  A rollback that fails to queue is left to the real run,
    which reports it.
    """

    from ..operations.migrator import RowsGuard

    names = list(reversed(applied[-steps:]))
    recorder = Recorder()
    migrator = router.migrator_class(recorder)
    router.replay(applied, migrator)
    guards: list[tuple[str, RowsGuard]] = []
    for name in names:
        try:
            router.load(name).rollback(migrator, recorder, fake=True)
        except (Exception, SystemExit):  # left to the real run, which reports it
            break
        guards += [(name, op) for op in migrator.__ops__ if isinstance(op, RowsGuard)]
        migrator.__ops__ = []
    problems = []
    for name, guard in guards:
        problem = guard.blocked(db)
        if problem:
            problems.append(f"{router.path(name)}: {problem}")
    if problems:
        raise MigrationError(
            "nothing rolled back: " + "; ".join(problems)
        )


def status(
    target: Target, directory: str | Path | None = None, *, migrate_table: str = MIGRATE_TABLE
) -> Status:
    """Return applied, pending, modified and missing migrations (reads only).

    Also lists the INVALID indexes and NOT VALID constraints of the schemas
    on the search path (a failed concurrent build, a constraint not validated).

    Works on a database without a history table (everything is pending); a
    missing directory is an error naming it.  ``modified`` lists applied
    files whose bytes differ from the hash recorded when they were applied,
    even if ``migrations.sum`` was rewritten since.
    """
    directory = require_dir(directory if directory is not None else _default_dir(target))
    files = _checksum.read_files(directory)  # bad names and unreadable files: before connecting
    with _connected(target) as db:
        router = Router(db, directory, migrate_table=migrate_table)
        rows = router.history()
        invalid, not_valid = online.schema_problems(db)
        half, connections = _phase_status(router)
        phased = _phases.has_table(router)
    on_disk = [name.removesuffix(".py") for name in files]
    on_disk_set = set(on_disk)
    applied: list[str] = []
    recorded: dict[str, str | None] = {}
    for row in rows:
        if row.name not in recorded:
            applied.append(row.name)
        if row.checksum is not None or row.name not in recorded:
            recorded[row.name] = row.checksum
    applied_set = set(applied)
    modified = []
    for name in applied:
        want = recorded.get(name)
        if (
            want is not None
            and name in on_disk_set
            and content_hash(files[f"{name}.py"]) != want
        ):
            modified.append(name)
    problems = _checksum.problems(directory, files)
    from .history import replaced_names

    folded = replaced_names(files)
    return Status(
        applied=applied,
        pending=[n for n in on_disk if n not in applied_set],
        modified=modified,
        missing=[n for n in applied if n not in on_disk_set and n not in folded],
        checksum_problems=problems,
        invalid_indexes=invalid,
        not_valid_constraints=not_valid,
        expanded=[n for n in half if n not in applied_set],
        connections=connections,
        phased=phased,
    )


def _phase_status(router: Router) -> tuple[list[str], list[Any]]:
    """Return the half-applied migrations and the other connections (reads only)."""
    from .releases import connected

    return list(_phases.expanded(router)), connected(router.database)
