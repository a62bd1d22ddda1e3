"""The harness of the generator's case tests: one model change, from outside the generator.

A case is the models before (v1) and after (v2), rows to seed, and what must hold.
:func:`run_case` generates v1 and applies it with peewee-migrate's own Router and
plain Migrator (what ``pw_migrate migrate`` uses), seeds rows, generates v2 and
applies it: the live schema must equal ``create_tables()`` of v2 in every schema the
models use, a second diff must find nothing, and rolling back must restore the v1
schema and keep the rows.  :func:`check_passes` generates the same change with
datalayer's Router and runs ``datalayer migrate check`` (which lints every file,
forward and rollback) on it.

Used by ``test_migrate_generate_cases``, ``test_migrate_history_cases`` and
``test_migrate_more_cases``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from playhouse.postgres_ext import PostgresqlExtDatabase

from datalayer.migrate.autogenerate.api import create_migration, diff_source
from datalayer.migrate.inspect import compare, snapshot
from tests.pgserver import Server
from tests.test_migrate_generate import PlainRouter, item, open_db, rows

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


def emptied(db: pw.Database) -> pw.Database:
    """Drop every user schema of ``db`` and create an empty ``public``; return ``db``."""
    for schema in user_schemas(db):
        db.execute_sql(f'DROP SCHEMA "{schema}" CASCADE')
    db.execute_sql("CREATE SCHEMA public")
    return db


def declared(ref: pw.Database, models: Models) -> dict[str, Any]:
    """Return the schemas ``create_tables()`` makes for ``models`` on an emptied ``ref``."""
    emptied(ref)
    for schema in {m._meta.schema for m in models if m._meta.schema}:
        ref.execute_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    with ref.bind_ctx(models):
        ref.create_tables(models)
        for m in models:  # a DeferredForeignKey's constraint, once both tables exist
            for field in list(m._meta.refs):
                if field.deferred:
                    m._schema.create_foreign_key(field)
    return snapshots(ref)


@pytest.fixture(scope="module", name="ref_db")
def ref_db_fixture(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    with pg.database("dlref") as name:
        db = open_db(pg, name)
        try:
            yield db
        finally:
            db.close()


@pytest.fixture(scope="module", name="module_db")
def module_db_fixture(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    """One database for a module's cases: each empties it first (:func:`emptied`)."""
    with pg.database("dlcases") as name:
        db = open_db(pg, name)
        try:
            yield db
        finally:
            db.close()


@pytest.fixture(name="mig")
def mig_fixture(pg: Server) -> Iterator[PostgresqlExtDatabase]:
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
    unsafe: bool = False  # the plain forms (one transaction) instead of the safe ones


def run_case(case: Case, mig: pw.Database, ref: pw.Database, tmp_path: Path, *,
             reapply: bool = False) -> None:
    """Generate, apply on rows, compare with ``create_tables()``, re-diff, roll back.

    ``reapply``: after the rollback the migration is applied once more (a rollback
    must leave what the migration expects to find) and must give v2's schema again.
    """
    router = PlainRouter(mig, tmp_path)
    assert create_migration(router, "v1", case.v1()) is not None
    router.run()
    assert differences(declared(ref, case.v1()), snapshots(mig)) == []
    if case.seed:
        mig.execute_sql(case.seed)
    before = snapshots(mig)
    seeded = {t: rows(mig, f"SELECT count(*) FROM {t}")[0][0] for t in _tables(mig)}

    second = create_migration(router, "v2", case.v2(), allow_drop=case.allow_drop,
                              unsafe=case.unsafe)
    assert second is not None, "a migration was expected"
    for needle in case.warns:
        assert any(needle in w for w in second.warnings), (needle, second.warnings)
    router.run()
    assert router.done == ["001_v1", *second.names]  # a part without a transaction: NAME_2
    want = declared(ref, case.v2())
    assert differences(want, snapshots(mig)) == []
    assert diff_source(router, case.v2(), unsafe=case.unsafe) is None, (
        "a second diff must find nothing")
    if case.after is not None:
        with mig.atomic() as txn:
            case.after(mig)
            txn.rollback()

    for _ in second.names:
        router.rollback()
    assert router.done == ["001_v1"]
    assert differences(before, snapshots(mig)) == [], "rollback must restore the v1 schema"
    if case.rollback_keeps_rows:
        again = {t: rows(mig, f"SELECT count(*) FROM {t}")[0][0] for t in _tables(mig)}
        assert again == seeded, "the rows survive the rollback"
    if case.after_rollback is not None:
        case.after_rollback(mig)
    if reapply:
        router.run()
        assert router.done == ["001_v1", *second.names]
        assert differences(want, snapshots(mig)) == [], "applied again after its rollback"


def _tables(db: pw.Database) -> list[str]:
    return [
        f'"{s}"."{t}"' for s, t in rows(
            db, "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                "('pg_catalog', 'information_schema') AND tablename <> 'migratehistory'")
    ]


def fails_sql(db: pw.Database, sql: str) -> bool:
    try:
        with db.atomic():
            db.execute_sql(sql)
    except pw.DatabaseError:
        return True
    return False


def both_forms(*cases: Case) -> list[Case]:
    """Each case in the safe forms (the default) and in the plain forms (``unsafe``)."""
    return [*cases, *(dataclasses.replace(c, id=c.id + "_unsafe", unsafe=True) for c in cases)]


_LINT_PROBLEM = re.compile(r"^lint [^:]+: ([a-z-]+): ")


def check_passes(
    pg: Server, tmp_path: Path, v1: Models, v2: Models, *, lint_only: bool = False,
    **options: Any
) -> None:
    """Generate v1 then v2 with datalayer's Router; ``check`` must pass on v2.

    But for the lint rules that ``diff`` announced for this change (a type change
    that rewrites the table needs an allow comment: the warning names the rule).
    ``lint_only``: only check's lint (every file, forward and rollback), for a caller
    that has compared the applied schema with ``create_tables()`` itself
    (:func:`run_case`): that saves check's two scratch databases.
    """
    from datalayer.db import Database
    from datalayer.migrate.check import check, lint_problems
    from datalayer.migrate.runtime.checksum import write_sum
    from datalayer.migrate.runtime.files import Router

    settings = pg.settings("postgres").replace(dev_database_url=pg.admin.url(masked=False))
    directory = tmp_path / "checked"
    assert create_migration(Router(Database(), directory), "v1", v1) is not None
    second = create_migration(Router(Database(), directory), "v2", v2, **options)
    assert second is not None
    write_sum(directory)
    announced = "\n".join(second.warnings)
    problems = []
    found = lint_problems(directory) if lint_only else check(settings, directory, v2)
    for problem in found:
        rule = _LINT_PROBLEM.match(problem)
        if rule is None or f"lint rule {rule.group(1)}" not in announced:
            problems.append(problem)
    assert problems == [], (problems, second.warnings)


def rows_equal(sql: str, expected: list[tuple[Any, ...]]) -> Callable[[pw.Database], None]:
    """A case's check after a step: ``sql`` returns exactly ``expected``."""
    def after(db: pw.Database) -> None:
        assert rows(db, sql) == expected
    return after


def refused(sql: str) -> Callable[[pw.Database], None]:
    """A case's check after a step: the database refuses ``sql`` (a constraint holds)."""
    def after(db: pw.Database) -> None:
        assert fails_sql(db, sql), f"expected the database to refuse: {sql}"
    return after


def items_with(**fields: Any) -> Callable[[], Models]:
    """The models of a case: ``items`` with ``fields`` added."""
    return lambda: [item(**fields)]
