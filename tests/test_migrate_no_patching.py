"""Nothing of peewee is patched: a web app's threads keep real rows while the library migrates.

A replay (``diff``, ``check``, ``squash``, ``sql``) hands migration files a
recorder object instead of patching ``Database.execute_sql`` or
``Model.select`` for the whole process, and ``apply`` / ``rollback`` hand them
a view of the database instead of rebinding its ``execute_sql``; so other
threads of the same process, querying the same database object all the
while, always get their real rows.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from datalayer.config import Settings
from datalayer.db import Database
from datalayer.migrate.autogenerate.compare import create_migration
from datalayer.migrate.check import check
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.names import migration_names
from datalayer.migrate.runtime.offline import migration_sql
from datalayer.migrate.squash import squash
from tests.pgserver import Server

RUNS = 20
QUERY_THREADS = 8
ROWS = [(1, "alpha"), (2, "beta"), (3, "gamma")]


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
    return models


def _history(directory: Path) -> None:
    for version, name in [(1, "authors"), (2, "author_email"), (3, "books")]:
        assert create_migration(Router(Database(), directory), name, _models(version))
        write_sum(directory)


class _Queries:
    """Threads that query a real table through peewee for as long as they are told to."""

    def __init__(self, db: Database) -> None:
        class Probe(pw.Model):
            id = pw.IntegerField(primary_key=True)
            label = pw.TextField()

            class Meta:
                database = db
                table_name = "nopatch_probe"

        self.model = Probe
        self.db = db
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.queries = 0
        self.wrong: list[str] = []

    def run(self) -> None:
        probe, db = self.model, self.db
        try:
            while not self.stop.is_set():
                with db.checkout():
                    rows = list(probe.select(probe.id, probe.label).order_by(probe.id).tuples())
                    count = db.execute_sql("SELECT count(*) FROM nopatch_probe").fetchone()
                    one = probe.get_or_none(probe.id == 2)
                with self.lock:
                    self.queries += 3
                    if rows != ROWS:
                        self.wrong.append(f"select returned {rows!r}")
                    if not isinstance(count, tuple) or count[0] != len(ROWS):
                        self.wrong.append(f"count returned {count!r}")
                    if one is None or one.label != "beta":
                        self.wrong.append(f"get returned {one!r}")
        except Exception as exc:  # a Mock cursor, a patched method: anything is a failure
            with self.lock:
                self.wrong.append(f"{type(exc).__name__}: {exc}")


@pytest.fixture
def app_db(pg: Server) -> Any:
    with pg.database("dlnopatch") as name:
        db = Database(pg.settings(name).replace(max_open_conns=QUERY_THREADS + 2))
        with db.checkout():
            db.execute_sql("CREATE TABLE nopatch_probe (id int PRIMARY KEY, label text)")
            db.execute_sql(
                "INSERT INTO nopatch_probe VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma')"
            )
        try:
            yield db
        finally:
            db.close_pool()


def test_library_migrations_never_touch_other_threads_queries(
    pg: Server, app_db: Database, tmp_path: Path
) -> None:
    scratch = pg.admin.replace(dev_database_url=pg.admin.url(masked=False))
    checking: Settings = pg.settings("postgres").replace(
        dev_database_url=pg.admin.url(masked=False)
    )
    queries = _Queries(app_db)
    threads = [threading.Thread(target=queries.run) for _ in range(QUERY_THREADS)]
    for t in threads:
        t.start()
    try:
        for run in range(RUNS):
            directory = tmp_path / f"run{run}" / "migrations"
            _history(directory)  # diff, three times (each replays the history before it)
            assert check(checking, directory, _models(3)) == []
            applied = runner.apply(app_db, directory)  # the very database object the app uses
            runner.rollback(app_db, directory, steps=len(applied))
            assert len(migration_sql(directory)) == len(migration_names(directory)) > 2
            squash(scratch, directory, "squashed")
            assert len(migration_sql(directory)) == 1
            shutil.rmtree(directory.parent)
    finally:
        queries.stop.set()
        for t in threads:
            t.join()
    print(f"\n{RUNS} runs, {queries.queries} queries in {QUERY_THREADS} threads, "
          f"{len(queries.wrong)} wrong")
    assert queries.wrong == [], queries.wrong[:5]
    assert queries.queries > RUNS * QUERY_THREADS
