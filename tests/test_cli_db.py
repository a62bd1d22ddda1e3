"""``datalayer db ...`` and the CLI's shared behaviour."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from datalayer import embedded
from datalayer.cli import main
from tests.pgserver import Server

SECRET = "cli-sentinel-pw"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def walk(group: click.Group, ctx: click.Context) -> list[tuple[str, click.Command]]:
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        out.append((name, cmd))
        if isinstance(cmd, click.Group):
            out += [(f"{name} {n}", c) for n, c in walk(cmd, ctx)]
    return out


def test_every_command_has_help_text() -> None:
    ctx = click.Context(main)
    commands = walk(main, ctx)
    assert {"db", "db info", "db start", "db stop"} <= {n for n, _ in commands}
    for name, cmd in commands:
        assert (cmd.help or "").strip(), f"`datalayer {name}` has no help text"
        code, out, _ = run(*name.split(), "--help")
        assert code == 0 and "Usage" in out


def test_db_info_on_the_configured_server(clean_env: Path, pg: Server) -> None:
    url = pg.admin.url(masked=False)
    code, out, err = run("db", "info", "--json", env={"DATABASE_URL": url})
    assert code == 0, err
    data = json.loads(out)
    assert data["source"] == "DATABASE_URL"
    assert data["server_version"][0].isdigit()
    assert data["pool"]["max_open_conns"] == 25
    code, out, _ = run("db", "info", env={"DATABASE_URL": url})
    assert code == 0 and "server version:" in out and "max open 25" in out


def test_db_info_masks_the_password(clean_env: Path, pg: Server) -> None:
    url = pg.admin.replace(password=SECRET).url(masked=False)
    code, out, err = run("db", "info", env={"DATABASE_URL": url})
    # trust authentication ignores the password; either way it must not be printed
    assert SECRET not in out + err
    if code == 0:
        assert ":***@" in out


def test_bad_configuration_is_one_message_and_exit_1(clean_env: Path) -> None:
    code, out, err = run("db", "info", env={"DB_HOST": "h", "DB_PORT": "abc",
                                            "DB_PASSWORD": SECRET, "DB_SSLMODE": "bogus"})
    assert code == 1
    assert "DB_PORT" in err and "DB_SSLMODE" in err and "Traceback" not in err
    assert SECRET not in out + err


def test_env_option_loads_the_named_file(clean_env: Path, pg: Server) -> None:
    (clean_env / ".env.local").write_text(f"DATABASE_URL={pg.admin.url(masked=False)}\n")
    code, out, err = run("--env", "local", "db", "url")
    assert code == 0, err
    assert out.strip() == pg.admin.url(masked=True)
    code, _, err = run("--env", "missing", "db", "url")
    assert code == 1 and ".env.missing" in err


def test_usage_error_exits_2() -> None:
    code, _, _ = run("db", "no-such-command")
    assert code == 2


@pytest.mark.slow
def test_db_start_info_stop_on_the_embedded_default(clean_env: Path) -> None:
    # Not under tmp_path (see tests/test_embedded.py's datadir fixture).
    base = Path(tempfile.mkdtemp(prefix="datalayer-cli-"))
    env = {"DATALAYER_EMBEDDED_DIR": str(base / "pg")}
    try:
        code, out, err = run("db", "start", env=env)
        assert code == 0, err
        url = out.strip()
        assert url.startswith("postgresql://postgres@127.0.0.1:")
        code, out, err = run("db", "info", env=env)
        assert code == 0, err
        assert url in out and "(from embedded)" in out
        code, out, _ = run("db", "stop", env=env)
        assert code == 0 and "stopped" in out
        code, out, _ = run("db", "stop", env=env)
        assert code == 0 and "no embedded server" in out
    finally:
        embedded.remove_server(base / "pg")
        shutil.rmtree(base, ignore_errors=True)


def test_db_info_shows_the_client_side_timeouts(clean_env: Path, pg: Server) -> None:
    env = {"DATABASE_URL": pg.admin.url(masked=False), "DB_CLIENT_TIMEOUT": "7",
           "DB_MAX_CHECKOUT_TIME": "90"}
    code, out, err = run("db", "info", env=env)
    assert code == 0, err
    assert "client side:      DB_CLIENT_TIMEOUT 7 s, DB_MAX_CHECKOUT_TIME 90 s" in out
    data = json.loads(run("db", "info", "--json", env=env)[1])
    assert data["client_timeout"] == 7 and data["max_checkout_time"] == 90
    code, out, _ = run("db", "info", env={"DATABASE_URL": pg.admin.url(masked=False)})
    assert "DB_CLIENT_TIMEOUT" in out and "(DB_CLIENT_TIMEOUT unset: the default)" in out


def test_db_url_never_starts_the_embedded_server(clean_env: Path) -> None:
    directory = clean_env / "pg"
    code, out, err = run("db", "url", env={"DATALAYER_EMBEDDED_DIR": str(directory)})
    assert code == 1 and out == ""
    assert err.strip().startswith("error: no database is configured and the embedded server")
    assert "`datalayer db start`" in err and len(err.strip().splitlines()) == 1
    assert not directory.exists(), "nothing was initialised or started"
    assert embedded.server_status(directory) is None


@pytest.mark.slow
def test_db_start_says_what_it_did_and_db_url_on_a_stopped_server(
    clean_env: Path, pg: Server
) -> None:
    base = Path(tempfile.mkdtemp(prefix="datalayer-cli-"))
    env = {"DATALAYER_EMBEDDED_DIR": str(base / "pg")}
    try:
        code, out, err = run("db", "start", env=env)
        assert code == 0, err
        url = out.strip()
        assert err.strip() == (
            f"started the embedded PostgreSQL {(base / 'pg' / 'PG_VERSION').read_text().strip()} "
            f"in {base / 'pg'} on port {url.split(':')[-1].split('/')[0]} "
            "(datalayer db stop stops it)"
        )
        code, out, err = run("db", "start", env=env)
        assert code == 0 and out.strip() == url
        assert err.strip() == f"the embedded server in {base / 'pg'} is already running"
        assert run("db", "url", env=env)[1].strip() == url
        code, out, err = run("db", "start", env={**env, "DATABASE_URL": pg.admin.url()})
        assert code == 0 and out.strip() == url
        assert "note: DATABASE_URL is set, so datalayer uses " in err
        assert "not this embedded server" in err
        code, out, err = run("db", "start", env={**env, "DB_HOST": "127.0.0.1"})
        assert "note: DB_* is set" in err
        assert run("db", "stop", env=env)[0] == 0
        code, out, err = run("db", "url", env=env)
        assert code == 1 and "is not running" in err
        assert embedded.server_status(base / "pg") is None, "db url did not restart it"
    finally:
        embedded.remove_server(base / "pg")
        shutil.rmtree(base, ignore_errors=True)


def test_a_mistyped_command_gets_did_you_mean_at_the_top_level() -> None:
    result = CliRunner().invoke(main, ["migrat", "status"])
    assert result.exit_code == 2
    assert "No such command 'migrat'. Did you mean 'migrate'?" in result.stderr
    result = CliRunner().invoke(main, ["migrate", "stauts"])
    assert result.exit_code == 2 and "Did you mean 'status'?" in result.stderr
