"""The lint reads rollback SQL too: a rollback is a deploy (issue 15, items 4 and 6).

Each migration's rollback is linted against the schema its migration left,
reported with it as ``NAME (rollback)``, and counted by ``migrate lint`` and
``check``.  A rollback that removes what its own migration made (a table it
created, a column it added) breaks no code: the version that runs before a
rollback never used them.  Generated files, forward and rollback, pass the
lint (a type change needs the allow comment that ``diff`` announces).
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from playhouse.postgres_ext import PostgresqlExtDatabase

import tests.test_migrate_generate as generate
import tests.test_migrate_generate_cases as generate_cases
import tests.test_migrate_safe_forms as safe_forms
from datalayer.migrate.autogenerate.compare import create_migration
from datalayer.migrate.check import lint_problems
from datalayer.migrate.lint import lint, render_json, render_text
from datalayer.migrate.runtime.files import Router
from tests.test_migrate_lint import BASE, write


def write_both(directory: Path, name: str, forward: str, backward: str, *,
               atomic: bool = True, comment: str = "") -> None:
    def body(sql: str) -> str:
        lines = [s.strip() for s in textwrap.dedent(sql).strip().splitlines() if s.strip()]
        return "\n".join(f"    migrator.sql({s!r})" for s in lines) or "    pass"

    header = ("atomic = False\n" if not atomic else "") + (comment + "\n" if comment else "")
    (directory / f"{name}.py").write_text(
        f"{header}\n\ndef migrate(migrator, database, *, fake=False):\n{body(forward)}\n\n\n"
        f"def rollback(migrator, database, *, fake=False):\n{body(backward)}\n",
        encoding="utf-8",
    )


def test_a_rollback_statement_is_linted_and_reported_as_the_rollback(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    write_both(tmp_path, "002_x", "CREATE INDEX CONCURRENTLY t_v ON t (v)", "DROP INDEX t_a",
               atomic=False)
    report = lint(tmp_path, ["002_x"])
    assert report.findings() == [] and report.errors == []  # the forward SQL is fine
    assert not report.ok
    (name, finding), = report.rollback_errors
    assert (name, finding.rule) == ("002_x (rollback)", "require-concurrent-index-deletion")
    (migration,) = report.migrations
    assert [s.sql for s in migration.rollback] == ["DROP INDEX t_a"]
    assert migration.rollback[0].locks == {"t": "ACCESS EXCLUSIVE"}
    text = render_text(report)
    assert "rollback (a rollback is a deploy too):" in text and "DROP INDEX t_a" in text
    assert "1 error(s)" in text
    data = json.loads(render_json(report))
    assert data["errors"] == 1
    assert data["migrations"][0]["rollback"][0]["findings"][0]["rule"] == (
        "require-concurrent-index-deletion")
    problems = lint_problems(tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith("lint 002_x (rollback): require-concurrent-index-deletion: ")


def test_the_rollback_is_linted_on_the_schema_its_migration_left(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    # 002 widens v; its rollback narrows it back: a rewrite, known only from 002's state.
    write_both(tmp_path, "002_x", "ALTER TABLE t ALTER COLUMN v TYPE varchar(50)",
               "ALTER TABLE t ALTER COLUMN v TYPE varchar(20)")
    write_both(tmp_path, "003_y", "ALTER TABLE t ALTER COLUMN v TYPE varchar(80)",
               "ALTER TABLE t ALTER COLUMN v TYPE varchar(50)")
    report = lint(tmp_path)
    assert report.findings() == []
    assert [(n, f.rule) for n, f in report.rollback_errors] == [
        ("002_x (rollback)", "changing-column-type"),
        ("003_y (rollback)", "changing-column-type"),
    ]
    assert "varchar to varchar" in report.rollback_errors[1][1].message
    # The rollbacks change nothing for the migrations after them: 003 widens in place.
    assert not report.migrations[1].statements[0].rewrites


def test_a_rollback_may_remove_what_its_migration_made(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    write_both(tmp_path, "002_x", "CREATE TABLE z (id int)\nALTER TABLE t ADD COLUMN n int",
               "ALTER TABLE t DROP COLUMN n\nDROP TABLE z")
    report = lint(tmp_path, ["002_x"])
    assert report.every_finding() == []
    # What was there before the migration is another matter.
    write_both(tmp_path, "002_x", "CREATE TABLE z (id int)", "DROP TABLE z\nDROP TABLE u\n"
               "ALTER TABLE t DROP COLUMN v")
    rules = {(n, f.rule) for n, f in lint(tmp_path, ["002_x"]).warnings}
    assert rules == {("002_x (rollback)", "ban-drop-table"),
                     ("002_x (rollback)", "ban-drop-column")}


def test_the_allow_comment_covers_the_rollback(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    write_both(tmp_path, "002_x", "SELECT 1", "DROP INDEX t_a",
               comment="# datalayer: allow require-concurrent-index-deletion -- 3 rows")
    report = lint(tmp_path, ["002_x"])
    assert report.ok
    (_, finding), = report.rollback_findings()
    assert finding.allowed and finding.reason == "3 rows"


def _generated(case: Any, directory: Path) -> None:
    router = Router(PostgresqlExtDatabase(None), directory)
    create_migration(router, "v1", case.v1())
    create_migration(Router(PostgresqlExtDatabase(None), directory), "v2", case.v2(),
                     allow_drop=getattr(case, "allow_drop", False))


ALL_CASES = [
    pytest.param(c, id=f"{type(c).__module__[6:]}-{c.id}")
    for c in [*safe_forms.CASES, *generate.CASES, *generate_cases.CASES]
]


@pytest.mark.parametrize("case", ALL_CASES)
def test_no_generated_file_forward_or_rollback_fails_the_lint(case: Any) -> None:
    """Every change of the generator's cases, in the safe forms: files and rollbacks lint clean.

    A type change that rewrites the table is the one error left: ``diff``
    announces it with the expand/contract recipe, and the allow comment is the
    user's decision.
    """
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        _generated(case, directory)
        report = lint(directory)
        errors = [(n, f.rule, f.message) for n, f in [*report.errors, *report.rollback_errors]
                  if f.rule != "changing-column-type"]
        assert errors == [], render_text(report)
