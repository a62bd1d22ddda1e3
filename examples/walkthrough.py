"""A walk through datalayer's operations, printing what each one does.

    python examples/walkthrough.py

It uses the database from the environment (DATABASE_URL or DB_*; the
embedded server when neither is set) and runs inside one transaction that
is rolled back at the end, so it leaves the database as it was.  If the
tables do not exist yet (no ``datalayer migrate apply`` so far), it creates
them inside that transaction, and they are rolled back too.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import datalayer
from datalayer.auth import passwords
from datalayer.models import MODELS


def step(title: str) -> None:
    print(f"\n== {title}")


def main() -> int:
    """Run the walkthrough; return the exit status."""
    db = datalayer.connect()
    print(f"database: {db.settings.describe()}")
    tag = uuid.uuid4().hex[:8]  # addresses of our own, next to any real data
    email = f"Ada.{tag}@Example.com"
    try:
        with db.checkout(), db.atomic() as txn:
            db.create_tables(MODELS, safe=True)  # a no-op once migrations are applied

            step("create a user (the password is stored as a salted argon2id hash)")
            user = datalayer.create_user(email, "correct horse battery staple",
                                         display_name="Ada Lovelace")
            print(f"created {user!r}: email stored as {user.email}")
            print(f"hash parameters: {user.password_hash.split('$')[1]} (salt and key not shown)")

            step("look it up by e-mail, in any case")
            found = datalayer.get_user_by_email(email.upper())
            print(f"found {found!r} by {email.upper()}")

            step("authenticate")
            signed_in = datalayer.authenticate(email, "correct horse battery staple")
            print(f"signed in; last_login_at = {signed_in.last_login_at:%Y-%m-%d %H:%M:%S %Z}")
            try:
                datalayer.authenticate(email, "wrong password")
            except datalayer.AuthenticationError as exc:
                print(f"a wrong password: AuthenticationError: {exc}")

            step("issue a refresh token (the raw token exists only in the return value)")
            issued = datalayer.issue_token(user, ttl=dt.timedelta(days=30),
                                           user_agent="walkthrough/1.0", ip="192.0.2.10")
            print(f"issued {issued!r}")
            print(f"token: {len(issued.token)} characters, handed to the client once; "
                  "only its SHA-256 is stored")

            step("rotate it: the old one is revoked, the next is in the same family")
            rotated = datalayer.rotate_token(issued.token)
            print(f"rotated to {rotated.id} (family {rotated.family_id})")

            step("present the old token again: reuse revokes the whole family")
            try:
                datalayer.rotate_token(issued.token)
            except datalayer.TokenReuseError as exc:
                print(f"TokenReuseError: {exc}")
            try:
                datalayer.rotate_token(rotated.token)
            except datalayer.TokenReuseError:
                print("and the newest token of that family no longer rotates either")

            step("revoke: one token, then all of a user's")
            a = datalayer.issue_token(user)
            datalayer.issue_token(user)
            print(f"revoke_token: {datalayer.revoke_token(a.token)} (again: "
                  f"{datalayer.revoke_token(a.token)})")
            print(f"revoke_all_for_user: {datalayer.revoke_all_for_user(user)} token(s)")

            step("purge expired tokens in batches")
            for _ in range(3):
                datalayer.issue_token(user, ttl=dt.timedelta(microseconds=1))
            time.sleep(0.01)
            print(f"purge_expired: deleted {datalayer.purge_expired(batch_size=2)} token(s)")

            step("import users in bulk (COPY; all rows or none)")
            prepared = passwords.hash_password("imported users sign in with this")
            rows = [{"email": f"user{i}.{tag}@example.com", "password_hash": prepared,
                     "display_name": f"User {i}"} for i in range(1000)]
            started = time.perf_counter()
            count = datalayer.import_users(rows)
            print(f"imported {count} users in {(time.perf_counter() - started) * 1e3:.0f} ms")
            try:
                datalayer.import_users([rows[0]])
            except datalayer.DuplicateError as exc:
                print(f"importing one of them again: DuplicateError: {exc}")

            step("deactivate, then delete (the tokens go with the user)")
            live = datalayer.issue_token(user)
            print(f"deactivate_user: revoked {datalayer.deactivate_user(user)} live token(s)")
            try:
                datalayer.authenticate(email, "correct horse battery staple")
            except datalayer.AuthenticationError:
                print("a deactivated user cannot sign in")
            datalayer.delete_user(user)
            try:
                datalayer.rotate_token(live.token)
            except datalayer.AuthenticationError as exc:
                print(f"after delete_user the token is gone: {exc}")

            txn.rollback()  # leave the database as it was
            print("\nrolled back: the database is as it was")
    finally:
        datalayer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
