"""The text of generated migration files, rendered from their operations.

Each planned operation carries the migrator call that builds it
(``Operation.call``, a :mod:`.code` value): the bodies are those calls in order.
A file's header names the operations its two bodies call (``m.add_fields``,
``m.create_model``, ...) and it imports ``pw_pext`` only when a body uses
it: both are read from the calls themselves.  A file that must run outside
a transaction says ``atomic = False`` above ``migrate()``.  Upstream
``pw_migrate`` runs the files unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..operations import Operation
from ..runtime.template import NO_TRANSACTION, fill_template
from .code import Step
from .outcome import Diff, DiffFile, Drop
from .plan import Plan

__all__ = [
    "HEADER",
    "NOTHING_FORWARD",
    "NOTHING_TO_UNDO",
    "bodies",
    "body",
    "calls",
    "diff_of",
    "render_file",
    "render_upstream_file",
    "write_file",
]

HEADER = ("from datalayer.migrate.ops import extend", "", "m = extend(migrator)")
"""The first lines of a generated body: ``m`` is the extended migrator."""

_NEWLINE = "\n    "

NOTHING_FORWARD = (
    "# Nothing to do going forward.  The next file's rollback runs in a transaction;",
    "# this file's rollback, which runs after it, finishes its work outside one",
    "# (validates the constraints it re-added NOT VALID, numbers a serial key it",
    "# re-added and makes it the key concurrently): reads and writes go on.",
    "return",
)

NOTHING_TO_UNDO = "return  # nothing to undo: this migration changes no schema"


def _call(op: Operation) -> Step:
    """Return the migrator call that builds ``op``, as the file writes it."""
    if op.call is None:
        raise ValueError(f"{op.describe()}: an operation without its call cannot be written")
    call: Step = op.call
    return call


def body(ops: Sequence[Operation]) -> str:
    """Return a function body (indented for the template, first line bare) for ``ops``."""
    if not ops:
        return ""
    lines = list(HEADER)
    for op in ops:
        lines.append("")
        lines.extend(_call(op).render())
    return lines[0] + "".join("\n" + f"    {line}".rstrip() for line in lines[1:])


def bodies(forward: Sequence[Operation], backward: Sequence[Operation]) -> tuple[str, str]:
    """Return the ``migrate`` and ``rollback`` bodies of one file."""
    migrate, rollback = body(forward), body(backward)
    if rollback and not migrate:
        # The rollback of the next file re-adds constraints NOT VALID in its transaction;
        # this one, outside a transaction, validates them (rollbacks run newest first).
        migrate = _NEWLINE.join(NOTHING_FORWARD)
    if migrate and not rollback:
        # Validating constraints or filling rows changes no schema that needs undoing
        # (the rollback of the migration before it drops what it added): say so, so
        # `rollback` does not take the empty body for a forgotten one.
        rollback = NOTHING_TO_UNDO
    return migrate, rollback


def calls(ops: Iterable[Operation]) -> list[str]:
    """Return the ``m.method`` calls of ``ops``, once each, in the order they are written."""
    return list(dict.fromkeys(call for op in ops for call in _call(op).calls()))


def render_file(
    name: str, forward: Sequence[Operation], backward: Sequence[Operation], *,
    atomic: bool = True,
) -> str:
    """Return the text of migration file ``name`` (``001_x.py``) with these operations."""
    migrate, rollback = bodies(forward, backward)
    return fill_template(
        name, migrate, rollback,
        migrate_ops=calls(forward), rollback_ops=calls(backward),
        extended=bool(forward or backward),
        pext=any("pw_pext" in _call(op).modules() for op in [*forward, *backward]),
        atomic=atomic,
    )


def render_upstream_file(
    name: str, forward: Sequence[Operation], backward: Sequence[Operation], *,
    atomic: bool = True,
) -> str:
    """Return the text peewee-migrate's template gives file ``name``, ``atomic = False`` added."""
    from peewee_migrate.template import TEMPLATE

    head, mark, tail = TEMPLATE.partition("\n\ndef migrate(")
    template = head + ("" if atomic else "\n\n" + NO_TRANSACTION) + mark + tail
    migrate, rollback = bodies(forward, backward)
    return template.format(migrate=migrate, rollback=rollback, name=name)


def diff_of(plan: Plan, drops: tuple[Drop, ...]) -> Diff:
    """Return the diff of ``plan``: each file's bodies, and all of them joined for display."""
    files = tuple(
        DiffFile(m.suffix, m.atomic, *bodies(m.operations, m.rollback), m.operations,
                 m.rollback)
        for m in plan.migrations
    )
    if not files:
        return Diff("", "", plan.warnings, drops, (), plan)

    def joined(attr: str) -> str:
        parts = []
        for f in files:
            body = getattr(f, attr)
            if len(files) > 1 or not f.atomic:
                label = f"# -- NAME{f.suffix}" + ("" if f.atomic else " (no transaction)")
                body = label + _NEWLINE + body
            parts.append(body)
        return (_NEWLINE + _NEWLINE).join(parts)

    return Diff(joined("migrate"), joined("rollback"), plan.warnings, drops, files, plan)



def write_file(router: Any, name: str, file: DiffFile) -> str:
    """Write one file of a migration through ``router``; return the name it was given.

    datalayer's Router numbers the file and writes the text rendered from the
    steps; another (peewee-migrate's) numbers and writes it with its own
    template, written again whole, from the same steps, when it is not atomic.
    """
    write = getattr(router, "write_migration", None)
    if callable(write):
        written: str = write(name, lambda filename: render_file(
            filename, file.operations, file.rollback_operations, atomic=file.atomic))
        return written
    written = router.compile(name, file.migrate, file.rollback)
    if not file.atomic:
        path = Path(router.migrate_dir) / f"{written}.py"
        path.write_text(render_upstream_file(path.name, file.operations, file.rollback_operations,
                                             atomic=False), encoding="utf-8")
    return written
