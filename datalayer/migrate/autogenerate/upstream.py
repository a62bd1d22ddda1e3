"""``pw_migrate create --auto`` writing migrations with datalayer's generator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee as pw

from ...errors import DatalayerError

__all__ = ["install_upstream"]

_UPSTREAM_CREATE: Any = None


def install_upstream(create_migration: Callable[..., Any]) -> None:
    """Make ``pw_migrate create --auto`` write migrations with ``create_migration``.

    peewee-migrate runs ``conf.py`` of the migrations directory before every
    command; ours calls this function.  It replaces ``Router.create`` of
    peewee-migrate's own Router for that process only: models are still
    found as upstream finds them (``--auto-source``, ``IGNORE``), abstract
    models are skipped, and the file is numbered and written by upstream.
    """
    global _UPSTREAM_CREATE
    from peewee_migrate import router as upstream

    if _UPSTREAM_CREATE is not None:
        return
    _UPSTREAM_CREATE = upstream.Router.create

    def create(self: Any, name: str = "auto", *, auto: Any = False) -> str | None:
        if not auto:
            result: str | None = _UPSTREAM_CREATE(self, name, auto=auto)
            return result
        try:
            models = _upstream_models(self, auto)
            written = create_migration(self, name, models)
        except DatalayerError as exc:
            # As peewee-migrate's CLI does for its own errors: say it, exit 1.
            self.logger.error("%s", exc)
            raise SystemExit(1) from None
        if written is None:
            self.logger.warning("No changes found.")
            return None
        for warning in written.warnings:
            self.logger.warning("%s", warning)
        self.logger.info('Migration has been created as "%s"', written.name)
        name_written: str = written.name
        return name_written

    upstream.Router.create = create  # type: ignore[method-assign]


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
