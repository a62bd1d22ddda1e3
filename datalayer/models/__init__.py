"""The models: the single source of truth for the schema.

The model conventions every application model can build on (``BaseModel``,
the field factories in :mod:`.fields`, validation in :mod:`.validation`) live
here, and so do the auth domain's tables (``User`` in :mod:`.user`,
``RefreshToken`` in :mod:`.refresh_token`): :mod:`datalayer.auth` builds its
operations on them, and nothing here imports it.

``MODELS`` lists the auth tables in dependency order; the migration tooling
and the ER diagram read it when no project configures its own models.
``BaseModel`` is abstract (``__abstract__``) and never a table.
"""

from __future__ import annotations

from .base import BaseModel
from .fields import EnumField
from .refresh_token import RefreshToken
from .user import EmailField, Role, User

MODELS: tuple[type[BaseModel], ...] = (User, RefreshToken)

__all__ = ["MODELS", "BaseModel", "EmailField", "EnumField", "RefreshToken", "Role", "User"]
