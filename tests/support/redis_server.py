"""Start Debian's ``redis-server`` on a free loopback port for tests and benchmarks.

CI installs the Debian package ``redis-server``. The server keeps nothing on disk (no RDB, no
AOF) and runs in the foreground as a child of the caller, which stops it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass
class RedisServer:
    """A running ``redis-server`` child process."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    password: str | None
    workdir: Path

    @property
    def address(self) -> str:
        """``host:port``, the first part of Feast's redis ``connection_string``."""
        return f"{self.host}:{self.port}"

    def connection_string(self, *, with_password: bool = True) -> str:
        """Feast's redis ``connection_string`` (``host:port[,password=...]``)."""
        if with_password and self.password:
            return f"{self.address},password={self.password}"
        return self.address

    def stop(self) -> None:
        """Stop the server and remove its working directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def redis_server_binary() -> str | None:
    """Path of ``redis-server`` (PATH first, then Debian's /usr/bin), or None."""
    found = shutil.which("redis-server")
    if found:
        return found
    debian = Path("/usr/bin/redis-server")
    return str(debian) if debian.exists() else None


def _ping(host: str, port: int, password: str | None) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(*, password: str | None = None, timeout: float = 20.0) -> RedisServer:
    """
    Start ``redis-server`` on a free loopback port and wait until it answers PING.

    :param password: When set, the server requires it (``requirepass``).
    :param timeout: Seconds to wait for the server to answer.
    :raises RuntimeError: When redis-server is missing or does not come up.
    """
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian package: redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="mlops-redis-"))
    port = free_port()
    args = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    if password:
        args += ["--requirepass", password]
    log = open(workdir / "redis.log", "wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = RedisServer(process=process, host="127.0.0.1", port=port, password=password, workdir=workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (workdir / "redis.log").read_text(errors="replace")
            server.stop()
            raise RuntimeError(f"redis-server exited with {process.returncode}: {output[-2000:]}")
        if _ping(server.host, port, password):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout} s")


@contextmanager
def redis_server(*, password: str | None = None) -> Iterator[RedisServer]:
    """Context manager: a running redis-server, stopped on exit."""
    server = start_redis_server(password=password)
    try:
        yield server
    finally:
        server.stop()
