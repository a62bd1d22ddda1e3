"""The module paths the documentation names still import after migrate/ was laid out by concern."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

MOVED = {
    "datalayer.migrate.runner": "datalayer.migrate.runtime.runner",
    "datalayer.migrate.checksum": "datalayer.migrate.runtime.checksum",
    "datalayer.migrate.offline": "datalayer.migrate.runtime.offline",
    "datalayer.migrate.hints": "datalayer.migrate.autogenerate.hints",
    "datalayer.migrate.generate": "datalayer.migrate.autogenerate.api",
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
        "import datalayer.migrate.runtime.runner as face\n"
        "assert runner is face and runner.apply and runner.status and runner.rollback\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "line",
    [
        "from datalayer.migrate.generate import install_upstream",  # conf.py written before
        "from datalayer.migrate import install_upstream",  # conf.py written now
    ],
)
def test_a_committed_conf_py_keeps_working(tmp_path: Path, line: str) -> None:
    """The migrations folder's conf.py is a user's committed file: both its forms run."""
    conf = tmp_path / "conf.py"
    conf.write_text(f"{line}\n\ninstall_upstream()\n\nIGNORE = ['basemodel']\n")
    code = f"import runpy; runpy.run_path({str(conf)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
