"""peewee-migrate's configuration for this directory (``pw_migrate`` runs it; not a migration).

* ``pw_migrate create --auto`` writes migrations with datalayer's generator
  (server defaults, CHECKs, FK actions, index names, partial indexes,
  renames, USING casts) instead of peewee-migrate's own, which loses them;
* ``IGNORE`` keeps the abstract ``datalayer.models.BaseModel`` from becoming a
  table (peewee-migrate picks up every Model subclass it finds).
"""

from datalayer.migrate import install_upstream

install_upstream()

IGNORE = ["basemodel"]
