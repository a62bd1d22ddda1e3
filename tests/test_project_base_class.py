"""A plain peewee `class Base(pw.Model)` in a models module is a base, not a table `base`."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from datalayer.cli import main
from datalayer.project import load_project

MODELS = '''
import peewee as pw


class Base(pw.Model):
    """Shared Meta and methods; no fields of its own."""

    class Meta:
        legacy_table_names = False

    def describe(self):
        return type(self).__name__


class Author(Base):
    name = pw.CharField()


class Book(Base):
    title = pw.CharField()
    author = pw.ForeignKeyField(Author)


class Stamped(pw.Model):
    """Subclassed, but with a field of its own: a table."""

    stamp = pw.IntegerField()


class Special(Stamped):
    extra = pw.IntegerField()


class Marker(pw.Model):
    """No fields and no subclass: a table of its own (only an id)."""
'''


@pytest.fixture
def package(clean_env: Path) -> Iterator[str]:
    name = f"app_{uuid.uuid4().hex[:8]}"
    (clean_env / name).mkdir()
    (clean_env / name / "__init__.py").write_text("")
    (clean_env / name / "models.py").write_text(MODELS)
    (clean_env / "pyproject.toml").write_text(f'[tool.datalayer]\nmodels = ["{name}.models"]\n')
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]
    if str(clean_env) in sys.path:
        sys.path.remove(str(clean_env))


def test_a_field_less_base_is_not_a_table(package: str) -> None:
    tables = sorted(m._meta.table_name for m in load_project().load_models())
    assert tables == ["author", "book", "marker", "special", "stamped"]


def test_diff_and_erd_do_not_make_a_table_base(package: str, clean_env: Path) -> None:
    erd = CliRunner().invoke(main, ["erd"])
    assert erd.exit_code == 0, erd.output
    assert "    base {" not in erd.stdout and "    author {" in erd.stdout
    diff = CliRunner().invoke(main, ["migrate", "diff", "initial"])
    assert diff.exit_code == 0, diff.output
    written = (clean_env / "migrations" / "001_initial.py").read_text()
    assert 'table_name = "base"' not in written and "class Base" not in written
    assert "class Author" in written
