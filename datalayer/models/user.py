"""The ``users`` table."""

from __future__ import annotations

import enum
import unicodedata
from typing import Any

import peewee as pw

from .base import BaseModel
from .fields import (
    created_at_field,
    enum_field,
    timestamptz_field,
    updated_at_field,
    uuid_pk,
)
from .validation import check_visible

__all__ = ["EMAIL_MAX_LENGTH", "EmailField", "Role", "User"]

EMAIL_MAX_LENGTH = 254


class Role(enum.StrEnum):
    """What a user may do."""

    USER = "user"
    ADMIN = "admin"

    def __str__(self) -> str:
        return self.value


class EmailField(pw.CharField):
    """An e-mail address, stored NFC-normalized and lower-cased, and compared so.

    ``db_value`` normalizes every value bound to the column (inserts, updates
    and ``User.email == X`` lookups alike), and a CHECK constraint keeps rows
    written by other means lower-cased.

    * NFC: ``café`` typed with a precomposed ``é`` and with ``e`` + a combining
      accent (NFD, what some keyboards and macOS file names give) is one
      address, so one account.
    * Control and format characters (Unicode categories Cc, Cf, Zl, Zp: a
      zero-width space, a direction mark, a BOM) are refused: they make
      addresses that look alike and differ.  Blanks around the address are
      removed, as before.
    * ``lower()``, not ``casefold()``: the unique index and the CHECK
      ``email = lower(email)`` are on the stored value, and every address stored
      so far was ``lower()``-ed.  ``casefold()`` maps further (``ß`` to ``ss``,
      final sigma to sigma, lower-case Cherokee to upper-case), so an existing
      ``straße@x.test`` could no longer be found without rewriting the rows —
      and rewriting could merge two accounts that exist today — and some
      case-folded values would break the CHECK.  It would also be wrong for
      domains: IDNA 2008 keeps ``ß`` distinct from ``ss``.
    """

    @staticmethod
    def normalize(value: str) -> str:
        """Return the stored form of an address: trimmed, NFC, checked, lower-cased.

        :raises ValidationError: for a control or format character.
        """
        value = check_visible("email", unicodedata.normalize("NFC", value.strip()))
        lowered = value.lower()
        # lower() can decompose (U+0130 gives i + U+0307): NFC again.
        return lowered if lowered.isascii() else unicodedata.normalize("NFC", lowered)

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
