"""Start a real ``mlflow server`` (SQLite backend, local artifact dir) on a free loopback port.

Usage::

    from tests.support.mlflow_server import mlflow_server, start_mlflow_server

    server = start_mlflow_server(tmp_path)   # MlflowServer(url=..., process=..., ...)
    ...
    server.stop()

    with mlflow_server(tmp_path) as server:  # or as a context manager
        client = mlflow.MlflowClient(server.url)

Starting the server costs a few seconds: start it once per module or session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass
class MlflowServer:
    """A running ``mlflow server`` child process."""

    url: str
    process: subprocess.Popen[bytes]
    port: int
    backend_store_uri: str
    artifacts_dir: Path
    workdir: Path

    @property
    def log_path(self) -> Path:
        """The server's combined stdout/stderr."""
        return self.workdir / "mlflow-server.log"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (and its workers); the SQLite file and artifacts stay in ``workdir``."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=15)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_mlflow_server(workdir: Path | str | None = None, *, timeout: float = 90.0) -> MlflowServer:
    """
    Start ``mlflow server`` with ``sqlite:///<workdir>/mlflow.db`` and ``<workdir>/artifacts``.

    :param workdir: Directory for the database, artifacts and log (a temporary one when None).
    :param timeout: Seconds to wait for ``/health``.
    :raises RuntimeError: When the server exits or does not become healthy in time.
    """
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mlops-mlflow-"))
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts = workdir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    backend = f"sqlite:///{workdir / 'mlflow.db'}"
    port = free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    args = [
        str(mlflow_bin),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = dict(os.environ)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN"):
        env.pop(var, None)
    # The job executor (GenAI jobs) starts seven huey consumer processes that each import mlflow;
    # the registry does not need them.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    log = open(workdir / "mlflow-server.log", "wb")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True
    )
    log.close()
    server = MlflowServer(
        url=f"http://127.0.0.1:{port}",
        process=process,
        port=port,
        backend_store_uri=backend,
        artifacts_dir=artifacts,
        workdir=workdir,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{server.log_tail()}")
        if _healthy(server.url):
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"mlflow server not healthy on port {port} within {timeout} s:\n{server.log_tail()}")


@contextmanager
def mlflow_server(workdir: Path | str | None = None) -> Iterator[MlflowServer]:
    """Context manager: a running ``mlflow server``, stopped on exit."""
    server = start_mlflow_server(workdir)
    try:
        yield server
    finally:
        server.stop()
