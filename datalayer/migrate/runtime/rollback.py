"""Undo the last applied migrations, newest first: ``datalayer migrate rollback``.

Refused before anything runs when a file is missing, has no rollback, has only
its expand phase applied, or has a guard (``m.require_empty``) that would stop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...errors import MigrationError
from . import checksum as _checksum
from . import phases as _phases
from .files import MIGRATE_TABLE, Router, session_settings
from .history import _check_history, _replaced
from .lock import DEFAULT_LOCK_WAIT, _migration_lock, lock_key
from .names import require_dir
from .recorder import Recorder
from .run import DEFAULT_LOCK_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT, Applied, _dry_run, _run, _timeouts
from .target import Target, _connected, _default_dir, _describe

__all__ = ["rollback"]


def _refuse_rollback_between_phases(router: Router) -> None:
    """Refuse a rollback while a migration has only its expand phase applied."""
    half = list(_phases.expanded(router))
    if half:
        raise MigrationError(
            f"{router.path(half[0])} has only its expand phase applied; run `datalayer migrate "
            "apply --phase contract` first (rollback undoes whole migrations), or undo its "
            "expand part by hand. Nothing was rolled back"
        )


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
            _refuse_blocked_rollbacks(router, db, applied, undo)
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


def _refuse_blocked_rollbacks(router: Router, db: Any, applied: list[str], undo: list[str]) -> None:
    """Refuse, before anything runs, rollbacks whose guards (``m.require_empty``) would stop.

    The rollbacks are queued without running (on a replayed state, against a recorder that
    runs nothing) to find their :class:`~.migrator.RowsGuard` operations; each is then
    checked on the real database.  A rollback that fails to queue is left to the real run,
    which reports it.
    """

    from ..operations.migrator import RowsGuard

    recorder = Recorder()
    migrator = router.migrator_class(recorder)
    router.replay(applied, migrator)
    guards: list[tuple[str, RowsGuard]] = []
    for name in undo:
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
        raise MigrationError("nothing rolled back: " + "; ".join(problems))
