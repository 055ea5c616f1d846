"""Fixtures for the docker-compose stack tests: the file as Debian's docker-compose resolves it."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def compose_command() -> list[str]:
    """``docker-compose`` (v1, Debian's) or else ``docker compose`` (v2); skip when neither exists."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    pytest.skip("neither docker-compose nor `docker compose` is installed (apt-get install docker-compose)")


def compose_env(**overrides: str) -> dict[str, str]:
    """The environment for compose commands: the stack's variables unset unless given here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AIRFLOW_", "BASE_IMAGE"))}
    env.update(overrides)
    return env


def resolved_config(*overrides: str, **env: str) -> dict[str, Any]:
    """``docker-compose config`` on the repo's file (plus ``overrides``): validated and resolved."""
    files = [arg for path in (COMPOSE_FILE, *overrides) for arg in ("-f", str(REPO_ROOT / path))]
    proc = subprocess.run(
        [*compose_command(), *files, "--project-directory", str(REPO_ROOT), "config"],
        capture_output=True,
        text=True,
        env=compose_env(**env),
        timeout=120,
    )
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    return resolved_config()
