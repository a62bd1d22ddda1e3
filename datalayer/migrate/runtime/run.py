"""Running one migration (or its rollback) and saying what went wrong when it fails.

:func:`_run` runs one file through the router, in its own transaction unless it
says ``atomic = False``, and turns a failure into one :class:`MigrationError` that
says what took effect and what to do; a connection lost at the commit is
resolved by reading the history again (:func:`_lost_connection`).
:func:`_dry_run` runs files in one transaction that is rolled back and returns
their SQL.  ``apply`` and ``rollback`` both run files through these.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peewee as pw

from ...errors import MigrationError
from ..operations import Phase
from ..operations.background import current_migration
from . import phases as _phases
from .files import Router, _without_transaction, call_migration
from .recorder import Recorder, _is_savepoint, render
from .target import _describe

__all__ = ["DEFAULT_LOCK_TIMEOUT", "DEFAULT_STATEMENT_TIMEOUT", "Applied"]


DEFAULT_LOCK_TIMEOUT = 2.0
"""Server ``lock_timeout`` (seconds) for each migration: DDL waiting longer for a table
lock gives up (and ``apply`` retries it) instead of queueing every query behind it.
``None``/0: no limit."""


DEFAULT_STATEMENT_TIMEOUT: float | None = None
"""Server ``statement_timeout`` for each migration; ``None``: no limit (the
application's DB_STATEMENT_TIMEOUT is meant for its own queries, not for DDL)."""


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


def _pgerror(exc: BaseException) -> Any:
    """Return the driver error (it has a ``pgcode``) in ``exc``'s args, cause or context, if any."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if getattr(item, "pgcode", None):
            return item
        todo.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
        todo.extend([item.__cause__, item.__context__])
    return None


def _pgcode(exc: BaseException) -> str | None:
    """Return the SQLSTATE of ``exc`` or of the driver error it wraps."""
    err = _pgerror(exc)
    return None if err is None else str(err.pgcode)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _ms(seconds: float | None) -> str:
    return "0" if not seconds else str(max(1, round(seconds * 1000)))


def _capture(db: Any, out: list[str]) -> Callable[[str, Any], None]:
    """Return a hook that appends the text of each statement sent to ``db`` to ``out``."""

    def before(sql: str, params: Any) -> None:
        if _is_savepoint(sql):  # peewee's nesting, not the migration's SQL
            return
        try:
            text = db.connection().cursor().mogrify(sql, params or None).decode()
        except Exception:
            text = render(sql, params)
        out.append(text.rstrip().rstrip(";") + ";")

    return before


def _postgres_major(db: Any) -> int:
    version = getattr(db, "server_version", None)
    return int(version) // 10000 if isinstance(version, int) and version else 12


def _timeouts(lock_timeout: float | None, statement_timeout: float | None) -> list[tuple[str, str]]:
    return [("lock_timeout", _ms(lock_timeout)), ("statement_timeout", _ms(statement_timeout))]


def _kept(done_so_far: list[Applied], downgrade: bool) -> str:
    """Return what a failure message says of the migrations this run did before ("": none)."""
    if not done_so_far:
        return ""
    return (f"; the {len(done_so_far)} migration(s) before it in this run stay "
            + ("rolled back" if downgrade else "applied"))


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
        kept = _kept(done_so_far, downgrade)
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
    found = _pgerror(exc)  # its callers saw 42P01 there
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


def _find_error(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """Return ``exc`` or the first exception of ``kind`` in its chain."""
    seen: set[int] = set()
    item: BaseException | None = exc
    while item is not None and id(item) not in seen:
        if isinstance(item, kind):
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
    kept = _kept(done_so_far, downgrade)
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
