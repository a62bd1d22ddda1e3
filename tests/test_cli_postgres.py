"""`--postgres N`: one range for every command, the one `[tool.datalayer] postgres` has."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from datalayer.cli import main
from datalayer.project import MAX_POSTGRES, MIN_POSTGRES, load_project
from tests.migrate_runtime_support import write_table_migration

COMMANDS = [["migrate", "diff", "x"], ["migrate", "sql"], ["migrate", "lint"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[1])
@pytest.mark.parametrize("version", [1, 9, 10, 11, MIN_POSTGRES - 1, MAX_POSTGRES + 1])
def test_every_command_refuses_the_same_versions(
    clean_env: Path, command: list[str], version: int
) -> None:
    result = CliRunner().invoke(main, [*command, "--postgres", str(version)])
    assert result.exit_code == 2, result.output
    assert f"from {MIN_POSTGRES} to {MAX_POSTGRES}" in result.output
    (clean_env / "pyproject.toml").write_text(f"[tool.datalayer]\npostgres = {version}\n")
    with pytest.raises(Exception, match=f"from {MIN_POSTGRES} to {MAX_POSTGRES}"):
        load_project()


@pytest.mark.parametrize("command", COMMANDS[1:], ids=lambda c: c[1])
def test_every_command_takes_the_supported_versions(clean_env: Path, command: list[str]) -> None:
    write_table_migration(clean_env / "migrations", "001_a", "a")
    assert CliRunner().invoke(main, ["migrate", "hash"]).exit_code == 0
    for version in (MIN_POSTGRES, 17, MAX_POSTGRES):
        result = CliRunner().invoke(main, [*command, "--postgres", str(version)])
        assert result.exit_code == 0, result.output


def test_postgres_12_is_refused_saying_why(clean_env: Path) -> None:
    assert MIN_POSTGRES == 13 and load_project().postgres == 13  # the default: the lowest
    result = CliRunner().invoke(main, ["migrate", "lint", "--postgres", "12"])
    assert result.exit_code == 2
    assert "gen_random_uuid()" in result.output and "only from 13" in result.output
    (clean_env / "pyproject.toml").write_text("[tool.datalayer]\npostgres = 12\n")
    failed = CliRunner().invoke(main, ["migrate", "lint"])
    assert failed.exit_code == 1 and "only from 13" in failed.output, failed.output
    assert "Traceback" not in failed.output
