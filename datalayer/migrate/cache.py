"""A cache of replayed schema states, keyed by the chained hash of the files that built them.

Every command that needs the schema state (``diff``, ``check``, ``apply``,
``rollback``, ``squash``) replays the migration history in memory.  With a
thousand files that is most of its time, so after a replay the state is
written down as code — one ``create_model`` per table, by the generator, the
code ``squash`` writes — and the next replay of the same files runs that code
instead, then only the files that follow.

The key is a SHA-256 chained over the name and bytes of every file up to the
state (the hash ``migrations.sum`` holds per file), computed here from the
files themselves: a file edited, added, removed or renamed changes the key,
so the cache can never serve a state for files that changed, re-hashed or
not.  ``migrate check`` keeps the schema those files built in a scratch
database the same way (keyed also by the server's version), so a history it
has already applied is not applied again.  A state is stored only when its
code, run on an empty migrator, rebuilds exactly the replayed tables
(compared as ``create_tables()`` DDL).

The cache is a folder of small files (``$DATALAYER_CACHE_DIR``, else
``$XDG_CACHE_HOME/datalayer`` or ``~/.cache/datalayer``), safe to delete at
any time and shared by concurrent runs (files are written atomically);
``DATALAYER_CACHE_DIR=off`` disables it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MIN_FILES",
    "cache_dir",
    "chain_keys",
    "load_snapshot",
    "load_state",
    "snapshot_key",
    "store_snapshot",
    "store_state",
]

logger = logging.getLogger(__name__)

MIN_FILES = 8
"""Histories shorter than this replay faster than a cache lookup pays for."""

_FORMAT = "state-v1"


def cache_dir() -> Path | None:
    """Return the cache folder, or None when caching is off."""
    chosen = os.environ.get("DATALAYER_CACHE_DIR", "").strip()
    if chosen.lower() in {"off", "0", "none", "false"}:
        return None
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "datalayer"


def _version_salt() -> bytes:
    from importlib.metadata import PackageNotFoundError, version

    parts = [_FORMAT]
    for dist in ("peewee-datalayer", "peewee", "peewee-migrate"):
        try:
            parts.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            parts.append(f"{dist}=?")
    return "|".join(parts).encode()


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
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # code runs from here: private
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, folder / name)
    except OSError as exc:
        logger.debug("%s not cached: %s", name, exc)
        return False
    return True


def _path(folder: Path, key: str) -> Path:
    return folder / f"{_FORMAT}-{key}.py"


def load_state(keys: Sequence[str]) -> tuple[int, str] | None:
    """Return ``(files covered, code)`` of the longest cached prefix, or None."""
    folder = cache_dir()
    if folder is None or not folder.is_dir():
        return None
    for count in range(len(keys), MIN_FILES - 1, -1):
        path = _path(folder, keys[count - 1])
        try:
            return count, path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return None


def run_state(code: str, migrator: Any) -> None:
    """Build ``migrator``'s state from cached ``code`` (no SQL runs)."""
    import peewee as pw
    from playhouse import postgres_ext as pw_pext

    from .migrator import replaying

    scope: dict[str, Any] = {"migrator": migrator, "pw": pw, "pw_pext": pw_pext}
    with replaying():
        exec(compile(code, "<datalayer cached schema state>", "exec", dont_inherit=True), scope)
    migrator.__ops__ = []


def state_code(migrator: Any) -> str | None:
    """Return code that rebuilds ``migrator``'s tables, or None when it cannot be written."""
    from .generate import GenerationError, diff_models
    from .migrator import DatalayerMigrator

    models = list(migrator.orm)
    if not models:
        return "pass\n"
    database = migrator.__database__
    try:
        diff = diff_models(DatalayerMigrator(database), DatalayerMigrator(database), models)
    except (GenerationError, Exception) as exc:  # an unusual state: just do not cache it
        logger.debug("schema state not cached: %s", exc)
        return None
    return textwrap.dedent("    " + diff.migrate).strip() + "\n"


def _same_tables(a: Any, b: Any) -> bool:
    from ._spec import table_spec
    from .generate import _table_key

    left = {m._meta.table_name: m for m in a.orm}
    right = {m._meta.table_name: m for m in b.orm}
    if set(left) != set(right):
        return False
    return all(_table_key(table_spec(left[t])) == _table_key(table_spec(right[t])) for t in left)


def store_state(key: str, migrator: Any) -> bool:
    """Cache ``migrator``'s state under ``key`` if its code rebuilds it exactly."""
    folder = cache_dir()
    if folder is None:
        return False
    code = state_code(migrator)
    if code is None:
        return False
    from .migrator import DatalayerMigrator

    probe = DatalayerMigrator(migrator.__database__)
    try:
        run_state(code, probe)
    except Exception as exc:
        logger.debug("schema state not cached (it does not rebuild): %s", exc)
        return False
    if not _same_tables(probe, migrator):
        logger.debug("schema state not cached: its code does not rebuild the same tables")
        return False
    return _write(_path(folder, key).name, code)


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
    from .inspect import catalog as schema

    if isinstance(value, dict):
        if "__t__" in value:
            return tuple(_decode(v) for v in value["__t__"])
        if "__d__" in value:
            return {_decode(k): _decode(v) for k, v in value["__d__"]}
        cls = getattr(schema, value["__dc__"])
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


def load_sql(key: str) -> tuple[bool, tuple[str, ...]] | None:
    """Return the cached ``(atomic, statements)`` of one migration, or None."""
    import json

    folder = cache_dir()
    if folder is None:
        return None
    try:
        data = json.loads((folder / f"sql-v1-{key}.json").read_text("utf-8"))
        return bool(data["atomic"]), tuple(str(s) for s in data["statements"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_sql(key: str, atomic: bool, statements: Sequence[str]) -> None:
    """Cache one migration's rendered SQL (atomically; failures only cost the cache)."""
    import json

    _write(f"sql-v1-{key}.json", json.dumps({"atomic": atomic, "statements": list(statements)}))
