"""Lint rules for a collation change and for ALTER TABLE ... SET SCHEMA (issue 15, item 6)."""

from __future__ import annotations

from pathlib import Path

from datalayer.migrate.lint import RULES, lint, render_text
from tests.test_migrate_lint import BASE, rules_of, write


def test_a_collation_change_is_flagged_not_as_a_rewrite(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    write(tmp_path, "002_x", 'ALTER TABLE t ALTER COLUMN v TYPE varchar(20) COLLATE "C"')
    report = lint(tmp_path, ["002_x"])
    (statement,) = report.migrations[0].statements
    assert {f.rule for f in statement.findings} == {"changing-column-collation"}
    (finding,) = statement.findings
    assert finding.level == "warning" and RULES[finding.rule].level == "warning"
    assert "t.v from the type's default to C" in finding.message
    assert "every index on the column is rebuilt while ACCESS EXCLUSIVE" in finding.message
    assert (statement.lock, statement.rewrites, statement.scans) == (
        "ACCESS EXCLUSIVE", False, True)
    assert any("rebuilds the indexes" in note for note in statement.notes)
    assert "changing-column-collation" in render_text(report)


def test_a_type_change_that_drops_the_collation_is_a_collation_change(tmp_path: Path) -> None:
    write(tmp_path, "001_base", 'CREATE TABLE t (id bigint PRIMARY KEY, v text COLLATE "C")')
    # No COLLATE clause: the column goes back to the type's default collation.
    write(tmp_path, "002_x", "ALTER TABLE t ALTER COLUMN v TYPE text")
    assert rules_of(tmp_path, "002_x") == {"changing-column-collation"}
    write(tmp_path, "002_x", 'ALTER TABLE t ALTER COLUMN v TYPE text COLLATE "C"')
    assert rules_of(tmp_path, "002_x") == set()  # the same collation: nothing changes
    # A rewriting change is changing-column-type's alone.
    write(tmp_path, "002_x", "ALTER TABLE t ALTER COLUMN v TYPE varchar(5)")
    assert rules_of(tmp_path, "002_x") == {"changing-column-type"}


def test_set_schema_is_flagged_like_a_rename_and_followed(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    write(tmp_path, "002_x", "CREATE SCHEMA archive\nALTER TABLE u SET SCHEMA archive")
    report = lint(tmp_path, ["002_x"])
    moved = report.migrations[0].statements[1]
    assert [f.rule for f in moved.findings] == ["ban-set-schema"]
    assert moved.findings[0].level == "warning"
    assert "moving table u to schema archive" in moved.findings[0].message
    assert moved.locks == {"u": "ACCESS EXCLUSIVE"}
    # The lint follows the table to its new schema: its old index name is still known.
    write(tmp_path, "003_y", "ALTER TABLE archive.u ALTER COLUMN id TYPE integer")
    assert rules_of(tmp_path, "003_y") == {"changing-column-type"}
    write(tmp_path, "003_y", "ALTER TABLE archive.u ALTER COLUMN id TYPE bigint")
    assert rules_of(tmp_path, "003_y") == set()  # bigint to bigint: known, in place


def test_set_schema_of_a_table_created_in_the_same_migration_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "001_x", "CREATE SCHEMA archive\nCREATE TABLE z (id int)\n"
                             "ALTER TABLE z SET SCHEMA archive")
    assert rules_of(tmp_path, "001_x") == set()
