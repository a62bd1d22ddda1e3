"""No part of a database password shows, whatever the URL looks like (a property test).

Passwords are generated with the characters that move a URL's boundaries
(``/ # ? @ : % &``) between letters that never occur in the package's output
(Cyrillic and Greek capitals): any shown fragment of two characters or more
carries one of those letters, raw, percent-encoded or ``\\u``-escaped, so the
check is "none of them anywhere", not "not the whole password".

Each example writes the password into a DATABASE_URL (raw or percent-encoded,
in the userinfo or as ``?password=``), then collects everything the package
shows: ``mask_url``, the settings' repr / URL / description or the
``ConfigError``, the ``DatabaseUnavailable`` of a connect, and the output of
every CLI command with that DATABASE_URL, against a port where no server
listens and against a server of our own that asks for a password (and gets a
wrong one).  Loggers run at DEBUG and their records are searched too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datalayer.cli import main
from datalayer.config import Settings, load_settings, mask_url
from datalayer.db import Database, database
from datalayer.errors import ConfigError, DatalayerError
from tests._faults_helpers import OwnServer, own_server
from tests.test_secrets import Capture, texts

REPO = Path(__file__).resolve().parent.parent
MARKERS = "ЖЩЮΩΨΛ"
SPECIALS = "/#?@:%&=+ ;[]!$'\"\\,~^`"
RIGHT_PASSWORD = "the-right-one"
# Commands that act on the embedded server, not on DATABASE_URL.
SKIPPED = {("db", "start"), ("db", "stop")}
EXAMPLES = int(os.environ.get("DATALAYER_SECRETS_EXAMPLES", "40"))  # CLI runs per example: ~0.3 s


def _leaked_forms() -> list[str]:
    forms: list[str] = []
    for m in MARKERS:
        enc = quote(m, safe="")
        forms += [m, enc, enc.lower(), json.dumps(m)[1:-1], json.dumps(m)[1:-1].upper(),
                  m.encode("unicode_escape").decode()]
    return forms


LEAKED_FORMS = _leaked_forms()


def assert_no_part(text: str, password: str) -> None:
    for form in LEAKED_FORMS:
        at = text.find(form)
        shown = text[max(0, at - 120):at + 60]
        assert at < 0, f"part of the password {password!r} shown: ...{shown}"


def commands() -> list[list[str]]:
    """Every CLI command (from click's tree, so new ones are covered), with its required args."""
    found: list[list[str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None:
                    walk(sub, [*path, name])
            return
        if tuple(path) in SKIPPED:
            return
        args = [p for p in cmd.params if isinstance(p, click.Argument) and p.required]
        found.append([*path, *["x" for _ in args]])

    walk(main, [])
    return found


COMMANDS = commands()


@pytest.fixture(scope="module")
def password_server() -> Iterator[OwnServer]:
    """A server of our own whose role ``app`` must give a password (scram-sha-256 over TCP)."""
    with own_server("datalayer-secrets-") as srv:
        srv.query("SET password_encryption = 'scram-sha-256'")
        srv.query(f"CREATE ROLE app LOGIN PASSWORD '{RIGHT_PASSWORD}'")
        hba = srv.datadir / "pg_hba.conf"
        hba.write_text("host all app 127.0.0.1/32 scram-sha-256\n"
                       "host all app ::1/128 scram-sha-256\n" + hba.read_text())
        srv.query("SELECT pg_reload_conf()")
        yield srv


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


def test_the_server_really_asks_for_the_password(password_server: OwnServer) -> None:
    assert password_server.server is not None
    host, port = "127.0.0.1", password_server.server.port
    good = Database(Settings(host=host, port=port, user="app", password=RIGHT_PASSWORD))
    assert good.execute_sql("SELECT current_user").fetchone() == ("app",)
    good.close_pool()
    bad = Database(Settings(host=host, port=port, user="app", password="wrong"))
    with pytest.raises(DatalayerError, match="password authentication failed"):
        bad.execute_sql("SELECT 1")
    bad.close_pool()


def test_every_command_is_covered() -> None:
    names = {" ".join(c[:2]) for c in COMMANDS}
    assert {"db info", "db url", "migrate status", "migrate apply"} <= names


passwords = st.lists(
    st.tuples(st.text(st.sampled_from(MARKERS), min_size=1, max_size=2),
              st.text(st.sampled_from(SPECIALS), min_size=1, max_size=3)),
    min_size=2, max_size=5,
).map(lambda parts: "".join(a + b for a, b in parts))


def _urls(password: str, host: str, port: int) -> list[str]:
    enc = quote(password, safe="")
    base = f"{host}:{port}/postgres"
    return [
        f"postgresql://app:{password}@{base}",
        f"postgresql://app:{enc}@{base}",
        f"postgresql://app@{base}?password={password}",
        f"postgresql://app@{base}?sslmode=disable&password={enc}&application_name=dl",
        f"postgres://app:{password}@{base}?sslmode=disable",
    ]


def _shown_by_the_library(url: str, password: str) -> list[str]:
    shown = [mask_url(url)]
    try:
        s = Settings.from_url(url, connect_timeout=1)
    except ConfigError as exc:
        return [*shown, texts(exc)]
    shown += [repr(s), str(s), s.url(), s.describe()]
    db = Database(s)
    try:
        db.execute_sql("SELECT 1")
        raise AssertionError("the connection should have failed")
    except DatalayerError as exc:
        shown.append(texts(exc))
    finally:
        db.close_pool()
    return shown


def _shown_by_the_cli(monkeypatch: pytest.MonkeyPatch, url: str) -> list[str]:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DATALAYER_DEV_DATABASE_URL", url)
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
    shown = []
    for args in COMMANDS:
        result = CliRunner().invoke(main, args)
        out = result.output + (result.stderr if result.stderr_bytes is not None else "")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            out += texts(result.exception)
        shown.append(f"$ datalayer {' '.join(args)} (exit {result.exit_code})\n{out}")
        database.close_pool()
    return shown


@pytest.fixture
def project(clean_env: Path) -> Path:
    """The current directory: a project with the package's own migrations."""
    shutil.copytree(REPO / "migrations", clean_env / "migrations")
    return clean_env


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords, target=st.sampled_from(["nobody listens", "wrong password"]),
       form=st.integers(0, 4))
def test_no_part_of_the_password_shows(
    password: str, target: str, form: int, password_server: OwnServer, project: Path,
    monkeypatch: pytest.MonkeyPatch, logs: Capture,
) -> None:
    assert password_server.server is not None
    port = 1 if target == "nobody listens" else password_server.server.port
    url = _urls(password, "127.0.0.1", port)[form]
    start = len(logs.lines)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shown = _shown_by_the_library(url, password) + _shown_by_the_cli(monkeypatch, url)
    assert_no_part("\n".join(shown + logs.lines[start:]), password)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords)
def test_db_password_variable_never_shows(
    password: str, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_HOST", "127.0.0.1")
    monkeypatch.setenv("DB_PORT", "1")
    monkeypatch.setenv("DB_PASSWORD", password)
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
    s = load_settings()
    shown = [repr(s), s.url(), s.describe()]
    db = Database(s)
    with contextlib.suppress(DatalayerError):
        db.execute_sql("SELECT 1")
    db.close_pool()
    monkeypatch.setenv("DB_PORT", "not-a-port")
    try:
        load_settings()
    except ConfigError as exc:
        shown.append(texts(exc))
    assert_no_part("\n".join(shown), password)


@settings(max_examples=3000, deadline=None)
@given(password=passwords, other=passwords, host=st.sampled_from(["db.example", "127.0.0.1:5432",
                                                                 "h", "[::1]:1"]),
       form=st.integers(0, 4), extra=st.sampled_from(["", "?sslmode=require",
                                                      "?application_name=a@b", "#frag"]))
def test_mask_url_hides_every_part_of_any_password(
    password: str, other: str, host: str, form: int, extra: str
) -> None:
    """The pure function, many more examples than the CLI test can afford."""
    url = _urls(password, host, 5432)[form].replace(f"{host}:5432", host) + extra
    assert_no_part(mask_url(url), password)
    both = f"postgresql://app:{password}@{host}/db?sslmode=disable&password={other}{extra}"
    assert_no_part(mask_url(both), password + other)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:se/cret@db.example:5432/app", "postgresql://app:***@db.example:5432/app"),
        ("postgresql://app:se#cret@db.example/app", "postgresql://app:***@db.example/app"),
        ("postgresql://app:se?cret@db.example/app", "postgresql://app:***@db.example/app"),
        ("postgresql://app:se@cret@db.example/app", "postgresql://app:***@db.example/app"),
        ("postgresql://app:se:cret@db.example/app", "postgresql://app:***@db.example/app"),
        ("postgresql://app@db.example/app?password=se@cret&sslmode=require",
         "postgresql://app@db.example/app?password=***"),
    ],
)
def test_the_cases_of_the_issue(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize("password", ["se/cret", "se#cret", "se?cret", "se/c@ret"])
def test_an_ambiguous_url_is_refused_with_the_way_out(password: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_url(f"postgresql://app:{password}@db.example/app")
    message = str(info.value)
    assert "percent-encode" in message and "%2F" in message
    assert "cret" not in message and "c@ret" not in message
    encoded = Settings.from_url(f"postgresql://app:{quote(password, safe='')}@db.example/app")
    assert encoded.password == password and encoded.host == "db.example"


@pytest.mark.parametrize("query", ["password=Λ&Λ:", "password=a&sslmode=require",
                                   "sslmode=disable&password=se&cret=x"])
def test_parameters_after_password_are_refused(query: str) -> None:
    """Found by the property test: "?password=Λ&Λ:" passed "Λ:" to libpq as an option name."""
    with pytest.raises(ConfigError) as info:
        Settings.from_url(f"postgresql://app@db.example/app?{query}")
    message = str(info.value)
    assert "put password= last" in message
    tail = query.partition("password=")[2]
    assert tail not in message and "Λ" not in message and "cret" not in message


def test_the_query_is_read_as_libpq_reads_it() -> None:
    s = Settings.from_url("postgresql://app@db.example/app?sslmode=require&password=a+b%26c")
    assert (s.password, s.sslmode) == ("a+b&c", "require")  # "+" is no space for libpq


def test_an_at_sign_and_a_colon_in_the_password_parse(tmp_path: Any) -> None:
    s = Settings.from_url("postgresql://app:p@ss:w@db.example:5433/app")
    assert (s.user, s.password, s.host, s.port) == ("app", "p@ss:w", "db.example", 5433)
