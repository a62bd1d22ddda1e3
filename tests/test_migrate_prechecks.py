"""Checks before DDL: rows that a pending migration's statements would reject stop ``apply``.

For each case a v1 schema is applied, rows are put in that break the v2
change, and the generated (or hand-written) v2 migration is applied: it must
stop before any statement runs with one line naming the table, the column,
the count and up to 5 primary keys; the schema, the history and the catalog
(no NOT VALID constraint, no INVALID index) stay as they were.  Cases whose
rows are fine, or that fix the rows themselves first, must apply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from playhouse.postgres_ext import PostgresqlExtDatabase

from datalayer.errors import MigrationError
from datalayer.migrate import facts
from datalayer.migrate.autogenerate.api import create_migration
from datalayer.migrate.inspect import compare, snapshot
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime import prechecks
from datalayer.migrate.runtime import statements as st
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.prechecks import PrecheckFailed
from tests.migrate_runtime_support import run_cli, write_migration
from tests.pgserver import Server
from tests.test_migrate_generate import open_db, reset_schema
from tests.test_migrate_safe_forms import category, items

Models = list[type[pw.Model]]


@pytest.fixture(scope="module")
def shared_db(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    with pg.database("dlprecheck") as name:
        database = open_db(pg, name)
        try:
            yield database
        finally:
            database.close()


@pytest.fixture
def db(shared_db: PostgresqlExtDatabase) -> PostgresqlExtDatabase:
    """One database for the module, emptied before each test (creating one costs more)."""
    reset_schema(shared_db)
    return shared_db


@dataclasses.dataclass
class Case:
    id: str
    v1: Callable[[], Models]
    v2: Callable[[], Models] | None  # None: ``hand`` is the v2 migration
    seed: str  # SQL that puts in the rows the change rejects (after 20 good items rows)
    want: tuple[str, ...]  # text the one-line message must contain
    count: int
    hand: str = ""  # a hand-written migrate() body


def _fk(**kw: object) -> Models:
    cat = category()
    return [cat, items(category=pw.ForeignKeyField(cat, column_name="category_id",
                                                   on_delete="CASCADE", **kw))]


FAILING = [
    Case("set_not_null_nulls",
         lambda: [items(note=pw.CharField(max_length=20, null=True))],
         lambda: [items(note=pw.CharField(max_length=20))],
         "UPDATE items SET note = 'x'; UPDATE items SET note = NULL WHERE qty <= 7",
         ("table items have NULL in column note, which SET NOT NULL rejects",), 7),
    Case("unique_index_duplicates",
         lambda: [items(code=pw.CharField(max_length=40, null=True))],
         lambda: [items(code=pw.CharField(max_length=40, null=True, unique=True))],
         "UPDATE items SET code = 'c' || qty; UPDATE items SET code = 'same' WHERE qty <= 3",
         ("share their (code) with another row", "UNIQUE index items_code"), 3),
    Case("unique_constraint_duplicates", lambda: [items()],
         lambda: [items(constraints=[pw.SQL("UNIQUE (name, qty)")])],
         "UPDATE items SET name = 'n', qty = 1 WHERE qty IN (4, 5)",
         ("share their (name, qty) with another row",), 2),
    Case("check_violated", lambda: [items()],
         lambda: [items(qty=pw.IntegerField(default=0, constraints=[pw.Check("qty >= 0")]))],
         "UPDATE items SET qty = -qty WHERE qty <= 2",
         ("violate CHECK (qty >= 0)",), 2),
    Case("foreign_key_orphans",
         lambda: [category(), items(category=pw.UUIDField(column_name="category_id", null=True,
                                                          index=True))],
         lambda: _fk(null=True),
         "UPDATE items SET category_id = gen_random_uuid() WHERE qty <= 6",
         ("have a value in column category_id that categories does not have",), 6),
    Case("hand_written_fk_to_the_parents_key",
         lambda: [category(), items(category=pw.UUIDField(column_name="category_id", null=True))],
         None, "UPDATE items SET category_id = gen_random_uuid() WHERE qty <= 2",
         ("have a value in column category_id that categories does not have",), 2,
         hand='migrator.sql("ALTER TABLE items ADD FOREIGN KEY (category_id) '
              'REFERENCES categories")'),
    Case("varchar_narrowed",
         lambda: [items()], lambda: [items(name=pw.CharField(max_length=5, default="-"))],
         "UPDATE items SET name = 'a-long-name' WHERE qty <= 4",
         ("have a value in column name longer than VARCHAR(5) allows",), 4),
    Case("numeric_scale_narrowed",
         lambda: [items(price=pw.DecimalField(max_digits=10, decimal_places=3, null=True))],
         lambda: [items(price=pw.DecimalField(max_digits=10, decimal_places=2, null=True))],
         "UPDATE items SET price = qty + 0.5; UPDATE items SET price = 1.234 WHERE qty <= 3",
         ("have a value in column price that NUMERIC(10, 2) would round or cannot hold",), 3),
    Case("type_change_does_not_convert", lambda: [items()], None,
         "UPDATE items SET name = qty::text; UPDATE items SET name = 'x' || qty WHERE qty <= 8",
         ("have a value in column name that does not convert to integer",), 8,
         hand='migrator.sql("ALTER TABLE items ALTER COLUMN name DROP DEFAULT, '
              'ALTER COLUMN name TYPE integer USING name::integer")'),
    Case("hand_written_unique_index", lambda: [items()], None,
         "UPDATE items SET name = 'dup' WHERE qty > 10",
         ("share their (lower(name)) with another row",), 10,
         # As people write it (read through PostgreSQL's parser when pglast is installed).
         hand='migrator.sql("create unique index items_lower_name on only items /* by name */ '
              '(lower(name) desc)")'),
]


def _setup(db: PostgresqlExtDatabase, tmp_path: Path, case: Case) -> None:
    create_migration(Router(db, tmp_path), "v1", case.v1())
    write_sum(tmp_path)
    runner.apply(db, tmp_path)
    if "categories" in db.get_tables():
        db.execute_sql("INSERT INTO categories (title) VALUES ('a'), ('b')")
    db.execute_sql("INSERT INTO items (name, qty) SELECT 'r' || g, g FROM generate_series(1, 20) g")
    db.execute_sql(case.seed)
    if case.v2 is not None:
        create_migration(Router(db, tmp_path), "v2", case.v2())
    else:
        write_migration(tmp_path, "002_v2", migrate=case.hand)
    write_sum(tmp_path)


def _leftovers(db: PostgresqlExtDatabase) -> list[tuple[object, ...]]:
    return db.execute_sql(
        "SELECT conname FROM pg_constraint WHERE NOT convalidated UNION ALL "
        "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
    ).fetchall()


@pytest.mark.parametrize("case", FAILING, ids=[c.id for c in FAILING])
def test_rows_the_change_rejects_stop_it_before_any_statement(
    case: Case, db: PostgresqlExtDatabase, tmp_path: Path
) -> None:
    _setup(db, tmp_path, case)
    before = snapshot(db)
    with pytest.raises(PrecheckFailed) as caught:
        runner.apply(db, tmp_path)
    message = str(caught.value)
    print(message)
    assert "\n" not in message
    for needle in case.want:
        assert needle in message, message
    assert caught.value.count == case.count
    assert len(caught.value.keys) == min(5, case.count)
    assert f"{case.count} rows" in message or case.count == 1
    assert "nothing of it ran and it is not recorded" in message
    assert compare(before, snapshot(db)) == []
    assert _leftovers(db) == []
    assert [r[0] for r in db.execute_sql("SELECT name FROM migratehistory")] == ["001_v1"]


PASSING = [
    # The migration fills the NULLs from the default before SET NOT NULL: no false stop.
    Case("nulls_filled_from_default_first",
         lambda: [items(note=pw.CharField(max_length=20, null=True,
                                          constraints=[pw.SQL("DEFAULT 'n'")]))],
         lambda: [items(note=pw.CharField(max_length=20, constraints=[pw.SQL("DEFAULT 'n'")]))],
         "UPDATE items SET note = NULL WHERE qty <= 7", (), 0),
    # Hand-written: the rows are fixed by the migration itself before the constraint.
    Case("rows_fixed_by_the_migration_first", lambda: [items()], None,
         "UPDATE items SET qty = -qty WHERE qty <= 2", (), 0,
         hand='migrator.sql("UPDATE items SET qty = 0 WHERE qty < 0")\n'
              'migrator.sql("ALTER TABLE items ADD CONSTRAINT qty_ok CHECK (qty >= 0)")'),
    # NOT VALID and never validated: PostgreSQL does not check the old rows, nor do we.
    Case("not_valid_never_validated", lambda: [items()], None,
         "UPDATE items SET qty = -qty WHERE qty <= 2", (), 0,
         hand='migrator.sql("ALTER TABLE items ADD CONSTRAINT qty_ok CHECK (qty >= 0) '
              'NOT VALID")'),
    # Rows that are fine: every kind of check runs and finds nothing.
    Case("fine_rows",
         lambda: [items(price=pw.DecimalField(max_digits=10, decimal_places=3, null=True))],
         None, "UPDATE items SET price = qty + 0.5", (), 0,
         hand='migrator.sql("CREATE UNIQUE INDEX items_qty_u ON items (qty)")\n'
              'migrator.sql("ALTER TABLE items ADD CHECK (qty > 0), '
              'ALTER COLUMN name SET NOT NULL, ALTER COLUMN price TYPE numeric(8, 1), '
              'ALTER COLUMN name TYPE varchar(10)")'),
    # A table and an index the migration creates itself: nothing to check beforehand.
    Case("new_table", lambda: [items()], None, "SELECT 1", (), 0,
         hand='migrator.sql("CREATE TABLE t2 (id int PRIMARY KEY, code text)")\n'
              'migrator.sql("CREATE UNIQUE INDEX t2_code ON t2 (code)")\n'
              'migrator.sql("ALTER TABLE t2 ALTER COLUMN code SET NOT NULL")'),
]


@pytest.mark.parametrize("case", PASSING, ids=[c.id for c in PASSING])
def test_rows_that_are_fine_or_fixed_first_do_not_stop_it(
    case: Case, db: PostgresqlExtDatabase, tmp_path: Path
) -> None:
    _setup(db, tmp_path, case)
    assert [a.name for a in runner.apply(db, tmp_path)] == ["002_v2"]


def test_the_cli_prints_one_line_and_exits_1(
    pg: Server, db: PostgresqlExtDatabase, tmp_path: Path
) -> None:
    mdir = tmp_path / "migrations"
    _setup(db, mdir, FAILING[0])
    settings = pg.settings(db.database)
    done = run_cli(settings, mdir, "migrate", "apply")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "7 rows of table items have NULL in column note" in lines[0]
    assert "002_v2.py was not run" in lines[0]
    assert settings.password not in done.stderr or not settings.password


def test_a_row_that_arrives_after_the_check_is_undone_and_named(
    pg: Server, db: PostgresqlExtDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NULL written between the check and the DDL: VALIDATE fails, its NOT VALID goes."""
    case = Case("late_null", lambda: [items(note=pw.CharField(max_length=20, null=True))],
                lambda: [items(note=pw.CharField(max_length=20))], "UPDATE items SET note = 'x'",
                (), 0)
    _setup(db, tmp_path, case)
    text = next(tmp_path.glob("002_*.py")).read_text()
    assert "atomic = False" in text and "online=True" in text
    checked = prechecks.verify

    late: list[str] = []

    def then_a_null(*args: Any, **kwargs: Any) -> None:
        checked(*args, **kwargs)
        if late:
            return  # only once: apply checks again after the failure, to name the rows
        late.append("late")
        conn = pg.raw(db.database)
        with conn.cursor() as cur:  # the old release, still writing NULLs
            cur.execute("INSERT INTO items (name, qty, note) VALUES ('late', 99, NULL)")
        conn.close()

    monkeypatch.setattr(prechecks, "verify", then_a_null)
    with pytest.raises(MigrationError) as caught:
        runner.apply(db, tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert 'check constraint "items_note_not_null_dl" of relation "items" is violated' \
        in message, message
    assert "was undone: dropped the NOT VALID constraint items_note_not_null_dl on items" \
        in message, message
    assert "To go on: 1 row of table items has NULL in column note, which SET NOT NULL " \
        "rejects (item_id " in message, message
    assert "give those rows a value" in message
    assert _leftovers(db) == []
    db.execute_sql("INSERT INTO items (name, qty, note) VALUES ('old', 100, NULL)")  # old code
    assert [r[0] for r in db.execute_sql("SELECT name FROM migratehistory")] == ["001_v1"]
    monkeypatch.setattr(prechecks, "verify", checked)
    with pytest.raises(PrecheckFailed, match="2 rows of table items have NULL in column note"):
        runner.apply(db, tmp_path)
    db.execute_sql("UPDATE items SET note = 'x' WHERE note IS NULL")
    assert [a.name for a in runner.apply(db, tmp_path)] == ["002_v2"]


# -- reading statements and choosing checks, without a database -------------------------


@pytest.mark.parametrize(("sql", "want"), [
    ('CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "items_code" ON "items" ("code")',
     [st.Unique('"items"', ('"code"',), "items_code")]),
    ("CREATE UNIQUE INDEX x ON s.items USING btree (lower(name), qty DESC) INCLUDE (a) "
     "WHERE qty > 0", [st.Unique("s.items", ("lower(name)", "qty"), "x", "qty > 0")]),
    ("ALTER TABLE items ADD CONSTRAINT u UNIQUE NULLS NOT DISTINCT (a, b)",
     [st.Unique("items", ("a", "b"), "u", nulls_distinct=False)]),
    ("ALTER TABLE items ADD CONSTRAINT u UNIQUE USING INDEX u", []),
    ('ALTER TABLE "items" ADD FOREIGN KEY ("c") REFERENCES "cats" ("id") ON DELETE CASCADE '
     "NOT VALID", [st.ForeignKey('"items"', ('"c"',), '"cats"', ('"id"',), not_valid=True)]),
    ("ALTER TABLE items ADD CONSTRAINT c1 CHECK (qty > 0), ALTER COLUMN note SET NOT NULL",
     [st.Check("items", "qty > 0", "c1"), st.NotNull("items", "note")]),
    ("ALTER TABLE items ALTER COLUMN ref TYPE integer USING ref::integer",
     [st.TypeChange("items", "ref", "integer", "ref::integer")]),
    ("ALTER TABLE items ALTER name TYPE varchar(5) COLLATE \"C\"",
     [st.TypeChange("items", "name", "varchar(5)")]),
    ("UPDATE items SET note = 'a;b' WHERE note IS NULL; ALTER TABLE items ALTER note SET NOT NULL",
     [st.Writes("items"), st.NotNull("items", "note")]),
    ("ALTER TABLE items ADD COLUMN level integer DEFAULT 3 NOT NULL",
     [st.AddColumn("items", "level")]),
    ("ALTER TABLE items VALIDATE CONSTRAINT c1", [st.Validate("items", "c1")]),
    ("SELECT my_function()", [st.Opaque("SELECT my_function()")]),
    ("ALTER TABLE items RENAME TO items_old", [st.Writes("items"), st.Writes("items_old")]),
    ("ALTER TABLE s.items RENAME COLUMN a TO b", [st.Writes("s.items")]),
    ("DROP INDEX CONCURRENTLY IF EXISTS x", []),
])
def test_statements_are_read_as_actions(sql: str, want: list[st.Planned]) -> None:
    assert st.read(sql) == want


_NUMERIC_10_2 = (
    "(c::numeric <> round(c::numeric, 2) OR abs(round(c::numeric, 2)) >= 10::numeric ^ 8)"
)


@pytest.mark.parametrize(("typ", "category", "want"), [
    ("VARCHAR(5)", "S", ("length", "char_length(c) > 5")),
    ("character  varying ( 5 )", "S", ("length", "char_length(c) > 5")),
    ("CHAR(3)", "S", ("length", "char_length(c) > 3")),
    ("NUMERIC(10, 2)", "N", ("numeric", _NUMERIC_10_2)),
    ("decimal(10,2)", "N", ("numeric", _NUMERIC_10_2)),
    ("varchar(5)[]", "A", None),  # an array: every value is cast instead
    ("text", "S", None),
    ("integer", "N", None),
    ("VARCHAR(5)", "N", None),  # a number to a string: cast
])
def test_a_narrowing_is_read_from_the_type(
    typ: str, category: str, want: tuple[str, str] | None
) -> None:
    assert prechecks._narrowing(typ, category, "c") == want


def test_a_narrowing_reads_the_type_as_the_generator_and_the_lint_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One reader of type names (facts.parse_type): a spelling it learns, the checks know."""
    assert prechecks._narrowing("NVARCHAR(4)", "S", "c") is None
    monkeypatch.setitem(facts._ALIASES, "nvarchar", "varchar")
    assert facts.parse_type("NVARCHAR(4)") == ("varchar", (4,), False)
    assert prechecks._narrowing("NVARCHAR(4)", "S", "c") == ("length", "char_length(c) > 4")


def test_checks_are_left_to_the_server_when_the_migration_changes_the_rows_first() -> None:
    fill_then = [st.Fill('"items"', "note"), st.NotNull('"items"', "note")]
    update_then = [st.Writes("items"), st.Check('"items"', "qty > 0")]
    python_then = [st.Opaque("fix_rows"), st.Unique("items", ("code",))]
    not_valid = [st.Check("items", "qty > 0", not_valid=True)]
    validated_later = [st.Check("items", "qty > 0", not_valid=True)]
    checks = prechecks.derive({"a": fill_then, "b": update_then, "c": python_then,
                               "d": not_valid, "e": validated_later,
                               "f": [st.Validate('"items"')]})
    assert checks["a"] == checks["b"] == checks["c"] == []
    assert [c.kind for c in checks["d"]] == [c.kind for c in checks["e"]] == ["check"]
    alone = prechecks.derive({"d": not_valid})
    assert alone["d"] == []  # NOT VALID and never validated in this run
    # Checked when added NOT VALID by the first file: the second's VALIDATE needs no scan.
    twice = prechecks.derive({"a": not_valid, "b": [st.Validate("items")]})
    assert [c.kind for c in twice["a"]] == ["check"] and twice["b"] == []
    assert [c.kind for c in prechecks.derive({"b": [st.Validate("items")]})["b"]] == ["validate"]


def test_a_validation_checks_the_not_valid_constraints_in_the_catalog(
    db: PostgresqlExtDatabase, tmp_path: Path
) -> None:
    """The NOT VALID file applied alone (--to) over bad rows; the validating file then stops."""
    _setup(db, tmp_path, FAILING[3])  # check_violated: 002 adds NOT VALID, 003 validates
    names = [p.stem for p in sorted(tmp_path.glob("00*.py"))]
    assert len(names) == 3, names
    assert [a.name for a in runner.apply(db, tmp_path, to=names[1])] == [names[1]]
    with pytest.raises(PrecheckFailed) as caught:
        runner.apply(db, tmp_path)
    assert f"{names[2]}.py was not run: 2 rows of table items violate CHECK ((qty >= 0))" \
        in str(caught.value), caught.value


def test_a_check_that_cannot_run_is_left_to_the_server(
    db: PostgresqlExtDatabase, tmp_path: Path
) -> None:
    """The CHECK divides by a column that is 0 in a row: the check's own query fails."""
    case = Case("division", lambda: [items()], None, "UPDATE items SET qty = 0 WHERE qty = 1",
                (), 0, hand='migrator.sql("ALTER TABLE items ADD CHECK (100 / qty > 0)")')
    _setup(db, tmp_path, case)
    with pytest.raises(MigrationError) as caught:
        runner.apply(db, tmp_path)
    assert not isinstance(caught.value, PrecheckFailed)
    assert "division by zero" in str(caught.value)
    assert "failed and was rolled back, so none of it took effect" in str(caught.value)


def test_through_the_pool_a_table_the_migration_creates_is_left_to_it(
    pg: Server, db: PostgresqlExtDatabase, tmp_path: Path
) -> None:
    """The pooled database says TableMissing for an undefined table: that check is skipped."""
    case = Case("fk_to_a_new_table", lambda: [items(ref=pw.IntegerField(null=True))], None,
                "SELECT 1", (), 0,
                hand='migrator.sql("CREATE TABLE t2 (id int PRIMARY KEY)")\n'
                     'migrator.sql("ALTER TABLE items ADD FOREIGN KEY (ref) REFERENCES t2 (id)")')
    _setup(db, tmp_path, case)
    applied = runner.apply(pg.settings(db.database), tmp_path)
    assert [a.name for a in applied] == ["002_v2"]
