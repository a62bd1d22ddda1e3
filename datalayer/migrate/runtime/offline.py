"""The SQL that migrations run, rendered without a database (``datalayer migrate sql``).

Migration files are replayed in order with a :class:`DatalayerMigrator`
bound to a PostgreSQL database that never connects: operations derive their
SQL from the in-memory model state, and every statement is captured by the
runner's dry-run recorder instead of being executed.  ``migrator.sql(...)``
comes out verbatim; a Python function queued with ``migrator.run(fn)`` (or a
backfill) cannot be shown and becomes a ``-- python: NAME (not shown)`` line.

This is also what :mod:`datalayer.migrate.lint` reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playhouse.migrate import Operation

from ...errors import MigrationError
from ...project import DEFAULT_POSTGRES as _DEFAULT_POSTGRES
from ..ddl.alter import Online
from ..facts import StatementFacts
from ..operations.recording import Owners
from .files import LoadedMigration, Router, _without_transaction
from .names import number, sort_key
from .recorder import Recorder

__all__ = [
    "DEFAULT_POSTGRES",
    "PYTHON_PREFIX",
    "MigrationSql",
    "history_sql",
    "migration_sql",
    "render",
    "select_names",
]

DEFAULT_POSTGRES = _DEFAULT_POSTGRES
"""The PostgreSQL major version targeted when none is given (the lowest supported)."""

PYTHON_PREFIX = "-- python: "
"""How a queued Python function appears among a migration's statements."""


@dataclass(frozen=True)
class MigrationSql:
    """One migration's statements (or its rollback's), in the order they run."""

    name: str
    path: Path
    atomic: bool
    statements: tuple[str, ...]
    rollback: bool = False
    # What the generator knows of each statement (None: hand-written SQL, or Python);
    # empty when not asked for (see ``migration_sql(facts=True)``).
    facts: tuple[StatementFacts | None, ...] = field(default=(), compare=False)
    # True when the file's code read the server's version while rendered: its SQL
    # may differ for another version (generated operations' SQL never does).
    reads_version: bool = field(default=False, compare=False)
    # The file's bytes when the rendering read them (the lint reads its allow comments
    # from them rather than from the file again); None: not at hand.
    source: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def header(self) -> str:
        """Return the ``-- NAME`` line (``-- NAME (no transaction)`` for ``atomic = False``)."""
        return f"-- {self.name}" + ("" if self.atomic else " (no transaction)")


class _OfflineDatabase(Recorder):
    """A PostgreSQL database object that never connects (the one recorder)."""

    renders_only = True
    """Its SQL is shown or linted, never applied in phases: operations keep no table specs."""


# -- replaying ----------------------------------------------------------------------


def _python_name(op: Any) -> str:
    """Return the name of a queued Python function (``migrator.run(fn)`` wraps it)."""
    code = getattr(op, "__code__", None)
    if code is not None and "func" in code.co_freevars and op.__closure__:
        op = op.__closure__[code.co_freevars.index("func")].cell_contents
    return str(getattr(op, "__name__", None) or repr(op))


def _render_one(
    router: Router,
    migrator: Any,
    loaded: LoadedMigration,
    *,
    downgrade: bool,
    postgres: int,
    facts: bool = True,
) -> tuple[tuple[str, ...], tuple[StatementFacts | None, ...]]:
    """Return the statements of one migration (or its rollback) and what is known of each.

    A statement of an operation the migrator built carries its facts (lock,
    scan, rewrite: :func:`..ddl.effects.statement_of`); SQL the file runs itself
    (``migrator.sql``, ``database.execute_sql``) and upstream operations
    carry None: only parsing can tell.  Without ``facts`` none is derived
    (the second item is empty): what is parsed with pglast needs none.
    """
    from ..ddl.effects import statement_of

    recorder: Any = router.database
    fn = loaded.rollback if downgrade else loaded.migrate
    out: list[str] = []
    known: list[StatementFacts | None] = []

    def mark(step: Any) -> None:
        out.extend(text.rstrip().rstrip(";") + ";" for text in recorder.statements)
        recorder.take()
        if not facts:
            return
        fact = statement_of(step, postgres=postgres) if step is not None else None
        for text in out[len(known):]:
            known.append(None if fact is None else dataclasses.replace(fact, sql=text))

    what = "rollback of " if downgrade else ""
    recorder.take()
    try:
        with _without_transaction(migrator):
            fn(migrator, recorder, fake=False)
            mark(None)  # what the file's own code ran
            ops, migrator.__ops__ = list(migrator.__ops__), []
            take = getattr(migrator, "take_recorded", None)  # None: not datalayer's migrator
            owners = Owners(take() if take is not None else ())
            for op in ops:
                step = owners.step(op)
                op = owners.queued(op)  # the operation's own callable, not a wrapper around it
                if isinstance(op, Operation) or isinstance(step, Online):
                    # An Online step (CREATE INDEX CONCURRENTLY, ...) only executes its SQL,
                    # which the recorder writes down.
                    op.run() if isinstance(op, Operation) else op()
                    mark(step)
                else:
                    out.append(f"{PYTHON_PREFIX}{_python_name(op)} (not shown)")
                    mark(None)
    except MigrationError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MigrationError(
            f"{what}{loaded.path} cannot be rendered without a database: "
            f"{type(exc).__name__}: {first}; fix the migration"
        ) from exc
    return tuple(out), tuple(known)


def select_names(
    all_names: Sequence[str], names: Iterable[str] | None, directory: Path
) -> list[str]:
    """Return the migrations ``names`` (full names or numbers) in apply order (None: all).

    :raises MigrationError: naming a name that matches no migration, or several.
    """
    if names is None:
        return list(all_names)
    chosen: set[str] = set()
    for given in names:
        wanted = given.removesuffix(".py")
        matches = [n for n in all_names if n == wanted]
        if not matches and number(wanted) is not None:
            matches = [n for n in all_names if sort_key(n)[0] == number(wanted)]
        if len(matches) != 1:
            which = "several migrations match" if matches else "there is no migration"
            raise MigrationError(
                f"{given}: {which} {given!r} in {directory}; give a name as listed by "
                "`datalayer migrate status`"
            )
        chosen.add(matches[0])
    return [n for n in all_names if n in chosen]


def migration_sql(
    directory: str | Path,
    names: Iterable[str] | None = None,
    rollback: bool = False,
    *,
    postgres: int = DEFAULT_POSTGRES,
    facts: bool = False,
) -> list[MigrationSql]:
    """Return the SQL of the migrations ``names`` (default: all) in ``directory``, in order.

    Nothing connects to a database.  Earlier migrations are replayed to build
    the schema state the named ones start from.  With ``rollback`` the named
    migrations' rollback SQL is returned newest first, as ``migrate rollback``
    runs it (each rendered against the state after every migration up to it).
    With ``facts`` every statement carries what the generator knows of it
    (:attr:`MigrationSql.facts`); the cache of rendered SQL is not used then.

    :raises MigrationError: when a name matches no migration, or a file does not
        load or cannot be rendered offline (the message names it).
    """
    directory = Path(directory)
    router = Router(_OfflineDatabase(postgres), directory)
    all_names = router.todo
    if not all_names and not directory.is_dir():
        raise MigrationError(f"{directory} does not exist; give the migrations directory (--dir)")
    selected = select_names(all_names, names, directory)
    if not selected:
        return []
    wanted = set(selected)
    migrator = router.migrator_class(router.database)
    last = all_names.index(selected[-1])
    if not rollback:
        return _forward(router, migrator, all_names[: last + 1], wanted, postgres, facts)
    return _backward(router, migrator, all_names[: last + 1], selected, wanted, postgres, facts)


def _backward(
    router: Router,
    migrator: Any,
    names: Sequence[str],
    selected: Sequence[str],
    wanted: set[str],
    postgres: int,
    facts: bool = False,
    *,
    folded: bool = False,
) -> list[MigrationSql]:
    """Render the rollbacks of ``selected`` (the files up to the last of them are ``names``).

    Each rollback is rendered against the state the later ones left, so the
    whole answer is cached at once (:mod:`.cache`), under the chained hash of
    ``names`` and the selection: any file changed up to the last renders anew.
    ``folded``: ``migrator`` already holds the state ``names`` build (their
    forward rendering folded it), so they are not replayed again.
    """
    from . import cache as _cache

    key = None
    if _cache.cache_dir() and not facts:
        chain = _cache.chain_keys(names, router.source)[-1]
        key = _cache.rollback_key(chain, selected, postgres)
        hit = _cache.load_rollbacks(key)
        if hit is not None and [n for n, _, _ in hit] == list(reversed(selected)):
            return [MigrationSql(n, router.path(n), a, st, True) for n, a, st in hit]
    results: list[MigrationSql] = []
    if not folded:
        router.replay(list(names), migrator)
    first = names.index(selected[0])
    for name in reversed(names[first:]):
        loaded = router.load(name)
        statements, known = _render_one(
            router, migrator, loaded, downgrade=True, postgres=postgres, facts=facts
        )
        if name in wanted:
            results.append(
                MigrationSql(name, loaded.path, loaded.atomic, statements, True, known)
            )
    if key is not None:
        _cache.store_rollbacks(key, [(m.name, m.atomic, m.statements) for m in results])
    return results


_PACK = 100
"""Files whose rendered SQL one cache entry holds (when all of them are rendered)."""


def _forward(
    router: Router,
    migrator: Any,
    names: Sequence[str],
    wanted: set[str],
    postgres: int,
    facts: bool = False,
    folded: list[bool] | None = None,
) -> list[MigrationSql]:
    """Render the wanted migrations among ``names`` (the first files on disk), in order.

    A file's SQL depends on it and every file before it only, so it is cached
    under their chained hash (:mod:`.cache`); only the state up to the first
    file not cached is replayed, and nothing when all are.  ``folded`` (a list)
    gets True appended when ``migrator`` ends holding the state all ``names`` build.
    """
    from . import cache as _cache

    keys = _cache.chain_keys(names, router.source) if _cache.cache_dir() and not facts else []
    cached: dict[str, tuple[bool, tuple[str, ...], bool]] = {}
    # Whole runs of _PACK files are kept in one entry (writing a thousand small files
    # cost more than rendering them), the files after the last whole run one an entry.
    packed = len(keys) // _PACK * _PACK
    for end in range(_PACK - 1, packed, _PACK):
        run = names[end - _PACK + 1 : end + 1]
        if wanted.isdisjoint(run):
            continue
        pack = _cache.load_sql_pack(_cache.sql_key(keys[end], postgres) + "-pack")
        if pack is not None and [n for n, _ in pack] == run:
            cached.update((n, hit) for n, hit in pack if n in wanted)
    listed = _cache.present() if any(n in wanted and n not in cached for n in names) else None
    for name, key in zip(names, keys, strict=False):  # no keys: the cache is off
        if name in wanted and name not in cached:
            entry = _cache.sql_key(key, postgres)
            if listed is not None and _cache.sql_entry(entry) not in listed:
                continue  # not in the folder when listed: not worth a failed open
            hit = _cache.load_sql(entry)
            if hit is not None:
                cached[name] = hit
    missing = [i for i, n in enumerate(names) if n in wanted and n not in cached]
    if not missing:
        return [
            MigrationSql(n, router.path(n), *cached[n][:2], reads_version=cached[n][2])
            for n in names if n in cached
        ]
    if folded is not None and missing[-1] == len(names) - 1:
        folded.append(True)  # the last file is rendered below: every file is folded
    start = missing[0]
    if start:
        router.replay(names[:start], migrator)
    rendered: dict[str, MigrationSql] = {}
    recorder: Any = router.database  # the offline database: a Recorder
    for i, name in enumerate(names[start:], start=start):
        loaded = router.load(name)
        if name in wanted and name not in cached:
            recorder.version_read = False
            statements, known = _render_one(
                router, migrator, loaded, downgrade=False, postgres=postgres, facts=facts
            )
            rendered[name] = MigrationSql(name, loaded.path, loaded.atomic, statements,
                                          facts=known, reads_version=recorder.version_read,
                                          source=router.source(name))  # read by load()
            if keys and i >= packed:
                _cache.store_sql(_cache.sql_key(keys[i], postgres), loaded.atomic, statements,
                                 reads_version=recorder.version_read)
        elif any(n in wanted and n not in cached for n in names[i + 1 :]):
            router.replay([name], migrator)
    for end in range(_PACK - 1, packed, _PACK):  # whole runs rendered now: one entry each
        run = names[end - _PACK + 1 : end + 1]
        if all(n in rendered for n in run):
            _cache.store_sql_pack(
                _cache.sql_key(keys[end], postgres) + "-pack",
                [(n, (rendered[n].atomic, rendered[n].statements, rendered[n].reads_version))
                 for n in run],
            )
        else:  # part of the run only (the rest not asked for): an entry a file
            for i in range(end - _PACK + 1, end + 1):
                item = rendered.get(names[i])
                if item is not None:
                    _cache.store_sql(_cache.sql_key(keys[i], postgres), item.atomic,
                                     item.statements, reads_version=item.reads_version)
    results = []
    for name in names:
        if name in cached:
            atomic, statements, reads = cached[name]
            results.append(
                MigrationSql(name, router.path(name), atomic, statements, reads_version=reads)
            )
        elif name in rendered:
            results.append(rendered[name])
    return results


def history_sql(
    directory: str | Path,
    *,
    postgres: int = DEFAULT_POSTGRES,
    facts: bool = False,
    state: list[Any] | None = None,
) -> tuple[list[MigrationSql], Callable[[], list[MigrationSql]]]:
    """Return every migration's SQL, in order, and a function that renders every rollback.

    One pass over the files serves both: the forward rendering folds the
    state of the whole history, and the rollbacks (newest first, as
    :func:`migration_sql` with ``rollback=True`` returns them) are rendered
    from it, without replaying the history again.  Call the function once,
    after the forward SQL (it moves the state back down to an empty schema);
    it raises the :class:`MigrationError` of a rollback that does not render.

    ``state``, a list, gets the migrator that holds the state of the whole
    history appended when the forward rendering folded it (not when every
    file's SQL came from the cache): the caller may read that state (``check``
    compares the models with it) until it calls the function; one that
    changes it must render the rollbacks otherwise.

    :raises MigrationError: as :func:`migration_sql`.
    """
    directory = Path(directory)
    router = Router(_OfflineDatabase(postgres), directory)
    names = router.todo
    if not names and not directory.is_dir():
        raise MigrationError(f"{directory} does not exist; give the migrations directory (--dir)")
    migrator = router.migrator_class(router.database)
    folded: list[bool] = []
    forward = (
        _forward(router, migrator, names, set(names), postgres, facts, folded) if names else []
    )
    if state is not None and folded:
        state.append(migrator)

    def rollbacks() -> list[MigrationSql]:
        if not names:
            return []
        return _backward(router, migrator, names, names, set(names), postgres, facts,
                         folded=bool(folded))

    return forward, rollbacks


def render(migrations: Iterable[MigrationSql]) -> str:
    """Return the text ``datalayer migrate sql`` prints: a header line, then the statements."""
    blocks = []
    for item in migrations:
        lines = [item.header, *item.statements]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")
