"""What ``GpuDockerOperator`` does before it starts a GPU container: check the host, then lease devices.

1. The GPU runtime (``gpu_runtime_check``): an engine without NVIDIA runtime fails the task
   without retries, or runs it on CPU with ``gpu_fallback="cpu"``.
2. The inventory: the task's ``host_gpus``, else ``[mlops] docker_host_gpus``, else
   ``nvidia-smi`` in a helper container. Unknown: GPUs are requested by count (tasks may share).
3. The GPU type (``resources.gpu_type``): only devices whose nvidia-smi name matches are
   leased. An inventory without names cannot be checked, which fails the task with a message
   saying how to declare them; too few devices of the type is handled like too few GPUs.
4. The lease: distinct free devices, waiting while all are taken (:mod:`.leases`).

Imported by ``execute()`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.docker_gpu.host import (
    HostGpus,
    busy_gpu_ids,
    configured_host_inventory,
    discover_host_inventory,
    engine_gpu_runtimes,
    gpus_of_type,
    missing_runtime_message,
    require_gpu_names,
)
from airflow_mlops_provider.docker_gpu.leases import GpuLease, acquire_gpu_lease
from airflow_mlops_provider.exceptions import GpuRuntimeMissingError

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Mapping

    from docker import APIClient

    from airflow_mlops_provider.compute import Resources

__all__ = ["allocate_gpus", "host_inventory"]

#: What ``allocate_gpus`` gives the container: the resources to request, explicit device ids
#: (None: by count) and the lease to release when the container ends (None: nothing leased).
Grant = tuple["Resources", "list[str] | None", "GpuLease | None"]


def host_inventory(
    cli: APIClient, host: str, host_gpus: HostGpus | None, discovery_image: str
) -> HostGpus | None:
    """Return the host's GPUs: the task's ``host_gpus``, else ``[mlops] docker_host_gpus``, else nvidia-smi."""
    if host_gpus is not None:
        return host_gpus
    try:
        configured = configured_host_inventory(host)
    except ValueError as err:
        raise AirflowFailException(str(err)) from err
    if configured is not None:
        return configured
    return discover_host_inventory(cli, host, discovery_image)


def allocate_gpus(
    cli: APIClient,
    *,
    host: str,
    resources: Resources,
    gpu_ids: list[str] | None,
    container_name: str,
    host_gpus: HostGpus | None,
    discovery_image: str,
    runtime_check: str,
    share_gpus: bool,
    lease_timeout: float | None,
    owner: str,
    fallback: Callable[[str], None],
    logger: logging.Logger,
    task: Mapping[str, str] | None = None,
) -> Grant:
    """
    Check ``host`` for the GPU request, then lease the devices; return what the container asks for.

    :param cli: The Docker client of ``host``.
    :param host: The Docker host (``docker_url``), the key of the leases.
    :param resources: The rendered compute request.
    :param gpu_ids: Explicit device ids, or None.
    :param container_name: The task's container (its own devices are not "busy").
    :param host_gpus: The task's ``host_gpus``, or None.
    :param discovery_image: Image that runs nvidia-smi for discovery.
    :param runtime_check: ``"auto"``, ``"runtime"`` or ``"off"``.
    :param share_gpus: Request devices without a lease.
    :param lease_timeout: Seconds to wait for free devices (None: until execution_timeout).
    :param owner: Recorded in the lock files.
    :param fallback: Called with a message when the host cannot serve the request: raises
        (``gpu_fallback="fail"``) or returns, and then the container runs without GPUs.
    :param logger: The task's logger.
    :param task: The task instance's identity (dag_id, task_id, run_id, map_index), recorded in
        the lease and in the waiting marker for the GPUs view.
    """
    wanted = len(gpu_ids) if gpu_ids else resources.gpus
    if not wanted or resources.gpu_vendor != "nvidia":
        return resources, gpu_ids, None
    cpu_only: Grant = (resources.without_gpus(), None, None)
    if runtime_check != "off":
        info = cli.info()
        if not engine_gpu_runtimes(info) and runtime_check == "runtime":
            fallback(missing_runtime_message(host, info, wanted))
            return cpu_only
    gpu_type = resources.gpu_type
    if share_gpus and not gpu_type:
        return resources, gpu_ids, None
    inventory = host_inventory(cli, host, host_gpus, discovery_image)
    if inventory is None:
        if gpu_type:
            _fail_config(host, lambda: require_gpu_names(None, gpu_type, where=f"Docker host {host!r}"))
        logger.warning(
            "GPU inventory of %s is unknown (set host_gpus or [mlops] docker_host_gpus): requesting "
            "%d GPU(s) by count, so parallel tasks may share devices",
            host,
            wanted,
        )
        return resources, gpu_ids, None
    ids = inventory.ids
    if wanted > len(ids) or (gpu_ids and set(gpu_ids) - set(ids)):
        what = f"gpu_ids={gpu_ids!r}" if gpu_ids else f"gpus={wanted}"
        fallback(f"Docker host {host!r} cannot serve {what}: it has {len(ids)} GPU(s) {ids!r}.")
        return cpu_only
    candidates = ids
    if gpu_type:
        _fail_config(host, lambda: require_gpu_names(inventory, gpu_type, where=f"Docker host {host!r}"))
        where = f"Docker host {host!r} (GPUs from {inventory.source})"
        try:
            candidates = gpus_of_type(inventory, gpu_type, wanted, gpu_ids, where=where)
        except ValueError as err:
            fallback(str(err))
            return cpu_only
        logger.info("GPU type %r on %s: device(s) %s match", gpu_type, host, ",".join(candidates))
        if share_gpus:
            return resources, gpu_ids or candidates[:wanted], None
    lease = acquire_gpu_lease(
        host,
        candidates,
        count=None if gpu_ids else wanted,
        device_ids=gpu_ids,
        busy=lambda: busy_gpu_ids(cli, exclude_name=container_name),
        owner=owner,
        task=task,
        timeout=lease_timeout,
        logger=logger,
    )
    return resources, list(lease.device_ids), lease


def _fail_config(host: str, check: Callable[[], object]) -> None:
    """Run ``check``; its ``ValueError`` (the host's GPU names are unknown) fails the task without retries."""
    try:
        check()
    except ValueError as err:
        raise GpuRuntimeMissingError(str(err), host=host) from err
