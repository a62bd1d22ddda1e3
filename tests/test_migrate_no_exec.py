"""The generator runs nothing it writes: its steps are data, applied and rendered from one object.

Generating a migration used to build each step as Python source, ``exec`` it
on the replayed state and read facts back from the text.  A value's
``repr()`` then became code twice, once in the generator's process and once
in the file: a default whose ``repr()`` is not Python stopped ``diff``, and
one whose ``repr()`` is Python ran it.  Now literals are written from the
value's own type, each step is applied by calling the migrator's method with
real values, and the same object renders the file.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from playhouse.postgres_ext import BinaryJSONField, PostgresqlExtDatabase

import datalayer
from datalayer.migrate.autogenerate.code import MethodCall, ModelDef
from datalayer.migrate.autogenerate.compare import compute_diff, create_migration
from datalayer.migrate.autogenerate.writer import CodeWriter, plain
from datalayer.migrate.inspect import compare, snapshot
from datalayer.migrate.operations.migrator import DatalayerMigrator
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from tests.pgserver import Server
from tests.test_migrate_generate import declared, model, open_db

PACKAGE = Path(datalayer.__file__).parent

# Where text is run on purpose, and why (nothing of the generator is among them).
ALLOWED = {
    # Loading a migration file is running it: the contract of the files (pw_migrate does
    # the same), compiled under its real path so tracebacks point at it.
    ("migrate/runtime/files.py", "load", "exec"),
    ("migrate/runtime/files.py", "load", "compile"),
}


def _text_runs() -> set[tuple[str, str, str]]:
    """Return (module, enclosing function, builtin) for each call of exec, eval or compile."""
    found: set[tuple[str, str, str]] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        module = path.relative_to(PACKAGE).as_posix()

        def visit(node: ast.AST, where: str, module: str = module) -> None:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = node.name
            if isinstance(node, ast.Call):
                func = node.func
                name = (func.id if isinstance(func, ast.Name)
                        else func.attr if isinstance(func, ast.Attribute)
                        and isinstance(func.value, ast.Name) and func.value.id == "builtins"
                        else None)
                if name in ("exec", "eval", "compile"):
                    found.add((module, where, name))
            for child in ast.iter_child_nodes(node):
                visit(child, where)

        visit(tree, "<module>")
    return found


def test_no_module_runs_text_but_migration_files() -> None:
    found = _text_runs()
    assert found <= ALLOWED, sorted(found - ALLOWED)
    assert not {f for f in found if f[0].startswith(("migrate/generate", "migrate/autogenerate"))}


class Code(str):
    """A str whose repr() is not Python (as classes made for logging have)."""

    def __repr__(self) -> str:
        return f"<Code {str.__str__(self)}>"


class Planted(str):
    """A str whose repr() is Python that does something when run."""

    def __repr__(self) -> str:
        return "__import__('os').environ.__setitem__('DATALAYER_PLANTED', 'ran') or 'x'"


class Pair(tuple[int, int]):
    """A tuple whose repr() names its class (as a namedtuple's does)."""

    def __repr__(self) -> str:
        return f"Pair{tuple.__repr__(self)}"


@pytest.fixture
def db(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    with pg.database("dlnoexec") as name:
        database = open_db(pg, name)
        try:
            yield database
        finally:
            database.close()


@pytest.fixture(scope="module")
def ref(pg: Server) -> Iterator[PostgresqlExtDatabase]:
    with pg.database("dlnoexecref") as name:
        database = open_db(pg, name)
        try:
            yield database
        finally:
            database.close()


def _items(**fields: Any) -> type[pw.Model]:
    return model("Item", "items", name=pw.CharField(max_length=20), **fields)


DEFAULTS = {
    # repr() is not Python: exec stopped the diff with a SyntaxError / NameError.
    "repr-not-python": (lambda: pw.CharField(max_length=10, default=Code("abc")),
                        "default='abc'", "abc"),
    "tuple-subclass": (lambda: BinaryJSONField(default=Pair((1, 2))), "default=(1, 2)", "[1, 2]"),
    # repr() is Python: exec ran it while generating, and the file ran it at each load.
    "repr-runs-code": (lambda: pw.CharField(max_length=10, default=Planted("x")),
                       "default='x'", "x"),
}


@pytest.mark.parametrize("kind", list(DEFAULTS))
def test_defaults_whose_repr_is_not_their_source_are_written_as_their_values(
    kind: str, db: PostgresqlExtDatabase, ref: PostgresqlExtDatabase, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make, written, stored = DEFAULTS[kind]
    monkeypatch.delenv("DATALAYER_PLANTED", raising=False)
    router = Router(db, tmp_path)
    assert create_migration(router, "v1", [_items()]) is not None
    write_sum(tmp_path)
    runner.apply(db, tmp_path)
    db.execute_sql("INSERT INTO items (name) VALUES ('a'), ('b')")
    before = snapshot(db)

    v2 = [_items(extra=make())]
    result = create_migration(Router(db, tmp_path), "v2", v2)
    assert result is not None
    assert "DATALAYER_PLANTED" not in os.environ, "the generator ran a value's repr()"
    text = "\n".join(p.read_text(encoding="utf-8") for p in result.paths)
    assert written in text
    assert "<Code" not in text and "__import__" not in text and "Pair(" not in text
    for path in result.paths:
        ast.parse(path.read_text(encoding="utf-8"))

    write_sum(tmp_path)
    runner.apply(db, tmp_path)
    got = db.execute_sql("SELECT extra::text FROM items").fetchall()
    assert got == [(stored,), (stored,)]
    assert compare(declared(ref, v2), snapshot(db)) == []
    assert not compute_diff(Router(db, tmp_path), v2), "a second diff is empty"
    runner.rollback(db, tmp_path, steps=len(result.names))
    assert compare(before, snapshot(db)) == []
    assert "DATALAYER_PLANTED" not in os.environ, "the migration ran a value's repr()"


def test_a_field_option_that_has_no_literal_is_refused_in_one_line(tmp_path: Path) -> None:
    class Length(int):
        pass

    class Odd:
        def __repr__(self) -> str:
            return "Odd()"

    v1 = [_items()]
    v2 = [_items(code=pw.CharField(max_length=Length(10), index_type=Odd(), null=True))]
    router = Router(pw.PostgresqlDatabase(None), tmp_path)
    assert create_migration(router, "v1", v1) is not None
    from datalayer.errors import GenerationError

    with pytest.raises(GenerationError) as err:
        compute_diff(router, v2)
    assert "items.code: the field option" in str(err.value)
    assert "Traceback" not in str(err.value)


def test_a_model_class_named_like_the_files_own_names_is_refused(tmp_path: Path) -> None:
    from datalayer.errors import GenerationError

    router = Router(pw.PostgresqlDatabase(None), tmp_path)
    with pytest.raises(GenerationError) as err:
        compute_diff(router, [model("m", "things", name=pw.CharField())])
    assert "model class 'm' cannot be written into a migration file" in str(err.value)
    assert "rename it" in str(err.value)


def test_a_step_is_applied_and_rendered_from_one_object() -> None:
    writer = CodeWriter()
    step = writer.call("add_fields", "items", kw=[("note", writer.field(
        _items(note=pw.TextField(null=True, default=Code("n")))._meta.fields["note"]))])
    assert isinstance(step, MethodCall)
    assert step.render() == [
        "m.add_fields('items', note=pw.TextField(column_name='note', null=True, default='n'))"
    ]
    assert step.calls() == ["m.add_fields"] and step.modules() == {"pw"}

    sim = DatalayerMigrator(pw.PostgresqlDatabase(None))
    created = writer.model(_items())
    assert isinstance(created, ModelDef)
    created.apply(sim)
    step.apply(sim)
    note = sim.orm["items"]._meta.fields["note"]
    assert isinstance(note, pw.TextField) and note.null and note.default == "n"
    assert type(note.default) is str


def test_literals_are_written_from_their_type() -> None:
    assert plain(Code("a")).text == "'a'"
    assert plain({"k": [Pair((1, 2)), None, True, 1.5]}).text == "{'k': [(1, 2), None, True, 1.5]}"
    assert plain((Code("a"),)).text == "('a',)"
    value = {"k": [1, "x"]}
    assert plain(value).text == repr(value) and plain(value).value == value
