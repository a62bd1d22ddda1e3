"""The safe/unsafe split: generated steps applied to a state, grouped into files by phase.

The planner (:mod:`..generate`) emits one :class:`Chunk` per step, tagged with
the phase it belongs to (one transaction, or outside one).  A new file starts
wherever the phase changes (:func:`groups`), and each chunk becomes a plan
:class:`~..plan.Operation` with the statements its step queued.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from ...errors import GenerationError
from ..ddl.effects import statements_of
from ..ddl.spec import UnsupportedChange
from .code import MethodCall, Step
from .plan import Operation

__all__ = ["Chunk", "apply_step", "groups", "operations", "run_steps"]


@dataclasses.dataclass
class Chunk:
    """One emitted operation: its step, the phase it belongs to and the SQL steps it queued."""

    step: Step
    phase: str
    method: str
    table: str | None
    steps: list[Any]


def groups(ops: Sequence[Chunk]) -> list[list[Chunk]]:
    """Split the operations into files: a new file wherever the phase changes."""
    out: list[list[Chunk]] = []
    for op in ops:
        if out and out[-1][0].phase == op.phase:
            out[-1].append(op)
        else:
            out.append([op])
    return out


def apply_step(step: Step, migrator: Any) -> None:
    """Apply one generated step to an in-memory state, as the written file will."""
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


def run_steps(migrator: Any, steps: Iterable[Step]) -> None:
    """Apply generated steps to an in-memory state (no SQL is run)."""
    for step in steps:
        apply_step(step, migrator)
    migrator.take_steps()


def _is_online(step: Step) -> bool:
    return isinstance(step, MethodCall) and step.option("online") is True


def operations(chunks: Sequence[Chunk], postgres: int) -> tuple[Operation, ...]:
    """Return the plan's operations for ``chunks``, with their statements for ``postgres``."""
    return tuple(
        Operation(
            step=c.step, method=c.method, table=c.table,
            statements=statements_of(c.steps, postgres=postgres),
            online=_is_online(c.step) or c.method in ("backfill", "validate_constraints"),
        )
        for c in chunks
    )
