"""`datalayer migrate check`: passes on a good tree, lists every difference otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import peewee as pw
import pytest
from click.testing import CliRunner

from datalayer.cli import main
from datalayer.config import Settings
from datalayer.db import Database
from datalayer.migrate.autogenerate.compare import create_migration
from datalayer.migrate.check import check
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.models import MODELS
from datalayer.models.fields import uuid_pk
from tests.drift_support import scratch_databases
from tests.migrate_runtime_support import write_migration
from tests.pgserver import Server

pytestmark = pytest.mark.slow

COMMITTED = Path(__file__).resolve().parents[1] / "migrations"


class AuditNote(pw.Model):  # type: ignore[misc]
    """A model with no migration: check must notice it (not a BaseModel: no one else sees it)."""

    id = uuid_pk("audit_notes_id")
    note = pw.TextField()

    class Meta:
        database = Database()  # never connected; check() binds the model to its scratch database
        table_name = "audit_notes"
        legacy_table_names = False


@pytest.fixture
def settings(pg: Server) -> Settings:
    return pg.settings("postgres").replace(dev_database_url=pg.admin.url(masked=False))


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    """A migrations directory with the initial migration generated from the models."""
    directory = tmp_path / "migrations"
    result = create_migration(Router(Database(), directory), "initial")
    assert result is not None
    write_sum(directory)
    return directory


def _scratch_databases(pg: Server) -> set[str]:
    # Only this process's: other test sessions on the same server make their own.
    return scratch_databases(pg)


def test_check_passes_on_generated_migrations(
    pg: Server, settings: Settings, generated: Path
) -> None:
    before = _scratch_databases(pg)
    assert check(settings, generated) == []
    assert _scratch_databases(pg) == before, "scratch databases are dropped afterwards"


def test_check_passes_on_the_committed_tree(settings: Settings) -> None:
    assert any(COMMITTED.glob("0*.py")), "migrations/ holds no migration: generate the initial one"
    assert check(settings, COMMITTED) == []


def test_model_without_migration_is_reported(settings: Settings, generated: Path) -> None:
    problems = check(settings, generated, models=[*MODELS, AuditNote])
    text = "\n".join(problems)
    assert "the models changed without a migration; run `datalayer migrate diff NAME`" in text
    assert "audit_notes" in problems[0]
    assert "table audit_notes: missing (expected by the models)" in text


def test_hand_written_drift_is_reported_by_table_and_column(
    settings: Settings, generated: Path
) -> None:
    write_migration(
        generated,
        "002_drift",
        migrate="""
        migrator.sql("ALTER TABLE users ADD COLUMN nickname text")
        migrator.sql("ALTER TABLE refresh_tokens ALTER COLUMN ip TYPE varchar(60)")
        """,
    )
    write_sum(generated)
    problems = check(settings, generated)
    assert "schema differs from the models: users.nickname: unexpected column (text)" in problems
    assert any(p.startswith("schema differs from the models: refresh_tokens.ip: expected "
                            "character varying(45)") for p in problems), problems


def test_checksum_and_apply_failures_are_reported(settings: Settings, generated: Path) -> None:
    write_migration(generated, "002_broken", migrate='migrator.sql("ALTER TABLE nope ADD x int")')
    problems = check(settings, generated)
    assert any("002_broken.py is not in" in p for p in problems)
    assert any(p.startswith("the migrations do not apply to an empty database:")
               and "002_broken.py" in p for p in problems)


def test_cli_check_exit_codes(
    pg: Server, generated: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg.admin.url(masked=False))
    monkeypatch.setenv("DATALAYER_DEV_DATABASE_URL", pg.admin.url(masked=False))
    monkeypatch.setenv("DATALAYER_MIGRATIONS_DIR", str(generated))
    ok = CliRunner().invoke(main, ["migrate", "check"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("ok: ")
    drifted = clean_env / "drifted"
    shutil.copytree(generated, drifted)
    write_migration(
        drifted, "002_drift", migrate='migrator.sql("ALTER TABLE users ADD COLUMN nickname text")'
    )
    write_sum(drifted)
    bad = CliRunner().invoke(main, ["migrate", "--dir", str(drifted), "check"],
                             catch_exceptions=False)
    assert bad.exit_code == 1
    assert "- schema differs from the models: users.nickname: unexpected column" in bad.stderr
    assert "error: migrate check found 1 problem" in bad.stderr


def test_check_uses_the_embedded_server_without_a_dev_url(
    pg: Server, generated: Path, tmp_path: Path
) -> None:
    import tempfile

    from datalayer.embedded import remove_server

    # mkdtemp, not tmp_path: every pytest session resets /tmp/pytest-of-<user> to 0700, which
    # the server's system user (as root) then cannot traverse.
    embedded = Path(tempfile.mkdtemp(prefix="datalayer-check-")) / "pg"
    # No server configured (DATABASE_URL's own server hosts scratch databases when it may:
    # tests/test_embedded_project.py).
    settings = Settings(embedded_dir=embedded)
    try:
        assert check(settings, generated) == []
        assert (embedded / "PG_VERSION").is_file() or any(embedded.iterdir())
    finally:
        remove_server(embedded)
        shutil.rmtree(embedded.parent, ignore_errors=True)
