"""``Resources``: the one vocabulary a task uses to say what compute it needs.

The same ``Resources`` value means the same thing on every runtime. Pure functions in this
module translate it into Docker engine terms (device requests, ``mem_limit``, ``nano_cpus``,
``shm_size``) and into Kubernetes terms (``V1ResourceRequirements``, a node affinity for the GPU
model, tolerations for GPU taints, a memory-backed ``/dev/shm``). The docker and kubernetes
client libraries are imported only inside the functions that build their objects, so importing
this module stays cheap enough for the DAG processor.

Memory quantities accept Kubernetes suffixes (``Ki Mi Gi Ti Pi Ei`` binary, ``k K M G T P E``
decimal) and Docker's lowercase suffixes (``b k m g t``, binary: ``"4g"`` is 4 GiB, as
``docker run --memory 4g`` reads it). A plain number is bytes. Values are normalised to bytes,
so ``Resources(memory="1Gi") == Resources(memory="1g") == Resources(memory=1073741824)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from docker.types import DeviceRequest
    from kubernetes.client import models as k8s

__all__ = [
    "GPU_VENDORS",
    "Resources",
    "build_device_requests",
    "build_docker_host_config",
    "build_gpu_node_affinity",
    "build_gpu_tolerations",
    "build_k8s_resource_requirements",
    "build_shm_volume",
    "format_k8s_quantity",
    "parse_memory",
]

#: GPU vendors we know how to request, mapped to their Kubernetes extended-resource name.
GPU_VENDORS: dict[str, str] = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}

#: Default node label that NVIDIA GPU feature discovery sets to the GPU product name.
DEFAULT_GPU_TYPE_LABEL = "nvidia.com/gpu.product"
#: AMD's node labeller publishes the product name under this label.
DEFAULT_AMD_GPU_TYPE_LABEL = "amd.com/gpu.product-name"

_MEMORY_UNITS: dict[str, int] = {
    "": 1,
    # Kubernetes binary suffixes
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
    # Kubernetes decimal suffixes (lowercase k is decimal in Kubernetes)
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "E": 1000**6,
    # Docker's suffixes (binary, as `docker run --memory 4g` reads them)
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]{0,2})\s*$")
_FIELDS = ("cpus", "memory", "gpus", "gpu_type", "gpu_vendor", "shm_size")


def parse_memory(value: str | int | float, *, field: str = "memory") -> int:
    """
    Return a memory quantity in bytes.

    :param value: ``"512Mi"``, ``"8Gi"``, ``"4g"``, ``"1.5G"`` or a number of bytes.
    :param field: The field name used in the error message.
    :raises ValueError: naming ``field`` and the value when it cannot be read or is not > 0.
    """
    expected = f"{field} must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes"
    if isinstance(value, bool):
        raise ValueError(f"{expected}, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0 or value != int(value):
            raise ValueError(f"{expected}, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {value!r}")
    match = _MEMORY_RE.match(value)
    if not match or match.group(2) not in _MEMORY_UNITS:
        raise ValueError(f"{expected}, got {value!r}")
    number, unit = match.groups()
    amount = float(number) * _MEMORY_UNITS[unit]
    if amount < 1:
        raise ValueError(f"{expected}, got {value!r}")
    return int(amount)


def format_k8s_quantity(num_bytes: int) -> str:
    """Return ``num_bytes`` as the shortest exact Kubernetes binary quantity (``"8Gi"``)."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _MEMORY_UNITS[suffix]
        if num_bytes % unit == 0:
            return f"{num_bytes // unit}{suffix}"
    return str(num_bytes)


@dataclasses.dataclass(frozen=True)
class Resources:
    """
    What compute a task needs, in one vocabulary for Docker and Kubernetes.

    Frozen and hashable. ``to_dict()``/``from_dict()`` and ``to_json()``/``from_json()``
    round-trip, so a ``Resources`` can travel through XCom, DAG params and ``expand_kwargs``
    as a plain dict. Every field is validated here; a bad value raises ``ValueError`` naming
    the field and repeating the value.

    :param cpus: CPU cores, a float > 0 (a hard limit on Docker, request and limit on Kubernetes).
    :param memory: Memory limit: ``"512Mi"``, ``"8Gi"``, ``"4g"`` or bytes; stored as bytes.
    :param gpus: Number of GPUs, an integer >= 0.
    :param gpu_type: GPU product to schedule on (a node label value); only valid with gpus >= 1.
    :param gpu_vendor: ``"nvidia"`` (default) or ``"amd"``.
    :param shm_size: Size of ``/dev/shm``, same units as ``memory``; stored as bytes.
    """

    cpus: float | None = None
    memory: int | None = None
    gpus: int = 0
    gpu_type: str | None = None
    gpu_vendor: str = "nvidia"
    shm_size: int | None = None

    __version__: ClassVar[int] = 1

    def __post_init__(self) -> None:
        cpus = self.cpus
        if cpus is not None:
            if (
                isinstance(cpus, bool)
                or not isinstance(cpus, (int, float))
                or not math.isfinite(cpus)
                or cpus <= 0
            ):
                raise ValueError(f"cpus must be a number > 0, got {cpus!r}")
            object.__setattr__(self, "cpus", float(cpus))
        if self.memory is not None:
            object.__setattr__(self, "memory", parse_memory(self.memory, field="memory"))
        if self.shm_size is not None:
            object.__setattr__(self, "shm_size", parse_memory(self.shm_size, field="shm_size"))
        gpus = self.gpus
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"gpus must be an integer >= 0, got {gpus!r}")
        vendor = self.gpu_vendor
        if not isinstance(vendor, str) or vendor.lower() not in GPU_VENDORS:
            raise ValueError(f"gpu_vendor must be one of {sorted(GPU_VENDORS)}, got {vendor!r}")
        object.__setattr__(self, "gpu_vendor", vendor.lower())
        gpu_type = self.gpu_type
        if gpu_type is not None:
            if not isinstance(gpu_type, str) or not gpu_type.strip():
                raise ValueError(f"gpu_type must be a non-empty string or None, got {gpu_type!r}")
            if gpus < 1:
                raise ValueError(
                    f"gpu_type is only valid with gpus >= 1, got gpu_type={gpu_type!r} with gpus={gpus!r}"
                )

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resources:
        """Build from a mapping; unknown keys are an error that lists the known ones."""
        if not isinstance(data, Mapping):
            raise ValueError(f"resources must be a mapping of {list(_FIELDS)}, got {data!r}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"resources has unknown field(s) {unknown}; expected some of {list(_FIELDS)}")
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str) -> Resources:
        """Build from the JSON text written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise ValueError(f"resources must be a JSON object, got {text!r}") from err
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, value: Resources | Mapping[str, Any] | str | None) -> Resources:
        """
        Return ``value`` as ``Resources``: a ``Resources``, a dict, its JSON text, or None.

        This is what operators call on their (possibly templated) ``resources`` argument.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls.from_json(value)
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ValueError(
            f"resources must be a Resources, a dict or its JSON text, got {type(value).__name__}: {value!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict holding only the fields that differ from the defaults."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value != field.default:
                out[field.name] = value
        return out

    def to_json(self) -> str:
        """Return :meth:`to_dict` as compact, key-sorted JSON."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    # Airflow's serde protocol, so a Resources returned from a task survives XCom.
    def serialize(self) -> dict[str, Any]:
        return self.to_dict()

    @staticmethod
    def deserialize(data: dict[str, Any], version: int) -> Resources:
        if version > Resources.__version__:
            raise TypeError(f"Resources serialized with version {version} is newer than this code")
        return Resources.from_dict(data)

    @property
    def gpu_resource_name(self) -> str:
        """The Kubernetes extended resource for this vendor (``nvidia.com/gpu``)."""
        return GPU_VENDORS[self.gpu_vendor]

    def without_gpus(self) -> Resources:
        """Return a copy that asks for no GPU (used by ``gpu_fallback="cpu"``)."""
        return dataclasses.replace(self, gpus=0, gpu_type=None)


# -- Docker terms ------------------------------------------------------------------------------


def _validate_gpu_ids(resources: Resources, gpu_ids: list[str] | None) -> list[str] | None:
    if gpu_ids is None:
        return None
    if isinstance(gpu_ids, str) or not isinstance(gpu_ids, (list, tuple)):
        raise ValueError(f"gpu_ids must be a list of device ids such as ['0', '1'], got {gpu_ids!r}")
    ids = [str(i).strip() for i in gpu_ids]
    if not ids or any(not i for i in ids):
        raise ValueError(f"gpu_ids must be a non-empty list of non-empty device ids, got {gpu_ids!r}")
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"gpu_ids must not repeat a device, got {gpu_ids!r} (repeated: {dupes})")
    if resources.gpus and resources.gpus != len(ids):
        raise ValueError(
            f"gpu_ids lists {len(ids)} device(s) {ids!r} but resources.gpus is {resources.gpus!r}; "
            "they must agree (or leave gpus at 0 to take the count from gpu_ids)"
        )
    return ids


def build_device_requests(resources: Resources, gpu_ids: list[str] | None = None) -> list[DeviceRequest]:
    """
    Return Docker ``DeviceRequest`` objects for the GPUs in ``resources``.

    ``gpu_ids`` asks for exactly those devices; otherwise ``resources.gpus`` devices are
    requested by count. AMD GPUs are not requested this way on Docker (see
    :func:`build_docker_host_config`), so this returns an empty list for them.

    :param resources: The compute request.
    :param gpu_ids: Explicit device ids; must agree with ``resources.gpus`` when that is set.
    """
    ids = _validate_gpu_ids(resources, gpu_ids)
    if resources.gpu_vendor != "nvidia" or (not resources.gpus and not ids):
        return []
    from docker.types import DeviceRequest

    if ids:
        return [DeviceRequest(driver="nvidia", device_ids=ids, capabilities=[["gpu"]])]
    return [DeviceRequest(driver="nvidia", count=resources.gpus, capabilities=[["gpu"]])]


def build_docker_host_config(resources: Resources, gpu_ids: list[str] | None = None) -> dict[str, Any]:
    """
    Return the DockerOperator/docker-py keyword arguments that enforce ``resources``.

    Keys: ``device_requests``, ``mem_limit`` (bytes), ``nano_cpus`` (a hard CPU limit, not
    ``cpu_shares``), ``shm_size`` (bytes); for AMD GPUs, ``devices`` (``/dev/kfd``, ``/dev/dri``)
    and ``group_add`` instead of device requests, as ROCm containers need. Keys whose value
    would be empty are left out.

    :param resources: The compute request.
    :param gpu_ids: Explicit device ids (NVIDIA); see :func:`build_device_requests`.
    """
    out: dict[str, Any] = {}
    device_requests = build_device_requests(resources, gpu_ids)
    if device_requests:
        out["device_requests"] = device_requests
    if resources.gpu_vendor == "amd" and (resources.gpus or gpu_ids):
        out["devices"] = ["/dev/kfd:/dev/kfd:rwm", "/dev/dri:/dev/dri:rwm"]
        out["group_add"] = ["video"]
    if resources.memory is not None:
        out["mem_limit"] = resources.memory
    if resources.cpus is not None:
        out["nano_cpus"] = int(round(resources.cpus * 1e9))
    if resources.shm_size is not None:
        out["shm_size"] = resources.shm_size
    return out


# -- Kubernetes terms --------------------------------------------------------------------------


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
