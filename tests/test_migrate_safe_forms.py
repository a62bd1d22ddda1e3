"""The online (safe) forms the generator writes for existing tables, applied under write load.

For each change kind: migration 1 builds the v1 tables, rows are inserted,
migration 2 (generated for v2, one or more files) is applied by
``datalayer.migrate.apply`` while a writer thread keeps inserting and
updating rows with a short ``lock_timeout``; the writer must see no error,
the schema must equal ``create_tables()`` of v2, and rolling back must
restore the v1 schema.  The plan's statements are checked too: none that
reads the whole table holds a lock that stops writes.

Some cases scan slowly on purpose (an expression calling
``slow.dl_slow()``, 1 ms per row, or a Python default that sleeps), so that
the plain form holds its lock for seconds: ``--unsafe`` (the plain forms)
makes the same writer fail there, which shows that the check can fail.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import psycopg2
import pytest
from playhouse.postgres_ext import PostgresqlExtDatabase

from datalayer.db import Database
from datalayer.errors import GenerationError
from datalayer.migrate.autogenerate.api import compute_diff, create_migration
from datalayer.migrate.autogenerate.outcome import DiffResult
from datalayer.migrate.autogenerate.plan import Lock
from datalayer.migrate.inspect import compare, snapshot
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.rollback import rollback as migration_rollback
from datalayer.models.fields import uuid_pk
from tests.pgserver import Server
from tests.test_migrate_generate import declared, model, open_db

Models = list[type[pw.Model]]
ROWS = 3000  # with 1 ms per row, a slow scan holds its lock for 3 s or more
WRITER_LOCK_TIMEOUT = "1s"

SLOW_FUNCTION = """
CREATE SCHEMA IF NOT EXISTS slow;
CREATE OR REPLACE FUNCTION slow.dl_slow(x integer) RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM pg_sleep(0.001); RETURN x; END $$;
"""


def slow_token() -> uuid.UUID:
    """A Python default that takes a millisecond (the backfill's plain form then locks 3 s)."""
    time.sleep(0.001)
    return uuid.uuid4()


def category() -> type[pw.Model]:
    return model("Category", "categories", id=uuid_pk("category_id"),
                 title=pw.CharField(max_length=50, default="c"))


def items(*, indexes: Any = (), constraints: Any = (), **extra: Any) -> type[pw.Model]:
    fields: dict[str, Any] = {
        "id": uuid_pk("item_id"),
        "name": pw.CharField(max_length=50, default="-"),
        "qty": pw.IntegerField(default=0),
    }
    fields.update(extra)
    return model("Item", "items", indexes=indexes, constraints=constraints, **fields)


def with_slow_index() -> Models:
    m = items()
    m.add_index(m.index(pw.SQL("slow.dl_slow(qty)"), name="items_slow_qty"))
    return [m]


def fk(**kw: Any) -> Callable[[], Models]:
    def build() -> Models:
        cat = category()
        return [cat, items(category=pw.ForeignKeyField(cat, column_name="category_id",
                                                       on_delete="CASCADE", **kw))]
    return build


@dataclasses.dataclass
class Case:
    id: str
    v1: Callable[[], Models]
    v2: Callable[[], Models]
    slow: bool = False  # the plain form holds its lock for seconds
    inserts: bool = True  # the writer inserts rows (else it only updates)
    seed: str = ""  # after the items rows
    want: tuple[str, ...] = ()  # text the migration files must contain


CASES = [
    Case("index_concurrently", lambda: [items()], with_slow_index, slow=True,
         want=("online=True", "atomic = False")),
    Case("index_field_flag", lambda: [items()],
         lambda: [items(qty=pw.IntegerField(default=0, index=True))], want=("online=True",)),
    Case("index_drop_concurrently",
         lambda: [items(qty=pw.IntegerField(default=0, index=True))], lambda: [items()],
         want=("online=True",)),
    Case("unique_index", lambda: [items(code=pw.CharField(max_length=40, null=True))],
         lambda: [items(code=pw.CharField(max_length=40, null=True, unique=True))]),
    Case("fk_new_column", lambda: [category(), items()], fk(null=True)),
    Case("fk_existing_column",
         lambda: [category(), items(category=pw.UUIDField(column_name="category_id", null=True,
                                                          index=True))],
         fk(null=True), seed="UPDATE items SET category_id = (SELECT category_id FROM "
                             "categories LIMIT 1) WHERE mod(qty, 2) = 0"),
    Case("check_not_valid_then_validate", lambda: [items()],
         lambda: [items(qty=pw.IntegerField(default=0, constraints=[
             pw.Check("slow.dl_slow(qty) >= 0")]))], slow=True, want=("validate_constraints",)),
    Case("set_not_null_through_check",
         lambda: [items(note=pw.CharField(max_length=20, null=True,
                                          constraints=[pw.SQL("DEFAULT 'n'")]))],
         lambda: [items(note=pw.CharField(max_length=20, constraints=[pw.SQL("DEFAULT 'n'")]))],
         seed="UPDATE items SET note = NULL WHERE mod(qty, 3) = 0"),
    Case("unique_constraint_using_index", lambda: [items()],
         lambda: [items(constraints=[pw.SQL("UNIQUE (name, qty)")])]),
    Case("backfill_callable_in_batches", lambda: [items()],
         lambda: [items(token=pw.UUIDField(default=slow_token))], slow=True, inserts=False,
         want=("m.ref('tests.test_migrate_safe_forms', 'slow_token')",)),
    Case("volatile_server_default", lambda: [items()],
         lambda: [items(code=pw.UUIDField(null=True,
                                          constraints=[pw.SQL("DEFAULT gen_random_uuid()")]))],
         want=("m.backfill('items', 'code')",)),
    Case("varchar_widened_in_place", lambda: [items()],
         lambda: [items(name=pw.CharField(max_length=200, default="-"))]),
    Case("constant_default_not_null_without_fill", lambda: [items()],
         lambda: [items(level=pw.IntegerField(default=3))], inserts=False),
]


# -- the harness ---------------------------------------------------------------------


class Writer(threading.Thread):
    """Insert and update rows of ``items`` until stopped; collect every error."""

    def __init__(self, pg: Server, dbname: str, ids: list[str], *, inserts: bool) -> None:
        super().__init__(daemon=True)
        self.conn = pg.raw(dbname)
        self.ids = ids
        self.inserts = inserts
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.writes = 0

    def run(self) -> None:
        rng = random.Random(7)
        cur = self.conn.cursor()
        cur.execute(f"SET lock_timeout = '{WRITER_LOCK_TIMEOUT}'")
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                try:
                    if self.inserts and n % 2:
                        cur.execute("INSERT INTO items (name, qty) VALUES (%s, %s)",
                                    (f"w{n}", n))
                    else:
                        cur.execute("UPDATE items SET qty = qty + 1 WHERE item_id = %s",
                                    (rng.choice(self.ids),))
                    self.writes += 1
                except psycopg2.Error as exc:
                    self.errors.append(f"{exc.pgcode}: {str(exc).splitlines()[0]}")
                time.sleep(0.002)
        finally:
            self.conn.close()


@pytest.fixture
def online_db(pg: Server) -> Iterator[tuple[str, PostgresqlExtDatabase]]:
    with pg.database("dlonline") as name:
        db = open_db(pg, name)
        db.execute_sql(SLOW_FUNCTION)
        try:
            yield name, db
        finally:
            db.close()


@pytest.fixture(scope="module")
def ref(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    with pg.database("dlonref") as name:
        db = open_db(pg, name)
        db.execute_sql(SLOW_FUNCTION)
        try:
            yield db
        finally:
            db.close()


def _files(result: DiffResult) -> str:
    return "\n".join(p.read_text() for p in result.paths)


def _unsafe_statements(result: DiffResult) -> list[str]:
    """Return the statements that scan the table while holding a lock that stops writes."""
    assert result.plan is not None
    bad = []
    for st in result.plan.statements():
        if st.scans and "writes" in st.blocks:
            bad.append(st.sql.splitlines()[0])
        if st.sql.startswith("DROP INDEX") and st.transactional:
            bad.append(st.sql)
    return bad


def _run(pg: Server, name: str, db: PostgresqlExtDatabase, ref: PostgresqlExtDatabase,
         tmp_path: Path, case: Case, *, unsafe: bool = False) -> tuple[DiffResult, Writer]:
    router = Router(db, tmp_path)
    assert create_migration(router, "v1", case.v1()) is not None
    write_sum(tmp_path)
    runner.apply(db, tmp_path)
    db.execute_sql(
        "INSERT INTO categories (title) SELECT 't' || g FROM generate_series(1, 5) g"
        if "categories" in db.get_tables() else "SELECT 1"
    )
    db.execute_sql(
        f"INSERT INTO items (name, qty) SELECT 'r' || g, g FROM generate_series(1, {ROWS}) g"
    )
    if case.seed:
        db.execute_sql(case.seed)
    before = snapshot(db)
    ids = [str(r[0]) for r in db.execute_sql("SELECT item_id FROM items").fetchall()]

    result = create_migration(Router(db, tmp_path), "v2", case.v2(), unsafe=unsafe,
                              allow_drop=True)
    assert result is not None
    write_sum(tmp_path)
    writer = Writer(pg, name, ids, inserts=case.inserts)
    writer.start()
    try:
        time.sleep(0.1)
        runner.apply(db, tmp_path)
        time.sleep(0.1)
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.writes > 0
    if unsafe:
        return result, writer

    db.execute_sql("DELETE FROM items WHERE name LIKE 'w%%'")  # rows the writer added
    assert compare(declared(ref, case.v2()), snapshot(db)) == []
    assert compute_diff(Router(db, tmp_path), case.v2()).files == (), "a second diff is empty"
    migration_rollback(db, tmp_path, steps=len(result.names))
    assert compare(before, snapshot(db)) == [], "rollback must restore the v1 schema"
    return result, writer


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_online_form_under_writes(
    case: Case, pg: Server, online_db: tuple[str, PostgresqlExtDatabase],
    ref: PostgresqlExtDatabase, tmp_path: Path,
) -> None:
    name, db = online_db
    result, writer = _run(pg, name, db, ref, tmp_path, case)
    assert writer.errors == [], writer.errors[:5]
    assert _unsafe_statements(result) == []
    text = _files(result)
    for needle in case.want:
        assert needle in text, needle
    for path in result.paths[1:]:
        assert "atomic = False" in path.read_text(), path.name


@pytest.mark.parametrize("case", [c for c in CASES if c.slow], ids=[c.id for c in CASES if c.slow])
def test_unsafe_writes_the_plain_forms_which_block_writers(
    case: Case, pg: Server, online_db: tuple[str, PostgresqlExtDatabase],
    ref: PostgresqlExtDatabase, tmp_path: Path,
) -> None:
    """The same change with unsafe=True: one transactional file, and the writer times out."""
    name, db = online_db
    result, writer = _run(pg, name, db, ref, tmp_path, case, unsafe=True)
    assert len(result.paths) == 1
    text = _files(result)
    assert "atomic = False" not in text and "online=True" not in text
    assert _unsafe_statements(result) != []
    assert any(e.startswith("55P03") for e in writer.errors), writer.errors[:5]


def test_rewriting_type_change_warns_with_the_recipe(tmp_path: Path, pg: Server) -> None:
    db = PostgresqlExtDatabase(None)
    router = Router(db, tmp_path)
    create_migration(router, "v1", [items(ref=pw.CharField(max_length=10))])
    diff = compute_diff(router, [items(ref=pw.IntegerField())])
    assert any("rewrites the table" in w and "expand/contract" in w for w in diff.warnings)
    assert diff.plan is not None
    types = [s for s in diff.plan.statements() if " TYPE " in s.sql]
    assert types and all(s.rewrites and s.lock is Lock.ACCESS_EXCLUSIVE for s in types)
    widened = compute_diff(router, [items(ref=pw.CharField(max_length=20))])
    # The widening itself rewrites nothing; its rollback narrows back, which does, and
    # diff says so (issue 15: a rollback is linted like forward SQL, and diff announces
    # the changing-column-type it will meet), in a warning of its own.
    assert not [w for w in widened.warnings if "rewrites" in w and "its rollback" not in w]
    assert [w for w in widened.warnings if "its rollback" in w and "rewrites" in w]
    assert widened.plan is not None
    assert [s.rewrites for s in widened.plan.statements() if " TYPE " in s.sql] == [False]


def test_a_new_table_gets_the_plain_forms_in_one_transaction(tmp_path: Path) -> None:
    db = PostgresqlExtDatabase(None)
    router = Router(db, tmp_path)
    result = create_migration(router, "v1", fk(null=True)())
    assert result is not None and len(result.paths) == 1
    text = _files(result)
    assert "online=True" not in text and "atomic = False" not in text


def test_target_version_below_12_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GenerationError, match="PostgreSQL version 11 is not supported"):
        compute_diff(Router(PostgresqlExtDatabase(None), tmp_path), [items()], postgres=11)


RERUN = ["set_not_null_through_check", "unique_constraint_using_index", "fk_new_column",
         "volatile_server_default", "index_field_flag", "check_not_valid_then_validate"]
_DDL = ("ALTER", "CREATE", "DROP", "DO", "UPDATE")


@pytest.mark.parametrize("case", [c for c in CASES if c.id in RERUN],
                         ids=[c.id for c in CASES if c.id in RERUN])
def test_interrupted_migration_runs_again(
    case: Case, online_db: tuple[str, PostgresqlExtDatabase], ref: PostgresqlExtDatabase,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed before its k-th statement, for every k, the migration applies on the next run.

    An ``atomic = False`` file keeps the statements before the kill, so each of
    its statements must cope with a half-done state (and with being run twice).
    """
    _, db = online_db
    router = Router(db, tmp_path)
    create_migration(router, "v1", case.v1())
    write_sum(tmp_path)
    runner.apply(db, tmp_path)
    if "categories" in db.get_tables():
        db.execute_sql("INSERT INTO categories (title) VALUES ('a'), ('b')")
    db.execute_sql("INSERT INTO items (name, qty) SELECT 'r' || g, g FROM generate_series(1, 50) g")
    if case.seed:
        db.execute_sql(case.seed)
    before = snapshot(db)
    result = create_migration(Router(db, tmp_path), "v2", case.v2())
    assert result is not None
    write_sum(tmp_path)
    want = declared(ref, case.v2())

    real = db.execute_sql
    for k in range(1, 100):
        count = 0

        def flaky(sql: str, params: Any = None, *args: Any, k: int = k, **kwargs: Any) -> Any:
            nonlocal count
            if sql.lstrip().upper().startswith(_DDL):
                count += 1
                if count == k:
                    raise psycopg2.OperationalError("simulated kill of the migration")
            return real(sql, params, *args, **kwargs)

        monkeypatch.setattr(db, "execute_sql", flaky)
        try:
            runner.apply(db, tmp_path)
            interrupted = False
        except Exception as exc:
            assert "simulated kill" in str(exc)
            interrupted = True
        monkeypatch.setattr(db, "execute_sql", real)
        runner.apply(db, tmp_path)  # the next run: must finish the job
        assert compare(want, snapshot(db)) == [], f"killed before statement {k}"
        migration_rollback(db, tmp_path, steps=len(result.names))
        assert compare(before, snapshot(db)) == [], f"rollback after a kill before {k}"
        if not interrupted:
            break
    assert k > 2, "the migration ran fewer statements than expected"


def test_a_field_named_online_is_a_field(
    online_db: tuple[str, PostgresqlExtDatabase], ref: PostgresqlExtDatabase, tmp_path: Path,
) -> None:
    _, db = online_db
    router = Router(db, tmp_path)
    create_migration(router, "v1", [items()])
    v2 = [items(online=pw.BooleanField(default=False, index=True))]
    result = create_migration(router, "v2", v2)
    assert result is not None
    write_sum(tmp_path)
    db.execute_sql("SELECT 1")
    runner.apply(db, tmp_path)
    assert compare(declared(ref, v2), snapshot(db)) == []


@pytest.mark.parametrize("unsafe", [False, True])
def test_cli_diff_writes_online_files_or_with_unsafe_the_plain_forms(
    unsafe: bool, tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from datalayer.cli import main
    from datalayer.migrate.autogenerate import compare as generate

    mdir = tmp_path / "migrations"
    models: list[Models] = [[items()]]
    monkeypatch.setattr(generate, "_default_models", lambda: models[0])
    from datalayer.cli import CliContext

    monkeypatch.setattr(CliContext, "models", lambda self: models[0])
    cli = CliRunner()
    first = cli.invoke(main, ["migrate", "--dir", str(mdir), "diff", "v1"])
    assert first.exit_code == 0, first.output
    models[0] = [items(qty=pw.IntegerField(default=0, index=True), code=pw.UUIDField(
        null=True, constraints=[pw.SQL("DEFAULT gen_random_uuid()")]))]
    args = ["migrate", "--dir", str(mdir), "diff", "v2", *(["--unsafe"] if unsafe else [])]
    done = cli.invoke(main, [*args, "--postgres", "15"])
    assert done.exit_code == 0, done.output
    if unsafe:
        assert "wrote" in done.output and "(no transaction)" not in done.output
        assert sorted(p.name for p in mdir.glob("0*.py")) == ["001_v1.py", "002_v2.py"]
        text = (mdir / "002_v2.py").read_text()
        assert "online=True" not in text and "atomic = False" not in text
    else:
        assert "003_v2_2.py (no transaction)" in done.output, done.output
        assert "atomic = False" in (mdir / "003_v2_2.py").read_text()
    bad = cli.invoke(main, ["migrate", "--dir", str(mdir), "diff", "v3", "--postgres", "11"])
    assert bad.exit_code == 2 and "from 13 to 99" in bad.output
    assert "Traceback" not in bad.output


def test_read_migrations_reports_the_statements_of_the_files(tmp_path: Path) -> None:
    """What lint and sql read: generated files give the plan's statements; raw SQL is parsed."""
    from datalayer.migrate.autogenerate.plan import read_migrations

    db = PostgresqlExtDatabase(None)
    router = Router(db, tmp_path)
    create_migration(router, "v1", [items()])
    result = create_migration(router, "v2", [items(qty=pw.IntegerField(default=0, index=True),
                                                   constraints=[pw.Check("qty >= 0")])])
    assert result is not None and result.plan is not None and len(result.names) == 2
    (tmp_path / "004_by_hand.py").write_text(
        "def migrate(migrator, database, *, fake=False):\n"
        "    migrator.sql('CREATE INDEX items_name ON items (name)')\n"
        "    migrator.add_index('items', 'name', unique=True)\n\n"
        "def rollback(migrator, database, *, fake=False):\n"
        "    migrator.sql('DROP INDEX items_name')\n"
    )
    found = read_migrations(Router(db, tmp_path))
    assert [m.name for m in found] == ["001_v1", *result.names, "004_by_hand"]
    for planned, read in zip(result.plan.migrations, found[1:3], strict=True):
        assert read.atomic == planned.atomic
        assert [s.sql for s in read.statements] == [s.sql for s in planned.statements()]
        assert [s.sql for s in read.rollback] == [
            s.sql for s in planned.statements(rollback=True)]
    hand = found[3]
    assert hand.statements[0].lock is Lock.SHARE and hand.statements[0].scans
    assert hand.statements[0].transactional
    assert any("UNIQUE INDEX" in s.sql for s in hand.statements[1:])
    assert hand.rollback[0].lock is Lock.ACCESS_EXCLUSIVE
    only = read_migrations(Router(db, tmp_path), [result.names[1]])
    assert [m.name for m in only] == [result.names[1]] and not only[0].atomic
    assert all(not s.transactional for s in only[0].statements if "CONCURRENTLY" in s.sql)


# -- what datalayer writes passes its own lint and squawk's -----------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_generated_safe_forms_pass_lint_and_squawk(case: Case, tmp_path: Path) -> None:
    from datalayer.migrate.lint import lint
    from datalayer.migrate.runtime.offline import migration_sql, render
    from tests.test_migrate_lint import SQUAWK, squawk_rules

    directory = tmp_path / "m"
    assert create_migration(Router(Database(), directory), "v1", case.v1()) is not None
    assert create_migration(Router(Database(), directory), "v2", case.v2()) is not None
    report = lint(directory, postgres=12)
    assert report.errors == [], [f.message for _, f in report.errors]
    if SQUAWK is None:
        return
    for m in migration_sql(directory)[1:]:  # the first file creates the tables
        text = render([m])
        found = squawk_rules(text, in_transaction=m.atomic, tmp_path=tmp_path)
        found -= {"prefer-text-field"}  # a style rule, not a lock
        if "_not_null_dl" in text and "VALIDATE CONSTRAINT" in text:
            # squawk does not track the validated CHECK (col IS NOT NULL) that lets
            # PostgreSQL 12+ skip SET NOT NULL's scan, nor that the CHECK dropped after
            # is the recipe's own temporary one.
            found -= {"adding-not-nullable-field", "ban-drop-constraint"}
        if case.id == "constant_default_not_null_without_fill":
            # The default is only there to fill existing rows without touching them
            # (PostgreSQL 11+ stores it in the catalog); the model has none, so it is
            # dropped after, as Django does. squawk flags any DROP DEFAULT, and INTEGER
            # is what the model's IntegerField asks for.
            found -= {"ban-drop-default", "prefer-bigint-over-int"}
        if case.id == "varchar_widened_in_place":
            found -= {"changing-column-type"}  # binary-coercible: squawk flags every change
        assert found == set(), (m.name, found, text)
