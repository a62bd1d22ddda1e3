"""What the migration commands accept (settings or a database) and a connection held for one run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee as pw

from ...config import Settings

__all__ = ["Target"]


Target = Settings | pw.Database
"""What the functions accept: settings (a private pool is opened and closed) or a database."""


def _describe(db: Any) -> str:
    settings = getattr(db, "_settings", None)
    if isinstance(settings, Settings):
        return settings.describe()
    return f"database {db.database!r}"


def _default_dir(target: Target) -> Path:
    from ...project import default_migrations_dir

    settings = target if isinstance(target, Settings) else getattr(target, "_settings", None)
    return default_migrations_dir(settings if isinstance(settings, Settings) else None)


@contextlib.contextmanager
def _connected(target: Target) -> Iterator[Any]:
    """Yield a peewee database with a connection checked out for this thread.

    The pool's client timeout (DB_CLIENT_TIMEOUT, by default DB_STATEMENT_TIMEOUT
    + 5 s) is lifted for that connection: it is meant for the application's
    queries, while migrations run under timeouts of their own (``lock_timeout``,
    ``statement_timeout``, none by default) and may legitimately take far longer.
    """
    if isinstance(target, Settings):
        from ...db import Database, resolve

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
