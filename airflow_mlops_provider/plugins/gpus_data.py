"""What the GPUs page shows: Docker hosts' devices, leases, waiting tasks, and Kubernetes inventory.

Docker hosts come from ``[mlops] docker_host_gpus`` (its docker_url keys), from the lease
directory (``[mlops] gpu_lease_dir``: one folder per host) and the default local engine. For
each host:

- its devices: the configured inventory, else the ``nvidia-smi`` discovery cache, else the
  devices that have a lease file;
- who leases each device now: the lease file's record, true only while its ``flock`` is held
  (:func:`~airflow_mlops_provider.docker_gpu.leases.read_host_leases` probes without keeping it);
- the engine's containers labelled ``airflow-mlops.gpu-ids`` and their task identity labels;
- the tasks waiting for devices (the live ``waiting-*.json`` markers).

Kubernetes, when configured (a ``kubernetes`` connection, ``KUBECONFIG``, ``~/.kube/config`` or
in-cluster), adds ``GpuKubernetesHook.gpu_inventory()`` per connection. Every backend call is
bounded (:data:`BACKEND_TIMEOUT`); a failure becomes that backend's ``error``, never an exception.
Task identities of DAGs the user may not read are hidden.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from airflow_mlops_provider.docker_gpu.leases import configured_lease_dir, host_key, read_host_leases

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "BACKEND_TIMEOUT",
    "backend_timeout",
    "DEFAULT_DOCKER_HOST",
    "call_with_timeout",
    "docker_host_report",
    "error_text",
    "gpus_report",
    "kubernetes_report",
    "task_href",
]

log = logging.getLogger(__name__)

#: The local engine, GpuDockerOperator's default ``docker_url``.
DEFAULT_DOCKER_HOST = "unix://var/run/docker.sock"
#: Seconds any one backend call (Docker engine, Kubernetes API, Feast registry) may take.
BACKEND_TIMEOUT = 5.0
GPU_IDS_LABEL = "airflow-mlops.gpu-ids"
_IDENTITY_KEYS = ("dag_id", "task_id", "run_id", "map_index")
_T = TypeVar("_T")


def backend_timeout() -> float:
    """Seconds a backend call may take: ``[mlops] plugin_backend_timeout``, default :data:`BACKEND_TIMEOUT`."""
    from airflow.configuration import conf

    try:
        value = float(conf.get("mlops", "plugin_backend_timeout", fallback="") or BACKEND_TIMEOUT)
    except ValueError:
        return BACKEND_TIMEOUT
    return value if value > 0 else BACKEND_TIMEOUT


def call_with_timeout(fn: Callable[[], _T], what: str, timeout: float | None = None) -> _T:
    """
    Return ``fn()``, run in a daemon thread; raise ``TimeoutError`` naming ``what`` after ``timeout``.

    :param timeout: Seconds; default :func:`backend_timeout`.

    A call that hangs (an unreachable API server) is abandoned, not killed: its thread ends
    when the call does, and never keeps the api-server from exiting.
    """
    answers: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            answers.put((True, fn()))
        except BaseException as err:  # handed to the caller
            answers.put((False, err))

    timeout = backend_timeout() if timeout is None else timeout
    threading.Thread(target=run, name=f"mlops-view {what}", daemon=True).start()
    try:
        ok, value = answers.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"{what} did not answer within {timeout:g} s") from None
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def error_text(err: BaseException) -> str:
    """An error as a page shows it: its type and message, with every secret Airflow knows masked."""
    from airflow_mlops_provider._compat.airflow_ui import redact

    return str(redact(f"{type(err).__name__}: {err}"))


def task_href(task: Mapping[str, Any]) -> str:
    """The Airflow UI path of a task instance (``.../mapped/<i>`` when mapped)."""
    parts = [quote(str(task[k]), safe="") for k in ("dag_id", "run_id", "task_id")]
    href = f"/dags/{parts[0]}/runs/{parts[1]}/tasks/{parts[2]}"
    map_index = str(task.get("map_index", "-1"))
    return href if map_index in ("-1", "", "None") else f"{href}/mapped/{quote(map_index, safe='')}"


def _task(
    identity: Mapping[str, Any] | None, may_read: Callable[[str], bool] | None
) -> dict[str, Any] | None:
    """The task identity as the page shows it; ``{"hidden": True}`` for a DAG the user may not read."""
    if not identity or not all(identity.get(k) not in (None, "") for k in ("dag_id", "task_id", "run_id")):
        return None
    if may_read is not None and not may_read(str(identity["dag_id"])):
        return {"hidden": True}
    task = {k: str(identity.get(k, "-1")) for k in _IDENTITY_KEYS}
    task["href"] = task_href(task)
    return task


def _safe_record(record: Mapping[str, Any], may_read: Callable[[str], bool] | None) -> dict[str, Any]:
    task = _task(record.get("task"), may_read)  # type: ignore[arg-type]
    hidden = bool(task and task.get("hidden"))
    return {
        "owner": "" if hidden else str(record.get("owner") or ""),
        "pid": record.get("pid"),
        "since": record.get("since"),
        "count": record.get("count"),
        "devices": [str(d) for d in record.get("devices") or []],
        "task": task,
    }


# --- Docker --------------------------------------------------------------------------------


def _configured_hosts() -> tuple[list[str], str | None]:
    """The docker_url keys of ``[mlops] docker_host_gpus`` (empty when it is not keyed by host)."""
    from airflow.configuration import conf

    raw = str(conf.get("mlops", "docker_host_gpus", fallback="") or "").strip()
    if not raw.startswith("{"):
        return [], None
    try:
        mapping = json.loads(raw)
    except ValueError as err:
        return [], f"[mlops] docker_host_gpus is not valid JSON ({err})"
    if not isinstance(mapping, dict):
        return [], None
    return [str(k) for k in mapping if ":" in str(k) or "/" in str(k)], None


def _inventory(host: str, directory: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The host's GPUs: configured, else the nvidia-smi discovery cache; and a config error."""
    from airflow_mlops_provider.docker_gpu.host import configured_host_inventory

    try:
        configured = configured_host_inventory(host)
    except ValueError as err:
        return None, str(error_text(err))
    if configured is not None:
        return {"ids": configured.ids, "names": configured.names, "source": configured.source}, None
    try:
        cached = json.loads((directory / "inventory.json").read_text())
    except (OSError, ValueError):
        return None, None
    if isinstance(cached, dict) and cached.get("ids"):
        return {
            "ids": list(cached["ids"]),
            "names": cached.get("names"),
            "source": "nvidia-smi (cached)",
        }, None
    return None, None


def labelled_containers(host: str, timeout: float = BACKEND_TIMEOUT) -> list[dict[str, Any]]:
    """The engine's running containers labelled ``airflow-mlops.gpu-ids``: name, id, status, devices, labels."""
    import docker

    client = docker.APIClient(base_url=host, timeout=timeout)
    try:
        items = client.containers(filters={"label": GPU_IDS_LABEL})
    finally:
        client.close()
    found = []
    for item in items:
        labels = item.get("Labels") or {}
        found.append(
            {
                "name": ",".join(n.lstrip("/") for n in item.get("Names") or []),
                "id": str(item.get("Id", ""))[:12],
                "status": str(item.get("Status", "")),
                "image": str(item.get("Image", "")),
                "gpu_ids": [p for p in labels.get(GPU_IDS_LABEL, "").split(",") if p],
                "identity": {k: labels.get(f"airflow-mlops.{k}") for k in _IDENTITY_KEYS},
            }
        )
    return sorted(found, key=lambda c: c["name"])


def docker_host_report(
    host: str,
    directory: Path,
    *,
    may_read: Callable[[str], bool] | None = None,
    query_engine: bool = True,
) -> dict[str, Any]:
    """
    Return one Docker host's devices, holders, waiting tasks and labelled containers.

    :param host: The docker_url (or, when only its lease folder is known, the folder's name).
    :param directory: The host's lease directory (read only; it need not exist).
    :param may_read: Says whether the user may see a DAG's task instances (None: all).
    :param query_engine: Ask the engine for its labelled containers.
    """
    inventory, config_error = _inventory(host, directory) if query_engine else (None, None)
    leases = read_host_leases(directory)
    held: dict[str, Any] = leases["devices"]  # type: ignore[assignment]
    containers: list[dict[str, Any]] = []
    engine_error = None
    if query_engine:
        try:
            timeout = backend_timeout()
            containers = call_with_timeout(
                lambda: labelled_containers(host, timeout), f"Docker engine {host}", timeout
            )
        except Exception as err:
            engine_error = error_text(err)
    for container in containers:
        container["task"] = _task(container.pop("identity"), may_read)
        if container["task"] and container["task"].get("hidden"):
            container["name"] = container["image"] = ""
    ids = list(inventory["ids"]) if inventory else []
    extra = {*held, *(d for c in containers for d in c["gpu_ids"])} - set(ids)
    ids += sorted(extra, key=lambda d: (len(d), d))
    names = (inventory or {}).get("names") or {}
    devices = []
    for device in ids:
        record = held.get(device)
        users = [c for c in containers if device in c["gpu_ids"]]
        lease = _safe_record(record, may_read) if record else None
        if lease and lease["task"] is None:
            # The operator records ``<dag>.<task>/<container>``: the container's labels say which task.
            owner_container = lease["owner"].rpartition("/")[2]
            lease["task"] = next((c["task"] for c in users if c["name"] == owner_container), None)
        state = "leased" if lease else ("in use" if users else "free")
        devices.append(
            {"id": device, "name": names.get(device), "state": state, "lease": lease, "containers": users}
        )
    return {
        "host": host,
        "lease_dir": str(directory),
        "inventory_source": (inventory or {}).get("source"),
        "devices": devices,
        "waiting": [_safe_record(r, may_read) for r in leases["waiting"]],  # type: ignore[attr-defined]
        "containers": containers,
        "error": engine_error,
        "config_error": config_error,
    }


def docker_hosts(base: Path) -> tuple[list[tuple[str, Path, bool]], str | None]:
    """``(host, lease folder, is a docker_url)`` for every host to show; and a config error."""
    configured, error = _configured_hosts()
    hosts: dict[str, tuple[str, bool]] = {}
    for host in [*configured, DEFAULT_DOCKER_HOST]:
        hosts.setdefault(host_key(host), (host, True))
    try:
        folders = sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        folders = []
    for folder in folders:
        if folder.name in hosts:
            continue
        recorded = _recorded_host(folder)
        hosts[folder.name] = (recorded, True) if recorded else (folder.name, False)
    return [(host, base / key, url) for key, (host, url) in hosts.items()], error


def _recorded_host(folder: Path) -> str | None:
    """The docker_url a lease folder's records name (records carry ``host``), if any."""
    for path in sorted(folder.glob("*"))[:50]:
        if path.suffix not in (".lock", ".json") or path.name == "inventory.json":
            continue
        try:
            record = json.loads(path.read_bytes() or b"null")
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("host") and host_key(str(record["host"])) == folder.name:
            return str(record["host"])
    return None


# --- Kubernetes ----------------------------------------------------------------------------


def _kubernetes_targets() -> list[str | None]:
    """The ``kubernetes`` connections, else None (the default config) when one is found locally."""
    from airflow_mlops_provider._compat.airflow_ui import connection_ids_of_type

    conns: list[str | None] = list(connection_ids_of_type("kubernetes"))
    if conns:
        return conns
    local = (
        os.environ.get("KUBERNETES_SERVICE_HOST")
        or os.environ.get("KUBECONFIG")
        or Path("~/.kube/config").expanduser().is_file()
    )
    return [None] if local else []


def kubernetes_report(
    targets: Iterable[str | None] | None = None,
    hook_factory: Callable[[str | None], Any] | None = None,
) -> dict[str, Any]:
    """
    Return ``{"configured", "clusters": [{"conn_id", "inventory", "error"}]}``.

    :param targets: Connection ids (None: the default kube config); default: found.
    :param hook_factory: Builds the hook of a target; default ``GpuKubernetesHook``.
    """
    targets = _kubernetes_targets() if targets is None else list(targets)
    if hook_factory is None:
        from airflow_mlops_provider.hooks.kubernetes import GpuKubernetesHook

        def hook_factory(conn_id: str | None) -> Any:
            return GpuKubernetesHook(conn_id=conn_id)

    clusters = []
    for conn_id in targets:
        entry: dict[str, Any] = {"conn_id": conn_id, "inventory": None, "error": None}
        try:
            hook = hook_factory(conn_id)
            what = f"Kubernetes API ({conn_id or 'default kube config'})"
            entry["inventory"] = call_with_timeout(hook.gpu_inventory, what)
        except Exception as err:
            entry["error"] = error_text(err)
        clusters.append(entry)
    return {"configured": bool(clusters), "clusters": clusters}


def gpus_report(may_read: Callable[[str], bool] | None = None, *, kubernetes: bool = True) -> dict[str, Any]:
    """
    Return everything the GPUs page shows: ``{"lease_dir", "docker": [...], "kubernetes": {...}}``.

    :param may_read: Says whether the user may see a DAG's task instances (None: all).
    :param kubernetes: Also ask the Kubernetes clusters.
    """
    base = Path(configured_lease_dir())
    hosts, config_error = docker_hosts(base)
    docker = [docker_host_report(h, d, may_read=may_read, query_engine=url) for h, d, url in hosts]
    report: dict[str, Any] = {
        "lease_dir": str(base),
        "config_error": config_error,
        "docker": docker,
        "kubernetes": kubernetes_report() if kubernetes else {"configured": False, "clusters": []},
    }
    return report
