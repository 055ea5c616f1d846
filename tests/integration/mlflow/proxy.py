"""A loopback HTTP proxy that records requests and can drop a response after the server answered.

Dropping the response after the upstream server has answered simulates the worst network fault
for idempotency: the server committed the change, the client never learns it.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    dropped: bool = False


@dataclass
class DroppingProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_port``, one request per connection."""

    upstream_port: int
    port: int = 0
    seen: list[SeenRequest] = field(default_factory=list)
    #: path substring -> how many of its responses still to drop
    drop: dict[str, int] = field(default_factory=dict)
    _sock: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DroppingProxy:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(32)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                chunk = client.recv(65536)
                if not chunk:
                    break
                body += chunk
            kept = [ln for ln in lines[1:] if not ln.lower().startswith("connection:")]
            request = "\r\n".join([lines[0], *kept, "Connection: close"]).encode("latin-1")
            response = b""
            with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60) as upstream:
                upstream.sendall(request + b"\r\n\r\n" + body)
                while True:
                    chunk = upstream.recv(65536)
                    if not chunk:
                        break
                    response += chunk
            seen = SeenRequest(method=method, path=path, headers=headers)
            with self._lock:
                for needle, count in self.drop.items():
                    if count > 0 and needle in path:
                        self.drop[needle] = count - 1
                        seen.dropped = True
                        break
                self.seen.append(seen)
            if seen.dropped:
                # The server has committed and answered; the client gets a reset connection.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            client.sendall(response)
