"""``datalayer db``: look at the database and run the embedded server."""

from __future__ import annotations

import json

import click

from . import CliContext, pass_cli

__all__ = ["db"]


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
        "statement_timeout": s.statement_timeout,
        "lock_timeout": s.lock_timeout,
        "idle_in_transaction_timeout": s.idle_in_transaction_timeout,
        "application_name": s.application_name,
    }
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
    click.echo(f"application name: {s.application_name}")


@db.command()
@pass_cli
def start(cli: CliContext) -> None:
    """Start the embedded server in the background and print its URL."""
    from ..embedded import ensure_server

    server = ensure_server(cli.settings().embedded_dir)
    click.echo(server.url)


@db.command()
@pass_cli
def stop(cli: CliContext) -> None:
    """Stop the embedded server."""
    from ..embedded import stop_server

    directory = cli.settings().embedded_dir
    if stop_server(directory):
        click.echo(f"stopped the embedded server in {directory}")
    else:
        click.echo(f"no embedded server runs in {directory}")


@db.command()
@pass_cli
def url(cli: CliContext) -> None:
    """Print the URL of the configured database (password masked)."""
    from ..db import resolve

    click.echo(resolve(cli.settings()).url(masked=True))
