"""Bad input to the CLI: one clear line, the right exit code, never a traceback.

Each row was a traceback or silently accepted before: a 400-digit duration
(OverflowError), other scripts' digits ('٣' read as 3), a NUL in the migrations
setting (ValueError), a symlink loop (RuntimeError), a 300-character migration name
(OSError: File name too long), a name given with its number (008_008_foo.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from datalayer.cli import main
from datalayer.config import Settings, load_settings
from datalayer.errors import ConfigError
from datalayer.migrate.runtime.names import MigrationNameError, check_name
from tests.migrate_runtime_support import write_table_migration

DURATIONS = [
    "DB_CONN_MAX_LIFETIME", "DB_CONN_MAX_IDLE_TIME", "DB_POOL_TIMEOUT", "DB_CONNECT_TIMEOUT",
    "DB_STATEMENT_TIMEOUT", "DB_LOCK_TIMEOUT", "DB_IDLE_IN_TRANSACTION_TIMEOUT",
    "DB_MAX_CHECKOUT_TIME", "DB_CLIENT_TIMEOUT",
]


def _clear(result: Result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    assert fragment in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize("value", ["9" * 400, "٣", "٣s", "1e400", "inf", "nan", "600h"])
def test_bad_durations_are_config_errors(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()
    result = CliRunner().invoke(main, ["db", "url"])
    _clear(result, 1, f"{name}: ")


@pytest.mark.parametrize("name", ["DB_PORT", "DB_MAX_OPEN_CONNS", "DB_MAX_IDLE_CONNS"])
@pytest.mark.parametrize("value", ["٣", "9" * 400])
def test_bad_whole_numbers_are_config_errors(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_good_durations_still_parse(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT", "596h")
    monkeypatch.setenv("DB_LOCK_TIMEOUT", "1.5s")
    settings = load_settings()
    assert (settings.statement_timeout, settings.lock_timeout) == (596 * 3600, 1.5)


@pytest.mark.parametrize(
    "args",
    [
        ["migrate", "rollback", "--steps", "٣"],
        ["migrate", "apply", "--lock-retries", "٣"],
        ["migrate", "apply", "--wait", "inf"],
        ["migrate", "apply", "--statement-timeout", "1e400"],
        ["migrate", "apply", "--lock-timeout", "nan"],
        ["migrate", "apply", "--lock-timeout", "٣"],
        ["migrate", "lint", "--postgres", "\u0661\u0665"],
    ],
)
def test_bad_numeric_options_are_usage_errors(clean_env: Path, args: list[str]) -> None:
    _clear(CliRunner().invoke(main, args), 2, "Invalid value for")


def test_non_ascii_digits_do_not_name_a_migration(clean_env: Path, empty_db: Settings) -> None:
    write_table_migration(clean_env / "migrations", "001_a", "a")
    assert CliRunner().invoke(main, ["migrate", "hash"]).exit_code == 0
    env = {"DATABASE_URL": empty_db.url(masked=False)}
    for args in (["migrate", "apply", "--to", "\u0660\u0660\u0661"], ["migrate", "sql", "\u0661"]):
        _clear(CliRunner().invoke(main, args, env=env), 1, "there is no migration")
    _clear(CliRunner().invoke(main, ["migrate", "apply", "--to", "001"], env=env), 0, "applied")


def test_a_nul_in_the_migrations_setting(clean_env: Path) -> None:
    (clean_env / "pyproject.toml").write_text('[tool.datalayer]\nmigrations = "a\\u0000b"\n')
    _clear(CliRunner().invoke(main, ["migrate", "hash"]), 1, "migrations must be a folder path")


def test_a_migrations_folder_that_is_a_symlink_loop(clean_env: Path) -> None:
    (clean_env / "loop").symlink_to("loop")
    (clean_env / "pyproject.toml").write_text('[tool.datalayer]\nmigrations = "loop"\n')
    _clear(CliRunner().invoke(main, ["migrate", "hash"]), 1, "a symlink loop")
    (clean_env / "pyproject.toml").unlink()
    _clear(CliRunner().invoke(main, ["migrate", "hash", "--dir", "loop"]), 1, "a symlink loop")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a" * 300, "300 characters long; use at most 200"),
        ("008_foo", "starts with a number; give it without one (foo)"),
        ("bad-name", "is not valid"),
    ],
)
def test_bad_migration_names_are_usage_errors(clean_env: Path, name: str, fragment: str) -> None:
    with pytest.raises(MigrationNameError, match=fragment.split(";")[0]):
        check_name(name)
    for command in ("diff", "squash"):
        _clear(CliRunner().invoke(main, ["migrate", command, name]), 2, fragment)
    assert not (clean_env / "migrations").exists()  # nothing half-done


def test_names_that_merely_contain_digits_are_fine() -> None:
    assert check_name("add_2fa") == "add_2fa"
    assert check_name("v2_users") == "v2_users"
    assert check_name("a" * 200) == "a" * 200
