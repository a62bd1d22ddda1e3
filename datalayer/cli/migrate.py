"""``datalayer migrate``: diff, apply, status, hash, rollback, check, sql, lint.

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

from ..project import DEFAULT_POSTGRES
from . import CliContext, pass_cli
from ._types import PostgresVersion, Seconds, Whole

if TYPE_CHECKING:
    from ..db import Database
    from ..migrate.runtime.apply import Applied

__all__ = ["STATUS_NOT_UP_TO_DATE", "migrate"]

STATUS_NOT_UP_TO_DATE = 3
"""Exit status of ``migrate status`` when anything is pending, modified or missing."""

_SECONDS = Seconds()
_POSTGRES_HELP = (
    "Target PostgreSQL major version (default: [tool.datalayer] postgres, "
    f"else {DEFAULT_POSTGRES})."
)


class _MigrateGroup(click.Group):
    """Names the configured migrations folder in the help, not always ``migrations/``."""

    def _help_for(self, ctx: click.Context) -> str:
        return (self.help or "").replace("files in migrations/", f"files in {_folder(ctx)}")

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        original = self.help
        self.help = self._help_for(ctx)
        try:
            super().format_help_text(ctx, formatter)
        finally:
            self.help = original

    def get_short_help_str(self, limit: int = 45) -> str:
        ctx = click.get_current_context(silent=True)
        if ctx is None:
            return super().get_short_help_str(limit)
        original = self.help
        self.help = self._help_for(ctx)
        try:
            return super().get_short_help_str(limit)
        finally:
            self.help = original


def _folder(ctx: click.Context) -> str:
    """The migrations folder the commands would use from here (for the help text)."""
    from ..errors import DatalayerError
    from ..project import load_project

    cli = ctx.find_object(CliContext)
    try:
        project = load_project(
            models=None, migrations=cli.dir_option if cli is not None else None
        )
    except (DatalayerError, OSError, ValueError):
        return "the configured folder"
    return f"{project.migrations}/"


@click.group(cls=_MigrateGroup)
def migrate() -> None:
    """Generate, apply and check migrations (peewee-migrate files in migrations/).

    The models and the folder come from [tool.datalayer] in pyproject.toml,
    or the global --models / --dir options (before or after the command).
    """


def _directory(cli: CliContext) -> Path:
    return cli.directory()


@contextmanager
def _database(cli: CliContext) -> Iterator[Database]:
    database = cli.database()
    try:
        yield database
    finally:
        database.close_pool()


INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


@contextmanager
def _interruptible(database: Database, verb: str) -> Iterator[None]:
    """Cancel the running statement on Ctrl-C and say what stays, then exit 130."""
    from ..errors import DatalayerError
    from ._interrupt import cancel_on_interrupt

    with cancel_on_interrupt(database) as interrupt:
        try:
            yield
        except (Exception, KeyboardInterrupt) as exc:
            if not interrupt.pressed or isinstance(exc, click.exceptions.Exit):
                raise
            if isinstance(exc, DatalayerError):
                line = str(exc)
            else:
                line = (
                    f"stopped; a migration that was being {verb} was rolled back and nothing of "
                    "it was recorded (one with `atomic = False` keeps the statements it had "
                    f"run); those listed as {verb} above stay so; `datalayer migrate status` "
                    "shows where the database stands"
                )
            click.echo(f"interrupted (Ctrl-C): {line}", err=True)
            click.get_current_context().exit(INTERRUPTED)


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _line(verb: str) -> Any:
    def echo(result: Applied) -> None:
        extra = "" if result.transactional else ", no transaction"
        part = f" ({result.phase} phase)" if result.phase else ""
        click.echo(f"{verb} {result.name}{part} ({_ms(result.seconds)}{extra})")

    return echo


def _new_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Check a new migration's NAME with the rule every command shares (usage error: exit 2)."""
    from ..migrate.runtime.names import MigrationNameError, check_name

    try:
        return check_name(value)
    except MigrationNameError as exc:
        raise click.BadParameter(str(exc)) from None


def _waiting(line: str) -> None:
    """Say on stderr that the run waits for another run's migration lock (and still does)."""
    click.echo(line, err=True)


def _show_sql(result: Applied) -> None:
    """Print one migration of a dry run: a ``-- NAME`` line, its statements, a blank line."""
    note = "" if result.transactional else "  (atomic = False: would run outside a transaction)"
    part = f" ({result.phase} phase)" if result.phase else ""
    click.echo(f"-- {result.name}{part}{note}")
    for statement in result.sql:
        click.echo(statement)
    click.echo("")


def _job_options(fn: Any) -> Any:
    """The options of the commands that run background jobs (apply, jobs --run)."""
    fn = click.option(
        "--max-lag", type=_SECONDS, default=None, metavar="SECONDS",
        help="With DB_REPLICA_URLS: pause jobs while a replica lags more "
        "(default: half of DB_REPLICA_MAX_LAG).",
    )(fn)
    return click.option(
        "--throttle", type=_SECONDS, default=0.0, metavar="SECONDS",
        help="Sleep between two batches of a background job (default 0).",
    )(fn)


def _jobs_options(throttle: float, max_lag: float | None) -> Any:
    import sys

    from ..migrate.runtime.jobs import JobOptions, Progress

    return JobOptions(throttle=throttle, max_lag=max_lag, reporter=Progress(sys.stderr))


@migrate.command()
@click.argument("name", callback=_new_name)
@click.option(
    "--allow-drop", is_flag=True,
    help="Write the migration even if it drops tables or columns (refused otherwise).",
)
@click.option(
    "--unsafe", is_flag=True,
    help="Write the plain forms (locking, one transaction): for tables known to be small.",
)
@click.option(
    "--postgres", "postgres", type=PostgresVersion(), default=None, metavar="N",
    help=_POSTGRES_HELP,
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
    from ..migrate.autogenerate.compare import create_migration
    from ..migrate.runtime.checksum import verify, write_sum
    from ..migrate.runtime.files import Router
    from ..migrate.scaffold import ensure_conf

    directory = _directory(cli)
    verify(directory)  # never build on files that do not match migrations.sum
    # The diff replays the files only: a database object is needed, a connection is not.
    result = create_migration(
        Router(Database(), directory),
        name,
        cli.models(),
        allow_drop=allow_drop,
        unsafe=unsafe or cli.project().unsafe,
        postgres=cli.project().postgres if postgres is None else postgres,
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
    conf = ensure_conf(directory)
    if conf is not None:
        click.echo(f"wrote {conf} (makes pw_migrate create --auto use these models)")
    for path, planned in zip(result.paths or (result.path,), _planned(result), strict=False):
        click.echo(f"wrote {path}{'' if planned else ' (no transaction)'}")
    click.echo(f"updated {sum_path}")
    target = cli.project().postgres if postgres is None else postgres
    for path in result.paths or (result.path,):
        _lint_written(directory, Path(path).stem, target)


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
    help="How long to wait for another run's migration lock (default 300) and, before a "
    "contract phase, for connections of older releases to leave (default 0).",
)
@click.option(
    "--phase",
    type=click.Choice(["expand", "contract"]),
    default=None,
    help="Run only the expand (additive) or the contract (removing, narrowing) part of the "
    "pending migrations (default: both).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Run a contract phase even while connections announce another release (DB_RELEASE).",
)
@click.option(
    "--lock-timeout",
    type=_SECONDS,
    default=None,
    metavar="SECONDS",
    help="Server lock_timeout for each migration (default 2; 0: none); retried when it fires.",
)
@click.option(
    "--lock-retries",
    type=Whole(min=0),
    default=None,
    metavar="N",
    help="Times a migration runs again after its lock_timeout fired (default 10).",
)
@click.option(
    "--statement-timeout",
    type=_SECONDS,
    default=None,
    metavar="SECONDS",
    help="Server statement_timeout for each migration (default: none).",
)
@_job_options
@pass_cli
def apply(
    cli: CliContext,
    to: str | None,
    dry_run: bool,
    wait: float | None,
    phase: str | None,
    force: bool,
    lock_timeout: float | None,
    lock_retries: int | None,
    statement_timeout: float | None,
    throttle: float,
    max_lag: float | None,
) -> None:
    """Verify migrations.sum, then apply the pending migrations in order under a lock.

    Background jobs a migration declares run after it commits, before the
    next migration (see `datalayer migrate jobs`).

    With --phase contract and DB_RELEASE set, it refuses (exit 1) while a
    connection to the database announces another release, listing each.
    """
    import time

    from ..migrate.runtime import apply as runner

    directory = _directory(cli)
    options: dict[str, Any] = {}
    if wait is not None:
        options["lock_wait"] = wait
        options["release_wait"] = wait
    if lock_timeout is not None:
        options["lock_timeout"] = lock_timeout
    if statement_timeout is not None:
        options["statement_timeout"] = statement_timeout
    if lock_retries is not None:
        options["lock_retries"] = lock_retries

    start = time.perf_counter()
    with _database(cli) as database, _interruptible(database, "applied"):
        where = database.settings.describe()
        results = runner.apply(
            database,
            directory,
            to=to,
            dry_run=dry_run,
            on_applied=_show_sql if dry_run else _line("applied"),
            on_retry=lambda retry: click.echo(retry.describe()),
            on_wait=_waiting,
            jobs=_jobs_options(throttle, max_lag),
            phase=phase,
            force=force,
            **options,
        )
        # `--to 2` with only 005 pending: not "up to date", say what is pending.
        later = runner.status(database, directory).pending if to and not results else []
    if dry_run:
        click.echo(
            f"-- dry run: {_n(len(results), 'migration')} would be applied to {where}; "
            "nothing was changed"
        )
    elif results:
        part = f" ({phase} phase)" if phase else ""
        click.echo(
            f"{_n(len(results), 'migration')} applied{part} to {where} in "
            f"{_ms(time.perf_counter() - start)}"
        )
    elif later:
        click.echo(
            f"nothing to apply up to --to {to}: it and every migration before it are applied "
            f"on {where}; pending after it: {', '.join(later)} (run `datalayer migrate apply` "
            "without --to to apply them)"
        )
    elif phase:
        click.echo(f"nothing to apply in the {phase} phase on {where}")
    else:
        click.echo(f"nothing to apply: {where} is up to date")


@migrate.command()
@click.argument("names", nargs=-1, metavar="[MIGRATION ...]")
@click.option("--run", "run_", is_flag=True,
              help="Run the unfinished jobs (of these migrations) to their end, resuming each "
              "where it stopped.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@_job_options
@pass_cli
def jobs(
    cli: CliContext,
    names: tuple[str, ...],
    run_: bool,
    as_json: bool,
    throttle: float,
    max_lag: float | None,
) -> None:
    """List background data migrations with their progress, rate and time left.

    Jobs are declared in migrations with backfill(..., background=True);
    apply runs them after the migration that declares them.  --run resumes
    unfinished ones (a job another process runs is waited for).
    """
    from ..migrate.runtime import jobs as _jobs

    wanted = [n.removesuffix(".py") for n in names] or None
    with _database(cli) as database, database.checkout():
        where = database.settings.describe()
        if run_:
            from ..errors import MigrationError

            with _interruptible(database, "applied"):
                try:
                    _jobs.run_jobs(database, wanted, _jobs_options(throttle, max_lag))
                except KeyboardInterrupt:  # between two batches: nothing in flight
                    raise MigrationError(
                        "stopped between two batches; every batch done so far stays done, and "
                        "`datalayer migrate jobs --run` resumes where it stopped"
                    ) from None
        found = _jobs.list_jobs(database, wanted)
    if as_json:
        click.echo(json.dumps([j.to_dict() for j in found], indent=2))
        return
    if not found:
        of = f" of {', '.join(wanted)}" if wanted else ""
        click.echo(f"no background jobs{of} on {where}")
        return
    click.echo(format_jobs(found))
    left = [j for j in found if not j.done]
    if left and not run_:
        click.echo(f"{_n(len(left), 'job')} not done: `datalayer migrate jobs --run` resumes them")


def format_jobs(found: list[Any]) -> str:
    """Return the table `migrate jobs` prints: one row per job."""
    from ..migrate.runtime.jobs import _duration, describe_rate

    rows = [("JOB", "STATE", "ROWS", "DONE", "RATE", "LEFT")]
    for job in found:
        pct = (
            f"{100.0 * job.rows_done / job.rows_total:.1f}%"
            if job.rows_total else ("100.0%" if job.done else "-")
        )
        total = "?" if job.rows_total is None else f"{job.rows_total:,}"
        rows.append((
            job.label,
            job.state + (f" ({job.error})" if job.error and not job.done else ""),
            f"{job.rows_done:,}/{total}",
            pct,
            describe_rate(job.rate),
            "-" if job.done else _duration(job.left),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )


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
    from ..migrate.runtime import apply as runner

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
        half = set(result.expanded)
        for name in result.pending:
            if name in half:
                click.echo(f"[~] {name}  expand phase applied, contract phase pending")
            else:
                click.echo(f"[ ] {name}  pending")
        click.echo(
            f"{len(result.applied)} applied, {len(result.pending)} pending, "
            f"{len(result.modified)} modified, {len(result.missing)} missing"
        )
        for line in _release_lines(result.connections):
            click.echo(line)
        for problem in result.checksum_problems:
            click.echo(f"warning: {problem}", err=True)
        for index in result.invalid_indexes:
            state = "being built concurrently" if index.building else "a failed concurrent build"
            click.echo(f"INVALID index {index.qualified} on {index.table} ({state})")
        for constraint in result.not_valid_constraints:
            click.echo(
                f"NOT VALID constraint {constraint.name} on {constraint.schema}.{constraint.table}"
                f": {constraint.definition}"
            )
    if not result.up_to_date:
        click.get_current_context().exit(STATUS_NOT_UP_TO_DATE)


def _release_lines(connections: list[Any]) -> list[str]:
    """Say which releases are connected (DB_RELEASE), and how many connections announce none."""
    counts: dict[str, int] = {}
    unknown = 0
    for conn in connections:
        if conn.release is None:
            unknown += 1
        else:
            counts[conn.release] = counts.get(conn.release, 0) + 1
    if not counts:  # no process announces a release (DB_RELEASE unset everywhere)
        return []
    named = ", ".join(f"{r} ({_n(c, 'connection')})" for r, c in counts.items())
    tail = f"; {_n(unknown, 'connection')} without a release" if unknown else ""
    return [f"connected releases: {named}{tail}"]


@migrate.command("hash")
@pass_cli
def hash_(cli: CliContext) -> None:
    """Rewrite migrations.sum for the migration files now on disk."""
    from ..migrate.runtime.checksum import compute, write_sum

    directory = _directory(cli)
    path = write_sum(directory)
    click.echo(f"wrote {path} ({_n(len(compute(directory)), 'migration file')})")


@migrate.command()
@click.option("--steps", type=Whole(min=1), default=1, show_default=True,
              help="How many of the last applied migrations to undo.")
@click.option("--wait", type=_SECONDS, default=None, metavar="SECONDS",
              help="How long to wait for another run's migration lock (default 300).")
@click.option("--dry-run", is_flag=True, help="Print the SQL that would run; change nothing.")
@pass_cli
def rollback(cli: CliContext, steps: int, wait: float | None, dry_run: bool) -> None:
    """Undo the last applied migrations, newest first, each in its own transaction."""
    from ..migrate.runtime import apply as runner

    directory = _directory(cli)
    options: dict[str, Any] = {} if wait is None else {"lock_wait": wait}
    with _database(cli) as database, _interruptible(database, "rolled back"):
        where = database.settings.describe()
        results = runner.rollback(
            database, directory, steps=steps, dry_run=dry_run, on_wait=_waiting,
            on_applied=_show_sql if dry_run else _line("rolled back"), **options
        )
    if dry_run:
        click.echo(
            f"-- dry run: {_n(len(results), 'migration')} would be rolled back on {where}; "
            "nothing was changed"
        )
        return
    click.echo(f"{_n(len(results), 'migration')} rolled back on {where}")


@migrate.command()
@pass_cli
def check(cli: CliContext) -> None:
    """For CI: checksums valid, models and migrations in sync, schema reproduced, lint clean.

    Applies the migrations to a scratch database (DATALAYER_DEV_DATABASE_URL,
    else the embedded server) and compares the result with the models'
    create_tables().  Exits 1 listing every difference.
    """
    from ..migrate.check import check as run_check

    directory = _directory(cli)
    problems = run_check(cli.settings(), directory, cli.models(), postgres=cli.project().postgres)
    if problems:
        for problem in problems:
            click.echo(f"- {problem}", err=True)
        click.echo(f"error: migrate check found {_n(len(problems), 'problem')}", err=True)
        click.get_current_context().exit(1)
    click.echo(f"ok: {directory} is hashed, in sync with the models, and reproduces their schema")


@migrate.command()
@click.argument("name", callback=_new_name)
@click.option("--to", "to", metavar="NAME", help="Fold up to this migration (default: all).")
@pass_cli
def squash(cli: CliContext, name: str, to: str | None) -> None:
    """Fold the migrations (up to --to) into one migration NAME.

    The result is verified in scratch databases (DATALAYER_DEV_DATABASE_URL,
    else the embedded server) to build the identical schema before anything
    is written.  Databases that applied the folded files stay up to date.
    """
    from ..migrate.squash import squash as run_squash

    directory = _directory(cli)
    result = run_squash(cli.settings(), directory, name, to=to)
    span = f"{result.replaces[0]} .. {result.replaces[-1]}"
    click.echo(
        f"wrote {result.path}: replaces {_n(len(result.replaces), 'migration')} ({span}); "
        f"removed {_n(len(result.removed), 'file')}"
    )
    click.echo(f"updated {directory / 'migrations.sum'}")


@migrate.command()
@click.argument("name")
@click.option("--wait", type=_SECONDS, default=None, metavar="SECONDS",
              help="How long to wait for another run's migration lock (default 300).")
@pass_cli
def rebase(cli: CliContext, name: str, wait: float | None) -> None:
    """After a merge: renumber migration NAME to come after every other; rewrite the sum.

    Refused for a migration that the configured database (DATABASE_URL or
    DB_*) has applied.  Runs under the migration lock, as apply does.
    """
    from ..migrate.rebase import rebase as run_rebase

    directory = _directory(cli)
    with _database(cli) as database:
        result = run_rebase(database, directory, name, lock_wait=wait, on_wait=_waiting)
    click.echo(f"renamed {result.old.name} to {result.new.name}")
    click.echo(f"updated {directory / 'migrations.sum'}")


# -- offline SQL and lint (datalayer.migrate.runtime.offline, datalayer.migrate.lint) ----------


def _lint_written(directory: Path, name: str, postgres: int) -> None:
    """Print the lint findings of the migration ``diff`` just wrote (warnings only)."""
    from ..errors import DatalayerError
    from ..migrate.lint import lint as run_lint

    try:
        report = run_lint(directory, [name], postgres=postgres)
    except DatalayerError as exc:
        click.echo(f"warning: could not lint {name}: {exc}", err=True)
        return
    shown = [(n, f) for n, f in report.every_finding() if not f.allowed]
    for where, finding in shown:
        part = " (rollback)" if where != name else ""
        click.echo(f"lint {finding.level} {finding.rule}{part}: {finding.message}", err=True)
        click.echo(f"  fix: {finding.fix}", err=True)
    if shown:
        click.echo(
            f"lint: {_n(len(shown), 'finding')} in {name}; `datalayer migrate lint {name}` "
            "shows every statement's locks (the file is written: edit it, or allow a rule "
            "with `# datalayer: allow RULE -- reason`)",
            err=True,
        )



@migrate.command("sql")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--rollback", is_flag=True, help="Print the rollback SQL, newest first.")
@click.option("--postgres", type=PostgresVersion(), default=None, metavar="N",
              help=_POSTGRES_HELP)
@pass_cli
def sql(cli: CliContext, names: tuple[str, ...], rollback: bool, postgres: int | None) -> None:
    """Print the SQL the migrations run, in order, without a database (for review).

    One `-- NAME` line comes before each migration's statements (`-- NAME (no
    transaction)` for files with `atomic = False`); a Python step shows as a
    `-- python: NAME (not shown)` line.  NAME: a migration's name or number
    (default: all).
    """
    from ..migrate.runtime.offline import migration_sql, render

    directory = _directory(cli)
    result = migration_sql(
        directory, names or None, rollback, postgres=postgres or cli.project().postgres
    )
    click.echo(render(result), nl=False)


@migrate.command("lint")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--postgres", type=PostgresVersion(), default=None, metavar="N",
              help=_POSTGRES_HELP)
@pass_cli
def lint(cli: CliContext, names: tuple[str, ...], as_json: bool, postgres: int | None) -> None:
    """Show each statement's locks and the rules it breaks; exit 1 on any error.

    Rules are squawk's where squawk has them.  `# datalayer: allow RULE[, RULE]
    -- reason` in a migration file allows those rules in that file.  NAME: a
    migration's name or number (default: all).
    """
    from ..migrate.lint import lint as run_lint
    from ..migrate.lint import render_json, render_text

    report = run_lint(_directory(cli), names or None, postgres=postgres or cli.project().postgres)
    click.echo(render_json(report) if as_json else render_text(report))
    if not report.ok:
        click.get_current_context().exit(1)


# -- baseline and drift: the live schema against what the migrations build ---------


@migrate.command()
@click.option("--to", "to", metavar="NAME",
              help="Record the migrations up to this one (name or number; default: all).")
@click.option("--wait", type=_SECONDS, default=None, metavar="SECONDS",
              help="How long to wait for another run's migration lock (default 300).")
@pass_cli
def baseline(cli: CliContext, to: str | None, wait: float | None) -> None:
    """Adopt a database whose tables exist already (create_tables, GORM, by hand).

    Builds what the migrations up to --to make in a scratch database
    (DATALAYER_DEV_DATABASE_URL, else the embedded server) and, when the live
    schema is the same, records them as applied. Otherwise exits 1 naming
    every difference and records nothing. Refused when history exists.
    """
    from ..migrate.baseline import baseline as run_baseline

    directory = _directory(cli)
    options: dict[str, Any] = {} if wait is None else {"lock_wait": wait}
    with _database(cli) as database:
        where = database.settings.describe()
        result = run_baseline(database, directory, to, settings=cli.settings(), **options)
    if not result.ok:
        for difference in result.differences:
            click.echo(f"- {difference.message()}", err=True)
        click.echo(
            f"error: baseline refused: {where} differs from what the migrations up to "
            f"{result.target} build ({_n(len(result.differences), 'difference')}); nothing "
            "was recorded. Make the database match (or write a migration that does) and run "
            "baseline again",
            err=True,
        )
        click.get_current_context().exit(1)
    for name in result.recorded:
        click.echo(f"recorded {name}")
    click.echo(
        f"{_n(len(result.recorded), 'migration')} recorded as applied on {where}: its schema "
        f"is what the migrations up to {result.target} build"
    )


@migrate.command()
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON: {"differences": [{kind, table, name, expected, actual}, ...]}.')
@pass_cli
def drift(cli: CliContext, as_json: bool) -> None:
    """Compare the live schema with what its applied migrations build (reads only).

    Finds hand-made changes: a column added, an index dropped, a default
    changed, a constraint or table added or removed, in every schema the
    migrations use. Exits 0 when there are none, 1 listing each.
    """
    from ..migrate.drift import drift as run_drift

    directory = _directory(cli)
    with _database(cli) as database:
        where = database.settings.describe()
        report = run_drift(database, directory, settings=cli.settings())
    for name in report.modified:
        click.echo(
            f"warning: {name} changed since it was applied; compared as it is now", err=True
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif report.ok:
        click.echo(
            f"no drift: {where} has the schema that its applied migrations build "
            f"({len(report.applied)} applied)"
        )
    else:
        for difference in report.differences:
            click.echo(f"- {difference.message()}")
        click.echo(
            f"drift: {where} differs from what its applied migrations build "
            f"({len(report.applied)} applied, {_n(len(report.differences), 'difference')})",
            err=True,
        )
    if not report.ok:
        click.get_current_context().exit(1)
