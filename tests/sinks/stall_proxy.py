"""A loopback TCP proxy the test controls, in front of the real FerretDB: a MongoDB server
that accepts connections and then stops answering (socket timeouts for real), used by the
``$merge`` stall tests and the DLQ writer's bulk-size test."""

from __future__ import annotations

import contextlib
import socket
import threading

# Short client timeouts, so a stalled proxy times a bulk write out in 1.5 s.
PROXY_OPTS = "directConnection=true&socketTimeoutMS=1500&connectTimeoutMS=1500&serverSelectionTimeoutMS=1500"


class StallProxy:
    """Forwards 127.0.0.1:<port> to the upstream server while ``forwarding`` is set; when it
    is cleared, connections are still accepted but nothing is passed on (bytes are held,
    and passed on once forwarding resumes)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.forwarding = threading.Event()
        self.forwarding.set()
        self._stop = threading.Event()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.settimeout(0.2)
        self.port = int(self._srv.getsockname()[1])
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                u = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                c.close()
                continue
            self._socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                while not self.forwarding.wait(0.2):
                    if self._stop.is_set():
                        return
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._stop.set()
        self._srv.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


def upstream_of(uri: str) -> tuple[str, int]:
    hostport = uri.split("://", 1)[1].split("/", 1)[0].split(",")[0]
    host, _, port = hostport.rpartition(":")
    return host, int(port)
