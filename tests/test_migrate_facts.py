"""One place for each fact: the generator's statements and the lint read ``migrate/facts.py``.

Lock levels per kind of statement, the type-change (rewrite) rule and the
volatile functions used to live in two or three places that disagreed
(``_ddl.rewrites_type`` said varbit(5) -> varbit(10) rewrites, the lint said
not; ``_ddl.is_volatile`` called ``lower('X')`` volatile, the lint not).  These
tests ask the generator's side and the lint's side the same questions, and
change a fact in ``facts.py`` to see both answers follow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType
from typing import Any

import peewee as pw
import pglast
import psycopg2
import pytest
from playhouse.postgres_ext import PostgresqlExtDatabase

from datalayer.config import Settings
from datalayer.migrate import facts
from datalayer.migrate.autogenerate import plan
from datalayer.migrate.autogenerate.api import compute_diff, create_migration
from datalayer.migrate.ddl import alter as _ddl
from datalayer.migrate.ddl.spec import ColumnSpec, Sql
from datalayer.migrate.lint import lint_sql
from datalayer.migrate.lint._nodes import volatile
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.offline import MigrationSql
from tests.test_migrate_generate import model


def _lint_last(*statements: str, atomic: bool = True) -> Any:
    """Lint ``statements`` (CREATE TABLE first, in a migration of its own) and return the last."""
    first = MigrationSql("001_base", Path("/nonexistent/001_base.py"), True, statements[:1])
    second = MigrationSql("002_x", Path("/nonexistent/002_x.py"), atomic, statements[1:])
    return lint_sql([first, second]).migrations[1].statements[-1]


TYPE_PAIRS = [
    ("varchar(10)", "varchar(20)"),
    ("varchar(20)", "varchar(10)"),
    ("varchar(10)", "text"),
    ("text", "varchar(10)"),
    ("text", "varchar"),
    ("numeric(10,2)", "numeric(12,2)"),
    ("numeric(10,2)", "numeric(10,4)"),
    ("decimal(10,2)", "numeric"),
    ("varbit(5)", "varbit(10)"),
    ("varbit(10)", "varbit(5)"),
    ("integer", "bigint"),
    ("int", "integer"),
    ("character varying(5)", "varchar(8)"),
    ("int[]", "bigint[]"),
    ("text", "text"),
]


@pytest.mark.parametrize(("old", "new"), TYPE_PAIRS)
def test_generator_and_lint_agree_on_which_type_changes_rewrite(old: str, new: str) -> None:
    generator = _ddl.rewrites_type(Sql(old.upper()), Sql(new.upper()))
    linted = _lint_last(f"CREATE TABLE t (c {old})", f"ALTER TABLE t ALTER COLUMN c TYPE {new}")
    assert linted.rewrites == generator, (old, new)
    assert generator == facts.type_change(facts.parse_type(old), facts.parse_type(new)).rewrites


DEFAULTS = ["0", "'x'", "now()", "lower('X')", "md5('x')", "statement_timestamp()",
            "gen_random_uuid()", "random()", "clock_timestamp()", "public.my_func(1)",
            "upper('a') || random()::text"]


@pytest.mark.parametrize("default", DEFAULTS)
def test_generator_and_lint_agree_on_volatile_defaults(default: str) -> None:
    expr = pglast.parse_sql(f"SELECT {default}")[0].stmt.targetList[0].val
    assert _ddl.is_volatile(Sql(default)) == (volatile(expr) is not None), default


def test_one_lock_table_answers_for_plan_and_lint() -> None:
    for kind, sql, table in [
        ("create_index", "CREATE INDEX t_c ON t (c)", "t"),
        ("create_index_concurrently", "CREATE INDEX CONCURRENTLY t_c ON t (c)", "t"),
        ("add_foreign_key", "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (c) REFERENCES u (id)",
         "t"),
        ("validate_constraint", "ALTER TABLE t VALIDATE CONSTRAINT f", "t"),
        ("set_schema", "ALTER TABLE t SET SCHEMA s", "t"),
    ]:
        effect = facts.EFFECTS[kind]
        described = plan.describe(sql)
        assert described.kind == kind
        assert (described.lock, described.scans, described.rewrites) == (
            effect.lock, effect.scans, effect.rewrites), sql
        linted = _lint_last("CREATE TABLE t (c int, id int)", sql)
        assert linted.locks[table] == effect.lock.sql_name, sql
        assert (linted.scans, linted.rewrites) == (effect.scans, effect.rewrites), sql
        assert linted.blocks == list(described.blocks) == list(effect.lock.blocks)


def test_a_lock_changed_in_facts_changes_the_generator_and_the_lint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    changed = dict(facts.EFFECTS)
    changed["create_index"] = facts.Effect(facts.Lock.ACCESS_EXCLUSIVE, rewrites=True)
    monkeypatch.setattr(facts, "EFFECTS", MappingProxyType(changed))
    described = plan.describe("CREATE INDEX t_c ON t (c)")
    assert (described.lock, described.rewrites) == (facts.Lock.ACCESS_EXCLUSIVE, True)
    linted = _lint_last("CREATE TABLE t (c int)", "CREATE INDEX t_c ON t (c)")
    assert (linted.lock, linted.rewrites) == ("ACCESS EXCLUSIVE", True)


def test_a_volatile_function_changed_in_facts_changes_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expr = pglast.parse_sql("SELECT gen_random_uuid()")[0].stmt.targetList[0].val
    assert _ddl.is_volatile(Sql("gen_random_uuid()")) and volatile(expr)
    monkeypatch.setattr(facts, "NOT_VOLATILE", facts.NOT_VOLATILE | {"gen_random_uuid"})
    assert not _ddl.is_volatile(Sql("gen_random_uuid()"))
    assert volatile(expr) is None


def test_the_type_rule_changed_in_facts_changes_the_generated_plan_and_the_lint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def items(ref: pw.Field) -> list[type[pw.Model]]:
        return [model("Item", "items", id=pw.AutoField(), ref=ref)]

    router = Router(PostgresqlExtDatabase(None), tmp_path)
    create_migration(router, "v1", items(pw.CharField(max_length=10)))
    widen = items(pw.CharField(max_length=20))
    before = compute_diff(router, widen)
    assert before.plan is not None
    assert [s.rewrites for s in before.plan.statements() if " TYPE " in s.sql] == [False]
    sql = ("CREATE TABLE t (c varchar(10))", "ALTER TABLE t ALTER COLUMN c TYPE varchar(20)")
    assert not _lint_last(*sql).rewrites

    rule = facts.type_change

    def always_rewrites(*args: Any, **kwargs: Any) -> facts.TypeChange:
        return dataclasses.replace(rule(*args, **kwargs), kind="alter_type", rewrites=True)

    monkeypatch.setattr(facts, "type_change", always_rewrites)
    after = compute_diff(router, widen)
    assert after.plan is not None
    assert [s.rewrites for s in after.plan.statements() if " TYPE " in s.sql] == [True]
    assert any("rewrites the table" in w for w in after.warnings)
    assert _lint_last(*sql).rewrites


def test_a_collation_change_rebuilds_indexes_without_rewriting_the_table(
    empty_db: Settings,
) -> None:
    """The fact itself, checked on the server: the table's file stays, the index's is new."""
    conn = psycopg2.connect(empty_db.url(masked=False))
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE TABLE coll_t (a text); CREATE INDEX coll_t_a ON coll_t (a);"
                "INSERT INTO coll_t VALUES ('x')")
    files = "SELECT pg_relation_filenode('coll_t'), pg_relation_filenode('coll_t_a')"
    cur.execute(files)
    table_before, index_before = cur.fetchone()
    cur.execute('ALTER TABLE coll_t ALTER COLUMN a TYPE text COLLATE "C"')
    cur.execute(files)
    table_after, index_after = cur.fetchone()
    assert table_after == table_before and index_after != index_before
    change = facts.type_change(facts.parse_type("text"), facts.parse_type("text"),
                               old_collation=None, new_collation='"C"')
    assert (change.rewrites, change.rebuilds_indexes) == (False, True)
    conn.close()
    # The generator and the lint both say so.
    old = ColumnSpec("a", "a", Sql("TEXT"), True, False, None, (), (), None, None, None,
                     Sql('"a" TEXT'), Sql('"a" TEXT'))
    new = dataclasses.replace(old, collation='"C"')
    assert _ddl.type_change(old, new).kind == "alter_collation"
    text = 'ALTER TABLE "t" ALTER COLUMN "a" TYPE TEXT COLLATE "C"'
    assert plan.describe(text, hint="alter_collation").rewrites is False
    linted = _lint_last("CREATE TABLE t (a text)", text)
    assert (linted.rewrites, linted.scans) == (False, True)


@pytest.mark.parametrize("serial", sorted(facts.SERIALS))
def test_the_lock_analysis_and_the_rule_agree_that_adding_a_serial_column_rewrites(
    serial: str,
) -> None:
    """The serial pseudo-types are listed once (facts.SERIALS): ``serial2`` was missing from
    the lock analysis, which called that column's ADD cheap while the rule flagged it."""
    linted = _lint_last("CREATE TABLE t (id int)", f"ALTER TABLE t ADD COLUMN c {serial}")
    assert linted.rewrites, serial
    assert "adding-field-with-default" in [f.rule for f in linted.findings], serial
