"""More than a thousand migration files: all seen, ordered by number, applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from peewee_migrate import Router as UpstreamRouter

from datalayer.config import Settings
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import verify, write_sum
from datalayer.migrate.runtime.names import migration_names
from tests.migrate_runtime_support import history, write_migration, write_table_migration
from tests.pgserver import Server

COUNT = 1005


@pytest.mark.slow
def test_more_than_a_thousand_migrations(pg: Server, empty_db: Settings, tmp_path: Path) -> None:
    mdir = tmp_path / "migrations"
    names = []
    for i in range(1, COUNT + 1):
        name = f"{i:03d}_m{i}"
        if i in (1, 999, 1000, COUNT):
            write_table_migration(mdir, name, f"t{i}")
        else:
            write_migration(mdir, name)
        names.append(name)
    write_sum(mdir)
    verify(mdir)

    assert migration_names(mdir) == names, "ordered by number: 1000_m1000 after 999_m999"
    # Upstream's three-digit mask never sees the 1000th migration.
    assert len(UpstreamRouter(_dummy_db(), migrate_dir=mdir).todo) == 999

    status = runner.status(empty_db, mdir)
    assert status.pending == names

    applied = runner.apply(empty_db, mdir, to="1000")
    assert [a.name for a in applied] == names[:1000]
    applied = runner.apply(empty_db, mdir)
    assert [a.name for a in applied] == names[1000:]
    rows = history(pg, empty_db.dbname)
    assert [r[0] for r in rows] == names
    assert runner.status(empty_db, mdir).up_to_date
    assert [a.name for a in runner.rollback(empty_db, mdir, steps=6)] == names[:-7:-1]
    assert runner.status(empty_db, mdir).pending == names[-6:]


def _dummy_db() -> object:
    import peewee as pw

    return pw.SqliteDatabase(":memory:")
