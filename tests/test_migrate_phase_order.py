"""``apply --phase expand`` then ``--phase contract`` ends where a plain ``apply`` does.

The split into phases must respect the order of a migration's operations: an
operation that needs an earlier contract operation (a sequence it creates, a
table it renames or moves, a column it retypes, an index it drops under the same
name) cannot run before it.  Each case below is a generator case of one such kind
(issue 15): v1 is applied and seeded, v2 (one or two files) is applied by expand
then contract on one database and plainly on another; both schemas must be equal
(and equal ``create_tables()`` of v2), and rolling back must restore v1's.  A
rename the phased form cannot carry is refused at expand, with nothing applied.
"""

from __future__ import annotations

from pathlib import Path

import peewee as pw
import pytest

from datalayer.errors import MigrationError
from datalayer.migrate.autogenerate.api import create_migration
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.rollback import rollback
from tests import test_migrate_generate_cases as gen
from tests import test_migrate_more_cases as more
from tests import test_migrate_outside_cases as outside
from tests._migrate_cases import (  # noqa: F401 (the two fixtures: pytest finds them here)
    Case,
    declared,
    differences,
    emptied,
    module_db_fixture,
    ref_db_fixture,
    snapshots,
)
from tests.test_migrate_generate import rows

_ALL = {c.id: c for c in [*gen.CASES, *gen.MORE, *gen.ITEM6_CASES, *more.CASES, *outside.CASES]}

ORDERED = [
    # SET DEFAULT nextval(...) needs the CREATE SEQUENCE before it
    "pk_integer_to_autofield",
    "serial_key_on_a_long_table_name",
    "serial_key_to_uuid",
    # ADD COLUMN / a foreign key on a table renamed earlier in the file
    "table_renamed_and_column_renamed_in_one_step",
    "model_and_column_renamed",
    "renamed_table_and_referenced_column",
    # ... or earlier, in the first of two files (moved to another schema, renamed)
    "changes_inside_another_schema",
    "table_renamed_with_on_delete_changed",
    # a GIN index (second file) on a column retyped to JSONB (first file)
    "json_to_jsonb_with_its_gin_index",
    # a sequence made in the first file, used in the second
    "keyless_table_given_a_serial_key",
    # a primary key column dropped: it keeps its NOT NULL in expand
    "serial_key_dropped_leaving_no_key",
    # an index dropped and made again under the same name
    "index_made_unique",
    "fk_made_one_to_one",
    # a rename then its index under a new name; an index naming it in WHERE
    "column_in_unique_together_renamed",
    "column_in_a_partial_index_condition_renamed",
    # a schema made for a new table
    "odd_identifiers",
]

REFUSED = {
    "composite_key_column_renamed": "it is part of the primary key",
    "referenced_column_renamed": 'a foreign key of "items" refers to it',
}


def _generate(case: Case, db: pw.Database, directory: Path) -> list[str]:
    """Apply v1 on the emptied ``db``, seed it, write v2; return v2's file names."""
    emptied(db)
    assert create_migration(Router(db, directory), "v1", case.v1()) is not None
    runner.apply(db, directory, verify_checksums=False)
    if case.seed:
        db.execute_sql(case.seed)
    second = create_migration(Router(db, directory), "v2", case.v2(),
                              allow_drop=case.allow_drop, unsafe=case.unsafe)
    assert second is not None
    write_sum(directory)
    return list(second.names)


@pytest.mark.parametrize("case_id", ORDERED)
def test_expand_then_contract_ends_as_a_plain_apply(
    case_id: str, module_db: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    case = _ALL[case_id]
    _generate(case, ref_db, tmp_path / "plain")
    runner.apply(ref_db, tmp_path / "plain")
    plain = snapshots(ref_db)

    names = _generate(case, module_db, tmp_path / "phased")
    v1 = snapshots(module_db)
    expanded = runner.apply(module_db, tmp_path / "phased", phase="expand")
    assert [a.name for a in expanded] == names
    contracted = runner.apply(module_db, tmp_path / "phased", phase="contract")
    assert [a.name for a in contracted] == names
    assert differences(plain, snapshots(module_db)) == []
    assert differences(declared(ref_db, case.v2()), plain) == []
    rollback(module_db, tmp_path / "phased", steps=len(names))
    assert differences(v1, snapshots(module_db)) == [], "rollback must restore the v1 schema"


@pytest.mark.parametrize("case_id", sorted(REFUSED))
def test_a_rename_the_phased_form_cannot_carry_is_refused(
    case_id: str, module_db: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    case = _ALL[case_id]
    _generate(case, module_db, tmp_path)
    v1 = snapshots(module_db)
    with pytest.raises(MigrationError, match=f"in phases: {REFUSED[case_id]}"):
        runner.apply(module_db, tmp_path, phase="expand")
    assert differences(v1, snapshots(module_db)) == []
    runner.apply(module_db, tmp_path)  # without --phase it applies
    assert differences(declared(ref_db, case.v2()), snapshots(module_db)) == []


SAME_NAME = '''
import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    from datalayer.migrate.ops import extend

    m = extend(migrator)
    m.remove_fields("items", "code")
    m.add_fields("items", extra=pw.TextField(null=True))
    m.add_fields("items", code=pw.IntegerField(null=True), note=pw.TextField(null=True))


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    from datalayer.migrate.ops import extend

    m = extend(migrator)
    m.remove_fields("items", "code", "note", "extra")
    m.add_fields("items", code=pw.TextField(null=True))
'''


def test_a_column_dropped_and_added_again_under_its_name_waits_for_the_drop(
    module_db: pw.Database, tmp_path: Path
) -> None:
    """A drop holds back what reuses the name it frees, not the rest of its table."""
    def items() -> list[type[pw.Model]]:
        meta = type("Meta", (), {"table_name": "items"})
        return [type("Item", (pw.Model,), {"Meta": meta, "code": pw.TextField()})]

    emptied(module_db)
    assert create_migration(Router(module_db, tmp_path), "items", items()) is not None
    (tmp_path / "002_code.py").write_text(SAME_NAME)
    runner.apply(module_db, tmp_path, to="001_items", verify_checksums=False)
    module_db.execute_sql("INSERT INTO items (code) VALUES ('x')")
    columns = ("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
               "WHERE table_name = 'items' ORDER BY column_name")
    runner.apply(module_db, tmp_path, phase="expand", verify_checksums=False)
    # the drop's expand part (its NOT NULL) and the unrelated column ran; the new code waits
    assert rows(module_db, columns) == [("code", "text", "YES"), ("extra", "text", "YES"),
                                        ("id", "integer", "NO")]
    runner.apply(module_db, tmp_path, phase="contract", verify_checksums=False)
    assert rows(module_db, columns) == [
        ("code", "integer", "YES"), ("extra", "text", "YES"), ("id", "integer", "NO"),
        ("note", "text", "YES")]


def test_a_phase_table_of_an_earlier_release_gets_its_holds_column(
    module_db: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    case = _ALL["json_to_jsonb_with_its_gin_index"]  # two files: the second needs the first
    names = _generate(case, module_db, tmp_path)
    module_db.execute_sql(  # as ensure_table made it before the holds column
        "CREATE TABLE migratehistory_phases (id SERIAL PRIMARY KEY, name VARCHAR(255) NOT "
        "NULL, phase VARCHAR(16) NOT NULL, checksum VARCHAR(64), applied_at TIMESTAMP NOT NULL)")
    assert runner.apply(module_db, tmp_path, phase="expand", dry_run=True) != []
    assert [a.name for a in runner.apply(module_db, tmp_path, phase="expand")] == names
    assert [a.name for a in runner.apply(module_db, tmp_path, phase="contract")] == names
    assert differences(declared(ref_db, case.v2()), snapshots(module_db)) == []
