"""PostgreSQL's own parser (pglast, libpg_query), when the ``lint`` extra is installed.

pglast is 33 MB of an install and optional: the lint (:mod:`.lint._pg`) and
the reading of hand-written SQL before it runs (:mod:`.runtime.statements`)
use it when present.  :func:`load` imports it on first use, so importing a
module outside the lint never loads it.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["INSTALL", "load"]

INSTALL = "pip install 'peewee-datalayer[lint]'"
"""The install line that brings pglast."""


def load() -> ModuleType | None:
    """Return the pglast module, None when the lint extra is not installed."""
    try:
        import pglast
    except ImportError:
        return None
    return pglast
