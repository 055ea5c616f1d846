"""An HTTP fault proxy on loopback, between MLflow clients and a real ``mlflow server``.

Requests pass through unchanged unless a rule matches (method, path substring and, when the rule
has one, body substring: a model name tells concurrent scenarios' writes apart); a rule applies
to its next ``times`` matching requests, then expires. The faults:

- ``"drop"``: forward the request (the server commits), then close the client connection
  without an answer: the client cannot tell whether its write happened;
- ``"reset"``: forward the request, then reset the connection (TCP RST);
- ``"delay"``: hold the request ``delay`` seconds (past the client's timeout), then forward it:
  the write commits *after* the client gave up on it;
- ``"503"``: answer ``503 Service Unavailable`` without forwarding.

Every request is recorded in :attr:`FaultProxy.log` as ``(method, path, fault or None)``.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("drop", "reset", "delay", "503")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


@dataclass
class Rule:
    fault: str
    method: str
    path: str
    times: int
    delay: float
    body: tuple[bytes, ...] = ()


class FaultProxy:
    """
    A threaded HTTP/1.1 proxy to ``127.0.0.1:<upstream_port>``.

    :param upstream_port: The real server's port.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def inject(
        self,
        fault: str,
        *,
        method: str,
        path: str,
        times: int = 1,
        delay: float = 0.0,
        body: str | tuple[str, ...] = (),
    ) -> Rule:
        """
        Apply ``fault`` to the next ``times`` requests ``method`` whose path contains ``path``
        (and whose body contains ``body``, or each of its strings, when given). Return the rule:
        its ``times`` left says whether the fault was applied.
        """
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        with self.lock:
            needles = (body,) if isinstance(body, str) else body
            rule = Rule(fault, method.upper(), path, times, delay, tuple(n.encode() for n in needles))
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def applied(self, fault: str | None = None) -> list[tuple[str, str, str | None]]:
        """The requests a fault was applied to (of one kind, or any)."""
        with self.lock:
            return [e for e in self.log if e[2] is not None and (fault is None or e[2] == fault)]

    def _take(self, method: str, path: str, body: bytes = b"") -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if (
                    rule.method == method
                    and rule.path in path
                    and all(needle in body for needle in rule.body)
                    and rule.times > 0
                ):
                    rule.times -= 1
                    return rule
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        rule = self._take(method, path, body)
        with self.lock:
            self.log.append((method, path, rule.fault if rule else None))
        if rule is not None and rule.fault == "503":
            payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "fault proxy: 503"}'
            handler.send_response(503)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        if rule is not None and rule.fault == "delay":
            time.sleep(rule.delay)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
        try:
            upstream.request(method, path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except OSError:
            handler.close_connection = True
            return
        finally:
            upstream.close()
        if rule is not None and rule.fault in ("drop", "reset"):
            handler.close_connection = True
            if rule.fault == "reset":
                handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            return
        try:
            handler.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP:
                    handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client gave up (its timeout ran out during a delay)
            handler.close_connection = True
