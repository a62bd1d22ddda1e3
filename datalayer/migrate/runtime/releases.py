"""Which releases of the application are connected: the gate of the contract phase.

A process with ``DB_RELEASE`` set announces itself to the server in
``application_name`` as ``<name>/<release>`` (``datalayer/3f9c2e1``).  Before a
contract phase removes what the previous release uses, ``apply`` (run as the
new release) looks at ``pg_stat_activity`` for connections to the same
database that announce *another* release; release names need no order (a git
SHA serves).  Connections that announce none (psql, a job without
DB_RELEASE, another tool) are listed as unknown and do not block.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from typing import Any

from ...errors import MigrationError

__all__ = [
    "Connection",
    "OldReleaseConnected",
    "connected",
    "release_of",
    "wait_for_old_releases",
]

_ANNOUNCED = re.compile(r"[^/\s]+/([A-Za-z0-9][A-Za-z0-9._+:-]*)")

NOTICE_EVERY = 10.0
"""Seconds between the "still connected" lines while ``--wait`` waits."""


def release_of(application_name: str | None) -> str | None:
    """Return the release a connection announces (``<name>/<release>``), or None."""
    found = _ANNOUNCED.fullmatch(application_name or "")
    return found.group(1) if found else None


@dataclasses.dataclass(frozen=True)
class Connection:
    """One other connection to the database, as ``pg_stat_activity`` shows it."""

    pid: int
    release: str | None
    application_name: str
    host: str | None
    age: float
    """Seconds since it connected."""

    def describe(self) -> str:
        """Return "pid N (release R) from HOST, connected S s ago"."""
        what = f"release {self.release}" if self.release else (
            f"application {self.application_name!r}" if self.application_name else "no name"
        )
        where = self.host or "a local socket"
        return f"pid {self.pid} ({what}) from {where}, connected {self.age:.0f} s ago"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_QUERY = (
    "SELECT pid, application_name, COALESCE(client_hostname, host(client_addr)), "
    "EXTRACT(EPOCH FROM now() - backend_start) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend' ORDER BY backend_start, pid"
)


def connected(db: Any) -> list[Connection]:
    """Return the other client connections to ``db``'s database, oldest first (reads only).

    A role that may not see other roles' sessions (not a superuser nor in
    ``pg_read_all_stats``) sees their pid only: they come out as unknown.
    """
    rows = db.execute_sql(_QUERY).fetchall()
    return [
        Connection(int(pid), release_of(app), app or "", host, float(age or 0))
        for pid, app, host, age in rows
    ]


class OldReleaseConnected(MigrationError):
    """Connections announcing another release are still there; the contract phase waits."""

    def __init__(self, message: str, connections: list[Connection]) -> None:
        super().__init__(message)
        self.connections = connections


def _others(db: Any, release: str) -> tuple[list[Connection], list[Connection]]:
    conns = connected(db)
    old = [c for c in conns if c.release is not None and c.release != release]
    unknown = [c for c in conns if c.release is None]
    return old, unknown


def _listing(conns: list[Connection]) -> str:
    return "; ".join(c.describe() for c in conns)


def wait_for_old_releases(
    db: Any,
    release: str | None,
    *,
    wait: float = 0.0,
    force: bool = False,
    where: str = "the database",
    on_notice: Callable[[str], None] | None = None,
    every: float = NOTICE_EVERY,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Connection]:
    """Return once no connection announces a release other than ``release``.

    Without ``release`` (DB_RELEASE unset on the apply) it returns at once.
    ``wait`` seconds are given for them to leave, with a line to ``on_notice``
    every ``every`` seconds naming who is left; ``force`` goes on anyway after
    one warning line.  Connections that announce no release are named once
    (as unknown) and never block.  Returns the old-release connections that
    ``force`` went past.

    :raises OldReleaseConnected: when they are still there after ``wait`` seconds.
    """
    if not release:
        return []
    notice = on_notice or (lambda line: None)
    old, unknown = _others(db, release)
    if unknown:
        notice(f"connected without a release (DB_RELEASE unset; not waited for): "
               f"{_listing(unknown)}")
    if old and force:
        notice(f"warning: --force: the contract phase runs while {len(old)} connection(s) "
               f"announce another release: {_listing(old)}")
        return old
    deadline = time.monotonic() + max(0.0, wait)
    last_notice = time.monotonic()
    if old and wait > 0:
        notice(f"waiting up to {wait:g} s for {len(old)} connection(s) of another release "
               f"to leave: {_listing(old)}")
    while old:
        now = time.monotonic()
        if now >= deadline:
            raise OldReleaseConnected(
                f"the contract phase removes what an older release may still use, and "
                f"{len(old)} connection(s) to {where} announce another release than "
                f"{release}: {_listing(old)}. Finish the deploy (stop the old release), then "
                "run it again; or wait for them with --wait SECONDS, or go on anyway with "
                "--force; nothing was applied",
                old,
            )
        sleep(min(1.0, deadline - now))
        old, _ = _others(db, release)
        if old and time.monotonic() - last_notice >= every:
            last_notice = time.monotonic()
            notice(f"still connected ({time.monotonic() - deadline + wait:.0f} s): "
                   f"{_listing(old)}")
    return []
