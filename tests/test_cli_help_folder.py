"""`datalayer migrate --help` names the migrations folder the project configures."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from datalayer.cli import main


def _help(*args: str) -> str:
    result = CliRunner().invoke(main, [*args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # click wraps the text


def test_help_names_the_configured_folder(clean_env: Path) -> None:
    (clean_env / "pyproject.toml").write_text('[tool.datalayer]\nmigrations = "db/migrations"\n')
    text = _help("migrate", "--help")
    assert "peewee-migrate files in db/migrations/" in text, text
    assert "files in migrations/" not in text
    assert "files in elsewhere/" in _help("migrate", "--help", "--dir", "elsewhere")


def test_help_without_configuration_is_migrations(clean_env: Path) -> None:
    assert "peewee-migrate files in migrations/" in _help("migrate", "--help")


def test_help_with_a_broken_pyproject_still_works(clean_env: Path) -> None:
    (clean_env / "pyproject.toml").write_text("[tool.datalayer\n")
    assert "peewee-migrate files in the configured folder" in _help("migrate", "--help")
