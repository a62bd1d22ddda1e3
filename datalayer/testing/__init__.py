"""Migration tests: a pytest plugin (entry point ``pytest11``, loaded once datalayer is installed).

The fixture ``migrator`` builds a fresh database, at any migration of the
project's folder, and drops it after the test::

    def test_split_name(migrator):
        migrator.to("001_people")
        migrator.models("Person").create(name="Ada Lovelace")
        migrator.to("002_split_name")                      # forward, or backward
        ada = migrator.models("Person").get()              # the models as of 002
        assert (ada.first_name, ada.last_name) == ("Ada", "Lovelace")

``migrator.models(NAME)`` is the model of the replayed state at that point (by
class or table name), bound to the test database.  One line in a project's
``conftest.py`` adds a ready test that walks the whole history up, down and up
again, checking the live schema at each step against the replayed state::

    from datalayer.testing import test_migration_history  # noqa: F401

The database server, first that applies (as ``migrate check``'s scratch
databases, :mod:`datalayer.migrate.scratch`): ``DATALAYER_DEV_DATABASE_URL``,
the server of the project's settings when its user may create databases, the
project's embedded server.  Override the ``datalayer_settings`` fixture to
choose other settings, ``datalayer_migrations_dir`` for another folder.

Loading the plugin costs nothing until one of its fixtures is used: this
module imports only pytest, and the work lives in :mod:`._tester`.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from ..config import Settings
    from ._tester import MigrationTester

__all__ = ["MigrationTester", "test_migration_history"]  # fixtures: migrator, datalayer_*

_T = TypeVar("_T")


def __getattr__(name: str) -> Any:
    if name == "MigrationTester":
        from ._tester import MigrationTester

        return MigrationTester
    raise AttributeError(f"module 'datalayer.testing' has no attribute {name!r}")


def _or_fail(call: Callable[[], _T]) -> _T:
    """Return ``call()``; a datalayer error (bad settings, no folder, no server): one line."""
    from ..errors import DatalayerError

    try:
        return call()
    except DatalayerError as exc:
        message = f"datalayer: {exc}"
    pytest.fail(message, pytrace=False)  # outside the except: no "during handling" chain


@pytest.fixture(scope="session")
def datalayer_settings() -> Settings:
    """The project's settings (environment, ``.env``): they choose the test databases' server."""
    from ..config import load_settings

    return _or_fail(load_settings)


@pytest.fixture(scope="session")
def datalayer_migrations_dir(datalayer_settings: Settings) -> Path:
    """The migrations folder under test: the project's, as the CLI would use from here."""
    from ..project import default_migrations_dir

    return _or_fail(lambda: default_migrations_dir(datalayer_settings))


@pytest.fixture(scope="session")
def _datalayer_scratch_server(datalayer_settings: Settings) -> Settings:
    from ._tester import scratch_admin

    return _or_fail(lambda: scratch_admin(datalayer_settings))


@pytest.fixture
def migrator(
    _datalayer_scratch_server: Settings, datalayer_migrations_dir: Path
) -> Iterator[MigrationTester]:
    """A fresh, empty database for this test (dropped afterwards), driven by migration name."""
    from ._tester import MigrationTester

    with contextlib.ExitStack() as stack:
        fresh = MigrationTester.fresh(_datalayer_scratch_server, datalayer_migrations_dir)
        yield _or_fail(lambda: stack.enter_context(fresh))


def test_migration_history(migrator: MigrationTester) -> None:
    """Every migration applies, rolls back and applies again, matching the replayed state."""
    problems = migrator.walk_history()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# -- the one-line opt-in: ``from datalayer.testing import test_migration_history`` in a
# conftest.py.  pytest never collects tests from a conftest.py, so this collects that one.


class _ConftestTests(pytest.File):
    """The datalayer tests a ``conftest.py`` imported (collected from no other file)."""

    def collect(self) -> Iterator[pytest.Item]:
        yield _ConftestTest.from_parent(
            self, name="test_migration_history", callobj=test_migration_history
        )


class _ConftestTest(pytest.Function):
    """A test function collected from a conftest.py (reported as ``conftest.py::NAME``)."""

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name != "conftest.py":
        return None
    if parent.session.isinitpath(file_path) or any(
        fnmatch.fnmatch(file_path.name, p) for p in parent.config.getini("python_files")
    ):
        return None  # pytest collects it as a test module (named on the command line, or *.py)
    module = parent.config.pluginmanager.get_plugin(str(file_path))
    if getattr(module, "test_migration_history", None) is not test_migration_history:
        return None
    collector: _ConftestTests = _ConftestTests.from_parent(parent, path=file_path)
    return collector
