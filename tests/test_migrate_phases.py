"""Expand/contract phases, with the old and the new release running as separate processes.

For each change kind (a column rename with ``renamed_from``, a column drop, a
NOT NULL change): the v1 table gets rows, the "old release" process (the v1
models, DB_RELEASE=old) reads and writes it; ``apply --phase expand`` runs;
the "new release" process (the v2 models, DB_RELEASE=new) starts; both run
through the window; ``apply --phase contract`` run as the new release refuses
while the old release is connected; the old release stops; the contract
applies; the new release goes on.  Neither process may see one error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from click.testing import CliRunner, Result

from datalayer.cli import main
from datalayer.config import Settings
from datalayer.db import Database
from datalayer.migrate.autogenerate.api import create_migration
from datalayer.migrate.ddl.alter import BatchFill
from datalayer.migrate.ddl.spec import Sql
from datalayer.migrate.inspect import compare, snapshot
from datalayer.migrate.operations import Phase
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.files import Router
from datalayer.migrate.runtime.phases import phase_of_step, plan
from datalayer.migrate.runtime.releases import release_of
from tests import _phases_worker as worker
from tests.pgserver import Server
from tests.test_migrate_generate import declared, open_db

ROWS = 300
ROOT = Path(__file__).resolve().parent.parent


def generate(directory: Path, kind: str) -> list[str]:
    """Write the v1 migration and the v1 -> v2 one(s) for ``kind``; return their names."""
    router = Router(pw.PostgresqlDatabase(None), directory)
    create_migration(router, "init", [worker.item_model(kind, "old")])
    create_migration(router, "change", [worker.item_model(kind, "new")], allow_drop=True)
    write_sum(directory)
    return router.todo


class Release:
    """One release of the application: a worker process (see tests/_phases_worker.py)."""

    def __init__(
        self, kind: str, release: str, settings: Settings, tmp: Path, started: list[Any]
    ) -> None:
        self.stop = tmp / f"stop-{release}"
        self.out = tmp / f"out-{release}.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATALAYER_"))}
        env.update(DATABASE_URL=settings.url(masked=False), PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests._phases_worker", kind, release, str(self.stop),
             str(self.out)],
            env=env, cwd=tmp,
        )
        started.append(self.proc)

    def finish(self) -> dict[str, Any]:
        self.stop.touch()
        assert self.proc.wait(timeout=60) == 0
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result


def wait_connected(db: Database, release: str) -> None:
    """Wait (bounded) until a connection announcing ``release`` is there, and has worked."""
    for _ in range(300):
        rows = db.execute_sql("SELECT application_name FROM pg_stat_activity "
                              "WHERE datname = current_database()").fetchall()
        if any(release_of(r[0]) == release for r in rows):
            time.sleep(0.3)  # a few of its reads and writes before the next step
            return
        time.sleep(0.05)
    raise AssertionError(f"release {release} never connected")


def invoke(*args: str, release: str | None = None) -> Result:
    env = {"DB_RELEASE": release} if release else {}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def project(clean_env: Path, empty_db: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DATABASE_URL", empty_db.url(masked=False))
    return empty_db


@pytest.fixture
def live(project: Settings) -> Iterator[Database]:
    db = Database(project)
    with db.checkout():
        yield db
    db.close_pool()


@pytest.fixture
def started(project: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The worker processes; any still running at the end is killed (before the drop)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("kind", worker.KINDS)
def test_old_and_new_release_run_through_the_window(
    kind: str, pg: Server, project: Settings, live: Database, clean_env: Path,
    started: list[subprocess.Popen[bytes]],
) -> None:
    names = generate(clean_env / "migrations", kind)
    assert invoke("migrate", "apply", "--to", names[0]).exit_code == 0
    old_model = worker.item_model(kind, "old")
    with live.bind_ctx([old_model]):
        old_model.insert_many(
            [worker.values(kind, "old", -n) for n in range(ROWS)]
        ).execute()

    old = Release(kind, "old", project, clean_env, started)
    wait_connected(live, "old")
    expand = invoke("migrate", "apply", "--phase", "expand", release="new")
    assert expand.exit_code == 0, expand.output
    assert "(expand phase)" in expand.output
    status = json.loads(invoke("migrate", "status", "--json").stdout)
    assert all(status["phases"][n] == ["expand"] for n in names[1:]), status["phases"]

    new = Release(kind, "new", project, clean_env, started)
    wait_connected(live, "new")
    refused = invoke("migrate", "apply", "--phase", "contract", release="new")
    assert refused.exit_code == 1
    assert "announce another release" in refused.output and "release old" in refused.output
    human = invoke("migrate", "status").stdout
    assert "[~]" in human and "connected releases: " in human and "old (" in human

    old_result = old.finish()
    print(f"{kind}: old release {old_result}")
    assert old_result["errors"] == 0, old_result["samples"]
    contract = invoke("migrate", "apply", "--phase", "contract", release="new")
    time.sleep(0.3)  # the new release keeps working on the contracted schema
    new_result = new.finish()
    print(f"{kind}: new release {new_result}")
    assert new_result["errors"] == 0, new_result["samples"]
    assert contract.exit_code == 0, contract.output
    assert old_result["ops"] > 0 and new_result["ops"] > 0

    # The schema is what the models make, and no row lost its value.
    status = json.loads(invoke("migrate", "status", "--json").stdout)
    assert status["pending"] == [] and status["phases"][names[-1]] == ["expand", "contract"]
    with pg.database("dlphref") as ref_name:
        ref = open_db(pg, ref_name)
        try:
            want = declared(ref, [worker.item_model(kind, "new")])
        finally:
            ref.close()
    assert compare(snapshot(live), want) == []
    if kind == "rename":  # every row has its value under the new name, old rows too
        assert live.execute_sql("SELECT count(*) FROM items WHERE title IS NULL"
                                ).fetchone()[0] == 0
        assert live.execute_sql("SELECT count(*) FROM items WHERE title = 'old--7'"
                                ).fetchone()[0] == 1


# -- the gate of the contract phase: which releases are connected ----------------------


def announce(settings: Settings, name: str) -> Any:
    """Open a connection that announces ``application_name`` ``name`` (another process's)."""
    import psycopg2

    kwargs = settings.connect_kwargs()
    kwargs["application_name"] = name
    return psycopg2.connect(**kwargs)


@pytest.fixture
def expanded(project: Settings, clean_env: Path) -> list[str]:
    """A drop migration with its expand phase applied."""
    names = generate(clean_env / "migrations", "drop")
    assert invoke("migrate", "apply", "--phase", "expand").exit_code == 0
    return names


def test_contract_refuses_while_another_release_is_connected(
    project: Settings, expanded: list[str]
) -> None:
    old = announce(project, "datalayer/3f9c2e1")
    unknown = announce(project, "psql")
    same = announce(project, "datalayer/8d0b7a4")
    try:
        refused = invoke("migrate", "apply", "--phase", "contract", release="8d0b7a4")
        assert refused.exit_code == 1
        pid = old.get_backend_pid()
        line = refused.output.strip().splitlines()[-1]
        assert line.startswith("error: the contract phase")
        assert f"pid {pid} (release 3f9c2e1) from 127.0.0.1, connected " in line
        assert f"pid {same.get_backend_pid()}" not in line  # its own release: not waited for
        assert f"pid {unknown.get_backend_pid()} (application 'psql')" in refused.output
        assert "Traceback" not in refused.output
        status = json.loads(invoke("migrate", "status", "--json").stdout)
        assert status["phases"][expanded[-1]] == ["expand"]  # nothing was applied
        releases = {c["release"] for c in status["connections"]}
        assert {"3f9c2e1", "8d0b7a4", None} <= releases

        forced = invoke("migrate", "apply", "--phase", "contract", "--force", release="8d0b7a4")
        assert forced.exit_code == 0, forced.output
        assert "warning: --force" in forced.output and f"pid {pid}" in forced.output
    finally:
        for conn in (old, unknown, same):
            conn.close()
    status = json.loads(invoke("migrate", "status", "--json").stdout)
    assert status["pending"] == [] and status["phases"][expanded[-1]] == ["expand", "contract"]


def test_wait_sees_the_old_release_leave(project: Settings, expanded: list[str]) -> None:
    import threading

    old = announce(project, "datalayer/v1")
    leave = threading.Timer(0.5, old.close)
    leave.start()
    try:
        waited = invoke("migrate", "apply", "--phase", "contract", "--wait", "30", release="v2")
    finally:
        leave.join()
    assert waited.exit_code == 0, waited.output
    assert "waiting up to 30 s for 1 connection(s) of another release" in waited.output
    assert f"applied {expanded[-1]} (contract phase)" in waited.output


def test_contract_without_its_own_release_applies(
    project: Settings, expanded: list[str]
) -> None:
    old = announce(project, "datalayer/v1")
    try:
        result = invoke("migrate", "apply", "--phase", "contract")
    finally:
        old.close()
    assert result.exit_code == 0, result.output
    assert "announce" not in result.output
    assert f"applied {expanded[-1]} (contract phase)" in result.output


def test_contract_before_expand_and_status(project: Settings, clean_env: Path) -> None:
    names = generate(clean_env / "migrations", "rename")
    assert invoke("migrate", "apply", "--to", names[0]).exit_code == 0
    early = invoke("migrate", "apply", "--phase", "contract")
    assert early.exit_code == 1
    assert early.output.strip() == (
        f"error: {names[1]} has not had its expand phase: run `datalayer migrate apply "
        "--phase expand` first, deploy the new release, then --phase contract; nothing was "
        "applied"
    )
    assert invoke("migrate", "apply", "--phase", "expand").exit_code == 0
    again = invoke("migrate", "apply", "--phase", "expand")
    assert again.exit_code == 0 and "nothing to apply in the expand phase" in again.output
    human = invoke("migrate", "status")
    assert human.exit_code == 3
    assert f"[~] {names[1]}  expand phase applied, contract phase pending" in human.stdout
    # pw_migrate (upstream) still sees it as pending: the history row comes with the contract.
    from peewee_migrate import Router as Upstream
    from playhouse.db_url import connect

    db = connect(project.url(masked=False))
    try:
        assert Upstream(db, clean_env / "migrations").done == [names[0]]
    finally:
        db.close()
    # No --phase: what is left of it (the contract part) runs.
    rest = invoke("migrate", "apply")
    assert rest.exit_code == 0 and f"applied {names[1]} (contract phase)" in rest.output
    assert invoke("migrate", "status").exit_code == 0


@pytest.mark.parametrize(
    ("sql", "phase"),
    [  # each as the ddl planners build it: its kind, and its own phase where they know better
        (Sql('ALTER TABLE "t" ADD COLUMN "c" TEXT').of("add_column"), Phase.EXPAND),
        (Sql('ALTER TABLE "t" ADD COLUMN "c" TEXT NOT NULL').of("add_column").expanding(False),
         Phase.CONTRACT),
        (Sql('ALTER TABLE "t" ADD COLUMN "c" INTEGER DEFAULT 0 NOT NULL').of("add_column"),
         Phase.EXPAND),
        (Sql('ALTER TABLE "t" ALTER COLUMN "c" SET NOT NULL').of("set_not_null"), Phase.CONTRACT),
        (Sql('ALTER TABLE "t" ALTER COLUMN "c" DROP NOT NULL').of("alter_table").expanding(True),
         Phase.EXPAND),
        (Sql('ALTER TABLE "t" ALTER COLUMN "c" DROP DEFAULT').of("set_default").expanding(False),
         Phase.CONTRACT),
        (Sql('ALTER TABLE "t" DROP COLUMN "c"').of("drop_column"), Phase.CONTRACT),
        (Sql('CREATE INDEX "t_c" ON "t" ("c")').of("create_index"), Phase.EXPAND),
        (Sql('DROP INDEX "t_c"').of("drop_index"), Phase.CONTRACT),
        (Sql('ALTER TABLE "t" ADD CONSTRAINT "k" CHECK (c > 0) NOT VALID').of(
            "add_check_not_valid"), Phase.EXPAND),
        (Sql('ALTER TABLE "t" ADD CONSTRAINT "k" CHECK (c > 0)').of("add_check"), Phase.CONTRACT),
        (Sql('ALTER TABLE "t" DROP CONSTRAINT "k"').of("drop_constraint"), Phase.EXPAND),
        (Sql('ALTER TABLE "t" RENAME COLUMN "a" TO "b"').of("rename_column"), Phase.CONTRACT),
        (Sql("SELECT 1"), Phase.CONTRACT),  # a statement of no known kind
    ],
)
def test_phase_of_each_statement(sql: Sql, phase: Phase) -> None:
    assert phase_of_step(sql) is phase


def test_phase_of_type_changes_and_fills() -> None:
    widen = Sql('ALTER TABLE "t" ALTER COLUMN "c" TYPE VARCHAR(90)', kind="alter_type_in_place")
    narrow = Sql('ALTER TABLE "t" ALTER COLUMN "c" TYPE VARCHAR(9)', kind="alter_type")
    assert phase_of_step(widen) is Phase.EXPAND and phase_of_step(narrow) is Phase.CONTRACT
    assert phase_of_step(BatchFill('"t"', "c", "id", "default")) is Phase.EXPAND


def test_plan() -> None:
    assert plan(["1", "2"], [], None) == [("1", None), ("2", None)]
    assert plan(["1", "2"], ["1"], None) == [("1", Phase.CONTRACT), ("2", None)]
    assert plan(["1", "2"], ["1"], "expand") == [("2", Phase.EXPAND)]
    assert plan(["1", "2"], ["1", "2"], "contract") == [("1", Phase.CONTRACT),
                                                         ("2", Phase.CONTRACT)]


@pytest.mark.parametrize(
    ("name", "release"),
    [("datalayer/3f9c2e1", "3f9c2e1"), ("shop/v1.2.0", "v1.2.0"), ("datalayer", None),
     ("psql", None), ("pgAdmin 4 - DB:x/y", None), ("", None), (None, None)],
)
def test_release_of(name: str | None, release: str | None) -> None:
    assert release_of(name) == release


def test_rollback_refused_between_phases(project: Settings, expanded: list[str]) -> None:
    result = invoke("migrate", "rollback")
    assert result.exit_code == 1
    assert "has only its expand phase applied" in result.output
    assert "Nothing was rolled back" in result.output


def test_dry_run_shows_one_phase(project: Settings, clean_env: Path) -> None:
    names = generate(clean_env / "migrations", "rename")
    assert invoke("migrate", "apply", "--to", names[0]).exit_code == 0
    expand = invoke("migrate", "apply", "--phase", "expand", "--dry-run")
    assert expand.exit_code == 0, expand.output
    assert 'ADD COLUMN "title"' in expand.output and "CREATE TRIGGER" in expand.output
    assert "DROP COLUMN" not in expand.output and "RENAME COLUMN" not in expand.output
    assert invoke("migrate", "apply", "--phase", "expand").exit_code == 0
    contract = invoke("migrate", "apply", "--phase", "contract", "--dry-run")
    assert contract.exit_code == 0, contract.output
    assert 'DROP COLUMN "name"' in contract.output and "DROP TRIGGER" in contract.output
    assert 'ADD COLUMN "title"' not in contract.output
    status = json.loads(invoke("migrate", "status", "--json").stdout)
    assert status["phases"][names[1]] == ["expand"]  # the dry run changed nothing


def test_checks_before_ddl_follow_the_phase(project: Settings, live: Database,
                                            clean_env: Path) -> None:
    """NULLs block SET NOT NULL, a contract statement: expand goes on, contract stops."""
    def items(null: bool) -> type[pw.Model]:
        meta = type("Meta", (), {"table_name": "items", "legacy_table_names": False})
        return type("Item", (pw.Model,), {"Meta": meta, "__module__": __name__,
                                          "id": pw.AutoField(), "note": pw.TextField(null=null)})

    directory = clean_env / "migrations"
    router = Router(pw.PostgresqlDatabase(None), directory)
    create_migration(router, "init", [items(True)])
    create_migration(router, "note_required", [items(False)])
    write_sum(directory)
    names = router.todo
    assert invoke("migrate", "apply", "--to", names[0]).exit_code == 0
    live.execute_sql("INSERT INTO items (note) VALUES (NULL), ('x')")
    assert invoke("migrate", "apply", "--phase", "expand").exit_code == 0
    refused = invoke("migrate", "apply", "--phase", "contract")
    assert refused.exit_code == 1
    assert "NULL" in refused.output and "note" in refused.output
    status = json.loads(invoke("migrate", "status", "--json").stdout)
    assert status["phases"][names[-1]] == ["expand"]
