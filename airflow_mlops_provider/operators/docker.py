"""``GpuDockerOperator``: DockerOperator with GPUs, limits, a result file, reattach and cleanup.

This module is the container's lifecycle (arguments, create, start, reattach, follow, finish,
kill). The rest lives by concept:

- GPU allocation (host runtime, inventory, GPU type, device leases): :mod:`airflow_mlops_provider.docker_gpu`;
- log streaming and the result file: :mod:`airflow_mlops_provider.operators.docker_streams`;
- DockerOperator's private API (the container-creation seam): :mod:`airflow_mlops_provider._compat.docker`.

Imported by DAG files on every parse: what only execute() needs (GPU allocation and leases, the
provider's exceptions) is imported there, which keeps the parse within 5 % of the stock
DockerOperator's (benchmarks/parse_time.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from airflow_mlops_provider._compat.docker import DockerRunSeam, container_kwargs, retrieved_output
from airflow_mlops_provider.checkpoints.settings import CHECKPOINT_DIR_ENV, CONTAINER_CHECKPOINT_DIR
from airflow_mlops_provider.checkpoints.task import init_checkpoint, task_session
from airflow_mlops_provider.compute import Resources, build_docker_host_config
from airflow_mlops_provider.docker_gpu.host import (
    NO_DEVICE_DRIVER,
    no_driver_message,
    parse_host_inventory,
)
from airflow_mlops_provider.operators._common import (
    ERROR_TAIL_LINES,
    RESULT_FILE,
    ResourcesPartialMixin,
    container_failed_error,
    deterministic_name,
    rendered,
    rendered_command,
    rendered_image,
    resources_for_init,
    task_identity,
    validate_command,
    validate_env,
    validate_image,
)
from airflow_mlops_provider.operators.docker_args import (
    AUTO_REMOVE,
    GPU_FALLBACKS,
    auto_remove_policy,
    check_options,
    check_static_gpus,
    container_environment,
    docker_gpu_ids,
    docker_resources,
    environment_at_init,
)
from airflow_mlops_provider.operators.docker_checkpoint import checkpoint_mount, start_checkpoint
from airflow_mlops_provider.operators.docker_container import (
    TaskContainer,
    container_labels,
    engine_client_spec,
)
from airflow_mlops_provider.operators.docker_streams import (
    BURST_LINES,
    read_result_file,
    result_dir_tar,
    stream_lines,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from airflow.sdk import Context

    from airflow_mlops_provider.checkpoints.session import CheckpointSession


__all__ = ["AUTO_REMOVE", "BURST_LINES", "GPU_FALLBACKS", "GpuDockerOperator"]

#: The task identity recorded in a GPU lease (and its waiting marker), for the GPUs view.
_LEASE_TASK_KEYS = ("dag_id", "task_id", "run_id", "map_index", "try_number")

# Their old names, kept importable from here.
_stream_lines = stream_lines
_result_dir_tar = result_dir_tar


class GpuDockerOperator(ResourcesPartialMixin, DockerRunSeam):
    """
    Run a container on a Docker host with GPUs, hard limits, a JSON result, reattach and cleanup.

    The container writes one JSON document to ``/airflow/xcom/return.json`` (the
    KubernetesPodOperator contract; ``$MLOPS_RESULT_FILE`` names it); it becomes the task's XCom.
    GPU devices are leased per Docker host (``[mlops] gpu_lease_dir``), so parallel tasks get
    distinct devices and extra tasks wait. The container name is deterministic for the task
    instance, so a retry after a dead worker attaches to the running container (or collects the
    finished one) instead of starting a second run.

    An argument of ours and DockerOperator's that set the same thing cannot both be given:
    ``resources.memory`` and ``mem_limit``, ``resources.shm_size`` and ``shm_size``,
    ``resources.gpus``/``gpu_ids`` and ``device_requests`` raise ``ValueError``.

    :param image: Image to run, e.g. ``"pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime"``. (templated)
    :param command: Command, a list of strings or a string. (templated)
    :param env: Environment variables of the container; they win over ``environment`` (the
        names they override are logged). (templated)
    :param resources: A ``Resources`` or a dict such as ``{"gpus": 1, "memory": "8Gi",
        "cpus": 4, "shm_size": "2Gi", "gpu_type": "NVIDIA-A100-SXM4-80GB"}``; GPUs become
        device requests, memory ``mem_limit``, cpus a hard ``nano_cpus`` limit; ``gpu_type`` is
        checked against the host's GPU names and only devices of that type are leased. (templated)
    :param gpu_ids: Exactly these device ids, e.g. ``["1", "3"]``; must agree with
        ``resources.gpus`` when that is set. (templated)
    :param gpu_fallback: ``"fail"`` (default): a host that cannot serve the GPU request (no GPU
        runtime, too few GPUs, none of ``gpu_type``) fails the task without retries. ``"cpu"``:
        run without GPUs and log a warning.
    :param host_gpus: The Docker host's GPUs: a count (``4``), device ids, or a mapping of ids
        to nvidia-smi names (``{"0": "NVIDIA A100-SXM4-80GB"}``, needed for ``gpu_type``).
        Default: ``[mlops] docker_host_gpus``, else discovered with ``nvidia-smi``. Needed to hand
        out distinct devices; without it GPUs are requested by count and tasks may share devices.
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
    :param auto_remove: When the container is removed: ``"force"`` (default) after success,
        failure, timeout and kill; ``"success"`` only after success (a failed, timed-out or
        killed container is kept); ``"never"`` keeps it always. A kept container is stopped and
        renamed ``<name>-try<N>``, so a retry starts afresh.
    :param keep_container: Keep the container after it ends: the same as ``auto_remove="never"``
        (giving it with ``"success"`` or ``"force"`` is a ``ValueError``).
    :param checkpoint: Where the container's ``$MLOPS_CHECKPOINT_DIR`` (a bind mount at
        ``/mlops/checkpoint``) is kept between tries: a path or ``s3://bucket/prefix``; default
        ``[mlops] checkpoint_uri``; ``""`` for none. ``checkpoint_interval``,
        ``checkpoint_retention``, ``checkpoint_max_bytes``, ``checkpoint_conn_id`` and
        ``checkpoint_prefix`` as in :mod:`airflow_mlops_provider.checkpoints.task`. (templated)
    :param stop_grace_period: Seconds between SIGTERM and SIGKILL for the container when the task
        is killed: 0 to 3, default 3. Airflow SIGKILLs a killed task process 5 s after its
        SIGTERM, and the container must be stopped and removed inside that time.
    """

    template_fields: Sequence[str] = (
        *DockerRunSeam.template_fields,
        "env",
        "compute_resources",
        "gpu_ids",
        "checkpoint",
    )
    template_fields_renderers = {**DockerRunSeam.template_fields_renderers, "env": "json"}
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
        host_gpus: int | str | Sequence[str] | Mapping[str, str] | None = None,
        share_gpus: bool = False,
        gpu_runtime_check: str = "auto",
        gpu_lease_timeout: float | None = None,
        gpu_discovery_image: str | None = None,
        return_result_file: bool = True,
        log_xcom: bool = False,
        reattach_on_restart: bool = True,
        auto_remove: str | None = None,
        keep_container: bool = False,
        stop_grace_period: int = 3,
        checkpoint: str | None = None,
        checkpoint_interval: float | None = None,
        checkpoint_retention: str | None = None,
        checkpoint_max_bytes: int | str | None = None,
        checkpoint_conn_id: str | None = None,
        checkpoint_prefix: str | None = None,
        **kwargs: Any,
    ) -> None:
        validate_image(image)
        validate_command(command)
        validate_env(env)
        check_options(
            gpu_fallback=gpu_fallback,
            gpu_runtime_check=gpu_runtime_check,
            gpu_lease_timeout=gpu_lease_timeout,
            stop_grace_period=stop_grace_period,
        )
        policy = auto_remove_policy(auto_remove, keep_container)
        inventory = None if host_gpus is None else parse_host_inventory(host_gpus)
        static_resources = resources_for_init(resources)
        check_static_gpus(static_resources, gpu_ids, inventory, kwargs)
        environment, environment_names = environment_at_init(env, kwargs.pop("environment", None))
        super().__init__(image=image, command=command, environment=environment, auto_remove=policy, **kwargs)
        self.env = env
        #: The names the user's own ``environment`` sets (None: known only after rendering).
        self._environment_names = environment_names
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
        init_checkpoint(
            self,
            checkpoint=checkpoint,
            checkpoint_interval=checkpoint_interval,
            checkpoint_retention=checkpoint_retention,
            checkpoint_max_bytes=checkpoint_max_bytes,
            checkpoint_conn_id=checkpoint_conn_id,
            checkpoint_prefix=checkpoint_prefix,
        )
        self._checkpoint: CheckpointSession | None = None
        self._run: TaskContainer | None = None
        self._killed = False

    # -- arguments ------------------------------------------------------------------------------

    @property
    def _native(self) -> dict[str, Any]:
        """DockerOperator's arguments that ours must not clash with."""
        return {
            "mem_limit": self.mem_limit,
            "shm_size": self.shm_size,
            "device_requests": self.device_requests,
        }

    @property
    def docker_host(self) -> str:
        """The Docker host this task talks to (the key of GPU leases)."""
        url = self.docker_url
        return ",".join(url) if isinstance(url, (list, tuple)) else str(url)

    # -- GPUs -----------------------------------------------------------------------------------

    def _fallback_or_fail(self, message: str) -> None:
        if self.gpu_fallback == "cpu":
            self.log.warning("%s Running on CPU instead because gpu_fallback='cpu'.", message)
            return
        from airflow_mlops_provider.exceptions import GpuRuntimeMissingError

        raise GpuRuntimeMissingError(message, host=self.docker_host)

    def _prepare_gpus(
        self,
        run: TaskContainer,
        resources: Resources,
        gpu_ids: list[str] | None,
        identity: Mapping[str, str] | None = None,
    ) -> tuple[Resources, list[str] | None]:
        """Check the host, then lease devices for ``run``; return what to request (maybe no GPU at all)."""
        from airflow_mlops_provider.docker_gpu.allocation import allocate_gpus

        resources, gpu_ids, run.lease = allocate_gpus(
            self.cli,
            host=self.docker_host,
            resources=resources,
            gpu_ids=gpu_ids,
            container_name=run.name,
            host_gpus=self.host_gpus,
            discovery_image=self.gpu_discovery_image or self.image,
            runtime_check=self.gpu_runtime_check,
            share_gpus=self.share_gpus,
            lease_timeout=self.gpu_lease_timeout,
            owner=f"{self.dag_id}.{self.task_id}/{run.name}",
            task={k: str(v) for k, v in (identity or {}).items() if k in _LEASE_TASK_KEYS},
            fallback=self._fallback_or_fail,
            logger=self.log,  # type: ignore[arg-type]
        )
        return resources, gpu_ids

    # -- execute ----------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        resources = rendered("resources", lambda v: docker_resources(v, self._native), self.compute_resources)
        gpu_ids = rendered("gpu_ids", lambda v: docker_gpu_ids(resources, v, self._native), self.gpu_ids)
        rendered_image(self.image)
        rendered_command(self.command)
        self.environment = container_environment(
            self.env,
            self.environment,
            self._environment_names,
            result_file=self.return_result_file,
            log=self.log,  # type: ignore[arg-type]
        )
        identity = task_identity(context)
        self._checkpoint = task_session(self, context)
        if self._checkpoint is not None:
            self.environment[CHECKPOINT_DIR_ENV] = CONTAINER_CHECKPOINT_DIR
        name = self.container_name = self.container_name or deterministic_name(identity)
        self._run = run = TaskContainer(
            self.cli,
            name,
            host=self.docker_host,
            auto_remove=self.auto_remove,
            kept_name=f"{name}-try{identity['try_number']}",
            stop_grace_period=self.stop_grace_period,
            log=self.log,  # type: ignore[arg-type]
            try_number=int(identity["try_number"]),
            client=engine_client_spec(self),
            will_retry=int(identity["try_number"]) <= int(self.retries or 0),
        )
        if self._killed:  # SIGTERM before the container could be known: create nothing
            run.killed = True
            run.check_not_killed()
        existing = run.existing()
        if existing is not None:
            if self.reattach_on_restart:
                lease_gpus = not self.share_gpus
                # The running container owns the checkpoint directory: nothing is restored.
                begin = lambda: run.reattach(existing, lease_gpus=lease_gpus)  # noqa: E731
                return self._until_end(context, run, begin, restore=False)
            self.log.info("Removing container %s left by a previous try (reattach_on_restart=False)", name)
            run.remove(existing["Id"])
        self._run_request = (resources, gpu_ids, context, run)
        return super().execute(context)  # pulls the image if needed, then run_container()

    def run_container(self, target_mounts: list[Any]) -> Any:
        """Lease GPUs, create and start the container, follow it to its end, then finish it."""
        resources, gpu_ids, context, run = self._run_request
        if self._checkpoint is not None:
            target_mounts = [*target_mounts, checkpoint_mount(self._checkpoint)]

        def begin() -> Iterable[Any]:
            identity = task_identity(context)
            ready, ids = self._prepare_gpus(run, resources, gpu_ids, identity)
            return self._create_and_start(run, target_mounts, ready, ids, identity)

        return self._until_end(context, run, begin)

    def _until_end(
        self,
        context: Context,
        run: TaskContainer,
        begin: Callable[[], Iterable[Any]],
        *,
        restore: bool = True,
    ) -> Any:
        """
        Begin the container (create and start, or reattach), follow it to its end, then finish it.

        With a checkpoint: restored first (unless ``restore`` is False), uploaded periodically
        while the container runs, and once more after the container is stopped.
        """
        succeeded = False
        checkpoint = self._checkpoint
        if checkpoint is not None:
            # Outside the try: after a failed restore, a final upload of the (empty or stale)
            # working copy would replace the checkpoint in the store.
            start_checkpoint(checkpoint, restore=restore)
        try:
            stream = begin()
            self.container = {"Id": run.id}
            result = self._follow(context, run, stream)
            succeeded = True
            return result
        except AirflowSkipException:
            succeeded = True
            raise
        finally:
            try:
                run.finish(succeeded=succeeded)
            finally:
                if checkpoint is not None:
                    checkpoint.finish(succeeded=succeeded)

    def _create_and_start(
        self,
        run: TaskContainer,
        target_mounts: list[Any],
        resources: Resources,
        gpu_ids: list[str] | None,
        identity: Mapping[str, str],
    ) -> Iterable[Any]:
        from docker.errors import APIError

        host_kwargs, create_kwargs = container_kwargs(
            self,
            name=run.name,
            target_mounts=target_mounts,
            engine=build_docker_host_config(resources, gpu_ids),
            labels=container_labels(self.labels, identity, gpu_ids),
        )
        container_id = run.create(host_kwargs, create_kwargs, result_dir=self.return_result_file)
        try:
            stream = run.start()
        except APIError as err:
            if NO_DEVICE_DRIVER not in str(err):
                raise
            wanted = len(gpu_ids) if gpu_ids else resources.gpus
            message = no_driver_message(self.docker_host, wanted, err.explanation or err)
            run.discard()
            self._fallback_or_fail(message)
            return self._create_and_start(run, target_mounts, resources.without_gpus(), None, identity)
        self.log.info(
            "Started container %s (%s) on %s%s",
            run.name,
            container_id[:12],
            self.docker_host,
            f" with GPU device(s) {','.join(gpu_ids)}" if gpu_ids else "",
        )
        return stream

    def _follow(self, context: Context, run: TaskContainer, stream: Iterable[Any]) -> Any:
        """Stream logs live, wait for the exit code, then return the result."""
        keep_all = self.log_xcom and self.xcom_all
        lines = stream_lines(stream, self.log, keep_all=keep_all)
        if self._killed:
            raise AirflowException(f"Container {run.name} was stopped because the task was killed")
        exit_code = run.wait()
        if exit_code in self.skip_on_exit_code:
            raise AirflowSkipException(f"Container exited with {exit_code}, listed in skip_on_exit_code")
        if exit_code != 0:
            raise container_failed_error(
                f"Container {run.name}", exit_code, list(lines)[-ERROR_TAIL_LINES:], oom_killed=run.oom_killed
            )
        if self.retrieve_output:
            return retrieved_output(self)
        log_value = (
            (list(lines) if self.xcom_all else (lines[-1] if lines else None)) if self.log_xcom else None
        )
        if self.return_result_file:
            found, result = read_result_file(self.cli, str(run.id), source=f"Container {run.name}")
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

    def on_kill(self) -> None:
        """Stop the container, then remove or keep it as ``auto_remove`` says (SIGTERM, timeout, marked failed)."""
        self._killed = True
        if self._run is not None:
            self._run.kill()
