"""The text of a new migration file: a header naming the operations it uses.

peewee-migrate's template lists ``migrator.rename_field`` and friends whatever
the file does, and always imports ``playhouse.postgres_ext``.  Ours lists the
operations the two bodies actually call (``m.add_fields``, ``migrator.sql``,
...) and imports ``pw_pext`` only when a body uses it.  Upstream ``pw_migrate``
runs the files unchanged.
"""

from __future__ import annotations

import re

__all__ = ["operations", "render_migration"]

_CALL_RE = re.compile(r"\b(m|migrator)\.([A-Za-z_][A-Za-z_0-9]*)\s*\(")

_FILE = '''\
"""{name}: written by `datalayer migrate diff`.

Operations it uses{where}:

    migrate:  {migrate_ops}
    rollback: {rollback_ops}
"""

{imports}

def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Apply this migration."""
    {migrate}


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Undo what migrate() did."""
    {rollback}
'''

_IMPORTS = "import peewee as pw\nfrom peewee_migrate import Migrator\n"
_IMPORTS_PEXT = (
    "from contextlib import suppress\n\n"
    f"{_IMPORTS}\n"
    "with suppress(ImportError):\n"
    "    import playhouse.postgres_ext as pw_pext\n"
)


def operations(body: str) -> list[str]:
    """Return the ``m.op`` / ``migrator.op`` calls in ``body``, once each, in order."""
    return list(dict.fromkeys(f"{obj}.{op}" for obj, op in _CALL_RE.findall(body)))


def render_migration(name: str, migrate: str = "", rollback: str = "") -> str:
    """Return the text of migration file ``name`` with these (indented) bodies."""
    both = migrate + "\n" + rollback
    return _FILE.format(
        name=name,
        where=" (m = extend(migrator): see datalayer.migrate.migrator)"
        if "extend(migrator)" in both
        else "",
        migrate_ops=", ".join(operations(migrate)) or "(none)",
        rollback_ops=", ".join(operations(rollback)) or "(none)",
        imports=_IMPORTS_PEXT if re.search(r"\bpw_pext\.", both) else _IMPORTS,
        migrate=migrate or "pass",
        rollback=rollback or "pass",
    )
