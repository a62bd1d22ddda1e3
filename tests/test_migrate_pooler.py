"""`migrate apply` through PgBouncer (transaction pooling) refuses; status still works."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from datalayer.config import Settings
from datalayer.errors import MigrationError
from datalayer.migrate.runtime import apply as runner
from tests._faults_helpers import PgBouncer, pgbouncer_binary
from tests.migrate_runtime_support import history, make_tables
from tests.pgserver import Server

BINARY = pgbouncer_binary()
pytestmark = pytest.mark.skipif(
    BINARY is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
)


@pytest.fixture
def bouncer(pg: Server) -> Iterator[PgBouncer]:
    assert BINARY is not None
    directory = Path(tempfile.mkdtemp(prefix="datalayer-pgbouncer-mig-"))
    proc = PgBouncer(BINARY, directory / "pgb", pg.admin.host or "127.0.0.1", pg.admin.port,
                     pool_size=3)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_apply_and_rollback_refuse_a_pooled_connection(
    pg: Server, empty_db: Settings, bouncer: PgBouncer, tmp_path: Path
) -> None:
    mdir = tmp_path / "migrations"
    names = make_tables(mdir, 2)
    pooled = Settings.from_url(bouncer.url(empty_db.dbname), application_name="datalayer-pgb")
    with pytest.raises(MigrationError, match="needs a direct connection"):
        runner.apply(pooled, mdir)
    with pytest.raises(MigrationError, match="needs a direct connection"):
        runner.rollback(pooled, mdir)
    assert history(pg, empty_db.dbname) == []
    assert runner.status(pooled, mdir).pending == names  # reading is fine through a pooler
    runner.apply(empty_db, mdir)
    assert runner.status(pooled, mdir).applied == names
