"""`datalayer migrate rebase NAME`: renumber a migration after a merge, rewrite the sum."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from datalayer.cli import main
from datalayer.config import Settings
from datalayer.db import Database
from datalayer.errors import ChecksumError, MigrationError
from datalayer.migrate.rebase import rebase
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import problems, verify, write_sum
from datalayer.migrate.runtime.names import migration_names
from tests.migrate_runtime_support import (
    cli_command,
    cli_env,
    history,
    write_migration,
    write_table_migration,
)
from tests.pgserver import Server


@pytest.fixture
def merged(tmp_path: Path) -> Path:
    """Two branches each added a 002 migration; the merge left a conflicted migrations.sum."""
    directory = tmp_path / "migrations"
    write_table_migration(directory, "001_base", "base")
    write_table_migration(directory, "002_add_posts", "posts")
    write_sum(directory)
    theirs = (directory / "migrations.sum").read_text()
    write_table_migration(directory, "002_add_tags", "tags")
    (directory / "migrations.sum").write_text(
        "<<<<<<< HEAD\n" + theirs + "=======\nxx\n>>>>>>> branch\n"
    )
    return directory


def test_rebase_renumbers_and_rehashes(merged: Path, empty_db: Settings) -> None:
    with pytest.raises(ChecksumError):
        verify(merged)
    db = Database(empty_db)
    try:
        result = rebase(db, merged, "002_add_tags")
        assert result.new.name == "003_add_tags.py"
        assert migration_names(merged) == ["001_base", "002_add_posts", "003_add_tags"]
        assert problems(merged) == []
        assert [a.name for a in runner.apply(db, merged)] == migration_names(merged)
    finally:
        db.close_pool()


def test_rebase_refuses_an_applied_migration(merged: Path, empty_db: Settings) -> None:
    db = Database(empty_db)
    try:
        (merged / "002_add_tags.py").rename(merged / "003_add_tags.py")
        write_sum(merged)
        runner.apply(db, merged)
        before = sorted(p.name for p in merged.iterdir())
        with pytest.raises(MigrationError, match="is applied on the configured database"):
            rebase(db, merged, "003_add_tags")
        assert sorted(p.name for p in merged.iterdir()) == before
        with pytest.raises(MigrationError, match="several migrations are numbered 2"):
            (merged / "003_add_tags.py").rename(merged / "002_add_tags.py")
            rebase(db, merged, "2")
    finally:
        db.close_pool()


def test_rebase_cli(merged: Path, empty_db: Settings, clean_env: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_db.url(masked=False))
    result = CliRunner().invoke(main, ["migrate", "rebase", "002_add_posts", "--dir", str(merged)])
    assert result.exit_code == 0, result.output
    assert "renamed 002_add_posts.py to 003_add_posts.py" in result.output
    result = CliRunner().invoke(main, ["migrate", "rebase", "nope", "--dir", str(merged)])
    assert result.exit_code == 1 and "there is no migration 'nope'" in result.stderr


@pytest.mark.slow
def test_rebase_racing_apply_never_renames_an_applied_migration(
    pg: Server, tmp_path: Path
) -> None:
    """`rebase` and `apply` started together, many times: history never names a missing file.

    Without the migration lock, rebase read the history before apply recorded 002_a and
    renamed the file after: both exited 0, then `status` reported it missing on disk.
    """
    rng = random.Random(14)
    outcomes = []
    for trial in range(12):
        root = tmp_path / f"trial{trial}"
        mdir = root / "migrations"
        write_migration(mdir, "001_slow", migrate='migrator.sql("SELECT pg_sleep(0.3)")')
        write_table_migration(mdir, "002_a", "a")
        write_table_migration(mdir, "003_b", "b")
        write_sum(mdir)
        with pg.database("dlrebase") as dbname:
            env = cli_env(pg.settings(dbname), mdir)
            apply_run = subprocess.Popen(
                cli_command("migrate", "apply"), env=env, cwd=root, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            time.sleep(rng.uniform(0, 0.8))
            rebase_run = subprocess.Popen(
                cli_command("migrate", "rebase", "002_a"), env=env, cwd=root, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            apply_out, rebase_out = apply_run.communicate(60), rebase_run.communicate(60)
            assert apply_run.returncode == 0, apply_out
            assert rebase_run.returncode in (0, 1), rebase_out
            if rebase_run.returncode == 1:
                assert "002_a is applied on the configured database" in rebase_out[1]
            on_disk = set(migration_names(mdir))
            recorded = [row[0] for row in history(pg, dbname)]
            assert set(recorded) <= on_disk, (trial, recorded, on_disk, rebase_out)
            again = subprocess.run(
                cli_command("migrate", "apply"), env=env, cwd=root, text=True,
                capture_output=True, timeout=60,
            )
            assert again.returncode == 0, again.stderr
            status = subprocess.run(
                cli_command("migrate", "status"), env=env, cwd=root, text=True,
                capture_output=True, timeout=60,
            )
            assert status.returncode == 0, status.stdout + status.stderr
            outcomes.append(rebase_run.returncode)
    assert len(outcomes) == 12
