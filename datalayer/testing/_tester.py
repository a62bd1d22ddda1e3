"""What the ``migrator`` fixture gives: a test database moved along the migration history.

:class:`MigrationTester` holds one scratch database (:mod:`datalayer.migrate.scratch`:
created for the test, dropped after it).  :meth:`~MigrationTester.to` applies or
rolls back migrations with :func:`datalayer.migrate.apply` /
:func:`~datalayer.migrate.rollback`, as ``datalayer migrate apply --to`` and
``rollback`` would; :meth:`~MigrationTester.models` replays the files up to
the current point without a database (``Router.replay``) and binds the models
of that state to the test database.  :meth:`~MigrationTester.walk_history`
is the ready test: every migration up, down and up again, the live schema
compared at each step (:func:`datalayer.migrate.inspect.differences`, the one
comparison ``check``, ``drift`` and ``baseline`` use) with the schema the
replayed models create in a second scratch database, as ``check`` compares
the migrations with the models.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from ..config import Settings
from ..db import Database
from ..errors import DatalayerError

if TYPE_CHECKING:
    import peewee as pw

    from ..migrate.inspect import Catalog, Difference

__all__ = ["MigrationTester", "scratch_admin"]


def scratch_admin(settings: Settings) -> Settings:
    """Return the settings of the server that holds the test databases (see ``scratch``)."""
    from ..migrate.scratch import scratch_server

    return scratch_server(settings)


def _orm_models(migrator: Any) -> list[type[pw.Model]]:
    return list(migrator.orm.__tables__.values())


class MigrationTester:
    """A fresh database moved to any migration of ``directory`` by name.

    ``db`` is the test database (a :class:`datalayer.db.Database`; plain queries
    connect by themselves), ``names`` the migrations on disk in order,
    ``current`` the last one applied (None: none).
    """

    def __init__(self, db: Database, directory: Path, admin: Settings) -> None:
        from ..migrate.runtime.names import migration_names, require_dir

        self.db = db
        self.directory = require_dir(directory)
        self.names: list[str] = migration_names(self.directory)
        self._admin = admin
        self._states: dict[int, Any] = {}  # position -> replayed migrator (its orm)

    @classmethod
    @contextlib.contextmanager
    def fresh(cls, admin: Settings, directory: Path) -> Iterator[MigrationTester]:
        """Yield a tester on a new empty database of ``admin``'s server; drop it afterwards."""
        from ..migrate.runtime.names import require_dir
        from ..migrate.scratch import scratch_database

        require_dir(directory)  # before a database is made for nothing
        with scratch_database(admin, "test") as settings:
            db = Database(settings.replace(max_open_conns=4, max_idle_conns=2))
            try:
                yield cls(db, Path(directory), admin)
            finally:
                with contextlib.suppress(Exception):
                    if not db.is_closed() and not db.in_transaction():
                        db.close()
                db.close_pool()

    # -- where the database stands ---------------------------------------------

    @property
    def applied(self) -> list[str]:
        """The migrations recorded as applied on the test database, oldest first."""
        from ..migrate.runtime.files import Router

        with self.db.checkout():
            return Router(self.db, self.directory).done

    @property
    def current(self) -> str | None:
        """The last migration applied on the test database (None: none)."""
        applied = self.applied
        return applied[-1] if applied else None

    def _position(self, name: str | None) -> int:
        """Return how many migrations are applied once at ``name`` (a name or its number)."""
        if name is None:
            return 0
        if name in self.names:
            return self.names.index(name) + 1
        numbered = [n for n in self.names if n.split("_", 1)[0].lstrip("0") == name.lstrip("0")]
        if len(numbered) == 1 and name.strip("0123456789") == "":
            return self.names.index(numbered[0]) + 1
        known = ", ".join(self.names) or "none"
        raise LookupError(
            f"no migration {name!r} in {self.directory}; give one of: {known} (or None: empty)"
        )

    # -- moving ----------------------------------------------------------------

    def to(self, name: str | None) -> list[str]:
        """Apply or roll back migrations until ``name`` is the last one applied.

        ``name`` is a migration name or its number (``"002"``); None rolls
        everything back.  Returns the migrations applied or rolled back, in
        the order they ran.  The checksum file must match the files, as for
        ``datalayer migrate apply`` (run ``datalayer migrate hash``).
        """
        from ..migrate.runtime.apply import apply, rollback

        want = self._position(name)
        have = len(self.applied)
        if want > have:
            done = apply(self.db, self.directory, to=self.names[want - 1])
        elif want < have:
            done = rollback(self.db, self.directory, steps=have - want)
        else:
            return []
        return [item.name for item in done]

    # -- the models of the replayed state ---------------------------------------

    def _state(self, position: int) -> Any:
        state = self._states.get(position)
        if state is None:
            from ..migrate.runtime.files import Router
            from ..migrate.runtime.recorder import Recorder

            recorder = Recorder()
            router = Router(recorder, self.directory)
            state = router.migrator_class(recorder)
            router.replay(self.names[:position], state)
            self._states[position] = state
        return state

    @overload
    def models(self, name: str, /) -> type[pw.Model]: ...

    @overload
    def models(self, name: str, second: str, /, *more: str) -> tuple[type[pw.Model], ...]: ...

    def models(self, *names: str) -> type[pw.Model] | tuple[type[pw.Model], ...]:
        """Return the model(s) named, as the migrations applied so far define them.

        Each name is a model's class name (``"User"``) or table name (``"users"``).
        The models are those of the replayed state at :attr:`current`, bound
        to the test database: insert rows through them before a migration,
        read them back after it.
        """
        if not names:
            raise TypeError("models() needs at least one model name, e.g. models('User')")
        applied = self.applied
        position = len(applied)
        state = self._state(position)
        orm = state.orm
        found: list[type[pw.Model]] = []
        for name in names:
            model = orm.__models__.get(name) or orm.__tables__.get(name)
            if model is None:
                where = f"after {applied[-1]}" if applied else "before the first migration"
                known = ", ".join(
                    f"{cls.__name__} ({table})" for table, cls in sorted(orm.__tables__.items())
                ) or "none"
                raise LookupError(
                    f"no model {name!r} {where}; the models there: {known} "
                    "(give a class or a table name)"
                )
            found.append(model)
        self.db.bind(_orm_models(state), bind_refs=False, bind_backrefs=False)
        return found[0] if len(found) == 1 else tuple(found)

    # -- the ready test: up, down, up -----------------------------------------------

    def walk_history(self) -> list[str]:
        """Apply every migration, roll all back, apply again; compare the schema at each step.

        After each step the live schema (the history table left out) must be
        the one the models of the replayed state create.  Stops at the
        first step that fails; returns what happened there, a line saying
        which step and one line per difference (empty: the history is sound).
        """
        from ..migrate.scratch import scratch_database

        if not self.names:
            return [f"no migration in {self.directory}: nothing to walk"]
        self.to(None)
        with scratch_database(self._admin, "expect") as settings:
            expect = Database(settings)
            try:
                return self._walk(expect)
            finally:
                expect.close_pool()

    def _walk(self, expect: Database) -> list[str]:
        count = len(self.names)
        steps: list[tuple[str, int]] = [("up", i) for i in range(1, count + 1)]
        steps += [("down", i) for i in range(count - 1, -1, -1)]
        steps += [("up again", i) for i in range(1, count + 1)]
        expected: dict[int, Catalog] = {}
        for phase, position in steps:
            name = self.names[position - 1] if position else None
            undone = self.names[position] if phase == "down" else None
            what = (
                f"{phase}: rolling back {undone}" if undone else f"{phase}: applying {name}"
            )
            try:
                self.to(name)
            except DatalayerError as exc:
                return [f"{what} failed: {exc}"]
            if position not in expected:
                expected[position] = self._expected(expect, position)
            at = f"at {name}" if name else "with no migration applied"
            found = _differences(_validated(expected[position]), _validated(self._live()))
            if found:
                return [
                    f"{what}: the database {at} differs from the replayed state:",
                    *(f"  - {d.message('the replayed migrations', 'the database')}" for d in found),
                ]
        return []

    def _live(self) -> Catalog:
        from ..migrate.inspect import snapshot_catalog
        from ..migrate.runtime.files import MIGRATE_TABLE

        with self.db.checkout():
            return snapshot_catalog(self.db, ignore={MIGRATE_TABLE})

    def _expected(self, expect: Database, position: int) -> Catalog:
        """Build the replayed state's models at ``position`` in ``expect`` and read it back."""
        from ..migrate.ddl.spec import quote
        from ..migrate.inspect import snapshot_catalog, user_schemas

        models: list[Any] = _orm_models(self._state(position))
        with expect.checkout(), expect.bind_ctx(models):
            for schema in user_schemas(expect):  # the previous step's tables go
                expect.execute_sql(f"DROP SCHEMA {quote(schema)} CASCADE")
            expect.execute_sql("CREATE SCHEMA public")
            for schema in sorted({m._meta.schema for m in models if m._meta.schema}):
                expect.execute_sql(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            expect.create_tables(models)
            for model in models:  # as `check` does, once both tables exist
                for field in list(model._meta.refs):
                    if field.deferred:
                        model._schema.create_foreign_key(field)
            return snapshot_catalog(expect)


def _validated(catalog: Catalog) -> Catalog:
    """``catalog`` with every constraint as if validated (models cannot say NOT VALID).

    A generated history adds a foreign key or CHECK ``NOT VALID`` in one
    migration and validates it in the next: in between, the constraint is
    there and enforced on new rows, which is what the replayed state says.
    """
    from ..migrate.inspect import Catalog, Schema

    def valid(definition: str) -> str:
        return definition.removesuffix(" NOT VALID")

    return Catalog({
        schema_name: Schema(schema_name, {
            table_name: dataclasses.replace(
                table,
                foreign_keys=tuple(
                    dataclasses.replace(fk, definition=valid(fk.definition))
                    for fk in table.foreign_keys
                ),
                checks=tuple(
                    dataclasses.replace(check, definition=valid(check.definition))
                    for check in table.checks
                ),
            )
            for table_name, table in schema.tables.items()
        })
        for schema_name, schema in catalog.schemas.items()
    })


def _differences(expected: Catalog, live: Catalog) -> list[Difference]:
    """Compare every schema on either side (a schema left behind by a rollback counts)."""
    from ..migrate.inspect import Difference, differences

    found = differences(expected, live)
    found += [
        Difference("schema", "", name, None, name)
        for name in sorted(set(live.schemas) - set(expected.schemas))
        if live.schemas[name].tables or name != "public"
    ]
    return found

