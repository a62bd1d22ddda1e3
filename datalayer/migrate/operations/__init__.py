"""Operations as data: one immutable object per operation a migration performs.

The migrator's methods (which migration files call) record one of these per
call, with the SQL steps it queued: ``DatalayerMigrator.take_operations()``
returns them.  A replay records them too (with no steps: it derives no SQL).
Each knows its kind, whether it is an *expand* or a *contract* step
(:class:`Phase`), a one-line :meth:`~Operation.describe`, its
:meth:`~Operation.inverse` (or why it has none), whether it can run in a
transaction, and its statements with their lock facts.
"""

from .base import Operation, Phase
from .kinds import (
    AddColumns,
    AddIndex,
    AddNotNull,
    AlterColumns,
    Backfill,
    BackgroundBackfill,
    CreateTable,
    DropColumns,
    DropIndex,
    DropNotNull,
    DropTable,
    PythonFunction,
    RawSql,
    RenameColumn,
    RenameIndex,
    RenameTable,
    RequireEmpty,
    SetConstraints,
    SetModelMeta,
    SetSchema,
    ValidateConstraints,
)

__all__ = [
    "AddColumns",
    "AddIndex",
    "AddNotNull",
    "AlterColumns",
    "Backfill",
    "BackgroundBackfill",
    "CreateTable",
    "DropColumns",
    "DropIndex",
    "DropNotNull",
    "DropTable",
    "Operation",
    "Phase",
    "PythonFunction",
    "RawSql",
    "RenameColumn",
    "RenameIndex",
    "RenameTable",
    "RequireEmpty",
    "SetConstraints",
    "SetModelMeta",
    "SetSchema",
    "ValidateConstraints",
]
