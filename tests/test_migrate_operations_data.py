"""Operations as data (issue 15, item 1): each operation knows its state change, its SQL
(safe and plain), its inverse and its statements' lock facts from its own specs, with no
migrator, no peewee model and no database.

Models are rendered by a ``PostgresqlDatabase`` that refuses to connect: nothing here
reaches a server.  Expected SQL is written out where it matters (safe versus plain);
elsewhere the operation is compared with what the rest of datalayer produces for the same
change (the migrator's queued SQL, ``migrate sql --rollback``, ``table_spec`` of the
replayed models).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from datalayer.migrate import facts
from datalayer.migrate import operations as ops
from datalayer.migrate.autogenerate.api import create_migration
from datalayer.migrate.autogenerate.hints import renamed_from
from datalayer.migrate.ddl.alter import BatchFill, Online, Step
from datalayer.migrate.ddl.spec import TableSpec, table_spec
from datalayer.migrate.operations.migrator import DatalayerMigrator
from datalayer.migrate.runtime.files import Router, call_migration
from datalayer.migrate.runtime.offline import migration_sql
from datalayer.migrate.runtime.recorder import Recorder, render


class _NoServer(pw.PostgresqlDatabase):
    def _connect(self) -> Any:
        raise AssertionError("an operation reached for a database")


DB = _NoServer("nowhere")
Models = list[type[pw.Model]]


def _thing(**fields: Any) -> type[pw.Model]:
    meta = type("Meta", (), {"table_name": "things", "database": DB, "legacy_table_names": False,
                             "indexes": fields.pop("indexes", [])})
    base = {"name": pw.CharField(max_length=40)}
    return type("Thing", (pw.Model,), {"Meta": meta, "__module__": __name__, **base, **fields})


def _spec(model: type[pw.Model]) -> TableSpec:
    return table_spec(model, create=False)


def _texts(steps: Sequence[Step]) -> list[str]:
    out = []
    for step in steps:
        sql = step.sql if isinstance(step, Online) else step
        out.append(str(sql) if isinstance(sql, BatchFill) else render(sql.text, sql.params))
    return out


# -- the state -----------------------------------------------------------------------------


def test_the_state_is_an_immutable_mapping() -> None:
    one = _spec(_thing())
    empty = ops.SchemaState()
    state = empty.put(one)
    assert dict(state) == {"things": one} and len(empty) == 0
    assert state.without("things") == {} and dict(state) == {"things": one}
    with pytest.raises(TypeError):
        state["other"] = one  # type: ignore[index]
    with pytest.raises(KeyError, match="no table 'nope'"):
        state.without("nope")


# -- each kind, from specs -----------------------------------------------------------------

V1 = _thing()
NOTE = _thing(note=pw.TextField(null=True))
INDEXED = _thing(note=pw.TextField(null=True, index=True))
NOT_NULL = _thing(note=pw.TextField(index=True))
WIDER = _thing(name=pw.CharField(max_length=80))


@dataclasses.dataclass(frozen=True)
class Kind:
    id: str
    op: Callable[[], ops.Operation]
    after: type[pw.Model] | None  # the table after it (None: gone)
    plain: tuple[str, ...]
    safe: tuple[str, ...] | None = None  # None: as plain
    inverse: type[ops.Operation] | None = None


def _change(cls: type[ops.TableChange], v1: type[pw.Model], v2: type[pw.Model],
            **fields: Any) -> Callable[[], ops.Operation]:
    return lambda: cls("things", before=_spec(v1), after=_spec(v2), **fields)


T = '"things"'
KINDS = [
    Kind("create table", lambda: ops.CreateTable("things", after=table_spec(V1)), V1,
         (f'CREATE TABLE {T} ("id" SERIAL NOT NULL PRIMARY KEY, "name" VARCHAR(40) NOT NULL)',),
         inverse=ops.DropTable),
    Kind("drop table", lambda: ops.DropTable("things", before=table_spec(V1), cascade=True), None,
         (f"DROP TABLE {T} CASCADE",)),
    Kind("add column", _change(ops.AddColumns, V1, NOTE, columns=("note",)), NOTE,
         (f'ALTER TABLE {T} ADD COLUMN "note" TEXT',), inverse=ops.DropColumns),
    Kind("drop column", _change(ops.DropColumns, NOTE, V1, columns=("note",), cascade=True), V1,
         (f'ALTER TABLE {T} DROP COLUMN "note" CASCADE',), inverse=ops.AddColumns),
    Kind("add index", _change(ops.AddIndex, NOTE, INDEXED, name="things_note"), INDEXED,
         ('CREATE INDEX "things_note" ON "things" ("note")',),
         ('CREATE INDEX CONCURRENTLY IF NOT EXISTS "things_note" ON "things" ("note")',),
         inverse=ops.DropIndex),
    Kind("drop index", _change(ops.DropIndex, INDEXED, NOTE, name="things_note"), NOTE,
         ('DROP INDEX "things_note"',), ('DROP INDEX CONCURRENTLY IF EXISTS "things_note"',),
         inverse=ops.AddIndex),
    Kind("alter column", _change(ops.AlterColumns, V1, WIDER, columns=("name",)), WIDER,
         (f'ALTER TABLE {T} ALTER COLUMN "name" TYPE VARCHAR(80)',), inverse=ops.AlterColumns),
    Kind("drop not null", _change(ops.DropNotNull, NOT_NULL, INDEXED, columns=("note",)),
         INDEXED, (f'ALTER TABLE {T} ALTER COLUMN "note" DROP NOT NULL',),
         inverse=ops.AddNotNull),
]


@pytest.mark.parametrize("kind", KINDS, ids=[k.id for k in KINDS])
def test_each_kind_knows_its_state_change_sql_and_inverse(kind: Kind) -> None:
    op = kind.op()
    assert op.describe() and op.kind == kind.id
    start = ops.SchemaState([s for s in (op.before,) if s is not None])
    state = op.forward(start)
    if kind.after is None:
        assert "things" not in state
    else:
        assert state["things"] == _spec(kind.after)
    assert start == ({"things": op.before} if op.before else {})  # forward made a new state
    for postgres in (12, 15):
        assert tuple(_texts(op.sql(postgres=postgres, safe=False))) == kind.plain
        assert tuple(_texts(op.sql(postgres=postgres, safe=True))) == (kind.safe or kind.plain)
    back = op.inverse()
    if kind.inverse is None:
        assert back is None and op.irreversible
        return
    assert type(back) is kind.inverse
    assert back is not None and back.forward(state) == start  # there and back again


def test_set_not_null_is_scan_free_only_in_the_safe_form() -> None:
    op = ops.AddNotNull("things", before=_spec(INDEXED), after=_spec(NOT_NULL), columns=("note",))
    plain = op.statements(postgres=15)
    [statement] = plain
    assert statement.kind == "set_not_null" and statement.scans
    safe = [statement_of(s) for s in op.sql(postgres=15, safe=True)]
    assert [s.kind for s in safe] == [
        "add_check_not_valid", "validate_constraint", "set_not_null_checked", "drop_constraint",
    ]
    assert not any(s.scans for s in safe if s.lock is facts.Lock.ACCESS_EXCLUSIVE)


def statement_of(step: Step, postgres: int = 15) -> Any:
    from datalayer.migrate.ddl.effects import statement_of as of

    return of(step, postgres=postgres)


def test_lock_facts_come_from_the_kind_each_step_carries() -> None:
    add = ops.AddIndex("things", before=_spec(NOTE), after=_spec(INDEXED), name="things_note",
                       online=True)
    [step] = add.sql(postgres=15, safe=True)
    assert isinstance(step, Online) and step.sql.kind == "create_index_concurrently"
    [statement] = add.statements(postgres=15)
    effect = facts.EFFECTS["create_index_concurrently"]
    assert (statement.lock, statement.scans, statement.transactional) == (
        effect.lock, effect.scans, effect.transactional)
    assert not add.transactional and add.inverse().transactional is False  # type: ignore[union-attr]


def _index_named(name: str) -> type[pw.Model]:
    model = _thing(note=pw.TextField(null=True))
    model._meta.indexes = [pw.ModelIndex(model, (model.note,), name=name)]
    return model


def test_the_lock_of_a_statement_depends_on_the_target_version() -> None:
    rename = ops.RenameIndex("things", before=_spec(_index_named("a")),
                             after=_spec(_index_named("b")), old="a", new="b")
    assert _texts(rename.sql(postgres=15)) == ['ALTER INDEX "a" RENAME TO "b"']
    [old] = rename.statements(postgres=11)
    [new] = rename.statements(postgres=15)
    assert old.kind == new.kind == "alter_index"
    assert (old.lock, new.lock) == (facts.Lock.ACCESS_EXCLUSIVE, facts.Lock.SHARE_UPDATE_EXCLUSIVE)
    assert rename.inverse().sql() == (  # type: ignore[union-attr]
        ops.RenameIndex("things", before=rename.after, after=rename.before, old="b",
                        new="a").sql())


def test_a_replayed_operation_without_specs_says_so() -> None:
    op = ops.AlterColumns("things", columns=("name",))
    with pytest.raises(ValueError, match="recorded without the table's specs"):
        op.sql()
    with pytest.raises(ValueError, match="a replay keeps none"):
        op.forward(ops.SchemaState())


# -- against the rest of datalayer: the migrator, the rollback, the replayed models ----------


def _operations_of(directory: Path) -> tuple[list[list[ops.Operation]], DatalayerMigrator]:
    """Return each file's operations (with specs), and the migrator that recorded them."""
    router = Router(Recorder(), directory)
    m = DatalayerMigrator(router.database)
    out = []
    for name in router.todo:
        call_migration(router.load(name).migrate, m, router.database, fake=False)
        m.__ops__ = []
        out.append(m.take_operations())
    return out, m


def _history(tmp_path: Path, *versions: Models, **options: Any) -> Path:
    directory = tmp_path / "migrations"
    for i, models in enumerate(versions):
        create_migration(Router(Recorder(), directory), f"v{i}", models, **options)
    return directory


def _specs_of(m: DatalayerMigrator) -> dict[str, TableSpec]:
    return {name: _spec(model) for name, model in m.orm.__tables__.items()}


def test_folding_the_repository_migrations_gives_the_replayed_models_specs() -> None:
    found, m = _operations_of(Path(__file__).parent.parent / "migrations")
    state = ops.fold(op for file in found for op in file)
    assert state and dict(state) == _specs_of(m)


def _generate_cases() -> list[Any]:
    from tests import test_migrate_generate as g
    from tests import test_migrate_generate_cases as gc

    return [*g.CASES, *gc.CASES]


@pytest.mark.parametrize("case", _generate_cases(), ids=lambda c: c.id)
def test_folding_a_generated_history_gives_the_replayed_models_specs(
    case: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    router = Router(Recorder(), directory)
    create_migration(router, "v1", case.v1())
    create_migration(router, "v2", case.v2(), allow_drop=case.allow_drop,
                     unsafe=getattr(case, "unsafe", False))
    found, m = _operations_of(directory)
    assert dict(ops.fold(op for file in found for op in file)) == _specs_of(m)


def test_the_migrator_queues_each_operations_own_sql(tmp_path: Path) -> None:
    directory = _history(tmp_path, [V1], [INDEXED], [WIDER], allow_drop=True)
    router = Router(Recorder(), directory)
    m = DatalayerMigrator(router.database)
    for name in router.todo:
        call_migration(router.load(name).migrate, m, router.database, fake=False)
        queue, m.__ops__ = m.__ops__, []
        recorded = m.take_recorded()
        assert recorded
        for op, queued, steps in recorded:  # one callable a step, in order, queued in turn
            assert list(steps) == list(op.sql(postgres=12, safe=op.online))
            assert len(queued) == len(steps)
        assert [q for rec in recorded for q in rec.queued] == queue


CHANGES = [
    ("add a column", [V1], [NOTE]),
    ("add an index", [NOTE], [INDEXED]),
    ("widen a type", [V1], [WIDER]),
    ("make a column NOT NULL", [INDEXED], [NOT_NULL]),
    ("rename a column", [NOTE], [_thing(remark=renamed_from(pw.TextField(null=True), "note"))]),
]


@pytest.mark.parametrize(("what", "v1", "v2"), CHANGES, ids=[c[0] for c in CHANGES])
def test_the_inverse_runs_the_sql_of_the_generated_rollback(
    what: str, v1: Models, v2: Models, tmp_path: Path
) -> None:
    directory = _history(tmp_path, v1, v2)
    found, _ = _operations_of(directory)
    names = Router(Recorder(), directory).todo
    for name, file_ops in zip(names[1:], found[1:], strict=True):
        [rollback] = migration_sql(directory, [name], rollback=True)
        inverses = [op.inverse() for op in reversed(file_ops)]
        assert all(i is not None for i in inverses), what
        mine = [t.rstrip(";") + ";" for i in inverses if i is not None
                for t in _texts(i.sql(postgres=12, safe=i.online))]
        assert mine == list(rollback.statements), what
