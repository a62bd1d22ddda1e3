"""The models: the single source of truth for the schema.

``MODELS`` lists the tables in dependency order; the migration tooling and
the ER diagram read it.  ``BaseModel`` is abstract (``__abstract__``) and never
a table.
"""

from __future__ import annotations

from .base import BaseModel
from .fields import EnumField
from .refresh_token import RefreshToken
from .user import EmailField, Role, User

MODELS: tuple[type[BaseModel], ...] = (User, RefreshToken)

__all__ = ["MODELS", "BaseModel", "EmailField", "EnumField", "RefreshToken", "Role", "User"]
