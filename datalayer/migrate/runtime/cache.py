"""A cache of data derived from migration files, keyed by the chained hash of the files.

Only data is stored, as JSON: nothing read from the cache is ever executed or
unpickled.  Three kinds of entries:

* the schema a history builds on a server (``migrate check`` keeps it, keyed
  also by the server's version), so a history it has already applied in a
  scratch database is not applied again;
* the SQL one migration renders for a PostgreSQL version (``migrate sql``,
  ``migrate lint``, and ``migrate check``, which applies it to its scratch
  database), one entry per run of 100 files when the whole run was rendered
  (writing a thousand small files cost more than rendering them), one per file
  after the last whole run;
* the rollbacks of a selection of migrations (``migrate lint``), one entry
  keyed by the files up to the last of them and the selection.

The replayed schema state itself is not cached: replaying operations needs no
database and is fast (a thousand files in well under a second), and a cached
state was code that the next run executed.

The key is a SHA-256 chained over the name and bytes of every file up to the
entry (the hash ``migrations.sum`` holds per file), computed here from the
files themselves: a file edited, added, removed or renamed changes the key, so
an entry is never served for files that changed, re-hashed or not.

The cache is a folder of small files (``$DATALAYER_CACHE_DIR``, else
``$XDG_CACHE_HOME/datalayer`` or ``~/.cache/datalayer``), created private
(0700), safe to delete at any time and shared by concurrent runs (files are
written atomically); ``DATALAYER_CACHE_DIR=off`` disables it.  A folder that is
a symbolic link, is owned by another user or is writable by group or others is
refused with one warning line, and the command goes on without the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MIN_FILES",
    "cache_dir",
    "chain_keys",
    "load_data",
    "load_rollbacks",
    "load_snapshot",
    "load_sql",
    "load_sql_pack",
    "present",
    "rollback_key",
    "snapshot_key",
    "sql_entry",
    "sql_key",
    "store_data",
    "store_rollbacks",
    "store_snapshot",
    "store_sql",
    "store_sql_pack",
]

logger = logging.getLogger(__name__)

MIN_FILES = 8
"""Histories shorter than this are checked faster than a cache lookup pays for."""

_FORMAT = "data-v2"


def _configured() -> Path | None:
    chosen = os.environ.get("DATALAYER_CACHE_DIR", "").strip()
    if chosen.lower() in {"off", "0", "none", "false"}:
        return None
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "datalayer"


_REFUSED: set[str] = set()  # folders already warned about, once per process


def unsafe_reason(folder: Path) -> str | None:
    """Return why ``folder`` must not be used as the cache (None: it is private to us)."""
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def cache_dir() -> Path | None:
    """Return the cache folder, created private (0700) if missing; None when off or unsafe.

    An unsafe folder (see :func:`unsafe_reason`) is refused with one warning
    line naming it and what to do; the command then runs without the cache.
    """
    folder = _configured()
    if folder is None:
        return None
    if not os.path.lexists(folder):
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made by a concurrent run meanwhile: checked below like any other
        except OSError as exc:
            logger.debug("no cache folder %s: %s", folder, exc)
            return None
    reason = unsafe_reason(folder)
    if reason is None:
        return folder
    if str(folder) not in _REFUSED:
        _REFUSED.add(str(folder))
        logger.warning(
            "not using the cache folder %s: it %s; make it a private folder of yours "
            "(chmod 700), point DATALAYER_CACHE_DIR elsewhere, or set it to off",
            folder,
            reason,
        )
    return None


_SALT: list[bytes] = []  # the versions below, read once per process (importlib.metadata is slow)


def _version_salt() -> bytes:
    if _SALT:
        return _SALT[0]
    from importlib.metadata import PackageNotFoundError, version

    parts = [_FORMAT]
    for dist in ("peewee-datalayer", "peewee", "peewee-migrate"):
        try:
            parts.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            parts.append(f"{dist}=?")
    _SALT.append("|".join(parts).encode())
    return _SALT[0]


def chain_keys(names: Sequence[str], source: Callable[[str], bytes]) -> list[str]:
    """Return, for each prefix of ``names``, the key of the state those files build."""
    running = hashlib.sha256(_version_salt())
    keys = []
    for name in names:
        running.update(f"{name}.py".encode())
        running.update(b"\0")
        running.update(source(name))
        keys.append(running.copy().hexdigest())
    return keys


def _write(name: str, text: str) -> bool:
    """Write ``name`` in the cache folder atomically (readers never see half a file).

    Returns False, logging why, when caching is off or the write fails: a
    read-only home or a full disk only costs the cache.
    """
    folder = cache_dir()
    if folder is None:
        return False
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, folder / name)
    except OSError as exc:
        logger.debug("%s not cached: %s", name, exc)
        return False
    return True


# -- the schema a history builds on a server (for ``migrate check``) -------------------


def _encode(value: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__dc__": type(value).__name__, **fields}
    if isinstance(value, (list, tuple)):
        return {"__t__": [_encode(v) for v in value]}
    if isinstance(value, dict):
        return {"__d__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    return value


def _decode(value: Any) -> Any:
    import dataclasses

    from ..inspect import catalog as schema

    if isinstance(value, dict):
        if "__t__" in value:
            return tuple(_decode(v) for v in value["__t__"])
        if "__d__" in value:
            return {_decode(k): _decode(v) for k, v in value["__d__"]}
        cls = getattr(schema, str(value["__dc__"]), None)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"not a schema record: {value['__dc__']!r}")
        return cls(**{k: _decode(v) for k, v in value.items() if k != "__dc__"})
    return value


def snapshot_key(chain_key: str, server_version: str) -> str:
    """Return the key of the schema that the files behind ``chain_key`` build on that server."""
    return hashlib.sha256(f"snapshot|{chain_key}|{server_version}".encode()).hexdigest()


def load_snapshot(key: str) -> Any | None:
    """Return the cached schema snapshot for ``key``, or None."""
    import json

    folder = cache_dir()
    if folder is None:
        return None
    try:
        return _decode(json.loads((folder / f"snapshot-v1-{key}.json").read_text("utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store_snapshot(key: str, snapshot: Any) -> None:
    """Cache a schema snapshot (written atomically; failures only cost the cache)."""
    import json

    _write(f"snapshot-v1-{key}.json", json.dumps(_encode(snapshot)))


# -- the SQL one migration renders (for ``migrate sql`` and ``lint``) ------------------


def sql_key(chain_key: str, postgres: int) -> str:
    """Return the key of the SQL the file behind ``chain_key`` renders for that version."""
    return hashlib.sha256(f"sql|{chain_key}|{postgres}".encode()).hexdigest()


def present() -> frozenset[str] | None:
    """Return the names of the entries in the cache folder now (None: no cache).

    For a caller about to look up many entries, most of them perhaps absent
    (a history never rendered): one listing instead of a failed open per entry.
    """
    folder = cache_dir()
    if folder is None:
        return None
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return None


def sql_entry(key: str) -> str:
    """Return the file name of the entry :func:`load_sql` reads for ``key``."""
    return f"sql-v1-{key}.json"


def load_sql(key: str) -> tuple[bool, tuple[str, ...], bool] | None:
    """Return the cached ``(atomic, statements, reads_version)`` of one migration, or None.

    ``reads_version``: the file's code read the server version while rendered
    (True for an entry that does not say).
    """
    import json

    folder = cache_dir()
    if folder is None:
        return None
    try:
        data = json.loads((folder / sql_entry(key)).read_text("utf-8"))
        return (
            bool(data["atomic"]),
            tuple(str(s) for s in data["statements"]),
            bool(data.get("reads_version", True)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store_sql(
    key: str, atomic: bool, statements: Sequence[str], *, reads_version: bool = False
) -> None:
    """Cache one migration's rendered SQL (atomically; failures only cost the cache)."""
    import json

    _write(
        sql_entry(key),
        json.dumps(
            {"atomic": atomic, "statements": list(statements), "reads_version": reads_version}
        ),
    )


SqlEntry = tuple[bool, tuple[str, ...], bool]
"""One migration's rendered SQL: ``(atomic, statements, reads_version)``."""


def load_sql_pack(key: str) -> list[tuple[str, SqlEntry]] | None:
    """Return the cached SQL of a run of migrations, ``[(name, entry), ...]`` in order, or None."""
    import json

    folder = cache_dir()
    if folder is None:
        return None
    try:
        data = json.loads((folder / f"sqlpack-v1-{key}.json").read_text("utf-8"))
        return [
            (
                str(item["name"]),
                (
                    bool(item["atomic"]),
                    tuple(str(s) for s in item["statements"]),
                    bool(item.get("reads_version", True)),
                ),
            )
            for item in data
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store_sql_pack(key: str, items: Sequence[tuple[str, SqlEntry]]) -> None:
    """Cache the SQL of a run of migrations in one entry (atomically; failures cost the cache)."""
    import json

    _write(
        f"sqlpack-v1-{key}.json",
        json.dumps([
            {"name": n, "atomic": a, "statements": list(st), "reads_version": r}
            for n, (a, st, r) in items
        ]),
    )


# -- the rollback SQL of a selection of migrations (``migrate lint``, ``sql --rollback``) ---


def rollback_key(chain_key: str, names: Sequence[str], postgres: int) -> str:
    """Return the key of the rollbacks of ``names`` rendered after the files of ``chain_key``."""
    selection = "\0".join(names)
    return hashlib.sha256(f"rollback|{chain_key}|{postgres}|{selection}".encode()).hexdigest()


def load_rollbacks(key: str) -> list[tuple[str, bool, tuple[str, ...]]] | None:
    """Return the cached ``(name, atomic, statements)`` of each rollback, newest first, or None."""
    import json

    folder = cache_dir()
    if folder is None:
        return None
    try:
        data = json.loads((folder / f"rollback-v1-{key}.json").read_text("utf-8"))
        return [
            (str(item["name"]), bool(item["atomic"]), tuple(str(s) for s in item["statements"]))
            for item in data
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_rollbacks(key: str, items: Sequence[tuple[str, bool, Sequence[str]]]) -> None:
    """Cache the rendered rollbacks of a selection (atomically; failures only cost the cache)."""
    import json

    _write(
        f"rollback-v1-{key}.json",
        json.dumps([{"name": n, "atomic": a, "statements": list(st)} for n, a, st in items]),
    )


# -- other JSON data, by kind (``lint``: the lint's reports, see lint/_cached.py) ------------


def load_data(kind: str, key: str) -> Any | None:
    """Return the JSON data cached as ``kind`` under ``key`` (a hex digest), or None."""
    import json

    folder = cache_dir()
    if folder is None:
        return None
    try:
        return json.loads((folder / f"{kind}-v1-{key}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def store_data(kind: str, key: str, data: Any) -> None:
    """Cache JSON ``data`` as ``kind`` under ``key`` (atomically; failures only cost the cache)."""
    import json

    _write(f"{kind}-v1-{key}.json", json.dumps(data))
