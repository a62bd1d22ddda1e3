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
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

_LAZY: dict[str, str] = {
    "Applied": "datalayer.migrate.runtime.apply",
    "Status": "datalayer.migrate.runtime.apply",
    "apply": "datalayer.migrate.runtime.apply",
    "rollback": "datalayer.migrate.runtime.apply",
    "status": "datalayer.migrate.runtime.apply",
    "check": "datalayer.migrate.check",
    "create_migration": "datalayer.migrate.autogenerate.compare",
    "DiffResult": "datalayer.migrate.autogenerate.compare",
    "DropRefused": "datalayer.migrate.autogenerate.compare",
    "GenerationError": "datalayer.errors",
    "write_sum": "datalayer.migrate.runtime.checksum",
    "verify": "datalayer.migrate.runtime.checksum",
    "Router": "datalayer.migrate.runtime.files",
    "PrecheckFailed": "datalayer.migrate.runtime.prechecks",
}

__all__ = sorted(_LAZY)

# Module paths the documentation names, kept importable after the move to
# operations/, autogenerate/, runtime/: the old name is the new module itself.
_MOVED: dict[str, str] = {
    "datalayer.migrate.runner": "datalayer.migrate.runtime.apply",
    "datalayer.migrate.checksum": "datalayer.migrate.runtime.checksum",
    "datalayer.migrate.offline": "datalayer.migrate.runtime.offline",
    "datalayer.migrate.hints": "datalayer.migrate.autogenerate.hints",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import a documented old module path as the module it moved to."""

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in _MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its new name."""


if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedFinder())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'datalayer.migrate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
