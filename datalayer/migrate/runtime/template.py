"""The text of a migration file whose bodies are given as text (``Router.compile``).

peewee-migrate's interface hands the router two bodies of source text; the
generator does not use it (it renders files from its steps,
:mod:`..autogenerate.render`, through the same :func:`fill_template`).  The
header names the ``m.op`` / ``migrator.op`` calls the bodies make and
``pw_pext`` is imported only when used: both read from the bodies' syntax
tree (a body that does not parse lists no operations).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

__all__ = ["NO_TRANSACTION", "fill_template", "operations", "render_migration"]

NO_TRANSACTION = (
    "# datalayer: this migration runs outside a transaction (CREATE INDEX CONCURRENTLY and\n"
    "# the like); each statement commits on its own and can run again after an interruption.\n"
    "atomic = False\n"
)

_FILE = '''\
"""{name}: written by `datalayer migrate diff`.

Operations it uses{where}:

    migrate:  {migrate_ops}
    rollback: {rollback_ops}
"""

{imports}{no_transaction}

def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Apply this migration."""
    {migrate}


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Undo what migrate() did."""
    {rollback}
'''

IMPORTS = "import peewee as pw\nfrom peewee_migrate import Migrator\n"
IMPORTS_PEXT = (
    "from contextlib import suppress\n\n"
    f"{IMPORTS}\n"
    "with suppress(ImportError):\n"
    "    import playhouse.postgres_ext as pw_pext\n"
)


def fill_template(
    name: str, migrate: str, rollback: str, *, migrate_ops: Sequence[str],
    rollback_ops: Sequence[str], extended: bool, pext: bool, atomic: bool = True,
) -> str:
    """Return datalayer's migration file ``name`` with these bodies and header facts.

    ``extended``: the bodies use ``m = extend(migrator)``; ``pext``: they name ``pw_pext``.
    """
    return _FILE.format(
        name=name,
        where=" (m = extend(migrator): see datalayer.migrate.migrator)" if extended else "",
        migrate_ops=", ".join(migrate_ops) or "(none)",
        rollback_ops=", ".join(rollback_ops) or "(none)",
        imports=IMPORTS_PEXT if pext else IMPORTS,
        no_transaction="" if atomic else "\n\n" + NO_TRANSACTION,
        migrate=migrate or "pass",
        rollback=rollback or "pass",
    )

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
