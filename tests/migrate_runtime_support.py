"""Helpers for the migration runtime tests: write migration files, read the history, run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from datalayer.config import Settings
from datalayer.migrate.runtime.checksum import write_sum
from tests.pgserver import Server

TABLE_MIGRATION = '''\
import peewee as pw


def migrate(migrator, database, *, fake=False):
    @migrator.create_model
    class {cls}(pw.Model):
        id = pw.AutoField()
        note = pw.CharField(max_length=50, null=True)

        class Meta:
            table_name = "{table}"
{extra}

def rollback(migrator, database, *, fake=False):
    migrator.remove_model("{table}")
'''


def write_migration(
    directory: Path, name: str, migrate: str = "pass", rollback: str = "pass", header: str = ""
) -> Path:
    """Write ``directory/name.py`` with the given bodies (indented for you)."""
    directory.mkdir(parents=True, exist_ok=True)
    body = (
        f"{textwrap.dedent(header)}\n\n"
        "def migrate(migrator, database, *, fake=False):\n"
        f"{textwrap.indent(textwrap.dedent(migrate).strip() or 'pass', '    ')}\n\n\n"
        "def rollback(migrator, database, *, fake=False):\n"
        f"{textwrap.indent(textwrap.dedent(rollback).strip() or 'pass', '    ')}\n"
    )
    path = directory / f"{name}.py"
    path.write_text(body, encoding="utf-8")
    return path


def write_table_migration(directory: Path, name: str, table: str, extra: str = "") -> Path:
    """Write a migration that creates ``table`` (rollback drops it); ``extra`` adds lines."""
    directory.mkdir(parents=True, exist_ok=True)
    extra_src = textwrap.indent(textwrap.dedent(extra).strip(), "    ") + "\n" if extra else ""
    path = directory / f"{name}.py"
    cls = "".join(part.capitalize() for part in table.split("_")) or "T"
    text = TABLE_MIGRATION.format(table=table, cls=cls, extra=extra_src)
    path.write_text(text, encoding="utf-8")
    return path


def make_tables(directory: Path, count: int, *, hashed: bool = True) -> list[str]:
    """Write ``count`` migrations creating tables t1..tN; return their names."""
    names = []
    for i in range(1, count + 1):
        name = f"{i:03d}_create_t{i}"
        write_table_migration(directory, name, f"t{i}")
        names.append(name)
    if hashed:
        write_sum(directory)
    return names


def history(pg: Server, dbname: str, table: str = "migratehistory") -> list[tuple[Any, ...]]:
    """Return (name, checksum) rows of the history table in id order; [] without one."""
    conn = pg.raw(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (table,))
            if cur.fetchone()[0] is None:
                return []
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                (table,),
            )
            cols = {r[0] for r in cur.fetchall()}
            extra = ", checksum" if "checksum" in cols else ", NULL"
            cur.execute(f'SELECT name{extra} FROM "{table}" ORDER BY id')
            return list(cur.fetchall())
    finally:
        conn.close()


def tables(pg: Server, dbname: str) -> set[str]:
    """Return the table names in the public schema."""
    conn = pg.raw(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def cli_env(settings: Settings, directory: Path | None = None, **extra: str) -> dict[str, str]:
    """Return an environment for a ``datalayer`` subprocess on ``settings``'s database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL",
                                                                      "DATALAYER_"))}
    env["DATABASE_URL"] = settings.url(masked=False)
    if directory is not None:
        env["DATALAYER_MIGRATIONS_DIR"] = str(directory)
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    """Return the argv that runs the ``datalayer`` CLI with this interpreter."""
    return [sys.executable, "-c", "from datalayer.cli import run; run()", *args]


def run_cli(
    settings: Settings, directory: Path, *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``datalayer ARGS`` in a subprocess and return the finished process."""
    return subprocess.run(
        cli_command(*args),
        env=cli_env(settings, directory),
        cwd=cwd or directory.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
