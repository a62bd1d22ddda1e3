"""Defects of the generator found from outside, after the cases of ``test_migrate_outside_cases``.

Same harness and checks: each change is generated, applied on tables with rows, must
reproduce ``create_tables()``, re-diff empty, roll back keeping the rows and apply
again, in the safe forms and with ``--unsafe``, and ``check``'s lint passes on it.

* The primary key moved to another existing (unique) column: the old key goes, which
  code of the release before may rely on (``ON CONFLICT`` on it): it is the contract
  part of the migration, in both forms (it ran in the expand part).
* A table dropped while a kept foreign key column moves to a new, empty table: written
  (it works while the column holds no values), with a warning that says what fails
  while it holds values and the ways out (it spoke of the rollback only); with values,
  the migration (and its rollback) stops first, nothing changed (the safe form's
  transactional part had committed and its validation failed).
* ``Meta.table_settings`` changed: ``WITH (...)`` storage parameters are set and reset
  in place; other settings (``INHERITS``, ``PARTITION BY``: no in-place form;
  ``TABLESPACE``: a move diff does not write) are refused with the way out (the change
  was not seen by diff or check at all).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from datalayer.errors import GenerationError
from datalayer.migrate.autogenerate.api import create_migration, diff_source
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.files import Router
from datalayer.models.fields import uuid_pk
from tests._migrate_cases import (  # noqa: F401 (the two fixtures: pytest finds them here)
    Case,
    Models,
    both_forms,
    check_passes,
    emptied,
    module_db_fixture,
    ref_db_fixture,
    run_case,
)
from tests._migrate_cases import refused as _refused
from tests._migrate_cases import rows_equal as _eq
from tests.pgserver import Server
from tests.test_migrate_generate import PlainRouter, item, model, open_db, rows


def _things(key: str) -> Callable[[], Models]:
    """things(id integer, code varchar), both unique, ``key`` the primary key."""
    def models() -> Models:
        fields: dict[str, Any] = {
            "id": pw.IntegerField(primary_key=key == "id", unique=key != "id"),
            "code": pw.CharField(max_length=5, primary_key=key == "code", unique=key != "code"),
        }
        meta = type("Meta", (), {"table_name": "things", "legacy_table_names": False})
        return [type("Thing", (pw.Model,), {"Meta": meta, "__module__": __name__, **fields})]
    return models


SEED_THINGS = "INSERT INTO things (id, code) VALUES (1, 'a'), (2, 'b')"


def _primary_key(db: pw.Database, table: str) -> list[str]:
    return [r[0] for r in rows(db, (
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        f"AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{table}'::regclass "
        "AND i.indisprimary ORDER BY a.attname"))]


def _owner(table: str = "owners") -> type[pw.Model]:
    """owners (class Owner) or another table of the same shape (class Holder)."""
    return model("Owner" if table == "owners" else "Holder", table, id=uuid_pk("owner_id"),
                 code=pw.CharField(max_length=5))


def _owned(table: str = "owners", *, fk: bool = True, keep: Sequence[str] = ()) -> Callable[
        [], Models]:
    """items.owner_id: a foreign key to ``table`` (else a plain uuid); ``keep``: more tables."""
    def models() -> Models:
        owner = _owner(table)
        kept = [_owner(t) if t != table else owner for t in keep]
        column = (pw.ForeignKeyField(owner, column_name="owner_id", null=True, backref="+")
                  if fk else pw.UUIDField(column_name="owner_id", null=True))
        return [*dict.fromkeys([owner, *kept]), item(owner=column)]
    return models


SEED_OWNERS = ("INSERT INTO owners (code) VALUES ('o1'); "
               "INSERT INTO items (name, owner_id) SELECT 'a', owner_id FROM owners; "
               "INSERT INTO items (name) VALUES ('b')")


def _cached(*settings: str) -> Callable[[], Models]:
    """cached(key unique) with ``Meta.table_settings``, beside items."""
    def models() -> Models:
        meta: dict[str, Any] = {"table_name": "cached", "legacy_table_names": False}
        if settings:
            meta["table_settings"] = list(settings)
        cached = type("Cached", (pw.Model,), {"Meta": type("Meta", (), meta),
                                              "__module__": __name__,
                                              "key": pw.CharField(max_length=9, unique=True)})
        return [item(), cached]
    return models


def _reloptions(expected: list[str] | None) -> Callable[[pw.Database], None]:
    return _eq("SELECT reloptions FROM pg_class WHERE relname = 'cached'", [(expected,)])


SEED_CACHED = "INSERT INTO cached (key) VALUES ('k1'), ('k2')"


CASES = (
    Case("key_moved_to_a_unique_column", _things("id"), _things("code"), SEED_THINGS,
         after=_refused("INSERT INTO things (id, code) VALUES (3, 'a')"),
         after_rollback=_refused("INSERT INTO things (id, code) VALUES (1, 'c')")),
    Case("table_settings_storage_parameter_added", _cached(), _cached("WITH (fillfactor=70)"),
         SEED_CACHED, after=_reloptions(["fillfactor=70"]), after_rollback=_reloptions(None)),
    Case("table_settings_storage_parameters_changed",
         _cached("WITH (fillfactor=70, autovacuum_enabled=false)"),
         _cached("WITH (fillfactor = 80)"), SEED_CACHED,
         after=_reloptions(["fillfactor=80"]),
         after_rollback=_reloptions(["fillfactor=70", "autovacuum_enabled=false"])),
    Case("table_settings_removed", _cached("WITH (fillfactor=70)"), _cached(), SEED_CACHED,
         after=_reloptions(None), after_rollback=_reloptions(["fillfactor=70"])),
)


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
def test_key_moved_to_another_column_is_the_contract_part(
    unsafe: bool, pg: Server, tmp_path: Path
) -> None:
    """``apply --phase expand`` leaves the key where the release before expects it.

    The old release upserts ``ON CONFLICT (id)`` through the window; the contract part
    moves the key to ``code``.
    """
    with pg.database("dlkeyphase") as dbname:
        db = open_db(pg, dbname)
        try:
            mdir = tmp_path / "migrations"
            assert create_migration(Router(db, mdir), "things", _things("id")()) is not None
            assert create_migration(Router(db, mdir), "key", _things("code")(),
                                    unsafe=unsafe) is not None
            runner.apply(db, mdir, to="001_things", verify_checksums=False)
            db.execute_sql(SEED_THINGS)
            runner.apply(db, mdir, phase="expand", verify_checksums=False)
            assert _primary_key(db, "things") == ["id"], "the key moved in the expand part"
            db.execute_sql("INSERT INTO things (id, code) VALUES (1, 'z') "
                           "ON CONFLICT (id) DO UPDATE SET code = 'a'")
            runner.apply(db, mdir, phase="contract", verify_checksums=False)
            assert _primary_key(db, "things") == ["code"]
            assert rows(db, "SELECT id, code FROM things ORDER BY id") == [(1, "a"), (2, "b")]
        finally:
            db.close()


# -- a foreign key moved to a new table while its table goes ---------------------------


def _holders_hinted() -> Models:
    from datalayer.migrate.autogenerate.hints import renamed_from

    holders = renamed_from(_owner("holders"), "owners")
    return [holders, item(owner=pw.ForeignKeyField(holders, column_name="owner_id",
                                                   null=True, backref="+"))]


FK_MOVED_WARNING = (
    "moves the foreign key of items.owner_id from owners, which goes, to holders, created "
    "empty: while items.owner_id holds values (they refer to rows of owners) the migration "
    "stops first, nothing changed, and its rollback, which re-creates owners empty and adds "
    "the foreign key back, stops first while items.owner_id holds values; if owners was "
    "renamed to holders, mark it instead: @renamed_from(\"owners\") above class Holder (rows "
    "and keys are carried over); otherwise set items.owner_id to NULL before applying and "
    "before rolling back")


FK_CASES = (
    # items.owner_id holds no value: the file works both ways (owners comes back empty).
    Case("fk_moved_to_a_new_table_while_its_table_goes", _owned(), _owned("holders"),
         "INSERT INTO owners (code) VALUES ('o1'); INSERT INTO items (name) VALUES ('a')",
         allow_drop=True, rollback_keeps_rows=False, warns=(FK_MOVED_WARNING,),
         after=_refused("INSERT INTO items (name, owner_id) VALUES ('b', gen_random_uuid())")),
    # The way out the warning names first: the rename marked, rows and keys carried over.
    Case("fk_moved_with_its_table_renamed", _owned(), _holders_hinted, SEED_OWNERS,
         after=_eq("SELECT count(*) FROM items JOIN holders USING (owner_id)", [(1,)])),
)


@pytest.mark.parametrize("case", CASES + FK_CASES, ids=[c.id for c in CASES + FK_CASES])
def test_model_change(
    case: Case, pg: Server, module_db: pw.Database, ref_db: pw.Database, tmp_path: Path
) -> None:
    """The safe forms, then the plain ones; check's lint on the safe form."""
    for form in both_forms(case):
        (tmp_path / form.id).mkdir()
        run_case(form, emptied(module_db), ref_db, tmp_path / form.id, reapply=True)
    check_passes(pg, tmp_path, case.v1(), case.v2(), allow_drop=case.allow_drop,
                 lint_only=True)


@pytest.mark.parametrize("unsafe", [False, True], ids=["safe", "unsafe"])
def test_fk_moved_off_a_dropped_table_with_values_stops_first(
    unsafe: bool, pg: Server, tmp_path: Path
) -> None:
    """While items.owner_id holds values, the migration stops before any change, saying why.

    Then, the values cleared (the way out the warning names), it applies; the rollback
    stops likewise while the column holds values.
    """
    from datalayer.errors import MigrationError
    from datalayer.migrate.runtime.checksum import write_sum
    from datalayer.migrate.runtime.rollback import rollback

    with pg.database("dlfkmoved") as dbname:
        db = open_db(pg, dbname)
        try:
            mdir = tmp_path / "migrations"
            assert create_migration(Router(db, mdir), "v1", _owned()()) is not None
            second = create_migration(Router(db, mdir), "v2", _owned("holders")(),
                                      allow_drop=True, unsafe=unsafe)
            assert second is not None and FK_MOVED_WARNING in second.warnings
            write_sum(mdir)
            runner.apply(db, mdir, to="001_v1", verify_checksums=False)
            db.execute_sql(SEED_OWNERS)
            with pytest.raises(MigrationError) as stopped:
                runner.apply(db, mdir, verify_checksums=False)
            assert ("this migration moves the foreign key of items.owner_id from owners, "
                    "which goes, to holders, created empty, and items.owner_id holds values: "
                    "set them to NULL first (nothing was changed)") in str(stopped.value)
            assert rows(db, "SELECT to_regclass('owners') IS NOT NULL, "
                            "to_regclass('holders') IS NULL") == [(True, True)], "nothing ran"
            assert rows(db, "SELECT count(owner_id) FROM items") == [(1,)]
            db.execute_sql("UPDATE items SET owner_id = NULL")  # the way out it names
            runner.apply(db, mdir, verify_checksums=False)
            assert rows(db, "SELECT to_regclass('owners') IS NULL") == [(True,)]
            db.execute_sql("INSERT INTO holders (code) VALUES ('h'); "
                           "UPDATE items SET owner_id = (SELECT owner_id FROM holders)")
            with pytest.raises(MigrationError) as refused:
                rollback(db, mdir, steps=len(second.names))
            assert ("this rollback moves the foreign key of items.owner_id from holders, "
                    "which goes, to owners, created empty, and items.owner_id holds values"
                    ) in str(refused.value), str(refused.value)
            assert rows(db, "SELECT to_regclass('holders') IS NOT NULL") == [(True,)]
        finally:
            db.close()


# -- table settings -------------------------------------------------------------------


def test_table_settings_change_is_found(module_db: pw.Database, tmp_path: Path) -> None:
    """A changed ``Meta.table_settings`` is a change: diff writes it (it found none)."""
    router = PlainRouter(emptied(module_db), tmp_path)
    assert create_migration(router, "v1", _cached("WITH (fillfactor=70)")()) is not None
    assert diff_source(router, _cached("WITH (fillfactor=70)")()) is None
    found = diff_source(router, _cached("WITH (fillfactor=90)")())
    assert found is not None
    migrate, rollback = found
    assert "table_settings" in migrate and "fillfactor=90" in migrate, migrate
    assert "fillfactor=70" in rollback, rollback


@pytest.mark.parametrize("settings", [("TABLESPACE pg_default",), ("INHERITS (items)",)])
def test_table_settings_without_an_in_place_form_are_refused(
    settings: tuple[str, ...], module_db: pw.Database, tmp_path: Path
) -> None:
    """A setting other than storage parameters: refused with the way out, nothing written."""
    router = PlainRouter(emptied(module_db), tmp_path)
    assert create_migration(router, "v1", _cached()()) is not None
    for unsafe in (False, True):
        with pytest.raises(GenerationError) as refused:
            create_migration(router, "v2", _cached(*settings)(), unsafe=unsafe)
        message = str(refused.value)
        assert (f"cached: Meta.table_settings changes from [] to {list(settings)!r}, and "
                f"{settings[0]!r} is not changed in place by diff: only WITH (...) storage "
                "parameters are changed in place: create a new model with the settings, copy "
                "the rows, then drop the old one") in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["001_v1.py"], "nothing written"


def test_check_finds_a_table_settings_change(pg: Server, tmp_path: Path) -> None:
    """``migrate check`` fails while the models' table settings differ from the history."""
    from datalayer.db import Database
    from datalayer.migrate.check import check
    from datalayer.migrate.runtime.checksum import write_sum

    settings = pg.settings("postgres").replace(dev_database_url=pg.admin.url(masked=False))
    directory = tmp_path / "migrations"
    assert create_migration(Router(Database(), directory), "v1", _cached()()) is not None
    write_sum(directory)
    v2 = _cached("WITH (fillfactor=70)")()
    problems = check(settings, directory, v2)
    assert any("the models changed without a migration" in p
               and "table_settings=['WITH (fillfactor=70)']" in p for p in problems), problems
    assert create_migration(Router(Database(), directory), "v2", v2) is not None
    write_sum(directory)
    assert check(settings, directory, v2) == []
