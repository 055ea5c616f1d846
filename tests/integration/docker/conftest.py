"""Fixtures for the GpuDockerOperator tests against the real Docker engine.

GPU assignment is checked through the stand-in NVIDIA prestart hook that
``scripts/ci/start_docker.sh`` puts on dockerd's PATH: the engine accepts device requests and
sets ``NVIDIA_VISIBLE_DEVICES`` in the container, but attaches no device. Real-GPU runs happen
on GPU hosts with NVIDIA's toolkit.
"""

from __future__ import annotations

import time
import types
import uuid
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.docker]

DOCKER_URL = "unix://var/run/docker.sock"


@pytest.fixture
def lease_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ``[mlops] gpu_lease_dir`` (also seen by airflow subprocesses through the env)."""
    path = tmp_path / "leases"
    path.mkdir()
    monkeypatch.setenv("AIRFLOW__MLOPS__GPU_LEASE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def cli(docker_engine: None) -> Iterator[Any]:
    import docker

    client = docker.APIClient(base_url=DOCKER_URL)
    yield client
    client.close()


def unique_dag_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def make_context(
    dag_id: str, task_id: str = "t", run_id: str = "r1", map_index: int = -1, try_number: int = 1
):
    """The parts of a task context GpuDockerOperator reads, for in-process executions."""
    pushed: dict[str, Any] = {}
    ti = types.SimpleNamespace(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        map_index=map_index,
        try_number=try_number,
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
        pushed=pushed,
    )
    return {"ti": ti}


def task_containers(cli: Any, dag_id: str) -> list[dict[str, Any]]:
    """Every container (any state) labelled with ``dag_id``: what ``docker ps -a`` shows of it."""
    return cli.containers(all=True, filters={"label": f"airflow-mlops.dag_id={dag_id}"})


def wait_for_running(cli: Any, dag_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = cli.containers(filters={"label": f"airflow-mlops.dag_id={dag_id}", "status": "running"})
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError(f"no running container of {dag_id} within {timeout}s")


def remove_all(cli: Any, dag_id: str) -> None:
    for item in task_containers(cli, dag_id):
        cli.remove_container(item["Id"], force=True)


def markers_dir(tmp_path: Path) -> Path:
    """A world-writable directory to bind-mount at /markers (trainers write a file per start)."""
    import os

    markers = tmp_path / "markers"
    markers.mkdir()
    os.chmod(markers, 0o777)
    return markers


def py(code: str) -> list[str]:
    """A container command running ``code`` with python3."""
    return ["python3", "-c", code]


RESULT_CODE = (
    "import json, os, time; "
    "start = time.time(); time.sleep(float(os.environ.get('SLEEP', '0'))); "
    "json.dump({'devices': os.environ.get('NVIDIA_VISIBLE_DEVICES'), 'i': os.environ.get('I'), "
    "'start': start, 'end': time.time()}, open('/airflow/xcom/return.json', 'w'))"
)

__all__ = [
    "DOCKER_URL",
    "RESULT_CODE",
    "make_context",
    "markers_dir",
    "py",
    "remove_all",
    "task_containers",
    "unique_dag_id",
    "wait_for_running",
]
