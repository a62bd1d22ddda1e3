"""How the tests pick their server: the session header says which, and embedded can be forced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pgserver import Server, choice

ROOT = Path(__file__).resolve().parent.parent


def _header(test_database_url: str | None) -> str:
    # TEST_REPLICA=1 (a standby for the whole suite) wins over TEST_DATABASE_URL: not here.
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "TEST_REPLICA")}
    if test_database_url is not None:
        env["TEST_DATABASE_URL"] = test_database_url
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider",
         "tests/test_pgserver.py::test_choice_follows_the_variable"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    ).stdout
    return next(line for line in out.splitlines() if line.startswith("datalayer:"))


def test_the_session_header_says_which_server() -> None:
    assert _header("embedded") == (
        "datalayer: the tests use an embedded server in a temporary directory "
        "(TEST_DATABASE_URL=embedded)"
    )
    secret = "hdr-sentinel-pw"
    line = _header(f"postgresql://app:{secret}@db.example:6543/x")
    assert line == "datalayer: the tests use TEST_DATABASE_URL postgresql://app:***@db.example:6543/x"
    assert secret not in line
    local = _header(None)
    assert local in (
        "datalayer: the tests use the server on 127.0.0.1:5432 (user postgres)",
        "datalayer: the tests use an embedded server in a temporary directory "
        "(nothing answers on 127.0.0.1:5432)",
    )


def test_choice_follows_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_REPLICA", raising=False)
    monkeypatch.setenv("TEST_DATABASE_URL", "embedded")
    assert choice()[1] is None
    monkeypatch.setenv("TEST_DATABASE_URL", "postgresql://u@h:1/d")
    assert choice() == ("TEST_DATABASE_URL postgresql://u@h:1/d", "postgresql://u@h:1/d")
    monkeypatch.setenv("TEST_DATABASE_URL", "postgresql://u:pw@[bad")
    assert "pw" not in choice()[0]


@pytest.mark.slow
def test_embedded_can_be_forced_and_leaves_no_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_REPLICA", raising=False)
    monkeypatch.setenv("TEST_DATABASE_URL", "embedded")
    server = Server()
    try:
        assert server.embedded_dir is not None
        assert server.admin.port != 5432 or server.admin.host != "127.0.0.1"
        assert server.kind.startswith("an embedded server in a temporary directory")
        with server.database("dlforced") as name:
            conn = server.raw(name)
            conn.close()
    finally:
        server.stop()
    assert not server.embedded_dir.parent.exists(), "the temporary directory is removed"
