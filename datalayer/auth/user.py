"""The ``User`` model, for imports from here: it is defined in :mod:`datalayer.models.user`."""

from __future__ import annotations

from ..models.user import EMAIL_MAX_LENGTH, EmailField, Role, User

__all__ = ["EMAIL_MAX_LENGTH", "EmailField", "Role", "User"]
