"""More generated migrations, from outside the generator: each must apply on a table with rows,
reproduce ``create_tables()`` (in every schema the models use), re-diff empty and roll back.

The harness is the one of ``test_migrate_generate`` (peewee-migrate's own Router and plain
Migrator apply the files), extended to other schemas than ``public``.  Assertions look at
behaviour (schemas, rows, errors), not at the text of the generated code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from playhouse.postgres_ext import (
    ArrayField,
    BinaryJSONField,
    JSONField,
    PostgresqlExtDatabase,
)

from datalayer.migrate.generate import (
    DropRefused,
    GenerationError,
    compute_diff,
    create_migration,
    diff_source,
)
from datalayer.migrate.hints import renamed_from
from datalayer.migrate.schema import compare, snapshot
from datalayer.models.fields import created_at_field, uuid_pk
from tests.pgserver import Server
from tests.test_migrate_generate import PlainRouter, item, model, open_db, rows

Models = list[type[pw.Model]]
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def user_schemas(db: pw.Database) -> list[str]:
    return [r[0] for r in rows(db, "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' "
                                   "AND nspname <> 'information_schema' ORDER BY 1")]


def snapshots(db: pw.Database) -> dict[str, Any]:
    """Return the snapshot of every user schema of ``db`` (empty schemas left out)."""
    out = {}
    for schema in user_schemas(db):
        snap = snapshot(db, schema)
        if snap.tables:
            out[schema] = snap
    return out


def differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    problems = [f"schema {s}: missing" for s in want if s not in got]
    problems += [f"schema {s}: unexpected" for s in got if s not in want]
    for s in set(want) & set(got):
        problems += [f"{s}: {p}" for p in compare(want[s], got[s])]
    return problems


def declared(ref: pw.Database, models: Models) -> dict[str, Any]:
    """Return the schemas ``create_tables()`` makes for ``models`` on an emptied ``ref``."""
    for schema in user_schemas(ref):
        ref.execute_sql(f'DROP SCHEMA "{schema}" CASCADE')
    ref.execute_sql("CREATE SCHEMA public")
    for schema in {m._meta.schema for m in models if m._meta.schema}:
        ref.execute_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    with ref.bind_ctx(models):
        ref.create_tables(models)
    return snapshots(ref)


@pytest.fixture(scope="module")
def ref_db(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    with pg.database("dlref") as name:
        db = open_db(pg, name)
        try:
            yield db
        finally:
            db.close()


@pytest.fixture
def mig(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    with pg.database("dlgen") as name:
        db = open_db(pg, name)
        try:
            yield db
        finally:
            db.close()


@dataclasses.dataclass
class Case:
    """One model change: v1 and v2, rows to seed, what must hold after it and after rollback."""

    id: str
    v1: Callable[[], Models]
    v2: Callable[[], Models]
    seed: str = ""
    after: Callable[[pw.Database], None] | None = None
    after_rollback: Callable[[pw.Database], None] | None = None
    allow_drop: bool = False
    warns: tuple[str, ...] = ()
    rollback_keeps_rows: bool = True


def run_case(case: Case, mig: pw.Database, ref: pw.Database, tmp_path: Path) -> None:
    router = PlainRouter(mig, tmp_path)
    assert create_migration(router, "v1", case.v1()) is not None
    router.run()
    assert differences(declared(ref, case.v1()), snapshots(mig)) == []
    if case.seed:
        mig.execute_sql(case.seed)
    before = snapshots(mig)
    seeded = {t: rows(mig, f"SELECT count(*) FROM {t}")[0][0] for t in _tables(mig)}

    second = create_migration(router, "v2", case.v2(), allow_drop=case.allow_drop)
    assert second is not None, "a migration was expected"
    for needle in case.warns:
        assert any(needle in w for w in second.warnings), (needle, second.warnings)
    router.run()
    assert router.done == ["001_v1", "002_v2"]
    assert differences(declared(ref, case.v2()), snapshots(mig)) == []
    assert diff_source(router, case.v2()) is None, "a second diff must find nothing"
    if case.after is not None:
        with mig.atomic() as txn:
            case.after(mig)
            txn.rollback()

    router.rollback()
    assert router.done == ["001_v1"]
    assert differences(before, snapshots(mig)) == [], "rollback must restore the v1 schema"
    if case.rollback_keeps_rows:
        again = {t: rows(mig, f"SELECT count(*) FROM {t}")[0][0] for t in _tables(mig)}
        assert again == seeded, "the rows survive the rollback"
    if case.after_rollback is not None:
        case.after_rollback(mig)


def _tables(db: pw.Database) -> list[str]:
    return [
        f'"{s}"."{t}"' for s, t in rows(
            db, "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                "('pg_catalog', 'information_schema') AND tablename <> 'migratehistory'")
    ]


# -- item 2: drops are explicit --------------------------------------------------------


def _person(table: str = "people", **fields: Any) -> type[pw.Model]:
    base = {"id": uuid_pk("person_id"), "name": pw.CharField(max_length=100)}
    base.update(fields)
    return model("Person", table, **base)


def test_a_column_drop_is_refused_and_nothing_written(mig: pw.Database, tmp_path: Path) -> None:
    router = PlainRouter(mig, tmp_path)
    create_migration(router, "v1", [_person(age=pw.IntegerField(null=True))])
    with pytest.raises(DropRefused) as err:
        create_migration(router, "v2", [_person()])
    assert [(d.table, d.column, d.renamed_to) for d in err.value.drops] == [
        ("people", "age", None)
    ]
    assert "drops column people.age" in str(err.value) and "--allow-drop" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001_v1.py"]
    assert create_migration(router, "v2", [_person()], allow_drop=True) is not None


def test_an_unhinted_column_rename_shows_the_renamed_from_line(
    mig: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    router = PlainRouter(mig, tmp_path)
    create_migration(router, "v1", [_person()])
    router.run()
    mig.execute_sql("INSERT INTO people (name) VALUES ('ada')")
    renamed = {"name": None, "full_name": pw.CharField(max_length=100)}
    with pytest.raises(DropRefused) as err:
        create_migration(router, "v2", [_person(**renamed)])
    (drop,) = err.value.drops
    assert (drop.table, drop.column, drop.renamed_to) == ("people", "name", "full_name")
    assert 'full_name = renamed_from(pw.CharField(...), "name")' in str(err.value)
    assert "looks renamed" in str(err.value)
    # Following the message: the rename keeps the rows.
    hinted = {"name": None,
              "full_name": renamed_from(pw.CharField(max_length=100), "name")}
    create_migration(router, "v2", [_person(**hinted)])
    router.run()
    assert rows(mig, "SELECT full_name FROM people") == [("ada",)]


def _no_name(**fields: Any) -> type[pw.Model]:
    m = _person(**fields)
    return m


def test_an_unhinted_table_rename_is_refused_with_the_decorator_line(
    mig: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    router = PlainRouter(mig, tmp_path)
    create_migration(router, "v1", [_person("people")])
    router.run()
    mig.execute_sql("INSERT INTO people (name) VALUES ('ada'), ('bob')")
    with pytest.raises(DropRefused) as err:
        create_migration(router, "v2", [_person("persons")])
    (drop,) = err.value.drops
    assert (drop.table, drop.column, drop.renamed_to) == ("people", None, "persons")
    assert '@renamed_from("people") above class Person' in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001_v1.py"]
    hinted = renamed_from(_person("persons"), "people")
    create_migration(router, "v2", [hinted])
    router.run()
    assert differences(declared(ref_db, [_person("persons")]), snapshots(mig)) == []
    assert rows(mig, "SELECT name FROM persons ORDER BY name") == [("ada",), ("bob",)]
    router.rollback()
    assert rows(mig, "SELECT name FROM people ORDER BY name") == [("ada",), ("bob",)]


def test_a_dropped_table_unlike_the_new_one_is_not_called_a_rename(
    mig: pw.Database, tmp_path: Path
) -> None:
    router = PlainRouter(mig, tmp_path)
    create_migration(router, "v1", [_person("people")])
    other = model("Note", "notes", id=uuid_pk("note_id"), body=pw.TextField(),
                  at=created_at_field())
    with pytest.raises(DropRefused) as err:
        create_migration(router, "v2", [other])
    assert [(d.table, d.renamed_to) for d in err.value.drops] == [("people", None)]
    assert "renamed_from" not in "\n".join(err.value.problems)


def test_diff_cli_refuses_drops_unless_allowed(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from datalayer.cli import main
    from datalayer.db import Database
    from datalayer.migrate.checksum import write_sum
    from datalayer.migrate.router import Router
    from datalayer.models import MODELS

    directory = clean_env / "migrations"
    extra = model("Extra", "extras", id=uuid_pk("extra_id"))
    assert create_migration(Router(Database(), directory), "initial", [*MODELS, extra])
    write_sum(directory)
    result = CliRunner().invoke(main, ["migrate", "diff", "drop_extras"])
    assert result.exit_code == 1, result.output
    assert "drops table extras" in result.output and "--allow-drop" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in directory.glob("*.py")) == ["001_initial.py"]
    result = CliRunner().invoke(main, ["migrate", "diff", "drop_extras", "--allow-drop"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (directory / "002_drop_extras.py").exists()
