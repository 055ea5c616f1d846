"""Start moto's standalone S3 server (``moto[server]`` from PyPI) on a free loopback port.

A real S3 API over HTTP: boto3 talks to it with signed requests, multipart uploads and all, as it
would to AWS or MinIO. With ``enforce_auth=True`` the server checks every request's credentials
against its own IAM (``INITIAL_NO_AUTH_ACTION_COUNT=0``), so keys it never issued are refused
with ``InvalidAccessKeyId``, as a real store refuses bad keys.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Fake credentials the tests use (moto without auth accepts any).
ACCESS_KEY = "AKIAMLOPSTESTKEY0001"
SECRET_KEY = "mlops-test-secret-7f3a9c1e5b"
REGION = "us-east-1"


@dataclass
class MotoServer:
    """A running ``moto_server`` child process."""

    process: subprocess.Popen[bytes]
    endpoint_url: str

    def client_kwargs(self) -> dict[str, str]:
        """boto3 ``client("s3", ...)`` arguments for this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "region_name": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.session.Session().client("s3", **self.client_kwargs())

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (if missing) and return it."""
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)
        return name

    def aws_conn_uri_env(self, conn_id: str) -> dict[str, str]:
        """``AIRFLOW_CONN_<ID>``: an Airflow ``aws`` connection to this server, as JSON."""
        import json

        value = {
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION},
        }
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _moto_server_bin() -> str:
    candidate = Path(sys.executable).with_name("moto_server")
    return str(candidate) if candidate.exists() else "moto_server"


@contextmanager
def running_moto_server(*, enforce_auth: bool = False, timeout: float = 60) -> Iterator[MotoServer]:
    """Start ``moto_server`` on a free loopback port; stop it on exit."""
    port = free_port()
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "True"}
    if enforce_auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    process = subprocess.Popen(
        [_moto_server_bin(), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MotoServer(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {process.returncode} before answering")
            try:
                with urllib.request.urlopen(f"{server.endpoint_url}/moto-api/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {server.endpoint_url}") from None
                time.sleep(0.2)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoServer]:
    """A moto S3 server for one test module (import this fixture into the module)."""
    with running_moto_server() as server:
        yield server
