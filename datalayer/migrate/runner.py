"""Apply, roll back and report migrations: the library behind ``datalayer migrate``.

Nothing here prints or exits; every function returns data or raises a
:class:`~datalayer.errors.MigrationError` whose message says what to do.

``apply``:

1. verifies ``migrations.sum`` (:func:`.checksum.verify`);
2. takes a PostgreSQL advisory lock (session level, waiting at most
   ``lock_wait`` seconds, then :class:`~datalayer.errors.LockTimeout`), so any
   number of concurrent runs apply each migration exactly once;
3. re-reads the history under the lock, refuses applied files that are
   missing or changed since they were applied, and pending files that sort
   before an applied one;
4. applies each pending migration in its own transaction, history row
   included, with ``lock_timeout`` / ``statement_timeout`` set for it; a file
   with ``atomic = False`` runs without a transaction (``CREATE INDEX
   CONCURRENTLY``); ``dry_run`` runs them all in one transaction that is
   rolled back and returns the SQL.

While it holds the lock the session sets ``client_connection_check_interval``
(PostgreSQL 14+), so if the process dies mid-migration the server notices
within a second, rolls its transaction back and frees the lock; the next run
waits for that instead of failing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee as pw

from ..config import Settings
from ..errors import LockTimeout, MigrationError
from . import checksum as _checksum
from .files import content_hash, sort_key
from .router import MIGRATE_TABLE, HistoryRow, Router, _without_transaction, session_settings

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_LOCK_WAIT",
    "Applied",
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

DEFAULT_LOCK_TIMEOUT = 10.0
"""Server ``lock_timeout`` (seconds) for each migration: DDL waiting longer for a table
lock fails instead of queueing every query behind it.  ``None``/0: no limit."""

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


@dataclass(frozen=True)
class Status:
    """Where a database stands against the migration files; every list holds names."""

    applied: list[str]
    pending: list[str]
    modified: list[str]
    missing: list[str]
    checksum_problems: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        """True when nothing is pending, modified or missing."""
        return not (self.pending or self.modified or self.missing)

    def to_dict(self) -> dict[str, list[str]]:
        """Return the four lists (the shape of ``datalayer migrate status --json``)."""
        return {
            "applied": list(self.applied),
            "pending": list(self.pending),
            "modified": list(self.modified),
            "missing": list(self.missing),
        }


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
    settings = target if isinstance(target, Settings) else getattr(target, "_settings", None)
    if isinstance(settings, Settings):
        return settings.migrations_dir
    return Path("migrations")


@contextlib.contextmanager
def _connected(target: Target) -> Iterator[Any]:
    """Yield a peewee database with a connection checked out for this thread.

    The pool's client timeout (DB_CLIENT_TIMEOUT, by default DB_STATEMENT_TIMEOUT
    + 5 s) is lifted for that connection: it is meant for the application's
    queries, while migrations run under timeouts of their own (``lock_timeout``,
    ``statement_timeout``, none by default) and may legitimately take far longer.
    """
    if isinstance(target, Settings):
        from ..db import Database, resolve

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


@contextlib.contextmanager
def _migration_lock(db: Any, key: int, wait: float, table: str) -> Iterator[None]:
    """Hold the session-level advisory lock ``key``; wait at most ``wait`` seconds for it.

    :raises MigrationError: behind a transaction-pooling pooler (PgBouncer), where
        a session lock would not stay with this session.
    """
    from .._pooler import require_direct_connection

    require_direct_connection(db, what="datalayer migrate", where=_describe(db))
    check_interval = (getattr(db, "server_version", 0) or 0) >= 140000
    if check_interval:
        # A dead client is noticed within a second even mid-statement: its transaction
        # is rolled back and this lock freed, so the next run does not wait for long.
        db.execute_sql("SELECT set_config('client_connection_check_interval', '1000', false)")
    try:
        if wait <= 0:
            got = db.execute_sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            if not got:
                raise _lock_timeout(db, key, wait, table)
        else:
            try:
                with db.atomic():
                    db.execute_sql(
                        "SELECT set_config('lock_timeout', %s, true), "
                        "set_config('statement_timeout', '0', true)",
                        (_ms(wait),),
                    )
                    db.execute_sql("SELECT pg_advisory_lock(%s)", (key,))
            except pw.DatabaseError as exc:
                if _pgcode(exc) == "55P03":  # lock_not_available
                    raise _lock_timeout(db, key, wait, table) from None
                raise
        try:
            yield
        finally:
            try:
                db.execute_sql("SELECT pg_advisory_unlock(%s)", (key,))
            except Exception:
                # Never hand a connection that may still hold the lock back to a pool.
                with contextlib.suppress(Exception):
                    db.connection().close()
                raise
    finally:
        if check_interval:
            with contextlib.suppress(Exception):
                db.execute_sql("RESET client_connection_check_interval")


def _lock_timeout(db: Any, key: int, wait: float, table: str) -> LockTimeout:
    classid, objid = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    holder = ""
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
            holder = (
                f" (held by pid {pid}, application {app or '?'}, for {float(age or 0):.0f} s; "
                f"if that process is gone, end it with SELECT pg_terminate_backend({pid}))"
            )
    return LockTimeout(
        f"another migration run holds the migration lock of {table} on {_describe(db)}"
        f"{holder}; waited {wait:g} s. Let it finish and retry, or wait longer (--wait)"
    )


# -- SQL capture for dry runs ----------------------------------------------------


class _NoCursor:
    """What a statement that was only recorded returns: no rows."""

    rowcount = 0
    description = None

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def close(self) -> None:
        return None


_SAVEPOINT_RE = re.compile(r"^\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b", re.I)


@contextlib.contextmanager
def _capture(db: Any, out: list[str], *, execute: bool) -> Iterator[None]:
    original = db.execute_sql
    had = "execute_sql" in vars(db)

    def recorder(sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if _SAVEPOINT_RE.match(sql):  # peewee's nesting, not the migration's SQL
            return original(sql, params, *args, **kwargs) if execute else _NoCursor()
        try:
            text = db.connection().cursor().mogrify(sql, params or None).decode()
        except Exception:
            text = sql if not params else f"{sql}  -- params: {params!r}"
        out.append(text.rstrip().rstrip(";") + ";")
        if execute:
            return original(sql, params, *args, **kwargs)
        return _NoCursor()

    db.execute_sql = recorder  # an instance attribute: wins over the class's method
    try:
        yield
    finally:
        if had:
            db.execute_sql = original
        else:
            del db.execute_sql


# -- the operations ---------------------------------------------------------------


def _resolve_to(to: str, names: Sequence[str], directory: Path) -> str:
    wanted = to.removesuffix(".py")
    matches = [n for n in names if n == wanted]
    if not matches and wanted.isdigit():
        matches = [n for n in names if sort_key(n)[0] == int(wanted)]
    if len(matches) != 1:
        which = "several migrations match" if matches else "there is no migration"
        raise MigrationError(
            f"--to {to}: {which} {to!r} in {directory}; give a full name as listed by "
            "`datalayer migrate status`"
        )
    return matches[0]


def _timeouts(lock_timeout: float | None, statement_timeout: float | None) -> list[tuple[str, str]]:
    return [("lock_timeout", _ms(lock_timeout)), ("statement_timeout", _ms(statement_timeout))]


def _check_history(router: Router, rows: list[HistoryRow], *, modified_ok: bool = False) -> None:
    on_disk = set(router.todo)
    for row in rows:
        path = router.path(row.name)
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
) -> list[Applied]:
    """Apply the pending migrations in ``directory`` (default: the settings' one), in order.

    ``to`` stops after that migration (a name, or its number).  ``dry_run``
    runs them in a transaction that is rolled back and returns their SQL in
    ``Applied.sql``; files with ``atomic = False`` are then only recorded, not
    run.  ``on_applied`` is called after each migration (the CLI prints there).
    ``verify_checksums=False`` skips the checksum file (``check`` reports it itself).

    :raises ChecksumError: when the files do not match ``migrations.sum``.
    :raises LockTimeout: when another run holds the lock for more than ``lock_wait`` s.
    :raises MigrationError: when a migration fails (it is rolled back) or the
        history does not match the files.
    """
    directory = Path(directory) if directory is not None else _default_dir(target)
    if verify_checksums:
        _checksum.verify(directory)
    results: list[Applied] = []
    with _connected(target) as db:
        router = Router(db, directory, migrate_table=migrate_table)
        with _migration_lock(db, lock_key(migrate_table), lock_wait, migrate_table):
            if not dry_run:
                router.ensure_history()
            rows = router.history()  # read again now that no one else can write it
            _check_history(router, rows)
            applied = router.done
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
            if not pending:
                return results
            migrator = router.migrator_class(db)
            router.replay(applied, migrator)
            with session_settings(db, _timeouts(lock_timeout, statement_timeout)):
                if dry_run:
                    results = _dry_run(router, migrator, pending, on_applied)
                else:
                    for name in pending:
                        results.append(_run(router, migrator, name, results, False))
                        if on_applied is not None:
                            on_applied(results[-1])
    return results


def _run(
    router: Router, migrator: Any, name: str, done_so_far: list[Applied], downgrade: bool
) -> Applied:
    start = time.perf_counter()
    atomic = router.load(name).atomic
    try:
        router.execute(name, migrator, downgrade=downgrade)
    except MigrationError:
        raise
    except Exception as exc:
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
        if code == "57014":  # query_canceled: the statement_timeout fired
            todo = (
                "a statement ran longer than the migration statement_timeout; raise "
                "--statement-timeout (0: none) and run the command again"
            )
        if code == "55P03":
            todo = (
                "another session held a table lock for longer than the migration lock_timeout; "
                "retry when traffic is lower, or raise --lock-timeout"
            )
        raise MigrationError(f"{what}: {_first_line(exc)}{kept}. To go on: {todo}") from exc
    return Applied(name, time.perf_counter() - start, atomic)


def _dry_run(
    router: Router,
    migrator: Any,
    pending: list[str],
    on_applied: Callable[[Applied], None] | None,
) -> list[Applied]:
    db = router.database
    results: list[Applied] = []
    with db.atomic() as txn:
        for name in pending:
            loaded = router.load(name)
            statements: list[str] = []
            start = time.perf_counter()
            try:
                with _capture(db, statements, execute=loaded.atomic):
                    if loaded.atomic:
                        router.execute(name, migrator, bookkeeping=False)
                    else:
                        # Cannot run inside the dry run's transaction: render only.
                        loaded.migrate(migrator, db, fake=False)
                        with _without_transaction(migrator):
                            migrator()
            except MigrationError:
                raise
            except Exception as exc:
                raise MigrationError(
                    f"dry run: {router.path(name)} fails: {_first_line(exc)}; nothing was "
                    "changed. Fix the migration before applying it"
                ) from exc
            results.append(
                Applied(name, time.perf_counter() - start, loaded.atomic, tuple(statements))
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
) -> list[Applied]:
    """Undo the last ``steps`` applied migrations, newest first, each in its own transaction.

    :raises ChecksumError: when the files do not match ``migrations.sum``.
    :raises MigrationError: when fewer than ``steps`` are applied, or a file is
        missing or changed since it was applied.
    """
    if steps < 1:
        raise MigrationError(f"--steps {steps}: give a number of migrations >= 1")
    directory = Path(directory) if directory is not None else _default_dir(target)
    _checksum.verify(directory)
    results: list[Applied] = []
    with _connected(target) as db:
        router = Router(db, directory, migrate_table=migrate_table)
        with _migration_lock(db, lock_key(migrate_table), lock_wait, migrate_table):
            rows = router.history()
            applied = router.done
            if len(applied) < steps:
                raise MigrationError(
                    f"cannot roll back {steps} migration(s): {len(applied)} applied on "
                    f"{_describe(db)}; use --steps {len(applied)} or fewer"
                    if applied
                    else f"nothing to roll back: no migration is applied on {_describe(db)}"
                )
            # A broken rollback() may be fixed in place: only missing files stop it.
            _check_history(router, rows, modified_ok=True)
            migrator = router.migrator_class(db)
            router.replay(applied, migrator)
            _refuse_blocked_rollbacks(router, db, applied, steps)
            with session_settings(db, _timeouts(lock_timeout, statement_timeout)):
                for name in reversed(applied[-steps:]):
                    results.append(_run(router, migrator, name, results, True))
                    if on_applied is not None:
                        on_applied(results[-1])
    return results


def _refuse_blocked_rollbacks(router: Router, db: Any, applied: list[str], steps: int) -> None:
    """Refuse, before anything runs, rollbacks whose guards (``m.require_empty``) would stop.

    The rollbacks are queued without running (on a replayed state, the database mocked as
    in a replay) to find their :class:`~.migrator.RowsGuard` operations; each is then
    checked on the real database.  A rollback that fails to queue is left to the real run,
    which reports it.
    """
    from unittest import mock

    from .migrator import RowsGuard

    names = list(reversed(applied[-steps:]))
    migrator = router.migrator_class(db)
    router.replay(applied, migrator)
    guards: list[tuple[str, RowsGuard]] = []
    cursor = mock.Mock()
    cursor.fetch_one.return_value = None
    with (
        mock.patch("peewee.Model.select"),
        mock.patch("peewee.Database.execute_sql", return_value=cursor),
    ):
        for name in names:
            try:
                router.load(name).rollback(migrator, db, fake=True)
            except Exception:
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

    Works on a database without a history table (everything is pending) and
    on a missing directory (nothing is on disk).  ``modified`` lists applied
    files whose bytes differ from the hash recorded when they were applied,
    even if ``migrations.sum`` was rewritten since.
    """
    directory = Path(directory) if directory is not None else _default_dir(target)
    with _connected(target) as db:
        rows = Router(db, directory, migrate_table=migrate_table).history()
    files = _checksum.read_files(directory)  # read once: for the hashes and the sum check
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
    return Status(
        applied=applied,
        pending=[n for n in on_disk if n not in applied_set],
        modified=modified,
        missing=[n for n in applied if n not in on_disk_set],
        checksum_problems=problems,
    )
