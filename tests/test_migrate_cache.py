"""The replayed-state cache: used when the files are the same, never when one changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import peewee as pw
import pytest

from datalayer.db import Database
from datalayer.migrate.autogenerate.api import compute_diff, create_migration
from datalayer.migrate.ddl.spec import table_spec
from datalayer.migrate.operations.migrator import DatalayerMigrator
from datalayer.migrate.runtime import cache
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from tests.pgserver import Server

COLUMNS = 12


def _model(columns: int, width: int = 20) -> type[pw.Model]:
    attrs: dict[str, object] = {
        "__module__": __name__,
        "name": pw.CharField(max_length=50),
        "Meta": type("Meta", (), {"table_name": "items"}),
    }
    for i in range(1, columns + 1):
        attrs[f"c{i}"] = pw.CharField(max_length=width, null=True)
    return type("Item", (pw.Model,), attrs)


@pytest.fixture
def history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATALAYER_CACHE_DIR", str(tmp_path / "cache"))
    directory = tmp_path / "migrations"
    for n in range(COLUMNS + 1):
        assert create_migration(Router(Database(), directory), f"c{n}", [_model(n)]) is not None
    write_sum(directory)
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # the states cached while generating
    return directory


def _state(directory: Path) -> DatalayerMigrator:
    router = Router(Database(), directory)
    migrator = DatalayerMigrator(router.database)
    router.replay(router.todo, migrator)
    return migrator


def _loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    original = Router.load

    def load(self: Router, name: str):  # type: ignore[no-untyped-def]
        seen.append(name)
        return original(self, name)

    monkeypatch.setattr(Router, "load", load)
    return seen


def test_a_replay_stores_no_code_and_rebuilds_the_same_state(history: Path) -> None:
    # Changed: replayed states were cached as Python code the next run executed; nothing
    # of a replay is cached now (it needs no database and is fast).
    first = _state(history)
    second = _state(history)
    folder = history.parent / "cache"
    assert not folder.exists() or not [p for p in folder.iterdir() if p.suffix != ".json"]
    [a], [b] = first.orm, second.orm
    assert table_spec(a) == table_spec(b)
    assert not compute_diff(Router(Database(), history), [_model(COLUMNS)])


@pytest.mark.parametrize("unsafe", ["symlink", "group-writable", "other-writable", "foreign"])
def test_an_unsafe_cache_folder_is_refused_in_one_line_and_the_command_works(
    history: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    unsafe: str,
) -> None:
    import logging
    import os

    from click.testing import CliRunner

    from datalayer.cli import main

    real = tmp_path / "real-cache"
    real.mkdir(mode=0o700)
    folder = tmp_path / "shared-cache"
    if unsafe == "symlink":
        folder.symlink_to(real)
    else:
        folder.mkdir()
        folder.chmod({"group-writable": 0o770, "other-writable": 0o707}.get(unsafe, 0o700))
        if unsafe == "foreign":
            if os.geteuid() != 0:
                pytest.skip("giving a folder to another user needs root")
            os.chown(folder, 4242, 4242)
    monkeypatch.setenv("DATALAYER_CACHE_DIR", str(folder))
    cache._REFUSED.clear()
    for _ in range(2):
        result = CliRunner().invoke(main, ["migrate", "sql", "--dir", str(history)])
        assert result.exit_code == 0, result.output
        assert "ALTER TABLE" in result.stdout
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, warned  # one line, once per process
    assert f"not using the cache folder {folder}" in warned[0] and "chmod 700" in warned[0]
    assert list(real.iterdir()) == [] and list(folder.iterdir()) == []
    assert cache.cache_dir() is None


def test_the_cache_folder_is_created_private(
    history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat

    from datalayer.migrate.runtime.offline import migration_sql

    folder = tmp_path / "fresh" / "cache"
    monkeypatch.setenv("DATALAYER_CACHE_DIR", str(folder))
    migration_sql(history)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    stored = list(folder.iterdir())
    assert stored and all(p.suffix == ".json" for p in stored)


@pytest.mark.parametrize("rehash", [True, False])
def test_an_edited_file_is_never_served_from_the_cache(history: Path, rehash: bool) -> None:
    _state(history)
    names = Router(Database(), history).todo
    edited = history / f"{names[5]}.py"
    text = edited.read_text()
    assert "max_length=20" in text
    edited.write_text(text.replace("max_length=20", "max_length=99"))
    if rehash:
        write_sum(history)
    [model] = _state(history).orm
    column = names[5].split("_", 1)[1]
    assert model._meta.columns[column].max_length == 99


def test_cache_off_and_keys(history: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAYER_CACHE_DIR", "off")
    assert cache.cache_dir() is None
    _state(history)
    assert not (history.parent / "cache").exists()
    router = Router(Database(), history)
    keys = cache.chain_keys(router.todo, router.source)
    assert len(set(keys)) == len(keys)
    again = cache.chain_keys(router.todo[:3], router.source)
    assert again == keys[:3]


def test_check_reuses_the_schema_of_an_unchanged_history(
    history: Path, pg: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    check_module = importlib.import_module("datalayer.migrate.check")
    runner = importlib.import_module("datalayer.migrate.runtime.apply")

    settings = pg.admin.replace(dev_database_url=pg.admin.url(masked=False))
    models = [_model(COLUMNS)]
    assert check_module.check(settings, history, models) == []
    assert list((history.parent / "cache").glob("snapshot-*.json"))

    def no_apply(*args: object, **kwargs: object) -> None:
        raise AssertionError("the migrations were applied again")

    with monkeypatch.context() as patch:
        patch.setattr(runner, "apply", no_apply)
        assert check_module.check(settings, history, models) == []
    # An edited file (re-hashed) is a new history: applied again, the difference found.
    names = Router(Database(), history).todo
    edited = history / f"{names[3]}.py"
    edited.write_text(edited.read_text().replace("max_length=20", "max_length=21"))
    write_sum(history)
    problems = check_module.check(settings, history, models)
    differs = [p for p in problems if p.startswith("schema differs from the models")]
    assert differs and "21" in differs[0], problems


def test_rendered_sql_is_cached_per_file_and_never_stale(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datalayer.migrate.runtime.offline import migration_sql

    first = migration_sql(history)
    seen = _loads(monkeypatch)
    assert migration_sql(history) == first
    assert seen == []  # every file's SQL came from the cache: nothing replayed
    names = Router(Database(), history).todo
    edited = history / f"{names[4]}.py"
    edited.write_text(edited.read_text().replace("max_length=20", "max_length=33"))
    again = migration_sql(history)
    changed = [a.name for a, b in zip(first, again, strict=True) if a != b]
    assert changed == [names[4]] and "VARCHAR(33)" in " ".join(again[4].statements)


def test_sql_works_with_the_cache_off(history: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datalayer.migrate.runtime.offline import migration_sql

    monkeypatch.setenv("DATALAYER_CACHE_DIR", "off")
    assert len(migration_sql(history)) == COLUMNS + 1


def test_a_replay_in_one_thread_never_strips_the_sql_of_another(history: Path) -> None:
    """The replay switch is per thread: real operations elsewhere still derive their SQL;
    and concurrent replays never leave peewee patched."""
    import threading

    from datalayer.migrate.operations.migrator import replaying

    stop = threading.Event()
    empty: list[int] = []

    def replayer() -> None:
        while not stop.is_set():
            with replaying():
                router = Router(Database(), history)
                router.replay(router.todo, DatalayerMigrator(router.database), cache=False)

    def operator(trials: int) -> None:
        for i in range(trials):
            m = DatalayerMigrator(Database())
            m.create_model(_model(3))
            m.add_fields("items", extra=pw.IntegerField(null=True))
            if not any(rec.steps for rec in m.take_recorded()):
                empty.append(i)

    threads = [threading.Thread(target=replayer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        operator(300)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert empty == []
    # Replays in two threads at once leave peewee as they found it (no mock left behind).
    from unittest import mock

    assert not isinstance(vars(pw.Database)["execute_sql"], mock.Mock)
    assert not isinstance(vars(pw.Model)["select"], mock.Mock)
