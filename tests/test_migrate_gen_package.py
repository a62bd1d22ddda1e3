"""The committed migrations of the package models, and ``pw_migrate create --auto`` on them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from playhouse.postgres_ext import PostgresqlExtDatabase

from datalayer.migrate.autogenerate.compare import compute_diff
from datalayer.migrate.inspect import Schema, compare, snapshot
from datalayer.migrate.runtime.files import Router
from tests.pgserver import Server
from tests.test_migrate_generate import PlainRouter, open_db

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def _pw_migrate() -> str:
    found = shutil.which("pw_migrate", path=str(Path(sys.executable).parent))
    assert found, "pw_migrate (peewee-migrate's CLI) is not installed next to this Python"
    return found


def _declared(pg: Server, template_db: str) -> Schema:
    conn = pg.raw(template_db)  # the conftest template holds create_tables(MODELS)
    try:
        return snapshot(conn)
    finally:
        conn.close()


def test_committed_migrations_match_the_models(pg: Server) -> None:
    with pg.database("dlgen") as name:
        db = open_db(pg, name)
        try:
            diff = compute_diff(Router(db, MIGRATIONS))
        finally:
            db.close()
    assert not diff, f"models changed without a migration:\n{diff.migrate}"


def test_initial_migration_builds_the_models_schema(
    pg: Server, template_db: str, tmp_path: Path
) -> None:
    """Applied by datalayer's Router (DatalayerMigrator) and by the plain Migrator alike."""
    want = _declared(pg, template_db)
    for router_class in (Router, PlainRouter):
        with pg.database("dlgen") as name:
            db: PostgresqlExtDatabase = open_db(pg, name)
            try:
                router = router_class(db, MIGRATIONS)
                router.run()
                assert compare(want, snapshot(db)) == [], router_class.__name__
                for _ in router.done:
                    router.rollback()
                assert snapshot(db).tables == {}, "rolling everything back leaves nothing"
            finally:
                db.close()


def test_pw_migrate_create_auto_writes_the_same_migration(
    pg: Server, template_db: str, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    shutil.copy(MIGRATIONS / "conf.py", directory / "conf.py")
    with pg.database("dlgen") as name:
        url = pg.settings(name).url(masked=False)
        created = subprocess.run(
            [_pw_migrate(), "create", "--auto", "--auto-source", "datalayer.models",
             "--directory", str(directory), "--database", url, "initial"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        written = directory / "001_initial.py"
        assert written.is_file(), created.stderr
        text = written.read_text()
        assert "base_model" not in text and "class BaseModel" not in text
        body = text[text.index("def migrate("):]
        committed = (MIGRATIONS / "001_initial.py").read_text()
        assert body == committed[committed.index("def migrate("):]

        applied = subprocess.run(
            [_pw_migrate(), "migrate", "--directory", str(directory), "--database", url],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        conn = pg.raw(name)
        try:
            assert compare(_declared(pg, template_db), snapshot(conn)) == []
        finally:
            conn.close()

        again = subprocess.run(
            [_pw_migrate(), "create", "--auto", "--auto-source", "datalayer.models",
             "--directory", str(directory), "--database", url, "again"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert again.returncode == 0, again.stderr
        assert "No changes found" in again.stderr
        assert sorted(p.name for p in directory.glob("*.py")) == ["001_initial.py", "conf.py"]
