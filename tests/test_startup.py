"""What a small script pays for: importing datalayer loads only what the script uses."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ENV_PREFIXES
from tests.pgserver import Server

SCRIPT = """
import json, sys
import datalayer
datalayer.connect()
try:
    datalayer.get_user_by_email("nobody@example.com")
except datalayer.NotFound:
    pass
print(json.dumps(sorted(sys.modules)))
"""

NOT_FOR_A_LOOKUP = (
    "psycopg",  # psycopg 3: peewee 4 would import it only to offer it as a driver
    "peewee_migrate",
    "click",
    "datalayer.migrate",
    "datalayer.cli",
    "datalayer.erd",
    "datalayer.embedded",
    "datalayer.auth.passwords",  # a lookup hashes nothing
    "datalayer.replicas",  # no DB_REPLICA_URLS: the routing is not even imported
    "argon2",
    "datalayer.project",  # reading settings needs only datalayer._pyproject
)


def test_a_lookup_script_imports_nothing_it_does_not_use(pg: Server, template_db: str) -> None:
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg 3 is not installed (it is in the test extra)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    env["DATABASE_URL"] = pg.settings(template_db).url(masked=False)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = sorted(m for m in modules if m.split(".")[0] in {"psycopg"} or any(
        m == name or m.startswith(name + ".") for name in NOT_FOR_A_LOOKUP))
    assert loaded == []


def test_the_application_can_still_import_psycopg3_itself() -> None:
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg 3 is not installed")
    code = "import datalayer, peewee, psycopg; print(psycopg.__version__, peewee.psycopg2 != None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip().endswith("True")
