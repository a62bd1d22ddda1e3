"""The package's exceptions: one root, a few named conditions below it.

Every message says what happened and what to do, and never carries a
password, a raw token or a password hash.  Driver errors are translated at the
boundary with ``raise ... from exc`` so the cause stays available.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class DatalayerError(Exception):
    """Root of every error the package raises on purpose."""


class ConfigError(DatalayerError, ValueError):
    """The configuration is invalid; ``problems`` maps each variable to its message."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        lines = [f"{name}: {msg}" for name, msg in sorted(self.problems.items())]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


class ProjectError(DatalayerError, ValueError):
    """The project's configuration ([tool.datalayer], --models, --dir) or models are unusable."""


class TableMissing(DatalayerError):
    """A query used a table that does not exist yet: the migrations are not applied."""


class ValidationError(DatalayerError, ValueError):
    """A value given to a model does not fit its field; nothing was written."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class NotFound(DatalayerError, LookupError):
    """The row asked for does not exist."""


class DuplicateError(DatalayerError, ValueError):
    """A unique value (such as an e-mail address) is already taken."""


class AuthenticationError(DatalayerError):
    """Credentials or a token were not accepted."""


class TokenReuseError(AuthenticationError):
    """A revoked refresh token was presented again; its whole family is now revoked."""


class DatabaseUnavailable(DatalayerError):
    """The server cannot be reached or the connection was lost."""


class ConnectionLost(DatabaseUnavailable):
    """The connection broke while a statement or transaction was in flight."""


class CommitUnknown(ConnectionLost):
    """The connection broke during COMMIT: the transaction may or may not have committed.

    Not retried by :mod:`datalayer.retry` (running the unit again could write it twice).
    """


class PoolTimeout(DatabaseUnavailable):
    """No pooled connection became free within DB_POOL_TIMEOUT."""


class TooManyConnections(DatabaseUnavailable):
    """The server refused a new connection: its connection limit is reached (SQLSTATE 53300).

    Raised once the pool has waited DB_POOL_TIMEOUT for one of its own
    connections to come back.  Not retried by :mod:`datalayer.retry`.
    """


class PoolClosed(DatalayerError):
    """The pool was closed; set the package up again before using it."""


class EmbeddedServerError(DatalayerError):
    """The embedded PostgreSQL server could not be set up or started."""


class MigrationError(DatalayerError):
    """A migration command failed."""


class ChecksumError(MigrationError):
    """The migration files do not match the checksum file."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        super().__init__(message)


class GenerationError(MigrationError):
    """A migration could not be generated; ``problems`` lists why."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        text = message if not self.problems else message + ":\n  " + "\n  ".join(self.problems)
        super().__init__(text)


class LockTimeout(MigrationError):
    """Another process held the migration lock for too long."""


__all__ = [
    "AuthenticationError",
    "ChecksumError",
    "CommitUnknown",
    "ConfigError",
    "ConnectionLost",
    "DatabaseUnavailable",
    "DatalayerError",
    "DuplicateError",
    "EmbeddedServerError",
    "GenerationError",
    "LockTimeout",
    "MigrationError",
    "NotFound",
    "PoolClosed",
    "PoolTimeout",
    "TokenReuseError",
    "TooManyConnections",
    "ValidationError",
]


class ReplicaWriteError(DatalayerError):
    """A statement that writes was sent to a read replica (inside ``db.read_replica()``)."""
