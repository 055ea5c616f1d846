"""``GpuDockerOperator``: DockerOperator with GPUs, limits, a result file, reattach and cleanup."""

from __future__ import annotations

import collections
import contextlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.docker.operators.docker import DockerOperator, stringify
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_mlops_provider.compute import Resources, build_docker_host_config
from airflow_mlops_provider.operators._common import (
    RESULT_DIR,
    RESULT_FILE,
    ResourcesPartialMixin,
    contains_template,
    deterministic_name,
    env_as_strings,
    resources_for_execute,
    resources_for_init,
    task_identity,
    validate_command,
    validate_env,
    validate_image,
)
from airflow_mlops_provider.operators._docker_host import (
    GPU_IDS_LABEL,
    GPU_RUNTIME_CHECKS,
    NO_DEVICE_DRIVER,
    busy_gpu_ids,
    configured_host_gpus,
    discover_host_gpus,
    engine_gpu_runtimes,
    missing_runtime_message,
    no_driver_message,
    parse_host_gpus,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops_provider.gpu_leases import GpuLease

# Imported by DAG files on every parse: what only execute() needs (GPU leases, the provider's
# exceptions) is imported there, which keeps the parse within 5 % of the stock DockerOperator's
# (benchmarks/parse_time.py). tarfile and io stay here: DockerOperator's module imports them anyway.

__all__ = ["GpuDockerOperator"]

GPU_FALLBACKS = ("fail", "cpu")
_LABEL_PREFIX = "airflow-mlops."
_RUNNING_STATES = ("running", "restarting", "paused")


class GpuDockerOperator(ResourcesPartialMixin, DockerOperator):
    """
    Run a container on a Docker host with GPUs, hard limits, a JSON result, reattach and cleanup.

    The container writes one JSON document to ``/airflow/xcom/return.json`` (the
    KubernetesPodOperator contract); it becomes the task's XCom. GPU devices are leased per
    Docker host (``[mlops] gpu_lease_dir``), so parallel tasks get distinct devices and extra
    tasks wait. The container name is deterministic for the task instance, so a retry after a
    dead worker attaches to the running container (or collects the finished one) instead of
    starting a second run. The container is removed on success, failure, timeout and kill.

    :param image: Image to run, e.g. ``"pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime"``. (templated)
    :param command: Command, a list of strings or a string. (templated)
    :param env: Environment variables of the container; merged over ``environment``. (templated)
    :param resources: A ``Resources`` or a dict such as ``{"gpus": 1, "memory": "8Gi",
        "cpus": 4, "shm_size": "2Gi"}``; GPUs become device requests, memory ``mem_limit``,
        cpus a hard ``nano_cpus`` limit. (templated)
    :param gpu_ids: Exactly these device ids, e.g. ``["1", "3"]``; must agree with
        ``resources.gpus`` when that is set. (templated)
    :param gpu_fallback: ``"fail"`` (default): a host without GPU runtime fails the task
        without retries. ``"cpu"``: run without GPUs and log a warning.
    :param host_gpus: The Docker host's GPUs: a count (``4``) or device ids. Default:
        ``[mlops] docker_host_gpus``, else discovered with ``nvidia-smi``. Needed to hand out
        distinct devices; without it GPUs are requested by count and tasks may share devices.
    :param share_gpus: Let tasks share devices (no lease). Default False.
    :param gpu_runtime_check: ``"auto"`` (an ``nvidia`` runtime in ``docker info``, or else the
        engine's own answer at start), ``"runtime"`` (require an ``nvidia`` runtime in
        ``docker info``), or ``"off"``.
    :param gpu_lease_timeout: Seconds to wait for free devices before failing; None waits until
        ``execution_timeout``.
    :param gpu_discovery_image: Image for the ``nvidia-smi`` helper; default ``image``.
    :param return_result_file: Return the JSON of ``/airflow/xcom/return.json`` as XCom.
    :param log_xcom: Also keep DockerOperator's log-line XCom (last line, or all lines with
        ``xcom_all``): the return value when there is no result file, else pushed under the
        key ``log_lines``.
    :param reattach_on_restart: Attach to this task instance's container when it already
        exists (a previous try's worker died) instead of starting another. Default True.
    :param keep_container: Keep the container after it ends (renamed ``<name>-try<N>``).
    :param stop_grace_period: Seconds between SIGTERM and SIGKILL for the container when the task
        is killed (default 5, inside the 5 s Airflow gives a task between its signals).
    """

    template_fields: Sequence[str] = (*DockerOperator.template_fields, "compute_resources", "gpu_ids")
    ui_color = "#d4edda"

    def __init__(
        self,
        *,
        image: str,
        command: str | list[str] | None = None,
        env: Mapping[str, Any] | None = None,
        resources: Resources | Mapping[str, Any] | str | None = None,
        gpu_ids: list[str] | None = None,
        gpu_fallback: str = "fail",
        host_gpus: int | str | Sequence[str] | None = None,
        share_gpus: bool = False,
        gpu_runtime_check: str = "auto",
        gpu_lease_timeout: float | None = None,
        gpu_discovery_image: str | None = None,
        return_result_file: bool = True,
        log_xcom: bool = False,
        reattach_on_restart: bool = True,
        keep_container: bool = False,
        stop_grace_period: int = 5,
        **kwargs: Any,
    ) -> None:
        validate_image(image)
        validate_command(command)
        validate_env(env)
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
            or stop_grace_period < 0
        ):
            raise ValueError(f"stop_grace_period must be an integer >= 0, got {stop_grace_period!r}")
        inventory = None if host_gpus is None else parse_host_gpus(host_gpus)
        static_resources = resources_for_init(resources)
        if gpu_ids is not None and not contains_template(gpu_ids):
            # Checks type, emptiness, duplicates and agreement with resources.gpus.
            check = static_resources if isinstance(static_resources, Resources) else Resources()
            build_docker_host_config(check, list(gpu_ids) if isinstance(gpu_ids, tuple) else gpu_ids)
            if inventory is not None:
                unknown = [str(i) for i in gpu_ids if str(i) not in inventory]
                if unknown:
                    raise ValueError(
                        f"gpu_ids {gpu_ids!r} name device(s) {unknown!r} not in host_gpus {inventory!r}"
                    )
        if (
            isinstance(static_resources, Resources)
            and inventory is not None
            and static_resources.gpus > len(inventory)
        ):
            raise ValueError(
                f"resources.gpus={static_resources.gpus!r} is more than host_gpus declares ({len(inventory)})"
            )
        environment = {**dict(kwargs.pop("environment", None) or {}), **dict(env or {})}
        super().__init__(image=image, command=command, environment=environment, **kwargs)
        self.env = env
        self.compute_resources = static_resources
        self.gpu_ids = gpu_ids
        self.gpu_fallback = gpu_fallback
        self.host_gpus = inventory
        self.share_gpus = share_gpus
        self.gpu_runtime_check = gpu_runtime_check
        self.gpu_lease_timeout = gpu_lease_timeout
        self.gpu_discovery_image = gpu_discovery_image
        self.return_result_file = return_result_file
        self.log_xcom = log_xcom
        self.reattach_on_restart = reattach_on_restart
        self.keep_container = keep_container
        self.stop_grace_period = stop_grace_period
        self._lease: GpuLease | None = None
        self._container_id: str | None = None
        self._killed = False

    # -- small helpers ------------------------------------------------------------------------

    @property
    def docker_host(self) -> str:
        """The Docker host this task talks to (the key of GPU leases)."""
        url = self.docker_url
        return ",".join(url) if isinstance(url, (list, tuple)) else str(url)

    def _render_gpu_ids(self, resources: Resources) -> list[str] | None:
        ids = self.gpu_ids
        if ids is None:
            return None
        if isinstance(ids, tuple):
            ids = list(ids)
        try:
            build_docker_host_config(resources, ids)
        except ValueError as err:
            raise AirflowFailException(f"Invalid gpu_ids after rendering: {err}") from err
        return [str(i).strip() for i in ids]

    def _labels(self, identity: Mapping[str, str], gpu_ids: Sequence[str] | None) -> dict[str, str]:
        labels: dict[str, str] = {}
        if isinstance(self.labels, Mapping):
            labels.update({str(k): str(v) for k, v in self.labels.items()})
        elif self.labels:
            labels.update({str(k): "" for k in self.labels})
        for key in ("dag_id", "task_id", "run_id", "map_index"):
            labels[_LABEL_PREFIX + key] = identity[key]
        if gpu_ids:
            labels[GPU_IDS_LABEL] = ",".join(gpu_ids)
        return labels

    def _find_container(self, name: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        try:
            return self.cli.inspect_container(name)
        except NotFound:
            return None

    def _remove_container(self, container_id: str) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.cli.remove_container(container_id, force=True, v=True)
        except NotFound:
            pass
        except APIError as err:  # "removal already in progress" after on_kill
            if "already in progress" not in str(err):
                self.log.warning("Could not remove container %s: %s", container_id[:12], err)

    def _release_lease(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    # -- GPUs -----------------------------------------------------------------------------------

    def _gpu_inventory(self) -> list[str] | None:
        if self.host_gpus is not None:
            return self.host_gpus
        try:
            configured = configured_host_gpus(self.docker_host)
        except ValueError as err:
            raise AirflowFailException(str(err)) from err
        if configured is not None:
            return configured
        return discover_host_gpus(self.cli, self.docker_host, self.gpu_discovery_image or self.image)

    def _fallback_or_fail(self, message: str) -> None:
        if self.gpu_fallback == "cpu":
            self.log.warning("%s Running on CPU instead because gpu_fallback='cpu'.", message)
            return
        from airflow_mlops_provider.exceptions import GpuRuntimeMissingError

        raise GpuRuntimeMissingError(message, host=self.docker_host)

    def _prepare_gpus(
        self, resources: Resources, gpu_ids: list[str] | None, container_name: str
    ) -> tuple[Resources, list[str] | None]:
        """Check the host, then lease devices; return what to request (maybe no GPU at all)."""
        wanted = len(gpu_ids) if gpu_ids else resources.gpus
        if not wanted or resources.gpu_vendor != "nvidia":
            return resources, gpu_ids
        host = self.docker_host
        if self.gpu_runtime_check != "off":
            info = self.cli.info()
            if not engine_gpu_runtimes(info) and self.gpu_runtime_check == "runtime":
                self._fallback_or_fail(missing_runtime_message(host, info, wanted))
                return resources.without_gpus(), None
        if self.share_gpus:
            return resources, gpu_ids
        inventory = self._gpu_inventory()
        if inventory is None:
            self.log.warning(
                "GPU inventory of %s is unknown (set host_gpus or [mlops] docker_host_gpus): requesting "
                "%d GPU(s) by count, so parallel tasks may share devices",
                host,
                wanted,
            )
            return resources, gpu_ids
        if wanted > len(inventory) or (gpu_ids and set(gpu_ids) - set(inventory)):
            what = f"gpu_ids={gpu_ids!r}" if gpu_ids else f"gpus={wanted}"
            self._fallback_or_fail(
                f"Docker host {host!r} cannot serve {what}: it has {len(inventory)} GPU(s) {inventory!r}."
            )
            return resources.without_gpus(), None
        from airflow_mlops_provider.gpu_leases import acquire_gpu_lease

        identity = f"{self.dag_id}.{self.task_id}/{container_name}"
        self._lease = acquire_gpu_lease(
            host,
            inventory,
            count=None if gpu_ids else wanted,
            device_ids=gpu_ids,
            busy=lambda: busy_gpu_ids(self.cli, exclude_name=container_name),
            owner=identity,
            timeout=self.gpu_lease_timeout,
            logger=self.log,  # type: ignore[arg-type]
        )
        return resources, list(self._lease.device_ids)

    # -- execute ----------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        resources = resources_for_execute(self.compute_resources)
        gpu_ids = self._render_gpu_ids(resources)
        if not isinstance(self.image, str) or not self.image.strip():
            raise AirflowFailException(f"image rendered to an empty value: {self.image!r}")
        # ``env`` was merged into DockerOperator's templated ``environment`` in __init__.
        self.environment = env_as_strings(self.environment)
        identity = task_identity(context)
        name = self.container_name or deterministic_name(identity)
        self.container_name = name
        self._killed = False
        existing = self._find_container(name)
        if existing is not None:
            if self.reattach_on_restart:
                return self._reattach(existing, context, identity)
            self.log.info("Removing container %s left by a previous try (reattach_on_restart=False)", name)
            self._remove_container(existing["Id"])
        self._run_request = (resources, gpu_ids, identity, context)
        return super().execute(context)  # pulls the image if needed, then _run_image()

    def _run_image_with_mounts(self, target_mounts: list[Any], add_tmp_variable: bool) -> Any:
        resources, gpu_ids, identity, context = self._run_request
        name = str(self.container_name)
        if add_tmp_variable:
            self.environment["AIRFLOW_TMP_DIR"] = self.tmp_dir
        else:
            self.environment.pop("AIRFLOW_TMP_DIR", None)
        try:
            resources, gpu_ids = self._prepare_gpus(resources, gpu_ids, name)
            self._create_and_start(name, target_mounts, resources, gpu_ids, identity)
            return self._follow(context, self._container_id or "", stream=self._attach_stream)
        finally:
            self._finish(identity)

    def _create_and_start(
        self,
        name: str,
        target_mounts: list[Any],
        resources: Resources,
        gpu_ids: list[str] | None,
        identity: Mapping[str, str],
    ) -> None:
        from docker.errors import APIError
        from docker.types import LogConfig

        engine = build_docker_host_config(resources, gpu_ids)
        log_config = {}
        if self.log_opts_max_size is not None:
            log_config["max-size"] = self.log_opts_max_size
        if self.log_opts_max_file is not None:
            log_config["max-file"] = self.log_opts_max_file
        env_file_vars = self.unpack_environment_variables(self.env_file) if self.env_file else {}
        host_config = self.cli.create_host_config(
            auto_remove=False,
            mounts=target_mounts,
            network_mode=self.network_mode,
            shm_size=engine.get("shm_size", self.shm_size),
            dns=self.dns,
            dns_search=self.dns_search,
            cpu_shares=round(self.cpus * 1024),
            nano_cpus=engine.get("nano_cpus"),
            port_bindings=self.port_bindings,
            mem_limit=engine.get("mem_limit", self.mem_limit),
            cap_add=self.cap_add,
            extra_hosts=self.extra_hosts,
            privileged=self.privileged,
            device_requests=engine.get("device_requests", self.device_requests),
            devices=engine.get("devices"),
            group_add=engine.get("group_add"),
            log_config=LogConfig(config=log_config),
            ipc_mode=self.ipc_mode,
            ulimits=self.ulimits,
        )
        self.container = self.cli.create_container(
            command=self.format_command(self.command),
            name=name,
            environment={**env_file_vars, **self.environment, **self._private_environment},
            ports=list(self.port_bindings),
            host_config=host_config,
            image=self.image,
            user=self.user,
            entrypoint=self.format_command(self.entrypoint),
            working_dir=self.working_dir,
            tty=self.tty,
            hostname=self.hostname,
            labels=self._labels(identity, gpu_ids),
        )
        self._container_id = container_id = self.container["Id"]
        if self.return_result_file:
            self.cli.put_archive(container_id, "/", _result_dir_tar())
        self._attach_stream = self.cli.attach(container=container_id, stdout=True, stderr=True, stream=True)
        try:
            self.cli.start(container_id)
        except APIError as err:
            if NO_DEVICE_DRIVER not in str(err):
                raise
            wanted = len(gpu_ids) if gpu_ids else resources.gpus
            message = no_driver_message(self.docker_host, wanted, err.explanation or err)
            self._remove_container(container_id)
            self._container_id = None
            self._release_lease()
            self._fallback_or_fail(message)
            self._create_and_start(name, target_mounts, resources.without_gpus(), None, identity)
            return
        self.log.info(
            "Started container %s (%s) on %s%s",
            name,
            container_id[:12],
            self.docker_host,
            f" with GPU device(s) {','.join(gpu_ids)}" if gpu_ids else "",
        )

    def _reattach(self, existing: dict[str, Any], context: Context, identity: Mapping[str, str]) -> Any:
        container_id = existing["Id"]
        self._container_id = container_id
        self.container = {"Id": container_id}
        status = existing.get("State", {}).get("Status")
        labels = (existing.get("Config") or {}).get("Labels") or {}
        ids = [i for i in labels.get(GPU_IDS_LABEL, "").split(",") if i]
        self.log.info(
            "Reattaching to container %s (%s), state %s, left by a previous try",
            self.container_name,
            container_id[:12],
            status,
        )
        try:
            if ids and not self.share_gpus:
                from airflow_mlops_provider.gpu_leases import lease_dir_for_host, try_lease_ids

                self._lease = try_lease_ids(
                    self.docker_host, ids, len(ids), lease_dir=lease_dir_for_host(self.docker_host)
                )
                if self._lease is None:
                    self.log.warning("GPU device(s) %s of the reattached container are leased elsewhere", ids)
            if status == "created":
                stream = self.cli.attach(container=container_id, stdout=True, stderr=True, stream=True)
                self.cli.start(container_id)
            elif status in _RUNNING_STATES:
                stream = self.cli.logs(container_id, stdout=True, stderr=True, stream=True, follow=True)
            else:
                stream = iter([self.cli.logs(container_id, stdout=True, stderr=True)])
            return self._follow(context, container_id, stream=stream)
        finally:
            self._finish(identity)

    def _follow(self, context: Context, container_id: str, *, stream: Iterable[Any]) -> Any:
        """Stream logs live, wait for the exit code, then return the result."""
        keep_all = self.log_xcom and self.xcom_all
        lines = _stream_lines(stream, self.log, keep_all=keep_all)
        if self._killed:
            raise AirflowException(f"Container {self.container_name} was stopped because the task was killed")
        exit_code = self.cli.wait(container_id).get("StatusCode")
        if exit_code in self.skip_on_exit_code:
            raise AirflowSkipException(f"Container exited with {exit_code}, listed in skip_on_exit_code")
        if exit_code != 0:
            from airflow_mlops_provider.exceptions import ContainerFailedError

            raise ContainerFailedError(
                f"Container {self.container_name} exited with code {exit_code}",
                exit_code=exit_code,
                logs="\n".join(list(lines)[-20:]),
            )
        if self.retrieve_output:
            return self._attempt_to_retrieve_result()
        log_value = (
            (list(lines) if self.xcom_all else (lines[-1] if lines else None)) if self.log_xcom else None
        )
        if self.return_result_file:
            found, result = self._read_result(container_id)
            if found:
                if self.log_xcom and self.do_xcom_push:
                    context["ti"].xcom_push(key="log_lines", value=log_value)
                return result
            self.log.info(
                "The container wrote no %s; returning %s",
                RESULT_FILE,
                "log lines" if self.log_xcom else "None",
            )
        return log_value

    def _read_result(self, container_id: str) -> tuple[bool, Any]:
        from docker.errors import NotFound

        from airflow_mlops_provider.exceptions import ContainerFailedError

        try:
            chunks, stat = self.cli.get_archive(container_id, RESULT_FILE)
        except NotFound:
            return False, None
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(stat["name"])
            text = member.read().decode() if member else ""
        try:
            return True, json.loads(text)
        except ValueError as err:
            raise ContainerFailedError(
                f"Container {self.container_name} wrote {RESULT_FILE} that is not JSON: {err}; "
                f"first bytes: {text[:200]!r}"
            ) from err

    def _finish(self, identity: Mapping[str, str]) -> None:
        """Remove (or keep and rename) the container and release the GPU lease; idempotent."""
        container_id, self._container_id = self._container_id, None
        try:
            if container_id is None:
                return
            if not self.keep_container:
                self._remove_container(container_id)
                return
            from docker.errors import APIError

            with contextlib.suppress(APIError):
                self.cli.stop(container_id, timeout=self.stop_grace_period)
                self.cli.rename(container_id, f"{self.container_name}-try{identity['try_number']}")
        finally:
            self._release_lease()

    def on_kill(self) -> None:
        """Stop and remove the container (SIGTERM, execution_timeout, marked failed/success)."""
        self._killed = True
        container_id = self._container_id
        if container_id is None:
            self._release_lease()
            return
        from docker.errors import APIError

        self.log.info("Task killed: stopping container %s (%s)", self.container_name, container_id[:12])
        with contextlib.suppress(APIError):
            self.cli.stop(container_id, timeout=self.stop_grace_period)
        if not self.keep_container:
            self._remove_container(container_id)
        self._release_lease()


def _result_dir_tar() -> bytes:
    """A tar holding the empty, world-writable result directory, put into the container before start."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        parts = RESULT_DIR.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            info = tarfile.TarInfo("/".join(parts[:depth]))
            info.type = tarfile.DIRTYPE
            info.mode = 0o777
            tar.addfile(info)
    return buf.getvalue()


#: A chunk holding more complete lines than this is logged as one multi-line record (a burst,
#: e.g. a progress dump); below it every line is its own record.
BURST_LINES = 32


def _stream_lines(stream: Iterable[Any], log: Any, *, keep_all: bool) -> collections.deque[str]:
    """
    Log lines as they arrive; return the last 20 lines (or all of them with ``keep_all``).

    Each chunk read from the engine is logged at once (live). Ordinary output gets one log
    record per line; a burst of more than ``BURST_LINES`` lines in one chunk is logged as one
    record, which keeps a container that prints hundreds of thousands of lines from being
    slowed down by per-record logging costs.
    """
    lines: collections.deque[str] = collections.deque(maxlen=None if keep_all else 20)
    buffer = ""
    for chunk in stream:
        buffer += stringify(chunk)
        if "\n" not in buffer:
            continue
        *complete, buffer = buffer.split("\n")
        stripped = [line.rstrip() for line in complete]
        if len(stripped) > BURST_LINES:
            log.info("%s", "\n".join(stripped))
        else:
            for line in stripped:
                log.info("%s", line)
        lines.extend(stripped)
    if buffer:
        line = buffer.rstrip()
        log.info("%s", line)
        lines.append(line)
    return lines
