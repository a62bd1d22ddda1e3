"""Scratch databases: where ``check``, ``baseline`` and ``drift`` build a schema to compare.

A scratch database is created, used and dropped on the server of
``DATALAYER_DEV_DATABASE_URL`` (Atlas's dev database; its user needs
CREATEDB), or on the embedded server when that is unset.  Every failure to
get one is a :class:`~datalayer.errors.MigrationError` that names
``DATALAYER_DEV_DATABASE_URL`` and what to fix.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..errors import DatalayerError, MigrationError

if TYPE_CHECKING:
    from .inspect import Catalog

__all__ = ["built_catalog", "scratch_database", "scratch_server"]

_APP_NAME = "datalayer-check"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def scratch_server(settings: Settings) -> Settings:
    """Return settings of the server that holds scratch databases (dev URL or embedded).

    :raises MigrationError: when ``DATALAYER_DEV_DATABASE_URL`` is unset and the
        embedded server cannot be started (not installed, or it fails).
    """
    if settings.dev_database_url:
        return Settings.from_url(settings.dev_database_url, application_name=_APP_NAME)
    from ..embedded import ensure_server

    try:
        server = ensure_server(settings.embedded_dir)
    except (DatalayerError, OSError) as exc:  # not installed, cannot start, bad directory
        raise MigrationError(
            "no scratch database server: DATALAYER_DEV_DATABASE_URL is unset and the embedded "
            f"server is not available ({_first_line(exc)}); set DATALAYER_DEV_DATABASE_URL to "
            "a server whose user has CREATEDB (postgresql://user:password@host:5432/postgres)"
        ) from None
    return Settings.from_url(server.url, application_name=_APP_NAME)


@contextlib.contextmanager
def scratch_database(
    admin: Settings, label: str, settings: Settings | None = None
) -> Iterator[Settings]:
    """Create an empty database on ``admin``'s server, yield its settings, drop it.

    ``settings`` (the caller's) only shape the messages: whether the server
    came from ``DATALAYER_DEV_DATABASE_URL`` or is the embedded one.

    :raises MigrationError: when the server cannot be reached or its user may
        not create databases; the message says to set or fix
        ``DATALAYER_DEV_DATABASE_URL``.
    """
    import psycopg2
    from psycopg2 import sql

    from_env = settings is None or bool(settings.dev_database_url)
    where = (
        f"the scratch server {admin.describe()} (DATALAYER_DEV_DATABASE_URL)"
        if from_env
        else f"the embedded scratch server {admin.describe()}"
    )
    # The pid tells whose it is, should one outlive a killed process.
    name = f"datalayer_check_{label}_{os.getpid()}_{uuid.uuid4().hex[:10]}"

    def run(*statements: Any) -> None:
        try:
            conn = psycopg2.connect(**admin.connect_kwargs())
        except psycopg2.Error as exc:
            fix = (
                "fix DATALAYER_DEV_DATABASE_URL (host, port, user, password) or start that server"
                if from_env
                else "set DATALAYER_DEV_DATABASE_URL to a server whose user has CREATEDB"
            )
            raise MigrationError(f"cannot connect to {where}: {_first_line(exc)}; {fix}") from None
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    try:
        run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg2.Error as exc:
        raise MigrationError(
            f"cannot create a scratch database on {where}: {_first_line(exc)}; set "
            "DATALAYER_DEV_DATABASE_URL to a server and user with CREATEDB (`ALTER ROLE ... "
            "CREATEDB`; each scratch database is dropped afterwards)"
        ) from None
    try:
        yield admin.replace(dbname=name, max_open_conns=2, max_idle_conns=1)
    finally:
        with contextlib.suppress(Exception):
            run(
                sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}"
                ).format(sql.Literal(name)),
                sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)),
            )


def built_catalog(
    settings: Settings,
    directory: str | Path,
    names: Sequence[str],
    *,
    label: str = "mig",
) -> Catalog:
    """Apply migrations ``names`` (a prefix of the files, in order) to a scratch database.

    Returns the snapshot of every non-system schema they build (the history
    table left out).  With no names, the catalog of an empty database.

    :raises MigrationError: when the scratch database cannot be made, the
        migrations do not apply, or ``names`` is not what the files give in order.
    """
    from ..db import Database
    from .inspect import snapshot_catalog
    from .router import Router
    from .runner import apply

    admin = scratch_server(settings)
    with scratch_database(admin, label, settings) as scratch:
        db = Database(scratch)
        try:
            if names:
                try:
                    apply(db, directory, to=names[-1], lock_wait=60, verify_checksums=False)
                except MigrationError as exc:
                    raise MigrationError(
                        f"the migrations do not apply to an empty scratch database: {exc}"
                    ) from exc
            with db.checkout():
                built = Router(db, directory).done
                if built != list(names):
                    raise MigrationError(
                        f"the migrations applied in order give {', '.join(built) or 'none'}, "
                        f"not {', '.join(names)}: the history and the files in {directory} "
                        "disagree; see `datalayer migrate status`"
                    )
                return snapshot_catalog(db)
        finally:
            db.close_pool()
