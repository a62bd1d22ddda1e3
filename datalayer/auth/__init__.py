"""The auth domain built on datalayer's generic core: users and their refresh tokens.

* the ``User`` and ``RefreshToken`` models are defined in :mod:`datalayer.models`
  (:mod:`.user` and :mod:`.refresh_token` here re-export them);
* :mod:`.users`: create, look up, authenticate, deactivate, delete, import users;
* :mod:`.tokens`: issue, rotate, revoke and purge refresh tokens;
* :mod:`.passwords`: password hashing.

Everything here is built on the core (``datalayer.models.BaseModel`` and its
field factories, ``datalayer._sql`` compiled statements, ``datalayer.db``);
nothing in the core imports this package.  Public names are importable from
``datalayer`` itself.  Importing this package imports nothing.
"""
