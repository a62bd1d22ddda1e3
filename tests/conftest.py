"""Shared fixtures: a real PostgreSQL server, throwaway databases, a clean environment.

* ``pg``: the server (see tests/pgserver.py for how it is chosen);
* ``db``: the package's database on a session database with the tables, each
  test inside a transaction that is rolled back (single-threaded tests);
* ``isolated_db``: a brand-new database with the tables, for tests that use
  threads, processes or commit on purpose; dropped afterwards;
* ``empty_db``: settings of a brand-new empty database (migration tests);
* ``clean_env``: no DB_* / DATABASE_URL / DATALAYER_* variables, cwd a temp dir.

Under pytest-xdist (the README's command runs ``python -m pytest -n 2``) each worker
has its own server connection, session databases and background threads; a file's
tests run on one worker (module fixtures are made once), the slowest files first
(:data:`SLOW_FIRST`), and a test marked ``alone`` (timing comparisons, the load
test's connection counts) runs while no other worker runs a test (:func:`_alone`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from datalayer.config import Settings
from datalayer.db import Database, database
from datalayer.models import MODELS
from tests.pgserver import Server

ENV_PREFIXES = ("DB_", "DATABASE_URL", "DATALAYER_")

# Under xdist, these files are handed out first, longest first (durations of a serial run):
# a long file started last would keep one worker busy while the other has nothing to do.
SLOW_FIRST = (
    "test_migrate_no_patching.py",  # one test, 100-200 s
    "test_migrate_more_cases.py",
    "test_load.py",
    "test_replicas_live.py",
    "test_passwords.py",
    "test_embedded_project.py",
    "test_migrate_rebase.py",
    "test_example_app.py",
    "test_migrate_generate_cases.py",
    "test_races.py",
    "test_migrate_safe_forms.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """With ``-n``, hand out whole files in collection order (``--dist loadfile``).

    Whole files: module fixtures (the example app's venv) are made on one worker only.
    Collection order, not xdist's largest-file-first: see :data:`SLOW_FIRST`.
    """
    option = config.option
    if getattr(option, "numprocesses", None) and getattr(option, "dist", None) == "no":
        option.dist = "loadfile"
        option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: else as found


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


@contextlib.contextmanager
def _alone(config: pytest.Config, exclusive: bool) -> Iterator[None]:
    """Hold the run's test lock: shared for a test, exclusive for one marked ``alone``.

    Two flock files shared by the workers of one xdist run: ``gate`` is taken
    exclusively by each test only to get in line (a test marked ``alone`` keeps it, so
    no new test starts while it waits for the running ones), ``tests`` is held shared by
    every running test and exclusively by a test marked ``alone``.  Outside xdist, or
    with one worker, it does nothing.
    """
    if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") == "1":
        yield
        return
    # A worker's basetemp is <the run's basetemp>/<worker id>: the files go in the run's.
    where = config._tmp_path_factory.getbasetemp().parent
    with open(where / "datalayer-tests.gate", "a") as gate, \
            open(where / "datalayer-tests.lock", "a") as tests:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(tests, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            if not exclusive:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(tests, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, object, object]:
    """Run a test (its fixtures' setup and teardown too) under the run's test lock."""
    with _alone(item.config, item.get_closest_marker("alone") is not None):
        return (yield)


def pytest_report_header(config: pytest.Config) -> str:
    from tests.pgserver import choice

    return f"datalayer: the tests use {choice()[0]}"
