"""The files a new migrations folder gets besides the migrations: ``conf.py``.

peewee-migrate runs ``conf.py`` of the folder before each ``pw_migrate``
command; ours makes ``pw_migrate create --auto`` write migrations with
datalayer's generator and the project's models, so both tools agree.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONF_FILE", "CONF_SOURCE", "ensure_conf"]

CONF_FILE = "conf.py"

CONF_SOURCE = '''\
"""peewee-migrate's configuration for this folder (``pw_migrate`` runs it; not a migration).

* ``pw_migrate create --auto NAME`` writes migrations with datalayer's
  generator and the models of ``[tool.datalayer] models`` in pyproject.toml,
  as ``datalayer migrate diff NAME`` does;
* ``IGNORE`` keeps abstract base models (``datalayer.BaseModel``) from
  becoming tables when ``--auto-source`` names a module.
"""

from datalayer.migrate import install_upstream

install_upstream()

IGNORE = ["basemodel"]
'''


def ensure_conf(directory: str | Path) -> Path | None:
    """Write ``conf.py`` into ``directory`` unless one exists; return its path if written."""
    path = Path(directory) / CONF_FILE
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONF_SOURCE, encoding="utf-8", newline="\n")
    return path
