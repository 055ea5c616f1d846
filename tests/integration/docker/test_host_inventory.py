"""The host's GPU inventory: declared in config, or discovered with nvidia-smi in a helper container.

This engine has no real GPU, so discovery runs a local image whose ``nvidia-smi`` is a script
printing three indexes (built from the base image, no registry).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from airflow_mlops_provider.gpu_leases import lease_dir_for_host
from airflow_mlops_provider.operators._docker_host import configured_host_gpus, discover_host_gpus
from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.integration.docker.conftest import (
    DOCKER_URL,
    RESULT_CODE,
    make_context,
    py,
    task_containers,
    unique_dag_id,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

FAKE_IMAGE = "mlops-fake-nvidia-smi:test"


@pytest.fixture(scope="module")
def fake_smi_image(base_image: str) -> str:
    dockerfile = (
        f"FROM {base_image}\n"
        "RUN printf '#!/bin/sh\\nprintf \"0\\\\n1\\\\n2\\\\n\"\\n' > /usr/local/bin/nvidia-smi "
        "&& chmod +x /usr/local/bin/nvidia-smi\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", FAKE_IMAGE, "-"],
        input=dockerfile.encode(),
        check=True,
        capture_output=True,
    )
    return FAKE_IMAGE


def test_discovery_reads_nvidia_smi_and_caches_the_answer(cli, lease_dir, fake_smi_image):
    assert discover_host_gpus(cli, DOCKER_URL, fake_smi_image) == ["0", "1", "2"]
    cache = json.loads((lease_dir_for_host(DOCKER_URL) / "inventory.json").read_text())
    assert cache["ids"] == ["0", "1", "2"]
    assert cli.containers(all=True, filters={"label": "airflow-mlops.role=gpu-discovery"}) == []


def test_discovery_without_nvidia_smi_gives_none(cli, lease_dir, base_image):
    assert discover_host_gpus(cli, DOCKER_URL, base_image) is None


def test_config_declares_the_inventory(monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", "0,2")
    assert configured_host_gpus(DOCKER_URL) == ["0", "2"]
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", json.dumps({DOCKER_URL: 3, "tcp://other:2376": 8}))
    assert configured_host_gpus(DOCKER_URL) == ["0", "1", "2"]
    assert configured_host_gpus("tcp://nowhere:2376") is None


def test_operator_leases_from_the_configured_inventory(cli, lease_dir, base_image, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", "5,7")
    dag_id = unique_dag_id("inventory")
    op = GpuDockerOperator(
        task_id="t", image=base_image, command=py(RESULT_CODE), resources={"gpus": 2}, mount_tmp_dir=False
    )
    assert op.execute(make_context(dag_id))["devices"] == "5,7"
    assert task_containers(cli, dag_id) == []


def test_too_many_gpus_for_the_host_fails_without_retry(cli, lease_dir, base_image, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", "2")
    op = GpuDockerOperator(
        task_id="t", image=base_image, command=["true"], resources={"gpus": 3}, mount_tmp_dir=False
    )
    with pytest.raises(
        AirflowFailException,
        match=r"^Docker host 'unix://var/run/docker.sock' cannot serve gpus=3: it has 2 GPU\(s\) \['0', '1'\]\.$",
    ):
        op.execute(make_context(unique_dag_id("toomany")))
