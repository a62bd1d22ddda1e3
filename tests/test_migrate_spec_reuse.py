"""An operation's specs are the table as it is, though the migrator reuses them; none leaks.

A history's operations compare their table's spec before and after; the
migrator takes the spec one operation left as the next one's spec before, so
anything else that changed the model in between must be seen.
"""

from __future__ import annotations

import gc
import weakref

import peewee as pw

from datalayer.migrate import operations as ops
from datalayer.migrate.ddl.spec import table_spec
from datalayer.migrate.operations.migrator import DatalayerMigrator
from datalayer.migrate.runtime.recorder import Recorder


def _model() -> type[pw.Model]:
    return type("Thing", (pw.Model,), {
        "__module__": __name__,
        "Meta": type("Meta", (), {"table_name": "things"}),
        "name": pw.CharField(max_length=40),
    })


def _sql(op: ops.Operation) -> list[str]:
    return [s.sql for s in op.statements()]


def test_a_field_added_to_the_model_between_operations_is_not_added_again() -> None:
    m = DatalayerMigrator(Recorder())
    m.create_model(_model())
    m.add_fields("things", size=pw.IntegerField(null=True))
    # A migration's own code changing the state's model, not through the migrator.
    m.orm["things"]._meta.add_field("extra", pw.IntegerField(null=True))
    m.add_fields("things", note=pw.TextField(null=True))
    *_, last = m.take_operations()
    assert isinstance(last, ops.AddColumns)
    assert last.before is not None and last.before.column("extra") is not None
    assert _sql(last) == ['ALTER TABLE "things" ADD COLUMN "note" TEXT']


def test_a_default_set_by_upstreams_add_default_is_in_the_next_operations_spec() -> None:
    m = DatalayerMigrator(Recorder())
    m.create_model(_model())
    m.add_fields("things", size=pw.IntegerField(null=True))
    m.add_default("things", "size", 5)  # peewee-migrate's: changes the field in place
    m.__ops__ = []  # as the runner takes each file's queue: the next file starts a new one
    m.add_not_null("things", "size")
    *_, last = m.take_operations()
    assert isinstance(last, ops.AddNotNull)
    assert last.before is not None
    before = last.before.column("size")
    assert before is not None and before.py_default == 5


def test_a_table_dropped_changed_and_created_again_is_seen_as_it_is_now() -> None:
    model = _model()
    m = DatalayerMigrator(Recorder())
    m.create_model(model)
    m.add_fields("things", size=pw.IntegerField(null=True))
    m.remove_model("things")
    model._meta.fields["size"].null = False  # the same class, changed in place
    m.create_model(model)
    m.add_fields("things", note=pw.TextField(null=True))
    *_, last = m.take_operations()
    assert _sql(last) == ['ALTER TABLE "things" ADD COLUMN "note" TEXT']


def test_a_column_spec_does_not_keep_its_field_alive() -> None:
    model = _model()
    table_spec(model)  # its CREATE TABLE too
    field = weakref.ref(model._meta.fields["name"])
    del model
    gc.collect()
    assert field() is None
