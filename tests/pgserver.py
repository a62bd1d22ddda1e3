"""Find a PostgreSQL server for the tests, and make throwaway databases on it.

Order: ``TEST_DATABASE_URL`` if set, else 127.0.0.1:5432 (user postgres), else
the embedded server in a temporary directory (stopped and removed at the end).
``TEST_DATABASE_URL=embedded`` forces the embedded server even when 5432 answers.
``TEST_REPLICA=1`` uses an embedded server too, and a streaming standby of it built with
``pg_basebackup -R``: every test database's settings (:meth:`Server.settings`) then name
the standby in ``replicas`` (DB_REPLICA_URLS), so the whole suite runs with replicas
configured and every write path must still reach the primary.
The session header (``pytest_report_header``) says which one :func:`choice` picks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from datalayer.config import Settings

_LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(settings: Settings) -> bool:
    try:
        conn = psycopg2.connect(**{**settings.connect_kwargs(), "connect_timeout": 2})
    except psycopg2.OperationalError:
        return False
    conn.close()
    return True


EMBEDDED = "embedded"
"""The value of TEST_DATABASE_URL that forces the embedded server."""


def _masked(url: str) -> str:
    try:
        return Settings.from_url(url).url(masked=True)
    except Exception:  # never echo a URL we cannot parse: it may hold a password
        return "(not shown: it does not parse)"


def replica_wanted() -> bool:
    return os.environ.get("TEST_REPLICA", "").strip() not in ("", "0")


def choice() -> tuple[str, str | None]:
    """Return (what the tests will use, in words; the URL or None for embedded)."""
    if replica_wanted():
        return ("an embedded server and a streaming standby of it in DB_REPLICA_URLS "
                "(TEST_REPLICA=1)", None)
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if url == EMBEDDED:
        return "an embedded server in a temporary directory (TEST_DATABASE_URL=embedded)", None
    if url:
        return f"TEST_DATABASE_URL {_masked(url)}", url
    if _reachable(Settings.from_url(_LOCAL)):
        return "the server on 127.0.0.1:5432 (user postgres)", _LOCAL
    return (
        "an embedded server in a temporary directory (nothing answers on 127.0.0.1:5432)",
        None,
    )


class Server:
    """A server the tests may create databases on (as a superuser)."""

    def __init__(self) -> None:
        self.embedded_dir: Path | None = None
        self.standby: Any = None
        # One thread that creates databases ahead and drops them behind (see database()).
        self._behind: ThreadPoolExecutor | None = None
        self._ahead: dict[tuple[str, str | None], Future[str]] = {}
        self._drops: list[Future[None]] = []
        self.kind, url = choice()
        if url is not None:
            self.admin = Settings.from_url(url)
        else:
            from datalayer.embedded import ensure_server

            self.embedded_dir = Path(tempfile.mkdtemp(prefix="datalayer-test-pg-")) / "pg"
            try:
                server = ensure_server(self.embedded_dir)
            except BaseException:
                self.stop()
                raise
            self.admin = Settings.from_url(server.url)
            self.kind = f"{self.kind}: {server.url}"
            if replica_wanted():
                from tests._replica_helpers import make_standby

                try:
                    self.standby = make_standby(server.port, self.embedded_dir.parent / "standby")
                except BaseException:
                    self.stop()
                    raise
                self.kind = f"{self.kind}, standby {self.standby.url}"
        self.admin = self.admin.replace(application_name="datalayer-tests")

    def raw(self, dbname: str | None = None) -> psycopg2.extensions.connection:
        """Return an autocommit connection to ``dbname`` (default: the admin database)."""
        s = self.admin if dbname is None else self.admin.replace(dbname=dbname)
        conn = psycopg2.connect(**s.connect_kwargs())
        conn.autocommit = True
        return conn

    def settings(self, dbname: str, **overrides: object) -> Settings:
        if self.standby is not None and "replicas" not in overrides:
            overrides["replicas"] = (self.standby.url.rsplit("/", 1)[0] + "/" + dbname,)
        return self.admin.replace(dbname=dbname, application_name="datalayer-tests", **overrides)

    def create_database(self, prefix: str = "dltest", template: str | None = None) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = self.raw()
        try:
            with conn.cursor() as cur:
                stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                if template:
                    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                cur.execute(stmt)
        finally:
            conn.close()
        return name

    def drop_database(self, name: str) -> None:
        conn = self.raw()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        finally:
            conn.close()

    def _background(self) -> ThreadPoolExecutor:
        if self._behind is None:
            self._behind = ThreadPoolExecutor(max_workers=3, thread_name_prefix="pgserver")
        return self._behind

    @contextlib.contextmanager
    def database(
        self, prefix: str = "dltest", template: str | None = None, *, ahead: bool = False
    ) -> Iterator[str]:
        """A new database for the block, dropped after it (by a background thread).

        CREATE DATABASE and DROP DATABASE take about as long as a short test on a
        busy server (each writes and syncs a whole database's files); no one uses a
        database after its block, so the drop runs in the background while the next
        test runs.  With ``ahead`` the next database of the same prefix and template
        is also created in the background, for the next block to take: only for a
        template that does not change during the session (none, or the session's
        ``template_db``).  Every database is still new and used by one block only.
        A failed drop is raised by :meth:`stop`.
        """
        key = (prefix, template)
        made = self._ahead.pop(key, None) if ahead else None
        name = made.result() if made is not None else self.create_database(prefix, template)
        if ahead:
            self._ahead[key] = self._background().submit(self.create_database, prefix, template)
        try:
            yield name
        finally:
            self._drops.append(self._background().submit(self.drop_database, name))

    def _finish_background(self) -> None:
        """Drop the databases made ahead and wait for every drop; raise the first failure."""
        if self._behind is None:
            return
        for made in self._ahead.values():
            with contextlib.suppress(Exception):  # a failed creation left nothing to drop
                self._drops.append(self._behind.submit(self.drop_database, made.result()))
        self._ahead.clear()
        self._behind.shutdown(wait=True)
        self._behind = None
        drops, self._drops = self._drops, []
        for dropped in drops:
            dropped.result()

    def stop(self) -> None:
        """Stop and remove the embedded server, and its temporary directory, if one was made."""
        try:
            self._finish_background()
        finally:
            self._stop_servers()

    def _stop_servers(self) -> None:
        if self.standby is not None:
            with contextlib.suppress(Exception):
                self.standby.stop("immediate")
            self.standby = None
        if self.embedded_dir is not None:
            from datalayer.embedded import remove_server

            remove_server(self.embedded_dir)
            shutil.rmtree(self.embedded_dir.parent, ignore_errors=True)  # the mkdtemp
