"""``gpu_type`` on Docker: GPU names, how they are compared, declared and discovered (no engine).

The same checks run against the real engine in tests/integration/docker/test_gpu_type.py.
"""

from __future__ import annotations

import json
import logging
import re
from unittest import mock

import pytest

from airflow_mlops_provider.compute import Resources
from airflow_mlops_provider.docker_gpu.allocation import allocate_gpus
from airflow_mlops_provider.docker_gpu.host import (
    HostGpus,
    configured_host_inventory,
    gpu_type_key,
    parse_host_inventory,
    parse_nvidia_smi,
)
from airflow_mlops_provider.exceptions import GpuRuntimeMissingError

URL = "unix://var/run/docker.sock"


@pytest.mark.parametrize(
    ("label", "smi_name"),
    [
        ("NVIDIA-A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"),
        ("nvidia-a100-sxm4-80gb", "NVIDIA A100-SXM4-80GB"),
        ("NVIDIA_H100_80GB_HBM3", "NVIDIA H100 80GB HBM3"),
        (" NVIDIA  L4 ", "NVIDIA L4"),
    ],
    ids=["kubernetes-label", "lower-case", "underscores", "extra-spaces"],
)
def test_gpu_types_compare_tolerantly(label, smi_name):
    assert gpu_type_key(label) == gpu_type_key(smi_name)


def test_different_products_do_not_match():
    assert gpu_type_key("NVIDIA A100-SXM4-40GB") != gpu_type_key("NVIDIA A100-SXM4-80GB")
    assert gpu_type_key("A100") != gpu_type_key("NVIDIA A100-SXM4-80GB")


def test_inventory_of_type_keeps_host_order():
    inventory = parse_host_inventory(
        {"0": "NVIDIA L4", "1": "NVIDIA A100-SXM4-80GB", "3": "NVIDIA A100-SXM4-80GB"}
    )
    assert inventory.of_type("NVIDIA-A100-SXM4-80GB") == ["1", "3"]
    assert inventory.of_type("NVIDIA-H100") == []
    assert HostGpus(ids=["0"]).of_type("NVIDIA L4") == []  # no names, nothing matches


@pytest.mark.parametrize(
    ("out", "ids", "names"),
    [
        (
            "0, NVIDIA A100-SXM4-80GB\n1, NVIDIA L4\n",
            ["0", "1"],
            {"0": "NVIDIA A100-SXM4-80GB", "1": "NVIDIA L4"},
        ),
        ("0\n1\n2\n", ["0", "1", "2"], None),
        ("NVIDIA-SMI has failed\n", None, None),
    ],
    ids=["index-and-name", "index-only", "error-text"],
)
def test_nvidia_smi_output(out, ids, names):
    inventory = parse_nvidia_smi(out)
    assert (inventory and inventory.ids, inventory and inventory.names) == (ids, names)


@pytest.mark.parametrize(
    ("value", "ids", "names"),
    [
        ('{"0": "NVIDIA L4", "1": "NVIDIA L4"}', ["0", "1"], {"0": "NVIDIA L4", "1": "NVIDIA L4"}),
        (json.dumps({URL: {"2": "NVIDIA L4"}, "tcp://b:2376": 4}), ["2"], {"2": "NVIDIA L4"}),
        (json.dumps({URL: 2}), ["0", "1"], None),
        ("0,3", ["0", "3"], None),
    ],
    ids=["names-for-every-host", "names-per-docker-url", "count-per-docker-url", "ids"],
)
def test_config_declares_names(monkeypatch, value, ids, names):
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", value)
    inventory = configured_host_inventory(URL)
    assert (inventory.ids, inventory.names) == (ids, names)
    assert inventory.source.startswith("[mlops] docker_host_gpus")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "[mlops] docker_host_gpus is not valid JSON"),
        (
            json.dumps({URL: 2, "0": "NVIDIA L4"}),
            "[mlops] docker_host_gpus mixes docker_url keys and device ids",
        ),
        (json.dumps({URL: {"0": ""}}), "[mlops] docker_host_gpus['unix://var/run/docker.sock'] as a mapping"),
    ],
    ids=["bad-json", "mixed-keys", "empty-name"],
)
def test_malformed_config_names_the_option(monkeypatch, value, message):
    monkeypatch.setenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", value)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        configured_host_inventory(URL)


def _allocate(tmp_path, monkeypatch, resources, host_gpus, *, fallback=None, share=False):
    monkeypatch.setenv("AIRFLOW__MLOPS__GPU_LEASE_DIR", str(tmp_path))
    monkeypatch.delenv("AIRFLOW__MLOPS__DOCKER_HOST_GPUS", raising=False)
    cli = mock.MagicMock()
    cli.info.return_value = {"Runtimes": {"nvidia": {}}}
    cli.containers.return_value = []

    def fail(message):
        raise GpuRuntimeMissingError(message, host=URL)

    return allocate_gpus(
        cli,
        host=URL,
        resources=Resources.coerce(resources),
        gpu_ids=None,
        container_name="c",
        host_gpus=host_gpus,
        discovery_image="img",
        runtime_check="auto",
        share_gpus=share,
        lease_timeout=0,
        owner="o",
        fallback=fallback or fail,
        logger=logging.getLogger("test"),
    )


HOST = parse_host_inventory({"0": "NVIDIA L4", "1": "NVIDIA A100-SXM4-80GB", "2": "NVIDIA A100-SXM4-80GB"})
A100 = {"gpus": 2, "gpu_type": "NVIDIA-A100-SXM4-80GB"}


def test_only_devices_of_the_type_are_leased(tmp_path, monkeypatch):
    resources, ids, lease = _allocate(tmp_path, monkeypatch, A100, HOST)
    assert ids == ["1", "2"]
    assert lease.device_ids == ["1", "2"]
    lease.release()


def test_shared_gpus_of_a_type_are_requested_by_id(tmp_path, monkeypatch):
    resources, ids, lease = _allocate(tmp_path, monkeypatch, {**A100, "gpus": 1}, HOST, share=True)
    assert (ids, lease) == (["1"], None)


def test_a_type_mismatch_follows_gpu_fallback(tmp_path, monkeypatch):
    wanted = {"gpus": 1, "gpu_type": "NVIDIA H100 80GB HBM3"}
    with pytest.raises(GpuRuntimeMissingError, match=r"has 0 GPU\(s\) of type 'NVIDIA H100 80GB HBM3'"):
        _allocate(tmp_path, monkeypatch, wanted, HOST)
    messages = []
    resources, ids, lease = _allocate(tmp_path, monkeypatch, wanted, HOST, fallback=messages.append)
    assert (resources.gpus, resources.gpu_type, ids, lease) == (0, None, None, None)
    assert messages[0].startswith(
        "Docker host 'unix://var/run/docker.sock' (GPUs from host_gpus) has 0 GPU(s)"
    )


def test_unnamed_inventory_fails_even_with_cpu_fallback(tmp_path, monkeypatch):
    with pytest.raises(
        GpuRuntimeMissingError, match=r"^Cannot check gpu_type='NVIDIA-A100-SXM4-80GB' for Docker host"
    ):
        _allocate(tmp_path, monkeypatch, A100, parse_host_inventory(4), fallback=lambda message: None)
