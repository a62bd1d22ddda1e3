"""datalayer: the PostgreSQL data layer of an auth-style service, on Peewee.

``import datalayer`` is cheap: names are imported on first use, and the
migration tooling (peewee-migrate) and the CLI are never loaded by it.

    import datalayer
    db = datalayer.connect()            # from the environment; embedded server if none set
    with db.checkout():
        ...
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logging.getLogger(__name__).addHandler(logging.NullHandler())
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
    # models
    "BaseModel": "datalayer.models",
    "MODELS": "datalayer.models",
    "RefreshToken": "datalayer.models",
    "Role": "datalayer.models",
    "User": "datalayer.models",
    "renamed_from": "datalayer.migrate.hints",
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
    "PoolTimeout": "datalayer.errors",
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
