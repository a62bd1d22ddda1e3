"""The single-row operations' cheaper client paths give the objects the general paths give.

``uuid`` columns are read on the package's connections without ``uuid.UUID()``'s parsing,
a ``User`` row is built without peewee's cursor wrapper, and ``IssuedToken`` is made
through its slots: each must be indistinguishable from what the general code makes.
"""

from __future__ import annotations

import dataclasses
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
