"""peewee-migrate's configuration for this folder (``pw_migrate`` runs it; not a migration).

* ``pw_migrate create --auto NAME`` writes migrations with datalayer's
  generator and the models of ``[tool.datalayer] models`` in pyproject.toml,
  as ``datalayer migrate diff NAME`` does;
* ``IGNORE`` keeps abstract base models (``datalayer.BaseModel``) from
  becoming tables when ``--auto-source`` names a module.
"""

from datalayer.migrate.autogenerate.compare import install_upstream

install_upstream()

IGNORE = ["basemodel"]
