"""What the history on disk stands for: the migrations a squashed file replaces."""

from __future__ import annotations

import ast
import contextlib

from .names import parse_module

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
