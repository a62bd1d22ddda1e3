"""``datalayer migrate baseline``: adopt a database whose tables exist already.

A database made by ``create_tables()``, by GORM or by hand has the tables but
no migration history, so ``apply`` would try to create them again.
:func:`baseline` builds what the migrations up to ``to`` (default: all) make
in a scratch database (:mod:`.scratch`, as ``check`` does), compares it with
the live database (:func:`.inspect.differences`: every non-system schema the
migrations use, plus ``public``), and only when they are equal records those
migrations as applied, with their checksums, under the migration lock.
Otherwise it returns the differences and writes nothing, not even the
history table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings
from ..errors import MigrationError
from .inspect import Difference, differences, history_tables, snapshot_catalog
from .runtime import checksum as _checksum
from .runtime.files import MIGRATE_TABLE, Router
from .runtime.lock import DEFAULT_LOCK_WAIT, _migration_lock, lock_key
from .runtime.names import _resolve_to, migration_names
from .runtime.target import Target, _connected, _describe
from .scratch import built_catalog

__all__ = ["BaselineResult", "baseline", "require_directory", "scratch_settings"]


@dataclass(frozen=True)
class BaselineResult:
    """What :func:`baseline` did: the migrations it recorded, or why it recorded none."""

    target: str
    recorded: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the schemas matched and the migrations were recorded."""
        return not self.differences


def require_directory(directory: Path) -> None:
    """Refuse a migrations folder that does not exist (nothing is created).

    :raises MigrationError: naming the folder and how to point at the right one.
    """
    if not directory.is_dir():
        raise MigrationError(
            f"the migrations folder {directory} does not exist; run the command from the "
            "project folder or give the right one (--dir, DATALAYER_MIGRATIONS_DIR)"
        )


def scratch_settings(target: Target, given: Settings | None) -> Settings:
    """Return the settings that choose the scratch server (dev URL, else embedded dir)."""
    if given is not None:
        return given
    if isinstance(target, Settings):
        return target
    own = getattr(target, "_settings", None)
    return own if isinstance(own, Settings) else Settings()


def _refuse_history(router: Router, where: str) -> None:
    rows = router.history()
    if rows:
        raise MigrationError(
            f"baseline refused: {where} already has a migration history ({len(rows)} "
            f"row(s) in {router.migrate_table}, the last {rows[-1].name}); baseline only "
            "adopts a database with none. See `datalayer migrate status`, and `datalayer "
            "migrate apply` for what is pending"
        )


def baseline(
    target: Target,
    directory: str | Path | None = None,
    to: str | None = None,
    *,
    settings: Settings | None = None,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    migrate_table: str = MIGRATE_TABLE,
) -> BaselineResult:
    """Record the migrations up to ``to`` as applied when the live schema is what they build.

    ``settings`` choose the scratch server (``dev_database_url``, else the
    embedded server; default: the target's settings).  Returns the names
    recorded, or the differences (then nothing was written).

    :raises ChecksumError: when the files do not match ``migrations.sum``.
    :raises MigrationError: when the folder does not exist or holds no
        migration, ``to`` names none, history exists already, the scratch
        database cannot be made, or the migrations do not apply there.
    :raises LockTimeout: when another run holds the migration lock too long.
    """
    scratch = scratch_settings(target, settings)
    if directory is None:
        from ..project import default_migrations_dir

        directory = default_migrations_dir(scratch)
    directory = Path(directory)
    require_directory(directory)
    _checksum.verify(directory)
    files = migration_names(directory)
    if not files:
        raise MigrationError(
            f"no migration in {directory}: nothing to record; write the first one with "
            "`datalayer migrate diff NAME`"
        )
    last = _resolve_to(to, files, directory) if to is not None else files[-1]
    names = files[: files.index(last) + 1]
    with _connected(target) as db:
        where = _describe(db)
        router = Router(db, directory, migrate_table=migrate_table)
        _refuse_history(router, where)  # before the scratch build: fail fast
        expected = built_catalog(scratch, directory, names, label="base")
        with _migration_lock(db, lock_key(migrate_table), lock_wait, migrate_table):
            _refuse_history(router, where)  # again, now that no one else can write it
            with db.atomic():
                live = snapshot_catalog(db, expected.schemas, ignore=history_tables(migrate_table))
            found = differences(expected, live)
            if found:
                return BaselineResult(last, [], found)
            with db.atomic():
                router.ensure_history()
                for name in names:
                    router.record(name, router.checksum(name))
    return BaselineResult(last, names, [])
