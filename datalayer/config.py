"""Read the environment once into a frozen :class:`Settings`.

Everything else in the package takes a ``Settings`` (or a database built from
one); tests build ``Settings`` directly.  Bad values are all reported in one
:class:`~datalayer.errors.ConfigError` naming each variable and what it
accepts.  No repr, message or log line contains the password.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from . import _redact
from .errors import ConfigError

__all__ = [
    "ConfigWarning",
    "Settings",
    "load_settings",
    "mask_url",
]

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_URL_SCHEMES = ("postgresql", "postgres")
_SECRET_OPTIONS = frozenset({"password", "sslpassword"})
_RELEASE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+:-]*"
"""What DB_RELEASE may be: it follows a "/" in application_name, so no "/" or spaces.
(Compiled on first use, by ``re``'s cache: most processes set no DB_RELEASE.)"""
CLIENT_TIMEOUT_MARGIN = 5.0
"""Seconds added to DB_STATEMENT_TIMEOUT for the default DB_CLIENT_TIMEOUT.

Additive, not a multiple: the server's own timeout should fire first (its
clear ``57014`` error, and the connection stays usable), so the margin only
has to cover what the server's clock does not see — the round trip, a large
result on its way, a loaded client host — which does not grow with the
timeout; and a frozen server should hold a thread for not much longer than
the timeout the operator chose (x2 would make a 30 s timeout a 60 s hang).
"""

DEFAULT_CLIENT_TIMEOUT = 60.0
"""Seconds a statement may be in flight before the client gives up, when neither
DB_CLIENT_TIMEOUT nor DB_STATEMENT_TIMEOUT is set.

Without it a silent network (a partition, a stalled proxy or NAT that still
ACKs) holds a thread for ever: TCP keepalives see a peer that answers.  60 s is
far above what an operation of this package takes (a 10,000-row import: 0.1 s)
and short enough that a stuck worker is noticed; a longer job sets
DB_CLIENT_TIMEOUT (or DB_STATEMENT_TIMEOUT) itself, and migrations lift it."""

DEFAULT_MAX_IDLE_CONNS = 5
"""DB_MAX_IDLE_CONNS when unset: this, or DB_MAX_OPEN_CONNS when that is smaller."""

TCP_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                  "keepalives_count": 3}
"""libpq's TCP keepalive settings, on by default: a server host that died or a
network path that dropped the connection is noticed within about a minute
(30 s idle + 3 probes 10 s apart), also on an idle pooled connection.  A URL
option (``?keepalives_idle=60``) overrides each."""

# ASCII digits only: \d would accept other scripts' digits ('٣' read as 3).  Compiled on
# first use (re caches it): a script whose environment sets no duration never pays for it.
_DURATION_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?\s*$"
_DURATION_FLAGS = re.IGNORECASE | re.ASCII
_MAX_DURATION = 2147483.647
"""The longest duration accepted, in seconds: PostgreSQL's largest timeout (2^31-1 ms)."""
_UNIT_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}


class _MaskedURL(str):
    """A replica URL whose repr hides the password (a ``Settings`` repr shows the tuple)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(_redact.mask_url(str(self)))


class ConfigWarning(UserWarning):
    """A configuration that works but is probably not what was meant."""


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, whether it parses or not.

    See :func:`datalayer._redact.mask_url`: everything that could be a
    password (an unencoded ``/``, ``#``, ``?``, ``@`` or ``:`` in it included)
    is hidden.
    """
    return _redact.mask_url(url)


_ENCODE_HINT = (
    "percent-encode the special characters of the password (/ as %2F, ? as %3F, # as %23, "
    "@ as %40, : as %3A, % as %25), e.g. with urllib.parse.quote(password, safe='')"
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the package reads from the environment, validated.

    ``host`` is ``None`` when the embedded server is to be used (neither
    DATABASE_URL nor DB_HOST set); :func:`datalayer.db.connect` fills it in.
    Durations are in seconds; ``None`` or ``0`` means no limit (``client_timeout``:
    ``None`` means the default, ``0`` off, see :attr:`effective_client_timeout`).
    ``max_idle_conns`` left out is ``min(5, max_open_conns)``.
    """

    host: str | None = None
    port: int = 5432
    user: str = "postgres"
    password: str = dataclasses.field(default="", repr=False)
    dbname: str = "postgres"
    sslmode: str = "prefer"
    # repr=False: a URL's query may carry sslpassword.
    options: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    max_open_conns: int = 25
    # None (the default): min(DEFAULT_MAX_IDLE_CONNS, max_open_conns), set in __post_init__.
    max_idle_conns: int = None  # type: ignore[assignment]
    conn_max_lifetime: float = 3600.0
    conn_max_idle_time: float = 1800.0
    pool_timeout: float = 10.0
    max_checkout_time: float | None = None
    connect_timeout: float = 5.0
    statement_timeout: float | None = None
    # None: DB_STATEMENT_TIMEOUT + CLIENT_TIMEOUT_MARGIN when that is set, else off;
    # 0: off.  See effective_client_timeout.
    client_timeout: float | None = None
    lock_timeout: float | None = None
    idle_in_transaction_timeout: float | None = 60.0
    application_name: str = "datalayer"
    # DB_RELEASE: the application's release (a version, a git SHA), announced to the
    # server in application_name as ``<application_name>/<release>`` (migrate/runtime/releases).
    release: str | None = None
    migrations_dir: Path = Path("migrations")
    dev_database_url: str | None = dataclasses.field(default=None, repr=False)
    embedded_dir: Path = Path(".datalayer/pg")
    source: str = "DB_*"
    # DB_REPLICA_URLS: streaming replicas for reads (datalayer.replicas); shown masked.
    replicas: tuple[str, ...] = ()
    replica_max_lag: float = 5.0
    replica_check_interval: float = 0.1

    def __post_init__(self) -> None:
        # Frozen: object.__setattr__ fills in what was left to its default.
        idle_default = self.max_idle_conns is None
        object.__setattr__(self, "_idle_default", idle_default)
        if idle_default and isinstance(self.max_open_conns, int):
            object.__setattr__(self, "max_idle_conns",
                               max(1, min(DEFAULT_MAX_IDLE_CONNS, self.max_open_conns)))
        for name in _ZERO_IS_NONE:  # documented: 0 means none, as DB_STATEMENT_TIMEOUT=0
            if getattr(self, name) == 0:
                object.__setattr__(self, name, None)
        problems = _check_ranges(self)
        urls = self.replicas
        if isinstance(urls, str):
            urls = _split_urls(urls)
        object.__setattr__(self, "replicas", tuple(_MaskedURL(str(u).strip()) for u in urls))
        for url in self.replicas:
            _, problem = _parse_url(url)
            if problem and "DB_REPLICA_URLS" not in problems:
                problems["DB_REPLICA_URLS"] = problem
        if problems:
            raise ConfigError(problems)

    def replica_settings(self) -> list[Settings]:
        """Return one ``Settings`` per replica: its URL, with this pool's limits and timeouts."""
        out = []
        for url in self.replicas:
            fields, _ = _parse_url(url)
            out.append(dataclasses.replace(
                self, host=fields["host"], port=fields["port"], user=fields["user"],
                password=fields["password"], dbname=fields["dbname"],
                sslmode=fields.get("sslmode", "prefer"), options=fields["options"],
                replicas=(), source="DB_REPLICA_URLS",
            ))
        return out

    @property
    def embedded(self) -> bool:
        """True when no server was configured and the embedded one is to be used."""
        return self.host is None

    @property
    def effective_client_timeout(self) -> float | None:
        """Return how long a statement may be in flight before the client gives up.

        DB_CLIENT_TIMEOUT when set (0: off, ``None`` returned); otherwise
        DB_STATEMENT_TIMEOUT plus :data:`CLIENT_TIMEOUT_MARGIN`, so the server's
        own timeout normally fires first; :data:`DEFAULT_CLIENT_TIMEOUT` when
        neither is set, so that the default configuration never waits for ever.
        """
        if self.client_timeout is not None:
            return self.client_timeout or None
        if self.statement_timeout:
            return self.statement_timeout + CLIENT_TIMEOUT_MARGIN
        return DEFAULT_CLIENT_TIMEOUT

    def url(self, *, masked: bool = True) -> str:
        """Return the connection URL; the password is shown as ``***`` unless ``masked=False``."""
        host = self.host or "(embedded)"
        netloc = quote(self.user, safe="")
        if self.password:
            netloc += ":" + ("***" if masked else quote(self.password, safe=""))
        hostpart = host if not host.startswith("/") else ""
        netloc += f"@{hostpart}:{self.port}" if hostpart else "@"
        query = dict(self.options)
        if hostpart == "" and self.host:
            query["host"] = self.host
        if self.sslmode != "prefer":
            query["sslmode"] = self.sslmode
        tail = "&".join(
            f"{k}={'***' if masked and k.lower() in _SECRET_OPTIONS else quote(str(v), safe='/')}"
            for k, v in query.items()
        )
        base = f"postgresql://{netloc}/{quote(self.dbname, safe='')}"
        return f"{base}?{tail}" if tail else base

    @property
    def announced_name(self) -> str:
        """Return the ``application_name`` sent: ``<name>/<DB_RELEASE>``, or the name alone."""
        return f"{self.application_name}/{self.release}" if self.release else self.application_name

    def describe(self) -> str:
        """Name the database by user, host, port and name (never the password)."""
        return f"{self.user}@{self.host or '(embedded)'}:{self.port}/{self.dbname}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments for ``psycopg2.connect`` (password included)."""
        if self.host is None:
            raise ConfigError({"DB_HOST": "no server configured (embedded server not started)"})
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "sslmode": self.sslmode,
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": self.announced_name,
        }
        if self.password:
            kwargs["password"] = self.password
        kwargs.update(TCP_KEEPALIVES)
        options = _server_options(self)
        if options:
            kwargs["options"] = options
        extra = dict(self.options)
        if "options" in extra and options:
            kwargs["options"] = f"{extra.pop('options')} {options}"
        kwargs.update(extra)
        return kwargs

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated again).

        A ``max_idle_conns`` that was left to its default follows a new
        ``max_open_conns``.
        """
        if getattr(self, "_idle_default", False):
            changes.setdefault("max_idle_conns", None)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> Settings:
        """Build settings from a ``postgresql://`` URL plus keyword overrides."""
        parsed, problem = _parse_url(url)
        if problem:
            raise ConfigError({"DATABASE_URL": problem})
        parsed.update(overrides)
        parsed.setdefault("source", "DATABASE_URL")
        return cls(**parsed)


_ZERO_IS_NONE = ("statement_timeout", "lock_timeout", "idle_in_transaction_timeout",
                 "max_checkout_time")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _server_options(s: Settings) -> str:
    """Build the libpq ``options`` string that sets the server-side timeouts."""
    opts = []
    if s.statement_timeout:
        opts.append(f"-c statement_timeout={_ms(s.statement_timeout)}")
    if s.lock_timeout:
        opts.append(f"-c lock_timeout={_ms(s.lock_timeout)}")
    if s.idle_in_transaction_timeout:
        opts.append(
            f"-c idle_in_transaction_session_timeout={_ms(s.idle_in_transaction_timeout)}"
        )
    return " ".join(opts)


def _check_ranges(s: Settings) -> dict[str, str]:
    problems: dict[str, str] = {}

    def need(ok: bool, name: str, msg: str) -> None:
        if not ok and name not in problems:
            problems[name] = msg

    need(1 <= s.port <= 65535, "DB_PORT", f"{s.port} is out of range; use 1-65535")
    need(s.sslmode in SSLMODES, "DB_SSLMODE", f"{s.sslmode!r} is not one of {', '.join(SSLMODES)}")
    need(bool(s.user), "DB_USER", "must not be empty; use a role name such as postgres")
    need(bool(s.dbname), "DB_NAME", "must not be empty; use a database name such as postgres")
    need(s.host is None or bool(s.host.strip()), "DB_HOST", "must not be empty; unset it "
         "to use the embedded server, or give a host name")
    for name, count in (("DB_MAX_OPEN_CONNS", s.max_open_conns),
                        ("DB_MAX_IDLE_CONNS", s.max_idle_conns)):
        need(count > 0, name, f"{count} must be a whole number > 0")
    need(
        s.max_idle_conns <= s.max_open_conns,
        "DB_MAX_IDLE_CONNS",
        f"{s.max_idle_conns} is more than DB_MAX_OPEN_CONNS ({s.max_open_conns}); "
        "idle connections are part of the open ones, so use a value <= DB_MAX_OPEN_CONNS",
    )
    for name, value in (
        ("DB_CONN_MAX_LIFETIME", s.conn_max_lifetime),
        ("DB_CONN_MAX_IDLE_TIME", s.conn_max_idle_time),
        ("DB_POOL_TIMEOUT", s.pool_timeout),
        ("DB_CONNECT_TIMEOUT", s.connect_timeout),
    ):
        need(value > 0, name, f"{value} must be a duration > 0 (seconds, or with ms/s/min/h)")
    for name, opt in (
        ("DB_STATEMENT_TIMEOUT", s.statement_timeout),
        ("DB_LOCK_TIMEOUT", s.lock_timeout),
        ("DB_IDLE_IN_TRANSACTION_TIMEOUT", s.idle_in_transaction_timeout),
        ("DB_MAX_CHECKOUT_TIME", s.max_checkout_time),
    ):
        need(opt is None or opt > 0, name, f"{opt} must be a duration > 0, or unset / 0 for none")
    need(s.client_timeout is None or s.client_timeout >= 0, "DB_CLIENT_TIMEOUT",
         f"{s.client_timeout} must be a duration >= 0 (0: off), or unset for "
         f"DB_STATEMENT_TIMEOUT + {CLIENT_TIMEOUT_MARGIN:g} s ({DEFAULT_CLIENT_TIMEOUT:g} s "
         "without it)")
    need(bool(s.application_name) and len(s.application_name) < 64, "DB_APPLICATION_NAME",
         "must be 1-63 characters")
    if s.release is not None:
        need(bool(re.fullmatch(_RELEASE_PATTERN, s.release)), "DB_RELEASE",
             "must be a release name (a version or a git SHA): letters, digits and . _ - + : "
             "only, no spaces or slashes")
        need(len(s.announced_name) < 64, "DB_RELEASE",
             f"is too long: DB_APPLICATION_NAME/DB_RELEASE must be 1-63 characters "
             f"({len(s.announced_name)} now); shorten one of them")
    need(s.replica_max_lag > 0, "DB_REPLICA_MAX_LAG",
         f"{s.replica_max_lag} must be a duration > 0 (seconds, or with ms/s/min/h)")
    need(0.001 <= s.replica_check_interval <= 60, "DB_REPLICA_CHECK_INTERVAL",
         f"{s.replica_check_interval} must be a duration from 1 ms to 60 s (e.g. 100ms)")
    return problems


def _split_urls(text: str) -> list[str]:
    """Split DB_REPLICA_URLS (comma-separated) into URLs; blanks between commas are ignored."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """Split a URL's query as libpq does: ``&`` between pairs, percent-decoding, no ``+``."""
    pairs = []
    for item in query.split("&"):
        if item:
            key, _, value = item.partition("=")
            pairs.append((unquote(key), unquote(value)))
    return pairs


def _parse_url(url: str) -> tuple[dict[str, Any], str | None]:
    """Split a libpq URL into Settings fields; return (fields, problem)."""
    masked = mask_url(url)
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return {}, f"{masked} is not a valid URL; expected postgresql://user:password@host:5432/name"
    if parts.scheme not in _URL_SCHEMES:
        return {}, (
            f"{masked} has scheme {parts.scheme!r}; expected postgresql://user:password@host:5432/name"
        )
    if "#" in url or "@" in parts.path or "@" in parts.query:
        # An unencoded "/", "?", "#" or "@" in the password: the host, port and name a parser
        # finds would be parts of the password.
        return {}, f"{masked} cannot be read unambiguously; {_ENCODE_HINT}"
    try:
        port = parts.port
    except ValueError:
        return {}, (f"{masked} has a port that is not a number from 1 to 65535; if the "
                    f"password contains a colon or a slash, {_ENCODE_HINT}")
    pairs = _query_pairs(parts.query)
    secret_at = next((i for i, (k, _) in enumerate(pairs) if k in _SECRET_OPTIONS), None)
    if secret_at is not None and any(k not in _SECRET_OPTIONS for k, _ in pairs[secret_at:]):
        # "?password=a&b=c": option b, or a password "a&b=c"?  What follows could be part
        # of the password, and would show in messages as an option's name or value.
        return {}, (f"{masked} has parameters after password=, which could be part of the "
                    "password; put password= last, or give the password in the URL as "
                    f"postgresql://user:PASSWORD@host/name ({_ENCODE_HINT})")
    query = dict(pairs)
    host = unquote(parts.hostname or "") or query.pop("host", "")
    query.pop("host", None)
    if not host:
        return {}, (
            f"{masked} names no host; add one (postgresql://user@HOST/name) or ?host=/socket/dir"
        )
    fields: dict[str, Any] = {
        "host": host,
        "port": port or int(query.pop("port", "5432") or 5432),
        "user": unquote(parts.username or "") or query.pop("user", "postgres"),
        "password": unquote(parts.password or "") or query.pop("password", ""),
        "dbname": unquote(parts.path.lstrip("/")) or query.pop("dbname", "postgres"),
    }
    if "sslmode" in query:
        fields["sslmode"] = query.pop("sslmode")
    query.pop("user", None)
    query.pop("password", None)
    query.pop("dbname", None)
    fields["options"] = query
    return fields, None


def _duration(raw: str, *, allow_none: bool) -> float | None:
    m = re.match(_DURATION_PATTERN, raw, _DURATION_FLAGS)
    if not m:
        raise ValueError("not a duration")
    value = float(m.group(1)) * _UNIT_SECONDS[(m.group(2) or "").lower() or None]
    if not value <= _MAX_DURATION:  # 400 digits: inf, which no timeout can be set to
        raise ValueError("too long")
    if value == 0 and allow_none:
        return None
    return value


def _env_folder(cwd: str | Path | None) -> tuple[Path, bool]:
    """Return where .env files are read: the project folder, else ``cwd``; and whether
    that folder is anchored (a project's, or ``cwd`` given) rather than the current one.

    :raises ProjectError: a pyproject.toml on the way up that is not valid TOML.
    """
    from ._pyproject import find_pyproject  # deferred: tomllib only when settings are read

    start = Path(cwd) if cwd is not None else Path.cwd()
    found = find_pyproject(start)
    if found is not None:
        return found[0].parent, True
    return start, cwd is not None


_DURATION_HINT = (
    "a number of seconds, or a number with ms, s, min or h (e.g. 30, 500ms, 2min), "
    "at most 596h"
)


def file_environment(
    *,
    env_name: str | None = None,
    env_file: str | Path | None = None,
    cwd: str | Path | None = None,
) -> dict[str, str]:
    """Return the process environment over the variables of the ``.env`` files
    :func:`load_settings` reads (same files, same precedence), for settings that
    are not :class:`Settings` fields (``DATALAYER_MODELS``, ``DATALAYER_MIGRATIONS_DIR``
    for the project).  Missing files are skipped: :func:`load_settings` reports them.
    """
    from dotenv import dotenv_values  # environs' own dependency

    base, _ = _env_folder(cwd)
    paths = [Path(env_file) if env_file is not None else None,
             base / f".env.{env_name}" if env_name is not None else None,
             base / ".env"]
    merged: dict[str, str] = {}
    for path in reversed([p for p in paths if p is not None and p.is_file()]):
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ)
    return merged


def load_settings(
    *,
    env_name: str | None = None,
    env_file: str | Path | None = None,
    cwd: str | Path | None = None,
) -> Settings:
    """Read the environment (and ``.env`` files) into validated :class:`Settings`.

    The files are looked for in the project folder, the one holding the
    nearest ``pyproject.toml`` with ``[tool.datalayer]`` upward of ``cwd``
    (default: the current folder), else in ``cwd`` itself: ``.env`` is read
    if present; ``env_name`` adds ``.env.NAME`` and ``env_file`` a file of
    your choice, both of which must exist and win over ``.env``.  Variables
    already in the process environment win over every file.  A relative
    ``DATALAYER_EMBEDDED_DIR`` (default ``.datalayer/pg``) is taken from the
    project folder too, so every subfolder uses the project's one server.

    :raises ConfigError: naming every bad variable and what it accepts.
    """
    from environs import Env  # deferred: keeps ``import datalayer`` light

    base, anchored = _env_folder(cwd)
    env = Env(eager=False)
    problems: dict[str, str] = {}
    # Files read first win over files read later (override=False).
    if env_file is not None:
        path = Path(env_file)
        if not path.is_file():
            problems["--env-file"] = f"{path} does not exist; give the path of a .env-style file"
        else:
            env.read_env(str(path), recurse=False)
    if env_name is not None:
        path = base / f".env.{env_name}"
        if not path.is_file():
            problems["--env"] = (
                f"{path} does not exist; create it or choose another NAME (it loads .env.NAME)"
            )
        else:
            env.read_env(str(path), recurse=False)
    dotenv = base / ".env"
    if dotenv.is_file():
        env.read_env(str(dotenv), recurse=False)

    def raw(name: str) -> str | None:
        value = env._get_value(name, None)  # process environment first, then files
        return None if value is None else str(value)

    values: dict[str, Any] = {}

    def parse(name: str, field: str, conv: Callable[[str], Any], hint: str, *,
              show_value: bool = True) -> None:
        text = raw(name)
        if text is None:
            return
        try:
            values[field] = conv(text)
        except (ValueError, TypeError):
            value = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"
            shown = f"{value!r} is not valid; " if show_value else ""
            problems[name] = f"{shown}expected {hint}"

    def integer(text: str) -> int:
        digits = text.strip()
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
            raise ValueError("not a whole number")  # '٣' or 400 digits: refused
        return int(digits)

    url = raw("DATABASE_URL")
    db_host = raw("DB_HOST")
    if url is not None and url.strip():
        fields, problem = _parse_url(url)
        if problem:
            problems["DATABASE_URL"] = problem
        else:
            values.update(fields)
            values["source"] = "DATABASE_URL"
        if db_host is not None:
            warnings.warn(
                "both DATABASE_URL and DB_HOST are set; DATABASE_URL wins and DB_* are ignored",
                ConfigWarning,
                stacklevel=2,
            )
    elif db_host is not None:
        if not db_host.strip():
            problems["DB_HOST"] = "is empty; unset it to use the embedded server, or give a host"
        values["host"] = db_host.strip()
        values["source"] = "DB_*"
        parse("DB_PORT", "port", integer, "a whole number from 1 to 65535")
        for name, field in (("DB_USER", "user"), ("DB_NAME", "dbname")):
            text = raw(name)
            if text is not None:
                values[field] = text
        password = raw("DB_PASSWORD")
        if password is not None:
            values["password"] = password
        text = raw("DB_SSLMODE")
        if text is not None:
            values["sslmode"] = text.strip().lower()
    else:
        values["source"] = "embedded"
    if db_host is None:
        # Not used (DATABASE_URL or the embedded server), yet a malformed value is still a
        # mistake to report: DB_PORT=abc must not start the embedded server in silence.
        port = raw("DB_PORT")
        if port is not None:
            try:
                number = integer(port)
            except ValueError:
                number = 0
            if not 1 <= number <= 65535:
                shown = port if len(port) <= 40 else f"{port[:20]}... ({len(port)} characters)"
                problems["DB_PORT"] = (
                    f"{shown!r} is not valid; expected a whole number from 1 to 65535"
                )
        mode = raw("DB_SSLMODE")
        if mode is not None and mode.strip().lower() not in SSLMODES:
            problems["DB_SSLMODE"] = f"{mode.strip()!r} is not one of {', '.join(SSLMODES)}"

    parse("DB_MAX_OPEN_CONNS", "max_open_conns", integer, "a whole number > 0")
    parse("DB_MAX_IDLE_CONNS", "max_idle_conns", integer, "a whole number > 0")
    for name, field in (
        ("DB_CONN_MAX_LIFETIME", "conn_max_lifetime"),
        ("DB_CONN_MAX_IDLE_TIME", "conn_max_idle_time"),
        ("DB_POOL_TIMEOUT", "pool_timeout"),
        ("DB_CONNECT_TIMEOUT", "connect_timeout"),
    ):
        parse(name, field, lambda t: _duration(t, allow_none=False), _DURATION_HINT)
    for name, field in (
        ("DB_STATEMENT_TIMEOUT", "statement_timeout"),
        ("DB_LOCK_TIMEOUT", "lock_timeout"),
        ("DB_IDLE_IN_TRANSACTION_TIMEOUT", "idle_in_transaction_timeout"),
        ("DB_MAX_CHECKOUT_TIME", "max_checkout_time"),
    ):
        parse(name, field, lambda t: _duration(t, allow_none=True), _DURATION_HINT + " (0: none)")
    parse("DB_CLIENT_TIMEOUT", "client_timeout", lambda t: _duration(t, allow_none=False),
          _DURATION_HINT + " (0: off)")
    text = raw("DB_APPLICATION_NAME")
    if text is not None:
        values["application_name"] = text
    text = raw("DB_RELEASE")
    if text is not None and text.strip():
        values["release"] = text.strip()
    text = raw("DATALAYER_MIGRATIONS_DIR")
    if text:
        values["migrations_dir"] = Path(text)
    text = raw("DATALAYER_EMBEDDED_DIR")
    if anchored:  # relative to the project (or the given cwd) ...
        values["embedded_dir"] = base / (text or Settings.embedded_dir)
    elif text:  # ... else to the current folder, as before there were projects
        values["embedded_dir"] = Path(text)
    text = raw("DATALAYER_DEV_DATABASE_URL")
    if text:
        _, problem = _parse_url(text)
        if problem:
            problems["DATALAYER_DEV_DATABASE_URL"] = problem
        values["dev_database_url"] = text

    text = raw("DB_REPLICA_URLS")
    if text is not None:
        values["replicas"] = tuple(_split_urls(text))
    parse("DB_REPLICA_MAX_LAG", "replica_max_lag", lambda t: _duration(t, allow_none=False),
          _DURATION_HINT)
    parse("DB_REPLICA_CHECK_INTERVAL", "replica_check_interval",
          lambda t: _duration(t, allow_none=False), _DURATION_HINT)

    if problems:
        # Report range problems of the values that did parse, too: one message for all.
        try:
            Settings(**values)
        except (ConfigError, TypeError) as exc:
            if isinstance(exc, ConfigError):
                for k, v in exc.problems.items():
                    problems.setdefault(k, v)
        raise ConfigError(problems)
    return Settings(**values)
