"""The ``refresh_tokens`` table: only a SHA-256 of each token is stored."""

from __future__ import annotations

import re

import peewee as pw

from ..errors import ValidationError
from .base import BaseModel
from .fields import created_at_field, timestamptz_field, updated_at_field, uuid_pk
from .user import User

__all__ = ["RefreshToken"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _check_token_hash(value: str) -> str:
    if not _SHA256_HEX.fullmatch(value):
        raise ValidationError(
            "token_hash",
            "must be 64 lower-case hex digits: the SHA-256 of the token, not the token",
        )
    return value


class RefreshToken(BaseModel):
    """A refresh token of a user; tokens rotated from one another share ``family_id``."""

    id = uuid_pk("refresh_tokens_id")
    user = pw.ForeignKeyField(
        User,
        column_name="users_id",
        backref="refresh_tokens",
        on_delete="CASCADE",
        index=True,
    )
    token_hash = pw.CharField(
        max_length=64,
        unique=True,
        constraints=[pw.Check("token_hash ~ '^[0-9a-f]{64}$'")],
    )
    # Checked before any SQL (datalayer.models.validation calls a field's ``normalize``),
    # so a malformed hash is a ValidationError, not a CHECK violation from the server.
    token_hash.normalize = _check_token_hash  # type: ignore[attr-defined]
    family_id = pw.UUIDField(index=True)
    expires_at = timestamptz_field(index=True)
    revoked_at = timestamptz_field(null=True)
    replaced_by = pw.ForeignKeyField(
        "self",
        column_name="replaced_by",
        null=True,
        on_delete="SET NULL",
        backref="replaces",
        index=True,
    )
    user_agent = pw.CharField(max_length=512, null=True)
    ip = pw.CharField(max_length=45, null=True)
    created_at = created_at_field()
    updated_at = updated_at_field()

    class Meta:
        table_name = "refresh_tokens"

    def __repr__(self) -> str:
        # Never the hash: it is enough to look a token up.
        return f"<RefreshToken {self._pk} family={self.family_id}>"  # type: ignore[attr-defined]

    __str__ = __repr__
