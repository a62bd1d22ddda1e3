"""Each replica's health: its pool of read connections, and its last known state.

:meth:`Replica.check` reads a replica's replay position and lag in one round
trip, on a connection of its own (not a pool slot), and sets
:attr:`Replica.state` (a :class:`~datalayer.replicas.router.ReplicaState`,
replaced whole, so readers in other threads never see half of one).  The
replica set's poller thread calls it at most once per
``DB_REPLICA_CHECK_INTERVAL`` for all the threads of a process; a read never
queries a replica's state itself.  A replica that is down, refuses
connections, is not a standby or lags more than ``DB_REPLICA_MAX_LAG`` is not
usable, with one WARNING line when it leaves use and one when it returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions

from .. import pool as _pool
from .._connection import _Connection
from .positions import _monotonic, first_line, parse_lsn
from .router import ReplicaState
from .statements import ReplicaCursor

if TYPE_CHECKING:
    from ..config import Settings

logger = logging.getLogger("datalayer.replicas")

__all__ = ["CHECK_SQL", "Replica"]

CHECK_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
    "CASE WHEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) "
    "<= pg_last_wal_replay_lsn() THEN 0 "
    "ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)
"""A replica's replay position and lag: 0 when it has replayed all it received (after a
restart the receive position starts behind the replay one), else the
age of the last transaction it replayed (the usual measure, an upper bound: after an idle
spell that transaction is old although the replica is only just behind, so
:meth:`Replica.check` also bounds the lag by the time since a check last saw the replica
caught up)."""


class Replica:
    """One replica: its settings, its pool of read connections, its last known state."""

    def __init__(self, index: int, settings: Settings, max_lag: float) -> None:
        self.index = index
        self.settings = settings
        self.url = settings.url(masked=True)
        self.name = f"replica {index} ({settings.describe()})"
        self.max_lag = max_lag  # DB_REPLICA_MAX_LAG: lagging more, it is skipped
        self._connection_class = _Connection  # the same connection class as the primary's
        self.pool = _pool.ConnectionPool(
            self._open,
            max_open=settings.max_open_conns,
            max_idle=settings.max_idle_conns,
            max_lifetime=settings.conn_max_lifetime,
            max_idle_time=settings.conn_max_idle_time,
            timeout=settings.pool_timeout,
            name=f"{settings.application_name}-replica{index}",
            max_checkout_time=settings.max_checkout_time,
            client_timeout=settings.effective_client_timeout,
        )
        self.state = ReplicaState(False)
        self.in_use: bool | None = None  # for the one log line when it leaves / returns
        self.poller: threading.Thread | None = None
        self._check_conn: Any = None
        self._caught_up_at: float | None = None  # when a check last saw nothing left to replay

    def _connect(self, cursor_factory: Any) -> Any:
        try:
            raw = psycopg2.connect(**self.settings.connect_kwargs(),
                                   connection_factory=self._connection_class,
                                   cursor_factory=cursor_factory)
        except psycopg2.Error as exc:
            raise _pool.connect_failure(self.settings.describe(), exc) from None
        raw.autocommit = True
        raw.server_pid = raw.info.backend_pid
        raw.replica_name = self.name
        return raw

    def _open(self) -> Any:
        return self._connect(ReplicaCursor)

    def check(self, *, log: bool = True) -> ReplicaState:
        """Read the replica's replay position and lag now (one round trip); set the state."""
        inflight = self.pool.inflight
        raw = self._check_conn
        try:
            if raw is None or raw.closed:
                self._check_conn = None
                raw = self._check_conn = self._connect(psycopg2.extensions.cursor)
                self.pool.watchdog.start()
            inflight[raw] = _monotonic()
            try:
                with raw.cursor() as cur:
                    cur.execute(CHECK_SQL)
                    row = cur.fetchone()
            finally:
                inflight.pop(raw, None)
        except Exception as exc:  # down, refusing, dropped: all the same to a reader
            if raw is not None:
                with contextlib.suppress(Exception):
                    raw.close()
            self._check_conn = None
            self._caught_up_at = None
            return self.set_state(ReplicaState(False, reason=f"down: {first_line(exc)}",
                                               checked=_monotonic()), log)
        in_recovery, replay, lag = row
        now = _monotonic()
        if not in_recovery or replay is None:
            return self.set_state(ReplicaState(
                False, reason="not a standby (pg_is_in_recovery() is false)", checked=now), log)
        lag = float(lag)
        if lag == 0.0:
            self._caught_up_at = now
        elif self._caught_up_at is not None:
            lag = min(lag, now - self._caught_up_at)
        position = parse_lsn(replay)
        if lag > self.max_lag:
            return self.set_state(ReplicaState(
                False, position, lag, f"lag {lag:.1f} s > DB_REPLICA_MAX_LAG "
                f"{self.max_lag:g} s", now), log)
        return self.set_state(ReplicaState(True, position, lag, "", now), log)

    def set_state(self, state: ReplicaState, log: bool = True) -> ReplicaState:
        """Replace the state; log one line when the replica leaves or returns to use."""
        self.state = state
        if not log:
            return state
        was = self.in_use
        if state.usable and was is not True:
            self.in_use = True
            if was is False:
                logger.warning("%s is back in use (lag %.2f s)", self.name, state.lag or 0.0)
        elif not state.usable and was is not False:
            self.in_use = False
            logger.warning("%s is skipped: %s; reads go to the primary or another replica",
                           self.name, state.reason)
        return state

    def mark_down(self, exc: BaseException) -> None:
        """A read found the replica down: skip it until a check finds it back."""
        self.set_state(ReplicaState(False, reason=f"down: {first_line(exc)}",
                                    checked=_monotonic()))

    def close(self) -> None:
        self.pool.close()
        raw, self._check_conn = self._check_conn, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()


