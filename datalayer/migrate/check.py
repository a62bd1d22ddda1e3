"""``datalayer migrate check``: the migrations are hashed, complete, and reproduce the models.

Three checks, all reported (an empty list means the tree is fine):

1. ``migrations.sum`` matches the files;
2. the models and the migrations are in sync: a ``diff`` would write nothing;
3. the migrations, applied to a scratch database, give exactly the schema
   that ``create_tables()`` gives for the models in a second scratch
   database (compared with :mod:`datalayer.migrate.schema`), in every schema
   the models use, with the constraints of ``DeferredForeignKey`` fields
   added afterwards (``create_foreign_key()``, as peewee's docs do).

The scratch databases are created, and dropped afterwards, on the server of
``DATALAYER_DEV_DATABASE_URL`` (Atlas's dev database; its user needs
CREATEDB), or on the embedded server when that is unset.
"""

from __future__ import annotations

import contextlib
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import DatalayerError, MigrationError
from . import checksum as _checksum

__all__ = ["check", "scratch_server"]

_MAX_DIFF_LINES = 40


def scratch_server(settings: Settings) -> Settings:
    """Return settings of the server that holds scratch databases (dev URL or embedded)."""
    if settings.dev_database_url:
        return Settings.from_url(settings.dev_database_url, application_name="datalayer-check")
    from ..embedded import ensure_server

    server = ensure_server(settings.embedded_dir)
    return Settings.from_url(server.url, application_name="datalayer-check")


@contextlib.contextmanager
def _scratch_database(admin: Settings, label: str) -> Iterator[Settings]:
    import psycopg2
    from psycopg2 import sql

    name = f"datalayer_check_{label}_{uuid.uuid4().hex[:10]}"

    def run(*statements: Any) -> None:
        try:
            conn = psycopg2.connect(**admin.connect_kwargs())
        except psycopg2.Error as exc:
            raise MigrationError(
                f"cannot connect to the scratch server {admin.describe()}: "
                f"{str(exc).strip().splitlines()[0]}; check DATALAYER_DEV_DATABASE_URL"
            ) from None
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    try:
        run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg2.Error as exc:
        raise MigrationError(
            f"cannot create a scratch database on {admin.describe()}: "
            f"{str(exc).strip().splitlines()[0]}; give DATALAYER_DEV_DATABASE_URL a user "
            "with CREATEDB (the database is dropped afterwards)"
        ) from None
    try:
        yield admin.replace(dbname=name, max_open_conns=2, max_idle_conns=1)
    finally:
        with contextlib.suppress(Exception):
            run(
                sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}"
                ).format(sql.Literal(name)),
                sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)),
            )


def _default_models() -> Sequence[Any]:
    from ..models import MODELS

    return MODELS


def check(
    settings: Settings,
    directory: str | Path | None = None,
    models: Sequence[Any] | None = None,
) -> list[str]:
    """Return every problem found with the migrations in ``directory`` (empty: all good)."""
    from ..db import Database
    from ._spec import quote
    from .generate import diff_source
    from .router import Router
    from .runner import apply
    from .schema import compare, snapshot

    directory = Path(directory) if directory is not None else settings.migrations_dir
    models = [  # an abstract base (``__abstract__ = True`` on the class) is never a table
        m for m in (models if models is not None else _default_models())
        if not vars(m).get("__abstract__")
    ]
    problems = list(_checksum.problems(directory))
    admin = scratch_server(settings)

    with _scratch_database(admin, "mig") as mig_settings, _scratch_database(
        admin, "models"
    ) as model_settings:
        migrated = Database(mig_settings)
        declared = Database(model_settings)
        try:
            try:
                source = diff_source(Router(migrated, directory), models)
            except MigrationError as exc:
                source = None
                problems.append(f"cannot compare the models with the migrations: {exc}")
            if source is not None:
                # The body's first line is not indented, the others are (template-ready).
                lines = textwrap.dedent("    " + source[0]).strip().splitlines()
                shown = "\n    ".join(lines[:_MAX_DIFF_LINES])
                more = (
                    f"\n    ... ({len(lines) - _MAX_DIFF_LINES} more lines)"
                    if len(lines) > _MAX_DIFF_LINES
                    else ""
                )
                problems.append(
                    "the models changed without a migration; run `datalayer migrate diff NAME`. "
                    f"A diff would write:\n    {shown}{more}"
                )
            applied_ok = True
            try:
                apply(migrated, directory, lock_wait=60, verify_checksums=False)
            except DatalayerError as exc:
                applied_ok = False
                problems.append(f"the migrations do not apply to an empty database: {exc}")
            if applied_ok:
                # Every schema the models use (Meta.schema), which create_tables() expects.
                schemas = sorted({"public", *(m._meta.schema for m in models if m._meta.schema)})
                with migrated.checkout():
                    got = [snapshot(migrated, s) for s in schemas]  # without the history table
                with declared.checkout(), declared.bind_ctx(models):
                    for schema in schemas:
                        declared.execute_sql(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
                    declared.create_tables(models)
                    for model in models:  # as peewee's docs say to, once both tables exist
                        for field in list(model._meta.refs):
                            if field.deferred:
                                model._schema.create_foreign_key(field)
                    want = [snapshot(declared, s) for s in schemas]
                for schema, w, g in zip(schemas, want, got, strict=True):
                    where = "" if schema == "public" else f"(schema {schema}) "
                    for difference in compare(w, g):
                        problems.append(f"schema differs from the models: {where}{difference}")
        finally:
            migrated.close_pool()
            declared.close_pool()
    return problems
