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

Who holds and who waits (what the plugin's GPUs page shows, :func:`read_host_leases`):

- a lease file holds the holder's JSON record (owner, pid, since, host, devices and, when the
  caller gives it, the task instance's identity); the record is only true while the file's lock
  is held, so a released lease's old record is ignored;
- while :func:`acquire_gpu_lease` polls, it holds an flock'd ``waiting-<hash>.json`` in the
  host's lease directory (owner, count wanted, candidates, since), removed when the lease is
  taken or the wait ends. A marker whose lock is not held (its process died) is ignored.

Readers probe a lock with a non-blocking *shared* lock that they drop at once: they never keep
it, never create a file, and two readers never block each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "DEFAULT_LEASE_DIR",
    "GpuLease",
    "acquire_gpu_lease",
    "host_key",
    "lease_dir_for_host",
    "lock_is_held",
    "read_host_leases",
    "try_lease_ids",
]

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


def host_key(host: str) -> str:
    """Return the name of ``host``'s lease directory, e.g. ``unix___var_run_docker.sock``."""
    return _UNSAFE.sub("_", host).strip("_") or "default"


def lease_dir_for_host(host: str, base_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return (and create) the lease directory of one Docker host, e.g. ``unix___var_run_docker.sock``."""
    path = Path(base_dir or configured_lease_dir()) / host_key(host)
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

    def take(
        self,
        candidates: Sequence[str],
        count: int,
        *,
        lease_dir: Path,
        owner: str = "",
        task: Mapping[str, str] | None = None,
    ) -> bool:
        """
        Lock ``count`` of ``candidates`` (in order) now, all or none; return whether it did.

        :param candidates: Device ids to try, in preference order.
        :param count: How many to take.
        :param lease_dir: The host's lease directory (see :func:`lease_dir_for_host`).
        :param owner: Text recorded in the lock files for people debugging a wait.
        :param task: The holder's task instance (``dag_id``, ``task_id``, ``run_id``,
            ``map_index``), recorded for the GPUs page.
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
        record = json.dumps(
            _record(self.host, owner, task, devices=list(self.device_ids), since=time.time())
        ).encode()
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
    task: Mapping[str, str] | None = None,
) -> GpuLease | None:
    """
    Lock ``count`` of ``candidates`` (in order) now, all or none; return None when too few are free.

    :param host: The Docker host (for the returned lease).
    :param candidates: Device ids to try, in preference order.
    :param count: How many to take.
    :param lease_dir: The host's lease directory (see :func:`lease_dir_for_host`).
    :param owner: Text recorded in the lock file for people debugging a wait.
    :param task: The holder's task instance identity, recorded for the GPUs page.
    """
    lease = GpuLease(host=host, device_ids=[])
    return lease if lease.take(candidates, count, lease_dir=lease_dir, owner=owner, task=task) else None


def acquire_gpu_lease(
    host: str,
    inventory: Sequence[str],
    *,
    count: int | None = None,
    device_ids: Sequence[str] | None = None,
    lease_dir: str | os.PathLike[str] | None = None,
    busy: Callable[[], Iterable[str]] | None = None,
    owner: str = "",
    task: Mapping[str, str] | None = None,
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
    :param task: The task instance (``dag_id``, ``task_id``, ``run_id``, ``map_index``),
        recorded in the lease and in the waiting marker for the GPUs page.
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
    marker = _WaitingMarker(directory, _record(host, owner, task, devices=wanted, count=need))
    try:
        while True:
            in_use = {str(i) for i in busy()} if busy else set()
            candidates = [i for i in wanted if i not in in_use]
            if len(candidates) >= need:
                lease = try_lease_ids(host, candidates, need, lease_dir=directory, owner=owner, task=task)
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
            marker.hold()
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
    finally:
        marker.remove()


def _record(
    host: str,
    owner: str,
    task: Mapping[str, str] | None,
    *,
    devices: Sequence[str],
    count: int | None = None,
    since: float | None = None,
) -> dict[str, object]:
    record: dict[str, object] = {
        "owner": owner,
        "pid": os.getpid(),
        "since": time.time() if since is None else since,
        "host": host,
        "devices": list(devices),
    }
    if count is not None:
        record["count"] = count
    if task:
        record["task"] = {str(k): str(v) for k, v in task.items()}
    return record


class _WaitingMarker:
    """``waiting-<hash>.json``: flock'd by this process while it waits for devices, removed after."""

    def __init__(self, directory: Path, record: dict[str, object]) -> None:
        digest = hashlib.sha256(f"{record['owner']}\x1f{os.getpid()}".encode()).hexdigest()[:16]
        self.path = directory / f"{WAITING_PREFIX}{digest}.json"
        self.record = record
        self._fd: int | None = None
        self._tried = False

    def hold(self) -> None:
        """Create and lock the marker (once: on the first attempt that has to wait)."""
        if self._tried:
            return
        self._tried = True
        try:
            fd = try_lock_fd(self.path)
        except OSError as err:  # a read-only lease dir: waiting still works, unseen
            log.debug("cannot write the waiting marker %s: %s", self.path, err)
            return
        if fd is None:
            return
        self._fd = fd
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self.record).encode(), 0)

    def remove(self) -> None:
        """Delete the marker, then drop its lock (a reader that opened it meanwhile sees it stale)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        release_fd(fd)


WAITING_PREFIX = "waiting-"
_LEASE_FILE = re.compile(r"^gpu-(?P<device>.+)\.lock$")


def lock_is_held(path: Path) -> bool:
    """
    Return whether some process holds the ``flock`` of ``path`` (False when it does not exist).

    The probe takes a non-blocking shared lock and drops it at once; it creates nothing.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        value = json.loads(path.read_bytes() or b"null")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_host_leases(directory: Path) -> dict[str, object]:
    """
    Return who holds which device and who waits, from one host's lease directory (read only).

    ``{"devices": {device id: record or None}, "waiting": [record, ...]}``: every device that
    has a lease file, with the holder's record while its lock is held (None: free); the live
    waiting markers, oldest first. Stale files (lock not held) are ignored.

    :param directory: The host's lease directory (``<gpu_lease_dir>/<host key>``).
    """
    devices: dict[str, object] = {}
    waiting: list[dict[str, object]] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        entries = []
    for path in entries:
        match = _LEASE_FILE.match(path.name)
        if match:
            live = lock_is_held(path)
            record = _read_json(path) if live else None
            devices[match["device"]] = record or ({"owner": "", "pid": None} if live else None)
        elif path.name.startswith(WAITING_PREFIX) and path.suffix == ".json" and lock_is_held(path):
            record = _read_json(path)
            if record is not None:
                waiting.append(record)
    waiting.sort(key=lambda r: float(r.get("since") or 0))  # type: ignore[arg-type]
    return {"devices": devices, "waiting": waiting}
