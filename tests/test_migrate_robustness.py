"""Hostile migration files and migrations that misbehave: one clear line, exit 1, nothing done.

Each case runs the real CLI (click's CliRunner, exceptions not caught, so a
traceback fails the test) against a real PostgreSQL database.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from datalayer.cli import main
from datalayer.config import Settings
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import transaction_control
from tests.migrate_runtime_support import history, make_tables, tables, write_migration
from tests.pgserver import Server


@pytest.fixture
def env(clean_env: Path, empty_db: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DATABASE_URL", empty_db.url(masked=False))
    return empty_db


@pytest.fixture
def mdir(clean_env: Path) -> Path:
    return clean_env / "migrations"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error(result: Result, *fragments: str, code: int = 1) -> str:
    """Assert exit ``code`` and a single `error:` line on stderr holding every fragment."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- files on disk -------------------------------------------------------------


def test_non_utf8_bytes_in_the_sum(pg: Server, env: Settings, mdir: Path) -> None:
    make_tables(mdir, 1)
    sum_path = mdir / "migrations.sum"
    sum_path.write_bytes(sum_path.read_bytes() + b"002_x.py h1:\xff\xfe\n")
    one_error(invoke("migrate", "apply"), "migrations.sum line 3 is not UTF-8", "migrate hash")
    assert history(pg, env.dbname) == []
    status = invoke("migrate", "status", "--json")
    assert status.exit_code == 3
    problems = json.loads(status.stdout)["problems"]
    assert len(problems) == 1 and "is not UTF-8" in problems[0]
    assert invoke("migrate", "hash").exit_code == 0  # the way out works
    assert invoke("migrate", "apply").exit_code == 0


@pytest.mark.parametrize("kind", ["directory", "symlink loop", "dangling symlink"])
def test_an_entry_that_is_not_a_readable_file(
    pg: Server, env: Settings, mdir: Path, kind: str
) -> None:
    make_tables(mdir, 1)
    entry = mdir / "002_second.py"
    if kind == "directory":
        entry.mkdir()
    elif kind == "symlink loop":
        os.symlink(entry.name, entry)
    else:
        os.symlink("nowhere.py", entry)
    expected = {"directory": "(a directory)", "symlink loop": "(a symlink loop)",
                "dangling symlink": "(a symlink to nothing)"}[kind]
    for command in (["hash"], ["apply"], ["status"], ["rollback"], ["diff", "x"]):
        one_error(invoke("migrate", *command),
                  f"migrations/{entry.name} is not a readable file {expected}")
    assert history(pg, env.dbname) == []
    assert not (mdir / "migrations.sum.tmp").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_an_unreadable_file(env: Settings, mdir: Path) -> None:
    make_tables(mdir, 2)
    path = mdir / "002_create_t2.py"
    path.chmod(0)
    try:
        one_error(invoke("migrate", "apply"), f"{path.name} cannot be read", "chmod")
        one_error(invoke("migrate", "hash"), f"{path.name} cannot be read")
    finally:
        path.chmod(0o644)


def test_read_errors_are_one_line_even_as_root(mdir: Path, monkeypatch: pytest.MonkeyPatch,
                                               env: Settings) -> None:
    # As root chmod cannot make a file unreadable: make reading it fail as EACCES would.
    make_tables(mdir, 1)
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == "001_create_t1.py":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    one_error(invoke("migrate", "apply"), "001_create_t1.py cannot be read: Permission denied")


@pytest.mark.parametrize("bad", ["001_add timezone.py", "001_add-timezone.py", "001_café.py"])
def test_a_file_name_that_is_not_allowed_is_refused_by_every_command(
    pg: Server, env: Settings, mdir: Path, bad: str
) -> None:
    write_migration(mdir, "001_ok")
    (mdir / bad).write_text("def migrate(migrator, database, *, fake=False):\n    pass\n")
    # hash used to accept it, then apply refused it and said to run hash: a loop.
    for command in (["hash"], ["apply"], ["status"], ["rollback"], ["diff", "x"]):
        line = one_error(invoke("migrate", *command), "is not a valid migration file name",
                         "letters, digits and underscores", "rename it (e.g. to 001_")
        assert bad in line
    assert not (mdir / "migrations.sum").exists()
    assert history(pg, env.dbname) == []
    (mdir / bad).rename(mdir / "002_add_timezone.py")
    assert invoke("migrate", "hash").exit_code == 0
    assert invoke("migrate", "apply").exit_code == 0


@pytest.mark.parametrize("name", ["add timezone", "../evil", "x.y", "", "add-timezone"])
def test_an_invalid_new_name_is_a_usage_error(env: Settings, mdir: Path, name: str) -> None:
    mdir.mkdir()
    result = invoke("migrate", "diff", name)
    assert result.exit_code == 2, result.output
    assert "letters, digits and underscores" in result.stderr
    assert list(mdir.iterdir()) == []
    assert not Path("evil.py").exists()


def test_a_duplicated_sum_line_is_reported_as_such(env: Settings, mdir: Path) -> None:
    make_tables(mdir, 2)
    sum_path = mdir / "migrations.sum"
    lines = sum_path.read_text().splitlines()
    sum_path.write_text("\n".join([*lines[:2], lines[1], *lines[2:]]) + "\n")
    line = one_error(invoke("migrate", "apply"),
                     "line 3 lists 001_create_t1.py a second time (first on line 2)")
    assert "changed" not in line and "edited" not in line


# -- a missing folder, an unknown --to -------------------------------------------


@pytest.mark.parametrize(
    "command", [["status"], ["apply"], ["rollback"], ["check"], ["hash"], ["apply", "--dry-run"]]
)
def test_a_missing_folder_is_an_error_naming_it(
    pg: Server, env: Settings, clean_env: Path, command: list[str]
) -> None:
    result = invoke("migrate", "--dir", "nosuch", *command)
    one_error(result, "migrations folder nosuch does not exist", "--dir")
    assert not (clean_env / "nosuch").exists()
    assert tables(pg, env.dbname) == set(), "nothing created (no migratehistory)"


def test_an_unknown_to_creates_nothing(pg: Server, env: Settings, mdir: Path) -> None:
    make_tables(mdir, 1)
    one_error(invoke("migrate", "apply", "--to", "7"), "--to 7: there is no migration")
    assert tables(pg, env.dbname) == set()


# -- rollback without rollback() ---------------------------------------------------


CREATE = 'migrator.sql("CREATE TABLE {t} (id int)")'


@pytest.mark.parametrize("rollback", [None, "pass", '"""Nothing."""', "..."])
def test_rollback_without_a_rollback_is_refused_before_anything_changes(
    pg: Server, env: Settings, mdir: Path, rollback: str | None
) -> None:
    write_migration(mdir, "001_a", CREATE.format(t="a"), 'migrator.sql("DROP TABLE a")')
    path = write_migration(mdir, "002_b", CREATE.format(t="b"), rollback or "pass")
    if rollback is None:  # no rollback() at all
        path.write_text(path.read_text().split("\n\n\ndef rollback")[0] + "\n")
    write_migration(mdir, "003_c", CREATE.format(t="c"), 'migrator.sql("DROP TABLE c")')
    write_sum(mdir)
    assert invoke("migrate", "apply").exit_code == 0
    before = history(pg, env.dbname)
    one_error(invoke("migrate", "rollback", "--steps", "2"),
              f"{path.name} cannot be rolled back", "--steps 1 rolls back only the ones after it",
              "Nothing was rolled back")
    one_error(invoke("migrate", "rollback", "--steps", "2", "--dry-run"), "cannot be rolled back")
    assert history(pg, env.dbname) == before
    assert {"a", "b", "c"} <= tables(pg, env.dbname)
    assert invoke("migrate", "rollback").exit_code == 0  # 003 alone is fine
    assert "c" not in tables(pg, env.dbname)
    one_error(invoke("migrate", "rollback"), f"{path.name} cannot be rolled back")


def test_a_rollback_that_returns_says_nothing_needs_undoing(
    pg: Server, env: Settings, mdir: Path
) -> None:
    write_migration(mdir, "001_a", CREATE.format(t="a"), "return")
    write_migration(mdir, "002_noop")  # migrate() does nothing either: nothing to undo
    write_sum(mdir)
    assert invoke("migrate", "apply").exit_code == 0
    result = invoke("migrate", "rollback", "--steps", "2")
    assert result.exit_code == 0, result.output
    assert history(pg, env.dbname) == []


# -- sys.exit() and COMMIT inside a migration ----------------------------------------


@pytest.mark.parametrize("code", ["", "0", "3", "'bye'"])
def test_sys_exit_inside_a_migration_is_its_failure(
    pg: Server, env: Settings, mdir: Path, code: str
) -> None:
    write_migration(mdir, "001_a", CREATE.format(t="a"), 'migrator.sql("DROP TABLE a")')
    write_migration(
        mdir, "002_exits",
        f'database.execute_sql("CREATE TABLE b (id int)")\nimport sys\nsys.exit({code})',
        header="",
    )
    write_sum(mdir)
    one_error(invoke("migrate", "apply"), "002_exits.py failed and was rolled back",
              "none of it took effect", "called sys.exit(")
    assert [row[0] for row in history(pg, env.dbname)] == ["001_a"]
    assert tables(pg, env.dbname) == {"a", "migratehistory"}


def test_sys_exit_in_a_rollback_or_at_load(pg: Server, env: Settings, mdir: Path) -> None:
    write_migration(mdir, "001_a", CREATE.format(t="a"),
                    'database.execute_sql("DROP TABLE a")\nraise SystemExit(0)')
    write_sum(mdir)
    assert invoke("migrate", "apply").exit_code == 0
    one_error(invoke("migrate", "rollback"), "rollback of", "failed and was rolled back",
              "called sys.exit(0)")
    assert "a" in tables(pg, env.dbname) and len(history(pg, env.dbname)) == 1
    write_migration(mdir, "002_b", header="import sys\nsys.exit(0)")
    write_sum(mdir)
    one_error(invoke("migrate", "apply"), "002_b.py does not load: it calls sys.exit(0)")


@pytest.mark.parametrize(
    "statement", ["COMMIT", "commit;", "END", "ROLLBACK", "BEGIN", "START TRANSACTION",
                  "/* done */ COMMIT AND CHAIN"]
)
@pytest.mark.parametrize("how", ["migrator.sql", "database.execute_sql"])
def test_transaction_control_in_a_transactional_migration_is_refused(
    pg: Server, env: Settings, mdir: Path, statement: str, how: str
) -> None:
    write_migration(mdir, "001_a", f'{how}("CREATE TABLE a (id int)")\n{how}({statement!r})\n'
                    f'{how}("CREATE TABLE b (id int)")')
    write_sum(mdir)
    one_error(invoke("migrate", "apply"), "failed and was rolled back, so none of it took effect",
              "which would end its transaction", "atomic = False")
    assert tables(pg, env.dbname) == {"migratehistory"}, "none of it took effect: true"
    assert history(pg, env.dbname) == []
    dry = invoke("migrate", "apply", "--dry-run")
    assert dry.exit_code == 1 and "would end its transaction" in dry.stderr
    assert tables(pg, env.dbname) == {"migratehistory"}


def test_a_commit_that_slips_past_is_reported_precisely(
    pg: Server, env: Settings, mdir: Path
) -> None:
    # A raw cursor bypasses execute_sql: the transaction status gives it away.
    write_migration(mdir, "001_a", 'database.execute_sql("CREATE TABLE a (id int)")\n'
                    'database.cursor().execute("COMMIT")\n'
                    'database.execute_sql("CREATE TABLE b (id int)")')
    write_sum(mdir)
    line = one_error(invoke("migrate", "apply"), "001_a.py ended its own transaction",
                     "were committed and stay in effect", "not recorded as applied")
    assert "none of it took effect" not in line
    assert tables(pg, env.dbname) == {"a", "migratehistory"}, "b never ran"
    assert history(pg, env.dbname) == []


def test_non_transactional_migrations_may_commit(pg: Server, env: Settings, mdir: Path) -> None:
    write_migration(mdir, "001_a", 'migrator.sql("CREATE TABLE a (id int)")\n'
                    'migrator.sql("COMMIT")', header="atomic = False")
    write_sum(mdir)
    result = invoke("migrate", "apply")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("COMMIT", "COMMIT"),
        ("create table x (a int); commit", "COMMIT"),
        ("DO $$ BEGIN PERFORM 1; END $$", None),
        ("CREATE FUNCTION f() RETURNS void AS $b$ BEGIN END; $b$ LANGUAGE plpgsql", None),
        ("SELECT 'commit; begin'", None),
        ('SELECT 1 AS "commit"; SELECT 2', None),
        ("-- COMMIT\nSELECT 1", None),
        ("ROLLBACK TO SAVEPOINT s", None),
        ("SAVEPOINT s; RELEASE SAVEPOINT s", None),
        ("UPDATE t SET begin = 1", None),
        ("PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION"),
        ("PREPARE q AS SELECT 1", None),
        ("abort", "ABORT"),
    ],
)
def test_transaction_control_detection(sql: str, found: str | None) -> None:
    assert transaction_control(sql) == found


# -- rollback --dry-run, status --json problems ------------------------------------------


def test_rollback_dry_run_prints_the_sql_and_changes_nothing(
    pg: Server, env: Settings, mdir: Path
) -> None:
    names = make_tables(mdir, 3)
    write_migration(mdir, "004_plain", 'migrator.sql("CREATE INDEX i4 ON t1 (note)")',
                    'migrator.sql("DROP INDEX i4")', header="atomic = False")
    write_sum(mdir)
    assert invoke("migrate", "apply").exit_code == 0
    before = history(pg, env.dbname)
    result = invoke("migrate", "rollback", "--steps", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "-- 004_plain  (atomic = False: would run outside a transaction)"
    assert lines[1] == "DROP INDEX i4;"
    assert lines[3] == f"-- {names[2]}"
    assert lines[4] == 'DROP TABLE "t3";', lines[4]
    assert lines[-1] == (f"-- dry run: 2 migrations would be rolled back on {env.describe()}; "
                         "nothing was changed")
    assert not any("migratehistory" in line for line in lines), "bookkeeping is not shown"
    assert history(pg, env.dbname) == before
    assert {"t1", "t2", "t3"} <= tables(pg, env.dbname)
    # The same output style as apply --dry-run.
    assert invoke("migrate", "rollback", "--steps", "2").exit_code == 0
    applied = invoke("migrate", "apply", "--dry-run").stdout.splitlines()
    assert applied[0] == f"-- {names[2]}" and applied[-1].startswith("-- dry run: 2 migrations")


def test_status_json_carries_the_checksum_problems(env: Settings, mdir: Path) -> None:
    names = make_tables(mdir, 2)
    path = mdir / f"{names[1]}.py"
    path.write_text(path.read_text() + "# edited\n")
    result = invoke("migrate", "status", "--json")
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["pending"] == names
    assert len(data["problems"]) == 1 and "changed after" in data["problems"][0]
    assert result.stderr == "", "JSON mode puts the problems in the JSON, not on stderr"


def test_apply_to_an_applied_migration_says_what_is_pending(env: Settings, mdir: Path) -> None:
    names = make_tables(mdir, 2)
    assert invoke("migrate", "apply").exit_code == 0
    make_tables(mdir, 5)  # 003..005 pending now
    result = invoke("migrate", "apply", "--to", "2")
    assert result.exit_code == 0, result.output
    assert "up to date" not in result.stdout
    assert result.stdout.strip() == (
        f"nothing to apply up to --to 2: it and every migration before it are applied on "
        f"{env.describe()}; pending after it: 003_create_t3, 004_create_t4, 005_create_t5 "
        "(run `datalayer migrate apply` without --to to apply them)"
    ), names
