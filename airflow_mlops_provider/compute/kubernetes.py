"""Kubernetes terms for ``Resources``: resource requirements, GPU node affinity, tolerations, ``/dev/shm``.

The kubernetes client library is imported only inside the functions that build its objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider.compute.quantities import format_k8s_quantity

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

    from airflow_mlops_provider.compute import Resources

__all__ = [
    "DEFAULT_AMD_GPU_TYPE_LABEL",
    "DEFAULT_GPU_TYPE_LABEL",
    "build_gpu_node_affinity",
    "build_gpu_tolerations",
    "build_k8s_resource_requirements",
    "build_shm_volume",
]

#: Default node label that NVIDIA GPU feature discovery sets to the GPU product name.
DEFAULT_GPU_TYPE_LABEL = "nvidia.com/gpu.product"
#: AMD's node labeller publishes the product name under this label.
DEFAULT_AMD_GPU_TYPE_LABEL = "amd.com/gpu.product-name"


def _format_cpu(cpus: float) -> str:
    millis = int(round(cpus * 1000))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def build_k8s_resource_requirements(resources: Resources) -> k8s.V1ResourceRequirements:
    """
    Return the container's ``V1ResourceRequirements`` for ``resources``.

    CPU and memory are both requested and limited (Guaranteed QoS for those fields); GPUs go
    in limits (and requests, which Kubernetes requires to be equal) under ``nvidia.com/gpu``
    or ``amd.com/gpu``. With ``gpus=0`` no GPU key appears at all.
    """
    from kubernetes.client import models as k8s

    quantities: dict[str, str] = {}
    if resources.cpus is not None:
        quantities["cpu"] = _format_cpu(resources.cpus)
    if resources.memory is not None:
        quantities["memory"] = format_k8s_quantity(resources.memory)
    if resources.gpus:
        quantities[resources.gpu_resource_name] = str(resources.gpus)
    if not quantities:
        return k8s.V1ResourceRequirements()
    return k8s.V1ResourceRequirements(requests=dict(quantities), limits=dict(quantities))


def build_gpu_node_affinity(resources: Resources, gpu_type_label: str | None = None) -> k8s.V1Affinity | None:
    """
    Return a required node affinity that pins the pod to nodes with ``resources.gpu_type``.

    :param resources: The compute request; None is returned when it names no ``gpu_type``.
    :param gpu_type_label: Node label holding the GPU product. Defaults to
        ``nvidia.com/gpu.product`` (NVIDIA GPU feature discovery) or
        ``amd.com/gpu.product-name`` for AMD.
    """
    if not resources.gpu_type:
        return None
    from kubernetes.client import models as k8s

    if gpu_type_label is None:
        gpu_type_label = (
            DEFAULT_AMD_GPU_TYPE_LABEL if resources.gpu_vendor == "amd" else DEFAULT_GPU_TYPE_LABEL
        )
    requirement = k8s.V1NodeSelectorRequirement(
        key=gpu_type_label, operator="In", values=[resources.gpu_type]
    )
    return k8s.V1Affinity(
        node_affinity=k8s.V1NodeAffinity(
            required_during_scheduling_ignored_during_execution=k8s.V1NodeSelector(
                node_selector_terms=[k8s.V1NodeSelectorTerm(match_expressions=[requirement])]
            )
        )
    )


_TOLERATION_KEYS = {"key", "operator", "value", "effect", "toleration_seconds"}
_TOLERATION_OPERATORS = {"Exists", "Equal"}
_TOLERATION_EFFECTS = {"NoSchedule", "PreferNoSchedule", "NoExecute", None}


def _toleration_from_dict(item: Any) -> k8s.V1Toleration:
    from kubernetes.client import models as k8s

    if isinstance(item, k8s.V1Toleration):
        return item
    if not isinstance(item, Mapping):
        raise ValueError(
            "gpu_tolerations must be a list of dicts like "
            "{'key': 'nvidia.com/gpu', 'operator': 'Exists', 'effect': 'NoSchedule'}, "
            f"got item {item!r}"
        )
    data = {("toleration_seconds" if k == "tolerationSeconds" else k): v for k, v in item.items()}
    unknown = sorted(set(data) - _TOLERATION_KEYS)
    if unknown:
        raise ValueError(
            f"gpu_tolerations item {item!r} has unknown key(s) {unknown}; "
            f"expected some of {sorted(_TOLERATION_KEYS)}"
        )
    operator = data.get("operator", "Equal")
    if operator not in _TOLERATION_OPERATORS:
        raise ValueError(
            f"gpu_tolerations item {item!r}: operator must be 'Exists' or 'Equal', got {operator!r}"
        )
    if data.get("effect") not in _TOLERATION_EFFECTS:
        raise ValueError(
            f"gpu_tolerations item {item!r}: effect must be one of "
            f"'NoSchedule', 'PreferNoSchedule', 'NoExecute', got {data.get('effect')!r}"
        )
    if operator == "Exists" and data.get("value") not in (None, ""):
        raise ValueError(f"gpu_tolerations item {item!r}: operator 'Exists' takes no value")
    return k8s.V1Toleration(**data)


def build_gpu_tolerations(
    resources: Resources, tolerations: list[Any] | None = None
) -> list[k8s.V1Toleration]:
    """
    Return the tolerations a GPU pod needs.

    :param resources: The compute request; no GPU means no tolerations.
    :param tolerations: Dicts (or ``V1Toleration``) to use instead of the default, which
        tolerates the vendor's GPU taint: ``{key: nvidia.com/gpu, operator: Exists,
        effect: NoSchedule}``. Pass ``[]`` for none.
    """
    if tolerations is not None and (
        isinstance(tolerations, (str, Mapping)) or not isinstance(tolerations, (list, tuple))
    ):
        raise ValueError(
            "gpu_tolerations must be a list of toleration dicts, e.g. "
            "[{'key': 'nvidia.com/gpu', 'operator': 'Exists', 'effect': 'NoSchedule'}], "
            f"got {tolerations!r}"
        )
    if not resources.gpus:
        return []
    if tolerations is None:
        tolerations = [{"key": resources.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"}]
    return [_toleration_from_dict(item) for item in tolerations]


def build_shm_volume(
    resources: Resources, volume_name: str = "dshm"
) -> tuple[k8s.V1Volume, k8s.V1VolumeMount] | None:
    """
    Return a memory-backed emptyDir and its mount at ``/dev/shm`` sized to ``shm_size``.

    PyTorch DataLoader workers share batches through ``/dev/shm``, which is 64 MiB by default
    in a pod. None is returned when ``resources.shm_size`` is not set.
    """
    if resources.shm_size is None:
        return None
    from kubernetes.client import models as k8s

    volume = k8s.V1Volume(
        name=volume_name,
        empty_dir=k8s.V1EmptyDirVolumeSource(
            medium="Memory", size_limit=format_k8s_quantity(resources.shm_size)
        ),
    )
    return volume, k8s.V1VolumeMount(name=volume_name, mount_path="/dev/shm")
