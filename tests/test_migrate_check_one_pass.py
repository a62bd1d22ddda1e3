"""`migrate check` renders the history once and builds both schemas in one scratch database.

* :func:`~datalayer.migrate.runtime.offline.history_sql` gives the same SQL as
  :func:`~datalayer.migrate.runtime.offline.migration_sql` forward and backward,
  also when the forward SQL came from the cache (then the rollbacks replay);
* ``check`` hands that rendering to the lint (nothing is rendered twice) and
  makes one scratch database: the models' schema is built in a transaction
  that is rolled back, then the history is applied to the same, empty, database;
  what it verifies is unchanged (a schema difference is still found).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_migrate import write_project
from datalayer.config import Settings
from datalayer.migrate import scratch as scratch_module
from datalayer.migrate.check import check
from datalayer.migrate.lint import _engine
from datalayer.migrate.runtime import offline
from datalayer.migrate.runtime.checksum import write_sum
from tests.migrate_runtime_support import write_migration
from tests.pgserver import Server

check_module = sys.modules["datalayer.migrate.check"]  # the package's ``check`` is the function

NOTE = 'migrator.sql("COMMENT ON TABLE t3 IS \'noted\'")'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Twelve generated files (twenty tables, a column a file), then a hand-written one."""
    directory = write_project(tmp_path / "project", 12)
    write_migration(directory, "999_note", migrate=NOTE,
                    rollback='migrator.sql("COMMENT ON TABLE t3 IS NULL")')
    write_sum(directory)
    return directory


def _plain(items: list[offline.MigrationSql]) -> list[tuple[str, bool, tuple[str, ...]]]:
    return [(m.name, m.atomic, m.statements) for m in items]


@pytest.mark.parametrize("cache", ["off", "warm"])
def test_one_pass_renders_what_migration_sql_renders_both_ways(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: str
) -> None:
    monkeypatch.setenv("DATALAYER_CACHE_DIR", "off" if cache == "off" else str(tmp_path / "c"))
    forward = offline.migration_sql(project)  # with a cache: every file's SQL stored now
    backward = offline.migration_sql(project, rollback=True)
    if cache == "warm":  # the rollbacks' own entry gone: they must be rendered, not read
        for entry in (tmp_path / "c").glob("rollback*"):
            entry.unlink()
    got_forward, rollbacks = offline.history_sql(project)
    assert _plain(got_forward) == _plain(forward)
    assert len(forward) == 13 and forward[-1].statements[-1].startswith("COMMENT ON TABLE")
    assert _plain(rollbacks()) == _plain(backward)
    assert [m.name for m in backward][:2] == ["999_note", "012_add_t19_c49"]


@pytest.fixture
def settings(pg: Server) -> Settings:
    return pg.settings("postgres").replace(dev_database_url=pg.admin.url(masked=False))


@pytest.mark.slow
def test_check_renders_once_and_makes_one_scratch_database(
    project: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATALAYER_CACHE_DIR", "off")
    monkeypatch.syspath_prepend(str(project.parent))
    import benchmodels  # the project's models module, written by write_project

    renders: list[str] = []
    made: list[str] = []
    real_history, real_sql = offline.history_sql, offline.migration_sql
    real_scratch = scratch_module.scratch_database

    def history(*args: Any, **kwargs: Any) -> Any:
        renders.append("history")
        return real_history(*args, **kwargs)

    def sql(*args: Any, **kwargs: Any) -> Any:
        renders.append("rollback" if kwargs.get("rollback") else "forward")
        return real_sql(*args, **kwargs)

    def scratch(admin: Settings, label: str, *args: Any) -> Any:
        made.append(label)
        return real_scratch(admin, label, *args)

    monkeypatch.setattr(offline, "history_sql", history)
    monkeypatch.setattr(offline, "migration_sql", sql)
    monkeypatch.setattr(_engine, "history_sql", history)
    monkeypatch.setattr(_engine, "migration_sql", sql)
    monkeypatch.setattr(scratch_module, "scratch_database", scratch)
    monkeypatch.setattr(check_module, "scratch_database", scratch)
    assert check(settings, project, benchmodels.MODELS) == []
    assert renders == ["history"]  # the lint read check's rendering, both ways
    assert made == ["mig"]  # one scratch database for the models and the history

    # What is verified is the same: a column the models lack is a difference.
    write_migration(project, "9990_extra", migrate=(
        'migrator.sql("ALTER TABLE t0 ADD COLUMN stray integer")'
    ))
    write_sum(project)
    problems = check(settings, project, benchmodels.MODELS)
    assert any("schema differs from the models" in p and "stray" in p for p in problems)
