"""`migrate check` sends a plain history as its rendered SQL; other histories go through the runner.

Either way the answer is the same: these tests watch which way was taken (the
runner's ``apply`` is wrapped, never replaced) and that the check passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from datalayer.config import Settings
from datalayer.db import Database
from datalayer.migrate.autogenerate.compare import create_migration
from datalayer.migrate.check import check
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from tests.migrate_runtime_support import write_migration
from tests.pgserver import Server

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(pg: Server) -> Settings:
    return pg.settings("postgres").replace(dev_database_url=pg.admin.url(masked=False))


@pytest.fixture
def generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATALAYER_CACHE_DIR", "off")  # every check applies the history
    directory = tmp_path / "migrations"
    assert create_migration(Router(Database(), directory), "initial") is not None
    write_sum(directory)
    return directory


@pytest.fixture
def runner_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    original = runner.apply

    def apply(target: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(target)
        return original(target, *args, **kwargs)

    monkeypatch.setattr(runner, "apply", apply)
    return calls


def test_a_plain_history_is_applied_from_its_sql(
    settings: Settings, generated: Path, runner_calls: list[Any]
) -> None:
    note = 'migrator.sql("COMMENT ON TABLE users IS \'x\'")'
    write_migration(generated, "002_note", migrate=note)
    write_sum(generated)
    assert check(settings, generated) == []
    assert runner_calls == []


@pytest.mark.parametrize(
    "body",
    [
        "migrator.run(lambda: None)",  # Python: only the runner runs it
        'database.execute_sql("SELECT 1")',  # rows the file's code could read
    ],
)
def test_a_history_with_python_or_reads_goes_through_the_runner(
    settings: Settings, generated: Path, runner_calls: list[Any], body: str
) -> None:
    write_migration(generated, "002_step", migrate=body)
    write_sum(generated)
    assert check(settings, generated) == []
    assert len(runner_calls) == 1


def test_a_transactional_file_that_commits_is_refused_as_before(
    settings: Settings, generated: Path, runner_calls: list[Any]
) -> None:
    write_migration(generated, "002_commit", migrate='migrator.sql("COMMIT")')
    write_sum(generated)
    problems = check(settings, generated)
    assert any(p.startswith("the migrations do not apply to an empty database:")
               and "002_commit.py" in p for p in problems), problems
    assert len(runner_calls) == 1
