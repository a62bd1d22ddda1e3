"""Helpers for the fault, load and PgBouncer tests: a server of our own, units of work.

Anything that restarts, stops or freezes a server does it to an embedded server
started here in a temporary directory, on its own port — never to the shared
server the rest of the suite uses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from datalayer.config import Settings
from datalayer.db import Database
from datalayer.embedded import EmbeddedServer, ensure_server, remove_server, stop_server
from datalayer.models import MODELS, RefreshToken, User


@dataclass
class OwnServer:
    """An embedded PostgreSQL server in a directory of its own, with the models' tables."""

    datadir: Path
    server: EmbeddedServer | None = None
    frozen: list[int] = field(default_factory=list)

    def start(self) -> EmbeddedServer:
        self.server = ensure_server(self.datadir)
        return self.server

    def stop(self) -> None:
        stop_server(self.datadir)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.thaw()
        remove_server(self.datadir)

    @property
    def postmaster_pid(self) -> int:
        assert self.server is not None
        text = (self.datadir / "postmaster.pid").read_text().splitlines()
        return int(text[0])

    def freeze(self, pid: int) -> None:
        """SIGSTOP a process of this server (postmaster or backend); :meth:`thaw` undoes it."""
        assert pid in self.pids(), "only processes of our own server are frozen"
        os.kill(pid, signal.SIGSTOP)
        self.frozen.append(pid)

    def thaw(self) -> None:
        while self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.frozen.pop(), signal.SIGCONT)

    def pids(self) -> set[int]:
        """The postmaster and its children (read from /proc)."""
        root = self.postmaster_pid
        found = {root}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == root:
                found.add(int(entry.name))
        return found

    def settings(self, **overrides: Any) -> Settings:
        assert self.server is not None
        base = Settings.from_url(self.server.url, application_name="datalayer-faults")
        return base.replace(**overrides)

    def admin(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(
            **{**self.settings().connect_kwargs(), "application_name": "datalayer-faults-admin"}
        )
        conn.autocommit = True
        return conn

    def create_tables(self) -> None:
        tmp = Database(self.settings())
        with tmp.checkout(), tmp.bind_ctx(MODELS):
            tmp.drop_tables(list(reversed(MODELS)), safe=True)
            tmp.create_tables(MODELS)
        tmp.close_pool()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()


@contextlib.contextmanager
def own_server(prefix: str = "datalayer-own-") -> Iterator[OwnServer]:
    """Start an embedded server with the tables in a new temporary directory; always remove both.

    Not under pytest's tmp_path: a pytest session starting meanwhile (another run on the
    same machine) chmods /tmp/pytest-of-USER to 0700, and as root the server runs as
    another user that then cannot reach its data directory.
    """
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    srv = OwnServer(directory / "pg")
    try:
        srv.start()
        srv.create_tables()
        yield srv
    finally:
        srv.remove()
        shutil.rmtree(directory, ignore_errors=True)


def token_hash() -> str:
    return hashlib.sha256(secrets.token_bytes(16)).hexdigest()


def write_unit(tag: str, i: int, tokens: int = 2) -> uuid.UUID:
    """One unit of work's writes: a user and ``tokens`` refresh tokens (caller's transaction)."""
    user = User.create(email=f"{tag}-{i}@faults.test", password_hash="x" * 20)
    family = uuid.uuid4()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    for _ in range(tokens):
        RefreshToken.create(
            user=user.id, token_hash=token_hash(), family_id=family, expires_at=expires
        )
    return uuid.UUID(str(user.id))


def check_units(srv: OwnServer, tag: str, tokens: int = 2) -> tuple[int, int]:
    """Return (users, tokens) written by units tagged ``tag``; fail on any half-written unit."""
    rows = srv.query(
        "SELECT u.users_id, count(t.refresh_tokens_id) FROM users u "
        "LEFT JOIN refresh_tokens t USING (users_id) WHERE u.email LIKE %s GROUP BY u.users_id",
        (f"{tag}-%",),
    )
    partial = [r for r in rows if r[1] != tokens]
    assert not partial, f"half-written units: {partial}"
    return len(rows), sum(int(r[1]) for r in rows)


def activity(srv: OwnServer, app_prefix: str) -> list[tuple[int, str, str]]:
    """Return (pid, application_name, state) of the server's sessions named ``app_prefix``*."""
    return [
        (int(r[0]), str(r[1]), str(r[2]))
        for r in srv.query(
            "SELECT pid, application_name, coalesce(state, '') FROM pg_stat_activity "
            "WHERE application_name LIKE %s AND pid <> pg_backend_pid()",
            (app_prefix + "%",),
        )
    ]


class Stopwatch:
    """Measure durations with a monotonic clock."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


def run_threads(n: int, target: Any, *args: Any) -> list[BaseException]:
    """Run ``target(index, *args)`` in ``n`` threads; return the exceptions they raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def wrap(index: int) -> None:
        try:
            target(index, *args)
        except BaseException as exc:  # collected and reported by the test
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,), name=f"worker-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    return errors


# -- PgBouncer ---------------------------------------------------------------------------


def pgbouncer_binary() -> str | None:
    """Return the path of Debian's pgbouncer, or None when it is not installed."""
    import shutil

    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


@dataclass
class PgBouncer:
    """A pgbouncer process in transaction-pooling mode in front of one server."""

    binary: str
    directory: Path
    server_host: str
    server_port: int
    pool_size: int = 5
    port: int = 0
    process: Any = None
    extra: str = ""  # more lines for the [pgbouncer] section ("server_login_retry = 1")

    def start(self) -> PgBouncer:
        import socket
        import subprocess

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        (self.directory / "userlist.txt").write_text('"postgres" ""\n')
        conf = self.directory / "pgbouncer.ini"
        conf.write_text(
            "[databases]\n"
            f"* = host={self.server_host} port={self.server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            "server_check_delay = 0\n"
            "logfile =\n"
            "pidfile =\n"
            + self.extra
        )
        for path in self.directory.iterdir():
            path.chmod(0o644)
        args = [self.binary]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            args += ["-u", "nobody"]
        args.append(str(conf))
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = self.process.stdout.read().decode(errors="replace")
                raise RuntimeError(f"pgbouncer exited ({self.process.returncode}): {out[-2000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("pgbouncer did not start listening within 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()
                self.process.wait(10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def url(self, dbname: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"
