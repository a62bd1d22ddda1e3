"""Operations as data: one immutable value per operation a migration performs.

Design (issue 15, item 1), after Django's ``state_forwards`` and alembic's ``ops.py``:
- An operation carries its own data: the table's specs ``before`` and ``after`` it
  (:class:`~..ddl.spec.TableSpec`), those of the other tables it changes (``referrers``:
  a foreign key to a renamed table), and its options (renames, using, online, cascade).
- ``forward(state)`` is its pure state change on a :class:`SchemaState` (table name ->
  spec); :func:`replay.fold` folds a history's operations, no database, no model.
- ``sql(postgres=, safe=)`` calls the ddl planners on that data: the online form when
  ``safe``; the migrator queues exactly these steps, so applying runs the operation's SQL.
- ``inverse()`` is the operation from ``after`` back to ``before`` (its ``sql()`` is the
  rollback's), or None with ``irreversible`` saying why.
- ``statements()`` gives each step's lock, scan, rewrite and transactionality from
  :data:`..facts.EFFECTS`, by the kind the step carries (set where the ddl makes it).
- ``describe()`` is one line; ``kind`` and ``phase`` (expand / contract) are class facts.
- The migrator (:mod:`.migrator`) mutates peewee-migrate's models only to keep upstream's
  state; it builds each operation from the specs around that change and records it
  (``take_operations()``).  A replay records them without specs: rendering specs made a
  replay of 1000 files ~7x slower (0.8 s -> 5.4 s), more than check can afford.
- Kinds by what they change: :mod:`.tables`, :mod:`.columns`, :mod:`.indexes`, :mod:`.data`.
"""

from .base import Operation, Phase, TableChange
from .columns import AddColumns, AddNotNull, AlterColumns, DropColumns, DropNotNull, RenameColumn
from .data import (
    Backfill,
    BackgroundBackfill,
    PythonFunction,
    RawSql,
    RequireEmpty,
    ValidateConstraints,
)
from .indexes import AddIndex, DropIndex, RenameIndex
from .replay import fold
from .state import SchemaState
from .tables import (
    CreateTable,
    DropTable,
    RenameTable,
    SetConstraints,
    SetModelMeta,
    SetPrimaryKey,
    SetSchema,
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
    "SchemaState",
    "SetConstraints",
    "SetModelMeta",
    "SetPrimaryKey",
    "SetSchema",
    "TableChange",
    "ValidateConstraints",
    "fold",
]
