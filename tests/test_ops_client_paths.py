"""The single-row operations' cheaper client paths give the objects the general paths give.

``uuid`` columns are read on the package's connections without ``uuid.UUID()``'s parsing,
a ``User`` row is built without peewee's cursor wrapper (and, for a new user, from what
create_user sent and the columns the server filled in), ``IssuedToken`` is made through its
slots, and a token and its ids are made from one read of the random source: each must be
indistinguishable from what the general code makes.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import uuid

import datalayer
from datalayer.auth import tokens, users
from datalayer.auth.user import Role, User


def test_uuid_columns_read_as_the_uuid_module_would_parse_them(db):
    values = [uuid.uuid4() for _ in range(200)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]
    with db.checkout():
        cursor = db.connection().cursor()
        cursor.execute("SELECT u, u::text FROM unnest(%s::uuid[]) AS u",
                       ([str(v) for v in values],))
        rows = cursor.fetchall()
        cursor.execute("SELECT NULL::uuid")
        assert cursor.fetchone() == (None,)
    assert [r[0] for r in rows] == values
    for read, text in rows:
        general = uuid.UUID(text)
        assert type(read) is uuid.UUID
        assert (read, str(read), repr(read), hash(read)) == (general, text, repr(general),
                                                             hash(general))
        assert read.is_safe is general.is_safe


def test_a_user_is_built_as_peewee_builds_it(isolated_db):
    db = isolated_db  # no connection held: each operation checks one out (the fast path)
    created = datalayer.create_user("Built@Example.com", "a password for building",
                                    display_name="Built", role=Role.ADMIN, db=db)
    looked_up = datalayer.get_user_by_email("built@example.com", db=db)
    with db.checkout():
        general = User.get_by_id(created.id)
    for user in (created, looked_up):
        assert type(user) is User
        assert user.__data__ == general.__data__
        assert list(user.__data__) == list(general.__data__)
        assert type(user.id) is uuid.UUID and user.role is Role.ADMIN
        assert user._dirty == general._dirty == set()
        assert user.__rel__ == general.__rel__ == {}
        assert not user.is_dirty()
    row = (str(created.id), "x@example.com", "h", None, "admin", True, None, None, None)
    built = users._build_user(row)  # an id as text: the general builder converts it
    assert built.id == created.id and type(built.id) is uuid.UUID and built.role is Role.ADMIN


def test_an_issued_token_is_the_dataclass_its_init_makes(isolated_db):
    db = isolated_db
    user = datalayer.create_user("issued@example.com", "a password for issuing", db=db)
    issued = datalayer.issue_token(user, db=db)
    rotated = datalayer.rotate_token(issued.token, db=db)
    for made in (issued, rotated):
        again = tokens.IssuedToken(**{f.name: getattr(made, f.name)
                                      for f in dataclasses.fields(tokens.IssuedToken)})
        assert made == again and hash(made) == hash(again) and repr(made) == repr(again)
        assert made.token not in repr(made)
        assert made.user_id == user.id and type(made.family_id) is uuid.UUID
    assert rotated.family_id == issued.family_id


def test_a_created_user_is_the_row_the_server_stored(isolated_db):
    # create_user() reads back only the columns the server fills in (id, time stamps);
    # the User must still be the stored row, on its own checkout and in a transaction.
    db = isolated_db
    first = datalayer.create_user("  Sent@Example.COM ", "a password for sending", db=db)
    with db.atomic():
        second = datalayer.create_user("second@example.com", "a password for sending",
                                       display_name="Zweite ñ", role="admin",
                                       is_active=False, db=db)
    with db.checkout():
        for made in (first, second):
            stored = User.get_by_id(made.id)
            assert made.__data__ == stored.__data__
            assert list(made.__data__) == list(stored.__data__)
            assert made.role is stored.role and made._dirty == set()
    assert first.display_name is None and first.email == "sent@example.com"
    assert first.created_at.tzinfo is not None and first.last_login_at is None
    # A row the fast path does not take (an id as text) is built by the general builder.
    when = dt.datetime.now(dt.UTC)
    built = users._created_user((str(first.id), None, when, when), "x@example.com", "h",
                                None, "admin", True)
    assert built.__data__ == users._build_any_user(
        (first.id, "x@example.com", "h", None, "admin", True, None, when, when)).__data__


def test_tokens_and_ids_are_made_as_secrets_and_uuid4_make_them(isolated_db):
    db = isolated_db
    user = datalayer.create_user("random@example.com", "a password for random", db=db)
    made = [datalayer.issue_token(user, db=db) for _ in range(20)]
    made += [datalayer.rotate_token(made[-1].token, db=db)]
    with db.atomic():  # the general path (values bound by name), same forms
        made += [datalayer.issue_token(user.id, db=db)]
        made += [datalayer.rotate_token(made[-1].token, db=db)]
    for issued in made:
        token = issued.token
        assert type(token) is str and len(token) == 43  # secrets.token_urlsafe(32)
        assert base64.urlsafe_b64decode(token + "=") != b"" and "=" not in token
        assert len(base64.urlsafe_b64decode(token + "=")) == 32
        for value in (issued.id, issued.family_id):
            general = uuid.UUID(str(value))
            assert type(value) is uuid.UUID and value.version == 4
            assert value.variant == uuid.RFC_4122 and value.is_safe is general.is_safe
            assert (value, hash(value), repr(value)) == (general, hash(general), repr(general))
        with db.checkout():
            stored = tokens.RefreshToken.get_by_id(issued.id)
        assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert (stored.family_id, stored.__data__["user"]) == (issued.family_id, user.id)
        assert stored.expires_at == issued.expires_at
    assert len({m.token for m in made}) == len({m.id for m in made}) == len(made)
    assert len({m.family_id for m in made}) == len(made) - 2  # a rotation keeps its family
