"""Tell whether a connection goes through a connection pooler such as PgBouncer.

A pooler in transaction mode hands each transaction to whichever server
connection is free, so session state — a session advisory lock, ``SET``
without ``LOCAL``, ``client_connection_check_interval`` — does not stay with
the client.  Ordinary operations do not care; ``migrate apply`` does (its
lock must be held by one session for the whole run).

The test is exact and cheap: libpq reports the backend process id that the
server sent at connection start (BackendKeyData).  A direct connection, even
through NAT or a TCP proxy, reports the pid of its own backend, which is what
``pg_backend_pid()`` returns.  PgBouncer (and other poolers that multiplex)
answers the client's start-up itself with a made-up key, so the two differ.
"""

from __future__ import annotations

from typing import Any

from .errors import MigrationError

__all__ = ["pooler_detected", "require_direct_connection"]


def _raw(conn: Any) -> Any:
    """Return the psycopg2 connection of ``conn`` (a peewee database or a raw connection)."""
    connection = getattr(conn, "connection", None)
    if callable(connection) and not hasattr(conn, "info"):
        return connection()
    return conn


def pooler_detected(conn: Any) -> bool:
    """Return True when ``conn`` (a psycopg2 connection or a peewee database) is pooled.

    A peewee database must have a connection open in the calling thread.
    """
    raw = _raw(conn)
    reported = int(raw.info.backend_pid)
    cur = raw.cursor()
    try:
        cur.execute("SELECT pg_backend_pid()")
        row = cur.fetchone()
    finally:
        cur.close()
    return row is None or int(row[0]) != reported


def require_direct_connection(conn: Any, *, what: str = "datalayer migrate apply",
                              where: str = "the database") -> None:
    """Raise :class:`MigrationError` when ``conn`` goes through a connection pooler.

    :raises MigrationError: naming the way out (a direct connection for this command).
    """
    if pooler_detected(conn):
        raise MigrationError(
            f"{what} needs a direct connection to PostgreSQL, but {where} is reached "
            "through a connection pooler such as PgBouncer: in transaction pooling the "
            "session advisory lock that makes concurrent runs safe does not stay with this "
            "session. Run it with DATABASE_URL (or DB_HOST / DB_PORT) pointing at the server "
            "itself, not at the pooler"
        )
