"""`datalayer erd` in a project of one's own names `datalayer erd`, not this repository's make."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from datalayer.cli import main

MODELS = '''\
import peewee as pw


class Thing(pw.Model):
    name = pw.CharField()

    class Meta:
        table_name = "thing"
'''


@pytest.fixture
def project(clean_env: Path) -> Path:
    (clean_env / "app").mkdir()
    (clean_env / "app" / "__init__.py").write_text("")
    (clean_env / "app" / "models.py").write_text(MODELS)
    (clean_env / "pyproject.toml").write_text('[tool.datalayer]\nmodels = ["app.models"]\n')
    return clean_env


def test_without_a_makefile_the_page_and_check_name_datalayer_erd(project: Path) -> None:
    page = CliRunner().invoke(main, ["erd"])
    assert page.exit_code == 0, page.output
    assert "make " not in page.stdout
    assert "run `datalayer erd --output FILE`" in page.stdout
    missing = CliRunner().invoke(main, ["erd", "--check"])
    assert missing.exit_code == 1
    assert "make " not in missing.stderr
    assert "run `datalayer erd --output docs/er-diagram.md` and commit it" in missing.stderr
    written = CliRunner().invoke(main, ["erd", "--output", "docs/er-diagram.md"])
    assert written.exit_code == 0
    assert CliRunner().invoke(main, ["erd", "--check"]).exit_code == 0


def test_a_makefile_with_the_target_is_named(project: Path) -> None:
    (project / "Makefile").write_text("er-diagram:\n\tdatalayer erd --output docs/er-diagram.md\n")
    page = CliRunner().invoke(main, ["erd"])
    assert "`make er-diagram`" in page.stdout
    missing = CliRunner().invoke(main, ["erd", "--check"])
    assert "run `make er-diagram` (or `datalayer erd --output" in missing.stderr
