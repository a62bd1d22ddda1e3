"""What rendering reuses (column specs, CREATE TABLE, cached SQL) follows every change.

Long histories render each column once per state of its field and keep the SQL
of whole runs of files in one cache entry; these tests change a field in place,
a referenced table and a file in the middle of a run, and expect the new SQL.
No database: everything here renders offline.
"""

from __future__ import annotations

from pathlib import Path

import peewee as pw
import pytest

from datalayer.migrate.ddl.spec import table_spec
from datalayer.migrate.runtime import cache
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.offline import _PACK, migration_sql


def _model(name: str, **fields: pw.Field) -> type[pw.Model]:
    attrs: dict[str, object] = {
        "__module__": __name__,
        "Meta": type("Meta", (), {"table_name": name}),
        **fields,
    }
    return type(name.title(), (pw.Model,), attrs)


def test_a_field_changed_in_place_renders_anew() -> None:
    field = pw.IntegerField(null=True)
    model = _model("memo_items", qty=field)
    assert "NOT NULL" not in table_spec(model).column("qty").ddl.text  # type: ignore[union-attr]
    field.null = False
    assert "NOT NULL" in table_spec(model).column("qty").ddl.text  # type: ignore[union-attr]
    field.constraints = [pw.SQL("DEFAULT 0")]
    spec = table_spec(model)
    assert "DEFAULT 0" in spec.create[0].text
    field.constraints.append(pw.Check("qty >= 0"))  # the same list, one item more
    assert "qty >= 0" in table_spec(model).create[0].text


def test_a_foreign_key_follows_the_table_it_refers_to() -> None:
    owner = _model("memo_owners")
    item = _model("memo_things", owner=pw.ForeignKeyField(owner))
    assert '"memo_owners"' in table_spec(item).create[0].text
    owner._meta.set_table_name("memo_people")
    text = table_spec(item).create[0].text
    assert '"memo_people"' in text and '"memo_owners"' not in text


def test_create_table_follows_a_new_column() -> None:
    model = _model("memo_grow", a=pw.IntegerField(null=True))
    first = table_spec(model).create[0].text
    model._meta.add_field("b", pw.TextField(null=True))
    second = table_spec(model).create[0].text
    assert '"b"' not in first and '"b" TEXT' in second
    assert table_spec(model, create=False).create == ()


_ADD = """\
import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("t", {column}=pw.{kind}(null=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("t", {column!r})
"""

_FIRST = """\
import peewee as pw


def migrate(migrator, database, *, fake=False):
    @migrator.create_model
    class T(pw.Model):
        id = pw.AutoField()

        class Meta:
            table_name = "t"


def rollback(migrator, database, *, fake=False):
    migrator.remove_model("t")
"""


@pytest.fixture
def long_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATALAYER_CACHE_DIR", str(tmp_path / "cache"))
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "000_first.py").write_text(_FIRST)
    for i in range(1, _PACK + 5):  # one whole run of files in one entry, a few after it
        text = _ADD.format(column=f"c{i}", kind="IntegerField")
        (directory / f"{i:03d}_c{i}.py").write_text(text)
    write_sum(directory)
    return directory


def _texts(items: list) -> list[tuple[str, tuple[str, ...]]]:  # type: ignore[type-arg]
    return [(m.name, m.statements) for m in items]


def test_cached_sql_of_a_long_history_is_the_rendered_sql_and_follows_an_edit(
    long_history: Path, tmp_path: Path
) -> None:
    fresh = _texts(migration_sql(long_history))
    assert fresh == _texts(migration_sql(long_history))  # now from the cache
    folder = cache.cache_dir()
    assert folder is not None and [p for p in folder.iterdir() if p.name.startswith("sqlpack-")]
    assert all(p.suffix == ".json" for p in folder.iterdir())
    # A file in the middle of the packed run changes: it and every later file render anew.
    (long_history / "050_c50.py").write_text(_ADD.format(column="c50", kind="TextField"))
    edited = dict(_texts(migration_sql(long_history)))
    assert edited["050_c50"] == ('ALTER TABLE "t" ADD COLUMN "c50" TEXT;',)
    assert dict(fresh)["050_c50"] == ('ALTER TABLE "t" ADD COLUMN "c50" INTEGER;',)
    assert edited["051_c51"] == dict(fresh)["051_c51"]


def test_cached_rollbacks_follow_an_edit(long_history: Path) -> None:
    names = ["002_c2", "003_c3"]
    first = _texts(migration_sql(long_history, names, rollback=True))
    assert first == _texts(migration_sql(long_history, names, rollback=True))
    assert [n for n, _ in first] == ["003_c3", "002_c2"]
    (long_history / "003_c3.py").write_text(
        _ADD.format(column="c3", kind="IntegerField").replace(
            'remove_fields("t", \'c3\')', 'remove_fields("t", \'c3\', cascade=True)'
        )
    )
    again = dict(_texts(migration_sql(long_history, names, rollback=True)))
    assert again["003_c3"] != dict(first)["003_c3"]
    assert "CASCADE" in " ".join(again["003_c3"])
