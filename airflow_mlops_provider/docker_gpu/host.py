"""What a Docker host can serve: its GPU runtime and its GPU inventory (ids and product names).

``GpuDockerOperator`` asks these questions before it starts a GPU container:

- Is there an NVIDIA runtime? ``docker info`` lists runtimes; an engine set up with
  ``nvidia-ctk runtime configure`` lists ``nvidia``. An engine with only NVIDIA's prestart hook
  on its PATH lists nothing, yet serves device requests; in ``"auto"`` mode that case is left to
  the engine, whose refusal at container start (``could not select device driver``) is turned
  into the same clear error.
- Which GPUs, with which ids and names? Declared by the task (``host_gpus``), by ``[mlops]
  docker_host_gpus``, or discovered by running ``nvidia-smi --query-gpu=index,name`` in a helper
  container (cached for ten minutes in the lease directory). A declaration is a count (``4``),
  device ids (``0,1,3``) or a mapping of device ids to product names
  (``{"0": "NVIDIA A100-SXM4-80GB"}``); only names let ``resources.gpu_type`` be checked.
- Is the GPU the right product? :func:`gpu_type_key` compares names tolerantly, so the
  Kubernetes label form ``NVIDIA-A100-SXM4-80GB`` matches nvidia-smi's ``NVIDIA A100-SXM4-80GB``.

Imported when a DAG file is parsed (the operator checks a static ``host_gpus`` there): no docker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docker import APIClient

    from airflow_mlops_provider.compute import Resources

GPU_RUNTIME_CHECKS = ("auto", "runtime", "off")
#: Label carrying the device ids a container was given; other tasks skip those devices.
GPU_IDS_LABEL = "airflow-mlops.gpu-ids"
#: The engine's answer when no NVIDIA driver/hook can serve a device request.
NO_DEVICE_DRIVER = "could not select device driver"
#: What nvidia-smi is asked in the discovery container: one ``<index>, <name>`` line per GPU.
NVIDIA_SMI_QUERY = ("nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader")
CONFIG_FIELD = "[mlops] docker_host_gpus"
_DISCOVERY_TTL = 600.0
_SEPARATORS = re.compile(r"[\s_-]+")
_NAMES_EXAMPLE = "{'0': 'NVIDIA A100-SXM4-80GB', '1': 'NVIDIA A100-SXM4-80GB'}"

log = logging.getLogger(__name__)


def gpu_type_key(name: str) -> str:
    """Return ``name`` in the form GPU types are compared in: case-folded, spaces/dashes/underscores as one dash."""
    return _SEPARATORS.sub("-", name.strip()).casefold()


@dataclass
class HostGpus:
    """
    The GPUs of one Docker host.

    :param ids: Device ids, in the host's order.
    :param names: Product name of each device id (``nvidia-smi``'s ``name``), when known.
    :param source: Where the inventory came from (``host_gpus``, ``[mlops] docker_host_gpus``,
        ``nvidia-smi``), for messages.
    """

    ids: list[str]
    names: dict[str, str] | None = None
    source: str = "host_gpus"

    def describe(self) -> str:
        """The inventory as a message shows it: the id-to-name mapping, else the ids."""
        return repr(self.names) if self.names is not None else repr(self.ids)

    def of_type(self, gpu_type: str) -> list[str]:
        """Device ids whose name matches ``gpu_type`` (see :func:`gpu_type_key`); none without names."""
        key = gpu_type_key(gpu_type)
        names = self.names or {}
        return [i for i in self.ids if i in names and gpu_type_key(names[i]) == key]


def parse_host_inventory(value: Any, *, field: str = "host_gpus") -> HostGpus:
    """
    Return a GPU inventory from a count, a comma-separated string, a list of ids or an id-to-name mapping.

    ``4`` and ``"4"`` mean ids ``["0", "1", "2", "3"]``; ``"0,1,3"`` and ``["0", "1", "3"]`` are
    taken as ids; ``{"0": "NVIDIA A100-SXM4-80GB"}`` also names each device.

    :raises ValueError: naming ``field`` and repeating the value.
    """
    if isinstance(value, Mapping):
        ids = [str(k).strip() for k in value]
        names = [v.strip() if isinstance(v, str) else "" for v in value.values()]
        if not ids or any(not i for i in ids) or len(set(ids)) != len(ids) or any(not n for n in names):
            raise ValueError(
                f"{field} as a mapping must map distinct device ids to GPU names such as "
                f"{_NAMES_EXAMPLE}, got {value!r}"
            )
        return HostGpus(ids=ids, names=dict(zip(ids, names, strict=True)), source=field)
    expected = f"{field} must be a GPU count >= 0 or a list of device ids such as ['0', '1']"
    if isinstance(value, bool):
        raise ValueError(f"{expected}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{expected}, got {value!r}")
        return HostGpus(ids=[str(i) for i in range(value)], source=field)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return HostGpus(ids=[str(i) for i in range(int(text))], source=field)
        value = text.split(",") if text else []
        if not value:
            raise ValueError(f"{expected}, got {text!r}")
    if isinstance(value, Sequence) and not isinstance(value, str):
        ids = [str(v).strip() for v in value]
        if any(not i for i in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"{expected} (non-empty and distinct), got {value!r}")
        return HostGpus(ids=ids, source=field)
    raise ValueError(f"{expected}, got {value!r}")


def parse_host_gpus(value: Any, *, field: str = "host_gpus") -> list[str]:
    """Return the device ids of :func:`parse_host_inventory` (``4`` -> ``["0", "1", "2", "3"]``)."""
    return parse_host_inventory(value, field=field).ids


def _is_device_id(key: str) -> bool:
    # Docker URLs always carry ':' or '/' (unix://..., tcp://host:2376, ssh://...); ids never do.
    return ":" not in key and "/" not in key


def configured_host_inventory(host: str) -> HostGpus | None:
    """
    Return ``[mlops] docker_host_gpus`` for ``host``, or None when it says nothing about it.

    The option is a count, ids (``0,1,3``), or JSON: an id-to-name mapping for every host
    (``{"0": "NVIDIA A100-SXM4-80GB"}``), or an object keyed by docker_url whose values are any
    of those (``{"unix://var/run/docker.sock": 4, "tcp://gpu-b:2376": {"0": "NVIDIA L4"}}``).

    :raises ValueError: when the option is malformed (naming it and repeating the value).
    """
    from airflow.sdk import conf

    raw = conf.get("mlops", "docker_host_gpus", fallback=None)
    if raw is None or not str(raw).strip():
        return None
    text = str(raw).strip()
    if not text.startswith("{"):
        return parse_host_inventory(text, field=CONFIG_FIELD)
    try:
        mapping = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{CONFIG_FIELD} is not valid JSON ({err}), got {text!r}") from err
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"{CONFIG_FIELD} must be a non-empty JSON object, got {text!r}")
    if all(_is_device_id(str(k)) for k in mapping):
        return parse_host_inventory(mapping, field=CONFIG_FIELD)
    if any(_is_device_id(str(k)) for k in mapping):
        raise ValueError(
            f"{CONFIG_FIELD} mixes docker_url keys and device ids; use one object keyed by "
            f"docker_url, or one id-to-name mapping for every host, got {text!r}"
        )
    if host not in mapping:
        return None
    return parse_host_inventory(mapping[host], field=f"{CONFIG_FIELD}[{host!r}]")


def configured_host_gpus(host: str) -> list[str] | None:
    """Return the device ids of :func:`configured_host_inventory`, or None."""
    inventory = configured_host_inventory(host)
    return None if inventory is None else inventory.ids


def check_static_request(inventory: HostGpus, resources: Resources | None, gpu_ids: list[str] | None) -> None:
    """
    Raise ``ValueError`` when a request known at parse time can never be served by ``host_gpus``.

    :param inventory: The task's ``host_gpus``.
    :param resources: The static ``resources`` (None when templated).
    :param gpu_ids: The static ``gpu_ids`` (None when templated or not given).
    """
    if gpu_ids is not None:
        unknown = [str(i) for i in gpu_ids if str(i) not in inventory.ids]
        if unknown:
            raise ValueError(
                f"gpu_ids {gpu_ids!r} name device(s) {unknown!r} not in host_gpus {inventory.ids!r}"
            )
    if resources is None:
        return
    if resources.gpus > len(inventory.ids):
        raise ValueError(
            f"resources.gpus={resources.gpus!r} is more than host_gpus declares ({len(inventory.ids)})"
        )
    if resources.gpu_type and resources.gpu_vendor == "nvidia":
        wanted = len(gpu_ids) if gpu_ids else resources.gpus
        require_gpu_names(inventory, resources.gpu_type, where="the Docker host")
        gpus_of_type(inventory, resources.gpu_type, wanted, gpu_ids, where="host_gpus")


def require_gpu_names(inventory: HostGpus | None, gpu_type: str, *, where: str) -> HostGpus:
    """
    Return ``inventory`` when it names its GPUs; raise ``ValueError`` saying how to declare names.

    :param where: Who is checked, e.g. ``"Docker host 'unix://var/run/docker.sock'"``.
    """
    how = (
        f"Declare the names as a mapping of device ids to nvidia-smi names, e.g. host_gpus="
        f"{_NAMES_EXAMPLE} or {CONFIG_FIELD} = {json.dumps({'0': 'NVIDIA A100-SXM4-80GB'})}, "
        "or leave both unset so that nvidia-smi discovers them"
    )
    if inventory is None:
        raise ValueError(
            f"Cannot check gpu_type={gpu_type!r} for {where}: its GPUs are unknown (no host_gpus, "
            f"no {CONFIG_FIELD}, and nvidia-smi discovery found none). {how}."
        )
    if inventory.names is None:
        raise ValueError(
            f"Cannot check gpu_type={gpu_type!r} for {where}: its GPU inventory from {inventory.source} "
            f"({inventory.ids!r}) has no GPU names. {how}."
        )
    return inventory


def gpus_of_type(
    inventory: HostGpus, gpu_type: str, wanted: int, gpu_ids: Sequence[str] | None, *, where: str
) -> list[str]:
    """
    Return the device ids of ``gpu_type`` the task may lease; raise ``ValueError`` when too few match.

    :param inventory: The host's GPUs, with names (see :func:`require_gpu_names`).
    :param gpu_type: The requested product, e.g. ``"NVIDIA-A100-SXM4-80GB"``.
    :param wanted: How many devices the task needs.
    :param gpu_ids: Explicit device ids the task asked for; each must be of ``gpu_type``.
    :param where: Who is checked, for the message.
    """
    matching = inventory.of_type(gpu_type)
    if gpu_ids:
        other = [str(i) for i in gpu_ids if str(i) not in matching]
        if other:
            raise ValueError(
                f"{where} cannot serve gpu_ids={list(gpu_ids)!r} of type {gpu_type!r}: device(s) "
                f"{other!r} are not of that type; its GPUs are {inventory.describe()}"
            )
        return [str(i) for i in gpu_ids]
    if len(matching) < wanted:
        raise ValueError(
            f"{where} has {len(matching)} GPU(s) of type {gpu_type!r}, fewer than gpus={wanted}; "
            f"its GPUs are {inventory.describe()}"
        )
    return matching


def engine_gpu_runtimes(info: Mapping[str, Any]) -> list[str]:
    """Return the runtimes ``docker info`` lists whose name mentions nvidia."""
    return sorted(name for name in (info.get("Runtimes") or {}) if "nvidia" in name.lower())


def missing_runtime_message(host: str, info: Mapping[str, Any], gpus: int) -> str:
    runtimes = sorted(info.get("Runtimes") or {})
    return (
        f"Docker host {host!r} cannot serve gpus={gpus}: no NVIDIA GPU runtime is registered "
        f"(docker info lists runtimes {runtimes!r}, none is 'nvidia'). Install the NVIDIA "
        "Container Toolkit and run `nvidia-ctk runtime configure --runtime=docker`, or set "
        "gpu_fallback='cpu' to run without GPUs."
    )


def no_driver_message(host: str, gpus: int, error: object) -> str:
    return (
        f"Docker host {host!r} cannot serve gpus={gpus}: the engine has no NVIDIA device driver "
        "(nvidia-container-runtime-hook / NVIDIA Container Toolkit is missing). "
        f"Engine said: {error}. Set gpu_fallback='cpu' to run without GPUs."
    )


def parse_nvidia_smi(out: str) -> HostGpus | None:
    """
    Return the inventory in ``nvidia-smi --query-gpu=index,name --format=csv,noheader`` output.

    Lines look like ``0, NVIDIA A100-SXM4-80GB``; an output of bare indexes gives ids without
    names. None when no line starts with an index.
    """
    ids: list[str] = []
    names: dict[str, str] = {}
    for line in out.splitlines():
        index, _, name = line.partition(",")
        if not index.strip().isdigit():
            continue
        ids.append(index.strip())
        if name.strip():
            names[index.strip()] = name.strip()
    if not ids:
        return None
    return HostGpus(ids=ids, names=names if len(names) == len(ids) else None, source="nvidia-smi")


def discover_host_inventory(cli: APIClient, host: str, image: str, *, timeout: float = 60) -> HostGpus | None:
    """
    Return the host's GPUs (ids and names) by running ``nvidia-smi`` in a helper container, or None.

    The answer (also a failure) is cached for ten minutes in the host's lease directory, so a
    sweep of many tasks runs the helper once.
    """
    from airflow_mlops_provider.docker_gpu.leases import lease_dir_for_host

    cache = lease_dir_for_host(host) / "inventory.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        cached = json.loads(cache.read_text())
        if time.time() - float(cached["at"]) < _DISCOVERY_TTL:
            ids = cached["ids"]
            return None if ids is None else HostGpus(ids=ids, names=cached.get("names"), source="nvidia-smi")
    inventory: HostGpus | None = None
    container_id = None
    try:
        from docker.types import DeviceRequest

        container = cli.create_container(
            image=image,
            command=list(NVIDIA_SMI_QUERY),
            host_config=cli.create_host_config(
                device_requests=[DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu", "utility"]])]
            ),
            labels={"airflow-mlops.role": "gpu-discovery"},
        )
        container_id = container["Id"]
        cli.start(container_id)
        status = cli.wait(container_id, timeout=timeout)
        if status.get("StatusCode") == 0:
            inventory = parse_nvidia_smi(
                cli.logs(container_id, stdout=True, stderr=False).decode(errors="replace")
            )
    except Exception as err:  # no driver, no nvidia-smi in the image, engine refusal ...
        log.info("GPU discovery with nvidia-smi on %s did not work: %s", host, err)
    finally:
        if container_id is not None:
            with contextlib.suppress(Exception):
                cli.remove_container(container_id, force=True)
    record: dict[str, Any] = {"at": time.time(), "ids": None, "names": None}
    if inventory is not None:
        record.update(ids=inventory.ids, names=inventory.names)
    with contextlib.suppress(OSError):
        cache.write_text(json.dumps(record))
    return inventory


def discover_host_gpus(cli: APIClient, host: str, image: str, *, timeout: float = 60) -> list[str] | None:
    """Return the device ids of :func:`discover_host_inventory`, or None."""
    inventory = discover_host_inventory(cli, host, image, timeout=timeout)
    return None if inventory is None else inventory.ids


def busy_gpu_ids(cli: APIClient, exclude_name: str | None = None) -> set[str]:
    """Device ids held by running containers this provider started (e.g. after a worker died)."""
    busy: set[str] = set()
    for item in cli.containers(filters={"label": GPU_IDS_LABEL}):
        names = [n.lstrip("/") for n in item.get("Names") or []]
        if exclude_name and exclude_name in names:
            continue
        value = (item.get("Labels") or {}).get(GPU_IDS_LABEL, "")
        busy.update(part for part in value.split(",") if part)
    return busy
