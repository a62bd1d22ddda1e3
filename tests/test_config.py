"""Configuration: every variable, .env files, one message for every bad value, masking."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from datalayer.config import ConfigWarning, Settings, load_settings, mask_url
from datalayer.errors import ConfigError

SECRET = "s3cr3t-Pa55!"


def test_defaults_use_the_embedded_server(clean_env: Path) -> None:
    s = load_settings()
    assert s.embedded and s.source == "embedded"
    assert (s.port, s.user, s.dbname, s.sslmode) == (5432, "postgres", "postgres", "prefer")
    assert (s.max_open_conns, s.max_idle_conns) == (25, 5)
    assert (s.conn_max_lifetime, s.conn_max_idle_time, s.pool_timeout) == (3600, 1800, 10)
    assert s.connect_timeout == 5 and s.statement_timeout is None
    assert s.application_name == "datalayer"
    assert s.migrations_dir == Path("migrations")
    assert s.embedded_dir == Path(".datalayer/pg")


def test_every_db_variable_is_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "DB_HOST": "db.internal",
        "DB_PORT": "6543",
        "DB_USER": "app",
        "DB_PASSWORD": SECRET,
        "DB_NAME": "appdb",
        "DB_SSLMODE": "require",
        "DB_MAX_OPEN_CONNS": "40",
        "DB_MAX_IDLE_CONNS": "10",
        "DB_CONN_MAX_LIFETIME": "30min",
        "DB_CONN_MAX_IDLE_TIME": "90",
        "DB_POOL_TIMEOUT": "2.5",
        "DB_CONNECT_TIMEOUT": "3s",
        "DB_STATEMENT_TIMEOUT": "500ms",
        "DB_LOCK_TIMEOUT": "2s",
        "DB_IDLE_IN_TRANSACTION_TIMEOUT": "0",
        "DB_APPLICATION_NAME": "worker-7",
        "DATALAYER_MIGRATIONS_DIR": "db/migrations",
        "DATALAYER_EMBEDDED_DIR": "/tmp/pgdata",
        "DATALAYER_DEV_DATABASE_URL": "postgresql://dev@localhost/scratch",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert (s.host, s.port, s.user, s.password, s.dbname) == (
        "db.internal", 6543, "app", SECRET, "appdb")
    assert s.sslmode == "require" and s.source == "DB_*"
    assert (s.max_open_conns, s.max_idle_conns) == (40, 10)
    assert (s.conn_max_lifetime, s.conn_max_idle_time) == (1800, 90)
    assert (s.pool_timeout, s.connect_timeout) == (2.5, 3)
    assert s.statement_timeout == pytest.approx(0.5) and s.lock_timeout == 2
    assert s.idle_in_transaction_timeout is None
    assert s.application_name == "worker-7"
    assert s.migrations_dir == Path("db/migrations")
    assert s.embedded_dir == Path("/tmp/pgdata")
    assert s.dev_database_url == "postgresql://dev@localhost/scratch"
    kwargs = s.connect_kwargs()
    assert kwargs["options"] == "-c statement_timeout=500 -c lock_timeout=2000"
    assert kwargs["connect_timeout"] == 3 and kwargs["application_name"] == "worker-7"


def test_database_url_is_parsed(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db:5433/app?sslmode=disable")
    s = load_settings()
    assert (s.host, s.port, s.user, s.password, s.dbname, s.sslmode) == (
        "db", 5433, "app", SECRET, "app", "disable")
    assert s.source == "DATABASE_URL"


def test_url_without_tld_or_password_is_accepted() -> None:
    s = Settings.from_url("postgresql://app@db/app")
    assert (s.host, s.user, s.password, s.dbname) == ("db", "app", "", "app")


def test_url_with_percent_encoded_password() -> None:
    s = Settings.from_url("postgres://app:p%40ss%3Aw@db/app")
    assert s.password == "p@ss:w"


def test_database_url_wins_over_db_host_with_a_warning(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@urlhost/app")
    monkeypatch.setenv("DB_HOST", "envhost")
    with pytest.warns(ConfigWarning, match="DATABASE_URL wins"):
        s = load_settings()
    assert s.host == "urlhost"


def test_dotenv_in_cwd_is_read_but_process_env_wins(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("DB_HOST=from-file\nDB_PORT=6000\n")
    monkeypatch.setenv("DB_PORT", "7000")
    s = load_settings()
    assert (s.host, s.port) == ("from-file", 7000)


def test_parent_dotenv_is_not_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("DB_HOST=parent\n")
    child = clean_env / "child"
    child.mkdir()
    monkeypatch.chdir(child)
    assert load_settings().embedded


def test_env_name_loads_dotenv_name_over_dotenv(clean_env: Path) -> None:
    (clean_env / ".env").write_text("DB_HOST=base\nDB_NAME=basedb\n")
    (clean_env / ".env.local").write_text("DB_HOST=local\n")
    s = load_settings(env_name="local")
    assert (s.host, s.dbname) == ("local", "basedb")


def test_env_file_and_missing_files(clean_env: Path) -> None:
    path = clean_env / "custom.env"
    path.write_text("DB_HOST=custom\n")
    assert load_settings(env_file=path).host == "custom"
    with pytest.raises(ConfigError) as err:
        load_settings(env_name="nope", env_file=clean_env / "missing.env")
    assert set(err.value.problems) == {"--env", "--env-file"}
    assert ".env.nope" in str(err.value)


def test_all_bad_variables_in_one_message(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {
        "DB_HOST": "db",
        "DB_PORT": "abc",
        "DB_SSLMODE": "bogus",
        "DB_MAX_OPEN_CONNS": "0",
        "DB_POOL_TIMEOUT": "soon",
        "DB_STATEMENT_TIMEOUT": "-1",
        "DB_PASSWORD": SECRET,
    }
    for k, v in bad.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as err:
        load_settings()
    problems = err.value.problems
    assert {"DB_PORT", "DB_SSLMODE", "DB_MAX_OPEN_CONNS", "DB_POOL_TIMEOUT",
            "DB_STATEMENT_TIMEOUT"} <= set(problems)
    text = str(err.value)
    assert "1 to 65535" in text and "verify-full" in text and "500ms" in text
    assert SECRET not in text


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"DB_HOST": "db", "DB_PORT": "70000"}, "DB_PORT", "1-65535"),
        ({"DB_HOST": "db", "DB_PORT": "0"}, "DB_PORT", "1-65535"),
        ({"DB_HOST": ""}, "DB_HOST", "embedded"),
        ({"DB_HOST": "   "}, "DB_HOST", "embedded"),
        ({"DB_MAX_IDLE_CONNS": "30"}, "DB_MAX_IDLE_CONNS", "DB_MAX_OPEN_CONNS"),
        ({"DB_MAX_IDLE_CONNS": "-1"}, "DB_MAX_IDLE_CONNS", "> 0"),
        ({"DB_MAX_OPEN_CONNS": "ten"}, "DB_MAX_OPEN_CONNS", "whole number"),
        ({"DB_CONN_MAX_LIFETIME": "0"}, "DB_CONN_MAX_LIFETIME", "> 0"),
        ({"DB_CONNECT_TIMEOUT": "forever"}, "DB_CONNECT_TIMEOUT", "seconds"),
        ({"DATABASE_URL": "mysql://u@h/d"}, "DATABASE_URL", "postgresql://"),
        ({"DATABASE_URL": "postgresql:///nohost"}, "DATABASE_URL", "host"),
        ({"DATABASE_URL": "postgresql://u@h:99999/d"}, "DATABASE_URL", "port"),
        ({"DATALAYER_DEV_DATABASE_URL": "nonsense"}, "DATALAYER_DEV_DATABASE_URL", "scheme"),
        ({"DB_APPLICATION_NAME": "x" * 64}, "DB_APPLICATION_NAME", "1-63"),
        # Not used without DB_HOST, yet malformed: an error, not a silent embedded server.
        ({"DB_PORT": "abc"}, "DB_PORT", "1 to 65535"),
        ({"DB_PORT": "70000"}, "DB_PORT", "1 to 65535"),
        ({"DB_SSLMODE": "bogus"}, "DB_SSLMODE", "verify-full"),
        ({"DATABASE_URL": "postgresql://u@h/d", "DB_PORT": "abc"}, "DB_PORT", "1 to 65535"),
    ],
)
def test_bad_values_name_the_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str,
    fragment: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert variable in err.value.problems
    assert fragment in err.value.problems[variable]


def test_password_is_never_shown() -> None:
    s = Settings.from_url(f"postgresql://app:{SECRET}@db:5432/app")
    for text in (repr(s), str(s), s.url(), s.describe(), mask_url(s.url(masked=False))):
        assert SECRET not in text
    assert s.url() == "postgresql://app:***@db:5432/app"
    assert Settings.from_url(s.url(masked=False)).password == SECRET  # round trip


def test_bad_url_error_is_masked(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"mysql://app:{SECRET}@db/app")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert SECRET not in str(err.value) and "***" in str(err.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://a:b@h/d", "postgresql://a:***@h/d"),
        ("postgresql://a@h:5/d", "postgresql://a@h:5/d"),
        ("postgresql://h/d?sslmode=require&password=x", "postgresql://h/d?sslmode=require&password=***"),
        # everything after password= is hidden: a value may itself contain "&" or "#"
        ("postgresql://h/d?password=x&y&sslmode=require", "postgresql://h/d?password=***"),
        ("postgresql://a:p@ss@h/d", "postgresql://a:***@h/d"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_settings_built_directly_are_validated() -> None:
    with pytest.raises(ConfigError):
        Settings(host="h", max_open_conns=2, max_idle_conns=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Settings(host="h")
