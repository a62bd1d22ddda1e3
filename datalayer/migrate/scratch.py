"""Scratch databases: where ``check``, ``baseline`` and ``drift`` build a schema to compare.

The server that holds them (:func:`scratch_server`), first that applies:

1. ``DATALAYER_DEV_DATABASE_URL`` (Atlas's dev database; its user needs CREATEDB);
2. the server the settings name (DATABASE_URL or DB_*) when its user may
   create databases (superuser or CREATEDB) and it answers on the port the
   URL names (not through PgBouncer or another proxy, which would not know
   the new database);
3. the project's embedded server (the one ``DATALAYER_EMBEDDED_DIR`` names).

A scratch database is created, used and dropped.  While it exists its owner
holds a connection whose ``application_name`` names it; a scratch database
with no such connection and no session in it was left by a run that was
killed, and the next run on that server drops it.  Every failure to get one
is a :class:`~datalayer.errors.MigrationError` that says what to fix.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..errors import DatalayerError, MigrationError

if TYPE_CHECKING:
    from .inspect import Catalog

__all__ = ["built_catalog", "scratch_database", "scratch_database_soon", "scratch_server"]

_APP_NAME = "datalayer-check"
_DEV_SOURCE = "DATALAYER_DEV_DATABASE_URL"
_EMBEDDED_SOURCE = "embedded"
_PREFIX = "datalayer_check_"
# datalayer_check_<label>_<pid>_<12 hex>: the pid and the hex make the owner's marker.
_NAME = re.compile(r"^datalayer_check_.+_(\d+_[0-9a-f]{12})$")
# Made before markers: 10 hex, and only the pid tells whether the owner lives.
_OLD_NAME = re.compile(r"^datalayer_check_.+_(\d+)_[0-9a-f]{10}$")
_MARKER = "datalayer-check "
"""``application_name`` prefix of the connection that owns a scratch database."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def scratch_server(settings: Settings) -> Settings:
    """Return settings of the server that holds scratch databases (see the module's rule).

    :raises MigrationError: when no server of the rule is usable and the
        embedded server cannot be started (not installed, or it fails).
    """
    if settings.dev_database_url:
        return Settings.from_url(
            settings.dev_database_url, application_name=_APP_NAME, source=_DEV_SOURCE
        )
    why_not = None
    if not settings.embedded and settings.source != _EMBEDDED_SOURCE:
        # No release in the name: a scratch connection is no release of the application.
        own = settings.replace(application_name=_APP_NAME, connect_timeout=2.0, release=None)
        why_not = _cannot_host(own)
        if why_not is None:
            return own
    from ..embedded import ensure_server

    try:
        server = ensure_server(settings.embedded_dir)
    except (DatalayerError, OSError) as exc:  # not installed, cannot start, bad directory
        fix = (
            "set DATALAYER_DEV_DATABASE_URL to a server whose user has CREATEDB "
            "(postgresql://user:password@host:5432/postgres)"
        )
        reason = "DATALAYER_DEV_DATABASE_URL is unset"
        if why_not is not None:
            reason += f", the server of {settings.source} cannot hold them ({why_not})"
        raise MigrationError(
            f"no scratch database server: {reason} and the embedded server is not available "
            f"({_first_line(exc)}); {fix}"
        ) from None
    return Settings.from_url(server.url, application_name=_APP_NAME, source=_EMBEDDED_SOURCE)


def _cannot_host(admin: Settings) -> str | None:
    """Say why ``admin``'s server cannot hold scratch databases; None when it can."""
    import psycopg2

    try:
        conn = psycopg2.connect(**admin.connect_kwargs())
    except psycopg2.Error as exc:
        return f"cannot connect: {_first_line(exc)}"
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT (SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = "
                "current_user), inet_server_port()"
            )
            may, port = cur.fetchone()
    except psycopg2.Error as exc:
        return _first_line(exc)
    finally:
        conn.close()
    if not may:
        return f"its user {admin.user} may not create databases: no CREATEDB"
    if port is not None and port != admin.port:
        # PgBouncer or another proxy, which would not know a new database.
        return f"port {admin.port} reaches a server on port {port}: a pooler or proxy"
    return None


def _where(admin: Settings) -> tuple[str, str]:
    """Name the scratch server and say how to fix a connection to it."""
    if admin.source == _EMBEDDED_SOURCE:
        return (
            f"the embedded scratch server {admin.describe()}",
            "set DATALAYER_DEV_DATABASE_URL to a server whose user has CREATEDB",
        )
    if admin.source == _DEV_SOURCE:
        return (
            f"the scratch server {admin.describe()} ({_DEV_SOURCE})",
            "fix DATALAYER_DEV_DATABASE_URL (host, port, user, password) or start that server",
        )
    return (
        f"the scratch server {admin.describe()} ({admin.source})",
        "set DATALAYER_DEV_DATABASE_URL to a server whose user has CREATEDB",
    )


def _owner_gone(name: str, markers: set[str], local: bool) -> bool:
    match = _NAME.match(name)
    if match is not None:
        return _MARKER + match.group(1) not in markers
    old = _OLD_NAME.match(name)
    if old is None or not local:
        return False
    try:
        os.kill(int(old.group(1)), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return False


def _drop_leftovers(cur: Any, admin: Settings) -> None:
    """Drop the scratch databases whose owner is gone (killed, or Ctrl-C mid-drop).

    A database in use has its owner's marked connection (made before it was
    created, closed after it was dropped) or a session in it.  One made by
    an older datalayer (no marker) is dropped only on a server of this host
    whose creating process is gone.  Databases this user may not drop are
    left alone.
    """
    import psycopg2
    from psycopg2 import sql

    pattern = _PREFIX.replace("_", r"\_") + "%"
    cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,))
    names = [row[0] for row in cur.fetchall()]
    if not names:
        return
    # Read after the list: a database listed above has its owner's marker by now, if alive.
    cur.execute("SELECT application_name, datname FROM pg_stat_activity")
    rows = cur.fetchall()
    markers = {row[0] for row in rows if row[0]}
    in_use = {row[1] for row in rows if row[1]}
    local = (admin.host or "").startswith("/") or admin.host in ("127.0.0.1", "::1", "localhost")
    for name in names:
        if name in in_use or not _owner_gone(name, markers, local):
            continue
        with contextlib.suppress(psycopg2.Error):  # not ours to drop, or just dropped
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@contextlib.contextmanager
def scratch_database(
    admin: Settings,
    label: str,
    settings: Settings | None = None,
    on_connect: Callable[[int], None] | None = None,
) -> Iterator[Settings]:
    """Create an empty database on ``admin``'s server, yield its settings, drop it.

    ``admin`` comes from :func:`scratch_server` (its ``source`` shapes the
    messages); ``settings`` is accepted for compatibility and unused.  Before
    creating, leftovers of killed runs on that server are dropped.
    ``on_connect(server_version_num)`` is called once connected, before the
    database is created.

    :raises MigrationError: when the server cannot be reached or its user may
        not create databases; the message says what to set or fix.
    """
    import psycopg2
    from psycopg2 import sql

    del settings
    where, fix = _where(admin)
    token = f"{os.getpid()}_{uuid.uuid4().hex[:12]}"  # the pid: whose it is, for a reader
    name = f"{_PREFIX}{label}_{token}"
    try:
        # The owner's connection, marked with the token, lives as long as the database.
        owner = psycopg2.connect(
            **admin.replace(application_name=_MARKER + token, release=None).connect_kwargs()
        )
    except psycopg2.Error as exc:
        raise MigrationError(f"cannot connect to {where}: {_first_line(exc)}; {fix}") from None
    try:
        if on_connect is not None:
            on_connect(owner.server_version)
        owner.autocommit = True
        cur = owner.cursor()
        try:
            try:
                _drop_leftovers(cur, admin)
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg2.Error as exc:
                raise MigrationError(
                    f"cannot create a scratch database on {where}: {_first_line(exc)}; set "
                    "DATALAYER_DEV_DATABASE_URL to a server and user with CREATEDB (`ALTER "
                    "ROLE ... CREATEDB`; each scratch database is dropped afterwards)"
                ) from None
            yield admin.replace(dbname=name, max_open_conns=2, max_idle_conns=1)
        finally:
            # Also when the CREATE itself was interrupted: Ctrl-C lands after it completes.
            with contextlib.suppress(psycopg2.Error):
                _drop(cur, name)
    finally:
        owner.close()


class Pending:
    """A scratch database being created in the background (see :func:`scratch_database_soon`).

    Calling it waits for the database and returns its settings;
    :meth:`server_version` waits only for the connection to its server.
    """

    def __init__(
        self,
        made: concurrent.futures.Future[Settings],
        version: concurrent.futures.Future[int],
    ) -> None:
        self._made, self._version = made, version

    def __call__(self) -> Settings:
        """Return the database's settings once created (or raise why it cannot be)."""
        return self._made.result()

    def server_version(self) -> int:
        """Return the server's ``server_version_num`` (or raise why it cannot be reached)."""
        return self._version.result()


@contextlib.contextmanager
def scratch_database_soon(admin: Settings, label: str) -> Iterator[Pending]:
    """Start creating a scratch database in the background; yield a :class:`Pending`.

    The server creates it (``CREATE DATABASE`` copies ``template1`` and syncs it to
    disk) while the caller works on something else; calling the yielded object
    returns its settings, or raises the :class:`MigrationError` of
    :func:`scratch_database`; its ``server_version()`` is known as soon as the
    server is connected.  On leaving the block the creation is waited for
    (also after an error or Ctrl-C) and the database dropped.
    """
    version: concurrent.futures.Future[int] = concurrent.futures.Future()
    made = scratch_database(admin, label, None, version.set_result)

    def create() -> Settings:
        try:
            created = made.__enter__()
        except BaseException as exc:
            if not version.done():  # not connected: the version waits on the same error
                version.set_exception(exc)
            raise
        if not version.done():  # made without telling (a stand-in): ask the database made
            import psycopg2

            try:
                conn = psycopg2.connect(**created.connect_kwargs())
                try:
                    version.set_result(conn.server_version)
                finally:
                    conn.close()
            except psycopg2.Error as exc:
                version.set_exception(exc)
        return created

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="datalayer-scratch") as pool:
        future = pool.submit(create)
        try:
            yield Pending(future, version)
        finally:
            # Waits for the creation; one that failed has nothing to drop.
            if future.exception() is None:
                made.__exit__(None, None, None)


def _drop(cur: Any, name: str) -> None:
    import psycopg2.errors
    from psycopg2 import sql

    ident = sql.Identifier(name)
    if cur.connection.server_version >= 130000:  # closes what is still connected to it
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        return
    for attempt in range(50):  # PostgreSQL 12: terminate, then wait for the sessions to go
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        try:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))
            return
        except psycopg2.errors.ObjectInUse:
            if attempt == 49:
                raise
            time.sleep(0.1)


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
    from .runtime.apply import apply
    from .runtime.files import Router

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
