"""Every command that loads migrations imports the project's modules without PYTHONPATH=."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from datalayer.config import Settings
from tests.migrate_runtime_support import cli_command, cli_env

MODELS = '''\
import secrets

import peewee as pw


def make_code():
    return secrets.token_hex(4)


class Thing(pw.Model):
    code = pw.CharField(default=make_code)

    class Meta:
        table_name = "thing"
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An application whose model has a callable default from its own module ``app``."""
    root = tmp_path / "proj"
    (root / "app").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "models.py").write_text(MODELS)
    (root / "pyproject.toml").write_text(textwrap.dedent("""\
        [tool.datalayer]
        models = ["app.models"]
        """))
    (root / "sub").mkdir()
    return root


def _run(settings: Settings, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(settings)
    env.pop("PYTHONPATH", None)
    # From a subfolder: `python -c` puts the current folder (sub/) first on sys.path,
    # as a console script puts none; the project folder must come from datalayer.
    return subprocess.run(
        cli_command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_apply_and_rollback_import_the_projects_modules(
    project: Path, empty_db: Settings
) -> None:
    sub = project / "sub"
    written = _run(empty_db, sub, "migrate", "diff", "initial")
    assert written.returncode == 0, written.stderr
    assert "m.ref('app.models', 'make_code')" in (
        project / "migrations" / "001_initial.py"
    ).read_text()
    for args in (
        ("migrate", "apply", "--dry-run"),
        ("migrate", "apply"),
        ("migrate", "sql"),
        ("migrate", "rollback"),
    ):
        result = _run(empty_db, sub, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert "cannot be imported" not in result.stderr
