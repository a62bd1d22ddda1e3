"""The write paths' shortcuts for common values give what the general checks give.

``create_user`` and ``issue_token`` skip the general validation for the usual values (a
short ASCII name, a ``Role``, a ``bool``, a ``UUID``, a dotted-quad IPv4 address) to save
client CPU on every call; these tests pin that the shortcut and the general check agree,
and that every other value still goes through the general check.  No server needed: the
checks run before any SQL.
"""

from __future__ import annotations

import ipaddress
import uuid

import pytest

from datalayer.auth import users
from datalayer.auth.user import Role, User
from datalayer.errors import ValidationError
from datalayer.models.validation import _ipv4_form, normalize_ip, validate_value


@pytest.fixture(scope="module")
def hashed():
    from datalayer.auth.passwords import hash_password

    return hash_password("fast path password")


def _general_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


@pytest.mark.parametrize("text", [
    "192.0.2.1", "0.0.0.0", "255.255.255.255", "10.0.0.10", "1.2.3.4",
    "256.1.1.1", "01.2.3.4", "1.2.3.04", "1.2.3", "1.2.3.4.5", " 1.2.3.4", "1.2.3.4\n",
    "\u0661.2.3.4", "1..2.3", "1.2.3.-4", "::1", "2001:DB8::1", "::ffff:1.2.3.4",
])
def test_the_ipv4_shortcut_agrees_with_ipaddress(text):
    general = _general_ip(text)
    assert (_ipv4_form()(text) is not None) == (general == text and ":" not in text)
    if general is None:
        with pytest.raises(ValidationError, match="ip: is not an IPv4 or IPv6 address"):
            normalize_ip("ip", text)
    else:
        assert normalize_ip("ip", text) == general


def test_every_octet_value_agrees_with_ipaddress():
    for n in range(0, 1000):
        for text in (f"{n}.1.2.3", f"1.2.3.{n}", f"0{n}.1.2.3"):
            assert (_ipv4_form()(text) is not None) == (_general_ip(text) == text), text


def test_the_uuid_shortcut_returns_what_validation_returns():
    value = uuid.uuid4()
    assert users._user_id(value) is validate_value(User.id, value)
    assert users._user_id(str(value)) == value


@pytest.mark.parametrize("name, message", [
    ("x" * 101, "display_name: is 101 characters long; the limit is 100"),
    ("a\x00b", "display_name: must not contain NUL"),
    (42, "display_name: must be text, not int"),
])
def test_display_names_off_the_shortcut_are_still_checked(hashed, name, message):
    with pytest.raises(ValidationError, match=message):
        users.create_user("n@x.test", password_hash=hashed, display_name=name)


def test_role_and_is_active_off_the_shortcut_are_still_checked(hashed):
    with pytest.raises(ValidationError, match="role: 'root' is not one of"):
        users.create_user("n@x.test", password_hash=hashed, role="root")
    with pytest.raises(ValidationError, match="is_active: must be True or False, not int"):
        users.create_user("n@x.test", password_hash=hashed, is_active=1)
    assert validate_value(User.role, "admin") is Role.ADMIN  # text still taken there


def test_email_shortcut_and_general_check_store_the_same_form():
    for raw in (" Ada@Example.COM ", "b@x.test", "\u00c9mile@x.test", "Cafe\u0301@x.test"):
        assert users.normalize_email(raw) == validate_value(User.email, raw)
    with pytest.raises(ValidationError, match="email: is not an e-mail address"):
        users.normalize_email("no-at-sign")
    with pytest.raises(ValidationError, match="email: is 255 characters long"):
        users.normalize_email("a" * 245 + "@x.test" + "   ")
