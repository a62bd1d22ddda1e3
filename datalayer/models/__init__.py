"""The models: the single source of truth for the schema.

The model conventions every application model can build on (``BaseModel``,
the field factories in :mod:`.fields`, validation in :mod:`.validation`) live
here; the auth domain's models (``User``, ``RefreshToken``) are defined in
:mod:`datalayer.auth` and re-exported, so ``datalayer.models`` stays the
module of the auth models.

``MODELS`` lists the auth tables in dependency order; the migration tooling
and the ER diagram read it when no project configures its own models.
``BaseModel`` is abstract (``__abstract__``) and never a table.
"""

from __future__ import annotations

from ..auth.refresh_token import RefreshToken
from ..auth.user import EmailField, Role, User
from .base import BaseModel
from .fields import EnumField

MODELS: tuple[type[BaseModel], ...] = (User, RefreshToken)

__all__ = ["MODELS", "BaseModel", "EmailField", "EnumField", "RefreshToken", "Role", "User"]
