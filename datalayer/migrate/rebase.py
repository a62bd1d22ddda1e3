"""Renumber a migration after a merge: ``datalayer migrate rebase NAME`` (Atlas's rebase).

Two branches each add a migration (``004_add_x`` and ``004_add_y``); after the
merge ``migrations.sum`` conflicts and both files carry the same number.
Rebasing ``004_add_y`` renames it to come after every other file
(``005_add_y``), replays the whole history to prove it still applies on top,
and rewrites ``migrations.sum``.  A migration that the configured database
has applied is never renumbered: its history row names it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MigrationError
from .runtime.names import number

__all__ = ["RebaseResult", "rebase"]


@dataclasses.dataclass(frozen=True)
class RebaseResult:
    """The migration's old and new file."""

    old: Path
    new: Path


def _find(name: str, names: list[str], directory: Path) -> str:
    wanted = name.removesuffix(".py")
    if wanted in names:
        return wanted
    matches = [n for n in names if number(wanted) is not None
               and number(n.split("_", 1)[0]) == number(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise MigrationError(
            f"several migrations are numbered {wanted} in {directory} ({', '.join(matches)}); "
            "give the full name of the one to move"
        )
    raise MigrationError(f"there is no migration {name!r} in {directory}")


def rebase(
    target: Any,
    directory: str | Path,
    name: str,
    *,
    lock_wait: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> RebaseResult:
    """Renumber migration ``name`` to come after every other one; rewrite migrations.sum.

    ``target`` is the database (or settings) whose history is checked first.
    The whole rename runs under the migration lock ``apply`` takes (waiting at
    most ``lock_wait`` seconds, default as ``apply``; ``on_wait`` as for
    ``apply``): an ``apply`` running at the same time either records the
    migration first (and the rebase is refused) or sees the renamed file.

    :raises LockTimeout: when another run holds the lock for more than ``lock_wait`` s.
    :raises MigrationError: an unknown name, a migration the database has
        applied, or a history that does not replay once renumbered; nothing
        is changed then.
    """
    from .runtime.apply import DEFAULT_LOCK_WAIT, _connected, _migration_lock, lock_key
    from .runtime.files import MIGRATE_TABLE

    directory = Path(directory)
    if not directory.is_dir():
        raise MigrationError(f"{directory} does not exist; nothing to rebase")
    wait = DEFAULT_LOCK_WAIT if lock_wait is None else lock_wait
    with (
        _connected(target) as db,
        _migration_lock(db, lock_key(MIGRATE_TABLE), wait, MIGRATE_TABLE, on_wait),
    ):
        return _rebase_locked(db, directory, name)


def _rebase_locked(db: Any, directory: Path, name: str) -> RebaseResult:
    """Do the rebase; the caller holds the migration lock, so the history cannot change."""
    from .operations.migrator import DatalayerMigrator
    from .runtime import checksum
    from .runtime.files import Router
    from .runtime.names import sort_key

    names = Router(_null_database(), directory).todo
    chosen = _find(name, names, directory)
    applied = set(Router(db, directory).done)
    if chosen in applied:
        raise MigrationError(
            f"{chosen} is applied on the configured database; an applied migration keeps its "
            "name (rebase the other branch's migration instead)"
        )
    others = [n for n in names if n != chosen]
    top = max((sort_key(n)[0] for n in others), default=0)
    rest = chosen.split("_", 1)[1]
    new_name = f"{top + 1:03d}_{rest}"
    if sort_key(chosen)[0] > top:
        raise MigrationError(f"{chosen} already comes after every other migration; nothing to do")
    old_path = directory / f"{chosen}.py"
    new_path = directory / f"{new_name}.py"
    text = old_path.read_bytes().replace(f"{chosen}.py".encode(), f"{new_name}.py".encode())

    # Prove the renumbered history replays before touching the folder.
    staged = directory / f".{new_name}.py.rebase"
    staged.write_bytes(text)
    try:
        order = [*others, new_name]
        order.sort(key=sort_key)
        router = Router(_null_database(), directory)
        router._sources.update({new_name: text})  # the staged bytes, under the new name
        try:
            router.replay(order, DatalayerMigrator(router.database))
        except MigrationError as exc:
            raise MigrationError(
                f"{chosen} does not replay after the other migrations ({exc}); resolve the "
                "conflict by hand (edit it, or regenerate it with `datalayer migrate diff`)"
            ) from None
        new_path.write_bytes(text)
        old_path.unlink()
    finally:
        staged.unlink(missing_ok=True)
    checksum.write_sum(directory)
    return RebaseResult(old=old_path, new=new_path)


def _null_database() -> Any:
    from ..db import Database

    return Database()
