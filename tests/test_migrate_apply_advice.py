"""What `migrate apply` advises when a migration fails on what the database has (or lacks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datalayer.config import Settings
from tests.drift_support import create_tables, generate_initial, invoke, use
from tests.migrate_runtime_support import history, write_migration, write_table_migration
from tests.pgserver import Server

pytestmark = pytest.mark.slow


def test_tables_made_by_create_tables_point_to_baseline(
    pg: Server, empty_db: Settings, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mdir = generate_initial(clean_env / "migrations")
    create_tables(empty_db)
    use(monkeypatch, pg, empty_db, mdir)
    failed = invoke("migrate", "apply")
    assert failed.exit_code == 1, failed.output
    message = failed.stderr
    assert "run `datalayer migrate baseline`" in message, message
    assert "editing it is fine" not in message and "migrate hash" not in message
    # The advice works: baseline adopts the database, and apply has nothing left to do.
    adopted = invoke("migrate", "baseline")
    assert adopted.exit_code == 0, adopted.output
    assert [row[0] for row in history(pg, empty_db.dbname)] == ["001_initial"]
    assert "nothing to apply" in invoke("migrate", "apply").stdout


def test_a_table_made_by_hand_after_migrations_is_not_baseline(
    pg: Server, empty_db: Settings, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mdir = clean_env / "migrations"
    write_table_migration(mdir, "001_a", "a")
    write_table_migration(mdir, "002_b", "b")
    assert invoke("migrate", "hash", "--dir", str(mdir)).exit_code == 0
    use(monkeypatch, pg, empty_db, mdir)
    assert invoke("migrate", "apply", "--to", "001_a").exit_code == 0
    conn = pg.raw(empty_db.dbname)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE b (id int)")
    conn.close()
    failed = invoke("migrate", "apply")
    assert failed.exit_code == 1
    assert "made outside the migrations" in failed.stderr, failed.stderr
    assert "baseline" not in failed.stderr


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_missing_table_names_the_migration_and_statement(
    pg: Server, empty_db: Settings, clean_env: Path, monkeypatch: pytest.MonkeyPatch,
    dry_run: bool,
) -> None:
    """Not TableMissing's "run `datalayer migrate apply`": this is apply."""
    mdir = clean_env / "migrations"
    write_table_migration(mdir, "001_a", "a")
    write_migration(mdir, "002_fix", migrate="""
        migrator.sql("UPDATE a SET note = 'x'")
        migrator.sql("UPDATE nosuch SET note = 'secret-value'")
    """)
    assert invoke("migrate", "hash", "--dir", str(mdir)).exit_code == 0
    use(monkeypatch, pg, empty_db, mdir)
    failed = invoke("migrate", "apply", *(["--dry-run"] if dry_run else []))
    assert failed.exit_code == 1
    message = failed.stderr
    assert "002_fix.py" in message, message
    assert "the statement `UPDATE nosuch SET note = '...'` failed" in message, message
    assert 'relation "nosuch" does not exist' in message
    assert "the table it names does not exist" in message
    assert "run `datalayer migrate apply`" not in message
    assert "secret-value" not in message
