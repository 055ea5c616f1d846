"""A Docker host's GPU runtime and inventory: moved to :mod:`airflow_mlops_provider.docker_gpu.host`.

This module keeps the old import path working (tests and users import it).
"""

from __future__ import annotations

from airflow_mlops_provider.docker_gpu.host import (
    GPU_IDS_LABEL,
    GPU_RUNTIME_CHECKS,
    NO_DEVICE_DRIVER,
    HostGpus,
    busy_gpu_ids,
    configured_host_gpus,
    configured_host_inventory,
    discover_host_gpus,
    discover_host_inventory,
    engine_gpu_runtimes,
    missing_runtime_message,
    no_driver_message,
    parse_host_gpus,
    parse_host_inventory,
)

__all__ = [
    "GPU_IDS_LABEL",
    "GPU_RUNTIME_CHECKS",
    "NO_DEVICE_DRIVER",
    "HostGpus",
    "busy_gpu_ids",
    "configured_host_gpus",
    "configured_host_inventory",
    "discover_host_gpus",
    "discover_host_inventory",
    "engine_gpu_runtimes",
    "missing_runtime_message",
    "no_driver_message",
    "parse_host_gpus",
    "parse_host_inventory",
]
