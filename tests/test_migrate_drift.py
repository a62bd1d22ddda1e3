"""`datalayer migrate drift`: every hand-made change to a migrated database, in every schema.

Also the scratch-server messages of check, baseline and drift.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from datalayer.config import Settings
from datalayer.errors import MigrationError
from datalayer.migrate.drift import drift
from datalayer.migrate.inspect import Difference
from datalayer.migrate.runtime.apply import apply
from datalayer.migrate.runtime.checksum import write_sum
from tests.drift_support import (
    create_tables,
    generate_initial,
    has_table,
    invoke,
    query,
    run_sql,
    scratch_databases,
    use,
)
from tests.migrate_runtime_support import write_migration
from tests.pgserver import Server

pytestmark = pytest.mark.slow

BILLING = """
migrator.sql("CREATE SCHEMA billing")
migrator.sql(
    "CREATE TABLE billing.invoices ("
    " id serial PRIMARY KEY,"
    " users_id uuid NOT NULL REFERENCES public.users (users_id),"
    " amount numeric(10, 2) NOT NULL DEFAULT 0,"
    " CONSTRAINT invoices_amount_positive CHECK (amount >= 0))"
)
migrator.sql("CREATE INDEX invoices_users_id ON billing.invoices (users_id)")
"""


@pytest.fixture
def mdir(clean_env: Path) -> Path:
    """The models' initial migration, then one that puts a table in schema ``billing``."""
    directory = generate_initial(clean_env / "migrations")
    write_migration(directory, "002_billing", migrate=BILLING,
                    rollback='migrator.sql("DROP SCHEMA billing CASCADE")')
    write_sum(directory)
    return directory


@pytest.fixture
def migrated(
    pg: Server, empty_db: Settings, mdir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """A database with every migration applied; the CLI and ``scratch`` settings on it."""
    apply(empty_db, mdir)
    use(monkeypatch, pg, empty_db, mdir)
    return empty_db.replace(dev_database_url=pg.admin.url(masked=False))


HOT_FIXES = [
    pytest.param(
        "ALTER TABLE users ADD COLUMN nickname text",
        Difference("column", "users", "nickname", None, "text"),
        'users: column "nickname" exists in the database but not in the migrations (text)',
        id="column-added",
    ),
    pytest.param(
        "DROP INDEX refresh_tokens_expires_at",
        Difference("index", "refresh_tokens", "refresh_tokens_expires_at",
                   "CREATE INDEX refresh_tokens_expires_at ON public.refresh_tokens "
                   "USING btree (expires_at)", None),
        'refresh_tokens: index "refresh_tokens_expires_at" missing from the database (the '
        "migrations have CREATE INDEX refresh_tokens_expires_at ON public.refresh_tokens "
        "USING btree (expires_at))",
        id="index-dropped",
    ),
    pytest.param(
        "ALTER TABLE users ALTER COLUMN is_active SET DEFAULT false",
        Difference("default", "users", "is_active", "true", "false"),
        "users.is_active: default false in the database, true in the migrations",
        id="default-changed",
    ),
    pytest.param(
        "ALTER TABLE users ALTER COLUMN created_at DROP DEFAULT",
        Difference("default", "users", "created_at", "now()", None),
        "users.created_at: default none in the database, now() in the migrations",
        id="default-dropped",
    ),
    pytest.param(
        "ALTER TABLE users DROP CONSTRAINT users_role_check",
        Difference("check", "users", "users_role_check",
                   "CHECK (((role)::text = ANY ((ARRAY['user'::character varying, "
                   "'admin'::character varying])::text[])))", None),
        'users: check constraint "users_role_check" missing from the database',
        id="check-dropped",
    ),
    pytest.param(
        "ALTER TABLE users ADD CONSTRAINT users_display_name_key UNIQUE (display_name)",
        Difference("unique", "users", "users_display_name_key", None, "UNIQUE (display_name)"),
        'users: unique constraint "users_display_name_key" exists in the database but not in '
        "the migrations (UNIQUE (display_name))",
        id="unique-added",
    ),
    pytest.param(
        "CREATE TABLE audit_log (id int)",
        Difference("table", "audit_log", "audit_log", None, "table"),
        'table "audit_log" exists in the database but not in the migrations',
        id="table-added",
    ),
    pytest.param(
        "CREATE TABLE billing.refunds (id int)",
        Difference("table", "billing.refunds", "refunds", None, "table"),
        'table "billing.refunds" exists in the database but not in the migrations',
        id="table-added-in-billing",
    ),
    pytest.param(
        "DROP INDEX billing.invoices_users_id",
        Difference("index", "billing.invoices", "invoices_users_id",
                   "CREATE INDEX invoices_users_id ON billing.invoices USING btree (users_id)",
                   None),
        'billing.invoices: index "invoices_users_id" missing from the database',
        id="index-dropped-in-billing",
    ),
    pytest.param(
        "ALTER TABLE billing.invoices DROP CONSTRAINT invoices_users_id_fkey",
        Difference("foreign_key", "billing.invoices", "invoices_users_id_fkey",
                   "FOREIGN KEY (users_id) REFERENCES users(users_id)", None),
        'billing.invoices: foreign key "invoices_users_id_fkey" missing from the database',
        id="foreign-key-dropped-in-billing",
    ),
    pytest.param(
        "ALTER TABLE billing.invoices ALTER COLUMN amount TYPE numeric(12, 2)",
        Difference("type", "billing.invoices", "amount", "numeric(10,2)", "numeric(12,2)"),
        "billing.invoices.amount: type numeric(12,2) in the database, numeric(10,2) in the "
        "migrations",
        id="type-changed-in-billing",
    ),
]


@pytest.mark.parametrize(("hot_fix", "difference", "line"), HOT_FIXES)
def test_each_hot_fix_is_found(
    pg: Server, migrated: Settings, mdir: Path, hot_fix: str, difference: Difference, line: str
) -> None:
    run_sql(pg, migrated.dbname, hot_fix)
    report = drift(migrated, mdir)
    assert report.differences == [difference]
    assert report.applied == ["001_initial", "002_billing"]
    assert line in difference.message()
    result = invoke("migrate", "drift")
    assert result.exit_code == 1
    assert result.stdout == f"- {difference.message()}\n"
    assert "(2 applied, 1 difference)" in result.stderr


def test_no_drift_after_a_clean_apply(pg: Server, migrated: Settings) -> None:
    before = scratch_databases(pg)
    result = invoke("migrate", "drift")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("no drift: ")
    assert "(2 applied)" in result.stdout
    as_json = invoke("migrate", "drift", "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == {"differences": []}
    assert scratch_databases(pg) == before, "scratch databases are dropped afterwards"


def test_a_dropped_schema_is_named_with_its_tables(pg: Server, migrated: Settings,
                                                   mdir: Path) -> None:
    run_sql(pg, migrated.dbname, "DROP SCHEMA billing CASCADE")
    lines = [d.message() for d in drift(migrated, mdir).differences]
    assert lines == [
        'schema "billing" missing from the database (the migrations create it)',
        'table "billing.invoices" missing from the database (the migrations create it)',
    ]


def test_json_lists_structured_entries_and_exits_1(pg: Server, migrated: Settings) -> None:
    run_sql(pg, migrated.dbname, "ALTER TABLE users ADD COLUMN nickname text",
            "DROP INDEX billing.invoices_users_id")
    result = invoke("migrate", "drift", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert list(data) == ["differences"]
    assert data["differences"] == [
        {
            "kind": "index", "table": "billing.invoices", "name": "invoices_users_id",
            "expected": "CREATE INDEX invoices_users_id ON billing.invoices USING btree "
                        "(users_id)",
            "actual": None,
            "message": 'billing.invoices: index "invoices_users_id" missing from the database '
                       "(the migrations have CREATE INDEX invoices_users_id ON billing.invoices "
                       "USING btree (users_id))",
        },
        {
            "kind": "column", "table": "users", "name": "nickname", "expected": None,
            "actual": "text",
            "message": 'users: column "nickname" exists in the database but not in the '
                       "migrations (text)",
        },
    ]


def test_only_the_applied_migrations_are_expected(
    pg: Server, empty_db: Settings, mdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(empty_db, mdir, to="001_initial")
    use(monkeypatch, pg, empty_db, mdir)
    result = invoke("migrate", "drift")
    assert result.exit_code == 0, result.output
    assert "(1 applied)" in result.stdout
    run_sql(pg, empty_db.dbname, "CREATE TABLE notes (id int)")
    assert invoke("migrate", "drift").stdout == (
        '- table "notes" exists in the database but not in the migrations\n'
    )


def test_drift_reads_only(pg: Server, migrated: Settings, mdir: Path) -> None:
    """On a database where every transaction is read-only (a replica, say), drift still works."""
    run_sql(pg, migrated.dbname, "ALTER TABLE users ADD COLUMN nickname text",
            f'ALTER DATABASE "{migrated.dbname}" SET default_transaction_read_only = on')
    rows_before = query(pg, migrated.dbname, "SELECT count(*) FROM migratehistory")
    report = drift(migrated, mdir)
    assert [d.name for d in report.differences] == ["nickname"]
    assert query(pg, migrated.dbname, "SELECT count(*) FROM migratehistory") == rows_before


def test_without_history_it_says_what_to_run_and_creates_nothing(
    pg: Server, empty_db: Settings, mdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_tables(empty_db)
    use(monkeypatch, pg, empty_db, mdir)
    result = invoke("migrate", "drift")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no migration is recorded on ")
    assert "`datalayer migrate baseline`" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not has_table(pg, empty_db.dbname, "migratehistory")


def test_modified_file_is_warned_about(pg: Server, migrated: Settings, mdir: Path) -> None:
    path = mdir / "002_billing.py"
    path.write_text(path.read_text() + "\n# edited after it was applied\n")
    result = invoke("migrate", "drift")
    assert result.exit_code == 0, result.output
    assert "warning: 002_billing changed since it was applied; compared as it is now" in (
        result.stderr
    )


def test_missing_applied_file_is_an_error(pg: Server, migrated: Settings, mdir: Path) -> None:
    (mdir / "002_billing.py").unlink()
    with pytest.raises(MigrationError, match=r"002_billing.py was applied .* restore it"):
        drift(migrated, mdir)


def test_missing_folder_is_an_error(migrated: Settings, clean_env: Path) -> None:
    result = invoke("migrate", "--dir", str(clean_env / "nowhere"), "drift")
    assert result.exit_code == 1
    assert "nowhere does not exist" in result.stderr
    assert not (clean_env / "nowhere").exists()


# -- the scratch server: messages that say to set or fix DATALAYER_DEV_DATABASE_URL ----


@pytest.fixture
def role_without_createdb(pg: Server) -> Iterator[str]:
    name = f"dl_nocreatedb_{uuid.uuid4().hex[:8]}"
    run_sql(pg, "postgres", f'CREATE ROLE "{name}" LOGIN NOCREATEDB')
    try:
        yield name
    finally:
        run_sql(pg, "postgres", f'DROP ROLE IF EXISTS "{name}"')


def _scratch_url_cases(pg: Server, role: str) -> dict[str, tuple[str, str]]:
    host, port = pg.admin.host, pg.admin.port
    return {
        "unreachable": (
            f"postgresql://postgres:hunter2@{host}:1/postgres",
            "fix DATALAYER_DEV_DATABASE_URL",
        ),
        "no CREATEDB": (
            f"postgresql://{role}@{host}:{port}/postgres",
            "set DATALAYER_DEV_DATABASE_URL to a server and user with CREATEDB",
        ),
    }


@pytest.mark.parametrize("command", ["check", "baseline", "drift"])
def test_scratch_server_problems_name_the_variable(
    pg: Server, empty_db: Settings, mdir: Path, monkeypatch: pytest.MonkeyPatch,
    role_without_createdb: str, command: str,
) -> None:
    if command == "drift":
        apply(empty_db, mdir)
    elif command == "baseline":
        create_tables(empty_db)
    use(monkeypatch, pg, empty_db, mdir)
    for case, (url, advice) in _scratch_url_cases(pg, role_without_createdb).items():
        monkeypatch.setenv("DATALAYER_DEV_DATABASE_URL", url)
        result = invoke("migrate", command)
        assert result.exit_code == 1, (case, result.output)
        assert result.stderr.startswith("error: "), (case, result.stderr)
        assert result.stderr.count("\n") == 1, (case, result.stderr)
        assert "DATALAYER_DEV_DATABASE_URL" in result.stderr and advice in result.stderr, case
        assert "Traceback" not in result.output and "hunter2" not in result.output
    if command == "baseline":
        assert not has_table(pg, empty_db.dbname, "migratehistory")


def test_no_dev_url_and_no_embedded_server_says_to_set_it(
    pg: Server, empty_db: Settings, mdir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    role_without_createdb: str,
) -> None:
    create_tables(empty_db)
    # A DATABASE_URL user with CREATEDB would host the scratch database itself.
    use(monkeypatch, pg, empty_db.replace(user=role_without_createdb, password=""), mdir)
    monkeypatch.delenv("DATALAYER_DEV_DATABASE_URL")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DATALAYER_EMBEDDED_DIR", str(blocker / "pg"))  # cannot be a directory
    result = invoke("migrate", "baseline")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: no scratch database server: DATALAYER_DEV_DATABASE_URL is unset"
    )
    assert "set DATALAYER_DEV_DATABASE_URL to a server whose user has CREATEDB" in result.stderr
    assert not has_table(pg, empty_db.dbname, "migratehistory")


def test_scratch_database_is_made_and_dropped(pg: Server, empty_db: Settings) -> None:
    from datalayer.migrate.scratch import scratch_database, scratch_server

    settings = empty_db.replace(dev_database_url=pg.admin.url(masked=False))
    with scratch_database(scratch_server(settings), "t", settings) as scratch:
        assert scratch_databases(pg) == {scratch.dbname}
    assert scratch_databases(pg) == set()
