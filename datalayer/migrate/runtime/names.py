"""Find migration files on disk, in order, check their names, and hash them.

A migration file is ``NNN_name.py``: three or more digits, an underscore, and
a name of ASCII letters, digits and underscores.  Files sort by the number
read as an integer, so ``1000_x.py`` comes after ``999_y.py``
(peewee-migrate's own mask wants exactly three digits and never sees the
1000th migration).  Names are checked here, once, for every command that
lists, hashes, generates or applies migrations: a file that looks like a
migration (``NNN_...py``) but has another name, or is not a readable file,
is an error naming it, never silently skipped or hashed.  Nothing here
touches a database or imports peewee-migrate.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from ...errors import GenerationError, MigrationError

__all__ = [
    "MIGRATION_RE",
    "NAME_RULE",
    "SUM_FILE",
    "MigrationNameError",
    "check_name",
    "content_hash",
    "migration_files",
    "migration_names",
    "next_name",
    "number",
    "read_migration",
    "require_dir",
    "sort_key",
]

MIGRATION_RE = re.compile(r"^(\d{3,})_[A-Za-z0-9_]+\.py$", re.ASCII)
"""File names that are migrations: three or more digits, an underscore, a name, ``.py``."""

_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
# What looks like a migration file and so must be one: NNN_ then anything, .py.
_CANDIDATE_RE = re.compile(r"^\d{3,}_.*\.py$", re.DOTALL)

NAME_RULE = "ASCII letters, digits and underscores"
"""The characters a migration name may have (in messages)."""

MAX_NAME = 200
"""The longest migration name (after ``NNN_``): file names have at most 255 bytes, and
the history table's ``name`` column 255 characters."""
_NUMBERED_RE = re.compile(r"^\d{3,}_", re.ASCII)

SUM_FILE = "migrations.sum"
"""Name of the checksum file inside the migrations directory."""


class MigrationNameError(MigrationError):
    """A migration name given on the command line is not valid (a usage error)."""


def _suggest(name: str) -> str:
    fixed = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")
    return fixed or "add_user_role"


def check_name(name: str) -> str:
    """Return ``name`` if a new migration may be called so (the part after ``NNN_``).

    :raises MigrationNameError: naming the allowed characters and a fixed name.
    """
    if not _NAME_RE.match(name):
        raise MigrationNameError(
            f"migration name {name!r} is not valid: use {NAME_RULE} only "
            f"(e.g. {_suggest(name)})"
        )
    if len(name) > MAX_NAME:
        raise MigrationNameError(
            f"migration name {name[:20]}... is {len(name)} characters long; use at most "
            f"{MAX_NAME} (a file name has at most 255)"
        )
    if _NUMBERED_RE.match(name):
        rest = name.split("_", 1)[1]
        raise MigrationNameError(
            f"migration name {name!r} starts with a number; give it without one "
            f"({rest or 'add_user_role'}): the next number is added for you"
        )
    return name


def next_name(existing_names: Iterable[str], name: str) -> str:
    """Return the name of the next migration: the highest number plus one, then ``name``.

    Numbers have at least three digits (peewee-migrate's style) and grow past
    999 (``1000_name``).  ``existing_names`` may carry a ``.py`` suffix.

    :raises GenerationError: when ``name`` is not letters, digits and underscores.
    """
    try:
        check_name(name)  # the one rule, shared with every command that reads files
    except MigrationNameError as exc:
        raise GenerationError(str(exc)) from None
    top = max((sort_key(Path(existing).name)[0] for existing in existing_names), default=0)
    return f"{max(top, 0) + 1:03d}_{name}"


def number(text: str) -> int | None:
    """Return ``text`` as a migration number if it is ASCII digits (``'٣'`` is not), else None."""
    return int(text) if text.isascii() and text.isdigit() else None


def _check_filename(directory: Path, filename: str) -> None:
    if MIGRATION_RE.match(filename):
        return
    number, _, rest = filename.partition("_")
    fixed = f"{number}_{_suggest(rest.removesuffix('.py'))}.py"
    raise MigrationError(
        f"{str(directory / filename)!r} is not a valid migration file name: after NNN_ a name "
        f"has {NAME_RULE} only; rename it (e.g. to {fixed}) and run `datalayer migrate hash`"
    )


def sort_key(filename: str) -> tuple[int, str]:
    """Return the key that orders migration file (or migration) names numerically."""
    found = number(filename.split("_", 1)[0])
    return (-1 if found is None else found, filename)


def require_dir(directory: str | Path) -> Path:
    """Return ``directory`` as a Path if it is an existing directory.

    :raises MigrationError: naming the folder and how to choose another.
    """
    path = Path(directory)
    if path.is_dir():
        return path
    what = "is not a directory" if path.exists() else "does not exist"
    raise MigrationError(
        f"migrations folder {path} {what}; run the command where it is, point --dir or "
        "DATALAYER_MIGRATIONS_DIR at it, or create the first migration with "
        "`datalayer migrate diff NAME`"
    )


def migration_files(directory: str | Path) -> list[Path]:
    """Return the migration files in ``directory``, in apply order (none if it is missing).

    :raises MigrationError: for a file that looks like a migration (``NNN_...py``)
        but has a name that is not allowed, or is not a regular file (a directory,
        a dangling symlink or a symlink loop), or when the folder cannot be listed.
    """
    path = Path(directory)
    try:
        with os.scandir(path) as entries:  # dirents carry the file type: no stat per file
            candidates = [e for e in entries if _CANDIDATE_RE.match(e.name)]
            for entry in candidates:
                _check_filename(path, entry.name)
                try:
                    regular = entry.is_file()
                except OSError:
                    regular = False
                if not regular:
                    raise MigrationError(
                        f"{path / entry.name} is not a readable file ({_kind(path / entry.name)}); "
                        "replace it with the migration file, or remove it"
                    )
            names = [e.name for e in candidates]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise MigrationError(
            f"cannot list the migrations folder {path}: {exc.strerror or exc}; fix its "
            "permissions or point --dir / DATALAYER_MIGRATIONS_DIR elsewhere"
        ) from None
    return [path / name for name in sorted(names, key=sort_key)]


def _kind(path: Path) -> str:
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            return "a symlink loop"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symlink loop"
            return "a symlink to nothing"
        return "a symlink to something that is not a file"
    if path.is_dir():
        return "a directory"
    return "not a regular file"


def read_migration(path: Path) -> bytes:
    """Return the bytes of migration file ``path``.

    :raises MigrationError: when it cannot be read (naming it and why).
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MigrationError(
            f"{path} is missing; restore it (git checkout) - an applied migration must stay "
            "on disk"
        ) from None
    except OSError as exc:
        raise MigrationError(
            f"{path} cannot be read: {exc.strerror or exc}; fix its permissions (chmod a+r) "
            "or restore it (git checkout)"
        ) from None


def migration_names(directory: str | Path) -> list[str]:
    """Return the migration names (file names without ``.py``) in apply order."""
    return [p.stem for p in migration_files(directory)]


def content_hash(data: bytes) -> str:
    """Return the hash recorded for one migration file: SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


# CPython 3.11 turns the C AST into Python objects with per-interpreter recursion
# bookkeeping that two threads can corrupt ("AST constructor recursion depth
# mismatch", gh-106905): parse one module at a time.
_AST_LOCK = threading.Lock()


def parse_module(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """Return the AST of ``source``, safe to call from several threads at once."""
    with _AST_LOCK:
        return ast.parse(source, filename)


def _resolve_to(to: str, names: Sequence[str], directory: Path) -> str:
    wanted = to.removesuffix(".py")
    matches = [n for n in names if n == wanted]
    if not matches and number(wanted) is not None:
        matches = [n for n in names if sort_key(n)[0] == number(wanted)]
    if len(matches) != 1:
        which = "several migrations match" if matches else "there is no migration"
        raise MigrationError(
            f"--to {to}: {which} {to!r} in {directory}; give a full name as listed by "
            "`datalayer migrate status`"
        )
    return matches[0]
