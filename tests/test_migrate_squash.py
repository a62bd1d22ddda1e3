"""`datalayer migrate squash`: fold a history into one file; old and new databases both work."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest
from click.testing import CliRunner

from datalayer.cli import main
from datalayer.config import Settings
from datalayer.db import Database
from datalayer.errors import MigrationError
from datalayer.migrate.autogenerate.compare import create_migration
from datalayer.migrate.inspect import compare, snapshot
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import problems, write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.names import migration_names
from datalayer.migrate.squash import squash
from tests.migrate_runtime_support import write_migration
from tests.pgserver import Server


def _models(version: int) -> list[type[pw.Model]]:
    class Author(pw.Model):
        name = pw.CharField(max_length=80)
        if version >= 2:
            email = pw.CharField(max_length=120, null=True, index=True)

        class Meta:
            table_name = "authors"

    models: list[type[pw.Model]] = [Author]
    if version >= 3:

        class Book(pw.Model):
            author = pw.ForeignKeyField(Author, on_delete="CASCADE")
            title = pw.CharField(max_length=200, default="untitled")

            class Meta:
                table_name = "books"

        models.append(Book)
    if version >= 4:

        class Shelf(pw.Model):
            label = pw.TextField()

            class Meta:
                table_name = "shelves"

        models.append(Shelf)
    return models


def _generate(directory: Path, name: str, version: int) -> None:
    assert create_migration(Router(Database(), directory), name, _models(version)) is not None
    write_sum(directory)


@pytest.fixture
def history(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    for version, name in [(1, "authors"), (2, "author_email"), (3, "books")]:
        _generate(directory, name, version)
    return directory


@pytest.fixture
def dbs(pg: Server) -> Iterator[dict[str, Database]]:
    with pg.database("dlsqold") as old, pg.database("dlsqnew") as new, pg.database(
        "dlsqpart"
    ) as part:
        names = {"old": old, "new": new, "part": part}
        made = {k: Database(pg.settings(n)) for k, n in names.items()}
        try:
            yield made
        finally:
            for db in made.values():
                db.close_pool()


def _scratch(pg: Server) -> Settings:
    return pg.admin.replace(dev_database_url=pg.admin.url(masked=False))


def _tables(db: Database) -> set[str]:
    with db.checkout():
        cur = db.execute_sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in cur.fetchall()}


def test_squash_keeps_old_databases_current_and_builds_new_ones(
    pg: Server, history: Path, dbs: dict[str, Database]
) -> None:
    old, new = dbs["old"], dbs["new"]
    runner.apply(old, history)
    with old.checkout():
        old.execute_sql("INSERT INTO authors (name, email) VALUES ('ada', 'a@x')")
    before = migration_names(history)

    result = squash(_scratch(pg), history, "squashed")

    last = before[-1].split("_", 1)[0]
    assert result.name == f"{last}_squashed" and result.replaces == tuple(before)
    assert migration_names(history) == [result.name]
    assert problems(history) == []
    # The database that applied the old files: the squash is pending, then only recorded.
    status = runner.status(old, history)
    assert status.pending == [result.name] and status.missing == []
    applied = runner.apply(old, history)
    assert [a.name for a in applied] == [result.name]
    assert runner.status(old, history).up_to_date
    with old.checkout():
        assert old.execute_sql("SELECT count(*) FROM authors").fetchone()[0] == 1
    # A new database builds the same schema from the one file.
    runner.apply(new, history)
    with old.checkout():
        want = snapshot(old)
    with new.checkout():
        got = snapshot(new)
    assert compare(want, got) == []
    # Both take the next migration, generated on top of the squashed file.
    _generate(history, "shelves", 4)
    shelves = migration_names(history)[1:]
    for db in (old, new):
        assert [a.name for a in runner.apply(db, history)] == shelves
        assert "shelves" in _tables(db)
    # Rolling back past the squash on the new database drops everything and forgets all.
    runner.rollback(new, history, steps=1 + len(shelves))
    assert _tables(new) == {"migratehistory"}
    assert runner.status(new, history).applied == []
    assert [a.name for a in runner.apply(new, history)] == [result.name, *shelves]


def test_upstream_pw_migrate_on_old_and_new_databases(
    pg: Server, history: Path, dbs: dict[str, Database]
) -> None:
    old, new = dbs["old"], dbs["new"]
    runner.apply(old, history)
    made = squash(_scratch(pg), history, "squashed")
    # Upstream replays applied migrations from their files: datalayer folds the history once.
    runner.apply(old, history)
    with old.checkout():
        rows = old.execute_sql("SELECT name FROM migratehistory").fetchall()
    assert [r[0] for r in rows] == [made.name]
    pw_migrate = str(Path(sys.executable).with_name("pw_migrate"))
    if not Path(pw_migrate).exists():
        pw_migrate = shutil.which("pw_migrate") or "pw_migrate"
    for db in (old, new):
        url = db.settings.url(masked=False)
        done = subprocess.run(
            [pw_migrate, "migrate", "--database", url, "--directory", str(history)],
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert {"authors", "books"} <= _tables(db)
        assert runner.status(db, history).up_to_date


def test_partly_applied_database_is_refused(
    pg: Server, history: Path, dbs: dict[str, Database]
) -> None:
    part = dbs["part"]
    runner.apply(part, history, to="001")
    folded = len(migration_names(history))
    squash(_scratch(pg), history, "squashed")
    with pytest.raises(MigrationError, match=f"applied 1 of the {folded} migrations"):
        runner.apply(part, history)
    assert _tables(part) == {"authors", "migratehistory"}


def test_data_migrations_are_refused_and_nothing_written(pg: Server, history: Path) -> None:
    last = migration_names(history)[-1]
    backfill = f"{int(last.split('_', 1)[0]) + 1:03d}_backfill"
    write_migration(
        history, backfill, migrate="migrator.sql(\"UPDATE authors SET name = 'x'\")"
    )
    write_sum(history)
    before = {p.name: p.read_bytes() for p in history.iterdir()}
    with pytest.raises(MigrationError, match=rf"{backfill}: migrator\.sql.*is not DDL"):
        squash(_scratch(pg), history, "squashed")
    assert {p.name: p.read_bytes() for p in history.iterdir()} == before
    # Up to the migration before it, the squash works.
    made = squash(_scratch(pg), history, "squashed", to=last)
    assert made.name == f"{last.split('_', 1)[0]}_squashed"
    assert migration_names(history) == [made.name, backfill]


def test_hand_written_ddl_is_kept(pg: Server, history: Path, dbs: dict[str, Database]) -> None:
    last = migration_names(history)[-1]
    write_migration(
        history,
        f"{int(last.split('_', 1)[0]) + 1:03d}_trgm",
        migrate='migrator.sql("CREATE INDEX books_title_lower ON books (lower(title))")',
        rollback='migrator.sql("DROP INDEX books_title_lower")',
    )
    write_sum(history)
    old, new = dbs["old"], dbs["new"]
    runner.apply(old, history)
    squash(_scratch(pg), history, "all")
    runner.apply(new, history)
    with old.checkout():
        want = snapshot(old)
    with new.checkout():
        got = snapshot(new)
    assert compare(want, got) == []


def test_cli_squash(
    pg: Server, history: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATALAYER_DEV_DATABASE_URL", pg.admin.url(masked=False))
    count = len(migration_names(history))
    result = CliRunner().invoke(main, ["migrate", "squash", "base", "--dir", str(history)])
    assert result.exit_code == 0, result.output
    assert f"replaces {count} migrations" in result.output
    result = CliRunner().invoke(main, ["migrate", "squash", "again", "--dir", str(history)])
    assert result.exit_code == 1 and "squash needs two or more" in result.stderr
