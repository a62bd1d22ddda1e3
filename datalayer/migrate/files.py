"""Find migration files on disk, in order, and hash them.

A migration file is ``NNN_name.py`` with three or more digits; files sort by
the number read as an integer, so ``1000_x.py`` comes after ``999_y.py``
(peewee-migrate's own mask wants exactly three digits and never sees the
1000th migration).  Nothing here touches a database or imports peewee-migrate.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

__all__ = [
    "MIGRATION_RE",
    "SUM_FILE",
    "content_hash",
    "migration_files",
    "migration_names",
    "sort_key",
]

MIGRATION_RE = re.compile(r"^(\d{3,})_[^.]+\.py$")
"""File names that are migrations: three or more digits, an underscore, a name, ``.py``."""

SUM_FILE = "migrations.sum"
"""Name of the checksum file inside the migrations directory."""


def sort_key(filename: str) -> tuple[int, str]:
    """Return the key that orders migration file (or migration) names numerically."""
    digits = filename.split("_", 1)[0]
    return (int(digits) if digits.isdigit() else -1, filename)


def migration_files(directory: str | Path) -> list[Path]:
    """Return the migration files in ``directory``, in apply order (none if it is missing)."""
    path = Path(directory)
    try:
        with os.scandir(path) as entries:  # dirents carry the file type: no stat per file
            names = [e.name for e in entries if MIGRATION_RE.match(e.name) and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [path / name for name in sorted(names, key=sort_key)]


def migration_names(directory: str | Path) -> list[str]:
    """Return the migration names (file names without ``.py``) in apply order."""
    return [p.stem for p in migration_files(directory)]


def content_hash(data: bytes) -> str:
    """Return the hash recorded for one migration file: SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()
