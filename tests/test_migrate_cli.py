"""`datalayer migrate` apply / status / hash / rollback: output, JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from datalayer.cli import main
from datalayer.config import Settings
from tests.migrate_runtime_support import history, make_tables, run_cli, write_migration
from tests.pgserver import Server


@pytest.fixture
def env(clean_env: Path, empty_db: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DATABASE_URL", empty_db.url(masked=False))
    return empty_db


@pytest.fixture
def mdir(clean_env: Path) -> Path:
    return clean_env / "migrations"  # the default directory (cwd is clean_env)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_status_json_and_exit_codes(pg: Server, env: Settings, mdir: Path) -> None:
    names = make_tables(mdir, 3)
    result = invoke("migrate", "status", "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout) == {
        "applied": [], "pending": names, "modified": [], "missing": [], "problems": [],
        "invalid_indexes": [], "not_valid_constraints": [],
    }
    result = invoke("migrate", "apply", "--to", names[0])
    assert result.exit_code == 0, result.output
    result = invoke("migrate", "status")
    assert result.exit_code == 3
    assert f"[x] {names[0]}" in result.stdout and f"[ ] {names[1]}  pending" in result.stdout
    assert "1 applied, 2 pending, 0 modified, 0 missing" in result.stdout
    result = invoke("migrate", "apply")
    assert result.exit_code == 0
    result = invoke("migrate", "status", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["applied"] == names


def test_status_exit_3_for_modified_and_missing(env: Settings, mdir: Path) -> None:
    names = make_tables(mdir, 2)
    assert invoke("migrate", "apply").exit_code == 0
    (mdir / f"{names[1]}.py").unlink()
    path = mdir / f"{names[0]}.py"
    path.write_text(path.read_text() + "# edited\n")
    result = invoke("migrate", "status", "--json")
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["modified"] == names[:1] and data["missing"] == names[1:]
    assert data["pending"] == []
    human = invoke("migrate", "status")
    assert f"[!] {names[0]}  modified since it was applied" in human.stdout
    assert f"[?] {names[1]}  applied, missing on disk" in human.stdout
    assert "warning:" in human.stderr  # the checksum file no longer matches either


def test_apply_prints_a_line_per_migration_with_its_time(env: Settings, mdir: Path) -> None:
    names = make_tables(mdir, 2)
    result = invoke("migrate", "apply")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"applied {names[0]} (") and lines[0].endswith(" ms)")
    assert lines[1].startswith(f"applied {names[1]} (")
    assert lines[2].startswith(f"2 migrations applied to {env.describe()} in ")
    again = invoke("migrate", "apply")
    assert again.exit_code == 0
    assert again.stdout.strip() == f"nothing to apply: {env.describe()} is up to date"


def test_apply_dry_run_prints_sql_and_changes_nothing(
    pg: Server, env: Settings, mdir: Path
) -> None:
    make_tables(mdir, 2)
    result = invoke("migrate", "apply", "--dry-run")
    assert result.exit_code == 0
    assert "-- 001_create_t1" in result.stdout
    assert any(
        line.startswith("CREATE TABLE") and '"t1"' in line for line in result.stdout.splitlines()
    )
    assert "nothing was changed" in result.stdout
    assert history(pg, env.dbname) == []
    assert invoke("migrate", "status").exit_code == 3


def test_apply_errors_exit_1_with_one_line(env: Settings, mdir: Path) -> None:
    make_tables(mdir, 1)
    (mdir / "001_create_t1.py").write_text("# edited\n")
    result = invoke("migrate", "apply")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "001_create_t1.py changed after" in result.stderr
    assert "Traceback" not in result.output


def test_failing_migration_exits_1_and_names_it(env: Settings, mdir: Path) -> None:
    write_migration(mdir, "001_bad", migrate='migrator.sql("SELEC 1")')
    assert invoke("migrate", "hash").exit_code == 0
    result = invoke("migrate", "apply")
    assert result.exit_code == 1
    assert "001_bad.py failed and was rolled back" in result.stderr


def test_hash_writes_the_sum(env: Settings, mdir: Path) -> None:
    make_tables(mdir, 2, hashed=False)
    result = invoke("migrate", "hash")
    assert result.exit_code == 0
    assert "(2 migration files)" in result.stdout
    assert (mdir / "migrations.sum").read_text().count(" h1:") == 2


def test_rollback_steps(pg: Server, env: Settings, mdir: Path) -> None:
    names = make_tables(mdir, 3)
    assert invoke("migrate", "apply").exit_code == 0
    result = invoke("migrate", "rollback", "--steps", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(f"rolled back {names[2]} (")
    assert result.stdout.splitlines()[1].startswith(f"rolled back {names[1]} (")
    assert [r[0] for r in history(pg, env.dbname)] == names[:1]
    too_many = invoke("migrate", "rollback", "--steps", "5")
    assert too_many.exit_code == 1
    assert "use --steps 1 or fewer" in too_many.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("migrate", "rollback", "--steps", "0"),
        ("migrate", "apply", "--bogus"),
        ("migrate", "status", "extra"),
        ("migrate", "diff"),
        ("migrate", "nope"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], clean_env: Path) -> None:
    assert invoke(*args).exit_code == 2


def test_dir_option_and_environment_variable(
    env: Settings, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = clean_env / "db" / "migrations"
    names = make_tables(elsewhere, 1)
    result = invoke("migrate", "--dir", str(elsewhere), "status", "--json")
    assert json.loads(result.stdout)["pending"] == names
    monkeypatch.setenv("DATALAYER_MIGRATIONS_DIR", str(elsewhere))
    result = invoke("migrate", "status", "--json")
    assert json.loads(result.stdout)["pending"] == names


def test_every_migrate_command_has_help(clean_env: Path) -> None:
    from datalayer.cli.migrate import migrate

    assert migrate.help
    for name, command in migrate.commands.items():
        assert command.help and command.help.strip(), f"migrate {name} has no help text"
        result = invoke("migrate", name, "--help")
        assert result.exit_code == 0
        assert result.stdout.startswith("Usage:")


def test_no_password_in_any_output(pg: Server, empty_db: Settings, tmp_path: Path) -> None:
    secret = "s3cr3t-Pa55"
    with_password = empty_db.replace(password=secret)  # trust auth: the password is not checked
    mdir = tmp_path / "migrations"
    make_tables(mdir, 1)
    write_migration(mdir, "002_bad", migrate='migrator.sql("SELECT 1/0")')
    outputs = []
    for args in (
        ("migrate", "status"),
        ("migrate", "apply", "--dry-run"),
        ("migrate", "apply"),
        ("migrate", "hash"),
        ("migrate", "apply"),
        ("migrate", "status", "--json"),
        ("migrate", "rollback"),
    ):
        done = run_cli(with_password, mdir, *args)
        outputs.append(done.stdout + done.stderr)
    text = "\n".join(outputs)
    assert "002_bad.py failed" in text  # the runs did happen
    assert secret not in text


def test_subprocess_exit_codes(pg: Server, empty_db: Settings, tmp_path: Path) -> None:
    mdir = tmp_path / "migrations"
    make_tables(mdir, 1)
    assert run_cli(empty_db, mdir, "migrate", "status").returncode == 3
    assert run_cli(empty_db, mdir, "migrate", "apply").returncode == 0
    assert run_cli(empty_db, mdir, "migrate", "status").returncode == 0
    assert run_cli(empty_db, mdir, "migrate", "rollback", "--steps", "x").returncode == 2
