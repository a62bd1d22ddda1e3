"""``RefreshToken``, for imports from here: it is defined in :mod:`datalayer.models`."""

from __future__ import annotations

from ..models.refresh_token import RefreshToken

__all__ = ["RefreshToken"]
