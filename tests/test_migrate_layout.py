"""The module paths the documentation names still import after migrate/ was laid out by concern."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

MOVED = {
    "datalayer.migrate.runner": "datalayer.migrate.runtime.apply",
    "datalayer.migrate.checksum": "datalayer.migrate.runtime.checksum",
    "datalayer.migrate.offline": "datalayer.migrate.runtime.offline",
    "datalayer.migrate.hints": "datalayer.migrate.autogenerate.hints",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_documented_path_is_the_module_it_moved_to(old: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_the_documented_imports_run_in_a_fresh_interpreter() -> None:
    code = (
        "from datalayer.migrate import runner\n"
        "from datalayer.migrate.checksum import verify, write_sum\n"
        "from datalayer.migrate.offline import migration_sql\n"
        "from datalayer.migrate.hints import renamed_from\n"
        "from datalayer.migrate.ops import extend\n"
        "import datalayer.migrate.runtime.apply as apply\n"
        "assert runner is apply and runner.status and runner.rollback\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
