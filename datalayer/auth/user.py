"""The ``users`` table."""

from __future__ import annotations

import enum
from typing import Any

import peewee as pw

from ..models.base import BaseModel
from ..models.fields import (
    created_at_field,
    enum_field,
    timestamptz_field,
    updated_at_field,
    uuid_pk,
)

__all__ = ["EMAIL_MAX_LENGTH", "EmailField", "Role", "User"]

EMAIL_MAX_LENGTH = 254


class Role(enum.StrEnum):
    """What a user may do."""

    USER = "user"
    ADMIN = "admin"

    def __str__(self) -> str:
        return self.value


class EmailField(pw.CharField):
    """An e-mail address, stored lower-cased and compared lower-cased.

    ``db_value`` lower-cases every value bound to the column (inserts, updates
    and ``User.email == X`` lookups alike), and a CHECK constraint keeps rows
    written by other means in the same form.
    """

    @staticmethod
    def normalize(value: str) -> str:
        """Return the stored form of an address: surrounding blanks removed, lower-cased."""
        return value.strip().lower()

    def db_value(self, value: Any) -> Any:
        if isinstance(value, str):
            value = self.normalize(value)
        return super().db_value(value)  # type: ignore[no-untyped-call]


class User(BaseModel):
    """A person who can sign in."""

    id = uuid_pk("users_id")
    email = EmailField(
        max_length=EMAIL_MAX_LENGTH,
        unique=True,
        constraints=[pw.Check("email = lower(email)")],
    )
    password_hash = pw.CharField(max_length=255)
    display_name = pw.CharField(max_length=100, null=True)
    role = enum_field(Role, "role", default=Role.USER, constraints=[pw.SQL("DEFAULT 'user'")])
    is_active = pw.BooleanField(default=True, constraints=[pw.SQL("DEFAULT true")])
    last_login_at = timestamptz_field(null=True)
    created_at = created_at_field()
    updated_at = updated_at_field()

    class Meta:
        table_name = "users"

    def __repr__(self) -> str:
        return f"<User {self._pk} role={self.role}>"  # type: ignore[attr-defined]

    __str__ = __repr__
