"""Fold a run of migrations into one: ``datalayer migrate squash NAME [--to NAME]``.

The folded files are replayed in memory; the schema state they build is
written as one migration by the generator (the same code ``diff`` writes for
new tables), with the hand-written DDL of the folded files (``migrator.sql``)
kept after it, in order.  Before anything is written, the old files and the
new one are applied to two scratch databases and their schemas compared: a
squash that would not build the identical schema writes nothing.

The new file is numbered as the last folded one and lists the folded names
in a module-level ``replaces``.  Its ``migrate`` first asks the history table
whether the database already applied every one of them; if so it changes no
schema, replaces their history rows by its own (the runner records it), and
the database stays up to date and takes the next migrations.  Upstream
``pw_migrate`` replays every applied migration from its file, so on such a
database it fails until ``datalayer migrate apply`` has folded the history
once; on a new database it applies the one file.  A database that applied
only some of them is refused: apply the rest from the old files first.  Its
``rollback`` drops everything and forgets the folded names too.

Data migrations cannot be folded: a ``migrator.run(...)`` or a
``migrator.sql(...)`` that is not DDL (INSERT, UPDATE, DELETE, COPY, ...) in
the folded range refuses the squash, naming the file; squash up to the
migration before it (``--to``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MigrationError
from . import parser
from .runtime.history import replaced_names

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "SquashResult",
    "already_applied",
    "fold_history",
    "forget_replaced",
    "replaced_names",
    "squash",
    "state_only",
]

_HISTORY = "migratehistory"


@dataclasses.dataclass(frozen=True)
class SquashResult:
    """The file written, the names it replaces, the files removed."""

    path: Path
    name: str
    replaces: tuple[str, ...]
    removed: tuple[Path, ...]


# -- what a squashed file calls at run time (kept small: nothing else is imported) ------


def _has_history(database: Any) -> bool:
    if getattr(database, "runs_nothing", False):  # a Recorder: rendering, nothing to ask
        return False
    row = database.execute_sql("SELECT to_regclass(%s) IS NOT NULL", (_HISTORY,)).fetchone()
    return bool(row and row[0])


def already_applied(database: Any, replaces: Sequence[str], *, fake: bool = False) -> bool:
    """Return True when the database applied every migration in ``replaces``.

    :raises MigrationError: when it applied some of them but not all.
    """
    if fake:
        return False
    if not _has_history(database):  # also: no database (a recorder renders the SQL)
        return False
    cursor = database.execute_sql(
        f"SELECT DISTINCT name FROM {_HISTORY} WHERE name = ANY(%s)", (list(replaces),)
    )
    found = {row[0] for row in cursor.fetchall()}
    if not found:
        return False
    if len(found) == len(set(replaces)):
        return True
    missing = [n for n in replaces if n not in found]
    raise MigrationError(
        f"this database applied {len(found)} of the {len(set(replaces))} migrations this "
        f"squashed migration replaces (not {', '.join(missing[:5])}"
        f"{' ...' if len(missing) > 5 else ''}); apply those from the old files first "
        "(check out the commit before the squash), then apply again"
    )


def state_only(migrator: Any) -> None:
    """Drop the operations queued so far: they only build the migrator's state."""
    migrator.__ops__.clear()


def fold_history(database: Any, replaces: Sequence[str]) -> None:
    """Delete the folded migrations' history rows; the squashed migration's row replaces them.

    Runs in the migration's transaction, with the row the runner then writes.
    Afterwards the history names only files on disk, so upstream ``pw_migrate``
    (which replays every applied migration from its file) works here too.
    """
    database.execute_sql(f"DELETE FROM {_HISTORY} WHERE name = ANY(%s)", (list(replaces),))


def forget_replaced(database: Any, replaces: Sequence[str], *, fake: bool = False) -> None:
    """Delete the history rows of the folded migrations (the squash's rollback)."""
    if fake:
        return
    if _has_history(database):
        database.execute_sql(f"DELETE FROM {_HISTORY} WHERE name = ANY(%s)", (list(replaces),))


# -- squashing ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Call:
    name: str  # migration file
    kind: str  # "sql" or "run"
    sql: str = ""
    params: tuple[Any, ...] = ()


_DDL_KINDS = {
    "AlterDomainStmt", "AlterEnumStmt", "AlterExtensionStmt", "AlterFunctionStmt",
    "AlterObjectSchemaStmt", "AlterOwnerStmt", "AlterSeqStmt", "AlterTableStmt", "CommentStmt",
    "CompositeTypeStmt", "CreateDomainStmt", "CreateEnumStmt", "CreateExtensionStmt",
    "CreateFunctionStmt", "CreateSchemaStmt", "CreateSeqStmt", "CreateStmt", "CreateTrigStmt",
    "DefineStmt", "DropStmt", "GrantStmt", "IndexStmt", "RenameStmt", "ViewStmt",
    "CreateTableAsStmt", "RuleStmt", "CreatePolicyStmt", "AlterPolicyStmt",
}


def _statement_kinds(text: str) -> list[str] | None:
    """Return the parser's name of each statement of ``text`` (None: no parser installed)."""
    pglast = parser.load()
    return None if pglast is None else [type(raw.stmt).__name__ for raw in pglast.parse_sql(text)]


def _data_changes(calls: Sequence[_Call]) -> list[str]:
    problems = []
    for call in calls:
        if call.kind == "run":
            problems.append(f"{call.name}: migrator.run({call.sql}) (Python code)")
            continue
        try:
            kinds = _statement_kinds(call.sql)
        except Exception:
            problems.append(f"{call.name}: migrator.sql({call.sql[:60]!r}) does not parse")
            continue
        if kinds is None:
            problems.append(
                f"{call.name}: migrator.sql({call.sql[:60]!r}) is not analysed: install the "
                f"lint extra ({parser.INSTALL}) so that squash can tell DDL from a data change"
            )
            continue
        other = [k for k in kinds if k not in _DDL_KINDS]
        if other:
            problems.append(f"{call.name}: migrator.sql({call.sql[:60]!r}) is not DDL")
    return problems


_TEMPLATE = '''"""{note}

Written by `datalayer migrate squash`. `replaces` lists the folded migrations:
a database that applied all of them already has this schema, and this file
then only gets recorded (by datalayer or by upstream pw_migrate).
"""

from contextlib import suppress

import peewee as pw
from peewee_migrate import Migrator

with suppress(ImportError):
    import playhouse.postgres_ext as pw_pext

replaces = [
{names}]


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Build the schema of the folded migrations (nothing if they were applied)."""
    from datalayer.migrate.squash import already_applied, fold_history, state_only

    applied = already_applied(database, replaces, fake=fake)

    {migrate}

    if applied:
        state_only(migrator)  # the folded migrations built all this: record it, run nothing
        fold_history(database, replaces)  # their history rows become this file's


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop the schema and forget the folded migrations too."""
    from datalayer.migrate.squash import forget_replaced

    {rollback}

    forget_replaced(database, replaces, fake=fake)
'''


def _file_source(body_migrate: str, body_rollback: str, replaces: Sequence[str], note: str) -> str:
    names = "".join(f"    {n!r},\n" for n in replaces)
    return _TEMPLATE.format(note=note, names=names, migrate=body_migrate, rollback=body_rollback)


def _check_name(name: str) -> None:
    from .runtime.names import next_name

    next_name([], name)


def squash(
    settings: Settings,
    directory: str | Path,
    name: str,
    *,
    to: str | None = None,
) -> SquashResult:
    """Fold the migrations in ``directory`` (up to ``to``) into one named ``name``.

    :raises MigrationError: nothing to fold, a data migration in the range, a
        checksum problem, or a schema that the squash would not reproduce;
        nothing is written then.
    """
    from ..db import Database
    from .autogenerate.compare import diff_models
    from .inspect import compare, snapshot
    from .operations.migrator import DatalayerMigrator
    from .runtime import checksum
    from .runtime.apply import apply
    from .runtime.files import Router
    from .runtime.names import _resolve_to, sort_key
    from .scratch import scratch_database, scratch_server

    directory = Path(directory)
    _check_name(name)
    if not directory.is_dir():
        raise MigrationError(f"{directory} does not exist; nothing to squash")
    checksum.verify(directory)
    router = Router(Database(), directory)
    names = router.todo
    last = _resolve_to(to, names, directory) if to is not None else (names[-1] if names else None)
    if last is None:
        raise MigrationError(f"{directory} holds no migrations; nothing to squash")
    fold = names[: names.index(last) + 1]
    if len(fold) < 2:
        raise MigrationError(f"only {fold[0]} is in the range; squash needs two or more")

    sources = {f"{n}.py": router.source(n) for n in fold}
    earlier = replaced_names(sources)
    replaces = tuple(dict.fromkeys([*earlier, *fold]))

    calls: list[_Call] = []
    state = DatalayerMigrator(router.database)
    for migration in fold:
        router.replay([migration], state, cache=False)
        # migrator.sql / migrator.run calls: noted by the replay, never run there
        calls += [_Call(migration, o.kind, o.text, o.params) for o in state.take_opaque()]
    problems = _data_changes(calls)
    if problems:
        raise MigrationError(
            "cannot squash data migrations (their effect is not part of the schema); squash "
            "up to the migration before the first of them (--to NAME):\n  " + "\n  ".join(problems)
        )
    models = list(state.orm)
    diff = diff_models(DatalayerMigrator(router.database), DatalayerMigrator(router.database),
                       models)
    body = diff.migrate
    kept = [c for c in calls if c.kind == "sql"]
    if kept:
        lines = [f"m.sql({c.sql!r}{''.join(', ' + repr(p) for p in c.params)})" for c in kept]
        body += "\n\n    # hand-written DDL of the folded migrations, in order\n    " + (
            "\n    ".join(lines)
        )
    number = sort_key(last)[0]
    new_name = f"{number:03d}_{name}"
    note = (
        f"Squashed migration: {fold[0]} .. {fold[-1]} ({len(replaces)} migrations) in one."
    )
    source = _file_source(body, diff.rollback, replaces, note)

    # Verify in scratch databases: the old files and the new one build the same schema.
    admin = scratch_server(settings)
    with tempfile.TemporaryDirectory(prefix="datalayer-squash-") as tmp:
        new_dir = Path(tmp)
        (new_dir / f"{new_name}.py").write_text(source, encoding="utf-8")
        with scratch_database(admin, "sqold") as old_s, scratch_database(admin, "sqnew") as new_s:
            old_db, new_db = Database(old_s), Database(new_s)
            try:
                apply(old_db, directory, to=last, lock_wait=60, verify_checksums=False)
                apply(new_db, new_dir, lock_wait=60, verify_checksums=False)
                with old_db.checkout():
                    want = snapshot(old_db)
                with new_db.checkout():
                    got = snapshot(new_db)
            finally:
                old_db.close_pool()
                new_db.close_pool()
    differences = compare(want, got)
    if differences:
        raise MigrationError(
            "the squashed migration would not build the same schema as the files it folds; "
            "nothing was written:\n  " + "\n  ".join(differences)
        )

    removed = tuple(router.path(n) for n in fold)
    target = directory / f"{new_name}.py"
    tmp_target = directory / f".{new_name}.py.tmp"
    tmp_target.write_text(source, encoding="utf-8")
    for path in removed:
        path.unlink()
    tmp_target.replace(target)
    checksum.write_sum(directory)
    return SquashResult(path=target, name=new_name, replaces=replaces, removed=removed)
