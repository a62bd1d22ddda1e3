"""A TCP proxy for tests that lose the server's reply to one statement.

    with LossyProxy("127.0.0.1", 5432) as proxy:
        db = Database(settings.replace(host=proxy.host, port=proxy.port))
        proxy.lose_reply_to(b'INSERT INTO "users"')
        create_user(...)        # the INSERT reaches the server, its reply never comes back

It forwards bytes both ways, one thread per direction and connection.  Once
armed, the next message from a client that contains the given bytes is
forwarded to the server; the proxy then waits for the server's answer (so the
statement has run — and, outside a transaction, committed), throws that
answer away and closes both sides, as a network that fails at the worst
moment would.  One arming, one loss.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

__all__ = ["LossyProxy"]

_CHUNK = 65536


class _Link:
    """One client connection and its server connection."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.muted = False  # server -> client bytes are thrown away
        self.answered = threading.Event()  # the server sent something while muted
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class LossyProxy:
    """Forward 127.0.0.1:``port`` to ``target``; lose one reply on request."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed: bytes | None = None
        self._links: list[_Link] = []
        self.lost: list[bytes] = []  # the messages whose reply was lost
        self.answered: list[bool] = []  # whether the server had answered each of them
        self._stopping = False
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._acceptor.start()

    # -- control -------------------------------------------------------------------

    def lose_reply_to(self, marker: bytes) -> None:
        """Arm: the next client message containing ``marker`` goes through, its reply does not."""
        with self._lock:
            self._armed = marker

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._armed is not None

    def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def __enter__(self) -> LossyProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- forwarding ------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._upstream, args=(link,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(link,), daemon=True).start()

    def _take(self, data: bytes) -> bool:
        """Return True (and disarm) when ``data`` is the message to lose the reply of."""
        with self._lock:
            if self._armed is not None and self._armed in data:
                self._armed = None
                return True
        return False

    def _upstream(self, link: _Link) -> None:
        """Client -> server."""
        try:
            while True:
                data = link.client.recv(_CHUNK)
                if not data:
                    break
                if self._take(data):
                    link.muted = True
                    link.server.sendall(data)
                    # Wait for the server's answer (thrown away), so the statement has run.
                    answered = link.answered.wait(10)
                    self.lost.append(data)
                    self.answered.append(answered)
                    break
                link.server.sendall(data)
        except OSError:
            pass
        link.close()

    def _downstream(self, link: _Link) -> None:
        """Server -> client."""
        try:
            while True:
                data = link.server.recv(_CHUNK)
                if not data:
                    break
                if link.muted:
                    link.answered.set()
                    continue
                link.client.sendall(data)
        except OSError:
            pass
        link.answered.set()
        if not link.muted:
            link.close()
