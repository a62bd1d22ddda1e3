"""Find a PostgreSQL server for the tests, and make throwaway databases on it.

Order: ``TEST_DATABASE_URL`` if set, else 127.0.0.1:5432 (user postgres), else
the embedded server in a temporary directory (stopped at the end).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

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


class Server:
    """A server the tests may create databases on (as a superuser)."""

    def __init__(self) -> None:
        self.embedded_dir: Path | None = None
        url = os.environ.get("TEST_DATABASE_URL")
        if url:
            self.admin = Settings.from_url(url)
            self.kind = "TEST_DATABASE_URL"
        elif _reachable(local := Settings.from_url(_LOCAL)):
            self.admin = local
            self.kind = "local 127.0.0.1:5432"
        else:
            from datalayer.embedded import ensure_server

            self.embedded_dir = Path(tempfile.mkdtemp(prefix="datalayer-test-pg-")) / "pg"
            server = ensure_server(self.embedded_dir)
            self.admin = Settings.from_url(server.url)
            self.kind = f"embedded {server.url}"
        self.admin = self.admin.replace(application_name="datalayer-tests")

    def raw(self, dbname: str | None = None) -> psycopg2.extensions.connection:
        """Return an autocommit connection to ``dbname`` (default: the admin database)."""
        s = self.admin if dbname is None else self.admin.replace(dbname=dbname)
        conn = psycopg2.connect(**s.connect_kwargs())
        conn.autocommit = True
        return conn

    def settings(self, dbname: str, **overrides: object) -> Settings:
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

    @contextlib.contextmanager
    def database(self, prefix: str = "dltest", template: str | None = None) -> Iterator[str]:
        name = self.create_database(prefix, template)
        try:
            yield name
        finally:
            self.drop_database(name)

    def stop(self) -> None:
        if self.embedded_dir is not None:
            from datalayer.embedded import remove_server

            remove_server(self.embedded_dir)
