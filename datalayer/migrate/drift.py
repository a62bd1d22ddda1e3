"""``datalayer migrate drift``: has the live schema moved away from its migrations?

A hot-fix made by hand (a column added, an index dropped, a default changed,
a constraint dropped, a table created) leaves the database different from
what its applied migrations build.  :func:`drift` reads the live catalog and
the history in one read-only transaction, applies the same migrations to a
scratch database (:mod:`.scratch`, as ``check`` does), and returns every
difference (:func:`.inspect.differences`) in every non-system schema the
migrations use, plus ``public``; the history table is left out.  Nothing is
written to the live database: this works on a read replica too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import MigrationError
from .baseline import require_directory, scratch_settings
from .inspect import Catalog, Difference, differences, history_tables, snapshot_catalog
from .runtime.files import MIGRATE_TABLE, Router
from .runtime.target import Target, _connected, _describe
from .scratch import built_catalog

__all__ = ["DriftReport", "drift"]


@dataclass(frozen=True)
class DriftReport:
    """The live database against the schema its applied migrations build."""

    applied: list[str]
    differences: list[Difference] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    """Applied files changed since they were applied: compared as they are now."""

    @property
    def ok(self) -> bool:
        """True when there is no difference."""
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"differences": [...]}``, the shape of ``datalayer migrate drift --json``.

        Each entry has ``kind``, ``table``, ``name``, ``expected`` (what the
        migrations build; null when absent there), ``actual`` (the database;
        null when absent) and ``message`` (the line the text output prints).
        """
        return {
            "differences": [{**d.to_dict(), "message": d.message()} for d in self.differences]
        }


@contextlib.contextmanager
def _read_only(db: Any) -> Iterator[None]:
    """Run the block in a read-only, repeatable-read transaction (rolled back at the end)."""
    with db.atomic() as txn:
        db.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            yield
        finally:
            txn.rollback()


def drift(
    target: Target,
    directory: str | Path | None = None,
    *,
    settings: Settings | None = None,
    migrate_table: str = MIGRATE_TABLE,
) -> DriftReport:
    """Compare the live database with what its applied migrations build; read-only.

    ``settings`` choose the scratch server (``dev_database_url``, else the
    embedded server; default: the target's settings).

    :raises MigrationError: when the folder does not exist, the database has
        no migration history, an applied file is missing, the scratch
        database cannot be made, or the migrations do not apply there.
    """
    scratch = scratch_settings(target, settings)
    if directory is None:
        from ..project import default_migrations_dir

        directory = default_migrations_dir(scratch)
    directory = Path(directory)
    require_directory(directory)
    with _connected(target) as db, _read_only(db):
        where = _describe(db)
        router = Router(db, directory, migrate_table=migrate_table)
        rows = router.history()
        if not rows:
            raise MigrationError(
                f"no migration is recorded on {where}: drift compares a database with the "
                "migrations it applied. Adopt a database whose tables exist with `datalayer "
                "migrate baseline`, or create them with `datalayer migrate apply`"
            )
        applied = router.done
        on_disk = set(router.todo)
        gone = [name for name in applied if name not in on_disk]
        if gone:
            raise MigrationError(
                f"{router.path(gone[0])} was applied ({gone[0]}) but is not on disk; restore it "
                "(git checkout): drift rebuilds the schema from the applied files"
            )
        modified = list(dict.fromkeys(
            row.name for row in rows
            if row.checksum is not None and row.checksum != router.checksum(row.name)
        ))
        live = snapshot_catalog(db, ignore=history_tables(migrate_table))
    expected = built_catalog(scratch, directory, applied, label="drift")
    compared = Catalog({s: live.schemas[s] for s in expected.schemas if s in live.schemas})
    return DriftReport(applied, differences(expected, compared), modified)
