"""The generator is compare -> operations -> render (issue 15, item 2).

Its plan is a list of :mod:`datalayer.migrate.operations` values; the files are rendered
from them, and each rendered call, loaded back through the Router, builds an equal
operation with the same statements (forward and rollback, safe and plain forms).
Also: a DROP TABLE ... CASCADE changes and locks the tables whose foreign keys it
drops, and ``migrator.sql`` builds a raw-SQL operation of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from peewee_migrate import Migrator
from playhouse.postgres_ext import PostgresqlExtDatabase

from datalayer.migrate import operations as ops
from datalayer.migrate.autogenerate.api import create_migration
from datalayer.migrate.autogenerate.hints import renamed_from
from datalayer.migrate.autogenerate.outcome import DiffResult
from datalayer.migrate.ddl.spec import table_spec
from datalayer.migrate.operations.migrator import DatalayerMigrator
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.offline import migration_sql
from datalayer.migrate.runtime.recorder import render
from datalayer.models.fields import uuid_pk
from tests.test_migrate_generate import model

Models = list[type[pw.Model]]


def _category() -> type[pw.Model]:
    return model("Category", "categories", id=uuid_pk("category_id"),
                 title=pw.CharField(max_length=50, default="c"))


def _v1() -> Models:
    cat = _category()
    return [cat, model(
        "Item", "items", id=uuid_pk("item_id"),
        name=pw.CharField(max_length=50, default="-"),
        qty=pw.IntegerField(default=0),
        note=pw.TextField(null=True),
        old=pw.CharField(max_length=10, null=True, index=True),
        category=pw.ForeignKeyField(cat, column_name="category_id", null=True),
    )]


def _v2() -> Models:
    cat = _category()
    item = model(
        "Item", "items", id=uuid_pk("item_id"),
        label=renamed_from(pw.CharField(max_length=80, default="-"), "name"),
        qty=pw.BigIntegerField(default=0, index=True, constraints=[pw.Check("qty >= 0")]),
        note=pw.TextField(null=True),
        price=pw.IntegerField(default=1),
        category=pw.ForeignKeyField(cat, column_name="category_id", null=True),
        constraints=[pw.SQL("UNIQUE (label, category_id)")],
    )
    item.add_index(item.index(item._meta.fields["note"], name="items_note"))
    tag = model("Tag", "tags", id=pw.AutoField(), item=pw.ForeignKeyField(
        item, column_name="item_id", on_delete="CASCADE"))
    return [cat, item, tag]


def _loaded_operations(directory: Path, result: DiffResult) -> dict[str, tuple[Any, Any]]:
    """Return, per written file, the operations its migrate() and rollback() build."""
    db = PostgresqlExtDatabase(None)
    router = Router(db, directory)
    migrator: Any = router.migrator_class(db)
    found: dict[str, tuple[Any, Any]] = {}

    def run(fn: Callable[..., Any]) -> list[ops.Operation]:
        migrator.take_operations()
        fn(migrator, db, fake=False)
        migrator.__ops__ = []  # queued, never run
        taken: list[ops.Operation] = migrator.take_operations()
        return taken

    for name in router.todo:
        loaded = router.load(name)
        if name in result.names:
            forward = run(loaded.migrate)
            backward = run(loaded.rollback)
            found[name] = (forward, backward)
        run(loaded.migrate)
    return found


def _specs(op: ops.Operation) -> list[Any]:
    """Return the op's specs, column order aside (a replayed model lists its FKs last)."""
    return [None if spec is None else (spec.name, spec.schema, sorted(spec.columns, key=str),
                                       spec.primary_key, spec.checks, spec.constraints,
                                       spec.indexes)
            for spec in (op.before, op.after)]


def _facts(op: ops.Operation, postgres: int) -> list[tuple[str, Any, bool]]:
    return [(s.sql, s.lock, s.transactional) for s in op.statements(postgres=postgres)]


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
def test_the_plan_is_operations_and_each_rendered_call_builds_an_equal_one(
    tmp_path: Path, unsafe: bool
) -> None:
    router = Router(PostgresqlExtDatabase(None), tmp_path)
    create_migration(router, "v1", _v1(), postgres=15)
    result = create_migration(router, "v2", _v2(), allow_drop=True, postgres=15, unsafe=unsafe)
    assert result is not None and result.plan is not None
    planned = list(result.plan.migrations)
    assert len(planned) == len(result.names) and (len(planned) > 1) is not unsafe
    kinds = set()
    for migration in planned:
        for op in [*migration.operations, *migration.rollback]:
            assert isinstance(op, ops.Operation), type(op)
            assert op.call is not None  # what the file says
            kinds.add(type(op))
    assert {ops.CreateTable, ops.AddColumns, ops.DropColumns, ops.AlterColumns,
            ops.RenameColumn, ops.SetConstraints, ops.DropTable} <= kinds
    loaded = _loaded_operations(tmp_path, result)
    for name, migration in zip(result.names, planned, strict=True):
        forward, backward = loaded[name]
        assert forward == list(migration.operations), name
        assert backward == list(migration.rollback), name
        for mine, theirs in zip([*migration.operations, *migration.rollback],
                                [*forward, *backward], strict=True):
            assert _specs(mine) == _specs(theirs), mine.describe()
            assert _facts(mine, 15) == _facts(theirs, 15), mine.describe()
        # The file's transaction is the operations' fact: atomic only when all can be.
        assert migration.atomic == (
            "atomic = False" not in (tmp_path / f"{name}.py").read_text(encoding="utf-8"))
        if migration.atomic:
            assert all(s.transactional for s in migration.statements())


def _two_tables(migrator: DatalayerMigrator) -> tuple[type[pw.Model], type[pw.Model]]:
    parent = model("Parent", "parents", id=pw.AutoField())
    child = model("Child", "children", id=pw.AutoField(),
                  parent=pw.ForeignKeyField(parent, column_name="parent_id"))
    migrator.create_model(parent)
    migrator.create_model(child)
    migrator.take_operations()
    return parent, child


def test_drop_table_cascade_drops_the_referring_foreign_keys_from_the_state() -> None:
    migrator = DatalayerMigrator(PostgresqlExtDatabase(None))
    parent, child = _two_tables(migrator)
    state = ops.SchemaState([table_spec(parent), table_spec(child)])
    assert state["children"].column("parent_id").fk is not None  # type: ignore[union-attr]
    migrator.remove_model("parents", cascade=True)
    (drop,) = migrator.take_operations()
    assert isinstance(drop, ops.DropTable) and drop.cascade
    after = drop.forward(state)
    assert list(after) == ["children"]
    assert after["children"].column("parent_id").fk is None  # type: ignore[union-attr]
    (statement,) = drop.statements(postgres=15)
    assert statement.sql == 'DROP TABLE "parents" CASCADE'
    assert [t for t, _ in statement.locks] == ['"parents"', '"children"']


def test_drop_table_without_cascade_leaves_the_other_tables() -> None:
    migrator = DatalayerMigrator(PostgresqlExtDatabase(None))
    parent, child = _two_tables(migrator)
    migrator.remove_model("children")
    (drop,) = migrator.take_operations()
    state = ops.SchemaState([table_spec(parent), table_spec(child)])
    assert list(drop.forward(state)) == ["parents"]
    assert [t for t, _ in drop.statements(postgres=15)[0].locks] == ['"children"']


def test_migrator_sql_builds_a_raw_sql_operation_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def upstream(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("migrator.sql went through peewee-migrate's Migrator.sql")

    monkeypatch.setattr(Migrator, "sql", upstream)
    migrator = DatalayerMigrator(PostgresqlExtDatabase(None))
    migrator.sql("UPDATE t SET a = %s WHERE b = %s", 1, "x")
    ((op, recorded, steps),) = migrator.take_recorded()
    assert op == ops.RawSql("", sql_text="UPDATE t SET a = %s WHERE b = %s", params=(1, "x"))
    assert op.params == (1, "x")
    queued: Any
    (queued,) = migrator.__ops__
    assert recorded == (queued,)
    assert steps == (None,)  # hand-written: no step, the lint parses it
    assert queued.fn.__name__ == "sql"
    assert queued.args == ("UPDATE t SET a = %s WHERE b = %s", (1, "x"))


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
def test_migrate_sql_of_the_written_files_is_the_plans_statements(
    tmp_path: Path, unsafe: bool
) -> None:
    """What ``migrate sql`` prints for the files is the plan's list, forward and rollback."""
    router = Router(PostgresqlExtDatabase(None), tmp_path)
    create_migration(router, "v1", _v1(), postgres=15)
    result = create_migration(router, "v2", _v2(), allow_drop=True, postgres=15, unsafe=unsafe)
    assert result is not None and result.plan is not None

    def shown(statements: Any) -> tuple[str, ...]:
        return tuple(render(s.sql, s.params).rstrip().rstrip(";") + ";" for s in statements)

    for name, migration in zip(result.names, result.plan.migrations, strict=True):
        (forward,) = migration_sql(tmp_path, [name], postgres=15)
        (backward,) = migration_sql(tmp_path, [name], True, postgres=15)
        assert forward.statements == shown(migration.statements()), name
        assert backward.statements == shown(migration.statements(rollback=True)), name
        assert forward.atomic == migration.atomic


def _tables(state: Any) -> dict[str, Any]:
    """Return each table's spec, column order aside, by name."""
    return {name: (spec.schema, sorted(spec.columns, key=str), spec.primary_key,
                   sorted(map(str, spec.checks)), sorted(map(str, spec.constraints)),
                   sorted(spec.indexes, key=str))
            for name, spec in state.items()}


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
def test_the_plans_operations_fold_to_the_models_and_their_rollbacks_back(
    tmp_path: Path, unsafe: bool
) -> None:
    """The plan as data: its state changes alone take v1's schema to v2's, and back."""
    router = Router(PostgresqlExtDatabase(None), tmp_path)
    first = create_migration(router, "v1", _v1(), postgres=15)
    result = create_migration(router, "v2", _v2(), allow_drop=True, postgres=15, unsafe=unsafe)
    assert first is not None and first.plan is not None
    assert result is not None and result.plan is not None
    v1 = ops.fold(first.plan.operations())
    assert _tables(v1) == _tables(ops.SchemaState(table_spec(m) for m in _v1()))
    v2 = ops.fold(result.plan.operations(), v1)
    assert _tables(v2) == _tables(ops.SchemaState(table_spec(m) for m in _v2()))
    back = v2
    for migration in reversed(result.plan.migrations):
        back = ops.fold(migration.rollback, back)
    assert _tables(back) == _tables(v1)
