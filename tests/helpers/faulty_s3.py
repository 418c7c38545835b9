"""A fault-injecting TCP proxy in front of moto's S3 server, for storage-fault scenarios.

Modes: ``pass`` forwards bytes both ways; ``503`` answers every request with ``503 SlowDown`` and
closes; ``reset`` resets every connection (RST); :meth:`down` closes the port (connections are
refused) until :meth:`up`. ``requests`` counts the HTTP requests that arrived (all modes).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

_SLOW_DOWN_BODY = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>\n"
# as S3 answers: its Content-Length is the body's (it said 95 for 90 bytes, and a client that read the body of a
# refused GET failed on the length instead of retrying the 503)
SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
             + f"Content-Length: {len(_SLOW_DOWN_BODY)}\r\n\r\n".encode() + _SLOW_DOWN_BODY)


class FaultyS3:
    """127.0.0.1:<port> → moto; ``endpoint`` is what storage options point at."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.mode = "pass"
        self.requests = 0
        self.refused = 0  # requests answered by the fault (503 or reset) instead of the store
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = self._bind(0)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def _bind(self, port: int) -> int:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        srv.listen(64)
        self._listener = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()
        return int(srv.getsockname()[1])

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return  # closed by down()
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns += [client, upstream]
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client:
                    self.requests += data.count(b" HTTP/1.1\r\n")
                    if self.mode in ("503", "reset"):
                        self.refused += 1
                    if self.mode == "503":
                        src.sendall(SLOW_DOWN)
                        break
                    if self.mode == "reset":
                        src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def down(self) -> None:
        """Close the port and every open connection: clients see refused connections and resets."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()

    def up(self) -> None:
        deadline = time.monotonic() + 10
        while self._listener is None:
            try:
                self._bind(self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    @contextlib.contextmanager
    def fault(self, mode: str) -> Iterator[None]:
        """``with proxy.fault("503"):`` (or "reset", or "down") for the duration of the block."""
        if mode == "down":
            self.down()
        else:
            self.mode = mode
        try:
            yield
        finally:
            self.mode = "pass"
            self.up()
