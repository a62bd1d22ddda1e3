"""Operations as data: each migrator call records one immutable operation with its phase.

Issue 16 (expand/contract phases) builds on these: an operation says whether it
only adds (expand) or removes or narrows what old code may use (contract).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import peewee as pw
import pytest

from datalayer.migrate import operations as ops
from datalayer.migrate.autogenerate.compare import create_migration
from datalayer.migrate.operations.migrator import DatalayerMigrator
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.recorder import Recorder


def _model(version: int) -> type[pw.Model]:
    attrs: dict[str, object] = {
        "__module__": __name__,
        "Meta": type("Meta", (), {"table_name": "things"}),
        "name": pw.CharField(max_length=40),
    }
    if version >= 2:
        attrs["note"] = pw.TextField(null=True, index=True)
    if version >= 3:
        del attrs["name"]
    return type("Thing", (pw.Model,), attrs)


def test_every_call_records_one_operation_with_its_facts() -> None:
    m = DatalayerMigrator(Recorder())
    m.create_model(_model(1))
    m.add_fields("things", note=pw.TextField(null=True))
    m.add_fields("things", size=pw.IntegerField(default=0))
    m.add_named_index("things", "things_note", "note", online=True)
    m.rename_column("things", "note", "remark")
    m.change_fields("things", remark=pw.CharField(max_length=10, null=True))
    m.add_not_null("things", "remark")
    m.drop_named_index("things", "things_note")
    m.remove_fields("things", "size")
    m.sql("SELECT 1")
    m.run(print)
    m.remove_model("things")
    found = m.take_operations()
    assert [type(o) for o in found] == [
        ops.CreateTable, ops.AddColumns, ops.AddColumns, ops.AddIndex, ops.RenameColumn,
        ops.AlterColumns, ops.AddNotNull, ops.DropIndex, ops.DropColumns, ops.RawSql,
        ops.PythonFunction, ops.DropTable,
    ]
    assert m.take_operations() == []  # taken once
    phases = [o.phase for o in found]
    E, C = ops.Phase.EXPAND, ops.Phase.CONTRACT
    assert phases == [E, E, C, E, C, C, C, C, C, C, C, C]
    create, nullable, _, index, rename, *_ = found
    assert create.describe() == "create table things"
    assert nullable.describe() == "add column note to things"
    assert rename.inverse() == ops.RenameColumn("things", old="remark", new="note")
    assert nullable.inverse() == ops.DropColumns("things", columns=("note",))
    assert found[-1].inverse() is None and found[-1].irreversible
    # Its SQL steps and their facts: the concurrent build cannot run in a transaction.
    assert create.transactional and create.statements()
    assert not index.transactional
    [statement] = index.statements()
    assert "CONCURRENTLY" in statement.sql and not statement.transactional
    with pytest.raises(dataclasses.FrozenInstanceError):
        create.table = "other"  # type: ignore[misc]


def test_a_replay_records_the_operations_of_the_files_without_sql(tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    for version in (1, 2, 3):
        create_migration(Router(Recorder(), directory), f"v{version}", [_model(version)],
                         allow_drop=True)
    router = Router(Recorder(), directory)
    m = DatalayerMigrator(router.database)
    kinds: list[list[str]] = []
    for name in router.todo:
        router.replay([name], m)
        recorded = m.take_operations()
        assert all(o.steps == () for o in recorded)  # a replay derives no SQL
        kinds.append([f"{o.kind}:{o.phase.value}" for o in recorded])
    assert kinds[0] == ["create table:expand"]
    assert "add column:expand" in kinds[1]
    assert kinds[-1] == ["drop column:contract"]
