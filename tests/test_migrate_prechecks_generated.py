"""Checks before DDL of generated statements come from what the planner says they do.

A generated statement carries its actions (:meth:`~datalayer.migrate.ddl.spec.Sql.doing`):
its text is not read back.  Reading it back went wrong where the text is PL/pgSQL
around an ALTER (a key's type change that carries the foreign keys to it, the
probe that finds an unnamed CHECK to drop) or holds words the reader takes for
statements (a CHECK listing 'INSERT', 'UPDATE', 'DELETE'). Each case runs on
real rows: the check names the offending rows before anything runs, or a
migration whose rows are fine applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import peewee as pw
import pytest
from playhouse.postgres_ext import PostgresqlExtDatabase

from datalayer.migrate.autogenerate.api import create_migration
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime import statements as st
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.prechecks import PrecheckFailed
from tests.pgserver import Server
from tests.test_migrate_generate import model, open_db, reset_schema
from tests.test_migrate_safe_forms import items

Models = list[type[pw.Model]]


@pytest.fixture(scope="module")
def shared_db(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    with pg.database("dlprecheckgen") as name:
        database = open_db(pg, name)
        try:
            yield database
        finally:
            database.close()


@pytest.fixture
def db(shared_db: PostgresqlExtDatabase) -> PostgresqlExtDatabase:
    """One database for the module, emptied before each test."""
    reset_schema(shared_db)
    return shared_db


def _parents(length: int) -> Models:
    parent = model("Parent", "parents", code=pw.CharField(primary_key=True, max_length=length))
    return [parent, items(parent=pw.ForeignKeyField(parent, column_name="parent_code",
                                                    null=True))]


def _audit(values: str, note_null: bool) -> Models:
    return [items(
        op=pw.CharField(max_length=10, null=True,
                        constraints=[pw.Check(f"op IN ({values})")]),
        note=pw.CharField(max_length=20, null=note_null),
    )]


def _generate(db: PostgresqlExtDatabase, tmp_path: Path, v1: Callable[[], Models],
              v2: Callable[[], Models], seed: str, *, unsafe: bool = False) -> None:
    create_migration(Router(db, tmp_path), "v1", v1())
    write_sum(tmp_path)
    runner.apply(db, tmp_path)
    db.execute_sql("INSERT INTO items (name, qty) SELECT 'r' || g, g FROM generate_series(1, 20) g")
    db.execute_sql(seed)
    create_migration(Router(db, tmp_path), "v2", v2(), unsafe=unsafe)
    write_sum(tmp_path)


def _stops(db: PostgresqlExtDatabase, tmp_path: Path) -> PrecheckFailed:
    """Apply: a file is stopped by its checks; nothing of it ran (the safe form's earlier
    files, which run first, may have)."""
    with pytest.raises(PrecheckFailed) as caught:
        runner.apply(db, tmp_path)
    stopped = str(caught.value).split(".py was not run:", 1)[0].rsplit("/", 1)[-1]
    recorded = [r[0] for r in db.execute_sql("SELECT name FROM migratehistory ORDER BY id")]
    assert recorded[0] == "001_v1" and stopped.startswith("00") and stopped not in recorded
    return caught.value


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "plain"])
def test_a_referenced_key_narrowed_names_the_key_rows_too_long(
    db: PostgresqlExtDatabase, tmp_path: Path, unsafe: bool
) -> None:
    """The key's change runs in a DO block that carries the foreign keys to it.

    Read back from its text, the DO block was a type change to a chunk of PL/pgSQL:
    the check's query failed to parse and was skipped, and the migration failed on
    the server ("value too long") instead of naming the row no child refers to.
    """
    _generate(db, tmp_path, lambda: _parents(64), lambda: _parents(36),
              "INSERT INTO parents (code) VALUES ('short'), (repeat('k', 40));"
              "UPDATE items SET parent_code = 'short' WHERE qty <= 3", unsafe=unsafe)
    failed = _stops(db, tmp_path)
    assert failed.table == "parents" and failed.columns == "code", failed
    assert failed.count == 1 and failed.keys == ("k" * 40,), failed
    assert "1 row of table parents has a value in column code longer than VARCHAR(36)" \
        in str(failed), failed


def test_a_referenced_key_whose_values_fit_applies(
    db: PostgresqlExtDatabase, tmp_path: Path
) -> None:
    _generate(db, tmp_path, lambda: _parents(64), lambda: _parents(36),
              "INSERT INTO parents (code) VALUES ('short'), (repeat('k', 36));"
              "UPDATE items SET parent_code = repeat('k', 36) WHERE qty <= 3")
    names = [a.name for a in runner.apply(db, tmp_path)]
    assert names and all("_v2" in n for n in names), names
    assert db.execute_sql("SELECT count(*) FROM items WHERE parent_code IS NOT NULL"
                          ).fetchone() == (3,)


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "plain"])
def test_a_dropped_check_listing_sql_words_leaves_the_next_checks_in_place(
    db: PostgresqlExtDatabase, tmp_path: Path, unsafe: bool
) -> None:
    """The CHECK dropped lists 'INSERT', 'UPDATE', 'DELETE' (an audit log's operations).

    Read back from its text, the DO block that drops it looked like a write to the
    table (its words), which left every later check of the file to the server: SET
    NOT NULL then failed on the server instead of naming the rows.
    """
    old, new = "'INSERT', 'UPDATE', 'DELETE'", "'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'"
    _generate(db, tmp_path, lambda: _audit(old, True), lambda: _audit(new, False),
              "UPDATE items SET note = 'x'; UPDATE items SET note = NULL WHERE qty <= 3",
              unsafe=unsafe)
    failed = _stops(db, tmp_path)
    assert failed.table == "items" and failed.columns == "note" and failed.count == 3, failed
    assert "have NULL in column note, which SET NOT NULL rejects" in str(failed), failed


def test_a_dropped_check_is_not_checked(db: PostgresqlExtDatabase, tmp_path: Path) -> None:
    """Rows the old, NOT VALID CHECK never held for do not stop the migration that drops it.

    Read back from its text, the probe that finds the unnamed CHECK to drop was a
    NOT VALID CHECK on the old expression, checked because the same run validates the
    table (the new CHECK, safe form): the migration was stopped for a rule it removes.
    """
    def checked(rule: str) -> Callable[[], Models]:
        return lambda: [items(qty=pw.IntegerField(default=0, constraints=[pw.Check(rule)]))]

    # The old CHECK held for new rows only (added NOT VALID by hand over old rows).
    _generate(db, tmp_path, checked("qty > 0"), checked("qty > -100"),
              "ALTER TABLE items DROP CONSTRAINT items_qty_check;"
              "UPDATE items SET qty = -qty WHERE qty <= 2;"
              "ALTER TABLE items ADD CONSTRAINT items_qty_check CHECK (qty > 0) NOT VALID")
    names = [a.name for a in runner.apply(db, tmp_path)]
    assert names and all("_v2" in n for n in names), names
    assert db.execute_sql("SELECT count(*) FROM pg_constraint WHERE conrelid = 'items'::regclass "
                          "AND contype = 'c' AND convalidated").fetchone() == (1,)


def test_generated_statements_are_not_read_back(tmp_path: Path) -> None:
    """What the checks see of the key's type change and of a CHECK's drop: no PL/pgSQL."""
    from datalayer.db import Database

    create_migration(Router(Database(), tmp_path), "v1", _parents(64))
    create_migration(Router(Database(), tmp_path), "v2", _parents(36), unsafe=True)
    names = sorted(p.stem for p in tmp_path.glob("0*.py"))
    plan = st.planned(Router(Database(), tmp_path), names[:1], names[1:])
    assert plan[names[1]] == [
        st.TypeChange('"parents"', "code", "VARCHAR(36)"),
        st.TypeChange('"items"', "parent_code", "VARCHAR(36)"),
    ]


# Statements whose text is SQL the model wrote (a Check(...)), or that carry a parameter
# in a model's partial unique index: read as written, as hand-written SQL is.
_MODEL_TEXT = ("add_check", "add_check_not_valid")


def test_every_generated_statement_says_what_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over every generator case history (both forms), no ddl statement is read back."""
    import dataclasses

    from datalayer.db import Database
    from datalayer.migrate.ddl.spec import Sql
    from datalayer.migrate.ddl.steps import Online
    from tests import test_migrate_generate_cases as g
    from tests import test_migrate_more_cases as m
    from tests._migrate_cases import both_forms

    read_back: list[str] = []
    real = st._texts

    def spy(op: object, step: object, recorder: object) -> list[st.Planned] | None:
        sql = step.sql if isinstance(step, Online) else step
        if isinstance(sql, Sql) and sql.does is None and sql.kind not in _MODEL_TEXT and not (
            sql.kind.startswith("create_index") and sql.params
        ):
            read_back.append(f"{sql.kind}: {sql.text[:80]}")
        return real(op, step, recorder)

    monkeypatch.setattr(st, "_texts", spy)
    cases = [*g.CASES, *g.MORE, *g.ITEM6_CASES, *both_forms(*m.CASES)]
    cases += [dataclasses.replace(c, unsafe=True) for c in cases if not c.unsafe]
    seen = 0
    for n, case in enumerate(cases):
        d = tmp_path / str(n)
        d.mkdir()
        try:
            create_migration(Router(Database(), d), "v1", case.v1())
            create_migration(Router(Database(), d), "v2", case.v2(), allow_drop=case.allow_drop,
                             unsafe=case.unsafe)
        except Exception:  # a refusal: nothing written to read
            continue
        names = sorted(p.stem for p in d.glob("*.py"))
        st.planned(Router(Database(), d), names[:1], names[1:], postgres=15)
        seen += 1
    assert seen > 100
    assert read_back == []
