"""The text of a migration file whose bodies are given as text (``Router.compile``).

peewee-migrate's interface hands the router two bodies of source text; the
generator does not use it (it renders files from its steps,
:mod:`.autogenerate.render`).  The header names the ``m.op`` /
``migrator.op`` calls the bodies make and ``pw_pext`` is imported only when
used: both read from the bodies' syntax tree (a body that does not parse
lists no operations).
"""

from __future__ import annotations

import ast

from ..autogenerate.render import fill_template

__all__ = ["operations", "render_migration"]

_OBJECTS = ("m", "migrator")


def _tree(body: str) -> ast.Module | None:
    try:
        return ast.parse("def migrate():\n    " + body)  # as the template indents it
    except SyntaxError:
        return None


def operations(body: str) -> list[str]:
    """Return the ``m.op`` / ``migrator.op`` calls in ``body``, once each, in order."""
    tree = _tree(body)
    if tree is None:
        return []
    found = sorted(
        (node.func.lineno, node.func.col_offset, f"{node.func.value.id}.{node.func.attr}")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name) and node.func.value.id in _OBJECTS
    )
    return list(dict.fromkeys(name for _, _, name in found))


def _names(body: str) -> set[str]:
    tree = _tree(body)
    return set() if tree is None else {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def render_migration(name: str, migrate: str = "", rollback: str = "") -> str:
    """Return the text of migration file ``name`` with these (indented) bodies."""
    both = _names(migrate) | _names(rollback)
    return fill_template(
        name, migrate, rollback,
        migrate_ops=operations(migrate), rollback_ops=operations(rollback),
        extended="extend" in both and "migrator" in both,
        pext="pw_pext" in both,
    )
