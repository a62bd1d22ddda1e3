"""`datalayer migrate sql`: the SQL the migrations run, rendered without a database.

Proof that it is the SQL that runs: the offline statements of generated
migrations, executed by hand on an empty database, build exactly what
``create_tables()`` builds, and they equal what ``apply --dry-run`` records
with a live connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from click.testing import CliRunner, Result

from datalayer.cli import main
from datalayer.config import Settings
from datalayer.db import Database
from datalayer.errors import MigrationError
from datalayer.migrate.autogenerate.compare import create_migration
from datalayer.migrate.inspect import compare, snapshot
from datalayer.migrate.runtime.apply import apply
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.offline import migration_sql, render
from tests.migrate_runtime_support import write_migration


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def model(cls: str, table: str, /, **fields: Any) -> type[pw.Model]:
    meta = type("Meta", (), {"table_name": table, "legacy_table_names": False})
    return type(cls, (pw.Model,), {"Meta": meta, "__module__": __name__, **fields})


def v1() -> list[type[pw.Model]]:
    return [model("Thing", "things", name=pw.CharField(max_length=20))]


def v2() -> list[type[pw.Model]]:
    owner = model("Owner", "owners", email=pw.CharField(max_length=100, unique=True))
    thing = model(
        "Thing", "things",
        name=pw.CharField(max_length=20),
        note=pw.TextField(null=True),
        owner=pw.ForeignKeyField(owner, null=True, on_delete="CASCADE"),
        size=pw.IntegerField(null=True, index=True, constraints=[pw.Check("size > 0")]),
    )
    return [owner, thing]


def generate(directory: Path) -> list[str]:
    """Two generated migrations, in the plain forms (one file each; safe forms: elsewhere)."""
    names = []
    for i, models in enumerate((v1(), v2()), 1):
        result = create_migration(Router(Database(), directory), f"step{i}", models, unsafe=True)
        assert result is not None
        names.append(result.name)
    write_sum(directory)
    return names


def run_by_hand(settings: Settings, statements: list[str]) -> None:
    db = Database(settings)
    try:
        with db.checkout(), db.atomic():
            for statement in statements:
                db.execute_sql(statement)
    finally:
        db.close_pool()


def test_generated_sql_builds_the_models_schema(
    pg: Any, empty_db: Settings, tmp_path: Path
) -> None:
    directory = tmp_path / "m"
    names = generate(directory)
    result = migration_sql(directory)
    assert [m.name for m in result] == names
    assert all(m.atomic for m in result)
    statements = [s for m in result for s in m.statements]
    assert any(s.startswith("ALTER TABLE") for s in result[1].statements)
    run_by_hand(empty_db, statements)

    with pg.database("dlsqlwant") as want_name:
        want_db = Database(pg.settings(want_name))
        got_db = Database(empty_db)
        try:
            models = v2()
            with want_db.checkout(), want_db.bind_ctx(models):
                want_db.create_tables(models)
                want = snapshot(want_db)
            with got_db.checkout():
                got = snapshot(got_db)
        finally:
            want_db.close_pool()
            got_db.close_pool()
    assert compare(want, got) == []


def test_offline_sql_equals_the_dry_run_sql(empty_db: Settings, tmp_path: Path) -> None:
    directory = tmp_path / "m"
    generate(directory)
    offline = {m.name: m.statements for m in migration_sql(directory)}
    db = Database(empty_db)
    try:
        dry = {a.name: a.sql for a in apply(db, directory, dry_run=True)}
    finally:
        db.close_pool()
    assert offline == dry


def test_header_per_migration_and_no_transaction_marker(tmp_path: Path) -> None:
    write_migration(tmp_path, "001_t", "migrator.sql('CREATE TABLE t (id int, v text)')",
                    "migrator.sql('DROP TABLE t')")
    write_migration(
        tmp_path, "002_idx",
        "migrator.sql('CREATE INDEX CONCURRENTLY t_v ON t (v)')",
        "migrator.sql('DROP INDEX CONCURRENTLY t_v')",
        header="atomic = False",
    )
    text = render(migration_sql(tmp_path))
    assert text == (
        "-- 001_t\nCREATE TABLE t (id int, v text);\n\n"
        "-- 002_idx (no transaction)\nCREATE INDEX CONCURRENTLY t_v ON t (v);\n"
    )


def test_hand_written_sql_params_and_python_steps(tmp_path: Path) -> None:
    write_migration(
        tmp_path, "001_data",
        """
        migrator.sql('CREATE TABLE t (id int, v text)')
        migrator.sql('INSERT INTO t VALUES (%s, %s)', 7, "it's")
        migrator.sql("UPDATE t SET v = 'a%%b' WHERE v LIKE '%%x'")

        def fill_rows():
            raise AssertionError("a Python step must not run offline")

        migrator.run(fill_rows)
        """,
    )
    (m,) = migration_sql(tmp_path)
    assert m.statements == (
        "CREATE TABLE t (id int, v text);",
        "INSERT INTO t VALUES (7, 'it''s');",
        "UPDATE t SET v = 'a%b' WHERE v LIKE '%x';",
        "-- python: fill_rows (not shown)",
    )


def test_rollback_newest_first_against_the_state_it_undoes(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    names = generate(directory)
    forward = migration_sql(directory)
    back = migration_sql(directory, rollback=True)
    assert [m.name for m in back] == list(reversed(names))
    assert all(m.rollback for m in back)
    # Undoing step2 drops what it added; undoing step1 drops the table it made.
    assert any("DROP TABLE" in s and "owners" in s for s in back[0].statements)
    assert back[1].statements == ('DROP TABLE "things";',)
    assert forward[0].statements != back[1].statements
    only = migration_sql(directory, [names[1]], rollback=True)
    assert [m.statements for m in only] == [back[0].statements]


def test_names_select_migrations_by_name_or_number(tmp_path: Path) -> None:
    for i in (1, 2, 3):
        write_migration(tmp_path, f"00{i}_m{i}", f"migrator.sql('SELECT {i}')")
    assert [m.name for m in migration_sql(tmp_path, ["3", "001_m1"])] == ["001_m1", "003_m3"]
    with pytest.raises(MigrationError, match="there is no migration '9'"):
        migration_sql(tmp_path, ["9"])


def test_cli_needs_no_database(clean_env: Path) -> None:
    write_migration(clean_env / "migrations", "001_t", "migrator.sql('CREATE TABLE t (id int)')",
                    "migrator.sql('DROP TABLE t')")
    result = invoke("migrate", "sql")
    assert result.exit_code == 0, result.output
    assert result.output == "-- 001_t\nCREATE TABLE t (id int);\n"
    result = invoke("migrate", "sql", "--rollback", "001")
    assert result.output == "-- 001_t\nDROP TABLE t;\n"


def test_cli_errors_are_one_line_exit_1(clean_env: Path) -> None:
    write_migration(clean_env / "migrations", "001_t", "migrator.sql('SELECT 1')")
    result = invoke("migrate", "sql", "042")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "there is no migration '042'" in result.output
    write_migration(clean_env / "migrations", "002_bad", "raise RuntimeError('boom')")
    result = invoke("migrate", "sql")
    assert result.exit_code == 1
    assert "002_bad.py cannot be rendered without a database: RuntimeError: boom" in result.output
    assert "Traceback" not in result.output


def test_repo_migrations_render(clean_env: Path) -> None:
    repo = Path(__file__).resolve().parent.parent / "migrations"
    (m,) = migration_sql(repo)
    assert m.name == "001_initial" and m.atomic
    assert m.statements[0].startswith('CREATE TABLE "users"')


def test_generated_backfill_shows_as_a_python_step(tmp_path: Path) -> None:
    import uuid

    directory = tmp_path / "m"
    generate(directory)
    models = v2()
    thing = models[1]
    thing._meta.add_field("token", pw.UUIDField(default=uuid.uuid4))
    made = create_migration(Router(Database(), directory), "token", models, unsafe=True)
    assert made is not None
    *_, m = migration_sql(directory)
    python = [s for s in m.statements if s.startswith("-- python: ")]
    assert python and all(s.endswith(" (not shown)") for s in python)
    assert any('ADD COLUMN "token"' in s for s in m.statements)


def test_safe_forms_show_their_sql(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    for i, models in enumerate((v1(), v2()), 1):
        assert create_migration(Router(Database(), directory), f"step{i}", models) is not None
    result = migration_sql(directory)
    outside = [m for m in result if not m.atomic]
    assert outside, [m.name for m in result]
    text = "\n".join(s for m in outside for s in m.statements)
    assert 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "things_size"' in text
    assert "VALIDATE CONSTRAINT" in text and "-- python: concurrently" not in text
    assert render(result).count("(no transaction)") == len(outside)
