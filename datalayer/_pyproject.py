"""Find the project's pyproject.toml: all that reading the settings needs of
:mod:`datalayer.project` (which a lookup script then does not import)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .errors import ProjectError


def find_pyproject(start: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """Return the nearest pyproject.toml with ``[tool.datalayer]`` upward of ``start``.

    :raises ProjectError: a pyproject.toml on the way that is not valid TOML.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if not candidate.is_file():
            continue
        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ProjectError(f"{candidate} is not valid TOML ({exc}); fix the file") from None
        table = data.get("tool", {}).get("datalayer")
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ProjectError(f"{candidate}: [tool.datalayer] must be a table")
        return candidate, table
    return None
