"""Nothing in datalayer replaces an attribute of peewee's or peewee-migrate's (issue 15 item 3).

``pw_migrate create --auto`` writes migrations with datalayer's generator
because ``conf.py`` calls ``install_upstream()``; that must work without
replacing ``peewee_migrate.router.Router.create`` (or anything else of
peewee / peewee-migrate) in the process.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.pgserver import Server

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "datalayer"
FOREIGN = ("peewee", "peewee_migrate", "playhouse")

# Runs in a fresh interpreter, so a patch left behind cannot leak into other tests.
_SCRIPT = r'''
import json, runpy, sys
from pathlib import Path

import peewee, peewee_migrate, peewee_migrate.cli as cli, peewee_migrate.router as router
from click.testing import CliRunner

directory, url = Path(sys.argv[1]), sys.argv[2]
watched = {
    "peewee": peewee, "peewee.Database": peewee.Database, "peewee.Model": peewee.Model,
    "peewee_migrate": peewee_migrate, "peewee_migrate.cli": cli,
    "peewee_migrate.router": router, "Router": router.Router, "BaseRouter": router.BaseRouter,
}
before = {key: dict(vars(obj)) for key, obj in watched.items()}
original_create = router.Router.create


def changed():
    out = []
    for key, obj in watched.items():
        now = vars(obj)
        for attr in set(before[key]) | set(now):
            if before[key].get(attr, None) is not now.get(attr, None):
                out.append(f"{key}.{attr}")
    return sorted(out)


report = {}
runpy.run_path(str(directory / "conf.py"))  # as a plain import of conf.py would
report["after_conf"] = changed()


def run(*args):
    result = CliRunner().invoke(cli.cli, [*args, "--directory", str(directory), "--database", url])
    return result.exit_code


source = ["--auto", "--auto-source", "datalayer.models"]
report["initial"] = run("create", *source, "initial")
report["again"] = run("create", *source, "again")
report["bad_name"] = run("create", *source, "bad-name")
report["plain"] = run("create", "plain")
report["after_cli"] = changed()
report["create_is_upstream"] = router.Router.create is original_create
report["files"] = sorted(p.name for p in directory.glob("*.py"))
print(json.dumps(report))
'''


def test_pw_migrate_create_auto_leaves_router_create_alone(pg: Server, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    shutil.copy(ROOT / "migrations" / "conf.py", directory / "conf.py")
    with pg.database("dlnopatch") as name:
        url = pg.settings(name).url(masked=False)
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(directory), url],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["after_conf"] == [], "conf.py replaced attributes of peewee / peewee-migrate"
    # datalayer's generator wrote the file, then found nothing more; a bad name is exit 1;
    # a create without --auto is upstream's own (an empty migration).
    assert (report["initial"], report["again"], report["bad_name"], report["plain"]) == (
        0, 0, 1, 0
    ), report
    assert report["files"] == ["001_initial.py", "002_plain.py", "conf.py"], report
    assert "base_model" not in (directory / "001_initial.py").read_text()
    assert report["after_cli"] == [], "pw_migrate create --auto replaced attributes"
    assert report["create_is_upstream"] is True


def _foreign_names(tree: ast.AST) -> set[str]:
    """Names a module binds to peewee / peewee-migrate / playhouse modules or their members."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FOREIGN:
                    names.add(alias.asname or alias.name.split(".")[0])
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] in FOREIGN
        ):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _patches(source: str, label: str) -> list[str]:
    tree = ast.parse(source, label)
    foreign = _foreign_names(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr")
            and node.args
            and _root(node.args[0]) in foreign
        ):
            found.append(f"{label}:{node.lineno}: {node.func.id}")
        while targets:
            target = targets.pop()
            if isinstance(target, (ast.Tuple, ast.List)):
                targets.extend(target.elts)
            elif isinstance(target, ast.Starred):
                targets.append(target.value)
            elif isinstance(target, ast.Attribute) and _root(target) in foreign:
                found.append(f"{label}:{node.lineno}: {ast.unparse(target)}")
    return sorted(found, key=lambda hit: int(hit.split(":")[1]))


def test_no_module_assigns_to_peewee_or_peewee_migrate() -> None:
    found = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        for hit in _patches(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert found == []


def test_the_check_finds_each_form_of_patch() -> None:
    sample = (
        "import peewee as pw\n"
        "def f(x):\n"
        "    from peewee_migrate import router as upstream\n"
        "    from peewee_migrate.router import Router\n"
        "    upstream.Router.create = x\n"
        "    Router.run += x\n"
        "    setattr(pw.Database, 'execute_sql', x)\n"
        "    del pw.Model.select\n"
        "    own = object()\n"
        "    own.attr = x\n"
    )
    assert [hit.split(": ", 1)[1] for hit in _patches(sample, "sample.py")] == [
        "upstream.Router.create", "Router.run", "setattr", "pw.Model.select",
    ]
