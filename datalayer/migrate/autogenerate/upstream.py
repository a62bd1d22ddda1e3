"""``pw_migrate create --auto`` writing migrations with datalayer's generator.

peewee-migrate's CLI runs ``conf.py`` of the migrations folder inside each
command, before the command's own work; ours calls :func:`install_upstream`.
Nothing of peewee-migrate is replaced: the function asks click (public API)
which command is running and, only for ``pw_migrate create --auto``, does the
command's work itself and ends it with ``ctx.exit``, so upstream's
``Router.create`` never runs.  In every other case it does nothing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import peewee as pw

from ...errors import DatalayerError

__all__ = ["install_upstream"]

# True while install_upstream builds the router: peewee-migrate's get_router
# runs conf.py again, whose install_upstream() call must then do nothing.
_BUILDING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "datalayer_upstream_building", default=False
)


def install_upstream(create_migration: Callable[..., Any]) -> None:
    """Run ``pw_migrate create --auto`` with ``create_migration``; otherwise do nothing.

    Called from ``conf.py`` while peewee-migrate's CLI loads it.  When the
    running click command is peewee-migrate's ``create`` with ``--auto``, it
    builds the router as the CLI would (``peewee_migrate.cli.get_router`` with
    the command's ``--directory``, ``--database``, ``--migratetable`` and
    ``-v``, and conf.py's ``DATABASE``, ``IGNORE``, ``SCHEMA``,
    ``MIGRATE_TABLE``), finds the models as upstream does (``--auto-source``,
    ``IGNORE``; a bare ``--auto`` takes ``[tool.datalayer] models``), writes
    the migration with ``create_migration``, logs what upstream logs and ends
    the command: exit 0 when written or "No changes found.", exit 1 with one
    line on a :class:`~datalayer.errors.DatalayerError`.
    """
    if _BUILDING.get():
        return
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    from peewee_migrate import cli
    from peewee_migrate.models import MIGRATE_TABLE

    if ctx.command is not cli.create or not ctx.params.get("auto"):
        return
    params = ctx.params
    auto: Any = params.get("auto_source") or True
    token = _BUILDING.set(True)
    try:
        router = cli.get_router(
            params.get("directory"),
            params.get("database"),
            params.get("migratetable") or MIGRATE_TABLE,
            params.get("verbose") or 0,
        )
    finally:
        _BUILDING.reset(token)
    ctx.exit(_create(router, params.get("name") or "auto", auto, create_migration))


def _create(
    router: Any, name: str, auto: Any, create_migration: Callable[..., Any]
) -> int:
    """Write the migration as ``pw_migrate create --auto`` would; return the exit code."""
    try:
        models = _upstream_models(router, auto)
        written = create_migration(router, name, models)
    except DatalayerError as exc:
        # As peewee-migrate's CLI does for its own errors: say it, exit 1.
        router.logger.error("%s", exc)
        return 1
    if written is None:
        router.logger.warning("No changes found.")
        return 0
    for warning in written.warnings:
        router.logger.warning("%s", warning)
    router.logger.info('Migration has been created as "%s"', written.name)
    return 0


def _upstream_models(router: Any, auto: Any) -> list[type[pw.Model]]:
    """Find models the way ``peewee_migrate.Router.create`` does."""
    import pkgutil
    import sys

    from peewee_migrate import router as upstream

    is_model: Any = upstream._check_model
    load_models: Any = upstream.load_models

    if isinstance(auto, bool):
        # A bare ``--auto``: the project's model set ([tool.datalayer] models), as
        # ``datalayer migrate diff`` uses, instead of upstream's scan of every package.
        from ...project import load_project

        return list(load_project().load_models())
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.append(cwd)
    models = auto if isinstance(auto, list) else [auto]
    if not all(is_model(m) for m in models):
        modules = models
        if isinstance(auto, bool):
            modules = [m for _, m, ispkg in pkgutil.iter_modules([cwd]) if ispkg]
        models = [m for module in modules for m in load_models(module)]
    if router.ignore:
        models = [m for m in models if m._meta.name not in router.ignore]
    # load_models returns sets: keep a stable order for stable output.
    return sorted(set(models), key=lambda m: (m.__module__, m.__qualname__))
