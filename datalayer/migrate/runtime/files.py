"""peewee-migrate's file Router, made fit for datalayer.

Differences from ``peewee_migrate.Router`` (each one a seam it offers):

* files with three **or more** digits are migrations, ordered by number, so
  the 1000th migration is seen (upstream wants exactly three digits);
* reading is read-only: ``done`` does not create the history table and
  ``todo`` does not create the directory (upstream does both as side effects);
* the history table is upstream's (``migratehistory``: id, name,
  migrated_at) plus a nullable ``checksum`` column holding the SHA-256 of each
  file when it was applied; ``pw_migrate`` keeps working on it;
* the history model is private to each router (upstream rebinds one global
  ``MigrateHistory`` class, so two routers on two databases interfere);
* a migration file may set ``atomic = False`` at module level to run without
  a transaction (for ``CREATE INDEX CONCURRENTLY`` and the like);
* migrations run through ``DatalayerMigrator`` and new files are numbered by
  :func:`datalayer.migrate.runtime.names.next_name`.

Locking, timing and error reporting live in :mod:`.runner`.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import datetime as dt
import logging
import re
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import peewee as pw
from peewee_migrate import Migrator
from peewee_migrate import Router as _UpstreamRouter
from peewee_migrate.models import MIGRATE_TABLE

from ...errors import MigrationError
from .names import (
    MIGRATION_RE,
    content_hash,
    migration_names,
    next_name,
    parse_module,
    read_migration,
)
from .recorder import watched

__all__ = [
    "MIGRATE_TABLE",
    "HistoryRow",
    "LoadedMigration",
    "MigrationExit",
    "Router",
    "TransactionControl",
    "TransactionEnded",
    "call_migration",
    "default_migrator_class",
    "transaction_control",
]

logger = logging.getLogger("datalayer.migrate")

MigrationFn = Callable[..., Any]


def _void(migrator: Any, database: Any, *, fake: bool = False) -> None:
    return None


def default_migrator_class() -> type[Migrator]:
    """Return the migrator class migrations run with: ``DatalayerMigrator``."""
    from ..operations.migrator import DatalayerMigrator

    cls: type[Migrator] = DatalayerMigrator
    return cls


@dataclass(frozen=True)
class LoadedMigration:
    """A migration file, executed: its functions and whether it wants a transaction.

    ``reversible`` is False when the file has no ``rollback()``, or one that
    does nothing (only ``pass``, ``...`` or a docstring) while ``migrate()``
    does something: rolling it back would delete the history row and leave
    the schema as it is.  A ``rollback()`` whose body is ``return`` says on
    purpose that nothing needs undoing.
    """

    name: str
    path: Path
    checksum: str
    migrate: MigrationFn
    rollback: MigrationFn
    atomic: bool
    source: bytes = dataclasses.field(default=b"", repr=False, compare=False)

    @cached_property
    def reversible(self) -> bool:
        """Whether ``rollback()`` undoes something (parsed only when asked: replays never do)."""
        scope = {  # a function the file does not define is loaded as _void
            "migrate": None if self.migrate is _void else self.migrate,
            "rollback": None if self.rollback is _void else self.rollback,
        }
        return _reversible(scope, self.source, self.path)


class MigrationExit(Exception):
    """A migration called ``sys.exit()``: reported as its failure, never as an exit."""


class TransactionControl(Exception):
    """A transactional migration tried to run COMMIT, ROLLBACK, BEGIN or the like.

    Raised before the statement reaches the server, so the migration's
    transaction is rolled back whole.
    """


class TransactionEnded(MigrationError):
    """A transactional migration's transaction ended in its middle (what ran stays)."""


_CODE: dict[tuple[str, bytes], types.CodeType] = {}
"""Migration files compiled in this process, by path and bytes (``check`` and ``lint``
load every file in several routers; a code object is immutable, and each load
still runs it in a scope of its own)."""
_CODE_SIZE = 4096


def call_migration(fn: MigrationFn, migrator: Any, database: Any, *, fake: bool) -> None:
    """Call a migration's ``migrate`` or ``rollback``; ``sys.exit()`` raises MigrationExit."""
    try:
        fn(migrator, database, fake=fake)
    except SystemExit as exc:
        raise MigrationExit(
            f"it called sys.exit({exc.code!r}); a migration must raise an exception to fail"
        ) from None


def _trivial(body: list[ast.stmt]) -> bool:
    return all(
        isinstance(node, ast.Pass)
        or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        for node in body
    )


def _does_nothing(fn: MigrationFn, tree: ast.Module | None, path: Path) -> bool | None:
    """True/False when ``fn`` is a ``def`` of this file whose body is (not) empty; else None."""
    code = getattr(fn, "__code__", None)
    if tree is None or code is None or code.co_filename != str(path):
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
            node.lineno == code.co_firstlineno
            or (node.decorator_list and node.decorator_list[0].lineno == code.co_firstlineno)
        ):
            return _trivial(node.body)
    return None


def _reversible(scope: dict[str, Any], data: bytes, path: Path) -> bool:
    migrate, rollback = scope.get("migrate"), scope.get("rollback")
    try:
        tree: ast.Module | None = parse_module(data, str(path))
    except (SyntaxError, ValueError):
        tree = None
    migrate_empty = migrate is None or _does_nothing(migrate, tree, path) is True
    if migrate_empty:
        return True
    return rollback is not None and _does_nothing(rollback, tree, path) is not True


# Statements that end or start a transaction; a transactional migration must not run them.
_TOKEN_RE = re.compile(
    r"""--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|"(?:[^"]|"")*"|(\$[A-Za-z_][A-Za-z_0-9]*\$|\$\$).*?\1"""
    r"""|;|[A-Za-z_][A-Za-z_0-9]*|\S""",
    re.DOTALL,
)


def transaction_control(sql: str) -> str | None:
    """Return the first statement of ``sql`` that begins or ends a transaction, or None.

    Comments, quoted strings, quoted identifiers and dollar-quoted bodies (``DO $$
    BEGIN ... END $$``) are skipped; ``SAVEPOINT`` and ``ROLLBACK TO SAVEPOINT``
    are allowed.
    """
    statements: list[list[str]] = [[]]
    for m in _TOKEN_RE.finditer(sql):
        token = m.group(0)
        if token == ";":
            statements.append([])
        elif token.startswith(("--", "/*")):
            continue
        elif len(statements[-1]) < 2:
            statements[-1].append(token.upper())
    for words in statements:
        first, second = [*words, "", ""][:2]
        if (
            first in ("BEGIN", "COMMIT", "END", "ABORT")
            or (first == "ROLLBACK" and second != "TO")
            or (first in ("START", "PREPARE") and second == "TRANSACTION")
        ):
            return " ".join(words)
    return None


_HISTORY_COLUMNS = (
    "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
    "AND attnum > 0 AND NOT attisdropped"
)
_STATEMENTS: dict[tuple[str, int], Any] = {}  # the history reads, as datalayer._sql statements
_STATEMENTS_LOCK = threading.Lock()


def _history_statement(sql: str, count: int) -> Any:
    """Return the :class:`datalayer._sql.Statement` of a history read (made once per text)."""
    key = (sql, count)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        from ..._sql import Statement

        with _STATEMENTS_LOCK:
            if len(_STATEMENTS) > 64:  # a handful in practice: table names x column sets
                _STATEMENTS.clear()
            made = Statement.text(sql, *(f"p{i}" for i in range(count)))
            stmt = _STATEMENTS.setdefault(key, made)
    return stmt


class HistoryRow(NamedTuple):
    """One row of the history table."""

    id: int
    name: str
    checksum: str | None


def _utcnow() -> dt.datetime:
    # Upstream stores naive UTC in a ``timestamp`` column; so do we.
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _history_model(database: Any, table: str, schema: str | None) -> Any:
    meta = type("Meta", (), {"database": database, "table_name": table, "schema": schema})
    return type(
        "MigrateHistory",
        (pw.Model,),
        {
            "__module__": __name__,
            "Meta": meta,
            "id": pw.AutoField(),
            "name": pw.CharField(),
            "migrated_at": pw.DateTimeField(default=_utcnow),
            "checksum": pw.CharField(max_length=64, null=True),
        },
    )


class Router(_UpstreamRouter):
    """File router over ``migrate_dir``; see the module docstring for what differs."""

    filemask = MIGRATION_RE

    def __init__(
        self,
        database: Any,
        migrate_dir: str | Path | None = None,
        *,
        migrate_table: str = MIGRATE_TABLE,
        schema: str | None = None,
        ignore: Iterable[str] | None = None,
        migrator_class: type[Migrator] | None = None,
    ) -> None:
        super().__init__(
            database,
            migrate_dir=Path(migrate_dir) if migrate_dir is not None else Path("migrations"),
            migrate_table=migrate_table,
            schema=schema,
            ignore=ignore,
            logger=logger,
            migrator_class=migrator_class or default_migrator_class(),
        )
        self._sources: dict[str, bytes] = {}
        self._loaded: dict[str, LoadedMigration] = {}
        self._paths: dict[tuple[Any, str], Path] = {}

    # -- files ---------------------------------------------------------------

    @property
    def todo(self) -> list[str]:
        """Return the migration names on disk, in order (none if the directory is missing)."""
        return migration_names(self.migrate_dir)

    def path(self, name: str) -> Path:
        """Return the file of migration ``name`` (made once per router: a path is immutable)."""
        key = (self.migrate_dir, name)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = Path(self.migrate_dir) / f"{name}.py"
        return path

    def source(self, name: str) -> bytes:
        """Return the bytes of migration ``name`` (read once per router)."""
        data = self._sources.get(name)
        if data is None:
            data = read_migration(self.path(name))
            self._sources[name] = data
        return data

    def checksum(self, name: str) -> str:
        """Return the SHA-256 (hex) of migration ``name``'s file."""
        return content_hash(self.source(name))

    def load(self, name: str) -> LoadedMigration:
        """Execute migration ``name``'s file and return its functions and options.

        :raises MigrationError: when the file does not load (the message names it).
        """
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        path = self.path(name)
        data = self.source(name)
        scope: dict[str, Any] = {"__name__": f"datalayer_migration_{name}", "__file__": str(path)}
        try:
            # Compiled under its real path so tracebacks point at the file.
            code = _CODE.get((str(path), data))
            if code is None:
                code = compile(data, str(path), "exec", dont_inherit=True)
                if len(_CODE) >= _CODE_SIZE:
                    _CODE.pop(next(iter(_CODE), ("", b"")), None)
                _CODE[(str(path), data)] = code
            exec(code, scope)
        except (Exception, SystemExit) as exc:
            what = (
                f"it calls sys.exit({exc.code!r}) when loaded"
                if isinstance(exc, SystemExit)
                else f"{type(exc).__name__}: {exc}"
            )
            raise MigrationError(
                f"{path} does not load: {what}; fix the file (if it was never applied) and "
                "run `datalayer migrate hash`"
            ) from None if isinstance(exc, SystemExit) else exc
        atomic = scope.get("atomic", True)
        if not isinstance(atomic, bool):
            raise MigrationError(
                f"{path}: `atomic` must be True or False, not {atomic!r}; set `atomic = False` "
                "to run the migration without a transaction"
            )
        loaded = LoadedMigration(
            name=name,
            path=path,
            checksum=content_hash(data),
            migrate=scope.get("migrate", _void),
            rollback=scope.get("rollback", _void),
            atomic=atomic,
            source=data,
        )
        self._loaded[name] = loaded
        return loaded

    def read(self, name: str) -> tuple[MigrationFn, MigrationFn]:
        """Return the ``migrate`` and ``rollback`` functions of migration ``name``."""
        loaded = self.load(name)
        return loaded.migrate, loaded.rollback

    def compile(
        self, name: str, migrate: str = "", rollback: str = "", num: int | None = None
    ) -> str:
        """Write a new migration file numbered after the last one; return its name.

        ``migrate`` and ``rollback`` are bodies given as text (peewee-migrate's
        interface); the generator writes through :meth:`write_migration`.
        """
        from .template import render_migration

        return self.write_migration(
            name, lambda filename: render_migration(filename, migrate, rollback), num=num
        )

    def write_migration(
        self, name: str, text: Callable[[str], str], num: int | None = None
    ) -> str:
        """Write a new migration file numbered after the last one; return its name.

        ``text`` returns the file's content for its file name (``002_name.py``).
        """
        existing = self.todo
        filename = f"{num + 1:03d}_{name}" if num is not None else _next_name(existing, name)
        path = self.path(filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text(path.name), encoding="utf-8")
        return filename

    # -- history (read-only unless the method says otherwise) ------------------

    @cached_property
    def model(self) -> Any:
        """Return this router's history model (the table is not created here)."""
        return _history_model(self.database, self.migrate_table, self.schema)

    def history_columns(self) -> set[str]:
        """Return the history table's column names (empty when the table does not exist)."""
        # pg_catalog rather than information_schema: much cheaper on a fresh backend.
        rows = self._read(_HISTORY_COLUMNS, self._quoted_table())
        return {row[0] for row in rows}

    def _read(self, sql: str, *params: Any) -> list[Any]:
        """Return the rows of a history read (``sql`` with ``%s`` for ``params``).

        On a datalayer database it runs as a server-side prepared statement
        (:mod:`datalayer._sql`: direct connections, outside a transaction), so a
        process that asks for the status again and again plans it once per
        connection; on any other peewee database, through ``execute_sql``.
        """
        from ...db import Database

        db = self.database
        if type(db) is Database and db._pool is not None:
            from ..._sql import fetchall

            return fetchall(db, _history_statement(sql, len(params)),
                            {f"p{i}": p for i, p in enumerate(params)})
        rows: list[Any] = db.execute_sql(sql, params).fetchall()
        return rows

    def _quoted_table(self) -> str:
        parts = [self.schema, self.migrate_table] if self.schema else [self.migrate_table]
        quoted: str = self.database.get_sql_context().sql(pw.Entity(*parts)).query()[0]
        return quoted

    def history(self) -> list[HistoryRow]:
        """Return the history rows in the order they were written (none without a table)."""
        columns = self.history_columns()
        if not columns:
            return []
        model = self.model
        fields = [model.id, model.name]
        if "checksum" in columns:
            fields.append(model.checksum)
        sql, params = model.select(*fields).order_by(model.id).sql()
        rows = self._read(sql, *params)
        return [HistoryRow(row[0], row[1], row[2] if len(row) > 2 else None) for row in rows]

    @property
    def done(self) -> list[str]:
        """Return the applied migration names, oldest first (read-only; each name once)."""
        seen: dict[str, None] = {}
        for row in self.history():
            seen.setdefault(row.name, None)
        return list(seen)

    def ensure_history(self) -> None:
        """Create the history table, or add the ``checksum`` column to upstream's (writes)."""
        model = self.model
        model.create_table(safe=True)
        self.database.execute_sql(
            f"ALTER TABLE {self._quoted_table()} ADD COLUMN IF NOT EXISTS checksum VARCHAR(64)"
        )

    def record(self, name: str, checksum: str | None) -> None:
        """Write a history row for migration ``name`` (writes)."""
        self.model.insert(name=name, migrated_at=_utcnow(), checksum=checksum).execute()

    def forget(self, name: str) -> None:
        """Delete the latest history row of migration ``name`` (writes)."""
        model = self.model
        latest = model.select(pw.fn.MAX(model.id)).where(model.name == name)
        model.delete().where(model.id == latest).execute()

    def backfill_checksums(self, rows: Iterable[HistoryRow]) -> list[str]:
        """Record the current file hash for applied rows that have none (writes).

        Rows written by upstream ``pw_migrate`` carry no hash; from now on an
        edit to those files shows as modified.  Returns the names filled in.
        """
        model = self.model
        filled = []
        for row in rows:
            if row.checksum is None and self.path(row.name).is_file():
                model.update(checksum=self.checksum(row.name)).where(model.id == row.id).execute()
                filled.append(row.name)
        return filled

    # -- running ---------------------------------------------------------------

    def replay(self, names: Iterable[str], migrator: Migrator, *, cache: bool = False) -> None:
        """Replay migrations ``names`` in fake mode to build ``migrator``'s picture of the schema.

        Nothing reaches a database: for the replay the migrator (and the
        ``database`` the files are given) is bound to a
        :class:`~.runtime.recorder.Recorder`, which runs nothing and returns no
        rows; ``migrator.sql`` and ``migrator.run`` are noted, never run
        (:meth:`DatalayerMigrator.take_opaque`).  Afterwards the migrator is
        bound to its own database again.  Nothing is cached: a cached state
        would be code to execute, and replaying needs no database.
        """
        from ..operations.migrator import bound, replaying
        from .recorder import Recorder

        del cache  # accepted for callers; replayed states are not cached (they were code)
        recorder = Recorder()
        with bound(migrator, recorder), replaying():
            for name in names:
                migrate = self.load(name).migrate
                try:
                    call_migration(migrate, migrator, recorder, fake=True)
                except Exception as exc:
                    raise MigrationError(
                        f"{self.path(name)} fails when replayed to rebuild the schema state: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                migrator.__ops__ = []
                recorder.take()

    def run_one(
        self,
        name: str,
        migrator: Migrator,
        *,
        fake: bool = True,
        downgrade: bool = False,
        force: bool = False,
    ) -> str:
        """Run (or, with ``fake``, replay) one migration; history is kept as upstream does."""
        if fake:
            self.replay([name], migrator)
            if force:
                self.ensure_history()
                self.record(name, self.checksum(name))
            return name
        self.ensure_history()
        self.execute(name, migrator, downgrade=downgrade)
        return name

    def execute(
        self,
        name: str,
        migrator: Migrator,
        *,
        downgrade: bool = False,
        bookkeeping: bool = True,
        settings: Iterable[tuple[str, str]] = (),
        statements: list[str] | None = None,
        on_statement: Callable[[str, Any], None] | None = None,
        select: Callable[[Migrator], None] | None = None,
        record: Callable[[], None] | None = None,
    ) -> LoadedMigration:
        """Run migration ``name`` (or its rollback) for real and update the history.

        A migration runs inside one transaction, with its history row, unless
        its file says ``atomic = False``: then its statements run one by one
        in autocommit mode and the history row is written after the last,
        and only if every index it builds concurrently is valid (else
        :class:`.online.InvalidIndexes`; an ``IF NOT EXISTS`` build finds the
        INVALID leftover of a killed run and does nothing).  Such a run appends
        the statements it ran to ``statements`` (also when it fails), so the
        caller can find and drop an INVALID index a failed build left.
        ``settings`` are server settings (``lock_timeout``, ...) for the run;
        ``on_statement(sql, params)`` is called before each statement it sends.
        ``select(migrator)`` may change the queued operations before they run (a
        phased apply keeps one part, :mod:`.runtime.phases`); ``record``, when
        given, replaces the history row write.
        """
        from ..operations.migrator import bound
        from . import online

        loaded = self.load(name)
        fn = loaded.rollback if downgrade else loaded.migrate
        db = self.database
        ran: list[str] = statements if statements is not None else []
        # The migration sees a view of the database: its statements are noted (and, in a
        # transaction, checked) on the way; other users of ``db`` are untouched.
        guard = _TransactionGuard(db, loaded.path, ran) if loaded.atomic else None
        note = guard.before if guard is not None else _noting(ran)

        def before(sql: str, params: Any) -> None:
            note(sql, params)
            if on_statement is not None:
                on_statement(sql, params)

        view = watched(db, before)

        def body() -> None:
            call_migration(fn, migrator, view, fake=False)
            if select is not None:
                select(migrator)
            migrator()
            if not loaded.atomic and not downgrade:
                invalid = online.invalid_indexes(db, online.concurrent_indexes(ran))
                if invalid:
                    raise online.InvalidIndexes(invalid)
            if guard is not None:
                guard.still_open()
            if bookkeeping and record is not None:
                record()
            elif bookkeeping:
                if downgrade:
                    self.forget(name)
                else:
                    self.record(name, loaded.checksum)

        with bound(migrator, view):
            if loaded.atomic:
                with db.atomic():
                    _set_config(db, settings, local=True)
                    # Already inside our transaction: no savepoint per migration.
                    with _without_transaction(migrator):
                        body()
            else:
                with session_settings(db, settings), _without_transaction(migrator):
                    body()
        return loaded


def _noting(ran: list[str]) -> Callable[[str, Any], None]:
    def before(sql: str, params: Any) -> None:
        ran.append(sql)

    return before


def _set_config(db: Any, settings: Iterable[tuple[str, str]], *, local: bool) -> None:
    pairs = list(settings)
    if not pairs:
        return
    calls = ", ".join(f"set_config(%s, %s, {'true' if local else 'false'})" for _ in pairs)
    db.execute_sql(f"SELECT {calls}", tuple(x for pair in pairs for x in pair))


@contextlib.contextmanager
def session_settings(db: Any, settings: Iterable[tuple[str, str]]) -> Iterator[None]:
    """Set server settings for the session for the block, then RESET them."""
    pairs = list(settings)
    _set_config(db, pairs, local=False)
    try:
        yield
    finally:
        for key, _ in pairs:
            with contextlib.suppress(Exception):
                db.execute_sql(f"RESET {key}")


def _transaction_open(db: Any) -> bool | None:
    conn = db.connection()
    status = getattr(conn, "get_transaction_status", None)  # psycopg2
    if status is None:
        info = getattr(conn, "info", None)  # psycopg 3
        status = getattr(info, "transaction_status", None)
        if status is None:
            return None
        return int(status) != 0  # IDLE
    return int(status()) != 0  # TRANSACTION_STATUS_IDLE


class _TransactionGuard:
    """Keeps a transactional migration inside its transaction.

    A statement that would begin or end a transaction (COMMIT, ROLLBACK, BEGIN,
    END, ...) is refused before it reaches the server; should the transaction
    end anyway (a raw cursor, a procedure), the migration stops at that
    statement and :class:`TransactionEnded` says what was committed.
    """

    def __init__(self, db: Any, path: Path, ran: list[str]) -> None:
        self.db, self.path, self.ran = db, path, ran

    def before(self, sql: str, params: Any) -> None:
        self.still_open()  # ended by a raw cursor: run nothing more (no history row)
        found = transaction_control(sql) if isinstance(sql, str) else None
        if found:
            raise TransactionControl(
                f"it runs `{found}`, which would end its transaction half-way; remove it "
                "(the migration already runs in one transaction), or set `atomic = False` "
                "and make every statement safe to re-run"
            )
        self.ran.append(sql)

    def still_open(self) -> None:
        if _transaction_open(self.db) is not False:
            return
        ran = self.ran
        last = " ".join(ran[-1].split())[:120] if ran else "a statement run outside execute_sql"
        raise TransactionEnded(
            f"{self.path} ended its own transaction: after `{last}` no transaction was open, "
            f"so the {len(ran)} statement(s) it ran up to there were committed and stay in "
            "effect, and it is not recorded as applied; check the schema by hand, remove the "
            "statement that commits, and run the command again"
        )


@contextlib.contextmanager
def _without_transaction(migrator: Migrator) -> Iterator[None]:
    # peewee's ``migration_context`` wraps the operations in ``atomic()`` when the
    # schema migrator says DDL is transactional; say it is not, for this run only.
    schema_migrator = migrator.__migrator__
    had = "transactional_ddl" in vars(schema_migrator)
    old = vars(schema_migrator).get("transactional_ddl")
    schema_migrator.transactional_ddl = False
    try:
        yield
    finally:
        if had:
            schema_migrator.transactional_ddl = old
        else:
            del schema_migrator.transactional_ddl


def _next_name(existing: list[str], name: str) -> str:
    result: str = next_name(existing, name)
    return result.removesuffix(".py")
