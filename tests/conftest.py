"""Shared fixtures: a real PostgreSQL server, throwaway databases, a clean environment.

* ``pg``: the server (see tests/pgserver.py for how it is chosen);
* ``db``: the package's database on a session database with the tables, each
  test inside a transaction that is rolled back (single-threaded tests);
* ``isolated_db``: a brand-new database with the tables, for tests that use
  threads, processes or commit on purpose; dropped afterwards;
* ``empty_db``: settings of a brand-new empty database (migration tests);
* ``clean_env``: no DB_* / DATABASE_URL / DATALAYER_* variables, cwd a temp dir.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from datalayer.config import Settings
from datalayer.db import Database, database
from datalayer.models import MODELS
from tests.pgserver import Server

ENV_PREFIXES = ("DB_", "DATABASE_URL", "DATALAYER_")


@pytest.fixture(scope="session", autouse=True)
def _cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the replayed-state cache (migrate.runtime.cache) out of the user's ~/.cache."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def pg() -> Iterator[Server]:
    server = Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def template_db(pg: Server) -> Iterator[str]:
    """A database holding the models' tables, used as a template."""
    with pg.database("dltpl") as name:
        tmp = Database(pg.settings(name))
        with tmp.checkout(), tmp.bind_ctx(MODELS):
            tmp.create_tables(MODELS)
        tmp.close_pool()
        yield name


@pytest.fixture(scope="session")
def _session_db(pg: Server, template_db: str) -> Iterator[Settings]:
    with pg.database("dlsess", template=template_db) as name:
        yield pg.settings(name)


@pytest.fixture
def db(_session_db: Settings) -> Iterator[Database]:
    """The package's database, inside a transaction rolled back after the test."""
    if database._settings != _session_db or database._pool is None:
        database.configure(_session_db)
    with database.checkout(), database.atomic() as txn:
        yield database
        txn.rollback()


@pytest.fixture
def isolated_db(pg: Server, template_db: str) -> Iterator[Database]:
    """The package's database on a new database of its own (with the tables)."""
    with pg.database("dliso", template=template_db, ahead=True) as name:
        database.configure(pg.settings(name))
        try:
            yield database
        finally:
            database.close_pool()


@pytest.fixture
def empty_db(pg: Server) -> Iterator[Settings]:
    """Settings of a new, empty database."""
    with pg.database("dlempty", ahead=True) as name:
        yield pg.settings(name)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith(ENV_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_report_header(config: pytest.Config) -> str:
    from tests.pgserver import choice

    return f"datalayer: the tests use {choice()[0]}"
