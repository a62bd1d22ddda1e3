"""Server-side prepared statements: used on direct connections, never behind PgBouncer,
made again when the server lost or outdated them, never inside a transaction.

What the server holds is read from ``pg_prepared_statements`` on the same
connection: ``generic_plans + custom_plans`` counts the EXECUTEs of each.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from datalayer import _sql
from datalayer.auth import passwords, tokens, users
from datalayer.config import Settings
from datalayer.db import Database
from datalayer.errors import NotFound
from tests._faults_helpers import PgBouncer, pgbouncer_binary, run_threads
from tests.pgserver import Server

HASH = passwords.hash_password("prepared statements", params=passwords.Argon2Params(2, 19456, 1))


def _database(settings: Settings) -> Database:
    return Database(settings)


@pytest.fixture
def fresh(pg: Server, template_db: str) -> Iterator[tuple[Database, str]]:
    """A database of its own with the tables, and a pool of ONE connection on it."""
    with pg.database("dlprep", template=template_db) as name:
        db = _database(pg.settings(name, max_open_conns=1, max_idle_conns=1))
        try:
            yield db, name
        finally:
            db.close_pool()


def _executions(db: Database) -> dict[str, int]:
    """Return name -> EXECUTE count of the prepared statements on the thread's connection."""
    rows = db.execute_sql(
        "SELECT name, generic_plans + custom_plans FROM pg_prepared_statements"
    ).fetchall()
    return {name: int(count) for name, count in rows}


def _name(stmt: _sql.Statement) -> str:
    return stmt.prepared.name


def test_operations_run_prepared_on_a_direct_connection(fresh: tuple[Database, str]) -> None:
    db, _ = fresh
    user = users.create_user("Prep@Example.test", password_hash=HASH, db=db)
    for _ in range(5):  # a checkout per call: the pool's one connection each time
        assert users.get_user_by_email("PREP@example.test", db=db).id == user.id
    issued = tokens.issue_token(user, db=db)
    rotated = tokens.rotate_token(issued.token, db=db)
    with db.checkout():  # a held connection: the same statements, prepared already
        for _ in range(3):
            assert users.get_user(user.id, db=db).email == "prep@example.test"
        assert users.get_user_by_email("prep@example.test", db=db).id == user.id
        tokens.rotate_token(rotated.token, db=db)
        counts = _executions(db)
    assert counts[_name(users._select_by_email())] == 6
    assert counts[_name(users._select_by_id())] == 3
    assert counts[_name(users._insert_user())] == 1
    assert counts[_name(tokens._insert())] == 1
    assert counts[_name(tokens._rotate())] == 2
    # The name says whether the statement may write (for whoever sees only the EXECUTE).
    reads = {_name(users._select_by_email()), _name(users._select_by_id())}
    assert {n for n in counts if n.startswith("datalayer_r_")} == reads
    assert all(n.startswith("datalayer_w_") for n in counts.keys() - reads)


def test_nothing_is_prepared_inside_a_transaction(fresh: tuple[Database, str]) -> None:
    # A prepared statement gone stale inside the caller's transaction would abort it,
    # out of the package's reach: transactions run the plain text.
    db, _ = fresh
    user = users.create_user("txn@example.test", password_hash=HASH, db=db)
    with db.checkout():
        db.execute_sql("DEALLOCATE ALL")
        with db.atomic():
            users.get_user_by_email("txn@example.test", db=db)
            tokens.issue_token(user, db=db)
            assert _executions(db) == {}
        users.get_user_by_email("txn@example.test", db=db)  # outside again: prepared
        assert _executions(db) == {_name(users._select_by_email()): 1}


def test_a_statement_the_server_lost_is_prepared_again(fresh: tuple[Database, str]) -> None:
    # DISCARD ALL (what a connection reset runs) drops every prepared statement.
    db, _ = fresh
    user = users.create_user("discard@example.test", password_hash=HASH, db=db)
    users.get_user_by_email("discard@example.test", db=db)
    with db.checkout():
        assert _executions(db)[_name(users._select_by_email())] == 1
        db.execute_sql("DISCARD ALL")
        assert users.get_user_by_email("discard@example.test", db=db).id == user.id
        assert _executions(db) == {_name(users._select_by_email()): 1}
    users.get_user_by_email("discard@example.test", db=db)  # per-call checkout, same conn
    with db.checkout():
        assert _executions(db) == {_name(users._select_by_email()): 2}


def test_a_first_use_that_fails_after_its_prepare_leaves_the_statement_usable(
    fresh: tuple[Database, str],
) -> None:
    # PREPARE is not undone when the EXECUTE in the same round trip fails: the next use
    # must not trip over "prepared statement already exists".
    db, _ = fresh
    stmt = _sql.Statement.text("SELECT 10 / %s", "d")
    with pytest.raises(peewee.DataError, match="division by zero"):
        _sql.fetchone(db, stmt, {"d": 0})
    assert _sql.fetchone(db, stmt, {"d": 5}) == (2,)
    assert _sql.fetchone(db, stmt, {"d": 2}) == (5,)
    with db.checkout():
        assert _executions(db)[_name(stmt)] == 2  # the two that succeeded


def test_a_value_used_twice_is_one_parameter_of_the_prepared_statement(
    fresh: tuple[Database, str],
) -> None:
    # "a" twice in the SQL: prepared, both uses are $1 and its value is rendered once into
    # EXECUTE; the plain text (inside a transaction) still takes one value per %s.
    db, _ = fresh
    stmt = _sql.Statement.text("SELECT %s::int * 10 + %s::int, %s::int", "a", "b", "a")
    assert stmt.prepared.execute.count("%s") == 2
    assert _sql.fetchone(db, stmt, {"a": 4, "b": 2}) == (42, 4)
    assert _sql.fetchone(db, stmt, {"a": 7, "b": 1}) == (71, 7)
    with db.checkout():
        assert _sql.fetchone(db, stmt, {"a": 3, "b": 5}) == (35, 3)  # held, prepared
        row = db.execute_sql("SELECT statement FROM pg_prepared_statements WHERE name = %s",
                             (_name(stmt),)).fetchone()
        assert "$1::int * 10 + $2::int, $1::int" in row[0]
        with db.atomic():
            assert _sql.fetchone(db, stmt, {"a": 2, "b": 9}) == (29, 2)  # the plain text
        assert _executions(db)[_name(stmt)] == 3
    # The token insert names the user twice (the row's owner, the row locked): one $2.
    assert tokens._insert().sql.count("%s") == 8
    assert tokens._insert().prepared.execute.count("%s") == 7


class _Stale(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "went stale" in record.getMessage():
            self.count += 1


def test_a_column_type_change_under_a_live_pool_never_reaches_the_callers(
    pg: Server, template_db: str
) -> None:
    """ALTER TABLE changes the result type of the prepared lookups and inserts while 8
    threads run them on 8 pooled connections: every call succeeds, each write once."""
    threads, rounds = 8, 3
    with pg.database("dlprep", template=template_db) as name:
        db = _database(pg.settings(name, max_open_conns=threads, max_idle_conns=threads))
        admin = pg.raw(name)
        handler = _Stale()
        logger = logging.getLogger("datalayer")
        old_level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        try:
            seed = users.create_user("seed@example.test", password_hash=HASH,
                                     display_name="Seed", db=db)
            created: list[str] = []
            lock = threading.Lock()
            phase = [0]
            ready = threading.Barrier(threads + 1)
            go = threading.Barrier(threads + 1)

            def work(index: int) -> None:
                try:
                    run(index)
                except BaseException:
                    ready.abort()  # the others fail fast instead of waiting at the barriers
                    go.abort()
                    raise

            def run(index: int) -> None:
                for r in range(rounds):
                    for i in range(20):
                        found = users.get_user_by_email("seed@example.test", db=db)
                        assert found.id == seed.id and found.display_name == "Seed"
                        assert users.get_user(seed.id, db=db).display_name == "Seed"
                        email = f"w{index}-{r}-{i}@example.test"
                        made = users.create_user(email, password_hash=HASH,
                                                 display_name=f"N{i}", db=db)
                        assert made.display_name == f"N{i}"
                        with lock:
                            created.append(email)
                    ready.wait(60)  # every thread has prepared on its connection ...
                    go.wait(60)  # ... and the column changed type meanwhile

            def change() -> None:
                for r in range(rounds):
                    try:
                        ready.wait(60)
                    except threading.BrokenBarrierError:
                        return
                    kind = "text" if r % 2 == 0 else "varchar(255)"
                    with admin.cursor() as cur:
                        cur.execute(f"ALTER TABLE users ALTER COLUMN display_name TYPE {kind}")
                    phase[0] += 1
                    try:
                        go.wait(60)
                    except threading.BrokenBarrierError:
                        return

            changer = threading.Thread(target=change)
            changer.start()
            errors = run_threads(threads, work)
            changer.join(60)
            assert errors == []
            assert phase[0] == rounds
            assert handler.count >= threads  # each connection re-prepared, out of sight
            with admin.cursor() as cur:
                cur.execute("SELECT email FROM users WHERE email <> 'seed@example.test'")
                stored = sorted(row[0] for row in cur.fetchall())
            assert stored == sorted(created)  # no write ran twice, none was lost
            assert len(stored) == threads * rounds * 20
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            admin.close()
            db.close_pool()


# -- behind PgBouncer ----------------------------------------------------------------

BOUNCER = pgbouncer_binary()


@pytest.fixture(scope="module")
def one_server_connection(pg: Server) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode with ONE server connection: whatever a client
    prepared would be visible to every later transaction."""
    if BOUNCER is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    directory = Path(tempfile.mkdtemp(prefix="datalayer-prep-pgb-"))
    proc = PgBouncer(BOUNCER, directory / "pgb", pg.admin.host or "127.0.0.1", pg.admin.port,
                     pool_size=1)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_nothing_is_prepared_behind_pgbouncer(
    pg: Server, template_db: str, one_server_connection: PgBouncer
) -> None:
    with pg.database("dlprep", template=template_db) as name:
        settings = Settings.from_url(one_server_connection.url(name),
                                     application_name="datalayer-prep", max_open_conns=4,
                                     max_idle_conns=4)
        db = _database(settings)
        try:

            def work(index: int) -> None:
                user = users.create_user(f"pgb{index}@example.test", password_hash=HASH, db=db)
                for _ in range(5):
                    assert users.get_user_by_email(f"PGB{index}@example.test", db=db).id == user.id
                token = tokens.issue_token(user, db=db)
                tokens.rotate_token(token.token, db=db)

            assert run_threads(4, work) == []
            with db.checkout():
                rows = db.execute_sql("SELECT name FROM pg_prepared_statements").fetchall()
            assert rows == []
        finally:
            db.close_pool()


def test_a_connection_remembers_what_it_prepared(fresh: tuple[Database, str]) -> None:
    db, _ = fresh
    for _ in range(3):
        with pytest.raises(NotFound):
            users.get_user_by_email("nobody@example.test", db=db)
    with db.checkout():
        raw = db.connection()
        assert raw.prepared == {_name(users._select_by_email())}


# -- migrations --------------------------------------------------------------------------


def test_history_reads_run_prepared(fresh: tuple[Database, str], tmp_path: Path) -> None:
    from datalayer.migrate.runtime import apply as runner
    from datalayer.migrate.runtime.files import Router
    from tests.migrate_runtime_support import make_tables

    db, _ = fresh
    make_tables(tmp_path, 2)
    runner.apply(db.settings, tmp_path)
    router = Router(db, tmp_path)
    for _ in range(3):  # a checkout per read, on the pool's one connection
        assert [row.name for row in router.history()] == ["001_create_t1", "002_create_t2"]
    with db.checkout():
        counts = sorted(_executions(db).values())
    assert counts == [3, 3]  # the columns of the history table, and its rows


def test_a_migration_that_changes_a_returned_column_never_reaches_the_callers(
    fresh: tuple[Database, str], tmp_path: Path
) -> None:
    """`migrate apply` changes the type of a column the prepared operations return."""
    from datalayer.migrate.runtime import apply as runner
    from datalayer.migrate.runtime.checksum import write_sum
    from tests.migrate_runtime_support import write_migration

    db, _ = fresh
    user = users.create_user("apply@example.test", password_hash=HASH, display_name="A", db=db)
    issued = tokens.issue_token(user, user_agent="before", db=db)
    assert users.get_user_by_email("apply@example.test", db=db).display_name == "A"
    write_migration(
        tmp_path, "001_widen",
        migrate='migrator.sql("ALTER TABLE users ALTER COLUMN display_name TYPE text")\n'
                'migrator.sql("ALTER TABLE refresh_tokens ALTER COLUMN family_id TYPE text")',
    )
    write_sum(tmp_path)
    assert [a.name for a in runner.apply(db.settings, tmp_path)] == ["001_widen"]
    assert users.get_user_by_email("apply@example.test", db=db).display_name == "A"
    rotated = tokens.rotate_token(issued.token, db=db)  # returns family_id, now text
    assert str(rotated.family_id) == str(issued.family_id)
    assert users.create_user("after@example.test", password_hash=HASH, db=db).email == (
        "after@example.test")
