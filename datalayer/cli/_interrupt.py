"""Ctrl-C during ``migrate apply`` / ``rollback``: cancel the running statement at once.

psycopg2 waits for a statement inside libpq, where Python's SIGINT handler
cannot run: Ctrl-C used to wait for the statement to end (a concurrent index
build could hold the terminal for minutes), then print only ``Aborted!``.

While :func:`cancel_on_interrupt` is active, the C-level signal handler also
writes to a wakeup socket (``signal.set_wakeup_fd``), read by a watcher
thread that is woken at once, even while the main thread is inside libpq. It
sends a cancel request (``connection.cancel()``, safe from another thread) for
every statement the database has in flight: the server answers with ``57014
canceling statement due to user request`` and the migration fails as a failed
migration does (rolled back, not recorded), with a message that says so.  When
no statement was in flight (Python code in a migration, the lock wait), the
Python handler raises ``KeyboardInterrupt`` in the main thread as usual; and if
the run has not ended a second after a cancel (the statement had just ended, the
next one started), the watcher cancels again and interrupts the main thread.

Nothing changes where the main thread is not the caller or SIGINT has a handler
of someone else's.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["ESCALATE_AFTER", "Interrupt", "cancel_on_interrupt"]

ESCALATE_AFTER = 1.0
"""Seconds after a cancel request before the main thread is interrupted too."""


class Interrupt:
    """What Ctrl-C did while the block ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.event = threading.Event()
        self.cancelled = False  # a statement was cancelled for the last Ctrl-C
        self.raised = False  # KeyboardInterrupt was raised in the main thread
        self.escalate = False

    @property
    def pressed(self) -> bool:
        """True once Ctrl-C was pressed."""
        return self.event.is_set()


def _cancel_inflight(database: Any) -> int:
    """Ask the server to cancel every statement ``database`` has in flight; return how many."""
    inflight = getattr(database, "_inflight", None) or {}
    connections: list[Any] = []
    for _ in range(3):  # the dict may change while it is copied: look again
        with contextlib.suppress(RuntimeError):
            connections = list(inflight)
            break
    cancelled = 0
    for raw in connections:
        with contextlib.suppress(Exception):
            raw.cancel()
            cancelled += 1
    return cancelled


@contextlib.contextmanager
def cancel_on_interrupt(database: Any) -> Iterator[Interrupt]:
    """Turn Ctrl-C in the block into a cancel request for ``database``'s running statement."""
    interrupt = Interrupt()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield interrupt
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data or done.is_set():
                return
            if signal.SIGINT not in data:
                continue
            with interrupt.lock:
                if interrupt.raised:
                    continue  # the main thread is unwinding: leave its statements alone
                interrupt.event.set()
                interrupt.cancelled = _cancel_inflight(database) > 0
            if interrupt.cancelled and not done.wait(ESCALATE_AFTER):
                with interrupt.lock:
                    interrupt.escalate = True
                    _cancel_inflight(database)
                _thread.interrupt_main()

    def handler(signum: int, frame: FrameType | None) -> None:
        with interrupt.lock:
            interrupt.event.set()
            if interrupt.cancelled and not interrupt.escalate and not interrupt.raised:
                interrupt.cancelled = False  # let the cancelled statement's error report it
                return
            interrupt.raised = True
        raise KeyboardInterrupt

    watcher = threading.Thread(target=watch, name="datalayer-sigint", daemon=True)
    watcher.start()
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.set_wakeup_fd(previous_fd)
        done.set()
        with contextlib.suppress(OSError):
            writer.send(b"\0")
        watcher.join(timeout=2)
        reader.close()
        writer.close()
