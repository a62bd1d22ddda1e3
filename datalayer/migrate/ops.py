"""Give generated migration files datalayer's operations, whichever migrator runs them.

A generated file starts its ``migrate`` and ``rollback`` with::

    from datalayer.migrate.ops import extend
    m = extend(migrator)

so that it gets :class:`~datalayer.migrate.operations.migrator.DatalayerMigrator`'s
operations whichever migrator the runner passed (peewee-migrate's own under
``pw_migrate migrate``, or datalayer's).  ``m.ref(...)`` and ``m.typed(...)``
are reached through the same object.
"""

from __future__ import annotations

from peewee_migrate import Migrator

from .operations.migrator import DatalayerMigrator, ref, typed

__all__ = ["extend", "ref", "typed"]


def extend(migrator: Migrator) -> DatalayerMigrator:
    """Return ``migrator`` with datalayer's operations (state shared, nothing copied)."""
    return DatalayerMigrator.extend(migrator)
