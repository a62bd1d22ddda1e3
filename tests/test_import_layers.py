"""The package's modules import each other in one direction only (issue 15).

Every import counts, also one deferred into a function or made only for type
checking: a deferred import still ties two modules both ways.  Read from the
source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "datalayer"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = node.module or ""
                base = (f"{base}.{module}" if base and module else base or module) if node.level \
                    else module
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reaches(graph: dict[str, set[str]], start: str, prefix: str) -> list[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return sorted(m for m in seen if m == prefix or m.startswith(prefix + "."))


def test_no_import_cycle_in_the_core() -> None:
    graph = _graph()
    core = {m: {w for w in ws if not w.startswith("datalayer.migrate")}
            for m, ws in graph.items() if not m.startswith("datalayer.migrate")}
    assert _cycles(core) == []


def test_the_lower_layers_do_not_import_the_higher_ones() -> None:
    graph = _graph()
    assert _reaches(graph, "datalayer._sql", "datalayer.db") == []
    assert _reaches(graph, "datalayer._sql", "datalayer.models") == []
    assert _reaches(graph, "datalayer._outcome", "datalayer.db") == []
    assert _reaches(graph, "datalayer.replicas", "datalayer.db") == []
    assert _reaches(graph, "datalayer.models", "datalayer.auth") == []
    assert _reaches(graph, "datalayer.project", "datalayer.migrate") == []
