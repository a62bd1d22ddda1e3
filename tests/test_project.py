"""The project: [tool.datalayer] in the nearest pyproject.toml, overrides, global options."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from datalayer.cli import hoist_global_options, main
from datalayer.config import Settings
from datalayer.errors import ProjectError
from datalayer.models import RefreshToken, User
from datalayer.project import DEFAULT_MODELS, import_models, load_project

POST = '''
import peewee as pw
from datalayer import BaseModel, User


class Post(BaseModel):
    author = pw.ForeignKeyField(User, column_name="users_id", on_delete="CASCADE")
    title = pw.CharField(max_length=80)

    class Meta:
        table_name = "{table}"
'''


@pytest.fixture
def project(clean_env: Path) -> Iterator[Path]:
    """A project folder with its own model module (a unique name: modules are cached)."""
    package = f"app_{abs(hash(clean_env)) % 10**8}"
    (clean_env / package).mkdir()
    (clean_env / package / "__init__.py").write_text("")
    (clean_env / package / "models.py").write_text(POST.format(table="posts"))
    (clean_env / "pyproject.toml").write_text(
        "[tool.datalayer]\n"
        f'models = ["datalayer.models", "{package}.models"]\n'
        'migrations = "db/migrations"\n'
        "postgres = 15\n"
    )
    (clean_env / "deep" / "er").mkdir(parents=True)
    yield clean_env
    for name in [m for m in sys.modules if m.startswith(package)]:
        del sys.modules[name]
    if str(clean_env) in sys.path:
        sys.path.remove(str(clean_env))


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_no_configuration_is_the_package_models_and_dot_migrations(clean_env: Path) -> None:
    project = load_project()
    assert project.root is None and project.models == DEFAULT_MODELS
    assert project.migrations == Path("migrations")
    assert project.postgres == 13 and project.load_models() == [User, RefreshToken]


def test_found_upward_from_a_subfolder(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "deep" / "er")
    found = load_project()
    assert found.root == project.resolve()
    assert found.migrations == (project / "db" / "migrations").resolve()
    assert found.postgres == 15
    tables = [m._meta.table_name for m in found.load_models()]
    assert tables == ["users", "posts", "refresh_tokens"] or tables[0] == "users"
    assert set(tables) == {"users", "refresh_tokens", "posts"}


def test_environment_and_options_override(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAYER_MODELS", "datalayer.models")
    monkeypatch.setenv("DATALAYER_MIGRATIONS_DIR", "other")
    found = load_project()
    assert found.models == ("datalayer.models",)
    assert found.migrations.resolve() == (project / "other").resolve()
    found = load_project(models="datalayer.models,datalayer.models", migrations="x")
    assert found.models == ("datalayer.models",) and found.migrations == Path("x")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('models = "nope-not a module"', "is not a module name"),
        ("models = []", "names no module"),
        ("postgres = 9", "postgres must be a major version number from 13 to 99"),
        ('postgres = "15"', "postgres must be a major version number"),
        ("migrations = 3", "migrations must be a folder path"),
        ("unsafe = 1", "unsafe must be true or false"),
        ("modles = []", "unknown key(s) in [tool.datalayer]: modles"),
    ],
)
def test_bad_configuration_says_what_to_fix(clean_env: Path, table: str, message: str) -> None:
    (clean_env / "pyproject.toml").write_text(f"[tool.datalayer]\n{table}\n")
    with pytest.raises(ProjectError, match=r"pyproject\.toml") as info:
        load_project()
    assert message in str(info.value)


def test_import_error_names_the_module_and_why(clean_env: Path) -> None:
    (clean_env / "broken_models_x1.py").write_text("import nosuchpackage_zz\n")
    with pytest.raises(ProjectError, match=r"'broken_models_x1' \(ModuleNotFoundError"):
        import_models(["broken_models_x1"], clean_env)
    result = CliRunner().invoke(main, ["--models", "broken_models_x1", "migrate", "diff", "x"])
    assert result.exit_code == 1
    assert "broken_models_x1" in result.stderr and "nosuchpackage_zz" in result.stderr
    assert result.stderr.count("\n") == 1 and not (clean_env / "migrations").exists()


def test_a_reference_outside_the_model_set_is_refused(project: Path) -> None:
    package = next(p.name for p in project.iterdir() if p.name.startswith("app_"))
    with pytest.raises(ProjectError, match=r"add 'datalayer\.models' to"):
        import_models([f"{package}.models"], project)


def test_global_options_before_or_after_the_command() -> None:
    args = ["migrate", "status", "--dir", "x", "--json", "--models=a.b", "--env", "local"]
    assert hoist_global_options(args) == [
        "--dir", "x", "--models=a.b", "--env", "local", "migrate", "status", "--json"
    ]
    assert hoist_global_options(["migrate", "sql", "--", "--dir"]) == [
        "migrate", "sql", "--", "--dir"
    ]


def test_dir_after_the_subcommand_works(clean_env: Path) -> None:
    target = clean_env / "elsewhere"
    target.mkdir()
    result = invoke("migrate", "hash", "--dir", str(target))
    assert result.exit_code == 0, result.output
    assert (target / "migrations.sum").exists()


def test_diff_uses_the_project_models(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "deep")
    result = invoke("migrate", "diff", "initial")
    assert result.exit_code == 0, result.output
    written = sorted((project / "db" / "migrations").glob("*.py"))
    assert [p.name for p in written] == ["001_initial.py", "conf.py"]
    source = written[0].read_text()
    assert "table_name = 'posts'" in source and "table_name = 'users'" in source
    result = invoke("migrate", "diff", "again")
    assert result.exit_code == 0 and "no changes" in result.output
    result = invoke("erd")
    assert "posts" in result.output and "users ||--o{ posts" in result.output


def test_library_calls_default_to_the_project(
    project: Path, monkeypatch: pytest.MonkeyPatch, empty_db: Settings
) -> None:
    """migrate.apply / status / check / diff called from Python, with no folder or models given,
    use [tool.datalayer] as the CLI does (not ./migrations and datalayer's own models)."""
    from datalayer.db import Database
    from datalayer.migrate.autogenerate.compare import create_migration
    from datalayer.migrate.runtime import apply as runner
    from datalayer.migrate.runtime.checksum import write_sum
    from datalayer.migrate.runtime.files import Router
    from datalayer.project import default_migrations_dir

    monkeypatch.chdir(project / "deep")
    folder = default_migrations_dir(empty_db)
    assert folder.resolve() == (project / "db" / "migrations").resolve()
    written = create_migration(Router(Database(), folder), "initial")
    assert written is not None and "table_name = 'posts'" in written.path.read_text()
    write_sum(folder)
    applied = runner.apply(empty_db)
    assert [a.name for a in applied] == [written.name]
    assert runner.status(empty_db).up_to_date
    # DATALAYER_MIGRATIONS_DIR (in the settings, e.g. from a .env file) still wins.
    assert default_migrations_dir(empty_db.replace(migrations_dir=Path("x"))) == Path("x")
