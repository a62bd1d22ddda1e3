"""Hash and check passwords: argon2id for new hashes; scrypt hashes of the first release verify.

One class per algorithm, as Django's ``hashers.py``: :class:`Argon2idHasher`
(argon2-cffi, the first choice of the OWASP Password Storage Cheat Sheet) and
:class:`ScryptHasher` (``hashlib.scrypt``, what release 0.1 stored).  A stored
hash names its algorithm and carries its parameters and salt::

    $argon2id$v=19$m=36864,t=2,p=1$<salt, base64>$<key, base64>   (PHC string format)
    scrypt$ln=14,r=8,p=1$<salt, base64url>$<key, base64url>         (release 0.1)

so :data:`DEFAULT_PARAMS` can be raised (or the algorithm changed) without
breaking existing hashes: :func:`verify_password` reads the algorithm and the
parameters from the hash, :func:`needs_rehash` (Django's ``must_update``)
tells when a hash was made otherwise, and
:func:`datalayer.auth.users.authenticate` then stores a fresh hash at the next
successful sign-in.

Two protections that come with reading parameters from stored data:

* a stored hash that costs more than :data:`MAX_COST_FACTOR` (4) times a
  current hash (memory times passes), or more than :data:`MAX_MEMORY_BYTES`
  of memory or :data:`MAX_PARALLELISM` lanes, is refused with
  :class:`~datalayer.errors.ValidationError` before anything is computed:
  one sign-in attempt must not cost seconds and gigabytes (an argon2 hash of
  m = 256 MiB, t = 4 took 23.6 s on a loaded machine);
* :func:`check_sign_in` gives every failed sign-in the same duration,
  whatever the account holds (Django's ``harden_runtime`` idea, made exact):
  an unknown address, a current hash, a release 0.1 scrypt hash and a
  costlier hash within the limits cannot be told apart by timing.  A
  memory-hard hash cannot be topped up with hashing work, so the answer waits
  (sleeps, computing nothing) until the time the costliest accepted hash may
  take has passed, measured in recent verifications with the current
  parameters.

Keys are compared in constant time.  Nothing here logs, and no message
contains a password or a hash.
"""

from __future__ import annotations

import abc
import base64
import binascii
import collections
import dataclasses
import hashlib
import hmac
import os
import re
import statistics
import time
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

from argon2.low_level import Type, hash_secret_raw

from ..errors import ValidationError

__all__ = [
    "DEFAULT_PARAMS",
    "MAX_COST_FACTOR",
    "MAX_MEMORY_BYTES",
    "MAX_PARALLELISM",
    "MAX_PASSWORD_LENGTH",
    "MAX_WORK_BYTES",
    "Argon2Params",
    "Argon2idHasher",
    "PasswordHasher",
    "ScryptHasher",
    "ScryptParams",
    "check_password",
    "check_sign_in",
    "dummy_verify",
    "harden_runtime",
    "hash_password",
    "identify",
    "is_password_hash",
    "needs_rehash",
    "verify_password",
]

MAX_PASSWORD_LENGTH = 1024
"""Longer passwords are refused: hashing cost grows with the input."""

_MIB = 1024 * 1024
MAX_MEMORY_BYTES = 256 * _MIB
"""A stored hash that needs more memory than this is refused, never computed."""
MAX_WORK_BYTES = 1024 * _MIB
"""Memory times passes (argon2 ``m * t``, scrypt ``2 * 128 * r * n * p``): a ceiling on time.

The bound that counts for stored hashes is :data:`MAX_COST_FACTOR`, relative to the
current parameters; this one only caps what :data:`DEFAULT_PARAMS` may be set to."""
MAX_COST_FACTOR = 4
"""A stored hash may cost at most this many times a hash made with :data:`DEFAULT_PARAMS`
(memory times passes: release 0.1's scrypt hash costs less than half the default's).

A costlier one is refused without being computed.  Every failed sign-in takes the time
such a hash could take (see :func:`check_sign_in`), so the factor is also what a refusal
costs in waiting (not in computing)."""

_SALT_BYTES = 16
_KEY_BYTES = 32


@dataclasses.dataclass(frozen=True)
class Argon2Params:
    """The argon2id cost: ``time_cost`` passes over ``memory_cost`` KiB, ``parallelism`` lanes.

    The default (m = 36 MiB, t = 2, p = 1) is above the OWASP minimum
    (m = 19 MiB, t = 2, p = 1) and takes about 50 ms on the 2-core machine
    the project is developed on (``python -m benchmarks passwords``).
    """

    time_cost: int = 2
    memory_cost: int = 36864
    parallelism: int = 1

    def __post_init__(self) -> None:
        if not (self.time_cost >= 1 and self.parallelism >= 1
                and self.memory_cost >= 8 * self.parallelism):
            raise ValueError("argon2 parameters out of range: need time_cost >= 1, "
                             "parallelism >= 1, memory_cost >= 8 * parallelism (KiB)")

    @property
    def memory_bytes(self) -> int:
        return self.memory_cost * 1024

    @property
    def work_bytes(self) -> int:
        return self.memory_bytes * self.time_cost

    def encode(self) -> str:
        return f"m={self.memory_cost},t={self.time_cost},p={self.parallelism}"


@dataclasses.dataclass(frozen=True)
class ScryptParams:
    """The scrypt cost: ``n = 2**ln`` (CPU and memory), block size ``r``, parallelism ``p``.

    Memory per hash is about ``128 * r * 2**ln`` bytes (16 MiB for release
    0.1's ``ln=14, r=8, p=1``, which is below the OWASP minimum of ``ln=17``).
    """

    ln: int = 14
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if min(self.ln, self.r, self.p) < 1:
            raise ValueError("scrypt parameters out of range: need ln, r and p >= 1")

    @property
    def memory_bytes(self) -> int:
        return 128 * self.r * (1 << self.ln)

    @property
    def work_bytes(self) -> int:
        # scrypt fills its memory once and reads it back once: two passes per lane.
        return 2 * self.memory_bytes * self.p

    @property
    def maxmem(self) -> int:
        """Return the memory limit to pass to OpenSSL (what the parameters need, plus slack)."""
        return 128 * self.r * ((1 << self.ln) + self.p + 2) + 1024 * 1024

    def encode(self) -> str:
        return f"ln={self.ln},r={self.r},p={self.p}"


Params = Argon2Params | ScryptParams
P = TypeVar("P", Argon2Params, ScryptParams)
T = TypeVar("T")

DEFAULT_PARAMS: Params = Argon2Params()
"""Parameters (and so the algorithm) of new hashes.  Assign other ones to raise the
cost; old hashes keep working and are replaced at the next sign-in."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _std_b64(data: bytes) -> str:
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def _std_unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _mib(n: int) -> str:
    if n >= 1024 * _MIB:
        return f"{n / (1024 * _MIB):.4g} GiB"
    return f"{n / _MIB:.4g} MiB"


MAX_PARALLELISM = 16
"""Lanes (argon2 ``p``) or sequential passes (scrypt ``p``) beyond this are refused."""


def _cost_problem(params: Params) -> str | None:
    """Return why ``params`` are too costly to compute, or None (no allocation, no hashing)."""
    lanes = params.parallelism if isinstance(params, Argon2Params) else params.p
    if lanes > MAX_PARALLELISM:
        return f"asks for p={lanes}, more than the limit of {MAX_PARALLELISM}"
    if params.memory_bytes > MAX_MEMORY_BYTES:
        return (f"needs {_mib(params.memory_bytes)} of memory, more than the limit of "
                f"{_mib(MAX_MEMORY_BYTES)}")
    if params.work_bytes > MAX_WORK_BYTES:
        return (f"needs {_mib(params.work_bytes)} of memory passes, more than the limit of "
                f"{_mib(MAX_WORK_BYTES)}")
    limit = MAX_COST_FACTOR * DEFAULT_PARAMS.work_bytes
    if params.work_bytes > limit:
        return (f"needs {_mib(params.work_bytes)} of memory passes, more than "
                f"{MAX_COST_FACTOR} times a hash with the current parameters ({_mib(limit)})")
    return None


@dataclasses.dataclass(frozen=True)
class _Decoded(Generic[P]):
    params: P
    salt: bytes
    key: bytes


class PasswordHasher(abc.ABC, Generic[P]):
    """One algorithm: make, read and check its stored form (Django's ``BasePasswordHasher``)."""

    algorithm: ClassVar[str]
    params_type: ClassVar[type[Argon2Params] | type[ScryptParams]]

    @abc.abstractmethod
    def _match(self, encoded: str) -> re.Match[str] | None:
        """Return the match of ``encoded`` against this algorithm's stored form."""

    @abc.abstractmethod
    def _params(self, match: re.Match[str]) -> P:
        """Return the parameters in a matched stored form (may raise ValueError)."""

    @abc.abstractmethod
    def _decode_bytes(self, text: str) -> bytes: ...

    @abc.abstractmethod
    def _derive(self, password: bytes, salt: bytes, params: P, dklen: int) -> bytes: ...

    @abc.abstractmethod
    def _format(self, params: P, salt: bytes, key: bytes) -> str: ...

    def handles(self, encoded: object) -> bool:
        """Return True when ``encoded`` has this algorithm's stored form."""
        return isinstance(encoded, str) and self._match(encoded) is not None

    def decode(self, encoded: str) -> _Decoded[P] | None:
        """Return the parameters, salt and key of ``encoded``, or None when it is malformed."""
        match = self._match(encoded) if isinstance(encoded, str) else None
        if match is None:
            return None
        try:
            params = self._params(match)
            salt, key = self._decode_bytes(match["salt"]), self._decode_bytes(match["key"])
        except (ValueError, binascii.Error):
            return None
        if len(salt) < 8 or len(key) < 16:
            return None
        return _Decoded(params, salt, key)

    def encode(self, password: str, params: P) -> str:
        """Return a new salted hash of ``password`` (already checked by :func:`check_password`)."""
        salt = os.urandom(_SALT_BYTES)
        key = self._derive(password.encode("utf-8"), salt, params, _KEY_BYTES)
        return self._format(params, salt, key)

    def verify(self, password: str, encoded: str) -> bool:
        """Return True when ``password`` matches ``encoded``.

        :raises ValidationError: when the stored cost is beyond the limits
            (nothing is computed).
        """
        decoded = self.decode(encoded)
        if decoded is None:
            return False
        problem = _cost_problem(decoded.params)
        if problem is not None:
            raise ValidationError(
                "password_hash",
                f"the stored {self.algorithm} hash {problem}; it was refused without being "
                "computed. Set a new password for this user (a hash from hash_password())",
            )
        try:
            secret = check_password(password).encode("utf-8")
            usable = True
        except ValidationError:  # spend the time anyway: a bad password must not answer sooner
            secret, usable = b"x" * 16, False
        try:
            candidate = self._derive(secret, decoded.salt, decoded.params, len(decoded.key))
        except (ValueError, MemoryError):
            return False
        return hmac.compare_digest(candidate, decoded.key) and usable

    def must_update(self, encoded: str, params: Params) -> bool:
        """Return True when ``encoded`` was not made with ``params`` (Django's name)."""
        decoded = self.decode(encoded)
        return decoded is None or decoded.params != params

    def harden_runtime(self, password: str, encoded: str) -> None:
        """Spend the time a current hash would have cost, when ``encoded`` is not one.

        Called after a wrong password: without it an account with an older,
        cheaper hash answers faster than one with a current hash, and than an
        unknown address (Django's ``harden_runtime``).  A memory-hard hash
        cannot be topped up by its difference in cost, so one whole
        verification with the current parameters is spent.
        """
        if self.must_update(encoded, DEFAULT_PARAMS):
            dummy_verify(password)


_ARGON2_RE = re.compile(
    r"(?P<params>\$argon2id\$v=19\$m=(?P<m>\d{1,10}),t=(?P<t>\d{1,10}),p=(?P<p>\d{1,3}))"
    r"\$(?P<salt>[A-Za-z0-9+/]{11,86})\$(?P<key>[A-Za-z0-9+/]{22,86})"
)
_SCRYPT_RE = re.compile(
    r"(?P<params>scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,3}),p=(?P<p>\d{1,2}))"
    r"\$(?P<salt>[A-Za-z0-9_-]{11,64})\$(?P<key>[A-Za-z0-9_-]{22,128})"
)


class Argon2idHasher(PasswordHasher[Argon2Params]):
    """argon2id (version 19) with argon2-cffi, stored in the PHC string format."""

    algorithm = "argon2id"
    params_type = Argon2Params

    def _match(self, encoded: str) -> re.Match[str] | None:
        return _ARGON2_RE.fullmatch(encoded)

    def _params(self, match: re.Match[str]) -> Argon2Params:
        return Argon2Params(time_cost=int(match["t"]), memory_cost=int(match["m"]),
                            parallelism=int(match["p"]))

    def _decode_bytes(self, text: str) -> bytes:
        return _std_unb64(text)

    def _derive(self, password: bytes, salt: bytes, params: Argon2Params, dklen: int) -> bytes:
        return hash_secret_raw(password, salt, params.time_cost, params.memory_cost,
                               params.parallelism, dklen, Type.ID)

    def _format(self, params: Argon2Params, salt: bytes, key: bytes) -> str:
        return f"$argon2id$v=19${params.encode()}${_std_b64(salt)}${_std_b64(key)}"


class ScryptHasher(PasswordHasher[ScryptParams]):
    """scrypt with ``hashlib``: the form of release 0.1, still verified and upgraded."""

    algorithm = "scrypt"
    params_type = ScryptParams

    def _match(self, encoded: str) -> re.Match[str] | None:
        return _SCRYPT_RE.fullmatch(encoded)

    def _params(self, match: re.Match[str]) -> ScryptParams:
        return ScryptParams(int(match["ln"]), int(match["r"]), int(match["p"]))

    def _decode_bytes(self, text: str) -> bytes:
        return _unb64(text)

    def _derive(self, password: bytes, salt: bytes, params: ScryptParams, dklen: int) -> bytes:
        return hashlib.scrypt(password, salt=salt, n=1 << params.ln, r=params.r, p=params.p,
                              maxmem=params.maxmem, dklen=dklen)

    def _format(self, params: ScryptParams, salt: bytes, key: bytes) -> str:
        return f"scrypt${params.encode()}${_b64(salt)}${_b64(key)}"


_ARGON2 = Argon2idHasher()
_SCRYPT = ScryptHasher()
_HASHERS: tuple[Argon2idHasher | ScryptHasher, ...] = (_ARGON2, _SCRYPT)


def identify(stored: object) -> Argon2idHasher | ScryptHasher | None:
    """Return the hasher whose stored form ``stored`` has, or None."""
    if isinstance(stored, str):
        if stored.startswith("$argon2id$"):
            return _ARGON2 if _ARGON2.handles(stored) else None
        if stored.startswith("scrypt$"):
            return _SCRYPT if _SCRYPT.handles(stored) else None
    return None


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


def hash_password(password: str, *, params: Params | None = None) -> str:
    """Return a salted hash of ``password`` for ``users.password_hash`` (argon2id by default).

    ``params`` (default :data:`DEFAULT_PARAMS`) chooses the algorithm too: an
    :class:`Argon2Params` makes an argon2id hash, a :class:`ScryptParams` a scrypt one.

    :raises ValidationError: when the password is empty, too long or not text.
    """
    check_password(password)
    params = params or DEFAULT_PARAMS
    problem = _cost_problem(params)
    if problem is not None:
        raise ValueError(f"password hashing parameters out of bounds: {problem}")
    if isinstance(params, ScryptParams):
        return _SCRYPT.encode(password, params)
    return _ARGON2.encode(password, params)


# the parameters part of a stored form -> within the limits of _PARAMS_OK_FOR, the
# DEFAULT_PARAMS they were worked out for (keyed by the text alone: hashing a tuple holding
# the frozen dataclass ran its generated __hash__, a Python call, on every create_user)
_PARAMS_OK: dict[str, bool] = {}
_PARAMS_OK_FOR: list[Params] = [DEFAULT_PARAMS]


def _params_within_limits(hasher: Argon2idHasher | ScryptHasher, match: re.Match[str]) -> bool:
    try:
        return _cost_problem(hasher._params(match)) is None
    except ValueError:
        return False


def _hash_form(value: str) -> object | None:
    """Return a true value when ``value`` is a stored hash within the cost limits, else None.

    The form and the limits only, no base64 decoding: it runs for every row of a
    bulk import (about a microsecond: the parameters part is looked up in a cache).
    """
    if value.startswith("$argon2id$"):
        match = _ARGON2_RE.fullmatch(value)
        hasher: Argon2idHasher | ScryptHasher = _ARGON2
    elif value.startswith("scrypt$"):
        match = _SCRYPT_RE.fullmatch(value)
        hasher = _SCRYPT
    else:
        return None
    if match is None:
        return None
    key = match["params"]
    if _PARAMS_OK_FOR[0] is not DEFAULT_PARAMS:  # the limits follow the current parameters
        _PARAMS_OK.clear()
        _PARAMS_OK_FOR[0] = DEFAULT_PARAMS
    ok = _PARAMS_OK.get(key)
    if ok is None:
        ok = _params_within_limits(hasher, match)
        if len(_PARAMS_OK) > 256:  # a few parameter sets in real data; bounded anyway
            _PARAMS_OK.clear()
        _PARAMS_OK[key] = ok
    return match if ok else None


_HASH_FORM = _hash_form  # the name datalayer.auth.users' import fast path uses


def is_password_hash(value: object) -> bool:
    """Return True when ``value`` is a hash :func:`hash_password` could have made.

    Checks the form and the cost limits (it runs for every row of a bulk
    import); :func:`verify_password` checks the rest.
    """
    return type(value) is str and _hash_form(value) is not None


def verify_password(password: str, stored: str) -> bool:
    """Return True when ``password`` matches the ``stored`` hash (constant-time compare).

    A stored value that is not a hash of this module never matches.

    :raises ValidationError: when the stored hash asks for a cost beyond
        :data:`MAX_MEMORY_BYTES` / :data:`MAX_WORK_BYTES` (nothing is computed).
    """
    hasher = identify(stored)
    if hasher is None:
        return False
    return hasher.verify(password, stored)


def needs_rehash(stored: str, *, params: Params | None = None) -> bool:
    """Return True when ``stored`` was made with another algorithm or other parameters.

    ``params`` defaults to :data:`DEFAULT_PARAMS` (Django's ``must_update``).
    """
    hasher = identify(stored)
    return hasher is None or hasher.must_update(stored, params or DEFAULT_PARAMS)


def harden_runtime(password: str, stored: str) -> None:
    """After a failed check against ``stored``, spend what a current hash would have cost.

    Does nothing for a hash made with :data:`DEFAULT_PARAMS`; see
    :meth:`PasswordHasher.harden_runtime`.  This only tops up a cheaper hash
    (and then takes longer than a current one); for answers that take the
    same time whatever is stored, use :func:`check_sign_in`, as
    :func:`~datalayer.auth.users.authenticate` does.
    """
    hasher = identify(stored)
    if hasher is None:
        dummy_verify(password)
    else:
        hasher.harden_runtime(password, stored)


_dummy_hashes: dict[Params, str] = {}


def _dummy_hash() -> str:
    """Return a hash with :data:`DEFAULT_PARAMS` to verify against (made once per parameters)."""
    params = DEFAULT_PARAMS
    dummy = _dummy_hashes.get(params)
    if dummy is None:
        dummy = _dummy_hashes.setdefault(params, hash_password("x" * 16, params=params))
    return dummy


def dummy_verify(password: str) -> None:
    """Spend the time of one :func:`verify_password` with :data:`DEFAULT_PARAMS`.

    For a user that does not exist: keeps an unknown e-mail address from
    answering faster than a wrong password.
    """
    dummy = _dummy_hash()
    try:
        usable = check_password(password)
    except ValidationError:
        usable = "x" * 16  # still spend the time: a bad password must not answer sooner
    verify_password(usable, dummy)


_TIME_MARGIN = 1.25
"""Time per memory pass varies by algorithm and memory size (scrypt's is about 1.2 times
argon2id's here): the allowance for the costliest accepted hash is widened by this."""

_YARDSTICK_SAMPLES = 31
# DEFAULT_PARAMS -> the times of the latest verifications made with them (seconds).
_yardsticks: dict[Params, collections.deque[float]] = {}


def _yardstick(sample: float | None) -> float | None:
    """Record ``sample`` (a timed verification with the current parameters); return the median.

    The median of the latest :data:`_YARDSTICK_SAMPLES` verifications, from every
    sign-in of the process, whichever account: it follows the machine's load, and
    is the same for every kind of failed sign-in made at about the same time.
    """
    window = _yardsticks.get(DEFAULT_PARAMS)
    if window is None:
        window = _yardsticks.setdefault(DEFAULT_PARAMS, collections.deque(
            maxlen=_YARDSTICK_SAMPLES))
    if sample is not None:
        window.append(sample)
    samples = list(window)  # a copy: other threads append meanwhile
    return statistics.median(samples) if samples else None


def _failure_multiple() -> float:
    """Return how many current hashes' time a failed sign-in lasts.

    The most a stored hash within the limits can take: :data:`MAX_COST_FACTOR`
    current hashes, widened by :data:`_TIME_MARGIN`.
    """
    return MAX_COST_FACTOR * _TIME_MARGIN


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def check_sign_in(password: object, stored: str | None, *, active: bool = True) -> bool:
    """Return True when ``password`` matches ``stored`` and ``active``; else False, late.

    ``stored`` None means there is no such account.  Every False answer (and
    the refusal of an out-of-bounds hash) comes at the same time, whatever is
    stored: an unknown address, a current hash, a release 0.1 scrypt hash, a
    costlier hash within the limits, a deactivated account.  How: the stored
    hash is verified (a current one, or the dummy hash when there is no usable
    one, is timed), and a False answer is given when :func:`_failure_multiple`
    times the median of the process's recent timed verifications has passed
    since the start: time enough for the costliest hash accepted (the rest is
    slept, not computed).  A True answer is not delayed.

    :raises ValidationError: when ``stored`` asks for a cost beyond the limits
        (never computed; the error comes at the time of a refusal).
    """
    _dummy_hash()  # made before the clock starts (the first time of each parameters)
    started = time.perf_counter()
    hasher = identify(stored)
    decoded = hasher.decode(stored) if hasher is not None and stored is not None else None
    accepted, refused, sample = False, None, None
    secret: str = password  # type: ignore[assignment]  # verify() spends the time for any
    if hasher is None or stored is None or decoded is None:
        _, sample = _timed(lambda: dummy_verify(password))  # type: ignore[arg-type]
    elif decoded.params == DEFAULT_PARAMS:
        accepted, sample = _timed(lambda: hasher.verify(secret, stored))
    else:
        try:
            accepted = hasher.verify(secret, stored)
        except ValidationError as exc:  # out of bounds: refused, never computed
            refused = exc
    unit = _yardstick(sample)
    if accepted and active and refused is None:
        return True
    if unit is None:  # no current verification timed yet in this process
        _, sample = _timed(lambda: dummy_verify(password))  # type: ignore[arg-type]
        unit = _yardstick(sample) or 0.0
    delay = started + unit * _failure_multiple() - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    if refused is not None:
        raise refused
    return False
