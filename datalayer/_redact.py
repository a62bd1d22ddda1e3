"""Keep secrets out of peewee's own output.

peewee logs every query at DEBUG on the ``peewee`` logger as ``(sql, params)``,
and its ``DoesNotExist`` messages end with ``Params: [...]``.  The parameters
are the values a query binds: password hashes, token hashes, e-mail
addresses.  The package therefore

* installs :class:`RedactParams` on the ``peewee`` logger when it is imported
  (idempotent): the SQL is kept, each parameter is replaced by ``'<redacted>'``
  (``None`` stays ``None``, so the shape of the query is still visible);
* gives every model a ``DoesNotExist`` whose message keeps the SQL and drops
  the parameters (:func:`redact_does_not_exist`).

:func:`mask_url` hides the password of a connection URL, whether the URL
parses or not.

An application that really wants the values in its logs (a local debugging
session) can remove the filter: ``datalayer._redact.uninstall()``.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote

__all__ = [
    "MASK",
    "REDACTED",
    "RedactParams",
    "install",
    "mask_url",
    "redact_message",
    "redacted_does_not_exist",
    "uninstall",
]

REDACTED = "<redacted>"
_PEEWEE_LOGGER = "peewee"


def _redact_params(params: Any) -> Any:
    if isinstance(params, dict):
        return {k: (None if v is None else REDACTED) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return [None if v is None else REDACTED for v in params]
    return REDACTED if params is not None else None


class RedactParams(logging.Filter):
    """Replace the parameters of peewee's ``(sql, params)`` query records."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if isinstance(msg, tuple) and len(msg) == 2 and isinstance(msg[0], str):
            record.msg = (msg[0], _redact_params(msg[1]))
        elif record.args:
            # Anything else peewee logs with arguments: keep the text, drop the values.
            record.args = tuple(REDACTED for _ in record.args) if isinstance(
                record.args, tuple
            ) else {k: REDACTED for k in record.args}
        return True


_FILTER = RedactParams()


def install() -> None:
    """Add the filter to the ``peewee`` logger (once)."""
    logger = logging.getLogger(_PEEWEE_LOGGER)
    if not any(isinstance(f, RedactParams) for f in logger.filters):
        logger.addFilter(_FILTER)


def uninstall() -> None:
    """Remove the filter: peewee logs query parameters again."""
    logger = logging.getLogger(_PEEWEE_LOGGER)
    for f in [f for f in logger.filters if isinstance(f, RedactParams)]:
        logger.removeFilter(f)


def redact_message(message: str) -> str:
    """Drop the ``Params: [...]`` tail peewee appends to ``DoesNotExist`` messages."""
    head, sep, _ = message.partition("\nParams:")
    return head + ("\nParams: " + REDACTED if sep else "")


def redacted_does_not_exist(exc_class: type[Exception]) -> type[Exception]:
    """Return a subclass of a model's ``DoesNotExist`` whose message has no parameters."""

    def __init__(self: Exception, *args: Any) -> None:
        if args and isinstance(args[0], str):
            args = (redact_message(args[0]), *args[1:])
        exc_class.__init__(self, *args)

    return type(
        exc_class.__name__,
        (exc_class,),
        {"__init__": __init__, "__module__": exc_class.__module__,
         "__qualname__": exc_class.__qualname__},
    )


# -- connection URLs -----------------------------------------------------------------

_SECRET_KEYS = frozenset({"password", "sslpassword"})
_QUERY_KEY = re.compile(r"[?&]([^=&?#]*)=")
MASK = "***"


def _secret_values(text: str) -> list[int]:
    """Return where the value of each ``password=`` / ``sslpassword=`` parameter of ``text`` starts.

    The key is compared percent-decoded and case-insensitively (libpq decodes keys).
    """
    return [match.end() for match in _QUERY_KEY.finditer(text)
            if unquote(match[1]).strip().lower() in _SECRET_KEYS]


def mask_url(url: str) -> str:
    """Return ``url`` with every possible password replaced by ``***``.

    Written for URLs that do not parse as well as for those that do: an
    unencoded ``/``, ``?``, ``#``, ``@`` or ``:`` in a password moves the
    boundaries a URL parser sees (``postgresql://app:se/cret@host/db`` has the
    netloc ``app:se``), so nothing here relies on one.  Instead, everything
    that could be a password is hidden:

    * from the first ``:`` after ``scheme://`` up to the *last* ``@`` of the
      whole text (a host contains no ``@``; a password may): the userinfo
      password, however it is written;
    * from the value of the first ``password=`` (or ``sslpassword=``)
      parameter to the end of the text: a value may itself contain ``&``,
      ``#`` or ``@``.

    Text without ``scheme://`` is not shown at all.  An ``@`` in another
    query option makes it hide more than needed, never less.
    """
    if not isinstance(url, str):
        return "<not a URL>"
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or any(c in scheme for c in "@:/?#"):
        return "<unparseable URL>"
    hidden: list[tuple[int, int]] = []
    at = rest.rfind("@")
    colon = rest.find(":", 0, max(at, 0))
    if colon >= 0:
        hidden.append((colon + 1, at))
    values = _secret_values(rest)
    if values:
        hidden.append((values[0], len(rest)))
    shown, pos = [], 0
    for begin, end in sorted(hidden):
        if end <= pos:
            continue
        if begin > pos:
            shown.append(rest[pos:begin])
            shown.append(MASK)
        elif not shown or shown[-1] != MASK:
            shown.append(MASK)
        pos = max(pos, end)
    shown.append(rest[pos:])
    return f"{scheme}://{''.join(shown)}"
