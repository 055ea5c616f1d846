"""Docker engine terms for ``Resources``: device requests, ``mem_limit``, ``nano_cpus``, ``shm_size``.

The docker client library is imported only inside :func:`build_device_requests`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docker.types import DeviceRequest

    from airflow_mlops_provider.compute import Resources

__all__ = ["build_device_requests", "build_docker_host_config"]


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
