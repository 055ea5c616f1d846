"""Per-host GPU device leases: moved to :mod:`airflow_mlops_provider.docker_gpu.leases`.

This module keeps the old import path working (DAGs, tests and users import it).
"""

from __future__ import annotations

from airflow_mlops_provider.docker_gpu.leases import (
    DEFAULT_LEASE_DIR,
    GpuLease,
    acquire_gpu_lease,
    configured_lease_dir,
    lease_dir_for_host,
    try_lease_ids,
)

__all__ = [
    "DEFAULT_LEASE_DIR",
    "GpuLease",
    "acquire_gpu_lease",
    "configured_lease_dir",
    "lease_dir_for_host",
    "try_lease_ids",
]
