"""The ``datalayer`` command: parses arguments, calls the library, prints.

Each command group lives in its own module and is imported only when used.
A :class:`~datalayer.errors.DatalayerError` becomes one line on stderr and
exit status 1; usage errors exit 2 (click's default).  ``migrate status``
documents its own exit codes.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import DatalayerError

if TYPE_CHECKING:
    from ..config import Settings
    from ..db import Database
    from ..project import Project

__all__ = ["CliContext", "main", "pass_cli"]

# name -> (module, attribute); imported on first use.
COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("datalayer.cli.db", "db"),
    "migrate": ("datalayer.cli.migrate", "migrate"),
    "erd": ("datalayer.cli.erd", "erd"),
}


@dataclass
class CliContext:
    """What the global options chose; settings and database are made on demand."""

    env_name: str | None = None
    env_file: Path | None = None
    models_option: str | None = None
    dir_option: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _project: Project | None = field(default=None, repr=False)
    _models: list[Any] | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            from ..config import ConfigWarning, load_settings

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConfigWarning)
                self._settings = load_settings(env_name=self.env_name, env_file=self.env_file)
            for w in caught:
                click.echo(f"warning: {w.message}", err=True)
        return self._settings

    def database(self) -> Database:
        from ..db import connect

        return connect(self.settings())

    def project(self) -> Project:
        """The project (pyproject.toml ``[tool.datalayer]``, environment, options)."""
        if self._project is None:
            from ..config import file_environment
            from ..project import load_project

            self.settings()  # reports bad .env files first
            # DATALAYER_MODELS / DATALAYER_MIGRATIONS_DIR may come from the .env files
            environ = file_environment(env_name=self.env_name, env_file=self.env_file)
            self._project = load_project(models=self.models_option, migrations=self.dir_option,
                                         environ=environ)
            _importable(self._project.root)
        return self._project

    def models(self) -> list[Any]:
        """The project's model classes, imported once, in dependency order."""
        if self._models is None:
            self._models = self.project().load_models()
        return self._models

    def directory(self) -> Path:
        """The migrations folder."""
        return self.project().migrations


def _importable(root: Path | None) -> None:
    """Put the project's folder on ``sys.path`` (first, as ``python -m`` puts the current one).

    Migrations refer to the application's modules (``m.ref('app.models', 'make_code')``
    for a callable default, a data migration's ``from app import ...``): every command
    that loads migrations or models must import them as the application does, from any
    subfolder, without ``PYTHONPATH=.``.  With no ``pyproject.toml`` the current folder
    is added last, so that a stray ``peewee.py`` there shadows nothing installed.
    """
    if root is not None:
        entry = str(root.resolve())
        if entry not in sys.path:
            sys.path.insert(0, entry)
        return
    cwd = str(Path.cwd().resolve())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


# Global options, accepted before or after the subcommand: name -> takes a value.
GLOBAL_OPTIONS = {"--env": True, "--env-file": True, "--models": True, "--dir": True}


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the global options found anywhere in ``args`` to the front (up to ``--``)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS and arg.startswith("--"):
            if "=" in arg or i + 1 >= len(args):
                front.append(arg)
                i += 1
            else:
                front.extend(args[i : i + 2])
                i += 2
            continue
        rest.append(arg)
        i += 1
    return front + rest


class _Group(click.Group):
    """Loads command groups lazily and turns package errors into one line and exit 1."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            args = hoist_global_options(args)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        for name, (module, _) in COMMANDS.items():
            if importlib.util.find_spec(module) is not None:
                names.add(name)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name]
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name == module:
                    return None
                raise
            command: click.Command = getattr(mod, attr)
            return command
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            # click suggests from the commands registered on the group: ours load lazily.
            if exc.possibilities or not args:
                raise
            raise click.exceptions.NoSuchCommand(
                args[0], possibilities=self.list_commands(ctx), ctx=ctx
            ) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DatalayerError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--env", "env_name", metavar="NAME", help="Also load .env.NAME (e.g. local, docker).")
@click.option(
    "--env-file",
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="Also load this .env-style file.",
)
@click.option(
    "--models",
    "models",
    metavar="MODULES",
    help="Model modules, comma-separated (default: [tool.datalayer] models in "
    "pyproject.toml, DATALAYER_MODELS, else datalayer.models).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="PATH",
    help="Migrations folder (default: DATALAYER_MIGRATIONS_DIR, [tool.datalayer] "
    "migrations, else ./migrations).",
)
@click.version_option(package_name="peewee-datalayer")
@click.pass_context
def main(
    ctx: click.Context,
    env_name: str | None,
    env_file: Path | None,
    models: str | None,
    directory: Path | None,
) -> None:
    """PostgreSQL data layer: database, migrations and ER diagram.

    Configuration comes from the environment (DATABASE_URL or DB_*), a .env
    file in the project folder (else the current one), and --env / --env-file.
    With no server configured, an embedded PostgreSQL server is started (it
    says so on stderr; `datalayer db stop` stops it).  The models and the
    migrations folder come from [tool.datalayer] in the nearest pyproject.toml
    (or --models / --dir).  Global options may come before or after the command.
    """
    echo_embedded_starts()
    ctx.obj = CliContext(
        env_name=env_name, env_file=env_file, models_option=models, dir_option=directory
    )


class _StartedLine(logging.Handler):
    """Print the library's "started the embedded PostgreSQL ..." record on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "embedded_started", None) is not None:
            click.echo(record.getMessage(), err=True)


def echo_embedded_starts() -> None:
    """Make every embedded server this process starts say so in one line on stderr."""
    logger = logging.getLogger("datalayer.embedded")
    if not any(isinstance(h, _StartedLine) for h in logger.handlers):
        logger.addHandler(_StartedLine())
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)


def run() -> None:  # pragma: no cover - console entry point wrapper
    main(prog_name="datalayer")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
