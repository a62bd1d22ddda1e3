"""Where a database stands against the migration files: `migrate status` (reads only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checksum as _checksum
from . import online
from . import phases as _phases
from .files import MIGRATE_TABLE, Router
from .names import content_hash, require_dir
from .target import Target, _connected, _default_dir

__all__ = ["Status", "status"]


@dataclass(frozen=True)
class Status:
    """Where a database stands against the migration files; every list holds names."""

    applied: list[str]
    pending: list[str]
    modified: list[str]
    missing: list[str]
    checksum_problems: list[str] = field(default_factory=list)
    invalid_indexes: list[online.InvalidIndex] = field(default_factory=list)
    """INVALID indexes of the schemas in use (a failed concurrent build, or one in progress)."""
    not_valid_constraints: list[online.NotValidConstraint] = field(default_factory=list)
    """Constraints added NOT VALID and not validated yet."""
    expanded: list[str] = field(default_factory=list)
    """Pending migrations whose expand phase is applied (their contract phase is not)."""
    connections: list[Any] = field(default_factory=list)
    """Other connections to the database (:class:`.runtime.releases.Connection`): who runs
    which release (DB_RELEASE)."""
    phased: bool = False
    """A phase was ever run on this database (its phase table exists)."""

    def phases(self) -> dict[str, list[str]]:
        """Return the applied phases of each migration on disk or applied."""
        half = set(self.expanded)
        out = {name: list(_phases.PHASES) for name in self.applied}
        out.update({name: ["expand"] if name in half else [] for name in self.pending})
        return out

    @property
    def up_to_date(self) -> bool:
        """True when nothing is pending, modified or missing."""
        return not (self.pending or self.modified or self.missing)

    def to_dict(self) -> dict[str, Any]:
        """Return the lists (the shape of ``datalayer migrate status --json``).

        ``problems`` holds what is wrong with the files versus ``migrations.sum``
        (one message each, as ``status`` prints them on stderr).  ``phases`` (each
        migration's applied phases) is there once a phase has run on the database,
        ``connections`` once a connection announces a release (DB_RELEASE).
        """
        out: dict[str, Any] = {
            "applied": list(self.applied),
            "pending": list(self.pending),
            "modified": list(self.modified),
            "missing": list(self.missing),
            "problems": list(self.checksum_problems),
            "invalid_indexes": [i.to_dict() for i in self.invalid_indexes],
            "not_valid_constraints": [c.to_dict() for c in self.not_valid_constraints],
        }
        # Present once the database has seen phases / a process announced a release, so the
        # shape scripts knew before phases stays as it was where phases are not used.
        if self.phased:
            out["phases"] = self.phases()
        if any(c.release for c in self.connections):
            out["connections"] = [c.to_dict() for c in self.connections]
        return out


def status(
    target: Target, directory: str | Path | None = None, *, migrate_table: str = MIGRATE_TABLE
) -> Status:
    """Return applied, pending, modified and missing migrations (reads only).

    Also lists the INVALID indexes and NOT VALID constraints of the schemas
    on the search path (a failed concurrent build, a constraint not validated).

    Works on a database without a history table (everything is pending); a
    missing directory is an error naming it.  ``modified`` lists applied
    files whose bytes differ from the hash recorded when they were applied,
    even if ``migrations.sum`` was rewritten since.
    """
    directory = require_dir(directory if directory is not None else _default_dir(target))
    files = _checksum.read_files(directory)  # bad names and unreadable files: before connecting
    with _connected(target) as db:
        router = Router(db, directory, migrate_table=migrate_table)
        rows = router.history()
        invalid, not_valid = online.schema_problems(db)
        half, connections = _phase_status(router)
        phased = _phases.has_table(router)
    on_disk = [name.removesuffix(".py") for name in files]
    on_disk_set = set(on_disk)
    applied: list[str] = []
    recorded: dict[str, str | None] = {}
    for row in rows:
        if row.name not in recorded:
            applied.append(row.name)
        if row.checksum is not None or row.name not in recorded:
            recorded[row.name] = row.checksum
    applied_set = set(applied)
    modified = []
    for name in applied:
        want = recorded.get(name)
        if (
            want is not None
            and name in on_disk_set
            and content_hash(files[f"{name}.py"]) != want
        ):
            modified.append(name)
    problems = _checksum.problems(directory, files)
    from .history import replaced_names

    folded = replaced_names(files)
    return Status(
        applied=applied,
        pending=[n for n in on_disk if n not in applied_set],
        modified=modified,
        missing=[n for n in applied if n not in on_disk_set and n not in folded],
        checksum_problems=problems,
        invalid_indexes=invalid,
        not_valid_constraints=not_valid,
        expanded=[n for n in half if n not in applied_set],
        connections=connections,
        phased=phased,
    )


def _phase_status(router: Router) -> tuple[list[str], list[Any]]:
    """Return the half-applied migrations and the other connections (reads only)."""
    from .releases import connected

    return list(_phases.expanded(router)), connected(router.database)
