"""The planner's common ground: its modes and phases, and how a call becomes an operation.

A call (:mod:`.code`) is applied to the in-memory state at once (:func:`.split.apply_step`),
as the file will apply it, so the next comparison sees it; its operation is recorded with
the phase of the file it goes to.  The parts of the planner (:mod:`.tables`,
:mod:`.refusals`, :mod:`.columns`, :mod:`.keys`, :mod:`.indexes`) build on :class:`Emitter`;
:mod:`.planner` puts them together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee as pw

from ..ddl.spec import ColumnSpec, TableSpec, database_of
from ..operations.migrator import DatalayerMigrator
from .code import Step
from .outcome import Drop
from .split import Chunk as _Chunk
from .split import apply_step as _apply
from .writer import CodeWriter

_ONLINE_KW: tuple[str, Any] = ("online", True)
_NOT_VALID = frozenset({"add_check_not_valid", "add_foreign_key_not_valid"})


_PLAIN, _ONLINE, _SAFE = "plain", "online", "safe"
_PRE, _TX, _NO_TX = "pre", "tx", "no-tx"


def _state(migrator: DatalayerMigrator) -> dict[str, type[pw.Model]]:
    """Return the tables of the in-memory state by name.

    By table, not by class: peewee-migrate's ``orm`` iterates over models keyed by class
    name, so a new model named like an old one (``Person`` on a renamed table) hides it.
    """
    return dict(migrator.orm.__tables__)


def _columns(spec: TableSpec) -> dict[str, ColumnSpec]:
    return {c.name: c for c in spec.columns}


def _render_db(model: type[pw.Model]) -> Any:
    return database_of(model)


class Emitter:
    """What every part of the planner shares: the in-memory state, the mode, the phase.

    Each call is applied to the state (``sim``) as the file will apply it, and its
    operation recorded with the phase it runs in (:meth:`emit`); see
    :class:`.planner.Planner` for the modes.
    """

    def __init__(
        self, sim: DatalayerMigrator, *, forward: bool, mode: str = _PLAIN, postgres: int = 12,
        tx_rollback: bool = False,
    ) -> None:
        self.sim = sim
        self.forward = forward
        self.mode = mode
        self.tx_rollback = tx_rollback
        self.postgres = postgres
        self.writer = CodeWriter("m")
        self.ops: list[_Chunk] = []
        self.drops: list[Drop] = []
        self.irreversible: list[str] = []  # rollback steps that cannot run on rows
        self.phase = _NO_TX if mode == _ONLINE else _TX
        self.deferred: list[Callable[[], None]] = []
        self.not_valid: set[str] = set()  # tables given NOT VALID constraints in phase one
        self.backfill: dict[str, list[str]] = {}  # table -> fields to fill in phase two
        # A transactional rollback's serial keys, re-added as plain integers: numbered and
        # made the key by the rollback of the file before (outside a transaction).
        self.serial_keys: list[tuple[str, pw.Field]] = []

    @property
    def warnings(self) -> list[str]:
        return self.writer.warnings

    def warn(self, message: str) -> None:
        if self.forward:
            self.writer.warnings.append(message)

    def online(self, *, phase_one: bool = False) -> list[tuple[str, Any]]:
        """Return ``[("online", True)]`` when the next operation is to be written online."""
        if self.mode == _ONLINE or (self.mode == _SAFE and (phase_one or self.phase == _NO_TX)):
            return [_ONLINE_KW]
        return []

    def emit(self, step: Step, *, table: str | None = None) -> None:
        """Apply the call ``step`` to the in-memory state, as the file will; plan its operation."""
        op = _apply(step, self.sim)
        chunk = _Chunk(op, self.phase, tuple(op.statements(postgres=self.postgres)))
        self.ops.append(chunk)
        if ((self.mode == _SAFE and self.phase == _TX) or self.tx_rollback) and (
            table is not None and any(s.kind in _NOT_VALID for s in chunk.statements)
        ):
            self.not_valid.add(table)

    def tx_online(self, ok: bool) -> list[tuple[str, Any]]:
        """Return ``[("online", True)]`` in a transactional rollback when ``ok``.

        (``ok``: no step of the operation would need to run outside a transaction.)
        """
        return [_ONLINE_KW] if self.tx_rollback and ok else []

    def validations(self) -> list[str]:
        """Return the tables (still there) whose constraints this plan added NOT VALID."""
        state = self.state()
        return sorted(t for t in self.not_valid if t in state)

    def state(self) -> dict[str, type[pw.Model]]:
        return _state(self.sim)
