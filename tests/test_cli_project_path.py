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


def test_the_project_settings_in_dotenv_are_read(project: Path, empty_db: Settings) -> None:
    """DATALAYER_MIGRATIONS_DIR and DATALAYER_MODELS in the project's .env count, from any
    subfolder, as in the environment (they were read for the database, not the project)."""
    (project / "app" / "other.py").write_text(MODELS.replace("Thing", "Other").replace(
        '"thing"', '"other"'))
    (project / ".env").write_text(
        "DATALAYER_MIGRATIONS_DIR=db/changes\nDATALAYER_MODELS=app.other\n")
    written = _run(empty_db, project / "sub", "migrate", "diff", "initial")
    assert written.returncode == 0, written.stderr
    text = (project / "db" / "changes" / "001_initial.py").read_text()
    assert "table_name = 'other'" in text and "'thing'" not in text
    assert not (project / "migrations").exists()
    # the process environment still wins over the file
    env = cli_env(empty_db, DATALAYER_MIGRATIONS_DIR=str(project / "elsewhere"))
    env.pop("PYTHONPATH", None)
    status = subprocess.run(cli_command("migrate", "status"), env=env, cwd=project,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 1 and "elsewhere" in status.stderr, status.stderr
