"""``datalayer migrate check``: the migrations are hashed, complete, and reproduce the models.

Four checks, all reported (an empty list means the tree is fine):

1. ``migrations.sum`` matches the files;
2. the models and the migrations are in sync: a ``diff`` would write nothing;
3. the migrations, applied to a scratch database, give exactly the schema
   that ``create_tables()`` gives for the models (compared with
   :mod:`datalayer.migrate.inspect`), in every schema the models use, with
   the constraints of ``DeferredForeignKey`` fields added afterwards
   (``create_foreign_key()``, as peewee's docs do).  One scratch database
   holds both: the models' tables are created first inside a transaction,
   read, and rolled back, then the history is applied to the empty database.
   The history is sent as the SQL ``migrate sql`` renders, in a few round
   trips; one with Python steps, row reads or files that need a database
   goes through the runner, and so does a history whose SQL fails (the
   runner's message names the file);
4. ``migrate lint`` finds no unallowed error in any migration
   (:mod:`datalayer.migrate.lint`).

Every migration and every rollback is rendered once, in one pass
(:func:`~datalayer.migrate.runtime.offline.history_sql`): the scratch
database is sent that SQL and the lint reads it, in a thread while the
server works.  The forward rendering folds the state of the whole history,
and the models are compared with that state (the history is not replayed
again; when they differ, the comparison planned the change on it, and the
rollbacks are rendered from a replay of their own).  The scratch database
(:mod:`datalayer.migrate.scratch`) is created in the background meanwhile
(the cached schema's key needs only the server's version, known once
connected), and dropped afterwards, on the server of
``DATALAYER_DEV_DATABASE_URL`` (Atlas's dev database; its user needs
CREATEDB), or on the embedded server when that is unset.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..errors import DatalayerError, MigrationError
from .runtime import cache as _cache
from .runtime import checksum as _checksum
from .scratch import scratch_database, scratch_database_soon, scratch_server

if TYPE_CHECKING:
    from .lint._engine import History
    from .runtime.offline import MigrationSql

__all__ = ["check", "lint_problems", "scratch_server"]


_MAX_DIFF_LINES = 40


def _default_models() -> Sequence[Any]:
    from ..project import default_models

    return default_models()  # the project's: [tool.datalayer] models, else datalayer's


def _snapshot_key(
    server_version: Callable[[], int], directory: Path, schemas: Sequence[str]
) -> str | None:
    """Key of the schema the files in ``directory`` build on that server (None: no cache).

    ``server_version()`` returns the server's ``server_version_num``; it is
    asked only when the cache is used.
    """
    from .runtime.names import migration_names

    names = migration_names(directory)
    if len(names) < _cache.MIN_FILES or _cache.cache_dir() is None:
        return None
    keys = _cache.chain_keys(names, lambda n: (directory / f"{n}.py").read_bytes())
    return _cache.snapshot_key(keys[-1], f"{server_version()}|{','.join(schemas)}")


# A statement whose rows the migration's own code may read: the offline rendering saw none.
_READS = re.compile(r"^\s*(SELECT|WITH|SHOW|FETCH|VALUES|TABLE|EXPLAIN|COPY)\b", re.IGNORECASE)


def _render(directory: Path, postgres: int, state: list[Any]) -> History | None:
    """Return the history's SQL as ``migrate sql`` renders it for ``postgres``; None: it cannot be.

    Rendered once, in one pass with the rollbacks: the scratch database is
    sent it, and the lint reads it.  ``state`` gets the migrator holding the
    state the whole history builds, when the rendering folded it (see
    :func:`.runtime.offline.history_sql`).
    """
    from .runtime.offline import history_sql

    try:
        return history_sql(directory, postgres=postgres, state=state)
    except DatalayerError:
        state.clear()
        return None


def _batches(
    rendered: list[MigrationSql], directory: Path, postgres: int, server: int
) -> list[tuple[bool, str]] | None:
    """Return the history's SQL as ``(in one transaction, text)`` batches; None: not plain SQL.

    The SQL is what ``migrate sql`` renders (cached per file), so a history is
    sent in a few round trips instead of a few per file.  Not when any file
    runs Python (``migrator.run``, a rows guard), reads rows (its code would
    see none offline), ends its transaction (the runner refuses that), or
    cannot be rendered without a database: those go through the runner.  It
    is rendered for ``postgres`` (the version the lint renders for, so the lint
    reads the same rendering), and again for the ``server``'s version only when a file's
    code reads the version (operations' SQL does not depend on it).
    """
    from .runtime.files import transaction_control
    from .runtime.offline import PYTHON_PREFIX, migration_sql

    if postgres != server and any(m.reads_version for m in rendered):
        try:
            rendered = migration_sql(directory, postgres=server)
        except DatalayerError:
            return None
    batches: list[tuple[bool, list[str]]] = []
    for item in rendered:
        for text in item.statements:
            if text.startswith(PYTHON_PREFIX) or _READS.match(text):
                return None
            if item.atomic and transaction_control(text):  # the runner refuses it
                return None
        if not item.atomic:  # each statement on its own, outside a transaction
            batches.extend((False, [text]) for text in item.statements)
        elif batches and batches[-1][0]:
            batches[-1][1].extend(item.statements)
        else:
            batches.append((True, list(item.statements)))
    return [(atomic, "\n".join(texts)) for atomic, texts in batches if texts]


def _apply_rendered(
    target: Settings, directory: Path, rendered: list[MigrationSql] | None, postgres: int
) -> bool | None:
    """Apply the migrations to the empty database ``target`` from their rendered SQL.

    Returns True when done, None when not tried (nothing ran: the runner
    applies them), False when a statement failed (the database may hold part
    of the history: the caller applies them with the runner to a fresh one,
    which names the migration that fails and why).
    """
    import psycopg2

    if rendered is None:
        return None
    conn = psycopg2.connect(**target.connect_kwargs())
    try:
        batches = _batches(rendered, directory, postgres, conn.server_version // 10000)
        if batches is None:
            return None
        try:
            for atomic, text in batches:
                conn.autocommit = not atomic
                with conn.cursor() as cur:
                    cur.execute(text)
                if atomic:
                    conn.commit()
        except psycopg2.Error:
            return False
        return True
    finally:
        conn.close()


def _model_changes(
    settings: Settings, directory: Path, models: Sequence[Any], state: Any = None
) -> tuple[list[str], bool]:
    """Return the problem of models changed without a migration (none: in sync).

    Only the files are read (replayed in memory): no database is queried, so
    this runs while the scratch database is being created.  ``state``: a
    migrator that already holds the state the files build (the offline
    rendering folded it), compared with the models instead of a new replay.
    The second item says whether ``state`` is as it was (the models and the
    files agree, so the comparison planned and applied nothing to it).
    """
    from ..db import Database
    from .autogenerate.api import _replay, diff_source
    from .autogenerate.compare import diff_models
    from .operations.migrator import bound
    from .runtime.files import Router

    router = Router(Database(settings), directory)
    untouched = False
    try:
        if state is None:
            source = diff_source(router, models)
        else:  # as diff_source does, from the state at hand
            with bound(state, router.database):
                diff = diff_models(state, None, models, replay=lambda: _replay(router))
            untouched = diff.plan is not None and not diff.plan.migrations
            source = (diff.migrate, diff.rollback) if diff else None
    except MigrationError as exc:
        return [f"cannot compare the models with the migrations: {exc}"], False
    if source is None:
        return [], untouched
    # The body's first line is not indented, the others are (template-ready).
    lines = textwrap.dedent("    " + source[0]).strip().splitlines()
    shown = "\n    ".join(lines[:_MAX_DIFF_LINES])
    more = (
        f"\n    ... ({len(lines) - _MAX_DIFF_LINES} more lines)"
        if len(lines) > _MAX_DIFF_LINES
        else ""
    )
    return [
        "the models changed without a migration; run `datalayer migrate diff NAME`. "
        f"A diff would write:\n    {shown}{more}"
    ], untouched


def _declared_schema(db: Any, models: Sequence[Any], schemas: Sequence[str]) -> list[Any]:
    """Return the snapshot of each schema that ``create_tables()`` gives for ``models``.

    Built in the empty scratch database ``db`` inside a transaction that is then
    rolled back (PostgreSQL's DDL is transactional), so the same database is
    empty again for the migrations: one scratch database, created and dropped
    once, instead of two.
    """
    from .ddl.spec import quote
    from .inspect import snapshot

    with db.checkout(), db.bind_ctx(models), db.transaction() as txn:
        for schema in schemas:
            db.execute_sql(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        db.create_tables(models)
        for model in models:  # as peewee's docs say to, once both tables exist
            for field in list(model._meta.refs):
                if field.deferred:
                    model._schema.create_foreign_key(field)
        want = [snapshot(db, s) for s in schemas]
        txn.rollback()
    return want


def check(
    settings: Settings,
    directory: str | Path | None = None,
    models: Sequence[Any] | None = None,
    *,
    postgres: int | None = None,
) -> list[str]:
    """Return every problem found with the migrations in ``directory`` (empty: all good).

    ``postgres`` is the target server version the lint judges by (default 13, the lowest supported).
    """
    from ..db import Database
    from .inspect import compare, snapshot
    from .runtime.apply import apply
    from .runtime.names import require_dir
    from .runtime.offline import DEFAULT_POSTGRES, migration_sql

    if directory is None:
        from ..project import default_migrations_dir

        directory = default_migrations_dir(settings)
    directory = require_dir(directory)
    models = [  # an abstract base (``__abstract__ = True`` on the class) is never a table
        m for m in (models if models is not None else _default_models())
        if not vars(m).get("__abstract__")
    ]
    problems = list(_checksum.problems(directory))
    admin = scratch_server(settings)
    lint_version = postgres or DEFAULT_POSTGRES
    # Every schema the models use (Meta.schema), which create_tables() expects.
    schemas = sorted({"public", *(m._meta.schema for m in models if m._meta.schema)})
    # The lint needs no database: it runs in a thread while the server works
    # (applying the history, dropping the scratch database).
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="datalayer-lint") as pool:
        linted: concurrent.futures.Future[list[str]] | None = None
        with contextlib.ExitStack() as scratch:
            ready = scratch.enter_context(scratch_database_soon(admin, "mig"))
            # Meanwhile the server creates the scratch database: the files are read.
            key = _snapshot_key(ready.server_version, directory, schemas)
            got = _cache.load_snapshot(key) if key else None
            history: History | None = None
            if got is None:  # the history is applied: its SQL rendered, its state folded
                state: list[Any] = []
                history = _render(directory, lint_version, state)
                changes, untouched = _model_changes(
                    admin, directory, models, state[0] if state else None
                )
                if history is not None and state and not untouched:
                    # Compared with the models, the state changed: rollbacks from a new replay.
                    history = (history[0], functools.partial(
                        migration_sql, directory, rollback=True, postgres=lint_version))
            else:
                changes, _ = _model_changes(admin, directory, models)
            problems.extend(changes)
            linted = pool.submit(lint_problems, directory, postgres=lint_version,
                                 history=history)
            mig_settings = ready()
            migrated = Database(mig_settings)
            scratch.callback(lambda: migrated.close_pool())  # the one in use at the end
            want = _declared_schema(migrated, models, schemas)  # rolled back: still empty
            applied_ok = True
            done = (
                _apply_rendered(
                    mig_settings, directory, None if history is None else list(history[0]),
                    lint_version,
                )
                if got is None else None
            )
            if done is False:  # the runner, in a fresh database, says which file fails
                migrated.close_pool()
                mig_settings = scratch.enter_context(scratch_database(admin, "mig", settings))
                migrated = Database(mig_settings)
            if got is None and not done:
                try:
                    apply(migrated, directory, lock_wait=60, verify_checksums=False)
                except DatalayerError as exc:
                    applied_ok = False
                    problems.append(f"the migrations do not apply to an empty database: {exc}")
            if applied_ok:
                if got is None:
                    with migrated.checkout():  # without the history table
                        got = [snapshot(migrated, s) for s in schemas]
                    if key:
                        _cache.store_snapshot(key, got)
                for schema, w, g in zip(schemas, want, got, strict=True):
                    where = "" if schema == "public" else f"(schema {schema}) "
                    for difference in compare(w, g):
                        problems.append(f"schema differs from the models: {where}{difference}")
        problems.extend(linted.result())
    return problems


def lint_problems(
    directory: str | Path,
    *,
    postgres: int | None = None,
    history: History | None = None,
) -> list[str]:
    """Return one problem line per unallowed lint error in the migrations of ``directory``.

    ``history``: what :func:`.runtime.offline.history_sql` rendered for
    ``directory`` and ``postgres``, which the lint then does not render again.
    """
    from .lint import lint
    from .runtime.offline import DEFAULT_POSTGRES

    try:
        report = lint(directory, postgres=postgres or DEFAULT_POSTGRES, history=history)
    except MigrationError as exc:
        return [f"cannot lint the migrations: {exc}"]
    return [
        f"lint {name}: {f.rule}: {f.message} (fix: {f.fix}; or allow it with "
        f"`# datalayer: allow {f.rule} -- reason`)"
        for name, f in [*report.errors, *report.rollback_errors]
    ]
