"""Route reads to streaming replicas, with read-your-writes by WAL position.

Imported only when ``DB_REPLICA_URLS`` is set (:meth:`datalayer.db.Database.configure`):
without replicas nothing here runs and nothing is measured.

One module per concern, each readable on its own:

* :mod:`~datalayer.replicas.router`: the decision (Django's ``db_for_read`` /
  ``db_for_write``): given the replicas' last known states and the position the
  caller must see, a replica that has replayed it, else the primary, and why;
* :mod:`~datalayer.replicas.health`: each replica's pool and state (replay
  position, lag, down), checked by a poller at most once per
  ``DB_REPLICA_CHECK_INTERVAL`` and shared by every thread of the process;
* :mod:`~datalayer.replicas.positions`: each caller's position (the WAL position
  of its last committed write, learnt from the COMMIT's own reply or, for an
  autocommit write, from a shared sampler) and the opaque strings that carry
  one to another process (GitLab's "sticking");
* :mod:`~datalayer.replicas.statements`: which statements write, the primary's
  cursor that notes them and the replica's that refuses them;
* :mod:`~datalayer.replicas.replica_set`: :class:`ReplicaSet`, what
  :class:`datalayer.db.Database` holds: routed reads, ``read_replica()`` blocks,
  falling back to the primary when a replica fails, the pollers.
"""

from __future__ import annotations

from .health import CHECK_SQL, Replica
from .positions import (
    COMMIT_WITH_POSITION,
    PRIMARY_POSITION,
    Positions,
    format_position,
    parse_lsn,
    parse_position,
)
from .replica_set import DOWN_RETRY, POLL_IDLE_STOP, ReplicaSet
from .router import (
    DOWN,
    LAG,
    NOT_REPLAYED,
    PENDING,
    REPLICA,
    STALE,
    UNKNOWN,
    ReplicaState,
    Route,
    Router,
)
from .statements import PrimaryCursor, ReplicaCursor, may_write, refused, surely_writes

__all__ = [
    "CHECK_SQL",
    "COMMIT_WITH_POSITION",
    "DOWN",
    "DOWN_RETRY",
    "LAG",
    "NOT_REPLAYED",
    "PENDING",
    "POLL_IDLE_STOP",
    "PRIMARY_POSITION",
    "REPLICA",
    "STALE",
    "UNKNOWN",
    "Positions",
    "PrimaryCursor",
    "Replica",
    "ReplicaCursor",
    "ReplicaSet",
    "ReplicaState",
    "Route",
    "Router",
    "format_position",
    "may_write",
    "parse_lsn",
    "parse_position",
    "refused",
    "surely_writes",
]
