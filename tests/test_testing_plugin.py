"""The pytest plugin ``datalayer.testing``: the ``migrator`` fixture and the history test.

A small project (two migrations: a ``people`` table, then a data migration
that splits ``name`` into ``first_name`` and ``last_name``) is run by pytest
itself (pytester, in process, the plugin loaded through its ``pytest11``
entry point).  README's example test must pass on it and fail when the data
migration is broken; the one-line history test must pass on the good history
and fail, naming the column, when a rollback leaves one behind.  The test
databases come from ``DATALAYER_DEV_DATABASE_URL``, set to the tests' server.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from datalayer.config import Settings
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.testing import MigrationTester
from tests.conftest import ENV_PREFIXES
from tests.pgserver import Server

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
DOCS = "docs/migrations/testing.md"

PEOPLE = '''
import peewee as pw


def migrate(migrator, database, *, fake=False):
    class Person(pw.Model):
        id = pw.AutoField()
        name = pw.CharField(max_length=200)

        class Meta:
            table_name = "people"

    migrator.create_model(Person)


def rollback(migrator, database, *, fake=False):
    migrator.remove_model("people")
'''

SPLIT = '''
import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("people", first_name=pw.CharField(max_length=100, null=True),
                        last_name=pw.CharField(max_length=100, null=True))
    migrator.sql("UPDATE people SET first_name = split_part(name, ' ', 1), "
                 "last_name = split_part(name, ' ', 2)")
    migrator.remove_fields("people", "name")


def rollback(migrator, database, *, fake=False):
    migrator.add_fields("people", name=pw.CharField(max_length=200, null=True))
    migrator.sql("UPDATE people SET name = first_name || ' ' || last_name")
    migrator.add_not_null("people", "name")
    migrator.remove_fields("people", "first_name", "last_name")
'''

# Plugins the inner runs do without (hypothesis alone would import itself anew in each).
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")

HISTORY_LINE = "from datalayer.testing import test_migration_history  # noqa: F401\n"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(encoding="utf-8"), re.S)


def readme_example() -> str:
    """The data-migration test README shows (the python block that uses ``migrator``)."""
    (example,) = [b for b in python_blocks("README.md") if "def test_" in b and "migrator.to(" in b]
    return example


def docs_examples() -> str:
    """The tests docs/migrations/testing.md shows."""
    (example,) = [b for b in python_blocks(DOCS) if "def test_" in b]
    return example


def code_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def write_migrations(folder: Path, people: str = PEOPLE, split: str = SPLIT) -> None:
    migrations = folder / "migrations"
    migrations.mkdir(exist_ok=True)
    (migrations / "001_people.py").write_text(people, encoding="utf-8")
    (migrations / "002_split_name.py").write_text(split, encoding="utf-8")
    write_sum(migrations)


@pytest.fixture
def project(
    pytester: pytest.Pytester, pg: Server, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """A project folder with the two migrations; its test databases go to the tests' server."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DATALAYER_DEV_DATABASE_URL", pg.admin.url(masked=False))
    pytester.makepyprojecttoml('[tool.datalayer]\nmigrations = "migrations"\n')
    write_migrations(pytester.path)
    return pytester


def test_readme_example_is_at_most_15_lines() -> None:
    assert len(readme_example().strip().splitlines()) <= 15


def test_docs_show_this_data_migration() -> None:
    (shown,) = [b for b in python_blocks(DOCS) if "def migrate(" in b]
    assert code_lines(shown) == code_lines(SPLIT)


def test_examples_and_history_test_pass_on_a_good_history(project: pytest.Pytester) -> None:
    project.makepyfile(test_split=readme_example(), test_docs=docs_examples())
    project.makeconftest(HISTORY_LINE)
    result = project.runpytest(*QUIET, "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["conftest.py::test_migration_history PASSED*"])


@pytest.mark.parametrize("how", [(), ("conftest.py",), ("-o", "python_files=*.py")])
def test_the_history_test_is_collected_once(
    pytester: pytest.Pytester, how: tuple[str, ...]
) -> None:
    pytester.makeconftest(HISTORY_LINE)
    result = pytester.runpytest(*QUIET, "--collect-only", "-q", *how)
    assert result.stdout.lines.count("conftest.py::test_migration_history") == 1


def test_broken_data_migration_fails_the_example(project: pytest.Pytester) -> None:
    broken = SPLIT.replace("last_name = split_part(name, ' ', 2)", "last_name = name")
    assert broken != SPLIT
    write_migrations(project.path, split=broken)
    project.makepyfile(test_split=readme_example())
    result = project.runpytest(*QUIET)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError*", "*'Ada Lovelace'*"])


def test_history_test_fails_on_a_wrong_rollback(project: pytest.Pytester) -> None:
    # The rollback forgets to drop the columns the migration added.
    wrong = SPLIT.replace(
        '    migrator.remove_fields("people", "first_name", "last_name")\n', ""
    )
    assert wrong != SPLIT
    write_migrations(project.path, split=wrong)
    project.makeconftest(HISTORY_LINE)
    result = project.runpytest(*QUIET)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "down: rolling back 002_split_name: the database at 001_people differs from the "
        "replayed state:",
        '  - people: column "first_name" exists in the database but not in the replayed '
        "migrations (character varying(100))",
        '  - people: column "last_name" *',
    ])
    assert "Traceback" not in result.stdout.str()


def test_history_test_fails_when_a_rollback_fails(project: pytest.Pytester) -> None:
    wrong = SPLIT.replace(
        "    migrator.add_not_null(\"people\", \"name\")\n",
        "    migrator.sql(\"SELECT no_such_function()\")\n",
    )
    assert wrong != SPLIT
    write_migrations(project.path, split=wrong)
    project.makepyfile(test_history=HISTORY_LINE)  # a test module may import it too
    result = project.runpytest(*QUIET)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "down: rolling back 002_split_name failed: *no_such_function*",
        "FAILED test_history.py::test_migration_history*",
    ])


def test_a_missing_folder_is_one_line(project: pytest.Pytester) -> None:
    project.makepyprojecttoml('[tool.datalayer]\nmigrations = "db/migrations"\n')
    project.makepyfile(test_split=readme_example())
    result = project.runpytest(*QUIET)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "datalayer: migrations folder *db/migrations does not exist; *",
    ])
    out = result.stdout.str()
    assert "Traceback" not in out and "During handling" not in out and "_tester.py" not in out


def test_plugin_does_nothing_unless_used(pytester: pytest.Pytester) -> None:
    """Loaded by its entry point, the plugin imports nothing and adds no test of its own."""
    pytester.makeconftest("")  # a conftest.py without the history line
    pytester.makepyfile(test_plain="""
        import sys

        def test_plain(request):
            assert request.config.pluginmanager.has_plugin("datalayer")
            loaded = [m for m in ("peewee", "psycopg2", "datalayer.config",
                                  "datalayer.testing._tester") if m in sys.modules]
            assert loaded == []
    """)
    result = pytester.runpytest_subprocess(*QUIET)
    result.assert_outcomes(passed=1)


# -- the tester itself, without a pytest run inside ------------------------------------


@pytest.fixture
def tester(pg: Server, tmp_path: Path) -> Iterator[MigrationTester]:
    write_migrations(tmp_path)
    admin = Settings.from_url(pg.admin.url(masked=False))
    with MigrationTester.fresh(admin, tmp_path / "migrations") as made:
        yield made


def test_to_moves_both_ways_and_keeps_rows(tester: MigrationTester) -> None:
    assert tester.current is None
    assert tester.to("001") == ["001_people"]
    people = tester.models("people")
    people.insert_many([{"name": "Ada Lovelace"}, {"name": "Alan Turing"}]).execute()
    assert tester.to("002_split_name") == ["002_split_name"]
    person = tester.models("Person")
    assert sorted((p.first_name, p.last_name) for p in person.select()) == [
        ("Ada", "Lovelace"), ("Alan", "Turing")]
    assert not hasattr(person, "name")
    assert tester.to("002_split_name") == []
    assert tester.to(None) == ["002_split_name", "001_people"]
    assert tester.applied == []
    tables = tester.db.execute_sql(
        "SELECT count(*) FROM pg_tables WHERE tablename = 'people'").fetchone()
    assert tables == (0,)


def test_unknown_names_say_what_exists(tester: MigrationTester) -> None:
    with pytest.raises(LookupError, match=r"no migration '003' in .*; give one of: "
                       r"001_people, 002_split_name \(or None: empty\)"):
        tester.to("003")
    with pytest.raises(LookupError, match=r"no model 'Person' before the first migration; "
                       r"the models there: none"):
        tester.models("Person")
    tester.to("001_people")
    with pytest.raises(LookupError, match=r"no model 'User' after 001_people; the models "
                       r"there: Person \(people\)"):
        tester.models("User")


def test_the_databases_are_dropped(pg: Server, tmp_path: Path) -> None:
    write_migrations(tmp_path)
    admin = Settings.from_url(pg.admin.url(masked=False))
    ours = f"datalayer\\_check\\_%\\_{os.getpid()}\\_%"  # scratch.py's names, this process
    query = "SELECT datname FROM pg_database WHERE datname LIKE %s"
    conn = pg.raw()
    try:
        with conn.cursor() as cur:
            with MigrationTester.fresh(admin, tmp_path / "migrations") as made:
                made.to("002")
                cur.execute(query, (ours,))
                assert len(cur.fetchall()) == 1
            cur.execute(query, (ours,))
            assert cur.fetchall() == []
    finally:
        conn.close()



AGE = """
import peewee as pw
from datalayer.migrate.ops import extend


def migrate(migrator, database, *, fake=False):
    extend(migrator).add_fields(
        "people", age=pw.IntegerField(null=True, constraints=[pw.Check("age >= 0")]), online=True)


def rollback(migrator, database, *, fake=False):
    extend(migrator).remove_fields("people", "age")
"""

VALIDATE = """
from datalayer.migrate.ops import extend


def migrate(migrator, database, *, fake=False):
    extend(migrator).validate_constraints("people")


def rollback(migrator, database, *, fake=False):
    return
"""


def test_a_constraint_validated_later_is_no_difference(pg: Server, tmp_path: Path) -> None:
    """The safe form: CHECK ... NOT VALID in one migration, VALIDATE in the next."""
    write_migrations(tmp_path)
    (tmp_path / "migrations" / "003_age.py").write_text(AGE, encoding="utf-8")
    (tmp_path / "migrations" / "004_validate_age.py").write_text(VALIDATE, encoding="utf-8")
    write_sum(tmp_path / "migrations")
    admin = Settings.from_url(pg.admin.url(masked=False))
    with MigrationTester.fresh(admin, tmp_path / "migrations") as made:
        made.to("003")
        valid = made.db.execute_sql(
            "SELECT convalidated FROM pg_constraint WHERE conrelid = 'people'::regclass "
            "AND contype = 'c'").fetchall()
        assert valid == [(False,)]  # the walk below meets a NOT VALID constraint at 003
        made.to(None)
        assert made.walk_history() == []
