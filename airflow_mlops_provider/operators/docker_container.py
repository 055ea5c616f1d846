"""One task instance's container on a Docker engine, from creation (or reattach) to its end.

``GpuDockerOperator`` decides *what* to run; :class:`TaskContainer` does the engine calls of a
container's life and keeps the two promises every path must keep:

- **one container per task instance**: its name is deterministic, so a retry finds the container
  a dead worker left and reattaches to it (:meth:`TaskContainer.reattach`);
- **nothing left behind unasked**: :meth:`TaskContainer.finish` (after success, failure or
  timeout) and :meth:`TaskContainer.kill` (SIGTERM, marked failed) remove the container or keep
  it as ``auto_remove`` says, and release the GPU lease. A kept container is stopped and renamed
  ``<name>-try<N>``, so the next try starts afresh instead of reattaching to it. ``kill`` first
  starts the reaper (:mod:`~airflow_mlops_provider.operators.docker_reaper`), which finishes the
  job if Airflow SIGKILLs the task process before ``kill`` is done.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_mlops_provider.docker_gpu.host import GPU_IDS_LABEL
from airflow_mlops_provider.operators.docker_streams import result_dir_tar

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterable, Sequence

    from docker import APIClient

    from airflow_mlops_provider.docker_gpu.leases import GpuLease

T = TypeVar("T")

#: Every container's labels name its task instance: ``airflow-mlops.dag_id``, ``.task_id``,
#: ``.run_id``, ``.map_index`` and ``.try_number`` (the try that created it).
LABEL_PREFIX = "airflow-mlops."


def container_labels(
    user_labels: Mapping[str, Any] | Sequence[str] | None,
    identity: Mapping[str, str],
    gpu_ids: Sequence[str] | None,
) -> dict[str, str]:
    """The user's ``labels`` (a mapping or a list of names) plus the task identity and GPU ids."""
    labels: dict[str, str] = {}
    if isinstance(user_labels, Mapping):
        labels.update({str(k): str(v) for k, v in user_labels.items()})
    elif user_labels:
        labels.update({str(k): "" for k in user_labels})
    for key in ("dag_id", "task_id", "run_id", "map_index", "try_number"):
        labels[LABEL_PREFIX + key] = identity[key]
    if gpu_ids:
        labels[GPU_IDS_LABEL] = ",".join(gpu_ids)
    return labels


def engine_client_spec(op: Any) -> dict[str, Any]:
    """How the container reaper reaches a DockerOperator's engine (its URL or URLs, API version, TLS)."""
    urls = op.docker_url if isinstance(op.docker_url, (list, tuple)) else [op.docker_url]
    return {
        "docker_urls": [str(u) for u in urls],
        "api_version": op.api_version,
        "tls": {
            "ca_cert": op.tls_ca_cert,
            "client_cert": op.tls_client_cert,
            "client_key": op.tls_client_key,
            "verify": op.tls_verify,
        },
    }


__all__ = [
    "ENGINE_WAIT",
    "LABEL_PREFIX",
    "TaskContainer",
    "container_labels",
    "engine_client_spec",
    "engine_unreachable",
]

_RUNNING_STATES = ("running", "restarting", "paused")
#: How long a task waits for an engine that went away (a restart) before it gives up, in seconds.
ENGINE_WAIT = 90.0


def engine_unreachable(err: BaseException) -> bool:
    """Whether ``err`` means the engine cannot be reached at all (stopped or restarting)."""
    from requests.exceptions import ConnectionError as RequestsConnectionError

    return isinstance(err, (RequestsConnectionError, ConnectionError))


def _when_engine_is_back(what: str, call: Callable[[], T], log: logging.Logger) -> T:
    """Run ``call``; while the engine is unreachable, retry it for up to :data:`ENGINE_WAIT` s."""
    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

    def warn(state: Any) -> None:
        log.warning("Docker engine unreachable during %s (%s); retrying", what, state.outcome.exception())

    for attempt in Retrying(
        retry=retry_if_exception(engine_unreachable),
        stop=stop_after_delay(ENGINE_WAIT),
        wait=wait_exponential(multiplier=0.5, max=5),
        before_sleep=warn,
        reraise=True,
    ):
        with attempt:
            return call()
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


class TaskContainer:
    """
    The engine calls of one task instance's container.

    :param cli: The Docker client.
    :param name: The container's name, the same on every try of the task instance.
    :param host: The Docker host, the key of the GPU leases.
    :param auto_remove: ``"force"``, ``"success"`` or ``"never"`` (see ``GpuDockerOperator``).
    :param kept_name: The name a kept container is given, ``<name>-try<N>``.
    :param stop_grace_period: Seconds between SIGTERM and SIGKILL when stopping.
    :param log: The task's logger.
    :param try_number: This try (the ``airflow-mlops.try_number`` label of what it creates).
    :param client: How the reaper reaches the engine: ``docker_urls``, ``api_version``, ``tls``.
    :param will_retry: Airflow retries this task instance if this try fails. When the process
        that started this one (Airflow's supervisor) is gone at the end, the container is kept
        for that retry to reattach to and collect, instead of being removed with a result
        nobody can report: a killed scheduler takes the LocalExecutor's supervisors with it,
        not their task processes, and the retry would otherwise train again.
    """

    def __init__(
        self,
        cli: APIClient,
        name: str,
        *,
        host: str,
        auto_remove: str,
        kept_name: str,
        stop_grace_period: int,
        log: logging.Logger,
        try_number: int = 1,
        client: Mapping[str, Any] | None = None,
        will_retry: bool = False,
    ) -> None:
        self.cli = cli
        self.name = name
        self.host = host
        self.auto_remove = auto_remove
        self.kept_name = kept_name
        self.stop_grace_period = stop_grace_period
        self.log = log
        self.try_number = try_number
        self.client = dict(client or {})
        self.will_retry = will_retry
        #: The supervisor, whose death means this try's outcome cannot be reported any more.
        self.parent_pid = os.getppid()
        #: Set by :meth:`kill`: nothing may be created or started any more.
        self.killed = False
        #: The container being run (None before creation and once finished).
        self.id: str | None = None
        #: The GPU devices leased for it (None: nothing leased).
        self.lease: GpuLease | None = None
        #: After a non-zero exit: whether the engine says memory ran out (None: unknown).
        self.oom_killed: bool | None = None

    def existing(self) -> dict[str, Any] | None:
        """Return ``docker inspect`` of the container a previous try left under this name, or None."""
        from docker.errors import NotFound

        try:
            return self.cli.inspect_container(self.name)
        except NotFound:
            return None

    def remove(self, container_id: str) -> None:
        """Remove ``container_id`` (and its anonymous volumes), running or not; gone already is fine."""
        from docker.errors import APIError, NotFound

        try:
            _when_engine_is_back(
                f"the removal of {self.name}",
                lambda: self.cli.remove_container(container_id, force=True, v=True),
                self.log,
            )
        except NotFound:
            pass
        except APIError as err:  # "removal already in progress" after on_kill
            if "already in progress" not in str(err):
                self.log.warning("Could not remove container %s: %s", container_id[:12], err)

    def create(
        self, host_kwargs: Mapping[str, Any], create_kwargs: Mapping[str, Any], *, result_dir: bool
    ) -> str:
        """Create the container (with an empty, writable ``/airflow/xcom`` when ``result_dir``); return its id."""
        self.check_not_killed()
        host_config = self.cli.create_host_config(**host_kwargs)
        self.id = container_id = self.cli.create_container(host_config=host_config, **create_kwargs)["Id"]
        self.check_not_killed()
        if result_dir:
            self.cli.put_archive(container_id, "/", result_dir_tar())
        return container_id

    def start(self) -> Iterable[Any]:
        """Attach to the created container, then start it; return its output stream (the engine's refusal propagates)."""
        stream = self.cli.attach(container=self.id, stdout=True, stderr=True, stream=True)
        self.check_not_killed()
        self.cli.start(self.id)
        return stream

    def check_not_killed(self) -> None:
        """
        Raise if the task was killed: a SIGTERM that came before the container existed had nothing
        to stop, and what comes after it must not create or start one.
        """
        if self.killed:
            from airflow.sdk.exceptions import AirflowException

            raise AirflowException(f"Task killed before container {self.name} started; not starting it")

    def discard(self) -> None:
        """Remove the created container and release its lease (before a retry without GPUs)."""
        container_id, self.id = self.id, None
        if container_id is not None:
            self.remove(container_id)
        self.release_lease()

    def reattach(self, existing: Mapping[str, Any], *, lease_gpus: bool) -> Iterable[Any]:
        """
        Take over the container a previous try left; return the rest of its output.

        A created container is started, a running one followed, an exited one's logs read whole.

        :param existing: Its ``docker inspect``.
        :param lease_gpus: Lease the devices its label names again (not with ``share_gpus``).
        """
        self.id = container_id = existing["Id"]
        status = existing.get("State", {}).get("Status")
        labels = (existing.get("Config") or {}).get("Labels") or {}
        ids = [i for i in labels.get(GPU_IDS_LABEL, "").split(",") if i]
        self.log.info(
            "Reattaching to container %s (%s), state %s, left by a previous try",
            self.name,
            container_id[:12],
            status,
        )
        if ids and lease_gpus:
            from airflow_mlops_provider.docker_gpu.leases import lease_dir_for_host, try_lease_ids

            self.lease = try_lease_ids(self.host, ids, len(ids), lease_dir=lease_dir_for_host(self.host))
            if self.lease is None:
                self.log.warning("GPU device(s) %s of the reattached container are leased elsewhere", ids)
        if status == "created":
            return self.start()
        if status in _RUNNING_STATES:
            return self.cli.logs(container_id, stdout=True, stderr=True, stream=True, follow=True)
        return iter([self.cli.logs(container_id, stdout=True, stderr=True)])

    def wait(self) -> int | None:
        """
        Wait for the container to exit; return its exit code (``oom_killed`` says whether memory ran out).

        If the engine goes away meanwhile (a restart), the wait resumes once it answers again: a
        container the restart killed (no ``live-restore``) reports its exit code, which fails the
        try; with ``live-restore`` the container ran on and the task goes on waiting for it (the
        lines it printed while the engine was away are not streamed).
        """
        code = _when_engine_is_back(
            f"the wait for {self.name}", lambda: self.cli.wait(self.id).get("StatusCode"), self.log
        )
        if code:
            from docker.errors import APIError

            try:
                self.oom_killed = bool(self.cli.inspect_container(self.id)["State"].get("OOMKilled"))
            except (APIError, KeyError, TypeError):
                self.oom_killed = None
        return code

    def finish(self, *, succeeded: bool) -> None:
        """Remove or keep the container as ``auto_remove`` says, and release the GPU lease; idempotent."""
        container_id, self.id = self.id, None
        try:
            if container_id is None:
                return
            if self.will_retry and os.getppid() != self.parent_pid:
                self.log.warning(
                    "The supervisor of this try is gone; keeping container %s (%s) for the retry to collect",
                    self.name,
                    container_id[:12],
                )
                return
            if self.auto_remove == "force" or (self.auto_remove == "success" and succeeded):
                self.remove(container_id)
                return
            from docker.errors import APIError

            with contextlib.suppress(APIError):
                self.cli.stop(container_id, timeout=self.stop_grace_period)
                self.cli.rename(container_id, self.kept_name)
            self.log.info(
                "Kept container %s (%s) as %s (auto_remove=%r)",
                self.name,
                container_id[:12],
                self.kept_name,
                self.auto_remove,
            )
        finally:
            self.release_lease()

    def kill(self) -> None:
        """
        Stop the container (SIGTERM, then SIGKILL after the grace period), then finish it as failed.

        The reaper is started first, so the container goes even if the task process is SIGKILLed
        mid-way, or before the container it was creating exists.
        """
        self.killed = True
        self.spawn_reaper()
        if self.id is not None:
            from docker.errors import APIError

            self.log.info("Task killed: stopping container %s (%s)", self.name, self.id[:12])
            with contextlib.suppress(APIError):
                self.cli.stop(self.id, timeout=self.stop_grace_period)
        self.finish(succeeded=False)

    def spawn_reaper(self) -> None:
        from airflow_mlops_provider.operators.docker_reaper import spawn_reaper

        if (
            spawn_reaper(
                name=self.name,
                try_number=self.try_number,
                docker_urls=list(self.client.get("docker_urls") or [self.host]),
                auto_remove=self.auto_remove,
                kept_name=self.kept_name,
                stop_grace_period=self.stop_grace_period,
                api_version=self.client.get("api_version"),
                tls=self.client.get("tls"),
            )
            is None
        ):
            self.log.warning("Could not start the container reaper for %s", self.name)

    def release_lease(self) -> None:
        """Release the GPU lease, if any; idempotent."""
        lease, self.lease = self.lease, None
        if lease is not None:
            lease.release()
