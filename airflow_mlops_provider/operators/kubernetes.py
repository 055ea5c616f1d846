"""``GpuKubernetesPodOperator``: KubernetesPodOperator that speaks the provider's ``Resources``.

It takes the same vocabulary as ``GpuDockerOperator`` (``image``, ``command``, ``env``,
``resources``) and turns ``resources`` into the pieces a GPU pod needs:

- requests and limits (``cpu``, ``memory``, ``nvidia.com/gpu`` or ``amd.com/gpu``);
- a required node affinity on the GPU product label (``nvidia.com/gpu.product`` by default);
- a toleration for the GPU taint (configurable);
- a memory-backed emptyDir mounted at ``/dev/shm`` (PyTorch DataLoader workers need it).

``resources``, ``command`` and ``env`` are templated, and the pod is built at execute time after
rendering, so a DAG param or a mapped trial (``.partial().expand_kwargs()``) can change them.
Everything else is KubernetesPodOperator's: the result comes from ``/airflow/xcom/return.json``
through its sidecar, deferrable mode hands the wait to its trigger, the pod is deleted when the
task finishes or is killed, and its labels identify dag, task, run, map index and try.

The container contract of ``operators/_common.py`` is kept through KPO's public methods:
``build_pod_request_obj`` (env precedence, ``$MLOPS_RESULT_FILE``, rendered-value checks),
``extract_xcom`` (a result file that is not JSON is our ``ResultFileError``) and ``cleanup``
(a non-zero exit of the base container is our ``ContainerFailedError`` with the exit code and
the last output lines, read from the pod before KPO deletes it).
"""

from __future__ import annotations

import copy
import shlex
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.backcompat.backwards_compat_converters import convert_env_vars
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_mlops_provider.checkpoints.task import init_checkpoint
from airflow_mlops_provider.compute import (
    Resources,
    build_gpu_node_affinity,
    build_gpu_tolerations,
    build_k8s_resource_requirements,
    build_shm_volume,
)
from airflow_mlops_provider.operators._common import (
    ERROR_TAIL_LINES,
    RESULT_FILE,
    RESULT_FILE_ENV,
    ResourcesPartialMixin,
    check_command,
    container_failed_error,
    contains_template,
    log_env_overrides,
    parse_result_text,
    reject_clash,
    rendered,
    rendered_command,
    rendered_env,
    rendered_image,
    resources_for_execute,
    resources_for_init,
    validate_command,
    validate_env,
    validate_image,
)
from airflow_mlops_provider.operators.kubernetes_checkpoint import (
    add_checkpoint_to_pod,
    check_pod_checkpoint_args,
    checkpoint_after_success,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from airflow.sdk import Context
    from kubernetes.client import models as k8s

    from airflow_mlops_provider.exceptions import ResultFileError

__all__ = ["MANAGED_BY_LABEL", "GpuKubernetesPodOperator"]

#: Label put on every pod this operator starts (besides KPO's dag_id/task_id/run_id/... labels).
MANAGED_BY_LABEL = {"app.kubernetes.io/managed-by": "airflow-mlops-provider"}
_SHM_VOLUME_NAME = "mlops-dshm"


def command_as_args(command: str | Sequence[Any] | None) -> list[str]:
    """
    Return ``command`` as a container's ``args`` list, the way Docker reads it.

    Docker's ``command`` replaces the image's ``CMD`` and keeps its ``ENTRYPOINT``; that is a
    pod's ``args``. A string is split like a shell would (``shlex.split``), as docker-py does.
    """
    command = rendered("command", check_command, command)
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def base_exit_code(pod: k8s.V1Pod | None, container_name: str) -> int | None:
    """Return the exit code of ``container_name`` in ``pod``'s status, or None while it has none."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    for status in statuses:
        if status.name == container_name and status.state and status.state.terminated:
            return status.state.terminated.exit_code
    return None


def merge_required_node_affinity(
    base: k8s.V1Affinity | Mapping[str, Any] | None, gpu: k8s.V1Affinity | None
) -> k8s.V1Affinity | Mapping[str, Any] | None:
    """
    Return ``base`` with the GPU node requirement added to every required node-selector term.

    Node-selector terms are ORed and the expressions inside one term are ANDed, so the GPU
    requirement goes into each term: whatever the user allowed, it must also have the GPU.
    ``base`` is not modified.
    """
    if gpu is None:
        return base
    if not base:
        return gpu
    from kubernetes.client import models as k8s

    merged: k8s.V1Affinity = copy.deepcopy(base)  # type: ignore[assignment]
    gpu_required = gpu.node_affinity.required_during_scheduling_ignored_during_execution
    if merged.node_affinity is None:
        merged.node_affinity = k8s.V1NodeAffinity()
    required = merged.node_affinity.required_during_scheduling_ignored_during_execution
    if required is None or not required.node_selector_terms:
        merged.node_affinity.required_during_scheduling_ignored_during_execution = gpu_required
        return merged
    requirement = gpu_required.node_selector_terms[0].match_expressions[0]
    for term in required.node_selector_terms:
        term.match_expressions = [*(term.match_expressions or []), requirement]
    return merged


class GpuKubernetesPodOperator(ResourcesPartialMixin, KubernetesPodOperator):
    """
    Run a container in a Kubernetes pod sized by ``Resources``, GPUs included.

    Every KubernetesPodOperator argument keeps working; ``resources`` cannot be combined with
    ``container_resources``, nor ``command`` with ``arguments`` (they say the same thing).
    Bad values after rendering fail without retries (``ContainerConfigError``); a non-zero exit
    raises ``ContainerFailedError`` and a result file that is not JSON ``ResultFileError``.

    :param image: Container image, e.g. ``"pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime"``. (templated)
    :param command: What the container runs, as in Docker: a list, or a string split like a
        shell would. It becomes the pod's ``args`` (the image's entrypoint is kept; pass
        ``cmds=`` to replace it). (templated)
    :param env: Environment variables as a dict; values are turned into strings. ``env`` wins
        over ``env_vars``: an ``env`` name replaces the ``env_vars`` entry of that name (other
        entries, ``value_from`` secrets included, stay). (templated)
    :param resources: A ``Resources``, its dict or its JSON text (what ``expand_kwargs`` and DAG
        params carry). Validated when the DAG is parsed if static, else after rendering. (templated)
    :param gpu_type_label: Node label that holds the GPU product for ``gpu_type``; defaults to
        ``nvidia.com/gpu.product`` (NVIDIA GPU feature discovery) or ``amd.com/gpu.product-name``.
    :param gpu_tolerations: Tolerations added when the pod asks for GPUs, as dicts such as
        ``{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}`` (the
        default, with the vendor's resource name as key). ``[]`` adds none.
    :param return_result_file: Return the JSON in ``/airflow/xcom/return.json``
        (``$MLOPS_RESULT_FILE``) as the task's XCom, read by KubernetesPodOperator's sidecar.
        Defaults to True. It sets KPO's ``do_xcom_push``.
    :param do_xcom_push: KPO's name for ``return_result_file``; pass either (they must agree
        when both are given).
    :param deferrable: Wait for the pod in the triggerer. Defaults to
        ``[operators] default_deferrable``, read when the operator is created.
    :param checkpoint: ``s3://bucket/prefix`` where ``$MLOPS_CHECKPOINT_DIR`` (an ``emptyDir`` at
        ``/mlops/checkpoint``) is kept between tries; default ``[mlops] checkpoint_uri``. An init
        container restores it and a native sidecar uploads it (see
        :mod:`airflow_mlops_provider.checkpoints.kubernetes`); the other ``checkpoint_*``
        arguments as on every runtime. (templated)
    :param checkpoint_sync_image: Image of those two containers (python3 and boto3); default
        ``[mlops] checkpoint_sync_image``.
    :param checkpoint_secret: A Secret whose keys (``AWS_ACCESS_KEY_ID``, ...) the sync
        containers get as environment; without it boto3 uses the pod's identity.
    """

    template_fields: Sequence[str] = (
        *KubernetesPodOperator.template_fields,
        "command",
        "env",
        "compute_resources",
        "checkpoint",
    )
    template_fields_renderers = {
        **KubernetesPodOperator.template_fields_renderers,
        "env": "json",
        "compute_resources": "json",
    }

    def __init__(
        self,
        *,
        image: str,
        command: str | list[str] | None = None,
        env: dict[str, Any] | None = None,
        resources: Resources | dict[str, Any] | str | None = None,
        gpu_type_label: str | None = None,
        gpu_tolerations: list[Any] | None = None,
        return_result_file: bool | None = None,
        do_xcom_push: bool | None = None,
        deferrable: bool | None = None,
        checkpoint: str | None = None,
        checkpoint_interval: float | None = None,
        checkpoint_retention: str | None = None,
        checkpoint_max_bytes: int | str | None = None,
        checkpoint_conn_id: str | None = None,
        checkpoint_prefix: str | None = None,
        checkpoint_sync_image: str | None = None,
        checkpoint_secret: str | None = None,
        **kwargs: Any,
    ) -> None:
        validate_image(image)
        validate_command(command)
        validate_env(env)
        reject_clash("resources", resources, "container_resources", kwargs.get("container_resources"))
        reject_clash("command", command, "arguments", kwargs.get("arguments"))
        if return_result_file is not None and do_xcom_push is not None and return_result_file != do_xcom_push:
            reject_clash("return_result_file", return_result_file, "do_xcom_push", do_xcom_push)
        result_file = next((v for v in (return_result_file, do_xcom_push) if v is not None), True)
        if gpu_type_label is not None and (not isinstance(gpu_type_label, str) or not gpu_type_label.strip()):
            raise ValueError(f"gpu_type_label must be a node label key, got {gpu_type_label!r}")
        # Checks the shape now (a ValueError names the bad item); GPU-less pods get none anyway.
        build_gpu_tolerations(Resources(gpus=1), gpu_tolerations)
        if deferrable is None:
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        super().__init__(image=image, do_xcom_push=bool(result_file), deferrable=deferrable, **kwargs)
        self._result_file_error: ResultFileError | None = None
        self.command = command
        self.env = env
        self.compute_resources = resources_for_init(resources)
        self.gpu_type_label = gpu_type_label
        self.gpu_tolerations = gpu_tolerations
        init_checkpoint(
            self,
            checkpoint=checkpoint,
            checkpoint_interval=checkpoint_interval,
            checkpoint_retention=checkpoint_retention,
            checkpoint_max_bytes=checkpoint_max_bytes,
            checkpoint_conn_id=checkpoint_conn_id,
            checkpoint_prefix=checkpoint_prefix,
        )
        self.checkpoint_sync_image = check_pod_checkpoint_args(checkpoint_sync_image, checkpoint_secret)
        self.checkpoint_secret = checkpoint_secret

    @property
    def return_result_file(self) -> bool:
        """Whether the result file is the task's XCom: KPO's ``do_xcom_push`` under the shared name."""
        return bool(self.do_xcom_push)

    @return_result_file.setter
    def return_result_file(self, value: bool) -> None:
        self.do_xcom_push = value

    # -- the pod ----------------------------------------------------------------------------

    def rendered_resources(self) -> Resources:
        """Return ``resources`` after rendering; raise ``ContainerConfigError`` if invalid."""
        if contains_template(self.compute_resources):
            raise AirflowFailException(
                f"resources still holds a template; render it first, got {self.compute_resources!r}"
            )
        return resources_for_execute(self.compute_resources)

    @contextmanager
    def _gpu_pod_fields(self, context: Context | None = None) -> Iterator[Resources]:
        """
        Lay ``resources``, ``command`` and ``env`` over KPO's fields while the pod is built.

        The rendered values of KPO's own fields are restored afterwards, so building the pod
        twice (KPO does on reattach) gives the same pod.
        """
        rendered_image(self.image)
        res = self.rendered_resources()
        command = rendered_command(self.command)
        env = rendered_env(self.env)
        names = (
            "container_resources",
            "affinity",
            "tolerations",
            "volumes",
            "volume_mounts",
            "arguments",
            "env_vars",
            "labels",
            "init_containers",
            "annotations",
        )
        saved = {name: getattr(self, name) for name in names}
        try:
            if self.compute_resources is not None:
                self.container_resources = build_k8s_resource_requirements(res)
            self.affinity = merge_required_node_affinity(
                self.affinity, build_gpu_node_affinity(res, self.gpu_type_label)
            )
            try:
                gpu_tolerations = build_gpu_tolerations(res, self.gpu_tolerations)
            except ValueError as err:
                raise AirflowFailException(str(err)) from err
            self.tolerations = [*self.tolerations, *(t for t in gpu_tolerations if t not in self.tolerations)]
            shm = build_shm_volume(res, volume_name=_SHM_VOLUME_NAME)
            if shm is not None:
                self.volumes = [*self.volumes, shm[0]]
                self.volume_mounts = [*self.volume_mounts, shm[1]]
            if command is not None:
                self.arguments = command_as_args(command)
            self.env_vars = self._env_vars_with(env)
            self.labels = {**MANAGED_BY_LABEL, **(self.labels or {})}
            if context is not None:
                add_checkpoint_to_pod(self, context)
            yield res
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    def _env_vars_with(self, env: Mapping[str, str]) -> list[k8s.V1EnvVar]:
        """
        Return ``env`` then the ``env_vars`` entries it does not name, then ``$MLOPS_RESULT_FILE``.

        ``env`` wins: an ``env_vars`` entry (``value_from`` included) whose name ``env`` also sets
        is dropped, and the names are logged. The result-file variable is the runtime's own and
        comes last; it is set when ``return_result_file`` is (only then is ``/airflow/xcom`` mounted).
        """
        from kubernetes.client import models as k8s

        native = list(convert_env_vars(self.env_vars or []))
        log_env_overrides(self.log, [e.name for e in native if e.name in env], "env_vars")
        reserved = {RESULT_FILE_ENV} if self.return_result_file else set()
        ours = [k8s.V1EnvVar(name=k, value=v) for k, v in env.items() if k not in reserved]
        kept = [e for e in native if e.name not in env and e.name not in reserved]
        result = [k8s.V1EnvVar(name=RESULT_FILE_ENV, value=RESULT_FILE)] if reserved else []
        return [*ours, *kept, *result]

    def build_pod_request_obj(self, context: Context | None = None, *, dry_run: bool = False) -> k8s.V1Pod:
        """Return the V1Pod for this task, built from the rendered ``resources``, ``command`` and ``env``."""
        with self._gpu_pod_fields(context) as res:
            pod = super().build_pod_request_obj(context, dry_run=dry_run)
        self.log.info("Pod %s asks for %s", pod.metadata.name, res.to_dict() or "no explicit resources")
        return pod

    # -- the result and the exit code ---------------------------------------------------------

    def extract_xcom(self, pod: k8s.V1Pod, **kwargs: Any) -> Any:
        """
        Return the result file's JSON (None when the container wrote none), as KPO does.

        KPO's pod manager parses the sidecar's text with ``json.loads`` and lets the
        ``JSONDecodeError`` escape (providers-cncf-kubernetes 10.5.0 to 10.25.0,
        ``PodManager.extract_xcom_json``); its ``doc`` is the file's text, which becomes the
        ``ResultFileError`` every runtime raises.
        """
        import json

        self._result_file_error = None
        try:
            return super().extract_xcom(pod, **kwargs)
        except json.JSONDecodeError as err:
            from airflow_mlops_provider.exceptions import ResultFileError

            try:
                parse_result_text(err.doc, source=f"Pod {pod.metadata.name}")
            except ResultFileError as result_error:
                self._result_file_error = result_error
                raise
            raise

    def cleanup(self, pod: k8s.V1Pod, remote_pod: k8s.V1Pod, *args: Any, **kwargs: Any) -> None:
        """
        KPO's cleanup; a failed base container becomes ``ContainerFailedError`` with its exit code.

        The last output lines are read before KPO deletes the pod. A result file that is not JSON
        stays the task's error: in sync mode KPO calls this with the pod as it was before the
        sidecar was read, and would report that stale state as a failure.
        """
        exit_code = base_exit_code(remote_pod, self.base_container_name)
        tail = self._output_tail(pod) if exit_code not in (None, 0) else []
        result_error, self._result_file_error = self._result_file_error, None
        try:
            super().cleanup(pod, remote_pod, *args, **kwargs)
            if exit_code == 0:
                checkpoint_after_success(self, pod)
        except AirflowSkipException:
            raise
        except AirflowException as err:
            if exit_code not in (None, 0):  # as on every runtime, the exit code comes first
                raise container_failed_error(f"Pod {pod.metadata.name}", exit_code, tail) from err
            if result_error is not None:
                raise result_error from result_error.__cause__  # the file's JSON error
            raise

    def _output_tail(self, pod: k8s.V1Pod) -> list[str]:
        """Return the base container's last output lines ([] when the pod's log cannot be read)."""
        try:
            logs = self.pod_manager.read_pod_logs(
                pod, self.base_container_name, tail_lines=ERROR_TAIL_LINES, follow=False
            )
            return [
                line.decode("utf-8", errors="backslashreplace").rstrip() if isinstance(line, bytes) else line
                for line in logs
            ]
        except Exception as err:  # the error message only loses its tail
            self.log.warning("Could not read the last output lines of pod %s: %s", pod.metadata.name, err)
            return []
