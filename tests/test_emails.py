"""E-mail addresses: NFC-normalized, lower-cased, control and format characters refused.

The NFC and NFD forms of an address (``café`` with a precomposed ``é`` or with
``e`` + U+0301) are one account: created once, found by either, a duplicate
for the other.  Why ``lower()`` and not ``casefold()``: see
``datalayer.auth.user.EmailField``.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datalayer.auth import passwords, users
from datalayer.db import Database
from datalayer.errors import DuplicateError, NotFound, ValidationError
from datalayer.models import EmailField, User

NFC = unicodedata.normalize("NFC", "café@x.test")
NFD = unicodedata.normalize("NFD", "café@x.test")
PASSWORD = "correct horse battery staple"
CHEAP = passwords.ScryptParams(ln=4, r=8, p=1)
INVISIBLE = ["\u200b", "\u200d", "\u200e", "\u202e", "\ufeff", "\u00ad", "\x01", "\x1b", "\x7f",
             "\x85", "\u2028", "\u2029"]


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "DEFAULT_PARAMS", CHEAP)


def test_the_two_forms_differ_as_text() -> None:
    assert NFC != NFD and len(NFD) == len(NFC) + 1


@pytest.mark.parametrize(("first", "second"), [(NFC, NFD), (NFD, NFC)])
def test_nfc_and_nfd_forms_are_one_account(db: Database, first: str, second: str) -> None:
    created = users.create_user(first, PASSWORD)
    assert created.email == NFC
    assert User.get_by_id(created.id).email == NFC  # stored in NFC
    for form in (NFC, NFD, NFD.upper(), f"  {NFC.upper()} "):
        assert users.get_user_by_email(form).id == created.id
    with pytest.raises(DuplicateError):
        users.create_user(second, PASSWORD)
    with pytest.raises(DuplicateError):
        users.import_users([{"email": second, "password": PASSWORD}])
    assert users.authenticate(second, PASSWORD).id == created.id
    assert User.select().where(User.email == second).count() == 1


def test_an_import_with_both_forms_names_both_rows(db: Database) -> None:
    with pytest.raises(DuplicateError, match="rows 1 and 2"):
        users.import_users([{"email": NFC, "password": PASSWORD},
                            {"email": NFD, "password": PASSWORD}])
    assert User.select().count() == 0


@pytest.mark.parametrize("char", INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
def test_control_and_format_characters_are_refused(db: Database, char: str) -> None:
    address = f"ad{char}a@example.com"
    attempts: list[Any] = [
        lambda: users.create_user(address, PASSWORD),
        lambda: users.import_users([{"email": address, "password_hash": passwords.hash_password(
            PASSWORD)}]),
        lambda: users.get_user_by_email(address),
        lambda: User.create(email=address, password_hash="x" * 20),
    ]
    for attempt in attempts:
        with pytest.raises(ValidationError) as info:
            attempt()
        assert info.value.field == "email"
        assert f"U+{ord(char):04X}" in str(info.value) and "example.com" not in str(info.value)
    assert User.select().count() == 0


def test_blanks_around_an_address_are_still_removed(db: Database) -> None:
    created = users.create_user("\t Ada@Example.com \n", PASSWORD)
    assert created.email == "ada@example.com"
    with pytest.raises(NotFound):
        users.get_user_by_email("nobody@example.com")


def test_lower_not_casefold_keeps_existing_addresses_found(db: Database) -> None:
    # Stored by release 0.1 as lower(): casefold() would look for "strasse@x.test".
    User.insert(email="straße@x.test", password_hash=passwords.hash_password(PASSWORD)).execute()
    assert users.get_user_by_email("STRAßE@X.TEST").email == "straße@x.test"
    with pytest.raises(NotFound):
        users.get_user_by_email("strasse@x.test")  # a different address


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(_text)
def test_normalize_is_idempotent_and_form_blind(value: str) -> None:
    try:
        stored = EmailField.normalize(value)
    except ValidationError as exc:
        assert exc.field == "email"
        assert any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
                   for c in unicodedata.normalize("NFC", value.strip()))
        return
    assert EmailField.normalize(stored) == stored
    assert unicodedata.is_normalized("NFC", stored)
    assert EmailField.normalize(unicodedata.normalize("NFD", value)) == stored
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in stored)
