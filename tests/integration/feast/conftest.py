"""Fixtures of the Feast integration tests: a Redis server, generated feature repos."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.redis_server import redis_server_binary, start_redis_server

DAGS = Path(__file__).parent / "dags"
REDIS_PASSWORD = "feast-test-secret"


@pytest.fixture(scope="session")
def redis():
    """Debian's redis-server on a free loopback port, with a password."""
    if redis_server_binary() is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    server = start_redis_server(password=REDIS_PASSWORD)
    yield server
    server.stop()


def feast_cli(repo: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``feast`` CLI of this virtualenv in ``repo``."""
    binary = shutil.which("feast")
    assert binary, "the feast CLI is not on PATH"
    proc = subprocess.run(
        [binary, "--chdir", str(repo), *args], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"feast {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc
