"""Generating a migration, as the CLI and the library call it: ``migrate diff`` and its kin.

The migration history on disk is replayed in memory to know the schema it
builds (:func:`_replay`); :mod:`.compare` compares that state with the models
and plans the files; :mod:`.render` writes them through the router.

* :func:`diff_source` ``(router, models=None) -> tuple[str, str] | None``:
  the ``migrate`` and ``rollback`` bodies (all files joined), None when
  nothing changed;
* :func:`compute_diff` ``(router, models=None, *, postgres=13, unsafe=False)
  -> Diff``: the same with the warnings, the files (``Diff.files``) and the
  plan (``Diff.plan``);
* :func:`create_migration` ``(router, name, models=None, *, allow_drop=False,
  postgres=13, unsafe=False) -> DiffResult | None``: writes the file(s)
  through ``router.compile``; ``DiffResult`` has ``path``, ``name`` (the
  first file), ``paths``, ``names``, ``plan`` and ``warnings`` and is
  path-like; None (nothing written) when the models match the history;
* :func:`install_upstream`: makes ``pw_migrate create --auto`` use this
  generator (called from ``migrations/conf.py``, which peewee-migrate runs;
  it replaces nothing of peewee-migrate, it does the command's work itself).

``models`` defaults to :data:`datalayer.models.MODELS`; abstract models
(``__abstract__ = True`` in the class itself) are never tables.  Renames are
declared with :func:`datalayer.migrate.autogenerate.hints.renamed_from`.
The old module path ``datalayer.migrate.generate`` (in ``conf.py`` files)
imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...errors import GenerationError, MigrationError
from ...project import DEFAULT_POSTGRES
from ..operations.migrator import DatalayerMigrator
from ..runtime.names import next_name
from . import upstream as _upstream
from .compare import diff_models
from .outcome import Diff, DiffResult, DropRefused
from .render import write_file

__all__ = ["compute_diff", "create_migration", "diff_source", "install_upstream"]


def _replay(router: Any) -> DatalayerMigrator:
    """Return a fresh migrator holding the state that the migration files build."""
    migrator = DatalayerMigrator(router.database)
    names = list(router.todo)
    replay = getattr(router, "replay", None)
    try:
        if callable(replay):
            replay(names, migrator)
        else:
            for name in names:
                router.run_one(name, migrator, fake=True)
    except MigrationError:
        raise
    except Exception as exc:
        raise GenerationError(
            f"the migrations in {getattr(router, 'migrate_dir', '?')} do not replay: "
            f"{type(exc).__name__}: {exc}; fix the last migration file first"
        ) from exc
    return migrator


def compute_diff(
    router: Any,
    models: Iterable[Any] | None = None,
    *,
    postgres: int = DEFAULT_POSTGRES,
    unsafe: bool = False,
) -> Diff:
    """Return the migration that takes ``router``'s migration files to ``models``.

    Reads the migration files only (the database is not queried).  By
    default changes to existing tables are written in their online forms
    for PostgreSQL ``postgres`` (13 or later), in more than one file when a
    part must run outside a transaction (``Diff.files``); ``unsafe`` writes
    the plain forms (for tables known to be small).

    :raises GenerationError: when a change cannot be generated; nothing is written.
    """
    # The second state is replayed only when there is a migration to write (for its
    # rollback): "no changes", what `check` and most `diff` runs find, needs one replay.
    return diff_models(
        _replay(router), None, models, postgres=postgres, unsafe=unsafe,
        replay=lambda: _replay(router),
    )


def diff_source(
    router: Any, models: Iterable[Any] | None = None, **options: Any
) -> tuple[str, str] | None:
    """Return the ``(migrate, rollback)`` code for the model changes, or None when none.

    With several files the bodies are joined, each after a ``# -- NAME_n`` line.
    """
    diff = compute_diff(router, models, **options)
    return (diff.migrate, diff.rollback) if diff else None


def create_migration(
    router: Any,
    name: str,
    models: Iterable[Any] | None = None,
    *,
    allow_drop: bool = False,
    postgres: int = DEFAULT_POSTGRES,
    unsafe: bool = False,
) -> DiffResult | None:
    """Write a migration ``name`` for the model changes; return it, or None when none.

    The file is written by ``router.compile`` (which numbers it with
    :func:`next_name` in datalayer's Router) and loaded back once to prove
    that it works.  When part of the change must run outside a transaction
    (a concurrent index build, a batched fill), the migration is several
    files, ``name``, ``name_2``, ...; those that run outside a transaction
    say ``atomic = False``.  A migration that drops a table or a column is
    only written with ``allow_drop``.  ``postgres`` and ``unsafe``: see
    :func:`compute_diff`.

    :raises DropRefused: when the migration drops something and ``allow_drop`` is false
        (each drop named, with the ``renamed_from`` hint when it looks like a rename).
    :raises GenerationError: when ``name`` is invalid or a change cannot be generated.
    """
    next_name([], name)  # validates the name before any work
    diff = compute_diff(router, models, postgres=postgres, unsafe=unsafe)
    if not diff:
        return None
    if diff.drops and not allow_drop:
        raise DropRefused(diff.drops)
    names: list[str] = []
    paths: list[Path] = []
    for f in diff.files:
        written = write_file(router, name + f.suffix, f)
        path = Path(router.migrate_dir) / f"{written}.py"
        router.read(written)
        names.append(written)
        paths.append(path)
    return DiffResult(
        path=paths[0], name=names[0], warnings=diff.warnings, paths=tuple(paths),
        names=tuple(names), plan=diff.plan,
    )


def install_upstream() -> None:
    """Make ``pw_migrate create --auto`` write migrations with this generator.

    Called from ``migrations/conf.py``, which peewee-migrate's CLI runs inside
    every command.  During ``pw_migrate create --auto`` it writes the migration
    and ends the command; otherwise it does nothing.  No attribute of
    peewee-migrate is replaced (see :func:`.autogenerate.upstream.install_upstream`).
    """
    _upstream.install_upstream(create_migration)
