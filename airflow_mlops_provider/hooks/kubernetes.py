"""``GpuKubernetesHook``: KubernetesHook that can tell how many GPUs a cluster offers, and of which kind.

``gpu_inventory()`` reads every node's allocatable extended resources (``nvidia.com/gpu``,
``amd.com/gpu``) and its GPU product label, and sums them per node and per product. It is what
the docs and the UI show, and what a GPU pool should be sized from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

from airflow_mlops_provider.compute import (
    DEFAULT_AMD_GPU_TYPE_LABEL,
    DEFAULT_GPU_TYPE_LABEL,
    GPU_VENDORS,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from kubernetes.client import models as k8s

__all__ = ["UNKNOWN_PRODUCT", "GpuKubernetesHook", "gpu_inventory_from_nodes"]

#: Product name used for GPU nodes that carry none of the product labels.
UNKNOWN_PRODUCT = "unknown"
#: Labels read, in order, for a node's GPU product (NVIDIA GPU feature discovery, AMD's labeller).
DEFAULT_PRODUCT_LABELS = (DEFAULT_GPU_TYPE_LABEL, DEFAULT_AMD_GPU_TYPE_LABEL)


def _count(quantity: Any) -> int:
    """Return an extended-resource quantity ("8", 8, "0") as an int; anything else counts 0."""
    try:
        return max(int(str(quantity)), 0)
    except (TypeError, ValueError):
        return 0


def _is_ready(node: k8s.V1Node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def gpu_inventory_from_nodes(
    nodes: Iterable[k8s.V1Node], product_labels: Sequence[str] = DEFAULT_PRODUCT_LABELS
) -> dict[str, Any]:
    """
    Return the GPU inventory of ``nodes`` (``V1Node`` objects, as the API returns them).

    The result is JSON-safe::

        {
          "nodes": [{"name", "product", "resource", "allocatable", "capacity",
                     "ready", "schedulable"}, ...],          # GPU nodes only, by name
          "by_product": {"NVIDIA-A100-SXM4-80GB": {"nodes": 2, "allocatable": 16}, ...},
          "by_resource": {"nvidia.com/gpu": 16, "amd.com/gpu": 8},
          "total": 24,
        }

    Totals count only nodes that are Ready and not cordoned (what new pods can get); every GPU
    node is listed with its ``ready`` and ``schedulable`` flags.

    :param nodes: The cluster's nodes.
    :param product_labels: Node labels holding the GPU product, tried in order.
    """
    listed: list[dict[str, Any]] = []
    by_product: dict[str, dict[str, int]] = {}
    by_resource: dict[str, int] = {}
    for node in nodes:
        allocatable: Mapping[str, Any] = (node.status.allocatable if node.status else None) or {}
        capacity: Mapping[str, Any] = (node.status.capacity if node.status else None) or {}
        labels: Mapping[str, str] = (node.metadata.labels if node.metadata else None) or {}
        product = next((labels[key] for key in product_labels if labels.get(key)), UNKNOWN_PRODUCT)
        ready = _is_ready(node)
        schedulable = not (node.spec and node.spec.unschedulable)
        for resource in GPU_VENDORS.values():
            if resource not in allocatable and resource not in capacity:
                continue
            count = _count(allocatable.get(resource))
            listed.append(
                {
                    "name": node.metadata.name,
                    "product": product,
                    "resource": resource,
                    "allocatable": count,
                    "capacity": _count(capacity.get(resource)),
                    "ready": ready,
                    "schedulable": schedulable,
                }
            )
            if not (ready and schedulable) or count == 0:
                continue
            entry = by_product.setdefault(product, {"nodes": 0, "allocatable": 0})
            entry["nodes"] += 1
            entry["allocatable"] += count
            by_resource[resource] = by_resource.get(resource, 0) + count
    listed.sort(key=lambda n: (n["name"], n["resource"]))
    return {
        "nodes": listed,
        "by_product": dict(sorted(by_product.items())),
        "by_resource": dict(sorted(by_resource.items())),
        "total": sum(by_resource.values()),
    }


class GpuKubernetesHook(KubernetesHook):
    """
    KubernetesHook with a GPU inventory of the cluster.

    Takes KubernetesHook's arguments (``conn_id``, ``config_file``, ``cluster_context``,
    ``in_cluster``, ...); nothing is read until a method is called.
    """

    def list_nodes(self, label_selector: str | None = None, page_size: int = 500) -> list[k8s.V1Node]:
        """Return every node (following the API's pagination), optionally filtered by labels."""
        nodes: list[k8s.V1Node] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page_size}
            if label_selector:
                kwargs["label_selector"] = label_selector
            if token:
                kwargs["_continue"] = token
            page = self.core_v1_client.list_node(**kwargs)
            nodes.extend(page.items or [])
            # The list's ``continue`` token. Python cannot name a field ``continue``, so the
            # generated client calls it ``_continue`` (its documented property and the keyword
            # of ``list_node``); ``to_dict()`` is the model's public view of it.
            token = page.metadata.to_dict().get("_continue") if page.metadata else None
            if not token:
                return nodes

    def gpu_inventory(
        self,
        label_selector: str | None = None,
        product_labels: Sequence[str] = DEFAULT_PRODUCT_LABELS,
    ) -> dict[str, Any]:
        """
        Return allocatable GPUs per node, per GPU product and per resource, and the total.

        See :func:`gpu_inventory_from_nodes` for the shape of the result.

        :param label_selector: Only nodes matching it, e.g. ``"pool=gpu"``.
        :param product_labels: Node labels holding the GPU product, tried in order; default
            ``nvidia.com/gpu.product`` then ``amd.com/gpu.product-name``.
        """
        inventory = gpu_inventory_from_nodes(self.list_nodes(label_selector), product_labels)
        self.log.info(
            "GPU inventory: %d allocatable on %d GPU node(s); by product %s",
            inventory["total"],
            len(inventory["nodes"]),
            {k: v["allocatable"] for k, v in inventory["by_product"].items()},
        )
        return inventory
