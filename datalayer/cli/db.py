"""``datalayer db``: look at the database and run the embedded server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import CliContext, pass_cli

if TYPE_CHECKING:
    from ..embedded import EmbeddedServer

__all__ = ["db"]


def _project_servers(cli: CliContext) -> list[EmbeddedServer]:
    """The running embedded servers of this project: its configured one, and any other
    datalayer server whose data directory lies in the project (an older datalayer made one
    per subfolder; another DATALAYER_EMBEDDED_DIR).  With no project, the configured one:
    a home folder holds many projects' servers."""
    from ..embedded import running_servers
    from ..errors import ProjectError
    from ..project import find_pyproject

    configured = cli.settings().embedded_dir.expanduser().resolve()
    found = find_pyproject()
    root = found[0].parent.resolve() if found else None

    def ours(datadir: Path) -> bool:
        if datadir == configured:
            return True
        if root is None or not datadir.is_relative_to(root):
            return False
        try:
            inner = find_pyproject(datadir)  # a project nested inside this one keeps its own
        except ProjectError:  # an unreadable pyproject.toml on the way: not ours to judge
            return False
        return (inner[0].parent if inner else None) == root
    return [s for s in running_servers() if ours(s.datadir)]


@click.group()
def db() -> None:
    """Database connection and the embedded server."""


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_cli
def info(cli: CliContext, as_json: bool) -> None:
    """Show the (masked) URL, the server version and the pool settings."""
    database = cli.database()
    s = database.settings
    with database.checkout():
        version = database.execute_sql("SHOW server_version").fetchone()[0]
    replicas = database.replica_status(check=True)  # [] without DB_REPLICA_URLS
    data = {
        "url": s.url(masked=True),
        "source": s.source,
        "server_version": version,
        "pool": {
            "max_open_conns": s.max_open_conns,
            "max_idle_conns": s.max_idle_conns,
            "conn_max_lifetime": s.conn_max_lifetime,
            "conn_max_idle_time": s.conn_max_idle_time,
            "pool_timeout": s.pool_timeout,
        },
        "connect_timeout": s.connect_timeout,
        "client_timeout": s.effective_client_timeout,
        "max_checkout_time": s.max_checkout_time,
        "statement_timeout": s.statement_timeout,
        "lock_timeout": s.lock_timeout,
        "idle_in_transaction_timeout": s.idle_in_transaction_timeout,
        "application_name": s.announced_name,
        "release": s.release,
    }
    if replicas:
        data["replicas"] = replicas
        data["replica_max_lag"] = s.replica_max_lag
        data["replica_check_interval"] = s.replica_check_interval
    if s.source == "embedded":
        data["embedded_dir"] = str(cli.settings().embedded_dir)
    database.close_pool()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"url:              {data['url']}  (from {s.source})")
    if "embedded_dir" in data:
        click.echo(f"embedded dir:     {data['embedded_dir']}")
    click.echo(f"server version:   {version}")
    click.echo(
        f"pool:             max open {s.max_open_conns}, max idle {s.max_idle_conns}, "
        f"lifetime {s.conn_max_lifetime:g} s, idle time {s.conn_max_idle_time:g} s, "
        f"checkout wait {s.pool_timeout:g} s"
    )
    def dur(v: float | None) -> str:
        return "none" if v is None else f"{v:g} s"
    click.echo(
        f"timeouts:         connect {dur(s.connect_timeout)}, statement "
        f"{dur(s.statement_timeout)}, lock {dur(s.lock_timeout)}, idle in transaction "
        f"{dur(s.idle_in_transaction_timeout)}"
    )
    client = "off" if s.effective_client_timeout is None else f"{s.effective_client_timeout:g} s"
    unset = "" if s.client_timeout is not None else " (DB_CLIENT_TIMEOUT unset: the default)"
    click.echo(
        f"client side:      DB_CLIENT_TIMEOUT {client}{unset}, DB_MAX_CHECKOUT_TIME "
        f"{dur(s.max_checkout_time)}"
    )
    click.echo(f"application name: {s.announced_name}")
    for index, replica in enumerate(replicas, 1):
        if replica["in_use"]:
            state = f"in use, lag {replica['lag']:.2f} s, replayed {replica['replayed']}"
        else:
            lag = "" if replica["lag"] is None else f", lag {replica['lag']:.2f} s"
            state = f"skipped: {replica['reason']}{lag}"
        click.echo(f"replica {index}:{' ' * (8 - len(str(index)))}{replica['url']}  ({state})")
    if replicas:
        click.echo(
            f"replica limits:   max lag {s.replica_max_lag:g} s (DB_REPLICA_MAX_LAG), checked "
            f"every {s.replica_check_interval * 1000:g} ms (DB_REPLICA_CHECK_INTERVAL)"
        )


@db.command()
@pass_cli
def start(cli: CliContext) -> None:
    """Start the embedded server in the background and print its URL.

    The URL goes to stdout; whether a server was started or found running
    goes to stderr, with a note when DATABASE_URL / DB_* point elsewhere.
    """
    from ..embedded import ensure_server, server_status, shown_path

    settings = cli.settings()
    directory = settings.embedded_dir
    running = server_status(directory)
    server = running or ensure_server(directory)  # starting it prints the "started" line
    if running is not None:
        click.echo(
            f"the embedded server in {shown_path(server.datadir)} is already running", err=True
        )
    if not settings.embedded:
        click.echo(
            f"note: {settings.source} is set, so datalayer uses {settings.describe()}, "
            "not this embedded server (unset it to use this one)",
            err=True,
        )
    click.echo(server.url)


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_cli
def status(cli: CliContext, as_json: bool) -> None:
    """List the project's running embedded servers (never starts one)."""
    from ..embedded import shown_path

    servers = _project_servers(cli)
    if as_json:
        click.echo(json.dumps([{"datadir": str(s.datadir), "port": s.port, "pid": s.pid,
                                "version": s.version, "url": s.url} for s in servers], indent=2))
    elif not servers:
        click.echo(f"no embedded server runs (this project's: {cli.settings().embedded_dir})")
    for s in [] if as_json else servers:
        click.echo(f"{shown_path(s.datadir)}  PostgreSQL {s.version}  port {s.port}  pid {s.pid}")


@db.command()
@pass_cli
def stop(cli: CliContext) -> None:
    """Stop every embedded server of the project (see `datalayer db status`)."""
    from ..embedded import shown_path, stop_server

    servers = _project_servers(cli)
    for server in servers:
        if stop_server(server.datadir):
            click.echo(f"stopped the embedded server in {shown_path(server.datadir)}")
    if not servers:
        click.echo(f"no embedded server runs (this project's: {cli.settings().embedded_dir})")


@db.command()
@click.option(
    "--show-password", is_flag=True,
    help="Print the password too, for a command substitution: "
    'pw_migrate migrate --database "$(datalayer db url --show-password)". '
    "Refused when the output is a terminal.",
)
@pass_cli
def url(cli: CliContext, show_password: bool) -> None:
    """Print the URL of the configured database (password masked).

    Never starts the embedded server: when it is stopped, says so (exit 1).
    The embedded server's URL has no password (it trusts local connections).
    """
    import sys

    from ..embedded import server_status
    from ..errors import DatalayerError, EmbeddedServerError

    settings = cli.settings()
    if show_password and sys.stdout.isatty():
        raise DatalayerError(
            "--show-password does not print to a terminal (the password would stay on screen "
            "and in its scrollback); use it where the URL goes straight to a program: "
            'pw_migrate migrate --database "$(datalayer db url --show-password)" ...'
        )
    if not settings.embedded:
        click.echo(settings.url(masked=not show_password))
        return
    server = server_status(settings.embedded_dir)
    if server is None:
        raise EmbeddedServerError(
            f"no database is configured and the embedded server in {settings.embedded_dir} "
            "is not running: start it with `datalayer db start` (it prints the URL), or set "
            "DATABASE_URL / DB_HOST"
        )
    click.echo(server.url)
