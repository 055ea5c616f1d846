"""Per-host GPU device leases, so parallel tasks on one Docker host get distinct devices.

A lease is an exclusive ``flock`` on one file per device,
``<gpu_lease_dir>/<host key>/gpu-<device id>.lock``, taken with the package's one lock helper
(:mod:`airflow_mlops_provider.file_locks`). The kernel drops the lock when the holder's file is
closed or its process dies (even by ``SIGKILL``), so a dead holder's lease is reclaimed without
any bookkeeping. A task takes all the devices it needs at once or none (no partial holds, so two
tasks can never deadlock each other) and polls until enough devices are free: extra tasks wait
instead of failing or oversubscribing.

Leases keep tasks on *one* machine apart. Every worker that sends GPU containers to a Docker
host must see the same lease directory (the default ``/tmp/airflow-mlops-gpu-leases`` is fine
when the workers run on the Docker host itself). For queueing across machines, size an Airflow
pool to the host's GPU count and give each task ``pool_slots=gpus``; the pool decides *when* a
task runs, the lease decides *which* device it gets.

``busy`` lets the caller add devices that are in use without a lease, such as a container a
killed worker left running (a retry reattaches to it); those devices are skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_mlops_provider.file_locks import release_fd, try_lock_fd

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = ["DEFAULT_LEASE_DIR", "GpuLease", "acquire_gpu_lease", "lease_dir_for_host", "try_lease_ids"]

DEFAULT_LEASE_DIR = "/tmp/airflow-mlops-gpu-leases"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
log = logging.getLogger(__name__)


def configured_lease_dir() -> str:
    """Return ``[mlops] gpu_lease_dir`` (default ``/tmp/airflow-mlops-gpu-leases``)."""
    try:
        from airflow.sdk import conf

        value = conf.get("mlops", "gpu_lease_dir", fallback=DEFAULT_LEASE_DIR)
    except Exception:  # pragma: no cover - config not readable outside Airflow
        value = DEFAULT_LEASE_DIR
    return value or DEFAULT_LEASE_DIR


def lease_dir_for_host(host: str, base_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return (and create) the lease directory of one Docker host, e.g. ``unix___var_run_docker.sock``."""
    key = _UNSAFE.sub("_", host).strip("_") or "default"
    path = Path(base_dir or configured_lease_dir()) / key
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class GpuLease:
    """
    Devices held by this process on one host; release them with :meth:`release` (idempotent).

    :param host: The Docker host the devices belong to.
    :param device_ids: The leased device ids, in inventory order.
    """

    host: str
    device_ids: list[str]
    _fds: list[int] = field(default_factory=list, repr=False)

    def take(self, candidates: Sequence[str], count: int, *, lease_dir: Path, owner: str = "") -> bool:
        """
        Lock ``count`` of ``candidates`` (in order) now, all or none; return whether it did.

        :param candidates: Device ids to try, in preference order.
        :param count: How many to take.
        :param lease_dir: The host's lease directory (see :func:`lease_dir_for_host`).
        :param owner: Text recorded in the lock files for people debugging a wait.
        """
        for device_id in candidates:
            if len(self.device_ids) == count:
                break
            fd = try_lock_fd(lease_dir / f"gpu-{_UNSAFE.sub('_', device_id)}.lock")
            if fd is None:
                continue
            self._fds.append(fd)
            self.device_ids.append(device_id)
        if len(self.device_ids) < count:
            self.release()
            self.device_ids = []
            return False
        record = json.dumps({"owner": owner, "pid": os.getpid(), "since": time.time()}).encode()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, record, 0)
        return True

    def release(self) -> None:
        """Drop every lock held by this lease; safe to call more than once and from a signal handler."""
        fds, self._fds = self._fds, []
        for fd in fds:
            release_fd(fd)

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def __enter__(self) -> GpuLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_lease_ids(
    host: str,
    candidates: Sequence[str],
    count: int,
    *,
    lease_dir: Path,
    owner: str = "",
) -> GpuLease | None:
    """
    Lock ``count`` of ``candidates`` (in order) now, all or none; return None when too few are free.

    :param host: The Docker host (for the returned lease).
    :param candidates: Device ids to try, in preference order.
    :param count: How many to take.
    :param lease_dir: The host's lease directory (see :func:`lease_dir_for_host`).
    :param owner: Text recorded in the lock file for people debugging a wait.
    """
    lease = GpuLease(host=host, device_ids=[])
    return lease if lease.take(candidates, count, lease_dir=lease_dir, owner=owner) else None


def acquire_gpu_lease(
    host: str,
    inventory: Sequence[str],
    *,
    count: int | None = None,
    device_ids: Sequence[str] | None = None,
    lease_dir: str | os.PathLike[str] | None = None,
    busy: Callable[[], Iterable[str]] | None = None,
    owner: str = "",
    poll_interval: float = 0.5,
    timeout: float | None = None,
    logger: logging.Logger | None = None,
) -> GpuLease:
    """
    Wait until the devices are free on ``host`` and lease them.

    Either ``count`` devices, any of ``inventory``, or exactly ``device_ids``.

    :param host: The Docker host; leases are kept per host.
    :param inventory: The device ids the task may use, e.g. ``["0", "1", "2", "3"]`` (all the
        host's GPUs, or those of the requested ``gpu_type``).
    :param count: How many devices to lease (any free ones).
    :param device_ids: Exactly these devices (each must be in ``inventory``).
    :param lease_dir: Base lease directory; default ``[mlops] gpu_lease_dir``.
    :param busy: Returns device ids in use without a lease (skipped), checked on every attempt.
    :param owner: Recorded in the lock files (task identity), shown while others wait.
    :param poll_interval: Seconds between attempts while waiting.
    :param timeout: Give up after this many seconds (``TimeoutError``); None waits forever
        (the task's ``execution_timeout`` still applies).
    :param logger: Where to report waiting.
    :raises ValueError: when the request cannot ever be served by ``inventory``.
    """
    logger = logger or log
    inventory = [str(i) for i in inventory]
    if device_ids is not None:
        wanted = [str(i) for i in device_ids]
        unknown = [i for i in wanted if i not in inventory]
        if unknown:
            raise ValueError(
                f"gpu_ids {wanted!r} name device(s) {unknown!r} that host {host!r} does not have "
                f"(its GPUs: {inventory!r})"
            )
        need = len(wanted)
    else:
        if count is None or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        if count > len(inventory):
            raise ValueError(
                f"gpus={count!r} but host {host!r} has only {len(inventory)} GPU(s) {inventory!r}"
            )
        wanted = inventory
        need = count
    directory = lease_dir_for_host(host, lease_dir)
    started = time.monotonic()
    last_report = 0.0
    while True:
        in_use = {str(i) for i in busy()} if busy else set()
        candidates = [i for i in wanted if i not in in_use]
        if len(candidates) >= need:
            lease = try_lease_ids(host, candidates, need, lease_dir=directory, owner=owner)
            if lease is not None and (device_ids is None or lease.device_ids == wanted):
                waited = time.monotonic() - started
                logger.info(
                    "Leased GPU device(s) %s on %s after %.1fs", ",".join(lease.device_ids), host, waited
                )
                return lease
            if lease is not None:
                lease.release()
        now = time.monotonic()
        if timeout is not None and now - started >= timeout:
            raise TimeoutError(
                f"no {need} free GPU device(s) of {wanted!r} on {host!r} after {timeout:g}s "
                f"(leases in {directory})"
            )
        if now - last_report >= 30 or last_report == 0.0:
            logger.info(
                "Waiting for %d free GPU device(s) of %s on %s (busy without lease: %s; leases in %s)",
                need,
                ",".join(wanted),
                host,
                ",".join(sorted(in_use)) or "none",
                directory,
            )
            last_report = now
        time.sleep(poll_interval)
