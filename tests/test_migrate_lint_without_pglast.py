"""pglast is optional (the ``lint`` extra): without it generated migrations are linted from
the generator's facts, and hand-written SQL is reported as not analysed (issue 15, item 8).

pglast is hidden in a child process by a ``sys.meta_path`` finder that refuses it, rather
than uninstalled: the rest of the suite keeps it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from playhouse.postgres_ext import PostgresqlExtDatabase

from datalayer.migrate.autogenerate.compare import create_migration
from datalayer.migrate.lint import lint
from datalayer.migrate.runtime.files import Router
from tests.test_migrate_generate import model

BLOCK = '''
import importlib.abc, sys

class HidePglast(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pglast" or name.startswith("pglast."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None

sys.meta_path.insert(0, HidePglast())
'''

REPORT = '''
import json, sys
from datalayer.migrate.lint import lint

def statements(items):
    return [{"sql": s.sql, "lock": s.lock, "locks": s.locks, "scans": s.scans,
             "rewrites": s.rewrites, "rules": sorted(f.rule for f in s.findings),
             "messages": [f.message for f in s.findings],
             "levels": sorted({f.level for f in s.findings})} for s in items]

report = lint(sys.argv[1])
print(json.dumps({
    "ok": report.ok,
    "errors": [[n, f.rule] for n, f in report.errors + report.rollback_errors],
    "warnings": [[n, f.rule] for n, f in report.warnings],
    "migrations": {m.name: {"forward": statements(m.statements),
                            "rollback": statements(m.rollback)} for m in report.migrations},
    "pglast_loaded": "pglast" in sys.modules,
}))
'''


def child(code: str, *args: str, hide: bool = True) -> subprocess.CompletedProcess[str]:
    source = (BLOCK if hide else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", source, *args], capture_output=True,
                          text=True, timeout=300, check=False, cwd=Path(__file__).parent.parent)


def items(**extra: Any) -> list[type[pw.Model]]:
    return [model("Item", "items", id=pw.AutoField(), name=pw.CharField(max_length=20),
                  qty=pw.IntegerField(default=0), **extra)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two generated migrations (the second in the plain forms) and one hand-written."""
    create_migration(Router(PostgresqlExtDatabase(None), tmp_path), "v1", items())
    changed = items(code=pw.CharField(max_length=5, null=True, index=True))
    changed[0]._meta.fields["qty"].index = True
    create_migration(Router(PostgresqlExtDatabase(None), tmp_path), "v2", changed, unsafe=True)
    (tmp_path / "003_by_hand.py").write_text(textwrap.dedent('''
        def migrate(migrator, database, *, fake=False):
            migrator.sql('CREATE INDEX items_name ON items (name)')


        def rollback(migrator, database, *, fake=False):
            migrator.sql('DROP INDEX items_name')
    '''), encoding="utf-8")
    return tmp_path


def test_no_module_but_the_lint_parser_imports_pglast() -> None:
    """Every module imports without pglast, and none but the lint's loads it when present."""
    code = '''
        import importlib, pathlib, sys
        root = pathlib.Path("datalayer")  # walk_packages would import the packages it walks
        names = sorted(
            ".".join(p.with_suffix("").parts).removesuffix(".__init__")
            for p in root.rglob("*.py")
        )
        for name in names:
            if not name.startswith("datalayer.migrate.lint"):
                importlib.import_module(name)
        print("after-others", "pglast" in sys.modules)
        for name in names:
            importlib.import_module(name)
        print("imported", len(names))
    '''
    hidden = child(code)
    assert hidden.returncode == 0, hidden.stderr
    assert "after-others False" in hidden.stdout
    shown = child(code, hide=False)
    assert shown.returncode == 0, shown.stderr
    assert "after-others False" in shown.stdout, "a module outside the lint imports pglast"


def test_generated_migrations_are_linted_from_their_facts_without_pglast(folder: Path) -> None:
    result = child(REPORT, str(folder))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["pglast_loaded"] is False
    with_parser = lint(folder)
    # The generated files: the same locks and the same rules as the parser finds.
    for m in with_parser.migrations[:2]:
        got = data["migrations"][m.name]
        for side, expected in (("forward", m.statements), ("rollback", m.rollback)):
            assert [s["lock"] for s in got[side]] == [s.lock for s in expected], (m.name, side)
            assert [s["rules"] for s in got[side]] == [
                sorted(f.rule for f in s.findings) for s in expected], (m.name, side)
            assert [(s["scans"], s["rewrites"]) for s in got[side]] == [
                (s.scans, s.rewrites) for s in expected], (m.name, side)
    assert ["002_v2", "require-concurrent-index-creation"] in data["errors"]
    # The hand-written file: not analysed, a warning (the parser finds the error).
    hand = data["migrations"]["003_by_hand"]
    assert [s["rules"] for s in hand["forward"]] == [["sql-not-analysed"]]
    assert hand["forward"][0]["levels"] == ["warning"]
    assert hand["forward"][0]["messages"] == [
        "not analysed: install the lint extra (pip install 'peewee-datalayer[lint]')"]
    assert ["003_by_hand", "sql-not-analysed"] in data["warnings"]
    assert ["003_by_hand (rollback)", "sql-not-analysed"] in data["warnings"]
    assert not [e for e in data["errors"] if e[0].startswith("003")]
    assert ("003_by_hand", "require-concurrent-index-creation") in [
        (n, f.rule) for n, f in with_parser.errors]
    assert ("003_by_hand (rollback)", "require-concurrent-index-deletion") in [
        (n, f.rule) for n, f in with_parser.rollback_errors]


def test_the_cli_lints_without_pglast_and_says_how_to_install_it(folder: Path) -> None:
    code = '''
        import sys
        from datalayer.cli import main
        sys.argv = ["datalayer", "migrate", "lint", "--dir", sys.argv[1], "3"]
        main()
    '''
    result = child(code, str(folder))
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not an error
    assert "warning sql-not-analysed: not analysed: install the lint extra " \
           "(pip install 'peewee-datalayer[lint]')" in result.stdout
    assert "Traceback" not in result.stderr


def test_squash_says_to_install_the_extra_rather_than_calling_ddl_a_data_change() -> None:
    code = '''
        from datalayer.migrate import squash
        calls = [squash._Call("002_x", "sql", "CREATE INDEX items_name ON items (name)")]
        print(squash._data_changes(calls))
    '''
    hidden = child(code)
    assert hidden.returncode == 0, hidden.stderr
    assert "is not analysed: install the lint extra (pip install 'peewee-datalayer[lint]')" \
        in hidden.stdout
    assert "is not DDL" not in hidden.stdout
    shown = child(code, hide=False)
    assert shown.stdout.strip() == "[]"  # with the parser: DDL, nothing to refuse
