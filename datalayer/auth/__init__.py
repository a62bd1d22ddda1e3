"""The auth domain built on datalayer's generic core: users and their refresh tokens.

* :mod:`.user`, :mod:`.refresh_token`: the ``User`` and ``RefreshToken`` models
  (re-exported by :mod:`datalayer.models`, which stays their public module);
* :mod:`.users`: create, look up, authenticate, deactivate, delete, import users;
* :mod:`.tokens`: issue, rotate, revoke and purge refresh tokens;
* :mod:`.passwords`: password hashing.

Everything here is built on the core (``datalayer.models.BaseModel`` and its
field factories, ``datalayer._sql`` compiled statements, ``datalayer.db``);
nothing in the core imports this package except ``datalayer.models``, for the
models.  Public names are importable from ``datalayer`` itself.  Importing
this package imports nothing.
"""
