"""The distribution is `peewee-datalayer`; the import package and the command are `datalayer`.

The name `datalayer` on the package index belongs to an unrelated project: an
install line or a version look-up by that name would reach someone else's code.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from click.testing import CliRunner

from datalayer.cli import main

ROOT = Path(__file__).resolve().parent.parent
DIST = "peewee-datalayer"

# `pip install` lines, in any quoting: pip install 'x[embedded]', pip install "x", pip install x
INSTALL = re.compile(r"""pip install (?:-[-\w]+ )*['"]?([A-Za-z0-9_.\-]+)(\[[\w,]+\])?""")


def test_version_option_reports_the_installed_distribution() -> None:
    result = CliRunner().invoke(main, ["--version"], prog_name="datalayer")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"datalayer, version {version(DIST)}"


def _install_lines() -> list[tuple[str, str]]:
    """(file, package named) for every `pip install NAME` in the package, docs and examples."""
    found = []
    files = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("datalayer/**/*.py"),
             *ROOT.glob("examples/**/*.py"), *ROOT.glob("examples/**/*.toml")]
    for path in files:
        for match in INSTALL.finditer(path.read_text(encoding="utf-8")):
            found.append((str(path.relative_to(ROOT)), match.group(1)))
    return found


def test_every_install_line_names_the_distribution() -> None:
    lines = _install_lines()
    assert any(where == "README.md" for where, _ in lines), "README.md shows no install line"
    assert any(where.startswith("datalayer/") for where, _ in lines), "no install hint in code"
    # `pip install -e .` / `-e '.[test]'` install this checkout: also fine.
    wrong = [(where, name) for where, name in lines if name not in {DIST, "."}]
    assert not wrong, f"install lines naming another distribution than {DIST}: {wrong}"
