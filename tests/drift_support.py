"""Helpers for the baseline and drift tests: migrations from the models, SQL, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from datalayer.cli import main
from datalayer.config import Settings
from datalayer.db import Database
from datalayer.migrate.autogenerate.compare import create_migration
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.models import MODELS
from tests.pgserver import Server


def generate_initial(directory: Path) -> Path:
    """Write the initial migration of the package's models (and migrations.sum) to ``directory``."""
    result = create_migration(Router(Database(), directory), "initial")
    assert result is not None
    write_sum(directory)
    return directory


def create_tables(settings: Settings) -> None:
    """Make the models' tables with peewee's ``create_tables()`` (no migration history)."""
    db = Database(settings)
    try:
        with db.checkout(), db.bind_ctx(MODELS):
            db.create_tables(MODELS)
    finally:
        db.close_pool()


def run_sql(pg: Server, dbname: str, *statements: str) -> None:
    conn = pg.raw(dbname)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def query(pg: Server, dbname: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = pg.raw(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            return list(cur.fetchall())
    finally:
        conn.close()


def has_table(pg: Server, dbname: str, qualified: str) -> bool:
    return query(pg, dbname, "SELECT to_regclass(%s) IS NOT NULL", (qualified,))[0][0] is True


def scratch_databases(pg: Server) -> set[str]:
    """Return the scratch databases this process made that still exist (others' run too)."""
    rows = query(pg, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s",
                 (f"datalayer\\_check\\_%\\_{os.getpid()}\\_%",))
    return {r[0] for r in rows}


def use(monkeypatch: pytest.MonkeyPatch, pg: Server, settings: Settings, directory: Path) -> None:
    """Point the CLI at ``settings``'s database, the test server as scratch, and ``directory``."""
    monkeypatch.setenv("DATABASE_URL", settings.url(masked=False))
    monkeypatch.setenv("DATALAYER_DEV_DATABASE_URL", pg.admin.url(masked=False))
    monkeypatch.setenv("DATALAYER_MIGRATIONS_DIR", str(directory))


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def status_json() -> dict[str, list[str]]:
    result = invoke("migrate", "status", "--json")
    data: dict[str, list[str]] = json.loads(result.stdout)
    return data
