"""Operations on users: create, look up, authenticate, deactivate, delete, import.

Plain functions on the package's database (the one the models are bound to),
or on ``db=`` when given.  Each checks a pooled connection out for itself
unless the thread already holds one (``with db.checkout():``) and joins the
thread's transaction when one is open (``with db.atomic():``).

    import datalayer
    datalayer.connect()
    user = datalayer.create_user("Ada@Example.com", "correct horse battery staple")
    user = datalayer.authenticate("ada@example.com", "correct horse battery staple")

The SQL of each operation is built from the models once and reused (see
:mod:`datalayer._sql`).  No message, log line or repr contains a password, a
password hash or an e-mail address.

A reply lost to a broken connection never turns into a wrong answer
(:mod:`datalayer._outcome`): ``create_user`` finds its own row by the address
and the salted hash it made; ``deactivate_user``, ``delete_user`` and
``import_users`` run in transactions of their own and ask the server whether
they committed; what cannot be found out raises ``CommitUnknown``.
"""

from __future__ import annotations

import functools
import io
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import peewee as pw
import psycopg2.errors

from .. import retry
from .._outcome import own_transaction, single_write
from .._sql import _ONE, Param, Statement, _on_checkout, copy_in, execute, fetchone
from ..db import replica_read
from ..errors import (
    AuthenticationError,
    CommitUnknown,
    ConnectionLost,
    DatabaseUnavailable,
    DuplicateError,
    NotFound,
    PoolTimeout,
    TooManyConnections,
    ValidationError,
)
from ..models.refresh_token import RefreshToken
from ..models.rows import row_builder
from ..models.user import EMAIL_MAX_LENGTH, Role, User
from ..models.validation import validate_value

if TYPE_CHECKING:
    from types import ModuleType

    from ..db import Database

T = TypeVar("T")

__all__ = [
    "SIGN_IN_RETRY",
    "authenticate",
    "create_user",
    "deactivate_user",
    "delete_user",
    "get_user",
    "get_user_by_email",
    "import_users",
]

# One "@" with something around it, no blanks: enough to catch a wrong value in the
# e-mail column; deliverability is the mail server's business.
_EMAIL_FORM = re.compile(r"[^@\s]+@[^@\s]+").fullmatch
# The same, with nothing COPY text would have to escape (and no control character): the
# common case.
_COPY_SAFE_EMAIL = re.compile(r"[^@\s\\\x00-\x1f\x7f]+@[^@\s\\\x00-\x1f\x7f]+").fullmatch
_FIELDS = tuple(User._meta.sorted_fields)
_DISPLAY_NAME_MAX: int = User.display_name.max_length
_build_any_user = row_builder(User, _FIELDS)
_ROLE_OF = {r.value: r for r in Role}
_USER = Role.USER
assert _USER.value == "user"
_new_user = User.__new__
_UUID = uuid.UUID
_USER_NAMES = ("id", "email", "password_hash", "display_name", "role", "is_active",
               "last_login_at", "created_at", "updated_at")


def _build_known_user(row: Any) -> User:
    """Return the User of a row of ``_FIELDS``, as :func:`row_builder` would build it.

    Written out for the nine columns of ``users`` (one dict display instead of a
    ``dict(zip())`` and a loop over the columns to convert: a third of the build, which
    every lookup and create pays); a row that needs a conversion (an id that is not a
    UUID, a role that is not a known value) goes to the general builder.
    """
    id_, email, password_hash, display_name, role, is_active, last, created, updated = row
    member = _ROLE_OF.get(role)
    if member is None or type(id_) is not _UUID:
        return _build_any_user(row)
    user = _new_user(User)  # what peewee's Model.__init__ leaves, without running it
    user.__data__ = {
        "id": id_, "email": email, "password_hash": password_hash,
        "display_name": display_name, "role": member, "is_active": is_active,
        "last_login_at": last, "created_at": created, "updated_at": updated,
    }
    user._dirty = set()  # type: ignore[attr-defined]  # peewee's, not in the stubs
    user.__rel__ = {}
    return user


# The general builder if the model's columns ever differ from the ones written out above.
_build_user: Callable[[Any], User] = (
    _build_known_user if tuple(f.name for f in _FIELDS) == _USER_NAMES else _build_any_user
)

_DUPLICATE_EMAIL = (
    "a user with this e-mail address already exists; sign in, or use another address"
)
_NO_USER = "no user has this e-mail address; check it, or create the user with create_user()"
_NO_USER_ID = "no user has this id; it may have been deleted"
_BAD_CREDENTIALS = (
    "sign-in refused: the e-mail address or the password is wrong, or the account is "
    "deactivated"
)


_PASSWORDS: list[ModuleType] = []  # the module, once imported


def _passwords() -> ModuleType:
    """Return :mod:`.passwords`, imported on first use (a lookup never hashes).

    Kept after the first call: ``from . import`` on every call costs a few
    microseconds of import machinery on each write.
    """
    if _PASSWORDS:
        return _PASSWORDS[0]
    from . import passwords

    _PASSWORDS.append(passwords)
    return passwords


# -- the queries, built from the models once ------------------------------


@functools.cache
def _select_by_email() -> Statement:
    stmt = Statement(User.select(*_FIELDS).where(User.email == Param("email")))
    assert stmt._plan == (("email", None, None),), stmt._plan  # _get_by_email() binds it so
    return stmt


@functools.cache
def _select_by_id() -> Statement:
    return Statement(User.select(*_FIELDS).where(User.id == Param("id")))


@functools.cache
def _select_own() -> Statement:
    # The row a create_user wrote: its address and the salted hash it made.
    query = User.select(User.id).where(
        (User.email == Param("email")) & (User.password_hash == Param("password_hash"))
    )
    return Statement(query)


_INSERT_ORDER = ("email", "password_hash", "display_name", "role", "is_active")
# What the insert returns: the columns it does not give, which the server fills in (the
# id, the time stamps). The rest of the new row is what create_user() sent.
_MADE_BY_SERVER = tuple(f for f in _FIELDS if f.name not in _INSERT_ORDER)


def _created_user(row: Any, address: str, stored: str, name: str | None, role_value: str,
                  active: bool) -> User:
    """Return the User that create_user() inserted: ``row`` (of ``_MADE_BY_SERVER``) and
    the values it sent, as :func:`_build_user` builds it from the whole row."""
    if _build_user is _build_known_user and type(row[0]) is _UUID:
        id_, last, created, updated = row  # _MADE_BY_SERVER of _USER_NAMES
        user = _new_user(User)  # as _build_known_user()
        user.__data__ = {
            "id": id_, "email": address, "password_hash": stored, "display_name": name,
            "role": _ROLE_OF[role_value], "is_active": active, "last_login_at": last,
            "created_at": created, "updated_at": updated,
        }
        user._dirty = set()  # type: ignore[attr-defined]  # peewee's, not in the stubs
        user.__rel__ = {}
        return user
    values = dict(zip((f.name for f in _MADE_BY_SERVER), row, strict=True))
    values.update(zip(_INSERT_ORDER, (address, stored, name, role_value, active), strict=True))
    return _build_user(tuple(values[f.name] for f in _FIELDS))


@functools.cache
def _insert_user() -> Statement:
    query = (
        User.insert(
            email=Param("email"),
            password_hash=Param("password_hash"),
            display_name=Param("display_name"),
            role=Param("role"),
            is_active=Param("is_active"),
        )
        .on_conflict(action="IGNORE", conflict_target=[User.email])
        .returning(*_MADE_BY_SERVER)
    )
    stmt = Statement(query)
    # create_user() passes the values in this order, unconverted.
    assert stmt._plan == tuple((name, None, None) for name in _INSERT_ORDER), stmt._plan
    return stmt


@functools.cache
def _record_login(rehash: bool) -> Statement:
    values: dict[Any, Any] = {"last_login_at": pw.fn.now()}
    if rehash:
        values["password_hash"] = Param("password_hash")
    query = (
        User.update(values)
        .where((User.id == Param("id")) & User.is_active)
        .returning(User.last_login_at, User.updated_at)
    )
    return Statement(query)


@functools.cache
def _deactivate() -> Statement:
    return Statement(User.update(is_active=False).where(User.id == Param("id")))


@functools.cache
def _revoke_user_tokens() -> Statement:
    # Live tokens only, as datalayer.auth.tokens.revoke_all_for_user().
    query = RefreshToken.update(revoked_at=pw.fn.now()).where(
        (RefreshToken.user == Param("user_id"))
        & RefreshToken.revoked_at.is_null()
        & (RefreshToken.expires_at > pw.fn.statement_timestamp())
    )
    return Statement(query)


@functools.cache
def _delete() -> Statement:
    return Statement(User.delete().where(User.id == Param("id")))


# -- validation ----------------------------------------------------------------


def _database(db: Database | None) -> Database:
    if db is None:
        default: Database = User._meta.database
        return default
    if not isinstance(db, pw.Database):
        raise ValidationError(
            "db", f"must be a datalayer Database (datalayer.db.Database), not {type(db).__name__}"
        )
    return db


def normalize_email(email: Any) -> str:
    """Return ``email`` in stored form (trimmed, lower-case) or raise :class:`ValidationError`.

    The message never repeats the address.
    """
    value = _lookup_email(email)
    if _EMAIL_FORM(value) is None:
        raise ValidationError("email", "is not an e-mail address; expected name@domain")
    return value


def _lookup_email(email: Any) -> str:
    """Return ``email`` in stored form for a lookup (no format check: it just finds nothing)."""
    if (type(email) is str and email.isascii() and len(email) <= EMAIL_MAX_LENGTH
            and email.isprintable()):
        return email.strip().lower()  # the fast path of validate_value()
    value: str = validate_value(User.email, email)
    return value


def _user_id(user: User | uuid.UUID | str, argument: str = "user") -> uuid.UUID:
    """Return the id of ``user`` (a User, a UUID or its text); errors name ``argument``."""
    if type(user) is uuid.UUID:
        return user  # what validate_value() returns for one
    if isinstance(user, User):
        if user.id is None:
            raise ValidationError(argument, "is not saved yet; create it first")
        user = user.id
    elif not isinstance(user, (uuid.UUID, str)):
        what = "a User, a UUID or a UUID's text" if argument == "user" else "a UUID (or its text)"
        raise ValidationError(argument, f"must be {what}, not {type(user).__name__}")
    try:
        value: uuid.UUID = validate_value(User.id, user)
    except ValidationError as exc:
        raise ValidationError(argument, exc.message) from None
    return value


def _password_hash(value: Any) -> str:
    if not _passwords().is_password_hash(value):
        raise ValidationError(
            "password_hash",
            "is not a hash made by datalayer.auth.passwords.hash_password(); hash the password "
            "with it first (or pass password= instead)",
        )
    return str(value)


# -- operations -------------------------------------------------------------------


def create_user(
    email: str,
    password: str | None = None,
    *,
    password_hash: str | None = None,
    display_name: str | None = None,
    role: Role | str = Role.USER,
    is_active: bool = True,
    db: Database | None = None,
) -> User:
    """Create a user and return it; the password is stored only as a salted argon2id hash.

    Give ``password`` (hashed here) or ``password_hash`` (made earlier with
    :func:`datalayer.auth.passwords.hash_password`), not both.  The e-mail address
    is stored trimmed and lower-cased.

    :raises ValidationError: for a bad e-mail address, password, name or role.
    :raises DuplicateError: when the e-mail address is taken.
    """
    if (password is None) == (password_hash is None):
        raise ValidationError("password", "give either password or password_hash (exactly one)")
    # The common values skip the general checks, each with the same outcome as them and a
    # few C-level calls (this runs on every create): an ASCII address (the fast path of
    # normalize_email()), a hash in the stored form, None or short ASCII text without NUL
    # for the name, a Role, a bool.
    if (type(email) is str and email.isascii() and len(email) <= EMAIL_MAX_LENGTH
            and email.isprintable()):
        address = email.strip().lower()
        # _EMAIL_FORM without the regex: in printable ASCII the only blank is " ".
        if (address.count("@") != 1 or " " in address or address[0] == "@"
                or address[-1] == "@"):
            raise ValidationError("email", "is not an e-mail address; expected name@domain")
    else:
        address = normalize_email(email)
    if password is not None:
        stored = _passwords().hash_password(password)
    elif type(password_hash) is str and (
            _PASSWORDS[0] if _PASSWORDS else _passwords())._hash_form(password_hash) is not None:
        stored = password_hash
    else:
        stored = _password_hash(password_hash)
    name = (
        display_name if display_name is None or (
            type(display_name) is str and len(display_name) <= _DISPLAY_NAME_MAX
            and display_name.isascii() and "\x00" not in display_name)
        else validate_value(User.display_name, display_name)
    )
    role_value = (
        "user" if role is _USER  # the default: what the general check gives for it
        else role._value_ if type(role) is Role else validate_value(User.role, role).value
    )
    active = (is_active if is_active is True or is_active is False
              else validate_value(User.is_active, is_active))
    database = User._meta.database if db is None else _database(db)
    insert = _insert_user()
    lost: CommitUnknown | None = None
    if database._state.closed:
        # No connection held by the thread, so no transaction: the statement runs on a
        # checkout of its own, as fetchone() would run it (without the closures below).
        try:  # the parameters in _INSERT_ORDER
            row = _on_checkout(database, insert.sql, (address, stored, name, role_value, active),
                               _ONE, insert.read_only, insert)
        except CommitUnknown as exc:
            lost = exc  # settled below, as single_write() settles a lost reply
        else:
            if row is None:
                raise DuplicateError(_DUPLICATE_EMAIL)
            if _build_user is _build_known_user and type(row[0]) is _UUID:
                id_, last, created, updated = row  # _created_user()'s usual case, inline
                user = _new_user(User)
                user.__data__ = {
                    "id": id_, "email": address, "password_hash": stored, "display_name": name,
                    "role": _ROLE_OF[role_value], "is_active": active, "last_login_at": last,
                    "created_at": created, "updated_at": updated,
                }
                user._dirty = set()  # type: ignore[attr-defined]  # peewee's, not in the stubs
                user.__rel__ = {}
                return user
            return _created_user(row, address, stored, name, role_value, active)

    values = {"email": address, "password_hash": stored, "display_name": name,
              "role": role_value, "is_active": active}

    def attempt() -> User:
        row = fetchone(database, insert, values)
        if row is None:
            raise DuplicateError(_DUPLICATE_EMAIL)
        return _created_user(row, address, stored, name, role_value, active)

    def find() -> User | None:  # after a lost reply: is the row with our (salted) hash there?
        row = fetchone(database, _select_by_email(), {"email": values["email"]})
        if row is None:
            return None
        user = _build_user(row)
        return user if user.password_hash == values["password_hash"] else None

    mine = {"email": values["email"], "password_hash": values["password_hash"]}
    return single_write(database, attempt, find, (_select_own(), mine), lost)


@replica_read(User)
def get_user(user_id: uuid.UUID | str, *, db: Database | None = None) -> User:
    """Return the user with ``user_id``.

    :raises NotFound: when there is none.
    """
    row = fetchone(_database(db), _select_by_id(), {"id": _user_id(user_id, "user_id")})
    if row is None:
        raise NotFound(_NO_USER_ID)
    return _build_user(row)


def get_user_by_email(email: str, *, db: Database | None = None) -> User:
    """Return the user with ``email``, compared case-insensitively.

    Read-only: with replicas configured it runs on one that has this caller's
    last write (as :func:`datalayer.db.replica_read` routes, written out here:
    the hottest read of the package).

    :raises NotFound: when there is none (the message does not repeat the address).
    """
    database = User._meta.database if db is None else _database(db)
    replicas = getattr(database, "_replicas", None)
    if replicas is not None:
        return replicas.read(  # type: ignore[no-any-return]
            database, lambda: _get_by_email(database, email), "get_user_by_email"
        )
    return _get_by_email(database, email)


def _get_by_email(database: Database, email: Any) -> User:
    # The fast path of _lookup_email(), inline.
    if (type(email) is str and email.isascii() and len(email) <= EMAIL_MAX_LENGTH
            and email.isprintable()):
        address = email.strip().lower()
    else:
        address = _lookup_email(email)
    stmt = _select_by_email()
    if database._state.closed:  # fetchone()'s checkout, the one parameter bound by hand
        row = _on_checkout(database, stmt.sql, [address], _ONE, stmt.read_only, stmt)
    else:
        row = fetchone(database, stmt, {"email": address})
    if row is None:
        raise NotFound(_NO_USER)
    return _build_user(row)


def authenticate(email: str, password: str, *, db: Database | None = None) -> User:
    """Return the active user with ``email`` and ``password``, and record the sign-in.

    ``last_login_at`` is set; a hash made with another algorithm or older
    parameters (the scrypt hashes of release 0.1) is replaced by one made with
    :data:`~datalayer.auth.passwords.DEFAULT_PARAMS`.  An unknown address, a
    wrong password and a deactivated account raise the same error at the same
    time, whatever kind of hash the account holds
    (:func:`~datalayer.auth.passwords.check_sign_in`), so a caller cannot tell
    them apart.

    A sign-in only reads, then records itself (``last_login_at``, and the
    upgraded hash): writes that are safe to lose or to make twice.  So outside
    a transaction of the caller's, a lost connection (a server restart) is
    ridden out with :mod:`datalayer.retry`'s default policy; when the server
    stays away, the error says to try the sign-in again.

    :raises AuthenticationError: when the credentials are not accepted.
    :raises ValidationError: when ``email`` or ``password`` is not text (None
        counts as a missing credential: AuthenticationError), or the stored
        hash asks for a cost beyond the limits (refused without being
        computed; set a new password).
    :raises DatabaseUnavailable: when the server could not be reached for the
        retry policy's 15 s; nothing needs checking or undoing.
    """
    database = _database(db)
    for name, value in (("email", email), ("password", password)):
        if value is not None and not isinstance(value, str):
            raise ValidationError(name, f"must be text (str), not {type(value).__name__}")
    try:
        address: str | None = _lookup_email(email)
    except ValidationError:
        address = None
    if not isinstance(password, str) or len(password) > _passwords().MAX_PASSWORD_LENGTH:
        address = None
    row = None
    if address is not None:
        lookup = {"email": address}
        row = _signing_in(database, lambda: fetchone(database, _select_by_email(), lookup))
    user = None if row is None else _build_user(row)
    if not _passwords().check_sign_in(
        password,
        None if user is None else user.password_hash,
        active=user is not None and user.is_active,
    ):
        raise AuthenticationError(_BAD_CREDENTIALS)
    assert user is not None
    values: dict[str, Any] = {"id": user.id}
    rehash = _passwords().needs_rehash(user.password_hash)
    if rehash:
        values["password_hash"] = _passwords().hash_password(password)
    stamp = _signing_in(database, lambda: fetchone(database, _record_login(rehash), values))
    if stamp is None:  # deactivated or deleted since the lookup
        raise AuthenticationError(_BAD_CREDENTIALS)
    data = user.__data__
    data["last_login_at"], data["updated_at"] = stamp
    if rehash:
        data["password_hash"] = values["password_hash"]
    return user


SIGN_IN_RETRY = retry.DEFAULT_POLICY
"""How long :func:`authenticate` rides out a lost connection (outside a transaction)."""

_SIGN_IN_LOST = (
    "the sign-in could not be completed: the connection to the database was lost and "
    "could not be made again (is the server restarting?). Nothing needs checking or "
    "undoing; try the sign-in again"
)


def _signing_in(database: Database, statement: Callable[[], T]) -> T:
    """Run one statement of a sign-in; outside a transaction, ride out a lost connection.

    A sign-in writes only what may be lost or written twice (``last_login_at``,
    an upgraded hash of the same password), so a write whose reply was lost
    (``CommitUnknown``, whose advice is to check first) is simply run again.
    """
    if database.in_transaction():
        return statement()  # the caller's transaction: its loss is the caller's to retry

    def attempt() -> T:
        try:
            return statement()
        except CommitUnknown:
            pass
        # Raised outside the handler, so the CommitUnknown is not its context (which
        # datalayer.retry would take for a unit that must not run again).
        raise ConnectionLost("the reply to a sign-in's write was lost; it is run again")

    try:
        return retry.run(attempt, db=database, policy=SIGN_IN_RETRY)
    except Exception as exc:
        gone = retry.is_retryable(exc) or isinstance(exc, DatabaseUnavailable)
        if not gone or isinstance(exc, (PoolTimeout, TooManyConnections)):
            raise  # not the connection's loss: the pool's limits, a bug, ...
        raise DatabaseUnavailable(_SIGN_IN_LOST) from exc


def deactivate_user(user: User | uuid.UUID | str, *, db: Database | None = None) -> int:
    """Deactivate a user and revoke its refresh tokens; return how many tokens were revoked.

    The user can no longer sign in, and its tokens no longer rotate.  Both
    changes are made in one transaction, which first updates (so locks) the
    user's row: rotations in flight are waited for and their successors
    revoked too, and later ones find the user inactive (see
    :mod:`datalayer.auth.tokens`).  Activating the user again brings none of
    the revoked tokens back.

    :raises NotFound: when there is no such user.
    """
    database = _database(db)
    user_id = _user_id(user)

    def work() -> int:
        if execute(database, _deactivate(), {"id": user_id}) == 0:
            raise NotFound(_NO_USER_ID)
        revoked: int = execute(database, _revoke_user_tokens(), {"user_id": user_id})
        return revoked

    revoked = own_transaction(database, work)
    if isinstance(user, User):
        user.__data__["is_active"] = False
    return revoked


def delete_user(user: User | uuid.UUID | str, *, db: Database | None = None) -> None:
    """Delete a user; its refresh tokens go with it (``ON DELETE CASCADE``).

    :raises NotFound: when there is no such user.
    """
    database = _database(db)
    user_id = _user_id(user)

    def work() -> None:
        if execute(database, _delete(), {"id": user_id}) == 0:
            raise NotFound(_NO_USER_ID)

    # A transaction of its own: after a lost reply the server says whether it
    # committed (a deleted row leaves nothing to look up).
    own_transaction(database, work)


# -- bulk import ---------------------------------------------------------------------

_IMPORT_COLUMNS = (User.email, User.password_hash, User.display_name, User.role, User.is_active)
_IMPORT_KEYS = frozenset(
    {"email", "password", "password_hash", "display_name", "role", "is_active"}
)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_LINE = re.compile(r"\bline (\d+)")
_NAME_MAX: int = User.display_name.max_length
# A display name COPY text can carry as it is (and a valid one: no NUL, not too long).
_COPY_SAFE_NAME = re.compile(rf"[^\t\n\r\\\x00]{{0,{_NAME_MAX}}}").fullmatch
_ROLES = {r.value: r.value for r in Role} | {r: r.value for r in Role}


@functools.cache
def _copy_sql() -> str:
    from ..db import database  # the SQL dialect (quoting)

    statement = pw.NodeList([
        pw.SQL("COPY"),
        pw.Entity(User._meta.table_name),
        pw.EnclosedNodeList([pw.Entity(f.column_name) for f in _IMPORT_COLUMNS]),
        pw.SQL("FROM STDIN"),
    ])
    sql: str = database.get_sql_context().sql(statement).query()[0]
    return sql


def _copy_text(value: str) -> str:
    return value.translate(_COPY_ESCAPES) if ("\\" in value or "\t" in value
                                              or "\n" in value or "\r" in value) else value


def _import_line(row: Any) -> tuple[str, str]:
    """Validate one import row; return (stored e-mail, COPY text line)."""
    if type(row) is not dict and not isinstance(row, Mapping):
        raise ValidationError("row", f"must be a mapping (dict), not {type(row).__name__}")
    if not row.keys() <= _IMPORT_KEYS:
        raise ValidationError(
            sorted(row.keys() - _IMPORT_KEYS)[0],
            f"is not a column users can be imported with; use {sorted(_IMPORT_KEYS)}",
        )
    email = row.get("email")
    if type(email) is str and email.isascii() and len(email) <= EMAIL_MAX_LENGTH:
        email = email.strip().lower()  # the fast path of normalize_email()
        if _COPY_SAFE_EMAIL(email) is None:
            email = _copy_text(normalize_email(email))
    else:
        email = _copy_text(normalize_email(email))  # raises with the reason, or normalises
    password = row.get("password")
    pw_hash = row.get("password_hash")
    if password is not None:
        if pw_hash is not None:
            raise ValidationError("password", "give either password or password_hash (exactly one)")
        pw_hash = _passwords().hash_password(password)
    elif not _passwords().is_password_hash(pw_hash):
        _password_hash(pw_hash)
    name = row.get("display_name")
    if name is None:
        name_text = "\\N"
    elif type(name) is str and name.isascii() and len(name) <= _NAME_MAX and "\x00" not in name:
        name_text = _copy_text(name)  # the fast path of validate_value()
    else:
        name_text = _copy_text(validate_value(User.display_name, name))
    role = row.get("role", "user")
    role_text = _ROLES.get(role)
    if role_text is None:
        role_text = validate_value(User.role, role).value
    active = row.get("is_active", True)
    if active is True:
        active_text = "t"
    elif active is False:
        active_text = "f"
    else:
        raise ValidationError("is_active", f"must be True or False, not {type(active).__name__}")
    # The e-mail is escaped above; a hash holds no tab, newline or backslash.
    return email, f"{email}\t{pw_hash}\t{name_text}\t{role_text}\t{active_text}\n"


def _copy_lines(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Validate every row and return the COPY text lines, or raise naming the row."""
    # The common row (a dict of plain ASCII text, a hash of the right form) is
    # checked inline with a few C-level calls; anything else goes through
    # _import_line(), which normalises it or says exactly what is wrong.
    email_ok, hash_ok, name_ok = _COPY_SAFE_EMAIL, _passwords()._HASH_FORM, _COPY_SAFE_NAME
    keys, roles, max_email = _IMPORT_KEYS, _ROLES, EMAIL_MAX_LENGTH
    lines: list[str] = []
    seen: set[str] = set()
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
        raise ValidationError("rows", f"must be an iterable of mappings, not {type(rows).__name__}")
    for number, row in enumerate(rows, start=1):
        try:
            if type(row) is dict and row.keys() <= keys and "password" not in row:
                email = row.get("email")
                pw_hash = row.get("password_hash")
                name = row.get("display_name")
                role = roles.get(row.get("role", "user"))
                active = row.get("is_active", True)
                if type(email) is str and email.isascii() and len(email) <= max_email:
                    email = email.strip().lower()
                    if (
                        email_ok(email) is not None
                        and type(pw_hash) is str
                        and hash_ok(pw_hash) is not None
                        and (name is None or (type(name) is str and name.isascii()
                                              and name_ok(name) is not None))
                        and role is not None
                        and (active is True or active is False)
                    ):
                        name_text = "\\N" if name is None else name
                        active_text = "t" if active else "f"
                        lines.append(f"{email}\t{pw_hash}\t{name_text}\t{role}\t{active_text}\n")
                        seen.add(email)
                        continue
        except TypeError:  # an unhashable role, say: the slow path names it
            pass
        try:
            email, line = _import_line(row)
        except ValidationError as exc:
            raise ValidationError(exc.field, f"{exc.message} (row {number})") from None
        lines.append(line)
        seen.add(email)
    if len(seen) != len(lines):
        first: dict[str, int] = {}
        for number, line in enumerate(lines, start=1):
            email = line.partition("\t")[0]
            if first.setdefault(email, number) != number:
                raise DuplicateError(
                    f"rows {first[email]} and {number} have the same e-mail address; remove one "
                    "of them. Nothing was imported"
                )
    return lines


def import_users(rows: Iterable[Mapping[str, Any]], *, db: Database | None = None) -> int:
    """Insert many users at once with COPY; return how many were imported.

    Each row is a mapping with ``email`` and ``password_hash`` (from
    :func:`datalayer.auth.passwords.hash_password`; or ``password``, hashed here,
    which takes tens of milliseconds per row) and optionally
    ``display_name``, ``role`` and ``is_active``.  Every row is validated
    before anything is sent, and the rows go in as one statement: either all
    are imported or none.

    :raises ValidationError: naming the row (counted from 1) and the field.
    :raises DuplicateError: when an address appears twice in ``rows`` or is
        already taken; nothing was imported.
    """
    database = _database(db)
    lines = _copy_lines(rows)
    if not lines:
        return 0
    text = "".join(lines)
    nested = database.in_transaction()

    def work() -> None:
        # One statement: all rows or none.  Inside the caller's transaction a savepoint
        # keeps that transaction usable after a duplicate.
        with database.atomic() if nested else nullcontext():
            try:
                copy_in(database, _copy_sql(), io.StringIO(text))
            except pw.IntegrityError as exc:
                orig = getattr(exc, "orig", None)  # the driver's error, kept by peewee
                if isinstance(orig, psycopg2.errors.UniqueViolation):
                    raise _duplicate_in_import(orig) from None
                raise

    # A transaction of its own outside the caller's: after a lost reply the server
    # says whether it committed.
    own_transaction(database, work)
    return len(lines)


def _duplicate_in_import(exc: psycopg2.Error) -> DuplicateError:
    # The server names the line in diag.context ("COPY users, line 5"); its detail
    # quotes the address, which stays out of the message.
    match = _COPY_LINE.search(getattr(exc.diag, "context", None) or "")
    where = f"row {match[1]}" if match else "a row"
    return DuplicateError(
        f"{where} of the import has an e-mail address that is already taken; remove that row "
        "or delete the existing user. Nothing was imported"
    )

