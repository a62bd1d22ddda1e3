"""Hash and check passwords with the standard library's scrypt.

A stored hash carries its own parameters and salt::

    scrypt$ln=14,r=8,p=1$<salt, base64>$<key, base64>

so :data:`DEFAULT_PARAMS` can be raised later without breaking existing
hashes: :func:`verify_password` reads the parameters from the hash, and
:func:`needs_rehash` tells when a hash was made with other ones
(:func:`datalayer.auth.users.authenticate` then stores a fresh hash on the next
successful sign-in).  Keys are compared in constant time.

Nothing here logs, and no message contains a password or a hash.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import os
import re

from ..errors import ValidationError

__all__ = [
    "DEFAULT_PARAMS",
    "MAX_PASSWORD_LENGTH",
    "ScryptParams",
    "check_password",
    "hash_password",
    "is_password_hash",
    "needs_rehash",
    "verify_password",
]

MAX_PASSWORD_LENGTH = 1024
"""Longer passwords are refused: hashing cost grows with the input."""

_PREFIX = "scrypt"
_SALT_BYTES = 16
_KEY_BYTES = 32
_HASH_FORM = re.compile(
    r"scrypt\$ln=\d{1,2},r=\d{1,3},p=\d{1,2}\$[A-Za-z0-9_-]{16,64}\$[A-Za-z0-9_-]{16,128}"
).fullmatch
_HASH_RE = re.compile(
    r"^scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,2})\$([A-Za-z0-9_-]{16,64})\$([A-Za-z0-9_-]{16,128})$"
)


@dataclasses.dataclass(frozen=True)
class ScryptParams:
    """The scrypt cost: ``n = 2**ln`` (CPU and memory), block size ``r``, parallelism ``p``.

    Memory per hash is about ``128 * r * 2**ln`` bytes (16 MiB for the default).
    """

    ln: int = 14
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.ln <= 30 and 1 <= self.r <= 255 and 1 <= self.p <= 16):
            raise ValueError("scrypt parameters out of range: need 1 <= ln <= 30, 1 <= r <= 255, "
                             "1 <= p <= 16")

    @property
    def maxmem(self) -> int:
        """Return the memory limit to pass to OpenSSL (what the parameters need, plus slack)."""
        return 128 * self.r * ((1 << self.ln) + self.p + 2) + 1024 * 1024

    def encode(self) -> str:
        return f"ln={self.ln},r={self.r},p={self.p}"


DEFAULT_PARAMS = ScryptParams()
"""Parameters for new hashes (Django's scrypt defaults).  Assign a new
:class:`ScryptParams` to raise the cost; old hashes keep working and are
upgraded on the next sign-in."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_password(password: object) -> str:
    """Return ``password`` if it can be hashed; raise :class:`ValidationError` otherwise.

    The message never contains the password.
    """
    if not isinstance(password, str):
        raise ValidationError("password", f"must be text, not {type(password).__name__}")
    if not password:
        raise ValidationError("password", "must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError(
            "password", f"is longer than {MAX_PASSWORD_LENGTH} characters; use a shorter one"
        )
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "password", "contains characters that are not valid Unicode (lone surrogates)"
        ) from None
    return password


def _derive(password: str, salt: bytes, params: ScryptParams, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=1 << params.ln,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=dklen,
    )


def hash_password(password: str, *, params: ScryptParams | None = None) -> str:
    """Return a salted scrypt hash of ``password`` for storing in ``users.password_hash``.

    :raises ValidationError: when the password is empty, too long or not text.
    """
    check_password(password)
    params = params or DEFAULT_PARAMS
    salt = os.urandom(_SALT_BYTES)
    key = _derive(password, salt, params, _KEY_BYTES)
    return f"{_PREFIX}${params.encode()}${_b64(salt)}${_b64(key)}"


def _parse(stored: str) -> tuple[ScryptParams, bytes, bytes] | None:
    match = _HASH_RE.match(stored) if isinstance(stored, str) else None
    if match is None:
        return None
    try:
        params = ScryptParams(int(match[1]), int(match[2]), int(match[3]))
        return params, _unb64(match[4]), _unb64(match[5])
    except (ValueError, binascii.Error):
        return None


def is_password_hash(value: object) -> bool:
    """Return True when ``value`` has the form of a hash made by :func:`hash_password`.

    Checks the form only (it runs for every row of a bulk import): prefix,
    parameters, and two base64 parts; :func:`verify_password` checks the rest.
    """
    return type(value) is str and _HASH_FORM(value) is not None


def verify_password(password: str, stored: str) -> bool:
    """Return True when ``password`` matches the ``stored`` hash (constant-time compare).

    A stored value that is not a hash of this module never matches.
    """
    parsed = _parse(stored)
    if parsed is None or not isinstance(password, str) or not password:
        return False
    params, salt, key = parsed
    try:
        candidate = _derive(password, salt, params, len(key))
    except (ValueError, UnicodeEncodeError, MemoryError):
        return False
    return hmac.compare_digest(candidate, key)


def needs_rehash(stored: str, *, params: ScryptParams | None = None) -> bool:
    """Return True when ``stored`` was made with other parameters than ``params``.

    ``params`` defaults to :data:`DEFAULT_PARAMS`.
    """
    parsed = _parse(stored)
    return parsed is None or parsed[0] != (params or DEFAULT_PARAMS)


_dummy_hashes: dict[ScryptParams, str] = {}


def dummy_verify(password: str) -> None:
    """Spend the time of one :func:`verify_password`, for a user that does not exist.

    Keeps an unknown e-mail address from answering faster than a wrong password.
    """
    params = DEFAULT_PARAMS
    dummy = _dummy_hashes.get(params)
    if dummy is None:
        dummy = _dummy_hashes.setdefault(params, hash_password("x" * 16, params=params))
    usable = isinstance(password, str) and 0 < len(password) <= MAX_PASSWORD_LENGTH
    verify_password(password if usable else "x" * 16, dummy)
