"""No password, raw token or password / token hash in any exception, repr, log line or CLI output.

Every test runs with the package's loggers *and peewee's* at DEBUG, captures
every record (with its traceback), every exception's text, repr and whole
chain, and greps all of it for sentinel secrets.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import peewee
import psycopg2
import pytest
from click.testing import CliRunner

from datalayer._redact import REDACTED
from datalayer.auth import passwords, tokens, users
from datalayer.cli import main
from datalayer.config import Settings, load_settings, mask_url
from datalayer.db import Database, database
from datalayer.errors import (
    AuthenticationError,
    ConfigError,
    DatabaseUnavailable,
    DatalayerError,
    DuplicateError,
    TokenReuseError,
    ValidationError,
)
from datalayer.models import RefreshToken, User
from tests.pgserver import Server

PASSWORD = "S3ntinel-Passw0rd-xyzzy"
DB_PASSWORD = "Db-S3cret-plugh-4711"


class Capture(logging.Handler):
    """Every log record, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in ("datalayer", "peewee", "")}
    root.addHandler(handler)
    for name in saved:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def texts(exc: BaseException) -> str:
    """str, repr and the whole printed chain of ``exc``."""
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])


def assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        at = text.find(secret)
        assert at < 0, f"secret leaked: ...{text[max(0, at - 200):][:400]}"


@pytest.fixture
def secret_db(pg: Server, template_db: str) -> Iterator[Database]:
    """The package's database on a new database, configured *with a password* (the test
    server trusts local connections, so any password is accepted and must never show)."""
    with pg.database("dlsec", template=template_db) as name:
        database.configure(pg.settings(name, password=DB_PASSWORD))
        try:
            yield database
        finally:
            database.close_pool()


def raises(fn: Any, exc_type: type[BaseException] = DatalayerError) -> BaseException:
    with pytest.raises(exc_type) as info:
        fn()
    return info.value


# -- configuration ----------------------------------------------------------------


def test_settings_never_show_the_password(logs: Capture, monkeypatch: pytest.MonkeyPatch):
    url = f"postgresql://app:{DB_PASSWORD}@db.example:5432/app?password={DB_PASSWORD}"
    s = Settings.from_url(url)
    shown = [repr(s), str(s), s.url(), s.url(masked=True), s.describe(), mask_url(url)]
    for bad in (
        f"postgresql://app:{DB_PASSWORD}@:5432/app",
        f"mysql://app:{DB_PASSWORD}@db/app",
        f"postgresql://app:{DB_PASSWORD}@db:99999/app",
    ):
        shown.append(texts(raises(lambda u=bad: Settings.from_url(u), ConfigError)))
    for key in list(__import__("os").environ):
        if key.startswith(("DB_", "DATABASE_URL", "DATALAYER_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv("DB_PASSWORD", DB_PASSWORD)
    monkeypatch.setenv("DB_PORT", "abc")
    shown.append(texts(raises(load_settings, ConfigError)))
    monkeypatch.delenv("DB_HOST")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@db.example:bad/app")
    shown.append(texts(raises(load_settings, ConfigError)))
    assert_clean("\n".join(shown + logs.lines), DB_PASSWORD)
    assert "***" in s.url()


def test_connect_failure_never_shows_the_password(logs: Capture):
    db = Database(
        Settings.from_url(
            f"postgresql://app:{DB_PASSWORD}@127.0.0.1:1/app", connect_timeout=1
        )
    )
    exc = raises(lambda: db.execute_sql("SELECT 1"), DatabaseUnavailable)
    assert_clean(texts(exc) + repr(db) + repr(db.pool_stats()) + "\n".join(logs.lines), DB_PASSWORD)
    db.close_pool()


def test_pool_and_database_logs_at_debug(secret_db: Database, logs: Capture):
    with secret_db.checkout():
        secret_db.execute_sql("SELECT 1")
    text = "\n".join([*logs.lines, repr(secret_db), repr(secret_db.settings)])
    assert logs.lines, "nothing was logged at DEBUG: the test would prove nothing"
    assert_clean(text, DB_PASSWORD)


# -- models and peewee's own logging -----------------------------------------------


def test_models_reprs_errors_and_peewee_debug_log(secret_db: Database, logs: Capture):
    pw_hash = "$scrypt$" + "Hash-S3ntinel-" + "q" * 40
    tok_hash = hashlib.sha256(PASSWORD.encode()).hexdigest()
    with secret_db.checkout():
        user = User.create(email="models@secrets.test", password_hash=pw_hash)
        token = RefreshToken.create(
            user=user, token_hash=tok_hash, family_id=uuid.uuid4(),
            expires_at=__import__("datetime").datetime(2100, 1, 1),
        )
        shown = [repr(user), str(user), repr(token), str(token)]
        # peewee's DoesNotExist ends with the query's parameters: not ours.
        shown.append(texts(raises(
            lambda: RefreshToken.get(RefreshToken.token_hash == tok_hash[::-1]), peewee.DoesNotExist
        )))
        shown.append(texts(raises(
            lambda: User.get(User.password_hash == pw_hash + "x"), User.DoesNotExist
        )))
        # Too long, NUL: the message names the field, never the value.
        shown.append(texts(raises(
            lambda: User.create(email="m2@secrets.test", password_hash=pw_hash * 10),
            ValidationError,
        )))
        shown.append(texts(raises(
            lambda: User.create(email="m3@secrets.test", password_hash=pw_hash + "\x00"),
            ValidationError,
        )))
        # A unique violation's DETAIL quotes the value: the hash.
        exc = raises(
            lambda: RefreshToken.create(
                user=user, token_hash=tok_hash, family_id=uuid.uuid4(),
                expires_at=__import__("datetime").datetime(2100, 1, 1),
            ),
            peewee.IntegrityError,
        )
    # peewee's own DEBUG query log ran, and redacted the parameters.
    assert any(line.startswith("peewee DEBUG") and REDACTED in line for line in logs.lines)
    assert_clean("\n".join(shown + logs.lines), pw_hash, tok_hash)
    # The driver's own IntegrityError does carry the value: the package's operations
    # never let it out (see the token tests below); here we only record the fact.
    assert tok_hash in str(exc)


# -- operations ----------------------------------------------------------------------


def _stored_hash(pg: Server, secret_db: Database, email: str) -> str:
    conn = psycopg2.connect(**{**secret_db.settings.connect_kwargs(), "application_name": "t"})
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT password_hash FROM users WHERE email = %s", (email,))
            row = cur.fetchone()
            assert row is not None
            return str(row[0])
    finally:
        conn.close()


def test_user_operations(pg: Server, secret_db: Database, logs: Capture):
    shown: list[str] = []
    user = users.create_user("Ops@Secrets.test", PASSWORD)
    stored = _stored_hash(pg, secret_db, "ops@secrets.test")
    assert passwords.is_password_hash(stored) and PASSWORD not in stored
    shown += [repr(user), str(user)]
    shown.append(repr(users.authenticate("ops@secrets.test", PASSWORD)))
    for fn in (
        lambda: users.create_user("ops@secrets.test", PASSWORD),
        lambda: users.create_user("ops2@secrets.test", password_hash=stored + "!"),
        lambda: users.create_user("ops3@secrets.test", PASSWORD * 100),
        lambda: users.create_user(PASSWORD, PASSWORD),
        lambda: users.authenticate("ops@secrets.test", PASSWORD + "!"),
        lambda: users.authenticate("nobody@secrets.test", PASSWORD),
        lambda: users.authenticate(PASSWORD, PASSWORD),
        lambda: users.get_user_by_email("nobody@secrets.test"),
        lambda: users.import_users([{"email": "ops@secrets.test", "password_hash": stored}]),
        lambda: users.import_users([{"email": "ops5@secrets.test", "password": PASSWORD},
                                    {"email": "ops5@secrets.test", "password": PASSWORD}]),
        lambda: users.import_users([{"email": "ops6@secrets.test", "password_hash": PASSWORD}]),
    ):
        with pytest.raises(DatalayerError) as info:
            fn()
        shown.append(texts(info.value))
    assert users.import_users([{"email": "ops7@secrets.test", "password": PASSWORD}]) == 1
    users.deactivate_user(user)
    shown.append(texts(raises(
        lambda: users.authenticate("ops@secrets.test", PASSWORD), AuthenticationError
    )))
    assert_clean("\n".join(shown + logs.lines), PASSWORD, stored)


def test_token_operations(secret_db: Database, logs: Capture):
    shown: list[str] = []
    user = users.create_user("tok@secrets.test", PASSWORD)
    first = tokens.issue_token(user, user_agent="ua", ip="127.0.0.1")
    raw = [first.token]
    shown += [repr(first), str(first)]
    second = tokens.rotate_token(first.token)
    raw.append(second.token)
    shown += [repr(second), str(second)]
    shown.append(texts(raises(lambda: tokens.rotate_token(first.token), TokenReuseError)))
    shown.append(texts(raises(lambda: tokens.rotate_token(second.token), TokenReuseError)))
    shown.append(texts(raises(lambda: tokens.rotate_token(first.token + "x"), AuthenticationError)))
    third = tokens.issue_token(user)
    raw.append(third.token)
    assert tokens.revoke_token(third.token) is True
    assert tokens.revoke_token(third.token) is False
    shown.append(texts(raises(lambda: tokens.rotate_token("\x00" + third.token), DatalayerError)))
    tokens.revoke_all_for_user(user)
    tokens.purge_expired()
    with secret_db.checkout():
        rows = list(RefreshToken.select())
        shown += [repr(r) for r in rows]
    hashes = [hashlib.sha256(t.encode()).hexdigest() for t in raw]
    assert {r.token_hash for r in rows} == set(hashes)
    assert_clean("\n".join(shown + logs.lines), *raw, *hashes, PASSWORD)


# -- the CLI ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["db", "info"], ["db", "info", "--json"], ["db", "url"], ["migrate", "status"]],
)
def test_cli_output(
    args: list[str], pg: Server, clean_env: Any, monkeypatch: pytest.MonkeyPatch, logs: Capture
):
    a = pg.admin
    good = f"postgresql://{a.user}:{DB_PASSWORD}@{a.host}:{a.port}/{a.dbname}"
    for url in (good, f"postgresql://app:{DB_PASSWORD}@127.0.0.1:1/app"):
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
        result = CliRunner().invoke(main, args)
        out = result.output + (result.stderr if result.stderr_bytes is not None else "")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            out += texts(result.exception)
        assert out.strip(), "the command printed nothing"
        assert_clean(out + "\n".join(logs.lines), DB_PASSWORD)
    database.close_pool()


def test_duplicate_error_is_ours(secret_db: Database):
    users.create_user("dup@secrets.test", PASSWORD)
    exc = raises(lambda: users.create_user("DUP@secrets.test", PASSWORD), DuplicateError)
    assert "dup@secrets.test" not in texts(exc)
