"""One project, one database: every subfolder uses the project's .env and embedded server,
every embedded start is said on stderr, ``db status``/``db stop`` cover all of a project's
servers, check/drift host their scratch databases on DATABASE_URL's server when they may, and
a scratch database left by a killed run is dropped by the next one (never a live run's).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from datalayer import embedded
from datalayer.cli import main
from datalayer.config import Settings, load_settings
from datalayer.errors import MigrationError
from datalayer.migrate.scratch import scratch_database, scratch_server
from tests.conftest import ENV_PREFIXES
from tests.drift_support import query, run_sql
from tests.migrate_runtime_support import cli_command, write_migration
from tests.pgserver import Server

STARTED = re.compile(
    r"^started the embedded PostgreSQL (\d+) in (.+) on port (\d+) \(datalayer db stop stops it\)$",
    re.MULTILINE,
)
PYPROJECT = (
    '[project]\nname = "app"\nversion = "0"\n\n[tool.datalayer]\nmodels = ["datalayer.models"]\n'
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    env.update(extra)
    return env


def dl(cwd: Path, *args: str, env: dict[str, str] | None = None,
       timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the ``datalayer`` command in ``cwd`` (a process of its own)."""
    return subprocess.run(cli_command(*args), cwd=cwd, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def project() -> Iterator[Path]:
    """A project folder (pyproject.toml with [tool.datalayer]) with sub/deeper; every embedded
    server started under it is removed afterwards."""
    # mkdtemp, not tmp_path: as root the server's system user must traverse the parents.
    root = Path(tempfile.mkdtemp(prefix="datalayer-proj-")).resolve()
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "sub" / "deeper").mkdir(parents=True)
    try:
        yield root
    finally:
        for server in embedded.running_servers():
            if server.datadir.is_relative_to(root):
                embedded.remove_server(server.datadir)
        shutil.rmtree(root, ignore_errors=True)


def _ours(root: Path) -> list[embedded.EmbeddedServer]:
    return [s for s in embedded.running_servers() if s.datadir.is_relative_to(root)]


@pytest.mark.slow
def test_every_subfolder_uses_the_project_server_and_db_stop_stops_them_all(
    project: Path,
) -> None:
    assert dl(project, "migrate", "diff", "initial").returncode == 0
    # Three commands at once from three folders of a project with no server yet: one server
    # (the project's), started by one of them, said once.
    procs = [
        subprocess.Popen(cli_command("migrate", "status"), cwd=where, env=_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for where in (project, project / "sub", project / "sub" / "deeper")
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [3, 3, 3], outputs  # 3: migrations pending
    lines = [m for _, err in outputs for m in STARTED.findall(err)]
    assert len(lines) == 1, outputs
    version, shown, port = lines[0]
    datadir = project / ".datalayer" / "pg"
    assert version == (datadir / "PG_VERSION").read_text().strip()
    assert (project / shown if not Path(shown).is_absolute() else Path(shown)) == datadir
    assert {f"127.0.0.1:{port}/postgres" in out for out, _ in outputs} == {True}
    assert [s.datadir for s in _ours(project)] == [datadir]

    applied = dl(project / "sub", "migrate", "apply")
    assert applied.returncode == 0, applied.stderr
    assert "1 migration applied" in applied.stdout and not STARTED.search(applied.stderr)
    for where in (project, project / "sub" / "deeper"):
        status = dl(where, "migrate", "status")
        assert status.returncode == 0 and "1 applied, 0 pending" in status.stdout, status
        assert not STARTED.search(status.stderr)
    assert not (project / "sub" / ".datalayer").exists(), "no second server in a subfolder"

    # One an older datalayer started in a subfolder is the project's too; a nested project's
    # own server is not.
    stray = embedded.ensure_server(project / "sub" / ".datalayer" / "pg")
    nested = project / "nested"
    nested.mkdir()
    (nested / "pyproject.toml").write_text(PYPROJECT)
    other = embedded.ensure_server(nested / ".datalayer" / "pg")

    listed = dl(project / "sub" / "deeper", "db", "status")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.strip().splitlines()
    assert len(rows) == 2, listed.stdout
    for server, row in zip((datadir, stray.datadir), rows, strict=True):
        assert row.startswith(str(server)) and f"port {embedded.server_status(server).port}" in row
        assert f"pid {embedded.server_status(server).pid}" in row
    assert str(other.datadir) not in listed.stdout

    # With no project, only the configured server, not every one below the current folder
    # (a home folder holds many projects').
    (project / "pyproject.toml").rename(project / "pyproject.off")
    try:
        loose = dl(project, "db", "status")
    finally:
        (project / "pyproject.off").rename(project / "pyproject.toml")
    assert loose.returncode == 0 and len(loose.stdout.splitlines()) == 1, loose.stdout
    assert loose.stdout.startswith(".datalayer/pg  "), "the configured one, shown from here"

    stopped = dl(project / "sub", "db", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.count("stopped the embedded server in ") == 2, stopped.stdout
    assert embedded.server_status(datadir) is None and embedded.server_status(stray.datadir) is None
    assert embedded.server_status(other.datadir) is not None, "the nested project's keeps running"
    again = dl(project, "db", "status")
    assert again.returncode == 0 and again.stdout.startswith("no embedded server runs")
    assert dl(nested, "db", "stop").stdout.count("stopped") == 1
    assert _ours(project) == []


def test_the_project_dotenv_is_read_from_a_subfolder(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = clean_env
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / ".env").write_text(
        "DATABASE_URL=postgresql://app:secret@root-host:5432/app\nDATALAYER_EMBEDDED_DIR=data/pg\n"
    )
    (root / ".env.ci").write_text("DATABASE_URL=postgresql://ci@ci-host:5432/ci\n")
    sub = root / "sub" / "deeper"
    sub.mkdir(parents=True)
    (sub / ".env").write_text("DATABASE_URL=postgresql://x@sub-host/x\n")  # not the project's
    monkeypatch.chdir(sub)

    s = load_settings()
    assert (s.host, s.dbname, s.source) == ("root-host", "app", "DATABASE_URL")
    assert s.embedded_dir == root / "data" / "pg"
    assert load_settings(env_name="ci").host == "ci-host"
    runner = CliRunner()
    for args, url in ((["db", "url"], "postgresql://app:***@root-host:5432/app"),
                      (["--env", "ci", "db", "url"], "postgresql://ci@ci-host:5432/ci")):
        result = runner.invoke(main, args, catch_exceptions=False)
        assert (result.exit_code, result.stdout.strip()) == (0, url), result.stderr
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@env-host/env")
    assert load_settings(env_name="ci").host == "env-host", "the process environment wins"
    monkeypatch.delenv("DATABASE_URL")
    (root / ".env").write_text("DB_NAME=unused\n")
    s = load_settings()
    assert s.embedded and s.embedded_dir == root / ".datalayer" / "pg", "the default, anchored"


def test_without_a_project_the_current_folder_is_used(clean_env: Path) -> None:
    (clean_env / ".env").write_text("DB_HOST=here\n")
    s = load_settings()
    assert s.host == "here" and s.embedded_dir == Path(".datalayer/pg")


def _project_with_migrations(root: Path, settings: Settings) -> dict[str, str]:
    env = {"DATABASE_URL": settings.url(masked=False)}
    result = CliRunner().invoke(main, ["migrate", "diff", "initial"], env=env)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["migrate", "apply"], env=env)
    assert result.exit_code == 0, result.output
    return env


def test_check_and_drift_use_the_database_url_server_and_start_no_embedded_server(
    clean_env: Path, empty_db: Settings, pg: Server
) -> None:
    (clean_env / "pyproject.toml").write_text(PYPROJECT)
    env = _project_with_migrations(clean_env, empty_db)
    for command in ("check", "drift"):
        result = CliRunner().invoke(main, ["migrate", command], env=env, catch_exceptions=False)
        assert result.exit_code == 0, (command, result.output)
        assert "started the embedded" not in result.stderr
    assert not (clean_env / ".datalayer").exists(), "no embedded server was even initialised"
    assert _ours(clean_env) == []
    mine = query(pg, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s",
                 (f"datalayer\\_check\\_%\\_{os.getpid()}\\_%",))
    assert mine == [], "its scratch databases were dropped"


@pytest.fixture
def no_createdb_role(pg: Server) -> Iterator[str]:
    name = f"dl_nocreatedb_{uuid.uuid4().hex[:8]}"
    run_sql(pg, "postgres", f'CREATE ROLE "{name}" LOGIN NOCREATEDB')
    try:
        yield name
    finally:
        run_sql(pg, "postgres", f'DROP ROLE IF EXISTS "{name}"')


def test_a_server_that_cannot_host_scratch_databases_falls_back_to_the_embedded_one(
    clean_env: Path, pg: Server, no_createdb_role: str
) -> None:
    from tests._proxy import LossyProxy

    blocker = clean_env / "a-file"
    blocker.write_text("")
    cannot_start = blocker / "pg"  # the embedded server cannot be made here: it says so
    superuser = pg.admin.replace(embedded_dir=cannot_start, dev_database_url=None)
    assert scratch_server(superuser).source == superuser.source, "DATABASE_URL's server hosts"
    with LossyProxy(pg.admin.host, pg.admin.port) as proxy:  # as PgBouncer: another port
        cases = {
            "may not create databases: no CREATEDB": superuser.replace(
                user=no_createdb_role, password=""),
            f"port {proxy.port} reaches a server on port {pg.admin.port}: a pooler or proxy":
                superuser.replace(host=proxy.host, port=proxy.port),
        }
        for why, settings in cases.items():
            with pytest.raises(MigrationError) as err:
                scratch_server(settings)
            message = str(err.value)
            assert message.startswith(
                "no scratch database server: DATALAYER_DEV_DATABASE_URL is unset, the server of "
                "DATABASE_URL cannot hold them (")
            assert why in message and "the embedded server is not available" in message


def _scratch_names(pg: Server, pid: int) -> set[str]:
    rows = query(pg, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s",
                 (f"datalayer\\_check\\_%\\_{pid}\\_%",))
    return {r[0] for r in rows}


def _exists(pg: Server, name: str) -> bool:
    return bool(query(pg, "postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


@pytest.mark.slow
def test_a_killed_check_leaves_a_scratch_database_the_next_run_drops_but_not_a_live_one(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    write_migration(directory, "001_slow", migrate='migrator.sql("SELECT pg_sleep(60)")')
    env = _env(DATABASE_URL=empty_db.url(masked=False), DATALAYER_MIGRATIONS_DIR=str(directory))
    proc = subprocess.Popen(cli_command("migrate", "check"), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _scratch_names(pg, proc.pid) or not query(
            pg, "postgres", "SELECT 1 FROM pg_stat_activity WHERE query LIKE %s",
            ("SELECT pg_sleep(60)%",),
        ):
            assert time.monotonic() < deadline and proc.poll() is None, "check never got there"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = _scratch_names(pg, proc.pid)
    assert len(left) == 1, "SIGKILL leaves the scratch database behind"
    deadline = time.monotonic() + 30
    while query(pg, "postgres", "SELECT 1 FROM pg_stat_activity WHERE datname = ANY(%s) "
                "OR application_name LIKE %s", (list(left), f"datalayer-check {proc.pid}_%")):
        assert time.monotonic() < deadline, "the killed run's sessions never ended"
        time.sleep(0.05)
    # Made by a datalayer before markers: dropped only when its process is gone.
    dead_pid = proc.pid
    old_dead = f"datalayer_check_models_{dead_pid}_{uuid.uuid4().hex[:10]}"
    old_live = f"datalayer_check_models_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    run_sql(pg, "postgres", f'CREATE DATABASE "{old_dead}"', f'CREATE DATABASE "{old_live}"')
    try:
        admin = scratch_server(empty_db)
        # "live": a concurrent run's, nobody inside; "next" sweeps while it exists.
        with scratch_database(admin, "live") as live, scratch_database(admin, "next") as following:
            assert all(not _exists(pg, name) for name in left | {old_dead})
            assert _exists(pg, live.dbname) and _exists(pg, following.dbname)
            assert _exists(pg, old_live), "an older run whose process lives is left alone"
        assert not _exists(pg, live.dbname) and not _exists(pg, following.dbname)
    finally:
        run_sql(pg, "postgres", f'DROP DATABASE IF EXISTS "{old_dead}"',
                f'DROP DATABASE IF EXISTS "{old_live}"')


@pytest.mark.slow
def test_concurrent_runs_never_drop_each_others_scratch_databases(
    pg: Server, empty_db: Settings
) -> None:
    """Runs hold scratch databases (nobody inside, or a session inside) while others sweep.

    CREATE and DROP DATABASE are slow and serialise, so runs that only create would sweep
    in step, when the others' databases are being dropped: the sweepers here run the sweep
    every run does before it creates, at any moment.
    """
    import psycopg2

    from datalayer.migrate.scratch import _drop_leftovers

    admin = scratch_server(empty_db)
    failures: list[str] = []
    done = threading.Event()
    sweeps = [0]

    def hold(worker: int) -> None:
        rng = random.Random(worker)
        for trial in range(6):
            try:
                with scratch_database(admin, f"w{worker}") as scratch:
                    inside = psycopg2.connect(**scratch.connect_kwargs()) if trial % 2 else None
                    until = time.monotonic() + rng.uniform(0.3, 1.0)
                    while time.monotonic() < until:
                        if not _exists(pg, scratch.dbname):
                            failures.append(f"worker {worker} trial {trial}: dropped under it")
                            break
                        time.sleep(0.02)
                    if inside is not None:
                        inside.close()
            except Exception as exc:  # collected and asserted below
                failures.append(f"worker {worker} trial {trial}: {exc}")

    def sweep() -> None:
        conn = psycopg2.connect(**admin.connect_kwargs())
        conn.autocommit = True
        try:
            while not done.is_set():
                with conn.cursor() as cur:
                    _drop_leftovers(cur, admin)
                sweeps[0] += 1
                time.sleep(random.uniform(0, 0.03))
        finally:
            conn.close()

    holders = [threading.Thread(target=hold, args=(w,)) for w in range(3)]
    sweepers = [threading.Thread(target=sweep) for _ in range(2)]
    for t in holders + sweepers:
        t.start()
    for t in holders:
        t.join(timeout=300)
    done.set()
    for t in sweepers:
        t.join(timeout=60)
    assert failures == []
    assert sweeps[0] > 100, "the sweeps ran while the databases were held"
    assert _scratch_names(pg, os.getpid()) == set()


@pytest.mark.slow
def test_ctrl_c_during_check_leaves_no_scratch_database(
    pg: Server, empty_db: Settings, tmp_path: Path
) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    env = _env(DATABASE_URL=empty_db.url(masked=False))
    assert dl(tmp_path, "migrate", "diff", "initial", env=env).returncode == 0
    rng = random.Random(7)
    interrupted = 0
    for _ in range(8):
        proc = subprocess.Popen(cli_command("migrate", "check"), cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not _scratch_names(pg, proc.pid) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.6))  # the second CREATE, the migrations, the comparison
        proc.send_signal(signal.SIGINT)
        interrupted += proc.wait(timeout=60) != 0
        assert _scratch_names(pg, proc.pid) == set(), "dropped on the way out, not left over"
    assert interrupted >= 4, "most runs were interrupted, not finished"
