"""A squashed history passes ``check``, ``sql``, ``lint`` and ``rollback --dry-run``.

The squashed file asks the database whether the folded migrations were
applied; rendered without a database (``sql``, ``lint``, the lint inside
``check``) that question has no answer and must not fail the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from datalayer.cli import main
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.names import migration_names
from tests.pgserver import Server
from tests.test_migrate_squash import _generate


@pytest.fixture
def squashed(pg: Server, tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "migrations"
    for version, name in [(1, "authors"), (2, "author_email"), (3, "books")]:
        _generate(directory, name, version)
    write_sum(directory)
    monkeypatch.setenv("DATALAYER_DEV_DATABASE_URL", pg.admin.url(masked=False))
    result = CliRunner().invoke(main, ["migrate", "squash", "base", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert len(migration_names(directory)) == 1
    return directory


def test_sql_and_lint_of_a_squashed_history(squashed: Path) -> None:
    result = CliRunner().invoke(main, ["migrate", "sql", "--dir", str(squashed)])
    assert result.exit_code == 0, result.output
    assert 'CREATE TABLE "authors"' in result.output
    assert "migratehistory" not in result.output  # the squash's own probe is not shown
    assert "cannot be rendered" not in result.output
    result = CliRunner().invoke(main, ["migrate", "sql", "--rollback", "--dir", str(squashed)])
    assert result.exit_code == 0, result.output
    assert "DROP TABLE" in result.output
    result = CliRunner().invoke(main, ["migrate", "lint", "--dir", str(squashed)])
    assert result.exit_code == 0, result.output
    assert "cannot be rendered" not in result.output


def test_check_and_rollback_dry_run_of_a_squashed_history(
    pg: Server, squashed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_migrate_squash import _models

    with pg.database("dlsqoff") as name:
        monkeypatch.setenv("DATABASE_URL", pg.settings(name).url(masked=False))
        problems = __import__("datalayer.migrate.check", fromlist=["check"]).check(
            pg.settings(name).replace(dev_database_url=pg.admin.url(masked=False)),
            squashed,
            _models(3),
        )
        assert problems == []
        result = CliRunner().invoke(main, ["migrate", "apply", "--dir", str(squashed)])
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(
            main, ["migrate", "rollback", "--dry-run", "--dir", str(squashed)]
        )
        assert result.exit_code == 0, result.output
        assert "DROP TABLE" in result.output
