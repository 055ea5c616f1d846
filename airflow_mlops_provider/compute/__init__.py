"""``Resources``: the one vocabulary a task uses to say what compute it needs.

The same ``Resources`` value means the same thing on every runtime. Pure functions translate
it into Docker engine terms (:mod:`~airflow_mlops_provider.compute.docker`: device requests,
``mem_limit``, ``nano_cpus``, ``shm_size``) and into Kubernetes terms
(:mod:`~airflow_mlops_provider.compute.kubernetes`: ``V1ResourceRequirements``, a node affinity
for the GPU model, tolerations for GPU taints, a memory-backed ``/dev/shm``); every name is
importable from here. The docker and kubernetes client libraries are imported only inside the
functions that build their objects, so importing this package stays cheap enough for the DAG
processor.

Memory quantities (:mod:`~airflow_mlops_provider.compute.quantities`) accept Kubernetes
suffixes (``Ki Mi Gi Ti Pi Ei`` binary, ``K M G T P E`` decimal) and Docker's lowercase
suffixes (``b k m g t``, binary: ``"4g"`` is 4 GiB, as ``docker run --memory 4g`` reads it). A
plain number is bytes. Values are normalised to bytes, so
``Resources(memory="1Gi") == Resources(memory="1g") == Resources(memory=1073741824)``.

``Resources`` is defined here, not in a submodule, so its import path (which Airflow's serde and
pickle record) stays ``airflow_mlops_provider.compute.Resources``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from airflow_mlops_provider.compute.docker import build_device_requests, build_docker_host_config
from airflow_mlops_provider.compute.kubernetes import (
    DEFAULT_AMD_GPU_TYPE_LABEL,
    DEFAULT_GPU_TYPE_LABEL,
    build_gpu_node_affinity,
    build_gpu_tolerations,
    build_k8s_resource_requirements,
    build_shm_volume,
)
from airflow_mlops_provider.compute.quantities import format_k8s_quantity, parse_memory

__all__ = [
    "DEFAULT_AMD_GPU_TYPE_LABEL",
    "DEFAULT_GPU_TYPE_LABEL",
    "GPU_VENDORS",
    "RESOURCE_FIELDS",
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
#: The fields of a ``Resources`` dict, in order.
RESOURCE_FIELDS = ("cpus", "memory", "gpus", "gpu_type", "gpu_vendor", "shm_size")


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
            # The chained comparison, not math.isfinite: an int too large for a float overflows that.
            if (
                isinstance(cpus, bool)
                or not isinstance(cpus, (int, float))
                or not 0 < cpus <= sys.float_info.max
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
            raise ValueError(f"resources must be a mapping of {list(RESOURCE_FIELDS)}, got {data!r}")
        unknown = sorted(set(data) - set(RESOURCE_FIELDS), key=str)  # keys may be of mixed types
        if unknown:
            raise ValueError(
                f"resources has unknown field(s) {unknown}; expected some of {list(RESOURCE_FIELDS)}"
            )
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str) -> Resources:
        """Build from the JSON text written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError, RecursionError) as err:  # RecursionError: nested too deep
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
