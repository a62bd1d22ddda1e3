"""Application latency while a migration runs: datalayer, peewee-migrate, plain SQL, safe SQL.

``python -m benchmarks online`` (or ``python -m benchmarks.bench_online``).
Uses DATABASE_URL / DB_* when set, else the embedded server.

A table ``items`` of DATALAYER_ONLINE_ROWS rows (default 1,000,000) and a
table ``owners`` of 1,000 rows are built once in a template database by
datalayer's own initial migration.  Then, for each change kind and each of
four ways of writing it, a fresh copy of that database is made and 4 writer
threads (``UPDATE items SET qty = qty + 1 WHERE id = random``) and 4 reader
threads (``SELECT ... FROM items WHERE id = random``), each on its own
connection with a 5 ms pause between queries and no timeout of their own,
run while the migration is applied:

* ``datalayer``: the model is changed and ``datalayer.migrate.autogenerate.compare.
  create_migration`` writes the migration, which ``datalayer.migrate.apply``
  applies (defaults: lock_timeout 2 s, retries).  Whatever the generator
  writes is what is measured;
* ``peewee-migrate``: upstream ``peewee_migrate.Migrator``'s operation for
  the change (``add_index``, ``add_fields``, ``change_fields``,
  ``add_not_null``, ``add_constraint``), run as its Router runs a migration;
* ``plain SQL``: the obvious hand-written statements, one transaction;
* ``safe SQL``: the safe form by hand (``CONCURRENTLY``, ``NOT VALID`` then
  ``VALIDATE``, ``SET NOT NULL`` behind a validated CHECK, batched backfill,
  expand/contract for a rewriting type change), each statement in its own
  transaction under lock_timeout 2 s, retried on 55P03.

Reported per run: migration seconds, the longest and the 99th-percentile
write and read latency among the queries that overlapped the migration, and
the application errors.  Target for every kind that has a safe form (all of
them here): no query waits longer than 1 s and none fails.  This is a
benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee as pw
import psycopg2
from psycopg2 import sql

from datalayer.config import Settings

KINDS = (
    "add_index",
    "add_unique",
    "add_fk_column",
    "add_fk_existing",
    "add_check",
    "set_not_null",
    "not_null_callable_default",
    "varchar_widen",
    "varchar_to_integer",
)
VARIANTS = ("datalayer", "peewee-migrate", "plain SQL", "safe SQL")
WRITERS = READERS = 4
PAUSE = 0.005
TARGET_WAIT = 1.0
BATCH = 10_000


def new_token() -> str:
    """The callable default of the added NOT NULL column (referred to by the migration)."""
    return uuid.uuid4().hex


# -- models: before and after each change -------------------------------------------


def models(kind: str | None) -> list[type[pw.Model]]:
    """Return [Owner, Item] as they are before any change (None) or after ``kind``."""

    class Owner(pw.Model):
        id = pw.AutoField()
        name = pw.CharField(max_length=50)

        class Meta:
            table_name = "owners"

    columns: dict[str, pw.Field] = {
        "id": pw.AutoField(),
        "owner_id": pw.IntegerField(),
        "email": pw.CharField(max_length=100),
        "name": pw.CharField(max_length=100, null=True),
        "qty": pw.IntegerField(),
        "code": pw.CharField(max_length=32),
        "num_text": pw.CharField(max_length=20),
    }
    if kind == "add_index":
        columns["name"] = pw.CharField(max_length=100, null=True, index=True)
    elif kind == "add_unique":
        columns["email"] = pw.CharField(max_length=100, unique=True)
    elif kind == "add_fk_column":
        columns["owner2"] = pw.ForeignKeyField(Owner, null=True, column_name="owner2_id")
    elif kind == "add_fk_existing":
        columns = {
            ("owner" if k == "owner_id" else k): (
                pw.ForeignKeyField(Owner, column_name="owner_id") if k == "owner_id" else v
            )
            for k, v in columns.items()
        }
    elif kind == "add_check":
        columns["qty"] = pw.IntegerField(constraints=[pw.Check("qty >= 0")])
    elif kind == "set_not_null":
        columns["name"] = pw.CharField(max_length=100)
    elif kind == "not_null_callable_default":
        columns["token"] = pw.CharField(max_length=32, default=new_token)
    elif kind == "varchar_widen":
        columns["code"] = pw.CharField(max_length=64)
    elif kind == "varchar_to_integer":
        columns["num_text"] = pw.IntegerField()
    meta = type("Meta", (), {"table_name": "items"})
    item = type("Item", (pw.Model,), {"__module__": __name__, "Meta": meta, **columns})
    return [Owner, item]


# -- the four ways of writing each change ---------------------------------------------

PLAIN: dict[str, list[str]] = {
    "add_index": ["CREATE INDEX items_name ON items (name)"],
    "add_unique": ["CREATE UNIQUE INDEX items_email ON items (email)"],
    "add_fk_column": [
        "ALTER TABLE items ADD COLUMN owner2_id integer REFERENCES owners (id)",
        "CREATE INDEX items_owner2_id ON items (owner2_id)",
    ],
    "add_fk_existing": [
        "ALTER TABLE items ADD CONSTRAINT items_owner_id_fkey FOREIGN KEY (owner_id) "
        "REFERENCES owners (id)",
        "CREATE INDEX items_owner_id ON items (owner_id)",
    ],
    "add_check": ["ALTER TABLE items ADD CONSTRAINT items_qty_check CHECK (qty >= 0)"],
    "set_not_null": ["ALTER TABLE items ALTER COLUMN name SET NOT NULL"],
    "not_null_callable_default": [
        "ALTER TABLE items ADD COLUMN token varchar(32)",
        "UPDATE items SET token = md5(random()::text)",
        "ALTER TABLE items ALTER COLUMN token SET NOT NULL",
    ],
    "varchar_widen": ["ALTER TABLE items ALTER COLUMN code TYPE varchar(64)"],
    "varchar_to_integer": [
        "ALTER TABLE items ALTER COLUMN num_text TYPE integer USING num_text::integer"
    ],
}

_BACKFILL = "BACKFILL "  # a statement run in batches of BATCH ids, one transaction each


def _not_null(column: str) -> list[str]:
    check = f"items_{column}_not_null"
    return [
        f"ALTER TABLE items ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID",
        f"ALTER TABLE items VALIDATE CONSTRAINT {check}",
        f"ALTER TABLE items ALTER COLUMN {column} SET NOT NULL",  # no scan: the CHECK proves it
        f"ALTER TABLE items DROP CONSTRAINT {check}",
    ]


SAFE: dict[str, list[str]] = {
    "add_index": ["CREATE INDEX CONCURRENTLY items_name ON items (name)"],
    "add_unique": ["CREATE UNIQUE INDEX CONCURRENTLY items_email ON items (email)"],
    "add_fk_column": [
        "ALTER TABLE items ADD COLUMN owner2_id integer",
        "ALTER TABLE items ADD CONSTRAINT items_owner2_id_fkey FOREIGN KEY (owner2_id) "
        "REFERENCES owners (id) NOT VALID",
        "ALTER TABLE items VALIDATE CONSTRAINT items_owner2_id_fkey",
        "CREATE INDEX CONCURRENTLY items_owner2_id ON items (owner2_id)",
    ],
    "add_fk_existing": [
        "ALTER TABLE items ADD CONSTRAINT items_owner_id_fkey FOREIGN KEY (owner_id) "
        "REFERENCES owners (id) NOT VALID",
        "ALTER TABLE items VALIDATE CONSTRAINT items_owner_id_fkey",
        "CREATE INDEX CONCURRENTLY items_owner_id ON items (owner_id)",
    ],
    "add_check": [
        "ALTER TABLE items ADD CONSTRAINT items_qty_check CHECK (qty >= 0) NOT VALID",
        "ALTER TABLE items VALIDATE CONSTRAINT items_qty_check",
    ],
    "set_not_null": _not_null("name"),
    "not_null_callable_default": [
        "ALTER TABLE items ADD COLUMN token varchar(32)",
        _BACKFILL + "UPDATE items SET token = md5(random()::text) "
        "WHERE id >= %s AND id < %s AND token IS NULL",
        *_not_null("token"),
    ],
    # Binary-coercible: no rewrite, a moment of ACCESS EXCLUSIVE.
    "varchar_widen": ["ALTER TABLE items ALTER COLUMN code TYPE varchar(64)"],
    # Expand/contract: a new column, backfilled in batches, swapped in by two renames
    # (the application dual-writes meanwhile; the old column is dropped later).
    "varchar_to_integer": [
        "ALTER TABLE items ADD COLUMN num_int integer",
        _BACKFILL + "UPDATE items SET num_int = num_text::integer WHERE id >= %s AND id < %s",
        "BEGIN; ALTER TABLE items RENAME COLUMN num_text TO num_text_old; "
        "ALTER TABLE items RENAME COLUMN num_int TO num_text; COMMIT",
    ],
}


def _upstream_ops(kind: str, migrator: Any) -> None:
    """Queue peewee-migrate's own operation for ``kind`` on ``migrator``."""
    owner = migrator.orm["owners"]
    if kind == "add_index":
        migrator.add_index("items", "name")
    elif kind == "add_unique":
        migrator.add_index("items", "email", unique=True)
    elif kind == "add_fk_column":
        migrator.add_fields(
            "items", owner2=pw.ForeignKeyField(owner, null=True, column_name="owner2_id")
        )
    elif kind == "add_fk_existing":
        migrator.change_fields(
            "items", owner_id=pw.ForeignKeyField(owner, column_name="owner_id")
        )
    elif kind == "add_check":
        migrator.add_constraint("items", "items_qty_check", pw.Check("qty >= 0"))
    elif kind == "set_not_null":
        migrator.add_not_null("items", "name")
    elif kind == "not_null_callable_default":
        migrator.add_fields("items", token=pw.CharField(max_length=32, default=new_token))
    elif kind == "varchar_widen":
        migrator.change_fields("items", code=pw.CharField(max_length=64))
    elif kind == "varchar_to_integer":
        migrator.change_fields("items", num_text=pw.IntegerField())


# -- databases ------------------------------------------------------------------------


def _admin(settings: Settings) -> Any:
    conn = psycopg2.connect(**settings.connect_kwargs())
    conn.autocommit = True
    return conn


def _create(server: Settings, name: str, template: str | None = None) -> Settings:
    conn = _admin(server)
    try:
        with conn.cursor() as cur:
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            cur.execute(stmt)
    finally:
        conn.close()
    return server.replace(dbname=name)


def _drop(server: Settings, name: str) -> None:
    conn = _admin(server)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        conn.close()


@contextlib.contextmanager
def _database(server: Settings, template: str | None = None) -> Iterator[Settings]:
    name = f"datalayer_bench_online_{uuid.uuid4().hex[:10]}"
    settings = _create(server, name, template)
    try:
        yield settings
    finally:
        _drop(server, name)


def build_template(settings: Settings, directory: Path, rows: int) -> None:
    """Apply the initial migration of the models before any change, then fill the tables."""
    from datalayer.db import Database
    from datalayer.migrate.autogenerate.compare import create_migration
    from datalayer.migrate.runtime import apply as runner
    from datalayer.migrate.runtime.checksum import write_sum
    from datalayer.migrate.runtime.files import Router

    created = create_migration(Router(Database(), directory), "initial", models(None))
    if created is None:
        raise SystemExit("the generator wrote no initial migration")
    write_sum(directory)
    runner.apply(settings, directory)
    conn = _admin(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO owners (name) SELECT 'o' || g FROM generate_series(1, 1000) g")
            cur.execute(
                "INSERT INTO items (owner_id, email, name, qty, code, num_text) "
                "SELECT 1 + g %% 1000, 'u' || g || '@example.com', 'name ' || g, g %% 100, "
                "'c' || g, (g %% 100000)::text FROM generate_series(1, %s) g",
                (rows,),
            )
            cur.execute("VACUUM ANALYZE items")
            cur.execute("VACUUM ANALYZE owners")
    finally:
        conn.close()


# -- the application --------------------------------------------------------------------


@dataclass
class _Load:
    """Writer and reader threads; each query is recorded as (start, end, ok)."""

    settings: Settings
    rows: int
    stop: threading.Event = field(default_factory=threading.Event)
    writes: list[tuple[float, float, bool]] = field(default_factory=list)
    reads: list[tuple[float, float, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(WRITERS + READERS):
            writer = i < WRITERS
            query = (
                "UPDATE items SET qty = qty + 1 WHERE id = %s"
                if writer
                else "SELECT id, email, name, qty FROM items WHERE id = %s"
            )
            out = self.writes if writer else self.reads
            thread = threading.Thread(target=self._run, args=(query, out), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _connect(self) -> Any:
        conn = psycopg2.connect(
            **self.settings.replace(application_name="bench-online-app").connect_kwargs()
        )
        conn.autocommit = True
        return conn

    def _run(self, query: str, out: list[tuple[float, float, bool]]) -> None:
        rng = random.Random()
        conn = self._connect()
        try:
            while not self.stop.is_set():
                start = time.monotonic()
                ok = True
                try:
                    with conn.cursor() as cur:
                        cur.execute(query, (rng.randint(1, self.rows),))
                        if cur.description:
                            cur.fetchall()
                except psycopg2.Error as exc:
                    ok = False
                    self.errors.append(str(exc).strip().splitlines()[0])
                    if conn.closed:
                        conn = self._connect()
                out.append((start, time.monotonic(), ok))
                time.sleep(PAUSE)
        finally:
            conn.close()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def _window(ops: list[tuple[float, float, bool]], t0: float, t1: float) -> list[float]:
    return [end - start for start, end, _ in ops if end >= t0 and start <= t1]


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    if len(values) < 100:
        return max(values)
    return statistics.quantiles(values, n=100)[98]


@dataclass
class Run:
    """One migration applied under load."""

    kind: str
    variant: str
    seconds: float = 0.0
    write_max: float = 0.0
    write_p99: float = 0.0
    read_max: float = 0.0
    read_p99: float = 0.0
    errors: int = 0
    outcome: str = "ok"
    note: str = ""

    @property
    def met(self) -> bool:
        return (
            self.outcome == "ok"
            and self.errors == 0
            and max(self.write_max, self.read_max) <= TARGET_WAIT
        )


# -- running one migration ----------------------------------------------------------------


def _run_datalayer(kind: str, settings: Settings, base: Path, work: Path) -> str:
    from datalayer.db import Database
    from datalayer.migrate.autogenerate.compare import create_migration
    from datalayer.migrate.runtime import apply as runner
    from datalayer.migrate.runtime.checksum import write_sum
    from datalayer.migrate.runtime.files import Router

    directory = work / f"dl_{kind}"
    shutil.copytree(base, directory)
    created = create_migration(Router(Database(), directory), kind, models(kind))
    if created is None:
        raise RuntimeError("the generator wrote nothing")
    write_sum(directory)
    retries: list[Any] = []
    applied = runner.apply(settings, directory, on_retry=retries.append)
    files = sorted(p.name for p in directory.glob("0*.py"))[1:]
    return f"{len(applied)} file(s) {', '.join(files)}; {len(retries)} retries"


def _run_upstream(kind: str, settings: Settings) -> str:
    from peewee_migrate import Migrator
    from playhouse.postgres_ext import PostgresqlExtDatabase

    kwargs = settings.connect_kwargs()
    db = PostgresqlExtDatabase(kwargs.pop("dbname"), **kwargs)
    try:
        migrator = Migrator(db)
        for model in models(None):
            migrator.create_model(model)
        migrator.__ops__ = []  # the tables exist: only the models are wanted
        _upstream_ops(kind, migrator)
        with db.atomic():  # as peewee-migrate's Router runs a migration
            migrator()
    finally:
        db.close()
    return ""


def _run_sql(
    kind: str, settings: Settings, statements: list[str], *, safe: bool, rows: int
) -> str:
    conn = _admin(settings)
    retries = 0
    try:
        with conn.cursor() as cur:
            if not safe:
                cur.execute("BEGIN")
                for stmt in statements:
                    cur.execute(stmt)
                cur.execute("COMMIT")
                return ""
            cur.execute("SET lock_timeout = '2s'")
            for stmt in statements:
                if stmt.startswith(_BACKFILL):
                    for low in range(1, rows + 1, BATCH):
                        retries += _retrying(cur, stmt.removeprefix(_BACKFILL), (low, low + BATCH))
                else:
                    retries += _retrying(cur, stmt, None)
    finally:
        conn.close()
    return f"{retries} retries" if retries else ""


def _retrying(cur: Any, stmt: str, params: tuple[int, int] | None) -> int:
    for attempt in range(11):
        try:
            cur.execute(stmt, params)
            return attempt
        except psycopg2.errors.LockNotAvailable:
            with contextlib.suppress(psycopg2.Error):
                cur.execute("ROLLBACK")
            if "CONCURRENTLY" in stmt:  # its INVALID index must go before the next attempt
                name = stmt.split(" ON ")[0].split()[-1]
                cur.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            time.sleep(min(15.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.5))
    raise RuntimeError(f"lock not granted in 11 attempts: {stmt}")


def run_one(
    kind: str, variant: str, server: Settings, template: str, rows: int, base: Path, work: Path
) -> Run:
    """Copy the template, start the load, apply the migration, measure."""
    result = Run(kind, variant)
    with _database(server, template) as settings:
        load = _Load(settings, rows)
        load.start()
        time.sleep(1.0)  # the application is running before the migration starts
        t0 = time.monotonic()
        try:
            if variant == "datalayer":
                result.note = _run_datalayer(kind, settings, base, work)
            elif variant == "peewee-migrate":
                result.note = _run_upstream(kind, settings)
            else:
                safe = variant == "safe SQL"
                statements = (SAFE if safe else PLAIN)[kind]
                result.note = _run_sql(kind, settings, statements, safe=safe, rows=rows)
        except Exception as exc:  # a migration that fails is a figure, not a crash
            lines = str(exc).strip().splitlines()
            result.outcome = "FAILED"
            result.note = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:160]
        t1 = time.monotonic()
        time.sleep(0.5)
        load.finish()
    writes, reads = _window(load.writes, t0, t1), _window(load.reads, t0, t1)
    result.seconds = t1 - t0
    result.write_max, result.write_p99 = max(writes, default=0.0), _p99(writes)
    result.read_max, result.read_p99 = max(reads, default=0.0), _p99(reads)
    result.errors = sum(1 for *_, ok in load.writes + load.reads if not ok)
    if load.errors:
        result.note = (result.note + "; app: " + load.errors[0])[:200].lstrip("; ")
    return result


# -- the table ----------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def print_table(results: list[Run], rows: int) -> None:
    """Print one line per run, then which kinds meet the target with datalayer's default."""
    print(
        f"\n{rows:,} rows; {WRITERS} writers + {READERS} readers; latencies in ms of the "
        "queries that overlapped the migration"
    )
    head = (
        f"{'change':<26} {'variant':<15} {'migr s':>7} {'w max':>7} {'w p99':>6} "
        f"{'r max':>7} {'r p99':>6} {'errs':>5}  result"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        outcome = ("<=1s" if r.met else "MISS") if r.outcome == "ok" else r.outcome
        print(
            f"{r.kind:<26} {r.variant:<15} {r.seconds:7.2f} {_ms(r.write_max):>7} "
            f"{_ms(r.write_p99):>6} {_ms(r.read_max):>7} {_ms(r.read_p99):>6} "
            f"{r.errors:>5}  {outcome}"
        )
        if r.note:
            print(f"{'':<28}{r.note}")
    dl = {r.kind: r for r in results if r.variant == "datalayer"}
    safe = {r.kind: r for r in results if r.variant == "safe SQL"}
    met = [k for k, r in dl.items() if r.met]
    print(
        f"\ntarget (no query waits > {TARGET_WAIT:g} s, no app error) with datalayer's default: "
        f"{len(met)} of {len(dl)} kinds met"
        + (f"; missed: {', '.join(k for k in dl if k not in met)}" if len(met) < len(dl) else "")
    )
    print(f"safe SQL by hand meets it for {sum(r.met for r in safe.values())} of {len(safe)} kinds")


def main() -> int:
    """Build the template, run every kind with every variant, print the table."""
    import logging

    from benchmarks._common import server_settings

    logging.getLogger("datalayer.migrate").setLevel(logging.ERROR)
    rows = int(os.environ.get("DATALAYER_ONLINE_ROWS", "1000000"))
    server = server_settings()
    kinds = [k for k in os.environ.get("DATALAYER_ONLINE_KINDS", "").split(",") if k] or KINDS
    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="datalayer-bench-online-") as tmp:
        work = Path(tmp)
        base = work / "base"
        with _database(server) as template:
            print(f"building the template: {rows:,} rows ...", flush=True)
            build_template(template, base, rows)
            for kind in kinds:
                for variant in VARIANTS:
                    run = run_one(kind, variant, server, template.dbname, rows, base, work)
                    print(
                        f"  {kind:<26} {variant:<15} {run.seconds:6.2f} s, longest wait "
                        f"{max(run.write_max, run.read_max):.2f} s, {run.errors} errors, "
                        f"{run.outcome}",
                        flush=True,
                    )
                    results.append(run)
    print_table(results, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
