"""A background job as a migration declares it: what it updates, and its registration.

``migrator.backfill(model, update={...}, background=True)`` queues the
registration of a :class:`JobSpec`: a row in the history database's jobs
table (``migratehistory_jobs``), written in the migration's own transaction
and tagged with the migration being applied (:func:`current_migration`, set
by the runner).  Running the jobs is :mod:`..runtime.jobs`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections.abc import Iterator
from typing import Any

from ..ddl.spec import quote

__all__ = ["JobSpec", "current_migration", "jobs_table", "register"]

_HISTORY = "migratehistory"


def jobs_table(migrate_table: str = _HISTORY) -> str:
    """Return the name of the jobs table that goes with history table ``migrate_table``."""
    return f"{migrate_table}_jobs"


# -- which migration is being applied (set by the runner) ------------------------------

_CURRENT = threading.local()


@contextlib.contextmanager
def current_migration(name: str, migrate_table: str = _HISTORY) -> Iterator[None]:
    """Within the block, jobs registered on this thread belong to migration ``name``."""
    previous = getattr(_CURRENT, "value", None)
    _CURRENT.value = (name, migrate_table)
    try:
        yield
    finally:
        _CURRENT.value = previous


def _calling_migration() -> tuple[str, str]:
    """Return (migration name, history table) of the migration file being run.

    Set by :func:`current_migration` under datalayer; under ``pw_migrate`` (no
    runner of ours) the name is the file name of the calling migration.
    """
    value = getattr(_CURRENT, "value", None)
    if value is not None:
        return value  # type: ignore[no-any-return]
    import re
    from pathlib import Path

    frame = sys._getframe(1)
    while frame is not None:
        stem = Path(frame.f_code.co_filename).stem
        if re.match(r"^\d{3,}_", stem):
            return stem, _HISTORY
        # peewee-migrate compiles files as "<string>": its Router.run_one(name) is up the stack.
        name = frame.f_locals.get("name") if frame.f_code.co_name == "run_one" else None
        if isinstance(name, str) and re.match(r"^\d{3,}_", name):
            table = getattr(frame.f_locals.get("self"), "migrate_table", None)
            return name, table if isinstance(table, str) else _HISTORY
        frame = frame.f_back  # type: ignore[assignment]
    return "", _HISTORY


# -- the jobs table -----------------------------------------------------------------------


def _create_sql(table: str) -> str:
    t = quote(table)
    return f"""CREATE TABLE IF NOT EXISTS {t} (
    id serial PRIMARY KEY,
    migration varchar(255) NOT NULL,
    name varchar(255) NOT NULL,
    table_name text NOT NULL,
    key_column text NOT NULL,
    set_sql text NOT NULL,
    where_sql text,
    batch_size integer NOT NULL,
    state varchar(16) NOT NULL DEFAULT 'pending',
    cursor text,
    rows_total bigint,
    rows_done bigint NOT NULL DEFAULT 0,
    rows_updated bigint NOT NULL DEFAULT 0,
    batches integer NOT NULL DEFAULT 0,
    seconds double precision NOT NULL DEFAULT 0,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    updated_at timestamptz,
    finished_at timestamptz,
    UNIQUE (migration, name)
)"""


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """What a migration declares: ``UPDATE table SET set_sql WHERE where_sql``, in batches."""

    name: str
    table: str  # qualified and quoted
    key: str  # the single-column primary key
    set_sql: str
    where_sql: str | None
    batch_size: int

    def describe(self) -> str:
        where = f" WHERE {self.where_sql}" if self.where_sql else ""
        return (
            f"-- background job {self.name}: UPDATE {self.table} SET {self.set_sql}{where}, "
            f"{self.batch_size} rows at a time by {quote(self.key)}, after the migration commits"
        )


def register(database: Any, migration: str, spec: JobSpec, migrate_table: str = _HISTORY) -> None:
    """Record job ``spec`` of ``migration`` (pending); a job recorded before stays as it is."""
    table = jobs_table(migrate_table)
    database.execute_sql(_create_sql(table))
    database.execute_sql(
        f"INSERT INTO {quote(table)} (migration, name, table_name, key_column, set_sql, where_sql, "
        "batch_size) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (migration, name) DO NOTHING",
        (migration, spec.name, spec.table, spec.key, spec.set_sql, spec.where_sql,
         spec.batch_size),
    )
