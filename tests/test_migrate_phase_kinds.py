"""A statement's phase (expand or contract) comes from what its planner knows, not its text.

The ddl planners give each statement a kind (a key of :data:`.facts.EFFECTS`, whose
``expands`` says whether the previous release survives it) and, where the planner
knows better than the kind, its own answer (:meth:`.Sql.expanding`).  Identifiers
and default literals that spell SQL keywords (``'SET NOT NULL'``, a column called
``create index``) must not move a statement to the other phase, in the unit cases
below and when ``apply --phase expand`` runs a generated migration on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from datalayer.migrate.autogenerate.api import create_migration
from datalayer.migrate.ddl.alter import plan_alter, set_not_null
from datalayer.migrate.ddl.spec import TableSpec, table_spec
from datalayer.migrate.operations import Phase
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.phases import phase_of_step
from tests.pgserver import Server
from tests.test_migrate_generate import open_db, rows


def _spec(**fields: pw.Field) -> TableSpec:
    attrs: dict[str, Any] = {"Meta": type("Meta", (), {"table_name": "t"}), **fields}
    return table_spec(type("T", (pw.Model,), attrs))


def _phases(before: dict[str, pw.Field], after: dict[str, pw.Field], *,
            online: bool = False) -> list[tuple[Phase, str]]:
    steps = plan_alter(_spec(**before), _spec(**after), online=online)
    return [(phase_of_step(s), str(s)) for s in steps]


FOOLING_DEFAULT = pw.SQL("DEFAULT 'SET NOT NULL; DROP COLUMN x; RENAME '")


@pytest.mark.parametrize("online", [False, True], ids=["plain", "safe"])
def test_a_default_literal_spelling_keywords_keeps_an_added_column_in_expand(
    online: bool,
) -> None:
    found = _phases({}, {"c": pw.TextField(null=True, constraints=[FOOLING_DEFAULT])},
                    online=online)
    assert [p for p, _ in found] == [Phase.EXPAND], found


def test_identifiers_spelling_keywords_do_not_move_statements() -> None:
    # NOT NULL without a DEFAULT: the old release's INSERTs fail, whatever the column's name.
    added = _phases({}, {"create index": pw.TextField()})
    assert [p for p, _ in added] == [Phase.CONTRACT], added
    # DROP DEFAULT breaks the old release's INSERTs that relied on it.
    dropped = _phases({"set default": pw.TextField(constraints=[pw.SQL("DEFAULT 'x'")])},
                      {"set default": pw.TextField()})
    assert [p for p, _ in dropped] == [Phase.CONTRACT], dropped
    # DROP NOT NULL is a constraint less: old code's writes still pass.
    relaxed = _phases({"drop column": pw.TextField()}, {"drop column": pw.TextField(null=True)})
    assert [p for p, _ in relaxed] == [Phase.EXPAND], relaxed
    # A new index, on a column whose name reads like a rename.
    indexed = _phases({"rename x": pw.TextField()}, {"rename x": pw.TextField(index=True)})
    assert [p for p, _ in indexed] == [Phase.EXPAND], indexed


def test_the_check_behind_an_online_set_not_null_is_contract() -> None:
    steps = set_not_null("t", '"t"', "c", online=True)
    assert [phase_of_step(s) for s in steps] == [Phase.CONTRACT] * 4


def test_apply_phase_expand_adds_the_column_whose_default_spells_keywords(
    pg: Server, tmp_path: Path
) -> None:
    """End to end: the generated migration's ADD COLUMN runs in the expand phase."""
    def models(extra: bool) -> list[type[pw.Model]]:
        attrs: dict[str, Any] = {"Meta": type("Meta", (), {"table_name": "items"}),
                                 "name": pw.TextField()}
        if extra:
            attrs["note"] = pw.TextField(null=True, constraints=[FOOLING_DEFAULT])
        return [type("Item", (pw.Model,), attrs)]

    with pg.database("dlphasekinds") as dbname:
        db = open_db(pg, dbname)
        try:
            mdir = tmp_path / "migrations"
            assert create_migration(Router(db, mdir), "items", models(False)) is not None
            assert create_migration(Router(db, mdir), "note", models(True)) is not None
            runner.apply(db, mdir, to="001_items", verify_checksums=False)
            db.execute_sql("INSERT INTO items (name) VALUES ('a')")
            done = runner.apply(db, mdir, phase="expand", verify_checksums=False)
            assert [a.name for a in done] == ["002_note"]
            assert rows(db, "SELECT note FROM items") == [("SET NOT NULL; DROP COLUMN x; RENAME ",)]
        finally:
            db.close()
