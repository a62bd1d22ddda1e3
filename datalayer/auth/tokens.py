"""Refresh tokens: issue, rotate, revoke, purge.

A refresh token is an opaque random string (``secrets.token_urlsafe``) handed
to the client once; only its SHA-256 (hex) is stored.  Rotating a token
revokes it and issues the next one in the same *family*.  Presenting a token
that was already rotated or revoked is treated as theft: every token of its
family is revoked and :class:`~datalayer.errors.TokenReuseError` is raised,
so both the thief and the rightful client must sign in again.

    issued = datalayer.issue_token(user, user_agent=ua, ip=addr)
    send_to_client(issued.token)                 # the only time the raw token exists
    issued = datalayer.rotate_token(token_from_client)

Rotation is a single statement (``UPDATE ... WHERE revoked_at IS NULL``
feeding an ``INSERT`` of the successor), so of several callers rotating the
same token at once exactly one gets the successor; the others find the token
revoked and get ``TokenReuseError``.

Revocation wins every race with rotation.  Under READ COMMITTED a revoking
``UPDATE`` does not see a successor that a rotation in flight commits after
the ``UPDATE`` began, so both sides take a lock on the *user's row*:

* rotation (and issuing) takes ``FOR SHARE`` on it inside its one statement,
  before it touches the token (rotations of one user do not block each other);
* every revocation (:func:`revoke_token`, :func:`revoke_all_for_user`, the
  revocation of a family on reuse, :func:`~datalayer.auth.users.deactivate_user`)
  is a transaction that first takes ``FOR NO KEY UPDATE`` on it, which waits for
  the rotations in flight to commit, and only then revokes, in a second
  statement whose snapshot sees their successors.  A rotation that comes later
  waits for the revocation to commit and then finds its token revoked.

A family has at most one live token (its newest): revoking any token of a
family, current or already rotated, revokes the family's live token with it.

A reply lost to a broken connection never turns into a wrong answer: rotation
and issue look their token up by the hash they made, revocations ask the
server whether their transaction committed (:mod:`datalayer._outcome`).

Call :func:`rotate_token` outside transactions of your own: the revocation of
a reused token's family is written with the caller's transaction, and an
exception that rolls that transaction back rolls the revocation back too.
"""

from __future__ import annotations

import binascii
import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import os
import uuid
from typing import TYPE_CHECKING, Any, NoReturn

import peewee as pw

from .._outcome import own_transaction, single_write
from .._sql import _COUNT, _ONE, Param, Statement, _on_checkout, execute, fetchone
from ..errors import (
    AuthenticationError,
    CommitUnknown,
    NotFound,
    TokenReuseError,
    ValidationError,
)
from ..models.refresh_token import RefreshToken
from ..models.user import User
from ..models.validation import check_text, normalize_ip
from .users import _database as users_database
from .users import _user_id

if TYPE_CHECKING:
    from ..db import Database

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TTL",
    "IssuedToken",
    "issue_token",
    "purge_expired",
    "revoke_all_for_user",
    "revoke_token",
    "rotate_token",
]

DEFAULT_TTL = dt.timedelta(days=30)
"""How long a refresh token stays valid unless ``ttl=`` says otherwise."""

_TOKEN_BYTES = 32
_UUID = uuid.UUID
_MAX_TOKEN_LENGTH = 512
_USER_AGENT_MAX = 512

RT = RefreshToken


def _statement_time() -> pw.Function:
    """Return the server's time for expiry checks: when the statement started.

    ``now()`` is when the *transaction* started, which inside a long
    transaction would let a token live on past its expiry.
    """
    return pw.fn.statement_timestamp()


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just issued: ``token`` is the raw value, shown here and nowhere else.

    Hand ``token`` to the client; it cannot be recovered later.  The repr
    leaves it out.
    """

    token: str = dataclasses.field(repr=False)
    id: uuid.UUID
    user_id: uuid.UUID
    family_id: uuid.UUID
    expires_at: dt.datetime


_new_object = object.__new__
_SET_ISSUED = tuple(getattr(IssuedToken, f.name).__set__ for f in dataclasses.fields(IssuedToken))


def _issued(token: str, token_id: uuid.UUID, user_id: uuid.UUID, family_id: uuid.UUID,
            expires_at: dt.datetime) -> IssuedToken:
    """Return ``IssuedToken(token, token_id, ...)``, made as its ``__init__`` makes it.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``
    from Python; the slots' own setters do the same in C (every issue and rotation
    makes one).
    """
    issued = _new_object(IssuedToken)
    s_token, s_id, s_user, s_family, s_expires = _SET_ISSUED
    s_token(issued, token)
    s_id(issued, token_id)
    s_user(issued, user_id)
    s_family(issued, family_id)
    s_expires(issued, expires_at)
    return issued


# -- the queries, built from the models once -----------------------------------


@functools.cache
def _insert() -> Statement:
    # INSERT ... SELECT ... WHERE the user exists and is active: an inactive or
    # deleted user gets no row, and no error that would abort the caller's transaction.
    # FOR SHARE: a deactivation in flight is waited for (see the module's docstring).
    active_user = (
        User.select(pw.SQL("1"))
        .where((User.id == Param("user_id")) & User.is_active)
        .for_update("FOR SHARE")  # type: ignore[arg-type]  # the stubs: bool only
    )
    source = pw.Select(
        columns=[
            Param("id"),
            Param("user_id"),
            Param("token_hash"),
            Param("family_id"),
            Param("expires_at"),
            Param("user_agent"),
            Param("ip"),
        ]
    ).where(pw.fn.EXISTS(active_user))
    # No RETURNING: every value is the caller's, and the row count says whether it went in.
    query = RT.insert_from(
        source,
        fields=[RT.id, RT.user, RT.token_hash, RT.family_id, RT.expires_at, RT.user_agent, RT.ip],
    ).returning()  # none: peewee returns the primary key by default
    stmt = Statement(query)
    # issue_token() passes the values in this order, unconverted (user_id twice: the row's
    # owner and the user whose row is checked; prepared, it is one parameter).
    assert stmt._plan == tuple((name, None, None) for name in _INSERT_ORDER), stmt._plan
    return stmt


_INSERT_ORDER = ("id", "user_id", "token_hash", "family_id", "expires_at", "user_agent", "ip",
                 "user_id")


@functools.cache
def _rotate() -> Statement:
    # Revoke the old token only if it is still live, and feed what that UPDATE
    # returns into the INSERT of its successor.  A concurrent rotation blocks on
    # the row lock, then re-checks "revoked_at IS NULL", finds it false and
    # inserts nothing.  replaced_by points at the successor's id, chosen here;
    # the foreign key is checked at the end of the statement, after the INSERT.
    # The owner's row is locked FOR SHARE in the WHERE, so before the token's row:
    # a revocation holding it (FOR NO KEY UPDATE) is waited for, and one that comes
    # later waits for this statement (see the module's docstring).
    owner_active = (
        User.select(pw.SQL("1"))
        .where((User.id == RT.user) & User.is_active)
        .for_update("FOR SHARE")  # type: ignore[arg-type]  # the stubs: bool only
    )
    old = (
        RT.update(revoked_at=pw.fn.now(), replaced_by=Param("new_id"))
        .where(
            (RT.token_hash == Param("old_hash"))
            & RT.revoked_at.is_null()
            & (RT.expires_at > _statement_time())
            & pw.fn.EXISTS(owner_active)
        )
        .returning(RT.user, RT.family_id, RT.user_agent, RT.ip)
        .cte("old")
    )
    new = (
        RT.insert_from(
            pw.Select(
                from_list=[old],
                columns=[
                    Param("new_id"),
                    old.c.users_id,
                    Param("new_hash"),
                    old.c.family_id,
                    Param("expires_at"),
                    pw.fn.COALESCE(Param("user_agent"), old.c.user_agent),
                    pw.fn.COALESCE(Param("ip"), old.c.ip),
                ],
            ),
            fields=[RT.id, RT.user, RT.token_hash, RT.family_id, RT.expires_at,
                    RT.user_agent, RT.ip],
        )
        .returning(RT.user, RT.family_id)
        .cte("new")
    )
    return Statement(pw.Select(from_list=[new], columns=[new.c.users_id, new.c.family_id])
                     .with_cte(old, new))


@functools.cache
def _inspect() -> Statement:
    query = (
        RT.select(RT.family_id, RT.revoked_at, RT.expires_at <= _statement_time(), User.is_active)
        .join(User, on=(RT.user == User.id))
        .where(RT.token_hash == Param("token_hash"))
    )
    return Statement(query)


@functools.cache
def _find_token() -> Statement:
    # What a write whose reply was lost made, found by the hash only it knows.
    return Statement(RT.select(RT.user, RT.family_id).where(RT.token_hash == Param("token_hash")))


@functools.cache
def _lock_user() -> Statement:
    # The revocations' side of the lock the rotations share (see the module's docstring).
    query = (
        User.select(User.id)
        .where(User.id == Param("user_id"))
        .for_update("FOR NO KEY UPDATE")  # type: ignore[arg-type]
    )
    return Statement(query)


@functools.cache
def _lock_user_of_token() -> Statement:
    query = (
        RT.select(RT.family_id)
        .join(User, on=(RT.user == User.id))
        .where(RT.token_hash == Param("token_hash"))
        .for_update("FOR NO KEY UPDATE", of=User)  # type: ignore[arg-type]
    )
    return Statement(query)


@functools.cache
def _revoke_family() -> Statement:
    query = RT.update(revoked_at=pw.fn.now()).where(
        (RT.family_id == Param("family_id")) & RT.revoked_at.is_null()
    )
    return Statement(query)


@functools.cache
def _revoke_all() -> Statement:
    # Live tokens only: an expired one needs no revoking (purge_expired deletes it).
    query = RT.update(revoked_at=pw.fn.now()).where(
        (RT.user == Param("user_id"))
        & RT.revoked_at.is_null()
        & (RT.expires_at > _statement_time())
    )
    return Statement(query)


@functools.cache
def _purge_batch() -> Statement:
    # SKIP LOCKED: two workers purging at once share the work instead of queueing.
    # Only tokens no other token points at (replaced_by): deleting one then fires
    # no ON DELETE SET NULL, so a purge locks nothing but the rows it took with
    # SKIP LOCKED and never waits for another purge or a rotation (a cascade into
    # rows another purge holds is how two purges deadlocked).  An expired token
    # pointed at by one that is expired too goes in a later batch, after it.
    # No token comes to point at an expired one: only a new successor is pointed at.
    expired, referrer = RT.alias("expired"), RT.alias("referrer")
    pointed_at = referrer.select(pw.SQL("1")).where(referrer.replaced_by == expired.id)
    batch = (
        expired.select(expired.id)
        .where((expired.expires_at < _statement_time()) & ~pw.fn.EXISTS(pointed_at))
        .limit(Param("limit"))
        .for_update(skip_locked=True)
    )
    return Statement(RT.delete().where(RT.id.in_(batch)))


@functools.cache
def _user_state() -> Statement:
    return Statement(User.select(User.is_active).where(User.id == Param("id")))


# -- helpers ------------------------------------------------------------------------


def _database(db: Database | None) -> Database:
    return users_database(db)


def _hash(token: Any) -> str:
    if not isinstance(token, str):
        raise ValidationError("token", f"must be text, not {type(token).__name__}")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise ValidationError("token", f"is longer than {_MAX_TOKEN_LENGTH} characters; "
                              "it is not a refresh token issued here")
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


_urandom = os.urandom
_b2a = binascii.b2a_base64
_URLSAFE = bytes.maketrans(b"+/", b"-_")  # as base64.urlsafe_b64encode translates
_sha256 = hashlib.sha256
_from_bytes = int.from_bytes
# What uuid.UUID(..., version=4) does to the 128 random bits: variant RFC 4122, version 4.
_V4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_V4_SET = (0x8000 << 48) | (4 << 76)
_set_uuid_int = vars(uuid.UUID)["int"].__set__  # the slots' descriptors of UUID
_set_uuid_safe = vars(uuid.UUID)["is_safe"].__set__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown

_NO_TIME = dt.timedelta(0)
_UTC = dt.UTC
_now = dt.datetime.now


def _ttl(ttl: dt.timedelta) -> dt.datetime:
    # DEFAULT_TTL, the usual argument, is known to be a positive timedelta.
    if ttl is not DEFAULT_TTL and (not isinstance(ttl, dt.timedelta) or ttl <= _NO_TIME):
        raise ValidationError("ttl", "must be a positive datetime.timedelta")
    try:
        return _now(_UTC) + ttl
    except OverflowError:
        raise ValidationError(
            "ttl", "is too long: the expiry would be past the year 9999"
        ) from None


def _user_agent(value: Any) -> str | None:
    """Return the user agent, NULs removed and cut to the column's length.

    Clients send anything here; a sign-in should not fail over it.
    """
    if value is None:
        return None
    if (type(value) is str and len(value) <= _USER_AGENT_MAX and value.isascii()
            and "\x00" not in value):
        return value  # what the general path returns for it: short ASCII text without NUL
    if isinstance(value, str):
        value = value.replace("\x00", "")[:_USER_AGENT_MAX]
    return check_text("user_agent", value, _USER_AGENT_MAX)


# -- operations -------------------------------------------------------------------


def issue_token(
    user: User | uuid.UUID | str,
    *,
    ttl: dt.timedelta = DEFAULT_TTL,
    user_agent: str | None = None,
    ip: str | None = None,
    db: Database | None = None,
) -> IssuedToken:
    """Issue a refresh token starting a new family, and return it (the raw token only here).

    :raises NotFound: when the user does not exist.
    :raises AuthenticationError: when the user is deactivated.
    :raises ValidationError: for a bad ``ttl``, ``user_agent`` or ``ip``.
    """
    database = User._meta.database if db is None else _database(db)
    user_id = user if type(user) is _UUID else _user_id(user)  # a UUID: what _user_id returns
    # The token and both ids from one read of the system's random source: the token as
    # secrets.token_urlsafe(32) makes it, each id as uuid.uuid4() does (16 random bytes
    # with the version and variant bits set), without their Python-level calls.
    data = _urandom(_TOKEN_BYTES + 32)
    encoded = _b2a(data[:_TOKEN_BYTES], newline=False).translate(_URLSAFE).rstrip(b"=")
    id_number = (_from_bytes(data[_TOKEN_BYTES:_TOKEN_BYTES + 16]) & _V4_CLEAR) | _V4_SET
    family_number = (_from_bytes(data[_TOKEN_BYTES + 16:]) & _V4_CLEAR) | _V4_SET
    token_id = _new_object(_UUID)
    _set_uuid_int(token_id, id_number)
    _set_uuid_safe(token_id, _SAFE_UNKNOWN)
    family_id = _new_object(_UUID)
    _set_uuid_int(family_id, family_number)
    _set_uuid_safe(family_id, _SAFE_UNKNOWN)
    expires_at = _now(_UTC) + ttl if ttl is DEFAULT_TTL else _ttl(ttl)  # _ttl(), inline
    # The ids go as their 32 hex digits, which the server reads as uuid (the parameter's
    # type): rendered in C, where a UUID goes through psycopg2's Python adapter.
    user_text = f"{user_id.int:032x}"
    params = (f"{id_number:032x}", user_text, _sha256(encoded).hexdigest(),
              f"{family_number:032x}", expires_at, _user_agent(user_agent),
              normalize_ip("ip", ip), user_text)  # in _INSERT_ORDER
    issued = _issued(encoded.decode(), token_id, user_id, family_id, expires_at)
    insert = _insert()
    lost: CommitUnknown | None = None
    if database._state.closed:
        # No connection held by the thread, so no transaction: the insert runs on a
        # checkout of its own, as execute() would run it (without the closures below).
        try:
            count = _on_checkout(database, insert.sql, params, _COUNT, insert.read_only, insert)
        except CommitUnknown as exc:
            lost = exc  # settled below, as single_write() settles a lost reply
        else:
            if count == 0:
                _refuse_issue(database, user_id)
            return issued

    values = dict(zip(_INSERT_ORDER, params, strict=True))

    def attempt() -> IssuedToken:
        if execute(database, insert, values) == 0:
            _refuse_issue(database, user_id)
        return issued

    mine = {"token_hash": values["token_hash"]}

    def find() -> IssuedToken | None:  # after a lost reply: did the insert commit?
        return None if fetchone(database, _find_token(), mine) is None else issued

    return single_write(database, attempt, find, (_find_token(), mine), lost)


def _refuse_issue(database: Database, user_id: uuid.UUID) -> NoReturn:
    """Say why an issue inserted nothing: no such user, or a deactivated one."""
    state = fetchone(database, _user_state(), {"id": user_id})
    if state is None:
        raise NotFound("no user has this id; it may have been deleted")
    raise AuthenticationError("the user is deactivated; tokens are issued only to active users")


def rotate_token(
    token: str,
    *,
    ttl: dt.timedelta = DEFAULT_TTL,
    user_agent: str | None = None,
    ip: str | None = None,
    db: Database | None = None,
) -> IssuedToken:
    """Revoke ``token`` and return its successor in the same family, in one statement.

    ``user_agent`` and ``ip`` default to the old token's.

    :raises TokenReuseError: when ``token`` was already rotated or revoked; every
        token of its family is revoked now.
    :raises AuthenticationError: when ``token`` is unknown or expired, or its user
        is deactivated.
    """
    database = User._meta.database if db is None else _database(db)
    old_hash = _hash(token)
    # The new token and its id as in issue_token(): one read of the random source.
    data = _urandom(_TOKEN_BYTES + 16)
    encoded = _b2a(data[:_TOKEN_BYTES], newline=False).translate(_URLSAFE).rstrip(b"=")
    new_token = encoded.decode()
    id_number = (_from_bytes(data[_TOKEN_BYTES:]) & _V4_CLEAR) | _V4_SET
    new_id = _new_object(_UUID)
    _set_uuid_int(new_id, id_number)
    _set_uuid_safe(new_id, _SAFE_UNKNOWN)
    expires_at = _now(_UTC) + ttl if ttl is DEFAULT_TTL else _ttl(ttl)  # _ttl(), inline
    values = {
        "old_hash": old_hash,
        "new_id": f"{id_number:032x}",  # as in issue_token(): the server reads it as uuid
        "new_hash": _sha256(encoded).hexdigest(),
        "expires_at": expires_at,
        "user_agent": _user_agent(user_agent),
        "ip": normalize_ip("ip", ip),
    }
    rotate = _rotate()
    lost: CommitUnknown | None = None
    if database._state.closed:  # as in issue_token(): no transaction, a checkout of its own
        try:
            row = _on_checkout(database, rotate.sql, rotate.bind(values), _ONE,
                               rotate.read_only, rotate)
        except CommitUnknown as exc:
            lost = exc
        else:
            if row is None:
                _refuse(database, old_hash)
            return _issued(new_token, new_id, row[0], row[1], expires_at)

    def attempt() -> IssuedToken:
        row = fetchone(database, rotate, values)
        if row is None:
            _refuse(database, old_hash)
        user_id, family_id = row
        return _issued(new_token, new_id, user_id, family_id, expires_at)

    mine = {"token_hash": values["new_hash"]}

    def find() -> IssuedToken | None:  # after a lost reply: is the successor there?
        row = fetchone(database, _find_token(), mine)
        if row is None:
            return None
        return _issued(new_token, new_id, row[0], row[1], expires_at)

    return single_write(database, attempt, find, (_find_token(), mine), lost)


def _refuse(database: Database, token_hash: str) -> NoReturn:
    """Explain why a rotation found nothing to rotate; revoke the family on reuse."""
    found = fetchone(database, _inspect(), {"token_hash": token_hash})
    if found is None:
        raise AuthenticationError("unknown refresh token; sign in again")
    family_id, revoked_at, expired, user_active = found
    if revoked_at is not None:
        revoked = _revoke_family_of(database, token_hash) or 0
        logger.warning(
            "a revoked refresh token was presented again; revoked the %d live token(s) of its "
            "family %s",
            revoked,
            family_id,
        )
        raise TokenReuseError(
            "this refresh token was already used or revoked; as a precaution every token of "
            "its family is now revoked. Sign in again to get a new one"
        )
    if expired:
        raise AuthenticationError("the refresh token has expired; sign in again")
    if not user_active:
        raise AuthenticationError("the user is deactivated; sign-in is refused")
    raise AuthenticationError("the refresh token cannot be rotated now; sign in again")


def revoke_token(token: str, *, db: Database | None = None) -> bool:
    """Revoke ``token`` and its family's live token (sign-out); return whether one was live.

    A family has one live token at most, its newest: revoking an already
    rotated token revokes the successor that is live now, so a token handed
    on (or stolen) before its rotation cannot keep a session alive.  Returns
    False when ``token`` is unknown or nothing of its family was live.
    Wins every race with rotation (see the module's docstring).
    """
    return bool(_revoke_family_of(_database(db), _hash(token)))


def revoke_all_for_user(user: User | uuid.UUID | str, *, db: Database | None = None) -> int:
    """Revoke every live token of ``user`` (sign out everywhere); return how many.

    Wins every race with rotation: once it returns, no token of the user is
    live and none rotates (see the module's docstring).
    """
    return _revoke_user(_database(db), _user_id(user)) or 0


def _revoke_user(database: Database, user_id: uuid.UUID) -> int | None:
    """Lock the user's row, then revoke its live tokens; return how many (None: no user).

    A transaction of its own unless the caller has one.
    """

    def work() -> int | None:
        if fetchone(database, _lock_user(), {"user_id": user_id}) is None:
            return None
        return execute(database, _revoke_all(), {"user_id": user_id})

    return own_transaction(database, work)


def _revoke_family_of(database: Database, token_hash: str) -> int | None:
    """Lock the owner's row, then revoke the live tokens of the token's family.

    Returns how many were revoked (None: no such token).  A transaction of its
    own unless the caller has one.
    """

    def work() -> int | None:
        found = fetchone(database, _lock_user_of_token(), {"token_hash": token_hash})
        if found is None:
            return None
        return execute(database, _revoke_family(), {"family_id": found[0]})

    return own_transaction(database, work)


def purge_expired(
    batch_size: int = 1000, *, max_batches: int | None = None, db: Database | None = None
) -> int:
    """Delete expired tokens, ``batch_size`` rows per statement; return how many.

    Each batch is its own short statement (outside a transaction of the
    caller's), so locks are held briefly and a long purge does not bloat one
    transaction.  Several purges at once, and rotations beside them, never
    deadlock: a batch takes only expired tokens that no other token points at
    (``replaced_by``), with ``SKIP LOCKED``, so it locks nothing else.  An
    expired token that another token still points at (its predecessor in the
    family, which with the same ``ttl`` expired earlier) goes in a batch after
    that one is deleted.  Stops when a batch deletes nothing, or after
    ``max_batches`` batches (a worker can then check whether to stop).
    """
    if (isinstance(batch_size, bool) or not isinstance(batch_size, int)
            or not 0 < batch_size < 2**63):
        raise ValidationError("batch_size", "must be a whole number > 0 (and < 2**63)")
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches <= 0
    ):
        raise ValidationError("max_batches", "must be a whole number > 0, or None for no limit")
    database = _database(db)
    stmt = _purge_batch()
    total = 0
    batches = 0
    while True:
        deleted = execute(database, stmt, {"limit": batch_size})
        total += deleted
        batches += 1
        if deleted == 0 or (max_batches is not None and batches >= max_batches):
            return total
