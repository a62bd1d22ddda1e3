"""The safe/unsafe split: the planned operations, grouped into files by phase.

The planner (:mod:`.compare`) emits one :class:`Chunk` per operation, tagged with
the phase it belongs to (one transaction, or outside one).  A new file starts
wherever the phase changes (:func:`groups`).  A file runs in a transaction when
it is of the transactional phase and every statement of its operations can
(:func:`atomic`, from the facts of :data:`..facts.EFFECTS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from ...errors import GenerationError
from ..ddl.effects import Statement
from ..ddl.spec import UnsupportedChange
from ..operations import Operation
from .code import Step

__all__ = ["Chunk", "apply_step", "atomic", "groups", "replay_calls"]


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One planned operation, the phase it belongs to (``tx``, ``no-tx``, ``pre``), its statements.

    ``statements`` are ``op.statements()`` for the target version, computed once.
    """

    op: Operation
    phase: str
    statements: tuple[Statement, ...]


def groups(ops: Sequence[Chunk]) -> list[list[Chunk]]:
    """Split the operations into files: a new file wherever the phase changes."""
    out: list[list[Chunk]] = []
    for op in ops:
        if out and out[-1][0].phase == op.phase:
            out[-1].append(op)
        else:
            out.append([op])
    return out


def atomic(chunks: Sequence[Chunk], *, transactional_phase: str) -> bool:
    """Return whether the file of ``chunks`` runs in one transaction.

    Only a file of the transactional phase, and only when every statement of its
    operations can run in a transaction block (``Statement.transactional``).
    """
    return chunks[0].phase == transactional_phase and all(
        s.transactional for c in chunks for s in c.statements
    )


def apply_step(step: Step, migrator: Any) -> Operation:
    """Apply one generated call to an in-memory state, as the written file will.

    Return the operation the call built (the migrator records one per call), its
    ``call`` set to ``step``.
    """
    migrator.take_operations()
    try:
        step.apply(migrator)
    except UnsupportedChange as exc:
        raise GenerationError("cannot generate this migration", [str(exc)]) from None
    except Exception as exc:
        raise GenerationError(
            "the generated operation fails on the migration history's state "
            "(an unsupported change, or a bug)",
            [f"{type(exc).__name__}: {exc}", "\n".join(step.render())],
        ) from exc
    migrator.__ops__ = []
    recorded: list[Operation] = migrator.take_operations()
    (op,) = recorded  # one operation per migrator call
    return dataclasses.replace(op, call=step)


def replay_calls(migrator: Any, ops: Iterable[Operation]) -> None:
    """Apply the calls of planned operations to another in-memory state (no SQL is run)."""
    for op in ops:
        apply_step(op.call, migrator)
