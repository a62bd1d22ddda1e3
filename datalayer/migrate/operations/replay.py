"""Replay history as data: fold the operations' state changes, no database, no model."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from .base import Operation
from .state import SchemaState

__all__ = ["fold"]


def fold(ops: Iterable[Operation], state: SchemaState | None = None) -> SchemaState:
    """Return ``state`` (default: empty) after each operation's :meth:`~Operation.forward`."""
    return functools.reduce(lambda s, op: op.forward(s), ops, state or SchemaState())
