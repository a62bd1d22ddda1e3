"""`apply` / `rollback` whose connection is lost mid-migration say what happened, truthfully.

Every test talks to the server through :class:`tests._proxy.LossyProxy`, which lets one
message through, waits for the server's answer, throws it away and closes the
connection.  A lost reply to COMMIT used to be reported as "failed and was rolled back,
so none of it took effect ... editing it is fine" although the history row had committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from datalayer.config import Settings
from datalayer.db import Database
from datalayer.errors import MigrationError
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import write_sum
from tests._proxy import LossyProxy
from tests.migrate_runtime_support import write_table_migration
from tests.pgserver import Server

pytestmark = pytest.mark.slow


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    write_table_migration(directory, "001_a", "a")
    write_table_migration(directory, "002_b", "b")
    write_sum(directory)
    return directory


@pytest.fixture
def proxied(empty_db: Settings) -> Iterator[tuple[Database, LossyProxy]]:
    assert empty_db.host is not None
    with LossyProxy(empty_db.host, empty_db.port) as proxy:
        db = Database(empty_db.replace(host=proxy.host, port=proxy.port))
        try:
            yield db, proxy
        finally:
            db.close_pool()


def _applied(pg: Server, settings: Settings) -> list[str]:
    conn = pg.raw(settings.dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM migratehistory ORDER BY id")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def test_a_lost_reply_to_commit_that_committed_says_applied(
    pg: Server, empty_db: Settings, folder: Path, proxied: tuple[Database, LossyProxy]
) -> None:
    db, proxy = proxied
    runner.apply(db, folder, to="001_a")
    proxy.lose_reply_to(b"COMMIT")
    with pytest.raises(MigrationError) as info:
        runner.apply(db, folder)
    assert proxy.answered == [True]
    assert _applied(pg, empty_db) == ["001_a", "002_b"]
    message = str(info.value)
    assert "it committed: 002_b is applied" in message, message
    assert "editing it is fine" not in message and "none of it took effect" not in message
    assert "migrate hash" not in message
    assert runner.apply(db, folder) == []  # and the next run agrees: nothing left to do


def test_a_connection_lost_inside_the_migration_says_not_applied(
    pg: Server, empty_db: Settings, folder: Path, proxied: tuple[Database, LossyProxy]
) -> None:
    db, proxy = proxied
    runner.apply(db, folder, to="001_a")
    proxy.lose_reply_to(b'CREATE TABLE "b"')
    with pytest.raises(MigrationError) as info:
        runner.apply(db, folder)
    assert proxy.answered == [True]
    assert _applied(pg, empty_db) == ["001_a"]
    message = str(info.value)
    assert "it did not commit: none of it took effect and it is not recorded" in message, message
    assert "editing it is fine" not in message
    assert [a.name for a in runner.apply(db, folder)] == ["002_b"]


def test_a_lost_reply_to_the_commit_of_a_rollback_says_rolled_back(
    pg: Server, empty_db: Settings, folder: Path, proxied: tuple[Database, LossyProxy]
) -> None:
    db, proxy = proxied
    runner.apply(db, folder)
    proxy.lose_reply_to(b"COMMIT")
    with pytest.raises(MigrationError) as info:
        runner.rollback(db, folder)
    assert proxy.answered == [True]
    assert _applied(pg, empty_db) == ["001_a"]
    message = str(info.value)
    assert "it committed: 002_b is rolled back (its history row is gone)" in message, message


def test_a_lost_commit_that_cannot_be_checked_says_unknown(
    pg: Server, empty_db: Settings, folder: Path
) -> None:
    """A plain peewee database has no second connection to ask on: unknown, never "edit it"."""
    assert empty_db.host is not None
    with LossyProxy(empty_db.host, empty_db.port) as proxy:
        db = pw.PostgresqlDatabase(
            empty_db.dbname, host=proxy.host, port=proxy.port, user=empty_db.user,
            password=empty_db.password,
        )
        try:
            runner.apply(db, folder, to="001_a")
            proxy.lose_reply_to(b"COMMIT")
            with pytest.raises(MigrationError) as info:
                runner.apply(db, folder)
        finally:
            db.close()
    assert proxy.answered == [True]
    message = str(info.value)
    assert "could not find out whether it committed" in message, message
    assert "Do not edit or re-run anything yet" in message
    assert "editing it is fine" not in message
