"""What a migrator records: the replay switch, its operations with their steps, opaque calls.

Inside :func:`replaying` (a per-thread switch) operations change the state only and
derive no SQL.  Otherwise each operation is recorded as a :class:`Recorded`: the
operation, the callables it queued and the step each runs; :class:`Owners` finds,
for a callable of a migrator's queue, the operation and the step (what the phase
split, the pending statements and the offline SQL read).  ``migrator.sql`` and
``migrator.run`` calls are also noted as :class:`Opaque` (``squash`` reads them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar, cast

from .. import operations as ops
from ..ddl.alter import Step
from ..ddl.spec import (
    TableSpec,
)
from ..ddl.spec import table_spec as _table_spec

__all__ = ["Opaque", "Owners", "Recorded", "replaying", "table_spec"]

# -- replays derive no SQL ------------------------------------------------------------
# A replay (router.replay: the history run in fake mode to know the schema) throws the
# SQL of every operation away; deriving it renders the table's whole DDL before and
# after each operation, which made long histories quadratic in the table's width.
# Inside ``replaying()`` (a per-thread switch) the operations change the state only.
_REPLAY = threading.local()
_T = TypeVar("_T")


def _unless_replaying(fn: Callable[..., _T], empty: Callable[[], _T]) -> Callable[..., _T]:
    def wrapper(*args: Any, **kwargs: Any) -> _T:
        return empty() if getattr(_REPLAY, "on", False) else fn(*args, **kwargs)

    return wrapper


def _replaying_now() -> bool:
    return bool(getattr(_REPLAY, "on", False))


@contextlib.contextmanager
def replaying() -> Iterator[None]:
    """Within this block (this thread), operations update the state and queue no SQL."""
    previous = getattr(_REPLAY, "on", False)
    _REPLAY.on = True
    try:
        yield
    finally:
        _REPLAY.on = previous


table_spec = _unless_replaying(_table_spec, lambda: cast(TableSpec, None))
"""The table's spec (:func:`..ddl.spec.table_spec`); None while :func:`replaying`."""


@dataclasses.dataclass(frozen=True)
class Opaque:
    """A ``migrator.sql(...)`` or ``migrator.run(fn)`` call, as a replay records it.

    A replay never executes either: it notes them (``squash`` refuses to fold data
    changes it cannot carry; the lint reads the SQL).
    """

    kind: str  # "sql" or "run"
    text: str  # the SQL, or the function's name
    params: tuple[Any, ...] = ()


_OPAQUE = "_datalayer_opaque"  # the Opaque calls recorded (in the shared __dict__)


class Recorded(NamedTuple):
    """One operation a migrator recorded, the callables it queued, and what each runs.

    ``steps[i]`` is the step (:mod:`..ddl.alter`) ``queued[i]`` runs; None for Python
    code, a check, or hand-written SQL (only the lint's parser reads that).
    """

    operation: ops.Operation
    queued: tuple[Any, ...]
    steps: tuple[Step | None, ...]


class Owners:
    """The recorded operations, looked up by the callables of a migrator's queue.

    The phase split, the pending statements and the offline SQL read each queued
    callable's operation and step here.  A callable user code wrapped with
    :func:`functools.wraps` (its ``__wrapped__``) is found as the one it wraps.
    """

    def __init__(self, recorded: Iterable[Recorded]) -> None:
        self.recorded = list(recorded)
        self._at: dict[int, tuple[int, int]] = {}
        for n, rec in enumerate(self.recorded):
            for i, queued in enumerate(rec.queued):
                self._at.setdefault(id(queued), (n, i))

    def find(self, entry: Any) -> tuple[int, int] | None:
        """Return (which record, which of its callables) ``entry`` is, or None: no operation's."""
        for _ in range(32):  # a bound: a proxy may answer any attribute with a new object
            if entry is None:
                return None
            hit = self._at.get(id(entry))
            if hit is not None:
                return hit
            entry = getattr(entry, "__wrapped__", None)
        return None

    def operation(self, entry: Any) -> ops.Operation | None:
        """Return the operation that queued ``entry`` (None: no operation did)."""
        hit = self.find(entry)
        return None if hit is None else self.recorded[hit[0]].operation

    def queued(self, entry: Any) -> Any:
        """Return the callable the operation queued that ``entry`` is or wraps (else ``entry``).

        What renders an operation's statement without running the user's wrapper.
        """
        hit = self.find(entry)
        return entry if hit is None else self.recorded[hit[0]].queued[hit[1]]

    def step(self, entry: Any) -> Step | None:
        """Return the step ``entry`` runs (None: Python code, hand-written SQL, or unknown)."""
        hit = self.find(entry)
        return None if hit is None else self.recorded[hit[0]].steps[hit[1]]
