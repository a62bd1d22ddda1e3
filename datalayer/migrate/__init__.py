"""Migrations: generate from the models, verify checksums, apply under a lock, report status.

Built on peewee-migrate (its Router and Migrator, extended through their own
seams).  Importing ``datalayer`` does not import this package; importing this
package does not import peewee-migrate until a function is used.

    from datalayer import migrate
    migrate.status(settings)            # Status(applied, pending, modified, missing)
    migrate.apply(settings)             # under an advisory lock, one transaction each
    migrate.create_migration(router, "add_role")   # or: datalayer migrate diff add_role
    migrate.check(settings)             # problems for CI, [] when all is well
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "Applied": "datalayer.migrate.runner",
    "Status": "datalayer.migrate.runner",
    "apply": "datalayer.migrate.runner",
    "rollback": "datalayer.migrate.runner",
    "status": "datalayer.migrate.runner",
    "check": "datalayer.migrate.check",
    "create_migration": "datalayer.migrate.generate",
    "DiffResult": "datalayer.migrate.generate",
    "DropRefused": "datalayer.migrate.generate",
    "GenerationError": "datalayer.migrate.generate",
    "write_sum": "datalayer.migrate.checksum",
    "verify": "datalayer.migrate.checksum",
    "Router": "datalayer.migrate.router",
    "PrecheckFailed": "datalayer.migrate.runtime.prechecks",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'datalayer.migrate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
