"""``datalayer migrate``: diff, apply, status, hash, rollback, check.

Each command calls one function of :mod:`datalayer.migrate` and prints what
it returns.  Exit codes: 0 ok, 1 error or failed check, 2 usage; ``status``
exits 3 when anything is pending, modified or missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import CliContext, pass_cli

if TYPE_CHECKING:
    from ..db import Database
    from ..migrate.runner import Applied

__all__ = ["STATUS_NOT_UP_TO_DATE", "migrate"]

STATUS_NOT_UP_TO_DATE = 3
"""Exit status of ``migrate status`` when anything is pending, modified or missing."""

_SECONDS = click.FloatRange(min=0)


@click.group()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="PATH",
    help="Migrations directory (default: DATALAYER_MIGRATIONS_DIR, else ./migrations).",
)
@click.pass_context
def migrate(ctx: click.Context, directory: Path | None) -> None:
    """Generate, apply and check migrations (peewee-migrate files in migrations/)."""
    ctx.meta["datalayer.migrations_dir"] = directory


def _directory(cli: CliContext) -> Path:
    chosen = click.get_current_context().meta.get("datalayer.migrations_dir")
    return Path(chosen) if chosen is not None else cli.settings().migrations_dir


@contextmanager
def _database(cli: CliContext) -> Iterator[Database]:
    database = cli.database()
    try:
        yield database
    finally:
        database.close_pool()


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _line(verb: str) -> Any:
    def echo(result: Applied) -> None:
        extra = "" if result.transactional else ", no transaction"
        click.echo(f"{verb} {result.name} ({_ms(result.seconds)}{extra})")

    return echo


@migrate.command()
@click.argument("name")
@click.option(
    "--allow-drop", is_flag=True,
    help="Write the migration even if it drops tables or columns (refused otherwise).",
)
@click.option(
    "--unsafe", is_flag=True,
    help="Write the plain forms (locking, one transaction): for tables known to be small.",
)
@click.option(
    "--postgres", "postgres", type=click.IntRange(min=1), default=None, metavar="N",
    help="Target PostgreSQL major version (default 12, the lowest supported).",
)
@pass_cli
def diff(
    cli: CliContext, name: str, allow_drop: bool, unsafe: bool, postgres: int | None
) -> None:
    """Write a migration NAME for the model changes since the last one.

    Writes nothing (and says so) when the models and migrations agree, then
    rewrites migrations.sum.  A migration that drops tables or columns is
    refused (each drop named, with the renamed_from line when it looks like a
    rename) unless --allow-drop is given.  Changes to existing tables are
    written in forms that keep them readable and writable (concurrent
    indexes, NOT VALID then VALIDATE, batched fills), as NAME and, for what
    must run outside a transaction, NAME_2 (atomic = False); --unsafe writes
    the plain forms.
    """
    from ..db import Database
    from ..migrate.checksum import verify, write_sum
    from ..migrate.generate import create_migration
    from ..migrate.router import Router

    directory = _directory(cli)
    verify(directory)  # never build on files that do not match migrations.sum
    # The diff replays the files only: a database object is needed, a connection is not.
    result = create_migration(
        Router(Database(), directory), name, allow_drop=allow_drop, unsafe=unsafe,
        postgres=12 if postgres is None else postgres,
    )
    if result is None:
        click.echo(
            f"no changes: the migrations in {directory} already match the models; "
            "nothing written"
        )
        return
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    sum_path = write_sum(directory)
    for path, planned in zip(result.paths or (result.path,), _planned(result), strict=False):
        click.echo(f"wrote {path}{'' if planned else ' (no transaction)'}")
    click.echo(f"updated {sum_path}")


def _planned(result: Any) -> list[bool]:
    """Return, for each file written, whether it runs in one transaction."""
    plan = getattr(result, "plan", None)
    return [m.atomic for m in plan.migrations] if plan else [True]


@migrate.command()
@click.option("--to", "to", metavar="NAME", help="Stop after this migration (name or number).")
@click.option("--dry-run", is_flag=True, help="Print the SQL that would run; change nothing.")
@click.option(
    "--wait",
    type=_SECONDS,
    default=None,
    metavar="SECONDS",
    help="How long to wait for another run's migration lock (default 300).",
)
@click.option(
    "--lock-timeout",
    type=_SECONDS,
    default=None,
    metavar="SECONDS",
    help="Server lock_timeout for each migration (default 10; 0: none).",
)
@click.option(
    "--statement-timeout",
    type=_SECONDS,
    default=None,
    metavar="SECONDS",
    help="Server statement_timeout for each migration (default: none).",
)
@pass_cli
def apply(
    cli: CliContext,
    to: str | None,
    dry_run: bool,
    wait: float | None,
    lock_timeout: float | None,
    statement_timeout: float | None,
) -> None:
    """Verify migrations.sum, then apply the pending migrations in order under a lock."""
    import time

    from ..migrate import runner

    directory = _directory(cli)
    options: dict[str, Any] = {}
    if wait is not None:
        options["lock_wait"] = wait
    if lock_timeout is not None:
        options["lock_timeout"] = lock_timeout
    if statement_timeout is not None:
        options["statement_timeout"] = statement_timeout

    def show_sql(result: Applied) -> None:
        note = "" if result.transactional else "  (atomic = False: would run outside a transaction)"
        click.echo(f"-- {result.name}{note}")
        for statement in result.sql:
            click.echo(statement)
        click.echo("")

    start = time.perf_counter()
    with _database(cli) as database:
        where = database.settings.describe()
        results = runner.apply(
            database,
            directory,
            to=to,
            dry_run=dry_run,
            on_applied=show_sql if dry_run else _line("applied"),
            **options,
        )
    if dry_run:
        click.echo(
            f"-- dry run: {_n(len(results), 'migration')} would be applied to {where}; "
            "nothing was changed"
        )
    elif results:
        click.echo(
            f"{_n(len(results), 'migration')} applied to {where} in "
            f"{_ms(time.perf_counter() - start)}"
        )
    else:
        click.echo(f"nothing to apply: {where} is up to date")


@migrate.command()
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON: applied, pending, modified, missing."
)
@pass_cli
def status(cli: CliContext, as_json: bool) -> None:
    """Show applied, pending, modified and missing migrations (reads only).

    Exits 0 when up to date, 3 when anything is pending, modified since it
    was applied, or applied but missing on disk.
    """
    from ..migrate import runner

    directory = _directory(cli)
    with _database(cli) as database:
        where = database.settings.describe()
        result = runner.status(database, directory)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(f"database:   {where}")
        click.echo(f"directory:  {directory}")
        modified, missing = set(result.modified), set(result.missing)
        for name in result.applied:
            if name in missing:
                click.echo(f"[?] {name}  applied, missing on disk")
            elif name in modified:
                click.echo(f"[!] {name}  modified since it was applied")
            else:
                click.echo(f"[x] {name}")
        for name in result.pending:
            click.echo(f"[ ] {name}  pending")
        click.echo(
            f"{len(result.applied)} applied, {len(result.pending)} pending, "
            f"{len(result.modified)} modified, {len(result.missing)} missing"
        )
        for problem in result.checksum_problems:
            click.echo(f"warning: {problem}", err=True)
    if not result.up_to_date:
        click.get_current_context().exit(STATUS_NOT_UP_TO_DATE)


@migrate.command("hash")
@pass_cli
def hash_(cli: CliContext) -> None:
    """Rewrite migrations.sum for the migration files now on disk."""
    from ..migrate.checksum import compute, write_sum

    directory = _directory(cli)
    path = write_sum(directory)
    click.echo(f"wrote {path} ({_n(len(compute(directory)), 'migration file')})")


@migrate.command()
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many of the last applied migrations to undo.")
@click.option("--wait", type=_SECONDS, default=None, metavar="SECONDS",
              help="How long to wait for another run's migration lock (default 300).")
@pass_cli
def rollback(cli: CliContext, steps: int, wait: float | None) -> None:
    """Undo the last applied migrations, newest first, each in its own transaction."""
    from ..migrate import runner

    directory = _directory(cli)
    options: dict[str, Any] = {} if wait is None else {"lock_wait": wait}
    with _database(cli) as database:
        where = database.settings.describe()
        results = runner.rollback(
            database, directory, steps=steps, on_applied=_line("rolled back"), **options
        )
    click.echo(f"{_n(len(results), 'migration')} rolled back on {where}")


@migrate.command()
@pass_cli
def check(cli: CliContext) -> None:
    """For CI: checksums valid, models and migrations in sync, schema reproduced exactly.

    Applies the migrations to a scratch database (DATALAYER_DEV_DATABASE_URL,
    else the embedded server) and compares the result with the models'
    create_tables().  Exits 1 listing every difference.
    """
    from ..migrate.check import check as run_check

    directory = _directory(cli)
    problems = run_check(cli.settings(), directory)
    if problems:
        for problem in problems:
            click.echo(f"- {problem}", err=True)
        click.echo(f"error: migrate check found {_n(len(problems), 'problem')}", err=True)
        click.get_current_context().exit(1)
    click.echo(f"ok: {directory} is hashed, in sync with the models, and reproduces their schema")
