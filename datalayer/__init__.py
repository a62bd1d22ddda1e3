"""datalayer: the PostgreSQL data layer of an auth-style service, on Peewee.

``import datalayer`` is cheap: names are imported on first use, and the
migration tooling (peewee-migrate) and the CLI are never loaded by it.

    import datalayer
    db = datalayer.connect()            # from the environment; embedded server if none set
    with db.checkout():
        ...
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from typing import Any

logging.getLogger(__name__).addHandler(logging.NullHandler())


class _NoPsycopg3ForPeewee:
    """Keep peewee's import from loading psycopg 3, which datalayer never uses.

    peewee 4 imports ``psycopg`` (psycopg 3) at import time when it is
    installed, only to offer it as an alternative driver: about 0.2 s of
    start-up for every script and worker.  While peewee's module is being
    executed, this finder answers "not installed" for ``psycopg``; then it
    removes itself.  The same holds for ``playhouse.postgres_ext``.  An
    application's own ``import psycopg`` (before or after) is not affected;
    peewee in this process then uses psycopg2 only, as datalayer does.
    """

    watched = ("peewee", "playhouse.postgres_ext")

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> None:
        loading = False
        loaded = 0
        for watched in cls.watched:
            module = sys.modules.get(watched)
            if module is None:
                continue
            if getattr(getattr(module, "__spec__", None), "_initializing", False):
                loading = True
            else:
                loaded += 1
        if name in ("psycopg", "psycopg_binary", "psycopg_c") and loading:
            raise ModuleNotFoundError("datalayer does not load psycopg for peewee", name=name)
        if loaded == len(cls.watched):
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(cls)
        return None


if "peewee" not in sys.modules and "psycopg" not in sys.modules:
    sys.meta_path.insert(0, _NoPsycopg3ForPeewee)
# peewee logs every query's parameters at DEBUG (password and token hashes among them).
importlib.import_module("datalayer._redact").install()

__version__ = "0.1.0.dev0"

# public name -> module that defines it (imported lazily by __getattr__)
_LAZY: dict[str, str] = {
    # configuration and database
    "Settings": "datalayer.config",
    "load_settings": "datalayer.config",
    "mask_url": "datalayer.config",
    "Database": "datalayer.db",
    "connect": "datalayer.db",
    "close": "datalayer.db",
    "database": "datalayer.db",
    "get_database": "datalayer.db",
    # the project ([tool.datalayer] in pyproject.toml)
    "Project": "datalayer.project",
    "load_project": "datalayer.project",
    # models
    "BaseModel": "datalayer.models",
    "MODELS": "datalayer.models",
    "RefreshToken": "datalayer.models",
    "Role": "datalayer.models",
    "User": "datalayer.models",
    "renamed_from": "datalayer.migrate.autogenerate.hints",
    # retrying whole units of work
    "RetryInTransactionError": "datalayer.retry",
    "RetryPolicy": "datalayer.retry",
    "is_retryable": "datalayer.retry",
    "retrying": "datalayer.retry",
    "run_transaction": "datalayer.retry",
    # operations on users and refresh tokens
    "authenticate": "datalayer.auth.users",
    "create_user": "datalayer.auth.users",
    "deactivate_user": "datalayer.auth.users",
    "delete_user": "datalayer.auth.users",
    "get_user": "datalayer.auth.users",
    "get_user_by_email": "datalayer.auth.users",
    "import_users": "datalayer.auth.users",
    "IssuedToken": "datalayer.auth.tokens",
    "issue_token": "datalayer.auth.tokens",
    "purge_expired": "datalayer.auth.tokens",
    "revoke_all_for_user": "datalayer.auth.tokens",
    "revoke_token": "datalayer.auth.tokens",
    "rotate_token": "datalayer.auth.tokens",
    "hash_password": "datalayer.auth.passwords",
    "verify_password": "datalayer.auth.passwords",
    # errors
    "AuthenticationError": "datalayer.errors",
    "ChecksumError": "datalayer.errors",
    "CommitUnknown": "datalayer.errors",
    "ConfigError": "datalayer.errors",
    "ConnectionLost": "datalayer.errors",
    "DatabaseUnavailable": "datalayer.errors",
    "DatalayerError": "datalayer.errors",
    "DuplicateError": "datalayer.errors",
    "EmbeddedServerError": "datalayer.errors",
    "LockTimeout": "datalayer.errors",
    "MigrationError": "datalayer.errors",
    "NotFound": "datalayer.errors",
    "PoolClosed": "datalayer.errors",
    "ProjectError": "datalayer.errors",
    "ReplicaWriteError": "datalayer.errors",
    "PoolTimeout": "datalayer.errors",
    "TableMissing": "datalayer.errors",
    "TokenReuseError": "datalayer.errors",
    "TooManyConnections": "datalayer.errors",
    "ValidationError": "datalayer.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'datalayer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
