"""``datalayer.migrate.runner``, as the documentation names it: apply, rollback and status.

The functions live in :mod:`.apply`, :mod:`.rollback` and :mod:`.status`
(the lock in :mod:`.lock`, running one file in :mod:`.run`); this module is
the one path that hands out all of them (``from datalayer.migrate import runner``).
"""

from __future__ import annotations

from .apply import DEFAULT_LOCK_RETRIES, Retry, apply
from .lock import DEFAULT_LOCK_WAIT, WAIT_NOTICE_EVERY, lock_key
from .rollback import rollback
from .run import DEFAULT_LOCK_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT, Applied
from .status import Status, status
from .target import Target

__all__ = [
    "DEFAULT_LOCK_RETRIES",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_LOCK_WAIT",
    "DEFAULT_STATEMENT_TIMEOUT",
    "WAIT_NOTICE_EVERY",
    "Applied",
    "Retry",
    "Status",
    "Target",
    "apply",
    "lock_key",
    "rollback",
    "status",
]
