"""``resources.gpu_type`` against the real engine: only devices of that type are requested and leased.

The engine has no real GPU: the stand-in NVIDIA hook accepts device requests and sets
``NVIDIA_VISIBLE_DEVICES`` (which this test reads back from the container), and discovery runs a
local image whose ``nvidia-smi`` is a script answering ``--query-gpu=index,name`` as a host with
one L4 and two A100s would (built from the base image, no registry).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from airflow_mlops_provider.docker_gpu.host import discover_host_gpus, discover_host_inventory
from airflow_mlops_provider.exceptions import GpuRuntimeMissingError
from airflow_mlops_provider.operators.docker import GpuDockerOperator
from tests.integration.docker.conftest import (
    DOCKER_URL,
    RESULT_CODE,
    make_context,
    py,
    remove_all,
    task_containers,
    unique_dag_id,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

NAMED_IMAGE = "mlops-fake-nvidia-smi-names:test"
HOST = {"0": "NVIDIA L4", "1": "NVIDIA A100-SXM4-80GB", "2": "NVIDIA A100-SXM4-80GB"}
A100 = "NVIDIA-A100-SXM4-80GB"  # the Kubernetes label form of nvidia-smi's "NVIDIA A100-SXM4-80GB"
# Answers names only when asked for them, as the real nvidia-smi does.
FAKE_SMI = """#!/bin/sh
case "$*" in
  *--query-gpu=index,name*) printf '0, NVIDIA L4\\n1, NVIDIA A100-SXM4-80GB\\n2, NVIDIA A100-SXM4-80GB\\n' ;;
  *) printf '0\\n1\\n2\\n' ;;
esac
"""


@pytest.fixture(scope="module")
def named_smi_image(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    context = tmp_path_factory.mktemp("fake_smi")
    (context / "nvidia-smi").write_text(FAKE_SMI)
    (context / "Dockerfile").write_text(
        f"FROM {base_image}\nCOPY nvidia-smi /usr/local/bin/nvidia-smi\nRUN chmod +x /usr/local/bin/nvidia-smi\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", NAMED_IMAGE, str(context)], check=True, capture_output=True
    )
    return NAMED_IMAGE


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", raising=False)


def _op(image: str, resources: dict, **kwargs) -> GpuDockerOperator:
    return GpuDockerOperator(
        task_id="t", image=image, command=py(RESULT_CODE), resources=resources, mount_tmp_dir=False, **kwargs
    )


def test_host_gpus_mapping_requests_only_devices_of_the_type(cli, lease_dir, base_image, no_config):
    dag_id = unique_dag_id("gputype")
    op = _op(base_image, {"gpus": 2, "gpu_type": A100}, host_gpus=HOST, auto_remove="never")
    try:
        assert op.execute(make_context(dag_id))["devices"] == "1,2"
        (kept,) = task_containers(cli, dag_id)
        (request,) = cli.inspect_container(kept["Id"])["HostConfig"]["DeviceRequests"]
        assert (request["Driver"], request["DeviceIDs"]) == ("nvidia", ["1", "2"])
        assert kept["Labels"]["airflow-mlops.gpu-ids"] == "1,2"
    finally:
        remove_all(cli, dag_id)


def test_parallel_tasks_of_one_type_never_get_another_type(cli, lease_dir, base_image, no_config):
    from airflow_mlops_provider.docker_gpu.leases import acquire_gpu_lease

    dag_id = unique_dag_id("gputype_busy")
    # Another task holds A100 device 1: this one gets the other A100, never the free L4.
    held = acquire_gpu_lease(DOCKER_URL, ["1"], count=1, timeout=0)
    try:
        op = _op(base_image, {"gpus": 1, "gpu_type": A100}, host_gpus=HOST)
        assert op.execute(make_context(dag_id))["devices"] == "2"
        waiting = _op(base_image, {"gpus": 2, "gpu_type": A100}, host_gpus=HOST, gpu_lease_timeout=1)
        with pytest.raises(TimeoutError, match=r"^no 2 free GPU device\(s\) of \['1', '2'\]"):
            waiting.execute(make_context(dag_id, run_id="r2"))
    finally:
        held.release()
        remove_all(cli, dag_id)
    assert task_containers(cli, dag_id) == []


def test_config_mapping_names_the_gpus(cli, lease_dir, base_image, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", json.dumps({DOCKER_URL: HOST}))
    op = _op(base_image, {"gpus": 1, "gpu_type": "nvidia l4"})
    assert op.execute(make_context(unique_dag_id("gputype_cfg")))["devices"] == "0"


def test_discovery_reads_names_from_nvidia_smi(cli, lease_dir, named_smi_image, no_config):
    inventory = discover_host_inventory(cli, DOCKER_URL, named_smi_image)
    assert (inventory.ids, inventory.names, inventory.source) == (["0", "1", "2"], HOST, "nvidia-smi")
    assert discover_host_gpus(cli, DOCKER_URL, named_smi_image) == ["0", "1", "2"]  # from the cache now
    assert cli.containers(all=True, filters={"label": "airflow-mlops.role=gpu-discovery"}) == []


def test_operator_leases_the_discovered_gpus_of_the_type(cli, lease_dir, named_smi_image, no_config):
    op = _op(named_smi_image, {"gpus": 2, "gpu_type": A100})
    assert op.execute(make_context(unique_dag_id("gputype_disc")))["devices"] == "1,2"


def test_a_type_the_host_lacks_fails_without_retry_naming_host_type_and_gpus(
    cli, lease_dir, base_image, monkeypatch
):
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", json.dumps(HOST))
    dag_id = unique_dag_id("gputype_wrong")
    op = _op(base_image, {"gpus": 1, "gpu_type": "NVIDIA-H100-80GB-HBM3"})
    with pytest.raises(GpuRuntimeMissingError) as err:
        op.execute(make_context(dag_id))
    assert str(err.value) == (
        "Docker host 'unix://var/run/docker.sock' (GPUs from [mlops] docker_host_gpus) has 0 GPU(s) of "
        "type 'NVIDIA-H100-80GB-HBM3', fewer than gpus=1; its GPUs are "
        "{'0': 'NVIDIA L4', '1': 'NVIDIA A100-SXM4-80GB', '2': 'NVIDIA A100-SXM4-80GB'}"
    )
    assert task_containers(cli, dag_id) == []  # failed before any container was created


def test_an_inventory_without_names_fails_saying_how_to_declare_them(cli, lease_dir, base_image, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", "4")
    op = _op(base_image, {"gpus": 1, "gpu_type": A100}, gpu_fallback="cpu")
    with pytest.raises(
        GpuRuntimeMissingError,
        match=r"^Cannot check gpu_type='NVIDIA-A100-SXM4-80GB' for Docker host 'unix://var/run/docker\.sock': "
        r"its GPU inventory from \[mlops\] docker_host_gpus "
        r"\(\['0', '1', '2', '3'\]\) has no GPU names\. Declare the names as a mapping",
    ):
        op.execute(make_context(unique_dag_id("gputype_unnamed")))


def test_discovery_without_names_fails_too(cli, lease_dir, base_image, no_config):
    # The base image has no nvidia-smi: discovery finds nothing, so the type cannot be checked.
    op = _op(base_image, {"gpus": 1, "gpu_type": A100})
    with pytest.raises(GpuRuntimeMissingError, match=r"its GPUs are unknown \(no host_gpus, no \[mlops\]"):
        op.execute(make_context(unique_dag_id("gputype_nodisc")))
