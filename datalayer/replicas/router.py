"""The routing decision, on its own (Django's ``db_for_read`` / ``db_for_write``).

Given the replicas' last known states (:class:`ReplicaState`, refreshed by
:mod:`datalayer.replicas.health`) and the position the caller must see
(:mod:`datalayer.replicas.positions`): a usable replica, recently checked,
that has replayed that position; else the primary, and why.  Nothing here
does I/O or keeps state beyond whose turn it is, so it is tested with plain
values.

:meth:`Router.pick` is what every routed read asks (the replica or None, no
allocation); :meth:`Router.db_for_read` returns the same decision as a
:class:`Route` that says why, for the DEBUG log line and for tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .positions import format_position

__all__ = [
    "DOWN",
    "LAG",
    "NOT_REPLAYED",
    "PENDING",
    "REPLICA",
    "STALE",
    "UNKNOWN",
    "ReplicaState",
    "Route",
    "Router",
]


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """What the last check of a replica found."""

    usable: bool
    replay: int = 0  # LSN replayed
    lag: float | None = None  # seconds
    reason: str = "not checked yet"
    checked: float = 0.0  # time.monotonic() of the check


class _HasState(Protocol):
    name: str
    state: ReplicaState


# Route reasons (codes; str(route) says them in words).
REPLICA = "replica"
PENDING = "position not known yet"
NOT_REPLAYED = "position not replayed"
LAG = "lag"
DOWN = "down"
UNKNOWN = "state not known"
STALE = "no recent check"


class Route:
    """Where a read goes (``replica`` None: the primary) and why (``str()`` says it)."""

    __slots__ = ("code", "detail", "lag", "name", "needed", "replayed", "replica")

    def __init__(self, replica: Any, code: str, needed: int = 0, replayed: int = 0,
                 lag: float | None = None, detail: str = "", name: str = "") -> None:
        # A plain class: built for each routed read when DEBUG is on, and cheaper so.
        self.replica = replica
        self.code = code
        self.needed = needed
        self.replayed = replayed
        self.lag = lag
        self.detail = detail
        self.name = name

    def __repr__(self) -> str:
        return f"<Route {self}>"

    def __str__(self) -> str:
        if self.replica is not None:
            return (f"{self.name} (replayed {format_position(self.replayed)}, needs "
                    f"{format_position(self.needed)}, lag {self.lag or 0:.2f} s)")
        if self.code == PENDING:
            return ("primary: this caller's last write committed less than a check interval "
                    "ago and its position is not known yet")
        if self.code == NOT_REPLAYED:
            return (f"primary: {self.name} has not replayed this caller's last write "
                    f"(needs {format_position(self.needed)}, replayed "
                    f"{format_position(self.replayed)})")
        if self.code == LAG:
            return f"primary: {self.name} lags ({self.detail})"
        if self.code == UNKNOWN:
            return f"primary: {self.name} not checked yet"
        if self.code == DOWN:
            return f"primary: {self.name} is skipped ({self.detail})"
        if self.code == STALE:
            return f"primary: {self.name} did not answer its check ({self.detail})"
        return f"primary: {self.detail or self.code}"


_REASON_RANK = {NOT_REPLAYED: 0, LAG: 1, STALE: 2, UNKNOWN: 3, DOWN: 4}


class Router:
    """The routing decision, on its own: ``db_for_read`` / ``db_for_write`` (Django's names).

    ``replicas`` are objects with a ``name`` and a ``state``
    (:class:`ReplicaState`); the router only reads them, so it can be tested
    with plain values.  Healthy replicas are taken in turn.
    """

    def __init__(self, replicas: Sequence[_HasState], *, stale_after: float) -> None:
        self.replicas = list(replicas)
        self.stale_after = stale_after
        self._turn = itertools.count()
        self._only = self.replicas[0] if len(self.replicas) == 1 else None

    def db_for_write(self) -> Route:
        return Route(None, "write", detail="a write")

    def pick(self, needed: int | None, now: float) -> Any:
        """Return the replica a read goes to for a caller that must see ``needed``, or None.

        The decision of :meth:`db_for_read` without saying why: asked by every routed
        read, it reads each replica's state once and allocates nothing.
        """
        if needed is None:
            return None
        replica = self._only
        if replica is not None:  # one replica, the usual case: no turn to take
            state = replica.state
            if state.usable and state.replay >= needed and now - state.checked <= \
                    self.stale_after:
                return replica
            return None
        replicas = self.replicas
        count = len(replicas)
        start = next(self._turn)
        for k in range(count):
            replica = replicas[(start + k) % count]
            state = replica.state
            if state.usable and state.replay >= needed and now - state.checked <= \
                    self.stale_after:
                return replica
        return None

    def db_for_read(self, needed: int | None, now: float) -> Route:
        """Return where a read goes for a caller that must see position ``needed``, and why.

        ``needed`` None: the caller wrote and its position is not known yet (primary).
        """
        if needed is None:
            return Route(None, PENDING)
        replica = self.pick(needed, now)
        if replica is not None:
            state = replica.state
            return Route(replica, REPLICA, needed, state.replay, state.lag, name=replica.name)
        best: Route | None = None
        for replica in self.replicas:
            state = replica.state
            if not state.usable:
                code = UNKNOWN if state.checked == 0.0 else (LAG if state.reason.startswith(
                    "lag") else DOWN)
                why = Route(None, code, detail=state.reason, name=replica.name)
            elif now - state.checked > self.stale_after:
                why = Route(None, STALE, detail=f"last answered {now - state.checked:.1f} s ago",
                            name=replica.name)
            elif state.replay < needed:
                why = Route(None, NOT_REPLAYED, needed, state.replay, state.lag,
                            name=replica.name)
            else:  # its state changed since pick(): it is usable now
                return Route(replica, REPLICA, needed, state.replay, state.lag,
                             name=replica.name)
            if best is None or _REASON_RANK[why.code] < _REASON_RANK[best.code]:
                best = why
        assert best is not None
        return best


