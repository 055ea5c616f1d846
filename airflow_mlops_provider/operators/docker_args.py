"""The arguments of ``GpuDockerOperator``: their checks, and how they combine with DockerOperator's.

The rules of the container contract (:mod:`airflow_mlops_provider.operators._common`) on Docker:

- ``env`` wins over DockerOperator's ``environment``; the names it overrides are logged.
- An argument of ours and one of DockerOperator's that set the same thing cannot both be given
  (``resources.memory``/``mem_limit``, ``resources.shm_size``/``shm_size``,
  ``resources.gpus``/``gpu_ids`` and ``device_requests``): ``ValueError`` at parse time, or
  ``ContainerConfigError`` when a templated ``resources`` renders into a clash.
- ``auto_remove`` is honoured (see :func:`auto_remove_policy`); ``keep_container=True`` is
  ``auto_remove="never"``.

Every check raises ``ValueError`` naming the argument and repeating the value; the operator
calls the same checks on rendered values through ``rendered()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from airflow_mlops_provider.compute import Resources, build_docker_host_config
from airflow_mlops_provider.docker_gpu.host import GPU_RUNTIME_CHECKS, HostGpus, check_static_request
from airflow_mlops_provider.operators._common import (
    RESULT_FILE,
    RESULT_FILE_ENV,
    contains_template,
    env_as_strings,
    log_env_overrides,
    merge_env,
    reject_clash,
    rendered_env,
)

if TYPE_CHECKING:
    import logging

__all__ = [
    "AUTO_REMOVE",
    "GPU_FALLBACKS",
    "auto_remove_policy",
    "check_options",
    "check_static_gpus",
    "container_environment",
    "docker_gpu_ids",
    "docker_resources",
    "environment_at_init",
]

GPU_FALLBACKS = ("fail", "cpu")
#: DockerOperator's ``auto_remove`` values, as GpuDockerOperator honours them.
AUTO_REMOVE = ("never", "success", "force")
AutoRemove = Literal["never", "success", "force"]
#: The longest ``stop_grace_period``. When a task is marked failed or success (or its worker is
#: told to stop), Airflow's supervisor sends the task process SIGTERM and SIGKILLs it 5 s later
#: (``ActivitySubprocess.kill(escalation_delay=5.0)``, task SDK 1.3): ``on_kill`` must stop *and*
#: remove the container inside those 5 s. A longer grace left the stopped container behind.
MAX_STOP_GRACE_PERIOD = 3


def check_options(
    *, gpu_fallback: Any, gpu_runtime_check: Any, gpu_lease_timeout: Any, stop_grace_period: Any
) -> None:
    """Raise ``ValueError`` for a bad non-templated option of ``GpuDockerOperator``."""
    if gpu_fallback not in GPU_FALLBACKS:
        raise ValueError(f"gpu_fallback must be one of {list(GPU_FALLBACKS)}, got {gpu_fallback!r}")
    if gpu_runtime_check not in GPU_RUNTIME_CHECKS:
        raise ValueError(
            f"gpu_runtime_check must be one of {list(GPU_RUNTIME_CHECKS)}, got {gpu_runtime_check!r}"
        )
    if gpu_lease_timeout is not None and (
        isinstance(gpu_lease_timeout, bool)
        or not isinstance(gpu_lease_timeout, (int, float))
        or gpu_lease_timeout < 0
    ):
        raise ValueError(f"gpu_lease_timeout must be a number of seconds >= 0, got {gpu_lease_timeout!r}")
    if (
        isinstance(stop_grace_period, bool)
        or not isinstance(stop_grace_period, int)
        or not 0 <= stop_grace_period <= MAX_STOP_GRACE_PERIOD
    ):
        raise ValueError(
            f"stop_grace_period must be an integer from 0 to {MAX_STOP_GRACE_PERIOD} (Airflow SIGKILLs a "
            "killed task 5 s after SIGTERM, and the container must be stopped and removed before that), "
            f"got {stop_grace_period!r}"
        )


def auto_remove_policy(auto_remove: Any, keep_container: bool) -> AutoRemove:
    """
    Return the ``auto_remove`` the container follows: the one given, else ``"never"`` with ``keep_container``, else ``"force"``.

    - ``"force"``: removed after success, failure, timeout and kill (the default);
    - ``"success"``: removed after success (also a skip); kept after anything else;
    - ``"never"``: always kept.

    A kept container is stopped and renamed ``<name>-try<N>``.

    :raises ValueError: for an unknown value, or ``keep_container=True`` with a removing one.
    """
    if auto_remove is not None and auto_remove not in AUTO_REMOVE:
        raise ValueError(f"auto_remove must be one of {list(AUTO_REMOVE)}, got {auto_remove!r}")
    if keep_container and auto_remove in ("success", "force"):
        raise ValueError(
            f"keep_container=True keeps the container but auto_remove={auto_remove!r} removes it; "
            "pass only one (keep_container=True is auto_remove='never')"
        )
    return cast("AutoRemove", auto_remove or ("never" if keep_container else "force"))


def docker_resources(value: Any, native: Mapping[str, Any]) -> Resources:
    """
    Return ``value`` as ``Resources`` checked for Docker: no ``gpu_type`` on AMD, no clash with DockerOperator.

    :param value: A ``Resources``, a dict or JSON text.
    :param native: DockerOperator's ``mem_limit``, ``shm_size`` and ``device_requests`` as given.
    """
    resources = Resources.coerce(value)
    if resources.gpu_type and resources.gpu_vendor != "nvidia":
        raise ValueError(
            "gpu_type is checked on Docker only for NVIDIA GPUs (against nvidia-smi names), got "
            f"gpu_type={resources.gpu_type!r} with gpu_vendor={resources.gpu_vendor!r}"
        )
    reject_clash("resources.memory", resources.memory, "mem_limit", native.get("mem_limit"))
    reject_clash("resources.shm_size", resources.shm_size, "shm_size", native.get("shm_size"))
    gpus = resources.gpus or None
    reject_clash("resources.gpus", gpus, "device_requests", native.get("device_requests"))
    return resources


def docker_gpu_ids(resources: Resources, ids: Any, native: Mapping[str, Any]) -> list[str] | None:
    """
    Return ``gpu_ids`` checked (type, emptiness, duplicates, agreement with ``resources.gpus``, no clash).

    :param resources: The request the ids must agree with.
    :param ids: The ``gpu_ids`` argument (None: not given).
    :param native: DockerOperator's ``device_requests`` as given.
    """
    if ids is None:
        return None
    ids = list(ids) if isinstance(ids, tuple) else ids
    build_docker_host_config(resources, ids)
    reject_clash("gpu_ids", ids, "device_requests", native.get("device_requests"))
    return [str(i).strip() for i in ids]


def check_static_gpus(
    resources: Any, gpu_ids: Any, inventory: HostGpus | None, native: Mapping[str, Any]
) -> None:
    """
    Check at parse time what is known then: static ``resources``, ``gpu_ids`` and ``host_gpus``.

    Templated values are left for ``execute``.
    """
    static = resources if isinstance(resources, Resources) else None
    if static is not None:
        docker_resources(static, native)
    ids = None
    if gpu_ids is not None and not contains_template(gpu_ids):
        ids = docker_gpu_ids(static or Resources(), gpu_ids, native)
    if inventory is not None:
        check_static_request(inventory, static, ids)


def environment_at_init(env: Any, environment: Any) -> tuple[Any, frozenset[str] | None]:
    """
    Return DockerOperator's ``environment`` with ``env`` over it (when both are dicts), and its own names.

    The merge is repeated on the rendered values in ``execute`` (:func:`container_environment`);
    the names are None when ``environment`` is a template, known only after rendering.
    """
    names = frozenset(environment or ()) if isinstance(environment, (Mapping, type(None))) else None
    if isinstance(env, (Mapping, type(None))) and isinstance(environment, (Mapping, type(None))):
        environment = {**dict(environment or {}), **dict(env or {})}
    return environment, names


def container_environment(
    env: Any,
    environment: Any,
    names: frozenset[str] | None,
    *,
    result_file: bool,
    log: logging.Logger,
) -> dict[str, str]:
    """
    Return the container's environment after rendering: ``env`` over ``environment``, and ``MLOPS_RESULT_FILE``.

    :param env: The rendered ``env``.
    :param environment: The rendered ``environment``.
    :param names: The names the user's ``environment`` sets (None: those of ``environment``).
    :param result_file: Whether the container writes the result file.
    :param log: Where the names ``env`` overrides are logged (INFO).
    :raises ContainerConfigError: when ``env`` rendered to something else than a dict.
    """
    ours = rendered_env(env)
    native = env_as_strings(environment)
    log_env_overrides(log, set(ours) & (names if names is not None else frozenset(native)), "environment")
    merged = merge_env(ours, native)
    if result_file:
        merged[RESULT_FILE_ENV] = RESULT_FILE
    return merged
