"""GpuKubernetesHook.gpu_inventory() on the kubernetes client's real models.

No cluster is available, so the NodeList JSON in data/nodelist.json (written in the shape of
``kubectl get nodes -o json``: GPU nodes labelled by NVIDIA GPU feature discovery and AMD's node
labeller, a cordoned node, a NotReady node, a CPU node) goes through the client's own
deserialisation, ``ApiClient().deserialize``, exactly as a ``list_node`` response would.
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest

from airflow_mlops_provider.hooks.kubernetes import GpuKubernetesHook, gpu_inventory_from_nodes

NODELIST = Path(__file__).parent / "data" / "nodelist.json"


class _Response:
    """What ApiClient.deserialize reads from a urllib3 response: ``data`` and headers."""

    def __init__(self, body: dict) -> None:
        self.data = json.dumps(body).encode()
        self.status = 200

    def getheader(self, name, default=None):
        return "application/json" if name.lower() == "content-type" else default


def _node_list(body: dict):
    from kubernetes.client import ApiClient

    return ApiClient().deserialize(_Response(body), "V1NodeList")


@pytest.fixture
def body() -> dict:
    return json.loads(NODELIST.read_text())


def test_inventory_from_deserialised_node_list(body):
    node_list = _node_list(body)
    assert type(node_list.items[1]).__name__ == "V1Node"
    inventory = gpu_inventory_from_nodes(node_list.items)
    assert inventory["total"] == 8 + 7 + 8 + 2
    assert inventory["by_resource"] == {"amd.com/gpu": 8, "nvidia.com/gpu": 17}
    assert inventory["by_product"] == {
        "AMD_Instinct_MI300X": {"nodes": 1, "allocatable": 8},
        "NVIDIA-A100-SXM4-80GB": {"nodes": 2, "allocatable": 15},
        "unknown": {"nodes": 1, "allocatable": 2},
    }
    nodes = {n["name"]: n for n in inventory["nodes"]}
    assert "cpu-pool-1" not in nodes  # no GPU resource at all
    assert nodes["gpu-a100-2"] == {
        "name": "gpu-a100-2",
        "product": "NVIDIA-A100-SXM4-80GB",
        "resource": "nvidia.com/gpu",
        "allocatable": 7,
        "capacity": 8,
        "ready": True,
        "schedulable": True,
    }
    # Listed but not counted: cordoned and NotReady nodes.
    assert (nodes["gpu-l4-1"]["schedulable"], nodes["gpu-l4-1"]["ready"]) == (False, True)
    assert (nodes["gpu-l4-2"]["schedulable"], nodes["gpu-l4-2"]["ready"]) == (True, False)
    assert "NVIDIA-L4" not in inventory["by_product"]
    json.dumps(inventory)  # JSON-safe: it goes to XCom and to the UI


def test_hook_follows_pagination_and_passes_the_label_selector(body):
    first = {**body, "metadata": {"continue": "page-2"}, "items": body["items"][:3]}
    second = {**body, "items": body["items"][3:]}
    client = mock.Mock()
    client.list_node.side_effect = [_node_list(first), _node_list(second)]
    hook = GpuKubernetesHook(conn_id="no_such_connection")  # nothing is read yet
    with mock.patch.object(GpuKubernetesHook, "core_v1_client", client):
        inventory = hook.gpu_inventory(label_selector="pool=gpu")
    assert client.list_node.call_args_list == [
        mock.call(limit=500, label_selector="pool=gpu"),
        mock.call(limit=500, label_selector="pool=gpu", _continue="page-2"),
    ]
    assert inventory["total"] == 25
    assert len(inventory["nodes"]) == 6


def test_custom_product_label(body):
    for item in body["items"]:
        labels = item["metadata"]["labels"]
        if "nvidia.com/gpu.product" in labels:
            labels["cloud.google.com/gke-accelerator"] = labels.pop("nvidia.com/gpu.product").lower()
    inventory = gpu_inventory_from_nodes(
        _node_list(body).items, product_labels=["cloud.google.com/gke-accelerator"]
    )
    assert sorted(inventory["by_product"]) == ["nvidia-a100-sxm4-80gb", "unknown"]
    assert inventory["by_product"]["unknown"] == {"nodes": 2, "allocatable": 10}  # AMD + unlabelled


def test_empty_cluster():
    assert gpu_inventory_from_nodes([]) == {"nodes": [], "by_product": {}, "by_resource": {}, "total": 0}
