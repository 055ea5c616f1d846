"""``container_operator()``: one DAG, two runtimes (a local Docker engine or a Kubernetes cluster).

A DAG written against ``container_operator()`` runs unchanged on Docker (development, CI) and on
Kubernetes (production): the runtime is picked when the DAG file is parsed, from the argument or
the ``[mlops] runtime`` option (``AIRFLOW__MLOPS__RUNTIME``, default ``docker``)::

    ContainerOperator = container_operator()
    ContainerOperator(task_id="train", image="...", command=[...], env={...},
                      resources={"gpus": 1, "memory": "8Gi", "shm_size": "2Gi"},
                      docker_kwargs={"gpu_fallback": "cpu"},
                      kubernetes_kwargs={"namespace": "ml"})

**Shared vocabulary.** ``image``, ``command``, ``env``, ``resources`` and ``return_result_file``
(plus every BaseOperator argument: ``task_id``, ``retries``, ...) mean the same thing on every
runtime, with the same precedence, errors and result file: the contract written once in
:mod:`airflow_mlops_provider.operators._common` and checked by ``tests/integration/parity``.

**Runtime-specific arguments** pass through in ``docker_kwargs={...}`` (GpuDockerOperator and
DockerOperator arguments: ``gpu_ids``, ``gpu_fallback``, ``docker_url``, ``mounts``, ...) and
``kubernetes_kwargs={...}`` (GpuKubernetesPodOperator and KubernetesPodOperator arguments:
``namespace``, ``gpu_type_label``, ``gpu_tolerations``, ``node_selector``, ...). The dict for
the active runtime is merged into the operator's arguments; the other one is ignored (with a
debug log). A runtime-specific argument given at top level is an error on the runtime that does
not know it, so a DAG cannot silently depend on one runtime. Both dicts work in ``.partial()``
and in ``.expand_kwargs()``.

A third runtime, ``local``, returns :class:`~airflow_mlops_provider.operators.local.LocalProcessOperator`:
the same vocabulary run as a plain process on the worker, for machines without Docker (the
demo falls back to it). It isolates nothing and enforces no resources; it accepts and ignores
``docker_kwargs`` and ``kubernetes_kwargs`` (logged), so the same DAG still parses.

Importing this module imports neither runtime: ``docker`` is imported only when the runtime is
``docker`` and ``kubernetes`` only when it is ``kubernetes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

__all__ = ["RUNTIMES", "container_operator", "resolve_runtime"]

#: The runtimes ``container_operator`` knows, in the order they are documented.
RUNTIMES = ("docker", "kubernetes", "local")
_RUNTIME_KWARGS = {"docker": "docker_kwargs", "kubernetes": "kubernetes_kwargs"}
_CLASS_NAMES = {"docker": "DockerContainerOperator", "kubernetes": "KubernetesContainerOperator"}
_classes: dict[str, type[BaseOperator]] = {}


def resolve_runtime(runtime: str | None = None) -> str:
    """
    Return the runtime to use: ``runtime`` if given, else ``[mlops] runtime``, else ``docker``.

    :raises ValueError: naming the value, where it came from and the valid choices.
    """
    source = "runtime"
    if runtime is None:
        from airflow.sdk import conf

        runtime = conf.get("mlops", "runtime", fallback="docker")
        source = "[mlops] runtime (AIRFLOW__MLOPS__RUNTIME)"
    value = runtime.strip().lower() if isinstance(runtime, str) else runtime
    if value not in RUNTIMES:
        raise ValueError(f"{source} must be one of {list(RUNTIMES)}, got {runtime!r}")
    return value


def container_operator(runtime: str | None = None) -> type[BaseOperator]:
    """
    Return the container operator class for ``runtime`` (``"docker"``, ``"kubernetes"`` or ``"local"``).

    The class is a thin subclass of ``GpuDockerOperator`` or ``GpuKubernetesPodOperator`` that
    also accepts ``docker_kwargs`` and ``kubernetes_kwargs`` (see the module docstring).

    :param runtime: ``"docker"``, ``"kubernetes"`` or ``"local"``; default ``[mlops] runtime``
        (``AIRFLOW__MLOPS__RUNTIME``), else ``"docker"``.
    """
    name = resolve_runtime(runtime)
    if name == "local":
        from airflow_mlops_provider.operators.local import LocalProcessOperator

        return LocalProcessOperator
    if name not in _classes:
        _classes[name] = _build_class(name)
    return _classes[name]


def __getattr__(attr: str) -> type[BaseOperator]:
    """Make ``DockerContainerOperator``/``KubernetesContainerOperator`` importable by name (lazily)."""
    for runtime, class_name in _CLASS_NAMES.items():
        if attr == class_name:
            return container_operator(runtime)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def split_runtime_kwargs(
    runtime: str, kwargs: dict[str, Any], docker_kwargs: Any, kubernetes_kwargs: Any
) -> tuple[dict[str, Any], list[str]]:
    """
    Return ``kwargs`` with the active runtime's dict merged in, and the names that were ignored.

    :raises ValueError: when a dict is not a mapping, or repeats an argument given at top level.
    """
    given = {"docker": docker_kwargs, "kubernetes": kubernetes_kwargs}
    for rt, value in given.items():
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(
                f"{_RUNTIME_KWARGS[rt]} must be a dict of {rt} operator arguments, got {value!r}"
            )
    mine = dict(given[runtime] or {})
    clash = sorted(set(mine) & set(kwargs))
    if clash:
        raise ValueError(
            f"{_RUNTIME_KWARGS[runtime]} repeats argument(s) {clash} that are also given directly; "
            f"pass each once, got {_RUNTIME_KWARGS[runtime]}={given[runtime]!r}"
        )
    ignored = [
        f"{_RUNTIME_KWARGS[rt]}.{k}" for rt, value in given.items() if rt != runtime for k in value or {}
    ]
    return {**kwargs, **mine}, ignored


def _build_class(runtime: str) -> type[BaseOperator]:
    base: type[BaseOperator]
    if runtime == "docker":
        from airflow_mlops_provider.operators.docker import GpuDockerOperator

        base = GpuDockerOperator
    else:
        from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator

        base = GpuKubernetesPodOperator

    def __init__(
        self: Any,
        *,
        docker_kwargs: Mapping[str, Any] | None = None,
        kubernetes_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        merged, ignored = split_runtime_kwargs(runtime, kwargs, docker_kwargs, kubernetes_kwargs)
        base.__init__(self, **merged)
        self.docker_kwargs = docker_kwargs
        self.kubernetes_kwargs = kubernetes_kwargs
        if ignored:
            self.log.debug("Runtime is %s; ignoring %s", runtime, ", ".join(ignored))

    class_name = _CLASS_NAMES[runtime]
    doc = (
        f"``{base.__name__}`` as returned by ``container_operator({runtime!r})``.\n\n"
        f"Also accepts ``docker_kwargs`` and ``kubernetes_kwargs``: the ``{_RUNTIME_KWARGS[runtime]}`` "
        "dict is merged into the arguments, the other is ignored.\n\n"
        f"{base.__doc__ or ''}"
    )
    namespace = {
        "__init__": __init__,
        "__module__": __name__,
        "__qualname__": class_name,
        "__doc__": doc,
        "runtime": runtime,
    }
    return type(class_name, (base,), namespace)
