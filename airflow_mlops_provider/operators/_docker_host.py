"""What a Docker host can serve: its GPU runtime and its GPU inventory.

``GpuDockerOperator`` asks these questions before it starts a GPU container:

- Is there an NVIDIA runtime? ``docker info`` lists runtimes; an engine set up with
  ``nvidia-ctk runtime configure`` lists ``nvidia``. An engine with only NVIDIA's prestart hook
  on its PATH lists nothing, yet serves device requests; in ``"auto"`` mode that case is left to
  the engine, whose refusal at container start (``could not select device driver``) is turned
  into the same clear error.
- How many GPUs, with which ids? Declared by the task (``host_gpus``), by ``[mlops]
  docker_host_gpus`` (a count, a list ``0,1,3``, or JSON ``{"<docker_url>": 4}``), or discovered
  by running ``nvidia-smi`` in a helper container (cached for ten minutes in the lease
  directory).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docker import APIClient

GPU_RUNTIME_CHECKS = ("auto", "runtime", "off")
#: Label carrying the device ids a container was given; other tasks skip those devices.
GPU_IDS_LABEL = "airflow-mlops.gpu-ids"
#: The engine's answer when no NVIDIA driver/hook can serve a device request.
NO_DEVICE_DRIVER = "could not select device driver"
_DISCOVERY_TTL = 600.0

log = logging.getLogger(__name__)


def parse_host_gpus(value: Any, *, field: str = "host_gpus") -> list[str]:
    """
    Return a GPU inventory (device ids) from a count, a comma-separated string or a list.

    ``4`` and ``"4"`` mean ``["0", "1", "2", "3"]``; ``"0,1,3"`` and ``["0", "1", "3"]`` are
    taken as ids.

    :raises ValueError: naming ``field`` and repeating the value.
    """
    expected = f"{field} must be a GPU count >= 0 or a list of device ids such as ['0', '1']"
    if isinstance(value, bool):
        raise ValueError(f"{expected}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{expected}, got {value!r}")
        return [str(i) for i in range(value)]
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return [str(i) for i in range(int(text))]
        value = [part for part in text.split(",")] if text else []
        if not value:
            raise ValueError(f"{expected}, got {text!r}")
    if isinstance(value, Sequence) and not isinstance(value, str):
        ids = [str(v).strip() for v in value]
        if any(not i for i in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"{expected} (non-empty and distinct), got {value!r}")
        return ids
    raise ValueError(f"{expected}, got {value!r}")


def configured_host_gpus(host: str) -> list[str] | None:
    """Return ``[mlops] docker_host_gpus`` for ``host`` (a count, ids, or JSON by docker_url)."""
    from airflow.sdk import conf

    raw = conf.get("mlops", "docker_host_gpus", fallback=None)
    if raw is None or not str(raw).strip():
        return None
    text = str(raw).strip()
    if text.startswith("{"):
        mapping = json.loads(text)
        if not isinstance(mapping, Mapping) or host not in mapping:
            return None
        return parse_host_gpus(mapping[host], field="[mlops] docker_host_gpus")
    return parse_host_gpus(text, field="[mlops] docker_host_gpus")


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


def discover_host_gpus(cli: APIClient, host: str, image: str, *, timeout: float = 60) -> list[str] | None:
    """
    Return the host's GPU ids by running ``nvidia-smi`` in a helper container, or None.

    The answer (also a failure) is cached for ten minutes in the host's lease directory, so a
    sweep of many tasks runs the helper once.
    """
    from airflow_mlops_provider.gpu_leases import lease_dir_for_host

    cache = lease_dir_for_host(host) / "inventory.json"
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(cache.read_text())
        if time.time() - float(cached["at"]) < _DISCOVERY_TTL:
            return cached["ids"]
    ids: list[str] | None = None
    container_id = None
    try:
        from docker.types import DeviceRequest

        container = cli.create_container(
            image=image,
            command=["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            host_config=cli.create_host_config(
                device_requests=[DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu", "utility"]])]
            ),
            labels={"airflow-mlops.role": "gpu-discovery"},
        )
        container_id = container["Id"]
        cli.start(container_id)
        status = cli.wait(container_id, timeout=timeout)
        if status.get("StatusCode") == 0:
            out = cli.logs(container_id, stdout=True, stderr=False).decode(errors="replace")
            found = [line.strip() for line in out.splitlines() if line.strip().isdigit()]
            ids = found or None
    except Exception as err:  # no driver, no nvidia-smi in the image, engine refusal ...
        log.info("GPU discovery with nvidia-smi on %s did not work: %s", host, err)
    finally:
        if container_id is not None:
            with contextlib.suppress(Exception):
                cli.remove_container(container_id, force=True)
    with contextlib.suppress(OSError):
        cache.write_text(json.dumps({"at": time.time(), "ids": ids}))
    return ids


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
