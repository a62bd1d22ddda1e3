"""What the history stands for: what a squashed file replaces, the rows against the files."""

from __future__ import annotations

import ast
import contextlib
from typing import TYPE_CHECKING

from ...errors import MigrationError
from .names import parse_module

if TYPE_CHECKING:
    from .files import HistoryRow, Router

__all__ = ["replaced_names"]

_REPLACES_MARK = b"\nreplaces = "


def replaced_names(sources: dict[str, bytes]) -> dict[str, str]:
    """Return ``{folded name: squash name}`` for the squashed files among ``sources``.

    ``sources`` maps file names (``NNN_x.py``) to bytes; only files holding a
    module-level ``replaces = [...]`` are parsed.
    """
    found: dict[str, str] = {}
    for filename, data in sources.items():
        if _REPLACES_MARK not in data:
            continue
        with contextlib.suppress(SyntaxError, ValueError, UnicodeDecodeError):
            tree = parse_module(data.decode("utf-8"))
            for node in tree.body:
                if (
                    isinstance(node, ast.Assign)
                    and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == "replaces"
                ):
                    for name in ast.literal_eval(node.value):
                        found[str(name)] = filename.removesuffix(".py")
    return found


def _replaced(router: Router) -> dict[str, str]:
    """Return ``{folded name: squashed migration}`` for the squashed files on disk."""
    return replaced_names({f"{n}.py": router.source(n) for n in router.todo})


def _check_history(router: Router, rows: list[HistoryRow], *, modified_ok: bool = False) -> None:
    on_disk = set(router.todo)
    replaced = _replaced(router)
    for row in rows:
        path = router.path(row.name)
        if row.name in replaced and row.name not in on_disk:
            continue  # folded into a squashed migration that is on disk
        if row.name not in on_disk:
            raise MigrationError(
                f"{path} was applied ({row.name}) but is not on disk; restore it (git "
                "checkout) - migrations are replayed to know the schema, and applied ones "
                "must stay"
            )
        if (
            not modified_ok
            and row.checksum is not None
            and row.checksum != router.checksum(row.name)
        ):
            raise MigrationError(
                f"{path} changed after it was applied; restore it and add a new migration "
                "instead (`datalayer migrate status` lists every modified file)"
            )
