"""GPU allocation on a Docker host: what the host has, and which devices a task may use.

- :mod:`~airflow_mlops_provider.docker_gpu.host`: the host's GPU runtime and its GPU inventory
  (device ids and, when known, product names), declared or discovered with ``nvidia-smi``;
- :mod:`~airflow_mlops_provider.docker_gpu.leases`: per-host device leases, so parallel tasks
  get distinct devices;
- :mod:`~airflow_mlops_provider.docker_gpu.allocation`: what ``GpuDockerOperator`` does with
  both before it starts a GPU container (check the host, the GPU type, then lease).

Nothing here imports docker at module level: ``host`` is imported when a DAG file is parsed.
"""

from __future__ import annotations
