"""Model changes real Peewee projects make, tried from outside as issue 15 item 6 tries them.

Same harness and same checks as :mod:`tests.test_migrate_more_cases`: each case is
generated, applied on tables with rows, must reproduce ``create_tables()``, re-diff
empty, roll back keeping the rows and apply again, in the safe forms and with
``--unsafe``; the lint of every file (forward and rollback) is clean but for the rules
``diff`` announced.  A change the generator cannot write correctly is refused with a
message that names the cause and the way out (``test_refused``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from datalayer.errors import GenerationError
from datalayer.migrate.autogenerate.api import create_migration
from datalayer.models.fields import uuid_pk
from tests._migrate_cases import (  # noqa: F401 (the two fixtures: pytest finds them here)
    Case,
    Models,
    both_forms,
    check_passes,
    emptied,
    fails_sql,
    module_db_fixture,
    ref_db_fixture,
    run_case,
)
from tests.pgserver import Server
from tests.test_migrate_generate import PlainRouter, item, model, rows

SEED = "INSERT INTO items (name) VALUES ('a'), ('b')"


def _eq(sql: str, expected: list[tuple[Any, ...]]) -> Callable[[pw.Database], None]:
    def after(db: pw.Database) -> None:
        assert rows(db, sql) == expected
    return after


def _refused(sql: str) -> Callable[[pw.Database], None]:
    def after(db: pw.Database) -> None:
        assert fails_sql(db, sql), f"expected the database to refuse: {sql}"
    return after


def _items(**fields: Any) -> Callable[[], Models]:
    return lambda: [item(**fields)]


def _members(key: tuple[str, ...] | None) -> Callable[[], Models]:
    """members(user, org, role): a serial ``id`` key (None) or a composite one."""
    def models() -> Models:
        fields: dict[str, Any] = {"user": pw.IntegerField(), "org": pw.IntegerField(),
                                  "role": pw.CharField(max_length=10, default="member")}
        if key is None:
            fields["id"] = pw.AutoField()
        meta = type("Meta", (), {"table_name": "members", "legacy_table_names": False,
                                 "primary_key": pw.CompositeKey(*key) if key else None})
        if key is None:
            del meta.primary_key
        return [type("Member", (pw.Model,), {"Meta": meta, "__module__": __name__, **fields})]
    return models


SEED_MEMBERS = ("INSERT INTO members (\"user\", org, role) "
                "VALUES (1, 1, 'a'), (1, 2, 'b'), (2, 1, 'c')")


CASES = (
    # -- keys -------------------------------------------------------------------------
    Case("serial_key_replaced_by_composite_key", _members(None), _members(("user", "org")),
         SEED_MEMBERS, allow_drop=True),
    Case("composite_key_replaced_by_serial_key", _members(("user", "org")), _members(None),
         SEED_MEMBERS),
)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_model_change(
    case: Case, pg: Server, module_db: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    """The safe forms, then the plain ones, each in the module's database emptied."""
    for form in both_forms(case):
        (tmp_path / form.id).mkdir()
        run_case(form, emptied(module_db), ref_db, tmp_path / form.id, reapply=True)
    check_passes(pg, tmp_path, case.v1(), case.v2(), allow_drop=case.allow_drop,
                 lint_only=True)


def _owner() -> type[pw.Model]:
    return model("Owner", "owners", id=uuid_pk("owner_id"), code=pw.CharField(max_length=5))


def _with_owner() -> Models:
    owner = _owner()
    return [owner, item(owner=pw.ForeignKeyField(owner, column_name="owner_id", null=True,
                                                 backref="+"))]


SEED_OWNERS = ("INSERT INTO owners (code) VALUES ('o1'); "
               "INSERT INTO items (name, owner_id) SELECT 'a', owner_id FROM owners; "
               "INSERT INTO items (name) VALUES ('b')")


def test_referenced_table_dropped_with_its_foreign_key_is_refused(
    module_db: pw.Database, tmp_path: Path
) -> None:
    """Dropping owners and the foreign key of a kept items.owner_id in one diff is refused.

    Its rollback would re-create owners empty and fail to add the foreign key back while
    items.owner_id holds values; the message names the cause and the way out.
    """
    router = PlainRouter(emptied(module_db), tmp_path)
    assert create_migration(router, "v1", _with_owner()) is not None
    router.run()
    with pytest.raises(GenerationError) as refused:
        create_migration(router, "v2", [item(owner_id=pw.UUIDField(null=True))],
                         allow_drop=True)
    message = str(refused.value)
    assert ("items.owner_id keeps its values but its foreign key to owners goes with the "
            "table owners: the rollback would re-create owners empty and could not add the "
            "foreign key back while items.owner_id holds values. Drop the foreign key first"
            ) in message, message
    assert "then remove the model of owners and run diff --allow-drop" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001_v1.py"], "nothing written"


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
def test_referenced_table_dropped_in_two_migrations(
    unsafe: bool, pg: Server, module_db: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    """The way out the refusal names: the foreign key dropped first, then the table.

    Each is a case of its own: applied on rows, rolled back keeping them, applied again.
    """
    plain_fk = lambda: [_owner(), item(owner=pw.UUIDField(column_name="owner_id",  # noqa: E731
                                                          null=True))]
    first = Case("fk_dropped_column_kept", _with_owner, plain_fk, SEED_OWNERS, unsafe=unsafe)
    (tmp_path / "first").mkdir()
    run_case(first, emptied(module_db), ref_db, tmp_path / "first", reapply=True)
    second = Case("table_dropped", plain_fk, lambda: [item(owner=pw.UUIDField(
        column_name="owner_id", null=True))], SEED_OWNERS, allow_drop=True, unsafe=unsafe,
                  rollback_keeps_rows=False)  # owners comes back empty
    (tmp_path / "second").mkdir()
    run_case(second, emptied(module_db), ref_db, tmp_path / "second", reapply=True)
    if not unsafe:  # each file's lint, forward and rollback
        for k, case in enumerate((first, second)):
            check_passes(pg, tmp_path / f"lint{k}", case.v1(), case.v2(),
                         allow_drop=case.allow_drop, lint_only=True)
