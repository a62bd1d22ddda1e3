"""The Makefile's own logic: `make tox` finds every interpreter, `make migrate-status` says 3."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datalayer.config import Settings
from tests.migrate_runtime_support import cli_env, make_tables

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
         ) -> subprocess.CompletedProcess[str]:
    argv = [shutil.which("make") or "make", "-f", str(ROOT / "Makefile"), *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_make_tox_passes_every_interpreter_to_one_discover(tmp_path: Path) -> None:
    pythons = []
    for version in ("3.11.7", "3.12.1", "3.13.0"):
        exe = tmp_path / ".pyenv" / "versions" / version / "bin" / "python3"
        exe.parent.mkdir(parents=True)
        exe.touch()
        pythons.append(str(exe))
    result = make("-n", "tox", env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("tox "))
    assert line.count("--discover") == 1, "tox 4 keeps only the last --discover"
    assert line == "tox --discover " + " ".join(pythons)


def test_make_tox_without_tox_says_what_to_install(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to(shutil.which("sh") or "/bin/sh")
    result = make("tox", env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "tox is not installed: run pip install -e '.[dev]'" in result.stderr
    assert "No such file or directory" not in result.stderr


def test_make_migrate_status_reports_the_commands_exit_status(
    empty_db: Settings, tmp_path: Path
) -> None:
    mdir = tmp_path / "migrations"
    make_tables(mdir, 1)
    env = cli_env(empty_db, mdir)
    datalayer = f"{sys.executable} -c 'from datalayer.cli import run; run()'"
    result = make("migrate-status", f"DATALAYER={datalayer}", env=env, cwd=tmp_path)
    assert "[ ] 001_create_t1  pending" in result.stdout
    assert "datalayer migrate status exited 3: not up to date" in result.stderr
    assert result.returncode == 2, "make's own code for a failed recipe (documented)"


@pytest.mark.parametrize(("target", "tool"), [("lint", "ruff"), ("type", "mypy"), ("tox", "tox")])
def test_make_without_the_tool_says_what_to_install(tmp_path: Path, target: str, tool: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to(shutil.which("sh") or "/bin/sh")
    result = make(target, env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert result.returncode != 0
    assert f"{tool} is not installed: run pip install -e '.[dev]'" in result.stderr
    assert "No such file or directory" not in result.stderr
