"""Extend peewee-migrate's Migrator with operations that keep the schema exact.

Every method updates the in-memory model of the table (``migrator.orm``),
which is how peewee-migrate knows the current schema when it replays applied
migrations with ``fake=True``, and builds one operation (:mod:`.`) from the
table's specs before and after that change: the operation's ``sql()`` (the
ddl planners, :mod:`..ddl.alter`, on those specs) is what it queues, so
server defaults, CHECK constraints, foreign key actions, index names and
partial indexes all come out as ``create_tables()`` would make them.
Nothing here runs SQL while queueing.  Inside :func:`replaying` the
operations are recorded without specs and queue nothing: rendering the
specs made a replay of 1000 files about 7 times slower.

The class is put together from one module per concern: :mod:`.migrator_core` (find,
change, record, queue: what every operation goes through), :mod:`.migrator_tables`,
:mod:`.migrator_columns`, :mod:`.migrator_indexes` and :mod:`.migrator_data` (the
operations by what they change), :mod:`.recording` (the replay switch, the recorded
operations with their steps) and :mod:`.queued` (batched fills and the other callables
queued beside SQL).  Every name this module had is importable from it still.

Generated migration files call :func:`datalayer.migrate.ops.extend` on the
migrator they are given, so they work the same under ``pw_migrate migrate``
(plain Migrator) and under datalayer's Router (this class).

Operations that take ``online=True`` queue the forms that keep the table
readable and writable (see :mod:`..ddl.alter`); some of their statements cannot
run in a transaction block (``CREATE INDEX CONCURRENTLY``, batched fills), so
the generator puts them in migrations with ``atomic = False``.  Under
``pw_migrate migrate``, which runs every migration in one transaction, such
a statement commits what the migration did so far, runs on its own, and
opens a new transaction for the rest (and for the history row).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

import peewee as pw
from peewee_migrate import Migrator

from ..ddl.spec import UnsupportedChange
from .migrator_columns import ColumnMethods
from .migrator_core import bind, bound
from .migrator_data import DataMethods
from .migrator_indexes import IndexMethods
from .migrator_tables import TableMethods
from .queued import _UPSTREAM, RowsGuard, run_fill
from .recording import Opaque, Owners, Recorded, replaying

__all__ = [
    "DatalayerMigrator",
    "Opaque",
    "Owners",
    "Recorded",
    "RowsGuard",
    "UnsupportedChange",
    "bind",
    "bound",
    "ref",
    "replaying",
    "run_fill",
    "typed",
]

F = TypeVar("F", bound=pw.Field)


def ref(module: str, qualname: str) -> Callable[..., Any]:
    """Return the object ``module.qualname`` (a callable default of a field, e.g. ``uuid.uuid4``).

    :raises ImportError: naming the object when it no longer exists; restore it or edit the
        migration to use a literal default.
    """
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"a migration refers to {module}.{qualname} (a field default), which cannot be "
            f"imported ({exc}); restore it or edit the migration to use a literal default"
        ) from None
    if not callable(obj):
        raise ImportError(f"{module}.{qualname} is not callable; it cannot be a field default")
    result: Callable[..., Any] = obj
    return result


def typed(field: F, field_type: str) -> F:
    """Return ``field`` with its column type set to ``field_type`` (a custom field's type)."""
    vars(field)["field_type"] = field_type  # an instance attribute shadows the class's
    return field


class DatalayerMigrator(TableMethods, ColumnMethods, IndexMethods, DataMethods):
    """A peewee-migrate ``Migrator`` whose operations reproduce ``create_tables()`` exactly.

    Operations beyond peewee-migrate's: :meth:`alter_fields` (type change
    with ``USING``), :meth:`rename_column`, :meth:`add_named_index`,
    :meth:`drop_named_index`, :meth:`rename_index`, :meth:`set_constraints`,
    :meth:`set_model_meta`, :meth:`set_schema`, :meth:`require_empty`.  Overridden with the
    same signatures:
    ``create_model``, ``remove_model``, ``add_fields``, ``remove_fields``,
    ``change_fields``, ``rename_field``, ``rename_table``, ``add_index``,
    ``drop_index``, ``add_not_null``, ``drop_not_null``.  One deliberate
    difference: ``remove_model`` and ``remove_fields`` do not CASCADE unless
    asked, so a drop that would take a view or another table's foreign key
    along fails instead.
    """

    ref = staticmethod(ref)
    typed = staticmethod(typed)

    @classmethod
    def extend(cls, migrator: Migrator) -> DatalayerMigrator:
        """Return a ``DatalayerMigrator`` sharing all state with ``migrator``.

        The two objects share one attribute dictionary, so operations queued
        through either run when the original is called, and models added
        through either are seen by both.

        :raises TypeError: when ``migrator`` is not a peewee-migrate Migrator.
        """
        if isinstance(migrator, cls):
            return migrator
        if not isinstance(migrator, Migrator):
            raise TypeError(
                f"expected a peewee_migrate.Migrator, got {type(migrator).__name__}; "
                "call extend() with the migrator passed to migrate()/rollback()"
            )
        extended = cls.__new__(cls)
        extended.__dict__ = migrator.__dict__
        extended.__dict__[_UPSTREAM] = True
        return extended
