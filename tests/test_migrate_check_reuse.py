"""What ``migrate check`` reuses to be quick on long histories, and what it must not.

* a column's spec is rendered once per state of its field: a field changed in
  place (an attribute rebound, a constraint appended to its list, an attribute
  added) is rendered again, an unchanged one is served as it was;
* a nullable column's DDL, rendered once, is the same as its nullable form;
* ``check`` compares the models with the state the offline rendering folded
  (no second replay), and still finds a model changed without a migration;
  the rollbacks are then rendered from a state of their own (the comparison
  planned the change on the folded one), so their lint is not lost;
* a scratch database being created says its server's version once connected;
* ``Router.path`` follows ``migrate_dir``; a rendering reads an SQL entry
  that is in the cache folder (the folder is listed once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from benchmarks.bench_migrate import write_project
from datalayer.config import Settings
from datalayer.migrate import scratch as scratch_module
from datalayer.migrate.check import check
from datalayer.migrate.ddl.spec import column_spec, table_spec
from datalayer.migrate.runtime import cache as _cache
from datalayer.migrate.runtime import files as files_module
from datalayer.migrate.runtime import offline
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.recorder import Recorder
from tests.migrate_runtime_support import write_migration
from tests.pgserver import Server


def _model() -> type[pw.Model]:
    return type("Thing", (pw.Model,), {
        "__module__": __name__,
        "Meta": type("Meta", (), {"table_name": "things"}),
        "size": pw.IntegerField(null=True),
        "name": pw.CharField(max_length=40),
    })


def test_an_unchanged_column_spec_is_served_as_it_was() -> None:
    model = _model()
    first = table_spec(model, create=False)
    again = table_spec(model, create=False)
    assert all(a is b for a, b in zip(first.columns, again.columns, strict=True))


def test_a_field_changed_in_place_is_rendered_again() -> None:
    model = _model()
    size = model._meta.fields["size"]
    assert column_spec(size).null is True
    size.null = False  # rebound
    assert column_spec(size).null is False
    assert 'NOT NULL' in column_spec(size).ddl.text
    size.constraints = []
    assert column_spec(size).checks == ()
    size.constraints.append(pw.Check("size > 0"))  # the same list, one more item
    assert [c.text for c in column_spec(size).checks] == ["CHECK (size > 0)"]
    spec = column_spec(size)
    vars(size)["field_type"] = "BIGINT"  # an attribute added (as ``typed()`` does)
    assert column_spec(size) is not spec
    assert column_spec(size).type.text == "BIGINT"


def test_a_nullable_columns_ddl_is_its_nullable_form() -> None:
    model = _model()
    size, name = model._meta.fields["size"], model._meta.fields["name"]
    nullable = column_spec(size)
    assert nullable.ddl == nullable.ddl_nullable
    assert nullable.ddl.text == '"size" INTEGER'
    required = column_spec(name)
    assert required.ddl.text == '"name" VARCHAR(40) NOT NULL'
    assert required.ddl_nullable.text == '"name" VARCHAR(40)'
    assert name.null is False  # set back after rendering the nullable form


def test_router_path_follows_its_folder(tmp_path: Path) -> None:
    router = Router(Recorder(), tmp_path / "a")
    assert router.path("001_x") == tmp_path / "a" / "001_x.py"
    router.migrate_dir = tmp_path / "b"
    assert router.path("001_x") == tmp_path / "b" / "001_x.py"


def test_a_cached_sql_entry_is_read_when_the_folder_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = write_project(tmp_path / "project", 12)
    monkeypatch.setenv("DATALAYER_CACHE_DIR", str(tmp_path / "cache"))
    first = offline.migration_sql(directory, ["005"])  # one file: an entry of its own
    names = Router(Recorder(), directory).todo
    keys = _cache.chain_keys(names, lambda n: (directory / f"{n}.py").read_bytes())
    entry = _cache.sql_key(keys[names.index(first[0].name)], offline.DEFAULT_POSTGRES)
    assert _cache.sql_entry(entry) in (_cache.present() or ())
    # The entry, edited, is what the next rendering serves: it was read, not rendered.
    _cache.store_sql(entry, True, ("SELECT 'from the cache';",))
    (again,) = offline.migration_sql(directory, ["005"])
    assert again.statements == ("SELECT 'from the cache';",)


def test_the_package_versions_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    salt = _cache._version_salt()
    import importlib.metadata

    def fail(name: str) -> str:
        raise AssertionError("read again")

    monkeypatch.setattr(importlib.metadata, "version", fail)
    assert _cache._version_salt() == salt


# -- check, against a server ---------------------------------------------------------


@pytest.fixture
def settings(pg: Server) -> Settings:
    return pg.settings("postgres").replace(dev_database_url=pg.admin.url(masked=False))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Twelve generated files (twenty tables, a column a file)."""
    return write_project(tmp_path / "project", 12)


def _models(project: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(project.parent))
    import benchmodels  # the project's models module, written by write_project

    return benchmodels


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["off", "cold"])
def test_check_compares_the_folded_state_without_replaying(
    project: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    cache: str,
) -> None:
    monkeypatch.setenv("DATALAYER_CACHE_DIR", "off" if cache == "off" else str(tmp_path / "c"))
    benchmodels = _models(project, monkeypatch)
    replays: list[int] = []
    real = files_module.Router.replay

    def replay(self: Router, names: Any, migrator: Any, **kwargs: Any) -> None:
        replays.append(len(list(names)))
        return real(self, names, migrator, **kwargs)

    monkeypatch.setattr(files_module.Router, "replay", replay)
    assert check(settings, project, benchmodels.MODELS) == []
    assert replays == []  # the rendering folded the state; nothing replayed it again

    # A model changed without a migration: found on the folded state.
    extra = type("Extra", (pw.Model,), {
        "__module__": __name__, "Meta": type("Meta", (), {"table_name": "extra"}),
        "x": pw.IntegerField(null=True),
    })
    problems = check(settings, project, [*benchmodels.MODELS, extra])
    assert any("the models changed without a migration" in p and "extra" in p
               for p in problems)


@pytest.mark.slow
def test_a_rollbacks_lint_error_is_found_when_the_models_changed_too(
    project: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATALAYER_CACHE_DIR", "off")
    benchmodels = _models(project, monkeypatch)
    # A rollback the lint refuses (an index built in a transaction on an existing table).
    write_migration(project, "999_note", migrate='migrator.sql("SELECT 1")',
                    rollback='migrator.sql("CREATE INDEX t3_c0_ix ON t3 (c0)")')
    write_sum(project)
    rendered: list[str] = []
    real = offline.migration_sql

    def sql(*args: Any, **kwargs: Any) -> Any:
        rendered.append("rollback" if kwargs.get("rollback") else "forward")
        return real(*args, **kwargs)

    monkeypatch.setattr(offline, "migration_sql", sql)
    in_sync = check(settings, project, benchmodels.MODELS)
    assert [p for p in in_sync if "(rollback)" in p or "999_note" in p]
    assert rendered == []  # in sync: the rollbacks came from the folded state

    extra = type("Extra", (pw.Model,), {
        "__module__": __name__, "Meta": type("Meta", (), {"table_name": "extra"}),
        "x": pw.IntegerField(null=True),
    })
    changed = check(settings, project, [*benchmodels.MODELS, extra])
    assert any("the models changed without a migration" in p for p in changed)
    # The comparison planned the change on the folded state: the rollbacks were
    # rendered from a state of their own, and their lint error is still there.
    assert rendered == ["rollback"]
    assert [p for p in changed if p.startswith("lint ")] == [
        p for p in in_sync if p.startswith("lint ")
    ]


@pytest.mark.slow
def test_a_scratch_database_says_its_servers_version_once_connected(
    settings: Settings, pg: Server
) -> None:
    import psycopg2

    admin = scratch_module.scratch_server(settings)

    def databases() -> set[str]:
        conn = psycopg2.connect(**admin.connect_kwargs())
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database")
                return {row[0] for row in cur.fetchall()}
        finally:
            conn.close()

    told: list[tuple[int, set[str]]] = []
    with scratch_module.scratch_database(
        admin, "ver", None, lambda v: told.append((v, databases()))
    ) as made:
        # Told once connected, before the database was created.
        assert [v for v, _ in told] == [told[0][0]] and told[0][0] >= 130000
        assert made.dbname not in told[0][1] and made.dbname in databases()
    with scratch_module.scratch_database_soon(admin, "ver") as pending:
        assert pending.server_version() == told[0][0]
        assert pending().dbname
