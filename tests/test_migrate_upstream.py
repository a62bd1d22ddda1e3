"""Upstream compatibility: `pw_migrate migrate` applies the committed migrations; we agree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from datalayer.config import Settings
from datalayer.migrate.inspect import compare, snapshot
from datalayer.migrate.runtime.checksum import verify
from datalayer.migrate.runtime.names import migration_names
from tests.migrate_runtime_support import history, run_cli
from tests.pgserver import Server

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def _pw_migrate() -> str:
    found = shutil.which("pw_migrate", path=str(Path(sys.executable).parent)) or shutil.which(
        "pw_migrate"
    )
    assert found, "pw_migrate (peewee-migrate's CLI) is not installed"
    return found


def test_committed_migrations_are_hashed() -> None:
    assert migration_names(MIGRATIONS), "migrations/ holds no migration: generate the initial one"
    verify(MIGRATIONS)


def test_pw_migrate_applies_the_committed_migrations_and_status_agrees(
    pg: Server, empty_db: Settings, template_db: str, tmp_path: Path
) -> None:
    names = migration_names(MIGRATIONS)
    assert names, "migrations/ holds no migration: generate the initial one"
    done = subprocess.run(
        [_pw_migrate(), "migrate", "--database", empty_db.url(masked=False),
         "--directory", str(MIGRATIONS)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r[0] for r in history(pg, empty_db.dbname)] == names

    # The schema upstream built is the models' own (template_db: create_tables()).
    models = pg.raw(template_db)
    migrated = pg.raw(empty_db.dbname)
    try:
        assert compare(snapshot(models), snapshot(migrated)) == []
    finally:
        models.close()
        migrated.close()

    status = run_cli(empty_db, MIGRATIONS, "migrate", "status", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout) == {
        "applied": names, "pending": [], "modified": [], "missing": [], "problems": [],
        "invalid_indexes": [], "not_valid_constraints": [],
    }
    # datalayer's apply has nothing to do, and records the hashes upstream did not write.
    again = run_cli(empty_db, MIGRATIONS, "migrate", "apply", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing to apply" in again.stdout
    assert all(r[1] for r in history(pg, empty_db.dbname))


def test_datalayer_apply_then_pw_migrate_finds_nothing_to_do(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    names = migration_names(MIGRATIONS)
    assert names, "migrations/ holds no migration: generate the initial one"
    applied = run_cli(empty_db, MIGRATIONS, "migrate", "apply", cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    listed = subprocess.run(
        [_pw_migrate(), "list", "--database", empty_db.url(masked=False),
         "--directory", str(MIGRATIONS)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert f"Done: {len(names)}, Pending: 0" in listed.stdout
