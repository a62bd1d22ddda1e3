"""The checksum file ``migrations/migrations.sum``, after Atlas's ``atlas.sum``.

Line 1 is ``h1:`` and a hash of the whole set; then one line per migration
file, ``NAME h1:HASH``, where HASH is a running SHA-256 over the name and the
bytes of that file and of every file before it (base64, as Atlas writes it).
Because the hashes are chained, a file edited, removed, renamed or slipped in
before the last listed one breaks the chain at that file, and :func:`verify`
says which and what to do.  ``datalayer migrate hash`` (:func:`write_sum`)
rewrites the file; ``datalayer migrate diff`` does so after writing a
migration.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ...errors import ChecksumError, MigrationError
from .names import SUM_FILE, migration_files, read_migration, require_dir, sort_key

__all__ = [
    "SumEntry",
    "compute",
    "problems",
    "read_files",
    "read_sum",
    "render",
    "verify",
    "write_sum",
]

_TOTAL_RE = re.compile(r"^h1:(\S+)$")
_LINE_RE = re.compile(r"^(\S+) h1:(\S+)$")
_HASH_CMD = "`datalayer migrate hash`"


@dataclass(frozen=True)
class SumEntry:
    """One line of the checksum file: a file name and its chained hash."""

    name: str
    hash: str


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def read_files(directory: str | Path) -> dict[str, bytes]:
    """Return {file name: bytes} of the migration files in ``directory``, in order."""
    return {p.name: read_migration(p) for p in migration_files(directory)}


def compute(directory: str | Path) -> list[SumEntry]:
    """Return the checksum lines for the migration files now in ``directory``."""
    running = hashlib.sha256()
    entries = []
    for name, data in read_files(Path(directory)).items():
        running.update(name.encode())
        running.update(data)
        entries.append(SumEntry(name, _b64(running.digest())))
    return entries


def _total(entries: list[SumEntry]) -> str:
    total = hashlib.sha256()
    for entry in entries:
        total.update(entry.name.encode())
        total.update(entry.hash.encode())
    return _b64(total.digest())


def render(entries: list[SumEntry]) -> str:
    """Return the text of a checksum file holding ``entries``."""
    lines = [f"h1:{_total(entries)}", *(f"{e.name} h1:{e.hash}" for e in entries)]
    return "\n".join(lines) + "\n"


def write_sum(directory: str | Path) -> Path:
    """Write ``directory/migrations.sum`` for the files now there and return its path."""
    path = require_dir(directory) / SUM_FILE
    text = render(compute(directory))
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # atomic: a reader never sees half a file
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise MigrationError(
            f"cannot write {path}: {exc.strerror or exc}; make it (and its folder) a "
            "writable file"
        ) from None
    return path


def read_sum(directory: str | Path) -> tuple[str, list[SumEntry]] | None:
    """Return (total, entries) from the checksum file, or None when there is none.

    :raises ChecksumError: when the file cannot be parsed.
    """
    path = Path(directory) / SUM_FILE
    fix = f"check the migration files, then run {_HASH_CMD} to rewrite it"
    if not path.is_file():
        if path.is_dir():
            msg = f"{path} is a directory, not the checksum file; remove it and run {_HASH_CMD}"
            raise ChecksumError(msg, [msg])
        return None
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line_no = path.read_bytes()[: exc.start].count(b"\n") + 1
        msg = f"{path} line {line_no} is not UTF-8 text (byte {exc.start}); {fix}"
        raise ChecksumError(msg, [msg]) from None
    except OSError as exc:
        msg = f"{path} cannot be read: {exc.strerror or exc}; fix its permissions, or {fix}"
        raise ChecksumError(msg, [msg]) from None
    if any(line.startswith(("<<<<<<<", "=======", ">>>>>>>")) for line in lines):
        msg = f"{path} has merge-conflict markers; {fix}"
        raise ChecksumError(msg, [msg])
    if not lines or not (total := _TOTAL_RE.match(lines[0])):
        msg = f"{path} does not start with an h1: line; {fix}"
        raise ChecksumError(msg, [msg])
    entries = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        m = _LINE_RE.match(line)
        if not m:
            msg = f"{path} line {number} is not `NAME h1:HASH`; {fix}"
            raise ChecksumError(msg, [msg])
        if m.group(1) in seen:
            msg = (
                f"{path} line {number} lists {m.group(1)} a second time (first on line "
                f"{seen[m.group(1)]}), as a bad merge leaves it; delete the repeated line, "
                f"then {fix}"
            )
            raise ChecksumError(msg, [msg])
        seen[m.group(1)] = number
        entries.append(SumEntry(m.group(1), m.group(2)))
    return total.group(1), entries


def _renumbered(name: str, after: list[str]) -> str:
    top = max((sort_key(n)[0] for n in after), default=0)
    stem = name.split("_", 1)[1] if "_" in name else name
    return f"{top + 1:03d}_{stem}"


def problems(directory: str | Path, files: Mapping[str, bytes] | None = None) -> list[str]:
    """Return what is wrong with the migration files versus the checksum file (empty: fine).

    ``files`` (file name -> bytes, in order) saves reading them again when the
    caller already has.
    """
    directory = Path(directory)
    sum_path = directory / SUM_FILE
    if files is None:
        files = read_files(directory)
    try:
        parsed = read_sum(directory)
    except ChecksumError as exc:
        return exc.problems or [str(exc)]
    if parsed is None:
        if not files:
            return []
        return [
            f"{sum_path} is missing; run {_HASH_CMD} to create it (and commit it with the "
            "migrations)"
        ]
    total, entries = parsed
    found: list[tuple[tuple[int, str], str]] = []
    if total != _total(entries):
        found.append((
            (-1, ""),
            f"{sum_path} was edited by hand (its h1: line does not match the lines below); run "
            f"{_HASH_CMD} after checking the migration files",
        ))
    listed = [e.name for e in entries]
    listed_set = set(listed)
    added = [n for n in files if n not in listed_set]
    paired: set[str] = set()
    running = hashlib.sha256()
    chain_ok = True
    for entry in entries:
        path = directory / entry.name
        data = files.get(entry.name)
        if data is None:
            # Removed, or renamed: a new file with this file's bytes fits its place in the chain.
            renamed_to = None
            exact = False
            for candidate in added:
                if candidate in paired:
                    continue
                if chain_ok:
                    probe = running.copy()
                    probe.update(entry.name.encode())
                    probe.update(files[candidate])
                    if _b64(probe.digest()) == entry.hash:
                        renamed_to, exact = candidate, True
                        break
                # Without a hash match, guess only from the name: renumbered or retitled.
                same_stem = candidate.split("_", 1)[-1] == entry.name.split("_", 1)[-1]
                same_number = sort_key(candidate)[0] == sort_key(entry.name)[0]
                if renamed_to is None and (same_stem or same_number):
                    renamed_to = candidate
            if renamed_to is not None:
                paired.add(renamed_to)
                edited = "" if exact else " (and maybe edited)"
                found.append((
                    sort_key(renamed_to),
                    f"{directory / renamed_to} was renamed from {entry.name}{edited}; migrations "
                    f"are recorded by name, so rename it back, or run {_HASH_CMD} if it was "
                    "never applied anywhere",
                ))
                if exact:
                    running.update(entry.name.encode())
                    running.update(files[renamed_to])
                    continue
            else:
                found.append((
                    sort_key(entry.name),
                    f"{path} was removed but {sum_path} lists it; restore it (an applied "
                    f"migration must stay on disk), or run {_HASH_CMD} if it was never applied "
                    "anywhere",
                ))
            chain_ok = False
            continue
        if not chain_ok:
            continue  # the chain is broken above; this file's own bytes cannot be checked
        running.update(entry.name.encode())
        running.update(data)
        if _b64(running.digest()) != entry.hash:
            found.append((
                sort_key(entry.name),
                f"{path} changed after {sum_path} was written; if it was applied anywhere, "
                "restore it and add a new migration instead; if the edit is intended and it "
                f"was never applied, run {_HASH_CMD}",
            ))
            chain_ok = False
    last = max(listed, key=sort_key) if listed else None
    for name in added:
        if name in paired:
            continue
        path = directory / name
        if last is not None and sort_key(name) < sort_key(last):
            found.append((
                sort_key(name),
                f"{path} was added out of order: it sorts before {last}, which {sum_path} "
                f"already lists; rename it to come last (e.g. {_renumbered(name, list(files))}) "
                f"and run {_HASH_CMD}",
            ))
        else:
            found.append((
                sort_key(name),
                f"{path} is not in {sum_path}; run {_HASH_CMD} to add it (`datalayer migrate "
                "diff` does so itself)",
            ))
    return [message for _, message in sorted(found, key=lambda item: item[0])]


def verify(directory: str | Path) -> None:
    """Check the migration files against ``migrations.sum``.

    :raises ChecksumError: naming each file edited, removed, renamed or added
        out of order (or not hashed yet) and what to do; ``.problems`` lists them.
    """
    found = problems(directory)
    if not found:
        return
    if len(found) == 1:
        raise ChecksumError(found[0], found)
    sum_path = Path(directory) / SUM_FILE
    raise ChecksumError(
        f"{len(found)} migration files do not match {sum_path}:\n  - " + "\n  - ".join(found),
        found,
    )
