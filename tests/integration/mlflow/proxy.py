"""A loopback HTTP proxy in front of the real ``mlflow server`` that records requests and injects
faults.

- ``drop``: forward the request, then reset the client's connection instead of answering. The
  worst network fault for idempotency: the server committed the change, the client never learns it.
- ``reset``: reset the connection before forwarding (the server never sees the request).
- ``answer``: answer with an HTTP status instead of forwarding (``503`` from a load balancer).
- ``require_bearer``: an auth gateway: a request without ``Authorization: Bearer <token>`` gets
  ``403`` and never reaches the server.
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
    #: "reset", "answer <status>" or "forbidden" when the proxy answered instead of the server
    fault: str | None = None


@dataclass
class DroppingProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_port``, one request per connection."""

    upstream_port: int
    port: int = 0
    seen: list[SeenRequest] = field(default_factory=list)
    #: path substring -> how many of its responses still to drop
    drop: dict[str, int] = field(default_factory=dict)
    #: path substring -> how many of its requests still to reset before forwarding
    reset: dict[str, int] = field(default_factory=dict)
    #: path substring -> (HTTP status, how many of its requests still to answer with it)
    answer: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: the only bearer token let through, when set
    require_bearer: str | None = None
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
            fault = self._fault(path, headers)
            if fault is not None:
                with self._lock:
                    self.seen.append(SeenRequest(method=method, path=path, headers=headers, fault=fault))
                if fault == "reset":
                    _reset(client)
                    return
                status = 403 if fault == "forbidden" else int(fault.split()[1])
                client.sendall(_plain_response(status))
                return
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
                _reset(client)
                return
            client.sendall(response)

    def _fault(self, path: str, headers: dict[str, str]) -> str | None:
        """The fault to inject for this request instead of forwarding it, if any."""
        with self._lock:
            if (
                self.require_bearer is not None
                and headers.get("authorization") != f"Bearer {self.require_bearer}"
            ):
                return "forbidden"
            for needle, count in self.reset.items():
                if count > 0 and needle in path:
                    self.reset[needle] = count - 1
                    return "reset"
            for needle, (status, count) in self.answer.items():
                if count > 0 and needle in path:
                    self.answer[needle] = (status, count - 1)
                    return f"answer {status}"
        return None


_REASONS = {403: "Forbidden", 429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable"}


def _plain_response(status: int) -> bytes:
    """A non-JSON error page, as a load balancer or an auth gateway sends it."""
    reason = _REASONS.get(status, "Error")
    body = f"<html><body>{status} {reason}</body></html>".encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _reset(client: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP reset ("connection reset by peer")."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
